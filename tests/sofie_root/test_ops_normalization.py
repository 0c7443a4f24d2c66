"""Normalization operators against onnxruntime (and onnx.reference where onnxruntime has no
float64 kernel): BatchNormalization, LayerNormalization, InstanceNormalization,
GroupNormalization, LpNormalization, MeanVarianceNormalization."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import sofie_root

from .ort_check import assert_matches_ort, make_model, value_info

RNG = np.random.default_rng(77)


def _rand(shape, dtype=np.float32, scale=1.0, shift=0.0):
    return (RNG.standard_normal(shape) * scale + shift).astype(dtype)


def _model(op: str, x_shape, dtype=np.float32, weights: dict | None = None, outs=None, opset: int = 17,
           inputs=None, **attrs):
    weights = weights or {}
    outs = outs or [("y", dtype)]
    names = ["x", *weights] if inputs is None else inputs
    node = helper.make_node(op, names, [o for o, _ in outs], **attrs)
    return make_model([node], [value_info("x", dtype, x_shape)], [value_info(o, dt, None) for o, dt in outs],
                      initializers=weights, opset=opset)


def assert_matches_reference(model, *arrays, rtol=1e-6, atol=1e-8, compiled=None):
    m = compiled if compiled is not None else sofie_root.compile(model)
    got = m.infer(*arrays)
    names = [i.name for i in model.graph.input]
    ref = ReferenceEvaluator(model).run(None, dict(zip(names, arrays)))
    assert len(got) == len(ref)
    for k, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == r.shape, f"output {k}: shape {g.shape} != reference {r.shape}"
        assert g.dtype == r.dtype, f"output {k}: dtype {g.dtype} != reference {r.dtype}"
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=f"output {k}")


def _batches(model, shape_fn, check=assert_matches_ort, **kw):
    m = sofie_root.compile(model)
    for n in (1, 3):
        check(model, shape_fn(n), compiled=m, **kw)


def _compile_error(model) -> sofie_root.SofieError:
    with pytest.raises(sofie_root.SofieError) as info:
        sofie_root.compile(model)
    return info.value


# -- BatchNormalization -----------------------------------------------------------------------

def _bn_weights(c, dtype=np.float32):
    return {"scale": _rand((c,), dtype), "B": _rand((c,), dtype), "mean": _rand((c,), dtype),
            "var": RNG.uniform(0.2, 2.0, (c,)).astype(dtype)}


@pytest.mark.parametrize("shape", [[2, 3], [2, 3, 5], [2, 3, 4, 5], [1, 2, 3, 2, 4]])
@pytest.mark.parametrize("opset", [9, 15])
def test_batchnorm(shape, opset: int) -> None:
    model = _model("BatchNormalization", shape, weights=_bn_weights(shape[1]), opset=opset, epsilon=1e-3)
    assert_matches_ort(model, _rand(shape, scale=2, shift=0.5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_symbolic_batch(dtype) -> None:
    model = _model("BatchNormalization", ["N", 4, 3, 3], dtype, weights=_bn_weights(4, dtype), opset=14,
                   training_mode=0)
    _batches(model, lambda n: _rand((n, 4, 3, 3), dtype), rtol=1e-5, atol=1e-5)


def test_batchnorm_dense_features_in_place_and_stats_as_inputs() -> None:
    """[N, 64] (BatchNorm1d after a dense layer): the per-channel scale computed once per call for
    every row, at batch 1 and 300, in place after a Relu, and with the statistics as graph inputs
    (computed again at each call: the second call's new statistics are used)."""
    w = _bn_weights(64)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "scale", "B", "mean", "var"], ["y"])]
    model = make_model(nodes, [value_info("x", np.float32, ["N", 64])], [value_info("y", np.float32, None)], w,
                       opset=15)
    m = sofie_root.compile(model)
    for n in (1, 300):
        assert_matches_ort(model, _rand((n, 64)), compiled=m, rtol=1e-5, atol=1e-5)
    names = ["scale", "B", "mean", "var"]
    node = helper.make_node("BatchNormalization", ["x", *names], ["y"])
    model = make_model([node], [value_info("x", np.float32, ["N", 64])] +
                       [value_info(k, np.float32, [64]) for k in names], [value_info("y", np.float32, None)], opset=15)
    m = sofie_root.compile(model)
    for _ in range(2):
        stats = _bn_weights(64)
        assert_matches_ort(model, _rand((5, 64)), *(stats[k] for k in names), compiled=m, rtol=1e-5, atol=1e-5)


