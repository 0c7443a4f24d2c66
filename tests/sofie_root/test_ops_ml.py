"""ai.onnx.ml operators: tree ensembles built by hand (every split mode, missing values, every
aggregate and post_transform, base values, several targets, float/double/int inputs) against
onnxruntime, TreeEnsemble (ai.onnx.ml 5) against onnx.reference, and the small helpers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import sofie_root

from .ort_check import ORT_IR_VERSION, run_ort, run_reference

MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]
NF = 5


def _forest(rng, n_trees: int, depth: int, modes: list[str], n_targets: int, per_leaf: int = 1):
    """Random complete trees in the ai.onnx.ml 1-3 attribute layout. Thresholds are integers
    (the inputs too, in part) so that == and != splits are taken both ways."""
    a = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
                         "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true")}
    e = {k: [] for k in ("treeids", "nodeids", "ids", "weights")}
    for t in range(n_trees):
        d = int(rng.integers(1, depth + 1))
        n_inner = 2 ** d - 1
        for i in range(2 ** (d + 1) - 1):
            a["nodes_treeids"].append(t)
            a["nodes_nodeids"].append(i)
            leaf = i >= n_inner
            a["nodes_featureids"].append(0 if leaf else int(rng.integers(NF)))
            a["nodes_values"].append(0.0 if leaf else float(rng.integers(-2, 3)))
            a["nodes_modes"].append("LEAF" if leaf else str(rng.choice(modes)))
            a["nodes_truenodeids"].append(0 if leaf else 2 * i + 1)
            a["nodes_falsenodeids"].append(0 if leaf else 2 * i + 2)
            a["nodes_missing_value_tracks_true"].append(0 if leaf else int(rng.integers(2)))
            if leaf:
                targets = rng.choice(n_targets, size=min(per_leaf, n_targets), replace=False)
                for tg in targets:
                    e["treeids"].append(t)
                    e["nodeids"].append(i)
                    e["ids"].append(int(tg))
                    e["weights"].append(float(rng.normal()))
    return a, e


def _inputs(rng, n: int, dtype=np.float32) -> np.ndarray:
    x = rng.normal(scale=2.0, size=(n, NF))
    x[:, :2] = np.round(x[:, :2])  # hit the == / != thresholds
    x = x.astype(dtype)
    if x.dtype.kind == "f":
        x[rng.random(x.shape) < 0.15] = np.nan
    return x


def _model(node, x_dtype, outputs):
    g = helper.make_graph([node], "t", [helper.make_tensor_value_info("X", helper.np_dtype_to_tensor_dtype(
        np.dtype(x_dtype)), ["N", NF])], outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
                             ir_version=ORT_IR_VERSION)


def regressor(rng, *, modes=MODES, n_trees=11, depth=4, n_targets=1, per_leaf=1, agg="SUM", post="NONE",
              base=None, x_dtype=np.float32):
    a, e = _forest(rng, n_trees, depth, modes, n_targets, per_leaf)
    kw = dict(a, target_treeids=e["treeids"], target_nodeids=e["nodeids"], target_ids=e["ids"],
              target_weights=e["weights"], n_targets=n_targets, aggregate_function=agg, post_transform=post)
    if base is not None:
        kw["base_values"] = base
    node = helper.make_node("TreeEnsembleRegressor", ["X"], ["Y"], domain="ai.onnx.ml", **kw)
    return _model(node, x_dtype, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", n_targets])])


def classifier(rng, *, n_classes=3, per_leaf=1, post="NONE", base=None, modes=MODES, weights="any",
               n_trees=9, labels=None):
    a, e = _forest(rng, n_trees, 4, modes, 1 if n_classes == 2 else n_classes, per_leaf)
    w = np.array(e["weights"])
    if weights == "positive":
        w = np.abs(w) / n_trees
    kw = dict(a, class_treeids=e["treeids"], class_nodeids=e["nodeids"], class_ids=e["ids"],
              class_weights=w.tolist(), post_transform=post,
              classlabels_int64s=labels if labels is not None else list(range(10, 10 + n_classes)))
    if base is not None:
        kw["base_values"] = base
    node = helper.make_node("TreeEnsembleClassifier", ["X"], ["L", "P"], domain="ai.onnx.ml", **kw)
    return _model(node, np.float32, [helper.make_tensor_value_info("L", TensorProto.INT64, ["N"]),
                                     helper.make_tensor_value_info("P", TensorProto.FLOAT, ["N", n_classes])])


def _compare(model, x, rtol=1e-5, atol=1e-5):
    got = sofie_root.compile(model).infer(x)
    ref = run_ort(model, x)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype
        if r.dtype.kind == "f":
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(g, r)
    return got


@pytest.mark.parametrize("modes", [["BRANCH_LEQ"], ["BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_LEQ"], MODES],
                         ids=["leq", "ordered", "all"])
def test_regressor_modes_and_missing(modes):
    rng = np.random.default_rng(len(modes))
    _compare(regressor(rng, modes=modes, base=[0.25]), _inputs(rng, 300))


@pytest.mark.parametrize("agg", ["SUM", "AVERAGE", "MIN", "MAX"])
def test_regressor_aggregates_several_targets(agg):
    rng = np.random.default_rng(7)
    model = regressor(rng, n_targets=3, per_leaf=2, agg=agg, base=[0.5, -1.0, 2.0], depth=3)
    _compare(model, _inputs(rng, 200))


@pytest.mark.parametrize("post", ["SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"])
def test_regressor_post_transform(post):
    rng = np.random.default_rng(3)
    model = regressor(rng, n_targets=3, per_leaf=3, post=post, depth=3)
    x = _inputs(rng, 100)
    if post == "PROBIT":  # probit of a score outside (0, 1) is NaN: keep the scores inside
        model = regressor(rng, n_targets=3, per_leaf=3, post=post, depth=3, n_trees=1)
        _scale_weights(model, 0.1, 0.5)
    _compare(model, x)


def _scale_weights(model, scale, shift):
    for a in model.graph.node[0].attribute:
        if a.name in ("target_weights", "class_weights"):
            vals = [shift + scale * np.tanh(v) for v in a.floats]
            del a.floats[:]
            a.floats.extend(vals)


@pytest.mark.parametrize("x_dtype", [np.float64, np.int64, np.int32])
def test_regressor_input_types(x_dtype):
    modes = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_EQ"]
    x = _inputs(np.random.default_rng(12), 200, x_dtype)
    model = regressor(np.random.default_rng(11), modes=modes, x_dtype=x_dtype)
    if x_dtype == np.float64:
        _compare(model, x)
        return
    # onnxruntime implements only float inputs; an integer input compares as float (the spec's
    # and onnxruntime's reading), so the reference is the float model on the converted input
    as_float = regressor(np.random.default_rng(11), modes=modes, x_dtype=np.float32)
    (ref,) = run_ort(as_float, x.astype(np.float32))
    np.testing.assert_allclose(sofie_root.compile(model).infer(x)[0], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"])
@pytest.mark.parametrize("per_leaf", [1, 3])
def test_classifier_multiclass(post, per_leaf):
    rng = np.random.default_rng(per_leaf)
    model = classifier(rng, per_leaf=per_leaf, post=post, base=[0.1, -0.2, 0.3] if per_leaf == 1 else None)
    tol = {}
    if post == "PROBIT":
        _scale_weights(model, 0.05, 0.05)
        # onnxruntime sums the scores in float, then applies an approximate erf inverse that is
        # ill-conditioned near 0 and 1: a last-bit difference in the sum moves it by up to 1e-3
        tol = {"rtol": 1e-3, "atol": 2e-3}
    _compare(model, _inputs(rng, 250), **tol)


@pytest.mark.parametrize("post,weights,base", [("NONE", "positive", None), ("LOGISTIC", "any", [0.3]),
                                               ("NONE", "any", None), ("SOFTMAX", "any", [0.1]),
                                               ("LOGISTIC", "positive", None)])
def test_classifier_binary(post, weights, base):
    rng = np.random.default_rng(5)
    _compare(classifier(rng, n_classes=2, post=post, weights=weights, base=base, labels=[-3, 8]), _inputs(rng, 250))


def test_classifier_refuses_string_labels_and_ambiguous_binary():
    rng = np.random.default_rng(0)
    model = classifier(rng)
    node = model.graph.node[0]
    for a in list(node.attribute):
        if a.name == "classlabels_int64s":
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute("classlabels_strings", ["a", "b", "c"]))
    with pytest.raises(sofie_root.UnsupportedOperatorError, match="string class labels"):
        sofie_root.compile(model)
    with pytest.raises(sofie_root.SofieError, match="PROBIT"):
        sofie_root.compile(classifier(rng, n_classes=2, post="PROBIT"))


def test_bad_feature_index_is_refused():
    rng = np.random.default_rng(0)
    model = regressor(rng, modes=["BRANCH_LEQ"])
    for a in model.graph.node[0].attribute:
        if a.name == "nodes_featureids":
            a.ints[0] = NF + 3
    with pytest.raises(sofie_root.SofieError, match="reads feature 8, but the input has 5 features"):
        sofie_root.compile(model)


def _tree_ensemble_v5(rng, x_dtype, aggregate, n_targets=2):
    """One hand-written TreeEnsemble (ai.onnx.ml 5) with every mode incl. set membership."""
    np_t = np.dtype(x_dtype)
    # tree 0: node0 (x0 <= 0.5) -> node1 / node2; node1: x1 in {1, 3} -> leaf0 / leaf1;
    # node2: x2 != 0 -> node3 / leaf2; node3: x3 > -1 -> leaf3 / leaf4 ; tree 1: node4 x4 == 1 -> leaf5 / leaf6
    # tree 2: node5 x0 < 0, x0 >= 1 ...
    splits = np.array([0.5, 0.0, 0.0, -1.0, 1.0, 0.0, 1.0], np_t)
    feats = [0, 1, 2, 3, 4, 0, 0]
    modes = np.array([0, 6, 5, 3, 4, 1, 2], np.uint8)
    tnode = [1, 0, 3, 3, 5, 6, 8]
    tleaf = [0, 1, 0, 1, 1, 0, 1]
    fnode = [2, 1, 2, 4, 6, 7, 9]
    fleaf = [0, 1, 1, 1, 1, 1, 1]
    mtt = [1, 0, 1, 0, 1, 0, 1]
    n_leaves = 10
    leaf_w = rng.normal(size=n_leaves).astype(np_t)
    leaf_t = rng.integers(0, n_targets, n_leaves)
    node = helper.make_node(
        "TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml",
        nodes_splits=onnx.numpy_helper.from_array(splits), nodes_featureids=feats,
        nodes_modes=onnx.numpy_helper.from_array(modes), nodes_truenodeids=tnode, nodes_trueleafs=tleaf,
        nodes_falsenodeids=fnode, nodes_falseleafs=fleaf, nodes_missing_value_tracks_true=mtt,
        membership_values=onnx.numpy_helper.from_array(np.array([1, 3, np.nan], np_t)),
        leaf_targetids=leaf_t.tolist(), leaf_weights=onnx.numpy_helper.from_array(leaf_w),
        tree_roots=[0, 4, 5], n_targets=n_targets, aggregate_function=aggregate, post_transform=0)
    g = helper.make_graph([node], "t", [helper.make_tensor_value_info("X", helper.np_dtype_to_tensor_dtype(np_t),
                                                                      ["N", NF])],
                          [helper.make_tensor_value_info("Y", helper.np_dtype_to_tensor_dtype(np_t), ["N", n_targets])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)])


@pytest.mark.parametrize("x_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("aggregate", [0, 1, 3])
def test_tree_ensemble_v5_vs_reference(x_dtype, aggregate):
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(aggregate)
    model = _tree_ensemble_v5(rng, x_dtype, aggregate)
    x = np.round(rng.normal(scale=1.5, size=(120, NF))).astype(x_dtype)
    x[rng.random(x.shape) < 0.1] = np.nan
    got = sofie_root.compile(model).infer(x)[0]
    (ref,) = ReferenceEvaluator(model).run(None, {"X": x})
    if aggregate == 3:  # MAX: the reference starts from the float's lowest value, a target no tree reached
        ref = np.where(ref == np.finfo(ref.dtype).min, 0, ref)  # scores 0 here, as in onnxruntime
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert got.dtype == x.dtype


def _ml_model(node, inputs, outputs, opset_ml=2):
    g = helper.make_graph([node], "t", inputs, outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", opset_ml)],
                             ir_version=ORT_IR_VERSION)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_binarizer(dtype):
    node = helper.make_node("Binarizer", ["X"], ["Y"], domain="ai.onnx.ml", threshold=0.5)
    t = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = _ml_model(node, [helper.make_tensor_value_info("X", t, ["N", 4])],
                      [helper.make_tensor_value_info("Y", t, ["N", 4])])
    x = (np.random.default_rng(0).normal(size=(6, 4)) * 2).astype(dtype)
    if dtype == np.float32:
        _compare(model, x)
    else:  # onnxruntime implements Binarizer for float only
        np.testing.assert_array_equal(sofie_root.compile(model).infer(x)[0], run_reference(model, x)[0])


def test_array_feature_extractor():
    node = helper.make_node("ArrayFeatureExtractor", ["X", "I"], ["Y"], domain="ai.onnx.ml")
    model = _ml_model(node, [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, 6])],
                      [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3, 4])])
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([5, 0, 2, 2], np.int64), "I"))
    x = np.random.default_rng(1).normal(size=(2, 3, 6)).astype(np.float32)
    _compare(model, x)


@pytest.mark.parametrize("kind", ["int_int", "float_int", "int_float"])
def test_label_encoder_numeric(kind):
    if kind == "int_int":
        kw, tin, tout = {"keys_int64s": [1, 5, 9], "values_int64s": [10, 50, 90], "default_int64": -7}, np.int64, np.int64
    elif kind == "float_int":
        kw, tin, tout = {"keys_floats": [0.5, 1.5], "values_int64s": [3, 4], "default_int64": 0}, np.float32, np.int64
    else:
        kw, tin, tout = {"keys_int64s": [2, 3], "values_floats": [0.25, -1.5], "default_float": 9.0}, np.int64, np.float32
    node = helper.make_node("LabelEncoder", ["X"], ["Y"], domain="ai.onnx.ml", **kw)
    model = _ml_model(node, [helper.make_tensor_value_info("X", helper.np_dtype_to_tensor_dtype(np.dtype(tin)), ["N"])],
                      [helper.make_tensor_value_info("Y", helper.np_dtype_to_tensor_dtype(np.dtype(tout)), ["N"])])
    x = np.array([1, 5, 9, 2, 3, 0.5, 1.5, 4], dtype=tin)
    _compare(model, x)


def test_zipmap_is_the_probability_tensor():
    rng = np.random.default_rng(2)
    model = classifier(rng, post="SOFTMAX")
    ref = run_ort(model, x := _inputs(rng, 40))
    zip_node = helper.make_node("ZipMap", ["P"], ["Z"], domain="ai.onnx.ml", classlabels_int64s=[10, 11, 12])
    model.graph.node.append(zip_node)
    z = helper.make_value_info("Z", helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))
    model.graph.output.pop()
    model.graph.output.append(z)
    label, probs = sofie_root.compile(model).infer(x)
    np.testing.assert_array_equal(label, ref[0])
    np.testing.assert_allclose(probs, ref[1], rtol=1e-5, atol=1e-6)


def test_constant_input_is_folded():
    rng = np.random.default_rng(0)
    model = regressor(rng)
    x = rng.normal(size=(3, NF)).astype(np.float32)
    (ref,) = run_ort(model, x)
    model.graph.input.pop()
    model.graph.initializer.append(onnx.numpy_helper.from_array(x, "X"))
    np.testing.assert_allclose(sofie_root.compile(model).infer()[0], ref, rtol=1e-6, atol=1e-6)


def test_cycle_and_dangling_child_are_refused():
    def model(true_ids, false_ids):
        node = helper.make_node(
            "TreeEnsembleRegressor", ["X"], ["Y"], domain="ai.onnx.ml", n_targets=1,
            nodes_treeids=[0, 0, 0, 0], nodes_nodeids=[0, 1, 2, 3], nodes_featureids=[0, 1, 2, 0],
            nodes_values=[0.0, 0.0, 0.0, 0.0], nodes_modes=["BRANCH_LEQ"] * 3 + ["LEAF"],
            nodes_truenodeids=true_ids, nodes_falsenodeids=false_ids,
            target_treeids=[0], target_nodeids=[3], target_ids=[0], target_weights=[1.0])
        return _model(node, np.float32, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1])])

    with pytest.raises(sofie_root.SofieError, match="not a tree"):
        sofie_root.compile(model([1, 2, 1, 0], [3, 3, 3, 0]))  # 1 -> 2 -> 1
    with pytest.raises(sofie_root.SofieError, match="node id 7, which does not exist"):
        sofie_root.compile(model([1, 2, 7, 0], [3, 3, 3, 0]))


def test_lowered_tables_are_checked_not_trusted():
    """The flat tables come back from model files: an index out of its table is refused."""
    from sofie_root.frontends.onnx import from_onnx
    from sofie_root.ops import REGISTRY, NodeView
    from sofie_root.ops.ml import FLAT_INPUTS

    graph = from_onnx(regressor(np.random.default_rng(0), modes=["BRANCH_LEQ"]))
    (node,) = [n for n in graph.nodes if n.op_type == "TreeEnsembleFlat"]
    op = REGISTRY[("sofie", "TreeEnsembleFlat")]

    def view(tamper=None):
        consts = [graph.initializers.get(i) if i else None for i in node.inputs]
        if tamper:
            k = 1 + FLAT_INPUTS.index(tamper[0])
            consts[k] = consts[k].copy()
            consts[k][tamper[1]] = tamper[2]
        return NodeView(node, [graph.info(i) if i else None for i in node.inputs], consts)

    assert op.check(view()) is None
    assert "child" in op.check(view(("packed", 1, 10**6)))   # a child index past the nodes
    assert "feature" in op.check(view(("packed", 0, 2 * NF)))  # feature NF
    assert "root" in op.check(view(("roots", 0, -1)))


@pytest.mark.parametrize("post", ["LOGISTIC", "SOFTMAX"])
def test_single_target_post_transform_follows_the_spec(post):
    # onnxruntime leaves a single target untransformed (except PROBIT); the spec applies the
    # transform: the reference is onnxruntime's untransformed score through numpy's transform
    model = regressor(np.random.default_rng(4), post=post, base=[0.2])
    plain = regressor(np.random.default_rng(4), post="NONE", base=[0.2])
    x = _inputs(np.random.default_rng(5), 100)
    (score,) = run_ort(plain, x)
    ref = 1.0 / (1.0 + np.exp(-score.astype(np.float64))) if post == "LOGISTIC" else np.ones_like(score)
    np.testing.assert_allclose(sofie_root.compile(model).infer(x)[0], ref, rtol=1e-5, atol=1e-6)
