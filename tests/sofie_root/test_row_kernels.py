"""The vectorised row kernels (partial accumulators) of reductions over the last axis, RMS and Lp
normalisation: rows long enough to take the 8-lane loops and their remainders, NaN and infinities
anywhere in a row, against numpy and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root

from .ort_check import make_model, run_ort, run_reference, value_info

F = np.float32
FLT_MIN = 1.17549435e-38
RNG = np.random.default_rng(5)


def _rows(n: int) -> np.ndarray:
    """Rows of ``n`` values: plain ones, then NaN, +inf, -inf at the start, middle and in the tail."""
    x = RNG.standard_normal((10, n)).astype(F)
    x[1, 0] = np.nan
    x[2, n // 2] = np.nan
    x[3, n - 1] = np.nan
    x[4, n - 1] = np.inf
    x[5, 0] = -np.inf
    x[6, :] = -np.inf
    x[7, :] = 3.0
    x[8, n // 2] = np.inf
    x[8, 0] = np.nan
    return x


@pytest.mark.parametrize("n", [7, 8, 19, 64])
@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_max_min_rows_with_nan_and_inf(op: str, n: int) -> None:
    model = make_model([helper.make_node(op, ["x", "axes"], ["y"], keepdims=0)], [value_info("x", F, (10, n))],
                       [value_info("y", F, None)], {"axes": np.array([-1], np.int64)}, opset=18)
    x = _rows(n)
    got = sofie_root.compile(model).infer(x)[0]
    np.testing.assert_array_equal(got, (np.max if op == "ReduceMax" else np.min)(x, axis=-1))


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceProd"])
def test_sum_like_rows(op: str) -> None:
    n = 37
    model = make_model([helper.make_node(op, ["x", "axes"], ["y"], keepdims=1)], [value_info("x", F, ("N", 3, n))],
                       [value_info("y", F, None)], {"axes": np.array([2], np.int64)}, opset=18)
    x = (RNG.standard_normal((4, 3, n)) * (0.5 if op == "ReduceProd" else 1) + (1 if op == "ReduceProd" else 0))
    x = x.astype(F)
    got = sofie_root.compile(model).infer(x)[0]
    np.testing.assert_allclose(got, run_ort(model, x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [5, 64, 300])
def test_rms_and_lp_normalization_rows(n: int) -> None:
    scale = RNG.standard_normal(n).astype(F)
    rms = make_model([helper.make_node("RMSNormalization", ["x", "s"], ["y"], axis=-1, epsilon=1e-5)],
                     [value_info("x", F, ("N", n))], [value_info("y", F, None)], {"s": scale}, opset=23)
    x = RNG.standard_normal((6, n)).astype(F)
    x[2] = 0.0  # a zero row: RMS gives 0, Lp gives 0 (ONNX: a zero norm gives 0)
    xd = x.astype(np.float64)
    ref = xd / np.sqrt((xd * xd).mean(axis=-1, keepdims=True) + 1e-5) * scale
    np.testing.assert_allclose(sofie_root.compile(rms).infer(x)[0], ref, rtol=1e-5, atol=1e-6)
    for p in (1, 2):
        model = make_model([helper.make_node("LpNormalization", ["x"], ["y"], axis=-1, p=p)],
                           [value_info("x", F, ("N", n))], [value_info("y", F, None)])
        norm = np.abs(xd).sum(axis=-1, keepdims=True) if p == 1 else np.sqrt((xd * xd).sum(axis=-1, keepdims=True))
        ref = np.divide(xd, norm, out=np.zeros_like(xd), where=norm != 0)
        np.testing.assert_allclose(sofie_root.compile(model).infer(x)[0], ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("n", [6, 64, 300])
def test_layer_norm_one_pass_statistics(n: int) -> None:
    """LayerNorm's one-pass statistics (sum and sum of squares in double): rows with a large mean
    and a small spread, constant rows (exactly the bias) and ordinary rows, against float64 numpy."""
    g, b = RNG.standard_normal(n).astype(F), RNG.standard_normal(n).astype(F)
    model = make_model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)],
                       [value_info("x", F, ("N", n))], [value_info("y", F, None)], {"g": g, "b": b}, opset=17)
    x = RNG.standard_normal((5, n)).astype(F)
    x[1] = (1000 + RNG.standard_normal(n) * 0.01).astype(F)  # mean 1000, spread 0.01: 1e-10 relative variance
    x[2] = 1234.5
    x[3] = -3.0e-3
    xd = x.astype(np.float64)
    mu = xd.mean(axis=-1, keepdims=True)
    ref = (xd - mu) / np.sqrt(((xd - mu) ** 2).mean(axis=-1, keepdims=True) + 1e-5) * g + b
    got = sofie_root.compile(model).infer(x)[0]
    ort = run_ort(model, x)[0]
    ordinary = [0, 4]
    np.testing.assert_allclose(got[ordinary], ref[ordinary], rtol=1e-4, atol=1e-5)
    # mean 1000 in float (stash_type 1): x - mean is only good to float's 6e-5 at 1000, times 1/σ ~ 95;
    # the statistics must not add to that: as close to float64 as onnxruntime is
    err, ort_err = np.abs(got[1] - ref[1]).max(), np.abs(ort[1] - ref[1]).max()
    assert err <= max(2 * ort_err, 1e-4), (err, ort_err)
    np.testing.assert_array_equal(got[2], b)
    np.testing.assert_array_equal(got[3], b)


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("last", [0, 1])
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_rows_with_nan_inf_and_ties(op: str, last: int, dtype) -> None:
    n = 64
    x = _rows(n) if dtype == np.float32 else RNG.integers(-3, 4, (10, n)).astype(dtype)  # integers: many ties
    if dtype == np.float32:
        x[9, 10], x[9, 50] = -0.0, 0.0
        x[9, [3, 40]] = x[9].max() if op == "ArgMax" else x[9].min()  # a tie of the extreme
    model = make_model([helper.make_node(op, ["x"], ["y"], axis=-1, keepdims=0, select_last_index=last)],
                       [value_info("x", dtype, (10, n))], [value_info("y", np.int64, None)], opset=13)
    got = sofie_root.compile(model).infer(x)[0]
    fn = np.argmax if op == "ArgMax" else np.argmin
    ref = n - 1 - fn(x[:, ::-1], axis=-1) if last else fn(x, axis=-1)  # NaN counts as the extreme, like numpy
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("n,inner", [(1, 8), (2, 9), (50, 64), (7, 3), (13, 40), (5, 77)], ids=str)
@pytest.mark.parametrize("last", [0, 1])
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_strided_axis_with_nan_inf_and_ties(op: str, last: int, n: int, inner: int) -> None:
    """A strided axis ([N, n, inner], axis 1): blocks of 32 and of 8 columns in vector lanes and the
    scalar columns after them, with NaN (one or several in a column, first or not), infinities,
    -0 against 0 and ties of the extreme, at two batch sizes of one compiled model."""
    model = make_model([helper.make_node(op, ["x"], ["y"], axis=1, keepdims=0, select_last_index=last)],
                       [value_info("x", F, ("N", n, inner))], [value_info("y", np.int64, None)], opset=13)
    m = sofie_root.compile(model)
    fn = np.argmax if op == "ArgMax" else np.argmin
    for batch in (3, 1):
        x = RNG.integers(-2, 3, (batch, n, inner)).astype(F)  # few values: ties everywhere
        x[0, :, 0] = np.nan
        x[0, n // 2, 1 % inner] = np.nan
        x[0, n - 1, (inner - 1)] = np.nan
        x[0, 0, (inner // 2)] = -np.inf
        x[0, n - 1, (inner // 2)] = np.inf
        x[0, :, (inner // 3)] = -0.0
        x[0, n // 2, (inner // 3)] = 0.0
        (got,) = m.infer(x)
        ref = n - 1 - fn(x[:, ::-1], axis=1) if last else fn(x, axis=1)  # NaN counts as the extreme, like numpy
        np.testing.assert_array_equal(got, ref)


# -- sofie_rt::rows kernels (8-lane vectors with a padded tail) ---------------------------------

ROW_LENGTHS = [1, 3, 8, 10, 17, 40, 64]


@pytest.mark.parametrize("n", ROW_LENGTHS)
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_rows_against_reference(op: str, n: int) -> None:
    """Contiguous rows of every length class (all tail, one vector, vectors and a tail), with NaN,
    +-inf, -inf rows, ties and a key-padding mask (-1e9, -inf), against onnx.reference."""
    x = _rows(n)
    if n > 2:
        x[9, n // 2:] = -1e9  # padding mask
        x[0, :2] = 7.0  # a tie of the maximum (Hardmax: the first one)
    model = make_model([helper.make_node(op, ["x"], ["y"], axis=-1)], [value_info("x", F, (10, n))],
                       [value_info("y", F, None)], opset=13)
    got = sofie_root.compile(model).infer(x)[0]
    with np.errstate(all="ignore"):
        if op == "LogSoftmax":
            # x - max - log(sum(exp(x - max))) in float64: the reference's log(softmax(x)) gives
            # -inf where exp underflows (a masked -1e9), where ONNX Runtime and we give x - c
            xd = x.astype(np.float64)
            m = xd.max(axis=-1, keepdims=True)
            ref = xd - m - np.log(np.exp(xd - m).sum(axis=-1, keepdims=True))
        else:
            ref = run_reference(model, x)[0]
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("n", ROW_LENGTHS)
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceLogSumExp"])
def test_reduce_rows_against_reference(op: str, n: int) -> None:
    model = make_model([helper.make_node(op, ["x", "axes"], ["y"], keepdims=0)], [value_info("x", F, (10, n))],
                       [value_info("y", F, None)], {"axes": np.array([-1], np.int64)}, opset=18)
    x = _rows(n)
    got = sofie_root.compile(model).infer(x)[0]
    with np.errstate(all="ignore"):
        # ReduceLogSumExp is computed over the finite maximum (an inf gives inf, a row of -inf
        # -inf), as numpy's logaddexp, where the reference's x - max gives NaN
        ref = (np.logaddexp.reduce(x.astype(np.float64), axis=-1) if op == "ReduceLogSumExp"
               else run_reference(model, x)[0])
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (2, 4, 16, 16), (1, 2, 40)])
def test_instance_and_mean_variance_normalization_rows(shape) -> None:
    """InstanceNormalization and MeanVarianceNormalization (statistics by the row kernels over the
    contiguous spatial run): ordinary planes, a plane far from 0 and a constant plane, against
    float64 numpy."""
    c = shape[1]
    x = RNG.standard_normal(shape).astype(F)
    x[0, 0] = (500 + RNG.standard_normal(shape[2:]) * 0.05).astype(F)
    x[-1, -1] = 2.5
    s, b = RNG.standard_normal(c).astype(F), RNG.standard_normal(c).astype(F)
    inst = make_model([helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-5)],
                      [value_info("x", F, ("N",) + shape[1:])], [value_info("y", F, None)], {"s": s, "b": b})
    xd = x.astype(np.float64)
    red = tuple(range(2, len(shape)))
    mu = xd.mean(axis=red, keepdims=True)
    var = ((xd - mu) ** 2).mean(axis=red, keepdims=True)
    bc = (1, c) + (1,) * (len(shape) - 2)
    ref = (xd - mu) / np.sqrt(var + 1e-5) * s.reshape(bc) + b.reshape(bc)
    got = sofie_root.compile(inst).infer(x)[0]
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4)
    np.testing.assert_array_equal(got[-1, -1], np.full(shape[2:], b[-1], F))
    axes = [0] + list(red)
    mvn = make_model([helper.make_node("MeanVarianceNormalization", ["x"], ["y"], axes=axes)],
                     [value_info("x", F, ("N",) + shape[1:])], [value_info("y", F, None)], opset=13)
    mu = xd.mean(axis=tuple(axes), keepdims=True)
    ref = (xd - mu) / (np.sqrt(((xd - mu) ** 2).mean(axis=tuple(axes), keepdims=True)) + 1e-9)
    # (not against onnxruntime here: its MVN is off by 2e-4 on the plane at 500 and NaN on the
    # constant one, where 0 / (0 + 1e-9) is 0)
    np.testing.assert_allclose(sofie_root.compile(mvn).infer(x)[0], ref, rtol=1e-5, atol=1e-5)


# -- rows processed 8 at a time (softmax, ArgMax/ArgMin) and Hardmax along a strided axis -----

def _many_rows(rows: int, n: int) -> np.ndarray:
    """``rows`` rows of ``n`` values, the special rows of _rows spread over different positions of
    the groups of 8 (first, middle, last of a group and in the final partial group)."""
    x = RNG.standard_normal((rows, n)).astype(F)
    special = _rows(n)
    for i, r in enumerate([0, 4, 7, 8, 11, 15, 16, rows - 3, rows - 2, rows - 1]):
        x[r] = special[i]
    if n > 2:
        x[5, n // 2:] = -1e9  # padding masks: -1e9 and -inf
        x[9, (n + 1) // 2:] = -np.inf
        x[12, :2] = x[12].max() + 1  # a tie of the maximum
        x[13, -2:] = x[13].max() + 1  # a tie in the tail
    return x


@pytest.mark.parametrize("n", [1, 3, 8, 10, 16, 17, 40, 527, 600, 1024])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_groups_of_rows(op: str, n: int) -> None:
    """21 rows (two groups of 8 and a partial one; rows above 512 take the row-by-row path: 16-lane
    vectors on AVX-512 machines, with tails of 15, 8 and 0 values here) with NaN,
    infinities, masks and ties at every position of a group, against float64 numpy (the masked
    probabilities must be exactly 0)."""
    x = _many_rows(21, n)
    model = make_model([helper.make_node(op, ["x"], ["y"], axis=-1)], [value_info("x", F, ("N", n))],
                       [value_info("y", F, None)], opset=13)
    got = sofie_root.compile(model).infer(x)[0]
    with np.errstate(all="ignore"):
        xd = x.astype(np.float64)
        m = xd.max(axis=-1, keepdims=True)
        e = np.exp(xd - m)
        if op == "LogSoftmax":
            ref = xd - m - np.log(e.sum(axis=-1, keepdims=True))
        elif op == "Softmax":
            ref = e / e.sum(axis=-1, keepdims=True)
        else:
            ref = run_reference(model, x)[0]
    if op == "Hardmax":
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6, equal_nan=True)
    if op == "Softmax" and n > 2:
        assert (got[5, n // 2:] == 0).all() and (got[9, (n + 1) // 2:] == 0).all()


@pytest.mark.parametrize("n", [1, 15, 16, 17, 64, 100])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_single_row(op: str, n: int) -> None:
    """A model of one row (the row-by-row path at every length) with NaN, -inf and a mask in turn,
    against float64 numpy."""
    model = make_model([helper.make_node(op, ["x"], ["y"], axis=-1)], [value_info("x", F, (1, n))],
                       [value_info("y", F, None)], opset=13)
    m = sofie_root.compile(model)
    rng = np.random.default_rng(n)
    for special in (None, np.nan, -np.inf, -1e9):
        x = rng.standard_normal((1, n)).astype(F)
        if special is not None and n > 1:
            x[0, n // 2:] = special
        got = m.infer(x)[0]
        with np.errstate(all="ignore"):
            xd = x.astype(np.float64)
            mx = xd.max(axis=-1, keepdims=True)
            e = np.exp(xd - mx)
            ref = xd - mx - np.log(e.sum(axis=-1, keepdims=True)) if op == "LogSoftmax" else e / e.sum(-1, keepdims=True)
        np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6, equal_nan=True)
        if op == "Softmax" and special in (-np.inf, -1e9) and n > 1:
            assert (got[0, n // 2:] == 0).all()


@pytest.mark.parametrize("n", [1, 3, 10, 40])
def test_hardmax_few_rows(n: int) -> None:
    """Fewer than 8 rows (their own path): NaN at the start, middle and end, +inf, -inf, a row of
    -inf, against onnx.reference."""
    x = _rows(n)[:7]
    model = make_model([helper.make_node("Hardmax", ["x"], ["y"], axis=-1)], [value_info("x", F, ("N", n))],
                       [value_info("y", F, None)], opset=13)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(sofie_root.compile(model).infer(x)[0], run_reference(model, x)[0])


@pytest.mark.parametrize("n", [1, 5, 10, 64, 67])
@pytest.mark.parametrize("last", [0, 1])
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_groups_of_rows(op: str, last: int, n: int) -> None:
    x = _many_rows(21, n)
    x[14] = np.floor(x[14] * 2)  # many ties
    x[17] = -np.inf if op == "ArgMax" else np.inf  # the extreme equals the padding of the tail
    model = make_model([helper.make_node(op, ["x"], ["y"], axis=-1, keepdims=0, select_last_index=last)],
                       [value_info("x", F, ("N", n))], [value_info("y", np.int64, None)], opset=13)
    got = sofie_root.compile(model).infer(x)[0]
    fn = np.argmax if op == "ArgMax" else np.argmin
    ref = n - 1 - fn(x[:, ::-1], axis=-1) if last else fn(x, axis=-1)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 64, 50), (2, 9, 8), (1, 1, 3)])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_family_strided_axis(op: str, shape) -> None:
    """Along axis 1 (8 columns of the inner dimension per vector and a partial group): NaN (the
    column is NaN; Hardmax: the first NaN wins), ties (Hardmax: the first), a column of -inf, a
    masked half column (-1e9: probabilities exactly 0), against onnx.reference / float64 numpy."""
    if op == "Hardmax":
        x = RNG.integers(-3, 4, shape).astype(F)  # many ties
    else:
        x = (RNG.standard_normal(shape) * 3).astype(F)
    x[0, :, 0] = -np.inf
    if shape[2] > 2:
        x[0, shape[1] // 2, 1] = np.nan
        x[-1, -1, -1] = np.nan
        x[-1, 0, -1] = np.nan
        x[-1, (shape[1] + 1) // 2:, 2] = -1e9
    model = make_model([helper.make_node(op, ["x"], ["y"], axis=1)], [value_info("x", F, ("N",) + shape[1:])],
                       [value_info("y", F, None)], opset=13)
    got = sofie_root.compile(model).infer(x)[0]
    with np.errstate(all="ignore"):
        if op == "Hardmax":
            np.testing.assert_array_equal(got, run_reference(model, x)[0])
            return
        xd = x.astype(np.float64)
        m = xd.max(axis=1, keepdims=True)
        e = np.exp(xd - m)
        ref = xd - m - np.log(e.sum(axis=1, keepdims=True)) if op == "LogSoftmax" else e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6, equal_nan=True)
    if op == "Softmax" and shape[2] > 2:
        assert (got[-1, (shape[1] + 1) // 2:, 2] == 0).all()


@pytest.mark.parametrize("shape", [(2, 5, 37), (3, 4, 70), (2, 9, 8), (1, 3, 5)])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"])
def test_reduce_strided_axis(op: str, shape) -> None:
    """Reductions along axis 1 (vector accumulators over 32 and 8 columns of the inner dimension
    and a partial group): NaN, +-inf, a column of -inf, against numpy."""
    x = RNG.standard_normal(shape).astype(F)
    x[0, :, 0] = -np.inf
    x[0, 1, 1] = np.nan
    x[-1, -1, -1] = np.nan
    x[-1, 0, shape[2] // 2] = np.inf
    x[0, -1, shape[2] - 2] = -np.inf
    model = make_model([helper.make_node(op, ["x", "axes"], ["y"], keepdims=0)],
                       [value_info("x", F, ("N",) + shape[1:])], [value_info("y", F, None)],
                       {"axes": np.array([1], np.int64)}, opset=18)
    got = sofie_root.compile(model).infer(x)[0]
    fn = {"ReduceSum": np.sum, "ReduceMean": np.mean, "ReduceMax": np.max, "ReduceMin": np.min}[op]
    with np.errstate(all="ignore"):
        ref = fn(x.astype(np.float64), axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6, equal_nan=True)


ROWS_HARNESS = """
inline void sofie_rows_test_softmax(const float *x, float *y, long rows, long n, bool log)
{ sofie_rt::rows::softmax<float>(x, y, rows, n, log); }
inline void sofie_rows_test_exp8(const float *x, float *y, long n)
{ for (long i = 0; i + 8 <= n; i += 8) sofie_rt::rows::store(y + i, sofie_rt::rows::exp8_nonpos(sofie_rt::rows::load(x + i))); }
inline void sofie_rows_test_log8(const float *x, float *y, long n)
{ for (long i = 0; i + 8 <= n; i += 8) sofie_rt::rows::store(y + i, sofie_rt::rows::log8(sofie_rt::rows::load(x + i))); }
inline void sofie_rows_test_vmlog(const float *x, float *y, long n)
{ for (long i = 0; i < n; ++i) y[i] = sofie_rt::vm::log(x[i]); }
inline void sofie_rows_test_tanh8(const float *x, float *y, long n)
{ for (long i = 0; i + 8 <= n; i += 8) sofie_rt::rows::store(y + i, sofie_rt::rows::tanh8(sofie_rt::rows::load(x + i))); }
inline void sofie_rows_test_vmtanh(const float *x, float *y, long n)
{ for (long i = 0; i < n; ++i) y[i] = sofie_rt::vm::tanh(x[i]); }
"""


@pytest.fixture(scope="module")
def rows_fns():
    from sofie_root.jit import cling

    ROOT = cling.root()
    if not hasattr(ROOT, "sofie_rows_test_softmax"):
        assert ROOT.gInterpreter.Declare(cling.optimized(ROWS_HARNESS))
    return ROOT


def _pad8(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.zeros(-len(x) % 8, F)]).astype(F)


def test_exp8_nonpos_error_and_edges(rows_fns) -> None:
    """The softmax exp over every 61st float32 bit pattern of [-inf, 0]: within 1.8e-7 relative
    error where e^x is a normal float, exactly 0 from -88 down (masked scores), NaN kept."""
    u = np.arange(0x80000000, 0xFF800001, 61, dtype=np.uint64).astype(np.uint32)
    x = _pad8(np.concatenate([u.view(F), np.array([0.0, -0.0, -np.inf, np.nan, -88.0, -1e9, -87.0], F)]))
    y = np.empty_like(x)
    rows_fns.sofie_rows_test_exp8(x, y, len(x))
    with np.errstate(all="ignore"):
        ref = np.exp(x.astype(np.float64))
    normal = ref >= FLT_MIN
    assert (np.abs(y[normal] / ref[normal] - 1) <= 1.8e-7).all()
    assert (y[x <= -88.0] == 0).all()
    assert (np.abs(y[~normal & ~np.isnan(x)]) <= FLT_MIN).all()
    assert np.isnan(y[np.isnan(x)]).all()
    assert y[x == 0].tolist() == [1.0] * int((x == 0).sum())


def test_log8_is_vm_log(rows_fns) -> None:
    """log8 (the log-softmax's log of 8 row sums at once) gives vm::log's bits everywhere."""
    u = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32)
    x = _pad8(np.concatenate([u.view(F), np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, FLT_MIN], F)]))
    y8, y1 = np.empty_like(x), np.empty_like(x)
    rows_fns.sofie_rows_test_log8(x, y8, len(x))
    rows_fns.sofie_rows_test_vmlog(x, y1, len(x))
    same = (y8.view(np.uint32) == y1.view(np.uint32)) | (np.isnan(y8) & np.isnan(y1))
    assert same.all(), x[~same][:5]


def test_tanh8_is_vm_tanh(rows_fns) -> None:
    """tanh8 (the fused 1x1 convolution's and the recurrent gates' tanh of 8 lanes) gives
    vm::tanh's bits everywhere: the same clamps and rational (vm::tanh_clamped)."""
    u = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32)
    x = _pad8(np.concatenate([u.view(F), np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 8.9, -9.0], F),
                              np.linspace(-10, 10, 20001, dtype=F)]))
    y8, y1 = np.empty_like(x), np.empty_like(x)
    rows_fns.sofie_rows_test_tanh8(x, y8, len(x))
    rows_fns.sofie_rows_test_vmtanh(x, y1, len(x))
    same = (y8.view(np.uint32) == y1.view(np.uint32)) | (np.isnan(y8) & np.isnan(y1))
    assert same.all(), x[~same][:5]



@pytest.mark.parametrize("n", [3, 10, 17, 40, 600])
@pytest.mark.parametrize("rows", [1, 7, 8, 21])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_kernel_in_place(rows_fns, log: bool, rows: int, n: int) -> None:
    """The attention kernel runs the softmax in place (y == x): same values as into another
    buffer, whatever the full-width reads and writes of the rows' tails touch."""
    x = _many_rows(rows, n) if rows == 21 else RNG.standard_normal((rows, n)).astype(F)
    y = np.empty_like(x)
    rows_fns.sofie_rows_test_softmax(x, y, rows, n, log)
    z = x.copy()
    rows_fns.sofie_rows_test_softmax(z, z, rows, n, log)
    np.testing.assert_array_equal(z, y)