def test_batchnorm_opset7_per_activation() -> None:
    """spatial=0 (opset < 9): statistics per (channel, position), shaped like one image."""
    w = {"scale": _rand((3, 4)), "B": _rand((3, 4)), "mean": _rand((3, 4)),
         "var": RNG.uniform(0.2, 2.0, (3, 4)).astype(np.float32)}
    model = _model("BatchNormalization", [2, 3, 4], weights=w, opset=7, spatial=0)
    x = _rand((2, 3, 4))
    (got,) = sofie_root.compile(model).infer(x)
    ref = (x - w["mean"]) / np.sqrt(w["var"] + 1e-5) * w["scale"] + w["B"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_batchnorm_opset6() -> None:
    model = _model("BatchNormalization", [2, 3, 4, 4], weights=_bn_weights(3), opset=6, is_test=1)
    assert_matches_ort(model, _rand((2, 3, 4, 4)), rtol=1e-5, atol=1e-5)


_BN_STATS = [("y", np.float32), ("running_mean", np.float32), ("running_var", np.float32)]


@pytest.mark.parametrize("shape", [[2, 3], [2, 3, 5], [2, 3, 4, 5], [1, 2, 3, 2, 4], [4, 5, 33]])
@pytest.mark.parametrize("opset,momentum", [(14, None), (15, 0.7)])
def test_batchnorm_training_mode(shape, opset, momentum) -> None:
    """Batch statistics normalise X; running_mean/var mix the inputs with them (ORT and reference)."""
    attrs = {"training_mode": 1, "epsilon": 1e-3, **({"momentum": momentum} if momentum is not None else {})}
    model = _model("BatchNormalization", shape, weights=_bn_weights(shape[1]), outs=_BN_STATS, opset=opset, **attrs)
    x = _rand(shape, scale=2, shift=0.5)
    assert_matches_ort(model, x, rtol=1e-5, atol=1e-5)
    assert_matches_reference(model, x, rtol=1e-5, atol=1e-5)


def test_batchnorm_training_mode_y_only_symbolic_batch_double() -> None:
    node = helper.make_node("BatchNormalization", ["x", "scale", "B", "mean", "var"], ["y", "", "rv"],
                            training_mode=1)
    model = make_model([node], [value_info("x", np.float64, ["N", 4, 3, 3])],
                       [value_info(o, np.float64, None) for o in ("y", "rv")], _bn_weights(4, np.float64), opset=15)
    _batches(model, lambda n: _rand((n, 4, 3, 3), np.float64, shift=3.0), check=assert_matches_reference,
             rtol=1e-12, atol=1e-12)
    node = helper.make_node("BatchNormalization", ["x", "scale", "B", "mean", "var"], ["y", "", ""], training_mode=1)
    model = make_model([node], [value_info("x", np.float32, ["N", 4, 3])], [value_info("y", np.float32, None)],
                       _bn_weights(4), opset=15)
    # (onnx.reference only: onnxruntime 1.32 crashes on a training-mode node with unnamed outputs)
    _batches(model, lambda n: _rand((n, 4, 3)), check=assert_matches_reference, rtol=1e-5, atol=1e-5)


def test_batchnorm_training_mode_statistics_as_inputs() -> None:
    """Scale, bias and the running statistics given at run time (an optimiser step's inputs)."""
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], training_mode=1,
                            momentum=0.5)
    model = make_model([node], [value_info("x", np.float32, [3, 2, 4])] +
                       [value_info(n, np.float32, [2]) for n in "sbmv"],
                       [value_info(o, np.float32, None) for o in ("y", "rm", "rv")], opset=15)
    w = _bn_weights(2)
    assert_matches_ort(model, _rand((3, 2, 4)), w["scale"], w["B"], w["mean"], w["var"], rtol=1e-5, atol=1e-5)


