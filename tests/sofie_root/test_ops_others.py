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


# -- BitCast ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("src,dst", [(np.float32, np.int32), (np.int64, np.float64), (np.int8, np.uint8),
                                     (np.uint16, np.int16), (np.bool_, np.uint8)])
def test_bitcast(src, dst):
    x = (RNG.standard_normal((3, 4)) * 1000).astype(src) if src != np.bool_ else RNG.random((3, 4)) < 0.5
    m = make_model([helper.make_node("BitCast", ["x"], ["y"], to=helper.np_dtype_to_tensor_dtype(np.dtype(dst)))],
                   [value_info("x", src, ["N", 4])], [value_info("y", dst, None)], opset=26)
    got = sofie_root.compile(m).infer(x)[0]
    assert got.dtype == np.dtype(dst)
    np.testing.assert_array_equal(got, x.view(dst))


def test_bitcast_refuses_width_changes_bool_and_half():
    for src, to in [(np.float32, 7), (np.uint8, 9), (np.float32, 10)]:  # int64; bool; float16
        m = make_model([helper.make_node("BitCast", ["x"], ["y"], to=to)], [value_info("x", src, [2])],
                       [value_info("y", np.float32, None)], opset=26)
        with pytest.raises(sofie_root.UnsupportedOperatorError, match="BitCast"):
            sofie_root.compile(m)


# -- TensorScatter ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(mode):
    cache = RNG.standard_normal((2, 3, 6, 4)).astype(np.float32)  # [batch, heads, max_seq, head]
    upd = RNG.standard_normal((2, 3, 2, 4)).astype(np.float32)
    idx = np.array([1, 4 if mode == "linear" else 5], np.int64)
    m = make_model([helper.make_node("TensorScatter", ["cache", "upd", "idx"], ["y"], mode=mode)],
                   [value_info("cache", np.float32, cache.shape), value_info("upd", np.float32, upd.shape),
                    value_info("idx", np.int64, [2])], [value_info("y", np.float32, None)], opset=24)
    model = sofie_root.compile(m)
    got = _check(m, cache, upd, idx, compiled=model)[0]
    ref = cache.copy()
    for b in range(2):
        for s in range(2):
            ref[b, :, (idx[b] + s) % 6] = upd[b, :, s]
    np.testing.assert_array_equal(got, ref)
    if mode == "linear":
        with pytest.raises(sofie_root.SofieError, match="outside the cache"):
            model.infer(cache, upd, np.array([0, 5], np.int64))


# -- random generators (statistics: the values are not bit-identical to other runtimes) ------------

def _random_model():
    f, d = 1, 11  # float, double
    nodes = [helper.make_node("RandomNormal", [], ["n"], shape=[400, 250], mean=2.0, scale=3.0, seed=4.0),
             helper.make_node("RandomUniform", [], ["u"], shape=[100000], low=-1.0, high=5.0, dtype=d, seed=9.0),
             helper.make_node("RandomUniformLike", ["x"], ["ul"]),
             helper.make_node("RandomNormalLike", ["x"], ["nl"], dtype=f),
             helper.make_node("Bernoulli", ["p"], ["b"])]
    return make_model(nodes, [value_info("x", np.float64, ["N", 1000]), value_info("p", np.float32, ["M"])],
                      [value_info(n, t, None) for n, t in
                       [("n", np.float32), ("u", np.float64), ("ul", np.float64), ("nl", np.float32),
                        ("b", np.float32)]], opset=22)


def test_random_generators_shapes_statistics_and_seeds():
    model = sofie_root.compile(_random_model())
    p = np.repeat(np.array([0.0, 0.25, 0.9, 1.0], np.float32), 50000)
    x = np.zeros((80, 1000))
    n, u, ul, nl, b = model.infer(x, p)
    assert (n.shape, n.dtype, u.shape, u.dtype) == ((400, 250), np.float32, (100000,), np.float64)
    assert (ul.shape, ul.dtype, nl.shape, nl.dtype) == ((80, 1000), np.float64, (80, 1000), np.float32)
    k = n.size
    assert abs(n.mean() - 2.0) < 5 * 3.0 / np.sqrt(k) and abs(n.std() - 3.0) < 0.03
    assert abs(np.mean(np.abs(n - 2.0) < 3.0) - 0.6827) < 0.01  # the normal's one-sigma mass
    assert u.min() >= -1.0 and u.max() < 5.0 and abs(u.mean() - 2.0) < 0.03 and abs(u.var() - 3.0) < 0.05
    counts = np.histogram(u, bins=20, range=(-1, 5))[0]
    assert counts.min() > 0.9 * u.size / 20 and counts.max() < 1.1 * u.size / 20
    assert 0 <= ul.min() and ul.max() < 1 and abs(ul.mean() - 0.5) < 0.01
    assert abs(nl.mean()) < 0.02 and abs(nl.std() - 1.0) < 0.02
    frac = b.reshape(4, -1).mean(axis=1)
    assert frac[0] == 0 and frac[3] == 1 and abs(frac[1] - 0.25) < 0.01 and abs(frac[2] - 0.9) < 0.01
    assert set(np.unique(b)) == {0.0, 1.0}
    n2, u2, ul2, nl2, b2 = model.infer(x, p)
    np.testing.assert_array_equal(n, n2)  # seeded: the same values at every call
    np.testing.assert_array_equal(u, u2)
    assert not np.array_equal(ul, ul2) and not np.array_equal(nl, nl2)  # unseeded: fresh values
    assert not np.array_equal(b, b2)
    assert model.infer(np.zeros((3, 1000)), p[:7])[2].shape == (3, 1000)  # symbolic batch



