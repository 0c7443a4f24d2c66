"""Operators met in exported models beyond the core families (issue 12, "Others"): CumProd,
ReverseSequence, Compress, Det, ... on random inputs, against onnxruntime where it implements
the operator at the model's opset and onnx.reference otherwise, plus numpy where it is direct."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root

from .ort_check import make_model, run_ort, run_reference, value_info

RNG = np.random.default_rng(7)


def _reference(model, *arrays):
    """onnxruntime if it runs the model, else onnx.reference (newer opsets than onnxruntime knows)."""
    try:
        return run_ort(model, *arrays), "onnxruntime"
    except Exception:  # onnxruntime refuses opsets or operators it does not implement
        return run_reference(model, *arrays), "onnx.reference"


def _check(model, *arrays, rtol=1e-5, atol=1e-6, compiled=None):
    got = (compiled or sofie_root.compile(model)).infer(*arrays)
    ref, who = _reference(model, *arrays)
    assert len(got) == len(ref)
    for k, (g, r) in enumerate(zip(got, ref)):
        r = np.asarray(r)
        assert g.shape == r.shape, f"output {k}: {g.shape} vs {who} {r.shape}"
        assert g.dtype == r.dtype, f"output {k}: {g.dtype} vs {who} {r.dtype}"
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=f"output {k} vs {who}")
    return got


# -- CumProd ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
@pytest.mark.parametrize("exclusive,reverse,axis", [(0, 0, 1), (1, 0, -1), (0, 1, 0), (1, 1, 2)])
def test_cumprod(dtype, exclusive, reverse, axis):
    x = (RNG.uniform(0.5, 1.5, (3, 4, 5)) if np.dtype(dtype).kind == "f" else RNG.integers(-3, 4, (3, 4, 5)))
    x = x.astype(dtype)
    m = make_model([helper.make_node("CumProd", ["x", "ax"], ["y"], exclusive=exclusive, reverse=reverse)],
                   [value_info("x", dtype, ["N", 4, 5])], [value_info("y", dtype, None)],
                   {"ax": np.array(axis, np.int64)}, opset=26)
    got = _check(m, x)[0]
    ref = x if not reverse else np.flip(x, axis)
    ref = np.cumprod(ref, axis=axis, dtype=dtype)
    if exclusive:
        ref = np.concatenate([np.ones_like(np.take(ref, [0], axis)), np.delete(ref, -1, axis)], axis)
    if reverse:
        ref = np.flip(ref, axis)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


# -- ReverseSequence -------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_axis,time_axis", [(1, 0), (0, 1)])
def test_reverse_sequence(batch_axis, time_axis):
    shape = [5, 3, 2] if time_axis == 0 else [3, 5, 2]
    x = RNG.standard_normal(shape).astype(np.float32)
    lens = np.array([5, 0, 3], np.int64)
    m = make_model([helper.make_node("ReverseSequence", ["x", "l"], ["y"], batch_axis=batch_axis,
                                     time_axis=time_axis)],
                   [value_info("x", np.float32, shape), value_info("l", np.int64, [3])],
                   [value_info("y", np.float32, None)])
    model = sofie_root.compile(m)
    got = _check(m, x, lens, compiled=model)[0]
    xt = x if time_axis == 0 else x.transpose(1, 0, 2)
    ref = xt.copy()
    for b, n in enumerate(lens):
        ref[:n, b] = xt[:n, b][::-1]
    np.testing.assert_array_equal(got, ref if time_axis == 0 else ref.transpose(1, 0, 2))
    with pytest.raises(sofie_root.SofieError, match="sequence_lens"):
        model.infer(x, np.array([6, 1, 1], np.int64))


# -- Compress --------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_compress_runtime_condition(axis):
    x = RNG.standard_normal((4, 3, 5)).astype(np.float32)
    length = x.size if axis is None else x.shape[axis]
    attrs = {} if axis is None else {"axis": axis}
    m = make_model([helper.make_node("Compress", ["x", "c"], ["y"], **attrs)],
                   [value_info("x", np.float32, ["N", 3, 5]), value_info("c", np.bool_, ["L"])],
                   [value_info("y", np.float32, None)])
    model = sofie_root.compile(m)
    for n_cond in (length, max(1, length - 2)):
        cond = RNG.random(n_cond) < 0.5
        got = _check(m, x, cond, compiled=model)[0]
        np.testing.assert_array_equal(got, np.compress(cond, x, axis=axis))
    none = np.zeros(length, np.bool_)
    assert model.infer(x, none)[0].size == 0


def test_compress_constant_condition_and_symbolic_batch():
    cond = np.array([True, False, True, True, False])
    m = make_model([helper.make_node("Compress", ["x", "c"], ["y"], axis=1)],
                   [value_info("x", np.float32, ["N", 5])], [value_info("y", np.float32, None)], {"c": cond})
    model = sofie_root.compile(m)
    assert [str(d) for d in model.outputs[0].shape] == ["N", "3"]
    for n in (1, 4):
        x = RNG.standard_normal((n, 5)).astype(np.float32)
        _check(m, x, compiled=model)


# -- Det -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_det(dtype):
    x = RNG.standard_normal((2, 3, 4, 4)).astype(dtype)
    x[0, 1, 3] = x[0, 1, 0] * 2  # a singular matrix
    x[1, 2] = np.eye(4)[[1, 0, 2, 3]]  # a permutation: det -1 (pivoting)
    m = make_model([helper.make_node("Det", ["x"], ["y"])], [value_info("x", dtype, ["N", 3, 4, 4])],
                   [value_info("y", dtype, None)])
    got = _check(m, x, rtol=1e-4, atol=1e-5)[0]
    np.testing.assert_allclose(got, np.linalg.det(x.astype(np.float64)), rtol=1e-4, atol=1e-5)
    assert got[1, 2] == -1


# -- operators compiled through their ONNX function body ------------------------------------------

@pytest.mark.parametrize("alpha", [None, 0.7])
def test_swiglu(alpha):
    a = RNG.standard_normal((3, 8)).astype(np.float32)
    b = RNG.standard_normal((3, 8)).astype(np.float32)
    attrs = {} if alpha is None else {"alpha": alpha}
    m = make_model([helper.make_node("SwiGLU", ["a", "b"], ["y"], **attrs)],
                   [value_info("a", np.float32, ["N", 8]), value_info("b", np.float32, ["N", 8])],
                   [value_info("y", np.float32, None)], opset=28)
    got = _check(m, a, b)[0]
    al = 1.0 if alpha is None else alpha
    np.testing.assert_allclose(got, a / (1 + np.exp(-al * a)) * b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rotary_dim", [0, 4])
def test_rotary_embedding(interleaved, rotary_dim):
    x = RNG.standard_normal((2, 3, 5, 8)).astype(np.float32)  # [batch, heads, seq, head_size]
    half = (rotary_dim or 8) // 2
    angles = np.arange(16)[:, None] * 0.1 * (1 + np.arange(half))[None, :]
    pos = RNG.integers(0, 16, (2, 5)).astype(np.int64)
    attrs = {"interleaved": interleaved, **({"rotary_embedding_dim": rotary_dim} if rotary_dim else {})}
    m = make_model([helper.make_node("RotaryEmbedding", ["x", "cos", "sin", "pos"], ["y"], **attrs)],
                   [value_info("x", np.float32, x.shape), value_info("pos", np.int64, pos.shape)],
                   [value_info("y", np.float32, None)],
                   {"cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32)}, opset=23)
    _check(m, x, pos, rtol=1e-5, atol=1e-5)


def test_causal_conv_with_state():
    x = RNG.standard_normal((2, 4, 6)).astype(np.float32)
    w = RNG.standard_normal((4, 1, 3)).astype(np.float32)
    b = RNG.standard_normal(4).astype(np.float32)
    past = RNG.standard_normal((2, 4, 2)).astype(np.float32)
    m = make_model([helper.make_node("CausalConvWithState", ["x", "w", "b", "past"], ["y", "state"])],
                   [value_info("x", np.float32, x.shape), value_info("past", np.float32, past.shape)],
                   [value_info("y", np.float32, None), value_info("state", np.float32, None)],
                   {"w": w, "b": b}, opset=27)
    got = _check(m, x, past, rtol=1e-5, atol=1e-5)
    full = np.concatenate([past, x], axis=2)  # causal: output t sees inputs t-2..t
    ref = np.stack([(full[:, :, t:t + 3] * w[None, :, 0, :]).sum(-1) for t in range(6)], axis=2) + b[None, :, None]
    np.testing.assert_allclose(got[0], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[1], x[:, :, -2:])
