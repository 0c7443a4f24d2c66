"""Attention (opset 23+) against onnxruntime: layouts, heads, masks, causal, cache, symbolic batch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import helper

import sofie_root

from .ort_check import assert_matches_ort, make_model, run_reference, value_info

RNG = np.random.default_rng(5)
F = np.float32


def _model(inputs: dict[str, tuple], outputs: int = 1, opset: int = 23, **attrs):
    names = list(inputs)
    node_inputs = [n if n in inputs else "" for n in
                   ["Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"]]
    while node_inputs and not node_inputs[-1]:
        node_inputs.pop()
    outs = ["Y", "present_key", "present_value", "qk"][:outputs]
    node = helper.make_node("Attention", node_inputs, outs, **attrs)
    vis = [value_info(n, dt, shape) for n, (dt, shape) in inputs.items()]
    model = make_model([node], vis, [value_info(o, F, None) for o in outs], opset=opset)
    del names
    return model


def _arrays(inputs: dict[str, tuple], batch: int = 2) -> list[np.ndarray]:
    out = []
    for _, (dt, shape) in inputs.items():
        shape = tuple(batch if isinstance(d, str) else d for d in shape)
        if dt == np.bool_:
            out.append(RNG.integers(0, 2, shape).astype(bool) | (np.arange(shape[-1]) == 0))
        else:
            out.append(RNG.standard_normal(shape).astype(dt))
    return out


CASES = {
    "mha_4d": ({"Q": (F, ["N", 2, 3, 8]), "K": (F, ["N", 2, 5, 8]), "V": (F, ["N", 2, 5, 4])}, {}),
    "gqa_3d": ({"Q": (F, ["N", 3, 32]), "K": (F, ["N", 6, 16]), "V": (F, ["N", 6, 16])},
               {"q_num_heads": 4, "kv_num_heads": 2}),
    "causal_scale": ({"Q": (F, ["N", 2, 4, 8]), "K": (F, ["N", 2, 4, 8]), "V": (F, ["N", 2, 4, 8])},
                     {"is_causal": 1, "scale": 0.3}),
    "float_mask": ({"Q": (F, ["N", 2, 3, 8]), "K": (F, ["N", 2, 5, 8]), "V": (F, ["N", 2, 5, 8]),
                    "attn_mask": (F, [3, 5])}, {}),
    "bool_mask": ({"Q": (F, ["N", 2, 3, 8]), "K": (F, ["N", 2, 5, 8]), "V": (F, ["N", 2, 5, 8]),
                   "attn_mask": (np.bool_, ["N", 1, 3, 5])}, {}),
    "softcap": ({"Q": (F, ["N", 1, 3, 8]), "K": (F, ["N", 1, 3, 8]), "V": (F, ["N", 1, 3, 8])},
                {"softcap": 2.0}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention(case: str) -> None:
    inputs, attrs = CASES[case]
    model = _model(inputs, **attrs)
    compiled = sofie_root.compile(model)
    for batch in (1, 3):
        assert_matches_ort(model, *_arrays(inputs, batch), compiled=compiled, rtol=1e-5, atol=1e-5)


def test_attention_cache_and_qk_outputs() -> None:
    inputs = {"Q": (F, [2, 2, 1, 8]), "K": (F, [2, 2, 1, 8]), "V": (F, [2, 2, 1, 8]),
              "past_key": (F, [2, 2, 4, 8]), "past_value": (F, [2, 2, 4, 8])}
    for mode in (0, 2, 3):
        model = _model(inputs, outputs=4, is_causal=1, qk_matmul_output_mode=mode)
        arrays = _arrays(inputs)
        got = sofie_root.compile(model).infer(*arrays)
        ref = run_reference(model, *arrays)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


# ---- LinearAttention (opset 27) against onnx.reference ----------------------------------------

LA_INPUTS = ["query", "key", "value", "past_state", "decay", "beta"]


def _linear_model(shapes: dict[str, tuple], dtypes: dict[str, object] | None = None, **attrs):
    dtypes = dtypes or {}
    node_inputs = [n if n in shapes else "" for n in LA_INPUTS]
    while not node_inputs[-1]:
        node_inputs.pop()
    node = helper.make_node("LinearAttention", node_inputs, ["output", "present_state"], **attrs)
    vis = [value_info(n, dtypes.get(n, F), shape) for n, shape in shapes.items()]
    outs = [value_info("output", dtypes.get("query", F), None),
            value_info("present_state", dtypes.get("past_state", dtypes.get("query", F)), None)]
    return make_model([node], vis, outs, opset=27)


def _linear_arrays(shapes: dict[str, tuple], dtypes: dict[str, object] | None = None, batch: int = 2,
                   steps: int = 3) -> list[np.ndarray]:
    dtypes = dtypes or {}
    out = []
    for n, shape in shapes.items():
        shape = tuple(batch if d == "N" else steps if d == "T" else d for d in shape)
        x = RNG.standard_normal(shape)
        if n == "key":  # the delta rules expect L2-normalised keys
            x /= np.linalg.norm(x, axis=-1, keepdims=True)
        elif n == "decay":
            x = -np.abs(x) * 0.5  # log-space decay: exp(g) in (0, 1]
        elif n == "beta":
            x = 1.0 / (1.0 + np.exp(-x))
        out.append(x.astype(dtypes.get(n, F)))
    return out


def _qkv(hq: int, hkv: int, dk: int, dv: int, b="N", t="T") -> dict[str, tuple]:
    return {"query": (b, t, hq * dk), "key": (b, t, hkv * dk), "value": (b, t, hkv * dv)}


LINEAR_CASES = {  # name: (heads (q, kv), input shapes, attributes)
    "linear": ((2, 2), _qkv(2, 2, 4, 3), {"update_rule": "linear"}),
    "linear_past_gqa": ((6, 2), {**_qkv(6, 2, 5, 3), "past_state": ("N", 2, 5, 3)}, {"update_rule": "linear"}),
    "gated_per_dim": ((3, 3), {**_qkv(3, 3, 4, 6), "decay": ("N", "T", 12)}, {"update_rule": "gated"}),
    "gated_per_head_mqa": ((4, 1), {**_qkv(4, 1, 8, 2), "decay": ("N", "T", 1)}, {"update_rule": "gated"}),
    "delta_beta_shared": ((2, 2), {**_qkv(2, 2, 3, 5), "beta": ("N", "T", 1)}, {"update_rule": "delta", "scale": 0.7}),
    "gated_delta_past": ((4, 2), {**_qkv(4, 2, 6, 4), "past_state": ("N", 2, 6, 4), "decay": ("N", "T", 12),
                                  "beta": ("N", "T", 2)}, {}),
    "gated_delta_head_decay": ((2, 2), {**_qkv(2, 2, 16, 16), "decay": ("N", "T", 2), "beta": ("N", "T", 2)},
                               {"update_rule": "gated_delta", "chunk_size": 4}),
}


def _compare(got, ref, rtol=1e-5, atol=1e-5) -> None:
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype, (g.shape, g.dtype, r.shape, r.dtype)
        np.testing.assert_allclose(g.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", sorted(LINEAR_CASES))
def test_linear_attention(case: str) -> None:
    """Every update rule, per-head and per-dimension decay, shared beta, GQA/MQA, a past state,
    symbolic batch and sequence length (T = 1, 5 and 0)."""
    (hq, hkv), shapes, attrs = LINEAR_CASES[case]
    model = _linear_model(shapes, q_num_heads=hq, kv_num_heads=hkv, **attrs)
    compiled = sofie_root.compile(model)
    for batch, steps in ((1, 1), (3, 5), (2, 0)):
        arrays = _linear_arrays(shapes, batch=batch, steps=steps)
        _compare(compiled.infer(*arrays), run_reference(model, *arrays))


def test_linear_attention_half_and_mixed_state() -> None:
    """float16 activations with a float32 state (the spec's S != T): the output is rounded to
    float16, the state stays float32, as in the reference; and a bfloat16 model."""
    shapes = {**_qkv(4, 2, 8, 8, 2, 6), "past_state": (2, 2, 8, 8), "decay": (2, 6, 16), "beta": (2, 6, 2)}
    import ml_dtypes

    for dtypes in ({n: np.float16 for n in shapes if n != "past_state"},
                   dict.fromkeys(shapes, np.float16),
                   dict.fromkeys(shapes, ml_dtypes.bfloat16)):
        model = _linear_model(shapes, dtypes, q_num_heads=4, kv_num_heads=2)
        arrays = _linear_arrays(shapes, dtypes)
        got = sofie_root.compile(model).infer(*arrays)
        ref = run_reference(model, *arrays)
        # half outputs: the reference rounds the same float32 values; allow one unit
        tol = 1e-2 if "bfloat16" in str(dtypes["query"]) else 2e-3
        _compare(got, ref, rtol=tol, atol=1e-4)
        assert got[1].dtype == dtypes.get("past_state", np.float32)


def test_linear_attention_nan_propagates() -> None:
    shapes = {**_qkv(2, 2, 4, 4, 1, 3), "decay": (1, 3, 2), "beta": (1, 3, 2)}
    model = _linear_model(shapes, q_num_heads=2, kv_num_heads=2)
    arrays = _linear_arrays(shapes)
    arrays[2][0, 1, 0] = np.nan  # value of head 0 at t=1
    got = sofie_root.compile(model).infer(*arrays)
    ref = run_reference(model, *arrays)
    _compare(got, ref)
    assert np.isnan(got[0][0, 1:, :4]).any() and not np.isnan(got[0][0, :, 4:]).any()


@pytest.mark.parametrize("shapes, attrs, match", [
    (_qkv(2, 2, 4, 4, 1, 3), {"update_rule": "gated"}, "requires the decay input"),
    ({**_qkv(2, 2, 4, 4, 1, 3), "beta": (1, 3, 2)}, {"update_rule": "linear"}, "forbids the beta input"),
    (_qkv(3, 2, 4, 4, 1, 3), {"update_rule": "linear"}, "positive multiple"),
    ({**_qkv(2, 2, 4, 4, 1, 3), "decay": (1, 3, 3)}, {"update_rule": "gated"}, "decay must be"),
    ({**_qkv(2, 2, 4, 4, 1, 3), "past_state": (1, 2, 4, 5)}, {"update_rule": "linear"}, "past_state shape"),
    (_qkv(2, 2, 4, 4, 1, 3), {"update_rule": "retention"}, "update_rule"),
])
def test_linear_attention_refused(shapes, attrs, match) -> None:
    hq = 3 if shapes["query"][2] == 12 else 2
    model = _linear_model(shapes, q_num_heads=hq, kv_num_heads=2, **attrs)
    with pytest.raises(sofie_root.SofieError, match=match):
        sofie_root.compile(model)


# ---- FlexAttention (ai.onnx.preview) against onnx.reference ------------------------------------

def _flex_model(q, k, v, dtype=F, score_mod=None, prob_mod=None, **attrs):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    if score_mod is not None:
        attrs["score_mod"] = score_mod
    if prob_mod is not None:
        attrs["prob_mod"] = prob_mod
    node = helper.make_node("FlexAttention", ["Q", "K", "V"], ["Y"], domain="ai.onnx.preview", **attrs)
    graph = helper.make_graph([node], "flex", [helper.make_tensor_value_info(n, elem, s) for n, s in
                                               (("Q", q), ("K", k), ("V", v))],
                              [helper.make_tensor_value_info("Y", elem, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26),
                                                   helper.make_opsetid("ai.onnx.preview", 1)], ir_version=11)


def _mod(nodes, inits=None, elem=None):
    """A (scores) -> (scores_out) modifier sub-graph."""
    from onnx import TensorProto, numpy_helper

    elem = TensorProto.FLOAT if elem is None else elem
    return helper.make_graph(nodes, "mod", [helper.make_tensor_value_info("s", elem, ["B", "H", "L", "S"])],
                             [helper.make_tensor_value_info("s_out", elem, ["B", "H", "L", "S"])],
                             [numpy_helper.from_array(np.asarray(a), n) for n, a in (inits or {}).items()])


SOFT_CAP = _mod([helper.make_node("Div", ["s", "cap"], ["d"]), helper.make_node("Tanh", ["d"], ["t"]),
                 helper.make_node("Mul", ["t", "cap"], ["s_out"])], {"cap": np.array(1.5, F)})
SQUARE = _mod([helper.make_node("Mul", ["s", "s"], ["s_out"])])

FLEX_CASES = {  # name: (Q, K, V shapes, dtype, attributes)
    "plain": (("N", 2, 5, 8), ("N", 2, 7, 8), ("N", 2, 7, 4), F, {}),
    "gqa_scale": (("N", 6, 3, 4), ("N", 2, 5, 4), ("N", 2, 5, 6), F, {"scale": 0.3}),
    "soft_cap_score_mod": (("N", 2, 4, 8), ("N", 2, 4, 8), ("N", 2, 4, 8), F, {"score_mod": SOFT_CAP}),
    "prob_mod": (("N", 1, 3, 4), ("N", 1, 6, 4), ("N", 1, 6, 4), F, {"prob_mod": SQUARE}),
    "double": (("N", 4, 3, 5), ("N", 2, 2, 5), ("N", 2, 2, 3), np.float64, {}),
    "half": (("N", 2, 4, 16), ("N", 2, 6, 16), ("N", 2, 6, 16), np.float16, {}),
}


@pytest.mark.parametrize("case", sorted(FLEX_CASES))
def test_flex_attention(case: str) -> None:
    """GQA, scale, score_mod/prob_mod sub-graphs, float64, float16, a symbolic batch run at two
    sizes."""
    q, k, v, dt, attrs = FLEX_CASES[case]
    model = _flex_model(q, k, v, dt, **attrs)
    compiled = sofie_root.compile(model)
    # the Attention kernel without modifiers, the function body with them or in half precision
    native = not attrs.keys() & {"score_mod", "prob_mod"} and dt != np.float16
    assert ({n.op_type for n in compiled.graph.nodes} == {"FlexAttention"}) == native
    for batch in (1, 3):
        arrays = [RNG.standard_normal(tuple(batch if d == "N" else d for d in s)).astype(dt) for s in (q, k, v)]
        got = compiled.infer(*arrays)
        ref = run_reference(model, *arrays)
        assert got[0].dtype == ref[0].dtype and got[0].shape == ref[0].shape
        tol = 2e-3 if dt == np.float16 else 1e-5
        np.testing.assert_allclose(got[0].astype(np.float64), ref[0].astype(np.float64), rtol=tol, atol=tol)


def test_flex_attention_mod_with_a_subgraph_is_refused() -> None:
    """A modifier holding a control-flow node cannot be inlined: refused naming the operator."""
    then = helper.make_graph([helper.make_node("Identity", ["s"], ["o1"])], "t", [],
                             [helper.make_tensor_value_info("o1", 1, None)])
    mod = _mod([helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", 9, [], [True])),
                helper.make_node("If", ["c"], ["s_out"], then_branch=then, else_branch=then)])
    model = _flex_model((1, 1, 2, 4), (1, 1, 2, 4), (1, 1, 2, 4), score_mod=mod)
    with pytest.raises(sofie_root.SofieError, match="FlexAttention"):
        sofie_root.compile(model)


_HEAP_CHILD = """
import warnings; warnings.filterwarnings("ignore")
import numpy as np
import onnx.backend.test.case.node as node
import sofie_root
cases = [c for c in node.collect_testcases()
         if c.name.startswith(("test_flexattention", "test_attention_3d", "test_attention_4d")) and c.data_sets]
n = 0
for c in cases:
    try:
        m = sofie_root.compile(c.model)
    except sofie_root.SofieError:
        continue
    inputs, expected = c.data_sets[0]
    got = m.infer(*inputs)
    np.testing.assert_allclose(got[0], expected[0], rtol=c.rtol, atol=c.atol)
    n += 1
print("HEAP-CHILD-DONE", n)
"""


def test_attention_kernels_stay_inside_their_workspace() -> None:
    # FlexAttention once sized its workspace for an older sofie_rt::attention (one row of scores)
    # after the kernel grew to [Sq, St] scores plus scaled Q and K: it wrote past the buffer and
    # glibc aborted a later allocation ("corrupted size vs. prev_size"). Every node case that calls
    # the kernel, back to back in one child process, must run to the end.
    try:
        p = subprocess.run([sys.executable, "-c", _HEAP_CHILD], capture_output=True, text=True, timeout=420,
                           env={**os.environ, "SOFIE_ROUNDTRIP_CHECK": "0"})
    except subprocess.TimeoutExpired:  # a corrupted heap can also leave malloc waiting on its lock
        pytest.fail("the attention node cases did not finish in 420 s (a corrupted heap hangs malloc)")
    assert p.returncode == 0 and "HEAP-CHILD-DONE" in p.stdout, (p.returncode, p.stdout[-500:], p.stderr[-2000:])
    assert int(p.stdout.split("HEAP-CHILD-DONE")[1].split()[0]) >= 20


# ---- the fuse_attention pass (sofie.FusedAttention) against onnxruntime ------------------------

def _block_model(k_transposed: bool = False, scale: float | None = 0.35, bias: tuple | None = None,
                 extra_output: bool = False, st: int = 11):
    """softmax(Q @ K^T [* scale] [+ bias]) @ V as nodes, the way torch exports attention."""
    shapes = {"Q": ["N", 3, 7, 8], "K": ["N", 3, 8, st] if k_transposed else ["N", 3, st, 8], "V": ["N", 3, st, 5]}
    nodes = []
    b = "K"
    if not k_transposed:
        nodes.append(helper.make_node("Transpose", ["K"], ["Kt"], perm=[0, 1, 3, 2]))
        b = "Kt"
    nodes.append(helper.make_node("MatMul", ["Q", b], ["s0"]))
    s = "s0"
    inits = {}
    if scale is not None:
        inits["c"] = np.array(scale, F)
        nodes.append(helper.make_node("Mul", [s, "c"], ["s1"]))
        s = "s1"
    if bias is not None:
        shapes["bias"] = list(bias)
        nodes.append(helper.make_node("Add", [s, "bias"], ["s2"]))
        s = "s2"
    nodes.append(helper.make_node("Softmax", [s], ["p"], axis=-1))
    nodes.append(helper.make_node("MatMul", ["p", "V"], ["y"]))
    outs = [value_info("y", F, None)] + ([value_info("p", F, None)] if extra_output else [])
    return make_model(nodes, [value_info(n, F, sh) for n, sh in shapes.items()], outs, inits, opset=17), shapes


@pytest.mark.parametrize("kt, scale, bias", [
    (False, 0.35, None), (True, None, None), (False, 0.35, ("N", 3, 7, 11)), (True, 0.5, ("N", 1, 1, 11)),
    (False, None, (7, 11)),
])
def test_fused_attention_matches_ort(kt, scale, bias) -> None:
    model, shapes = _block_model(kt, scale, bias)
    compiled = sofie_root.compile(model)
    assert [n.op_type for n in compiled.graph.nodes] == ["FusedAttention"]
    for batch in (1, 3):
        arrays = [RNG.standard_normal([batch if d == "N" else d for d in sh]).astype(F) for sh in shapes.values()]
        assert_matches_ort(model, *arrays, compiled=compiled, rtol=1e-5, atol=1e-5)


def test_fused_attention_keeps_softmax_semantics() -> None:
    """A key padding mask of -inf (every key hidden for one event: the row is NaN, as Softmax
    gives), NaN scores and infinities in V, as the unfused nodes through onnxruntime."""
    model, shapes = _block_model(False, 0.35, ("N", 1, 1, 11), st=11)
    compiled = sofie_root.compile(model)
    assert "FusedAttention" in {n.op_type for n in compiled.graph.nodes}
    q, k, v, bias = [RNG.standard_normal([3 if d == "N" else d for d in sh]).astype(F) for sh in shapes.values()]
    bias[:] = 0
    bias[0, ..., 4:] = -np.inf
    bias[1] = -np.inf                     # every key of event 1 hidden
    q[2, 1, 3, 0] = np.nan                # one NaN score row
    v[0, 2, 6, 1] = np.inf                # an infinity behind a hidden key (0 * inf)
    got = compiled.infer(q, k, v, bias)[0]
    with np.errstate(invalid="ignore"):  # the reference's -inf - -inf and 0 * inf
        ref = run_reference(model, q, k, v, bias)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)  # NaN where the reference has NaN
    assert np.isnan(got[1]).all() and np.isnan(got[2, 1, 3]).all() and np.isnan(got[0, 2, :, 1]).all()


def test_fused_attention_not_when_an_intermediate_is_read_elsewhere() -> None:
    model, _ = _block_model(extra_output=True)
    assert "FusedAttention" not in {n.op_type for n in sofie_root.compile(model).graph.nodes}


def test_fused_attention_pass_leaves_softmax_outputs_alone() -> None:
    """A rank-4 Softmax whose output is the graph's output (read by no node: one "use", the
    output) or that feeds no MatMul is not an attention block: it compiles and matches
    onnxruntime (the pass once looked up a reader that does not exist and failed to compile it)."""
    for tail in ([], [helper.make_node("Relu", ["p"], ["y"])]):
        nodes = [helper.make_node("Softmax", ["x"], ["p"], axis=-1), *tail]
        out = "y" if tail else "p"
        model = make_model(nodes, [value_info("x", F, ["N", 4, 6, 10])], [value_info(out, F, None)], opset=17)
        compiled = sofie_root.compile(model)
        assert "FusedAttention" not in {n.op_type for n in compiled.graph.nodes}
        assert_matches_ort(model, RNG.standard_normal((2, 4, 6, 10)).astype(F), compiled=compiled,
                           rtol=1e-5, atol=1e-6)


def test_fused_attention_reads_a_packed_projection_in_place() -> None:
    """qkv(x).view(b, t, 3, h, d).permute(2, 0, 3, 1, 4), q/k/v by Slice + Squeeze, the output
    transposed back to [B, S, H, D]: the node reads the projection and writes the transposed Y
    (no copies left but the Reshapes), matching onnxruntime; a bias of the key padding shape."""
    s, h, d = 9, 2, 8
    nodes = [helper.make_node("Reshape", ["x", "shape5"], ["x5"]),
             helper.make_node("Transpose", ["x5"], ["perm"], perm=[2, 0, 3, 1, 4])]
    for k, name in enumerate("qkv"):
        nodes += [helper.make_node("Slice", ["perm", f"i{k}", f"i{k + 1}", "i0"], [f"{name}5"]),
                  helper.make_node("Squeeze", [f"{name}5", "i0"], [name])]
    nodes += [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["q", "kt"], ["s0"]),
              helper.make_node("Mul", ["s0", "c"], ["s1"]),
              helper.make_node("Add", ["s1", "bias"], ["s2"]),
              helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v"], ["o"]),
              helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ot", "shape3"], ["y"])]
    inits = {"shape5": np.array([0, s, 3, h, d], np.int64), "shape3": np.array([0, s, h * d], np.int64),
             "c": np.array(d ** -0.5, F), **{f"i{k}": np.array([k], np.int64) for k in range(4)}}
    model = make_model(nodes, [value_info("x", F, ["N", s, 3 * h * d]), value_info("bias", F, ["N", 1, 1, s])],
                       [value_info("y", F, None)], inits, opset=17)
    compiled = sofie_root.compile(model)
    ops = [n.op_type for n in compiled.graph.nodes]
    assert "FusedAttention" in ops and "Transpose" not in ops and "Slice" not in ops, ops
    fused = next(n for n in compiled.graph.nodes if n.op_type == "FusedAttention")
    assert list(fused.attrs["packed"]) == [0, 1, 2] and fused.attrs["y_transposed"] == 1
    for batch in (1, 4):
        bias = np.where(RNG.random((batch, 1, 1, s)) < 0.3, -np.inf, 0).astype(F)
        bias[..., 0] = 0
        assert_matches_ort(model, RNG.standard_normal((batch, s, 3 * h * d)).astype(F), bias, compiled=compiled,
                           rtol=1e-5, atol=1e-5)