# -- Unique ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("is_sorted", [1, 0])
def test_unique(dtype, axis, is_sorted):
    x = RNG.integers(0, 3, (6, 4)).astype(dtype)
    x[3] = x[1]  # repeated rows
    x[:, 2] = x[:, 0]  # repeated columns
    attrs = {"sorted": is_sorted, **({} if axis is None else {"axis": axis})}
    outs = ["y", "idx", "inv", "cnt"]
    m = make_model([helper.make_node("Unique", ["x"], outs, **attrs)], [value_info("x", dtype, ["N", 4])],
                   [value_info("y", dtype, None)] + [value_info(o, np.int64, None) for o in outs[1:]], opset=11)
    model = sofie_root.compile(m)
    got = _check(m, x, compiled=model)
    if is_sorted:
        ref = np.unique(x, axis=axis, return_index=True, return_inverse=True, return_counts=True)
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r.reshape(g.shape))
    _check(m, x[:2], compiled=model)  # another batch size, fewer distinct values


def test_unique_with_nans_keeps_them_together_last():
    x = np.array([2.0, np.nan, 1.0, 2.0, np.nan, -1.0], np.float32)
    m = make_model([helper.make_node("Unique", ["x"], ["y", "i", "v", "c"])], [value_info("x", np.float32, [6])],
                   [value_info("y", np.float32, None)] + [value_info(o, np.int64, None) for o in "ivc"], opset=11)
    y, i, v, c = sofie_root.compile(m).infer(x)
    np.testing.assert_array_equal(y, [-1.0, 1.0, 2.0, np.nan])
    np.testing.assert_array_equal(i, [5, 2, 0, 1])
    np.testing.assert_array_equal(v, [2, 3, 1, 2, 3, 0])
    np.testing.assert_array_equal(c, [1, 1, 2, 2])


# -- NonMaxSuppression -----------------------------------------------------------------------------

@pytest.mark.parametrize("center", [0, 1])
@pytest.mark.parametrize("with_score_threshold", [True, False])
def test_non_max_suppression(center, with_score_threshold):
    nb, nc, nn = 2, 3, 40
    xy = RNG.uniform(0, 10, (nb, nn, 2))
    wh = RNG.uniform(0.5, 4, (nb, nn, 2))
    boxes = (np.concatenate([xy, wh], -1) if center else
             np.concatenate([xy, xy + wh], -1)[..., [1, 0, 3, 2]]).astype(np.float32)  # [y0, x0, y1, x1]
    scores = RNG.random((nb, nc, nn)).astype(np.float32)
    scores[0, 0, 5] = scores[0, 0, 6]  # a tie
    ins = ["boxes", "scores", "maxo", "iou"] + (["st"] if with_score_threshold else [])
    m = make_model([helper.make_node("NonMaxSuppression", ins, ["sel"], center_point_box=center)],
                   [value_info("boxes", np.float32, ["B", nn, 4]), value_info("scores", np.float32, ["B", nc, nn]),
                    value_info("maxo", np.int64, [1])], [value_info("sel", np.int64, None)],
                   {"iou": np.array([0.3], np.float32), "st": np.array([0.2], np.float32)}, opset=11)
    model = sofie_root.compile(m)
    for maxo in (0, 3, 100):
        got = _check(m, boxes, scores, np.array([maxo], np.int64), compiled=model)[0]
        assert got.shape[0] <= nb * nc * min(maxo, nn)
    _check(m, boxes[:1], scores[:1], np.array([5], np.int64), compiled=model)