def test_batchnorm_training_mode_after_conv_and_in_place() -> None:
    """Conv -> BN(training) is not folded into the Conv (its statistics change with the batch);
    Relu -> BN(training) may overwrite the Relu's output in place."""
    c = 3
    w = _bn_weights(c)
    nodes = [helper.make_node("Conv", ["x", "k"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "scale", "B", "mean", "var"], ["y", "rm", "rv"],
                              training_mode=1),
             helper.make_node("BatchNormalization", ["h", "scale", "B", "mean", "var"], ["z", "", ""],
                              training_mode=1)]
    inits = {"k": _rand((c, 2, 3, 3)), **w}
    model = make_model(nodes, [value_info("x", np.float32, ["N", 2, 5, 5])],
                       [value_info(o, np.float32, None) for o in ("y", "rm", "rv", "z")], inits, opset=15)
    # (onnx.reference: onnxruntime 1.32 crashes on the unnamed outputs of the second BN)
    _batches(model, lambda n: _rand((n, 2, 5, 5)), check=assert_matches_reference, rtol=1e-4, atol=1e-5)


def test_batchnorm_training_mode_constant_channel() -> None:
    """A channel of equal values: variance exactly 0, y = bias; NaN in a channel stays in it."""
    w = _bn_weights(3)
    model = _model("BatchNormalization", [2, 3, 4], weights=w, outs=_BN_STATS, opset=15, training_mode=1)
    x = _rand((2, 3, 4))
    x[:, 0] = 7.25
    x[1, 2, 3] = np.nan
    y, rm, rv = sofie_root.compile(model).infer(x)
    np.testing.assert_array_equal(y[:, 0], np.full((2, 4), w["B"][0]))
    np.testing.assert_allclose(rv[0], w["var"][0] * 0.9, rtol=1e-6)
    assert np.isnan(y[:, 2]).all() and not np.isnan(y[:, :2]).any()
    assert np.isnan(rm[2]) and np.isnan(rv[2]) and not np.isnan(rm[:2]).any()


def test_batchnorm_old_training_outputs_are_refused() -> None:
    model = _model("BatchNormalization", [2, 3, 4], weights=_bn_weights(3), outs=[("y", np.float32),
                   ("saved_mean", np.float32), ("saved_var", np.float32)], opset=9)
    err = _compile_error(model)
    assert isinstance(err, sofie_root.UnsupportedOperatorError)
    assert "opsets 9-13" in str(err)
    model = _model("BatchNormalization", [2, 3, 4], weights=_bn_weights(3), outs=_BN_STATS, opset=15)
    assert "training_mode=1 only" in str(_compile_error(model))
    model = _model("BatchNormalization", [2, 3, 4], weights=_bn_weights(3), opset=15, training_mode=1)
    assert "training mode has 3 outputs" in str(_compile_error(model))


def test_batchnorm_wrong_channels() -> None:
    err = _compile_error(_model("BatchNormalization", [2, 4, 3], weights=_bn_weights(3), opset=15))
    assert "elements" in str(err)


# -- LayerNormalization -----------------------------------------------------------------------

@pytest.mark.parametrize("axis", [-1, -2, 1, 0])
@pytest.mark.parametrize("bias", [True, False])
def test_layernorm(axis: int, bias: bool) -> None:
    shape = [2, 3, 4, 5]
    norm = shape[axis:]
    w = {"scale": _rand(norm)}
    if bias:
        w["B"] = _rand(norm)
    model = _model("LayerNormalization", shape, weights=w, axis=axis,
                   outs=[("y", np.float32), ("mean", np.float32), ("inv", np.float32)])
    assert_matches_ort(model, _rand(shape, scale=3, shift=1), rtol=1e-4, atol=1e-5)


def test_layernorm_epsilon_y_only_symbolic_batch() -> None:
    model = _model("LayerNormalization", ["N", 7, 16], weights={"scale": _rand((16,)), "B": _rand((16,))},
                   epsilon=0.1)
    _batches(model, lambda n: _rand((n, 7, 16)), rtol=1e-4, atol=1e-5)


def test_layernorm_axis0_symbolic_batch() -> None:
    """The normalized size depends on N."""
    w = {"scale": np.float32(1.5), "B": np.float32(-0.5)}
    model = _model("LayerNormalization", ["N", 6], weights=w, axis=0,
                   outs=[("y", np.float32), ("mean", np.float32), ("inv", np.float32)])
    _batches(model, lambda n: _rand((n, 6)), check=assert_matches_reference, rtol=1e-5, atol=1e-6)


def test_layernorm_mean_only() -> None:
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean"], axis=-1)
    model = make_model([node], [value_info("x", np.float32, [3, 8])],
                       [value_info("y", np.float32, None), value_info("mean", np.float32, None)],
                       initializers={"scale": _rand((8,))})
    assert_matches_ort(model, _rand((3, 8)), rtol=1e-5, atol=1e-6)


def test_layernorm_float64() -> None:
    model = _model("LayerNormalization", ["N", 4, 6], np.float64,
                   weights={"scale": _rand((4, 6), np.float64), "B": _rand((6,), np.float64)},
                   axis=1, outs=[("y", np.float64), ("mean", np.float32), ("inv", np.float32)])
    _batches(model, lambda n: _rand((n, 4, 6), np.float64), rtol=1e-5, atol=1e-6)


def test_layernorm_stash_double() -> None:
    """stash_type=11 (onnxruntime and onnx.reference implement only 1): against numpy."""
    scale, b = _rand((6,), np.float64), _rand((6,), np.float64)
    model = _model("LayerNormalization", ["N", 4, 6], np.float64, weights={"scale": scale, "B": b},
                   stash_type=11, epsilon=1e-3, outs=[("y", np.float64), ("mean", np.float64), ("inv", np.float64)])
    m = sofie_root.compile(model)
    for n in (1, 3):
        x = _rand((n, 4, 6), np.float64, scale=3)
        y, mean, inv = m.infer(x)
        mu = x.mean(axis=-1, keepdims=True)
        iv = 1 / np.sqrt(x.var(axis=-1, keepdims=True) + float(np.float32(1e-3)))  # a float attribute
        np.testing.assert_allclose(mean, mu, rtol=1e-12)
        np.testing.assert_allclose(inv, iv, rtol=1e-12)
        np.testing.assert_allclose(y, (x - mu) * iv * scale + b, rtol=1e-12, atol=1e-12)


def test_layernorm_broadcast_scale() -> None:
    """Scale and B broadcast over the normalized dimensions (numpy rules)."""
    model = _model("LayerNormalization", [2, 3, 4, 5], np.float64,
                   weights={"scale": _rand((4, 1), np.float64), "B": _rand((1, 5), np.float64)}, axis=2)
    # the default stash type normalizes in float32
    assert_matches_reference(model, _rand((2, 3, 4, 5), np.float64), rtol=1e-5, atol=1e-6)


def test_layernorm_errors() -> None:
    _compile_error(_model("LayerNormalization", [2, 3, 4], weights={"scale": _rand((3,))}))      # not [4]
    _compile_error(_model("LayerNormalization", [2, 3, 4], weights={"scale": _rand((4,))}, axis=3))
    err = _compile_error(_model("LayerNormalization", [2, 4], weights={"scale": _rand((4,))}, stash_type=10))
    assert isinstance(err, sofie_root.UnsupportedOperatorError)


# -- InstanceNormalization --------------------------------------------------------------------

@pytest.mark.parametrize("shape", [[2, 3, 5], [2, 3, 4, 5], [1, 2, 3, 2, 4]])
def test_instancenorm(shape) -> None:
    c = shape[1]
    model = _model("InstanceNormalization", shape, weights={"s": _rand((c,)), "B": _rand((c,))}, epsilon=1e-3)
    assert_matches_ort(model, _rand(shape, scale=2, shift=1), rtol=1e-4, atol=1e-5)


def test_instancenorm_symbolic_batch() -> None:
    model = _model("InstanceNormalization", ["N", 3, 4, 4], weights={"s": _rand((3,)), "B": _rand((3,))})
    _batches(model, lambda n: _rand((n, 3, 4, 4)), rtol=1e-4, atol=1e-5)


def test_instancenorm_float64() -> None:
    w = {"s": _rand((3,), np.float64), "B": _rand((3,), np.float64)}
    model = _model("InstanceNormalization", ["N", 3, 5, 2], np.float64, weights=w)
    _batches(model, lambda n: _rand((n, 3, 5, 2), np.float64), check=assert_matches_reference)


def test_instancenorm_wrong_channels() -> None:
    _compile_error(_model("InstanceNormalization", [1, 3, 4], weights={"s": _rand((2,)), "B": _rand((2,))}))


# -- GroupNormalization -----------------------------------------------------------------------

@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("groups", [1, 2, 6])
def test_groupnorm(opset: int, groups: int) -> None:
    c = 6
    per = groups if opset < 21 else c
    model = _model("GroupNormalization", [2, c, 3, 4], weights={"scale": _rand((per,)), "bias": _rand((per,))},
                   opset=opset, num_groups=groups, epsilon=1e-3)
    assert_matches_ort(model, _rand((2, c, 3, 4), scale=2, shift=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_groupnorm_symbolic_batch(dtype) -> None:
    model = _model("GroupNormalization", ["N", 4, 5], dtype,
                   weights={"scale": _rand((4,), dtype), "bias": _rand((4,), dtype)}, opset=21, num_groups=2)
    _batches(model, lambda n: _rand((n, 4, 5), dtype), rtol=1e-5, atol=1e-6)


def test_groupnorm_errors() -> None:
    w = {"scale": _rand((6,)), "bias": _rand((6,))}
    _compile_error(_model("GroupNormalization", [1, 6, 4], weights=w, opset=21, num_groups=4))   # 4 does not divide 6
    _compile_error(_model("GroupNormalization", [1, 6, 4], weights=w, opset=18, num_groups=2))   # per group in 18
    _compile_error(_model("GroupNormalization", [1, 6, 4], weights=w, opset=21))                 # no num_groups


# -- LpNormalization --------------------------------------------------------------------------

@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_lpnorm(p: int, axis: int) -> None:
    x = _rand((3, 4, 5))
    x[1, 2, :] = 0  # zero norm along the last axis gives 0
    model = _model("LpNormalization", [3, 4, 5], p=p, axis=axis)
    assert_matches_ort(model, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lpnorm_symbolic_batch(dtype) -> None:
    model = _model("LpNormalization", ["N", 6], dtype, axis=0)
    _batches(model, lambda n: _rand((n, 6), dtype), rtol=1e-5, atol=1e-6)
    model = _model("LpNormalization", ["N", 3, 4], dtype, axis=1, p=1)
    _batches(model, lambda n: _rand((n, 3, 4), dtype), rtol=1e-5, atol=1e-6)


def test_lpnorm_bad_p() -> None:
    err = _compile_error(_model("LpNormalization", [2, 3], p=3))
    assert isinstance(err, sofie_root.UnsupportedOperatorError)


# -- MeanVarianceNormalization ----------------------------------------------------------------

@pytest.mark.parametrize("axes", [None, [1], [2, 3], [0, 1, 2, 3], [1, 3], [-1]])
def test_mvn(axes) -> None:
    attrs = {} if axes is None else {"axes": axes}
    model = _model("MeanVarianceNormalization", [2, 3, 4, 5], opset=13, **attrs)
    assert_matches_ort(model, _rand((2, 3, 4, 5), scale=2, shift=1), rtol=1e-4, atol=1e-5)


def test_mvn_symbolic_batch() -> None:
    model = _model("MeanVarianceNormalization", ["N", 3, 4, 2], opset=13)   # reduces over N
    _batches(model, lambda n: _rand((n, 3, 4, 2)), rtol=1e-4, atol=1e-5)
    model = _model("MeanVarianceNormalization", ["N", 3, 4, 2], opset=13, axes=[2, 3])
    _batches(model, lambda n: _rand((n, 3, 4, 2)), rtol=1e-4, atol=1e-5)


def test_mvn_float64_and_constant() -> None:
    """onnxruntime has no float64 kernel and onnx.reference fails on float64: against numpy."""
    m = sofie_root.compile(_model("MeanVarianceNormalization", [2, 3, 4], np.float64, opset=13, axes=[0, 2]))
    x = _rand((2, 3, 4), np.float64, scale=2, shift=1)
    (got,) = m.infer(x)
    mu = x.mean(axis=(0, 2), keepdims=True)
    ref = (x - mu) / (np.sqrt(((x - mu) ** 2).mean(axis=(0, 2), keepdims=True)) + 1e-9)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    (got,) = m.infer(np.full((2, 3, 4), 2.5))
    np.testing.assert_array_equal(got, 0.0)


def test_mvn_bad_axes() -> None:
    _compile_error(_model("MeanVarianceNormalization", [2, 3, 4], opset=13, axes=[3]))


def test_unsupported_dtype() -> None:
    node = helper.make_node("LpNormalization", ["x"], ["y"])
    model = helper.make_model(helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.INT32, [2])],
                                                [helper.make_tensor_value_info("y", TensorProto.INT32, [2])]),
                              opset_imports=[helper.make_opsetid("", 17)])
    err = _compile_error(model)
    assert isinstance(err, sofie_root.UnsupportedOperatorError)
