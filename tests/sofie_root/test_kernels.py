"""Kernel paths chosen at run time or by shape (sofie_rt::gemm's gemv branches for one row or one
column, Conv's batched and direct paths, recurrent cells at batch 1) against onnxruntime and numpy.

Every path is reached with a symbolic batch so that one compiled model runs both the batch-1
branch and the general one; NaN planted in the arena (by a previous call with NaN input) must not
leak into later results through 0 * y.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root

from .ort_check import assert_matches_ort, make_model, run_ort, value_info

RNG = np.random.default_rng(77)


def _rand(shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


# -- GEMM: gemv for M == 1 and N == 1 -------------------------------------------------------

def _gemm_model(k: int, n: int, trans_a: int, trans_b: int, bias: bool, dtype=np.float32, alpha=1.0, beta=1.0,
                passes=None):
    a_shape = [k, "N"] if trans_a else ["N", k]
    b = _rand((n, k) if trans_b else (k, n), dtype)
    inits = {"B": b}
    names = ["a", "B"]
    if bias:
        inits["C"] = _rand((n,), dtype)
        names.append("C")
    node = helper.make_node("Gemm", names, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    return make_model([node], [value_info("a", dtype, a_shape)], [value_info("y", dtype, None)], inits)


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("k,n", [(300, 300), (7, 33), (37, 1), (1, 5)])
def test_gemm_one_row_and_one_column(trans_a, trans_b, k, n) -> None:
    model = _gemm_model(k, n, trans_a, trans_b, bias=(n % 2 == 1), alpha=0.5, beta=2.0)
    for passes in (None, []):  # with and without the weight pre-transposition
        m = sofie_root.compile(model, passes=passes)
        for batch in (1, 4, 1):
            a = _rand((k, batch) if trans_a else (batch, k))
            assert_matches_ort(model, a, compiled=m, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("c_shape", [(9,), (1, 9), (1,), ()])
@pytest.mark.parametrize("act", ["", "Tanh"])
def test_gemm_row_blocks_with_bias_and_activation(trans_a, c_shape, act) -> None:
    # Gemm with a row-vector or scalar C (and FusedGemm): the product runs in blocks of 256 rows,
    # bias and activation after each; 600 rows end in a partial block
    k, n = 11, 9
    nodes = [helper.make_node("Gemm", ["a", "B", "C"], ["g" if act else "y"], transA=trans_a, alpha=0.5, beta=1.5)]
    if act:
        nodes.append(helper.make_node(act, ["g"], ["y"]))
    model = make_model(nodes, [value_info("a", np.float32, [k, "N"] if trans_a else ["N", k])],
                       [value_info("y", np.float32, None)], {"B": _rand((k, n)), "C": _rand(c_shape)})
    m = sofie_root.compile(model)
    if act:
        assert [x.op_type for x in m.graph.nodes] == ["FusedGemm"]
    for batch in (600, 1, 256):
        a = _rand((k, batch) if trans_a else (batch, k))
        assert_matches_ort(model, a, compiled=m, rtol=1e-5, atol=1e-5)


def test_gemm_batch1_float64_against_numpy() -> None:
    k, n = 19, 23
    model = _gemm_model(k, n, 0, 1, bias=True, dtype=np.float64)
    m = sofie_root.compile(model)
    b = {i.name: i for i in model.graph.initializer}
    from onnx import numpy_helper
    w, c = numpy_helper.to_array(b["B"]), numpy_helper.to_array(b["C"])
    for batch in (1, 3):
        a = _rand((batch, k), np.float64)
        np.testing.assert_allclose(m.infer(a)[0], a @ w.T + c, rtol=1e-12, atol=1e-12)


def test_gemm_batch1_ignores_stale_nan_in_output_buffer() -> None:
    # two chained Gemms: the second one's output lives in the arena after the first's input
    k, n = 16, 24
    w1, w2 = _rand((k, n)), _rand((n, n))
    nodes = [helper.make_node("Gemm", ["a", "W1"], ["h"]), helper.make_node("Gemm", ["h", "W2"], ["h2"]),
             helper.make_node("Neg", ["h2"], ["y"])]
    model = make_model(nodes, [value_info("a", np.float32, ["N", k])], [value_info("y", np.float32, None)],
                       {"W1": w1, "W2": w2})
    m = sofie_root.compile(model)
    bad = np.full((4, k), np.nan, np.float32)
    assert np.isnan(m.infer(bad)[0]).all()
    a = _rand((1, k))
    np.testing.assert_allclose(m.infer(a)[0], -(a @ w1 @ w2), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("a_shape,b_shape", [
    ((1, 40), (40, 9)),         # one row
    (("N", 40), (40, 1)),       # one column
    (("N", 3, 40), (40,)),      # matrix-vector with 1-D promotion
    ((40,), (40, 6)),           # vector-matrix
    ((2, 1, 12), (2, 12, 5)),   # batched, one row per matrix
    ((1, 12), (3, 12, 1)),      # batched, broadcast A, one column per matrix
])
def test_matmul_vector_shapes(a_shape, b_shape) -> None:
    w = _rand(b_shape)
    node = helper.make_node("MatMul", ["a", "B"], ["y"])
    model = make_model([node], [value_info("a", np.float32, list(a_shape))], [value_info("y", np.float32, None)],
                       {"B": w})
    m = sofie_root.compile(model)
    for batch in (1, 2):
        shape = tuple(batch if d == "N" else d for d in a_shape)
        assert_matches_ort(model, _rand(shape), compiled=m, rtol=1e-4, atol=1e-5)


# -- dense layers: sofie_rt::dense::gemm_bias (register tiles of 6 rows x 16 columns) ---------

@pytest.mark.parametrize("k,n", [
    (5, 3), (8, 8), (7, 16), (13, 21), (32, 40), (64, 64), (3, 300),  # edge tiles: N % 16 in 0..15
    (300, 29), (129, 7),    # K > 128 with a right-edge tile (its padded copy of B on the heap)
    (300, 200), (301, 300),  # K * N > 32768: packed panels (the layout pass's, from 32 rows)
    (520, 72),  # K > 512: BLAS per block of 256 rows, then bias and epilogue
])
@pytest.mark.parametrize("kind", ["matmul", "gemm_bias", "fused_gelu"])
def test_dense_kernel_edges(k, n, kind) -> None:
    # rows 1 (gemv), 2-5 (edge tiles only), 6, 7-11 (a full tile and an edge one), 50, 101 (several
    # blocks of rows, the last partial): every edge of the tiles against onnxruntime
    w, b = _rand((k, n)), _rand((n,))
    if kind == "matmul":
        nodes, inits, shape = [helper.make_node("MatMul", ["a", "W"], ["y"])], {"W": w}, ["N", 1, k]
    elif kind == "gemm_bias":
        nodes, inits, shape = [helper.make_node("Gemm", ["a", "W", "C"], ["y"])], {"W": w, "C": b}, ["N", k]
    else:
        nodes = [helper.make_node("MatMul", ["a", "W"], ["h"]), helper.make_node("Add", ["h", "C"], ["hb"]),
                 helper.make_node("Gelu", ["hb"], ["y"])]
        inits, shape = {"W": w, "C": b}, ["N", 3, k]
    model = make_model(nodes, [value_info("a", np.float32, shape)], [value_info("y", np.float32, None)], inits,
                       opset=20)
    m = sofie_root.compile(model)
    # a constant weight above 32768 floats with K <= 512 is also stored in panels (from 32 rows on);
    # a Gemm with a larger K and a weight above DENSE_MAX_WEIGHT floats keeps the BLAS path (one
    # pass for bias and activation); MatMul/FusedMatMul reach gemm_bias's own BLAS branch for it
    packed = k * n > 32768 and k <= 512 and n >= 16
    assert ("dense::gemm_bias_panels" in m.source) == packed
    assert ("dense::gemm_bias" in m.source) == (kind != "gemm_bias" or k * n <= 32768 or packed)
    for batch in (1, 2, 3, 4, 5, 6, 7, 11, 31, 32, 50, 101):
        a = _rand((batch, *shape[1:]))
        assert_matches_ort(model, a, compiled=m, rtol=2e-5, atol=2e-5 * np.sqrt(k))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 1000])
@pytest.mark.parametrize("n", [2, 8, 9, 15, 16])
def test_dense_one_row_narrow_weight(k, n) -> None:
    """Batch 1 against a weight of 2-16 columns (dense::gemv_narrow: K in sets of 4, the last rows
    of B read by parts), with and without bias, against float64 numpy; a NaN or an infinity in
    the input row reaches every output as IEEE arithmetic says (inf * 0 weights give NaN)."""
    w, b = _rand((k, n)), _rand((n,))
    w[0, 0] = 0.0
    for bias in (True, False):
        names, inits = (["a", "W", "C"], {"W": w, "C": b}) if bias else (["a", "W"], {"W": w})
        model = make_model([helper.make_node("Gemm", names, ["y"])], [value_info("a", np.float32, ["N", k])],
                           [value_info("y", np.float32, None)], inits)
        m = sofie_root.compile(model)
        a = _rand((1, k))
        ref = a.astype(np.float64) @ w.astype(np.float64) + (b if bias else 0)
        np.testing.assert_allclose(m.infer(a)[0], ref, rtol=1e-5, atol=1e-5 * np.sqrt(k))
        for special in (np.nan, np.inf):
            a2 = a.copy()
            a2[0, 0] = special
            with np.errstate(invalid="ignore"):
                ref2 = a2.astype(np.float64) @ w.astype(np.float64) + (b if bias else 0)
            got = m.infer(a2)[0]
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref2))
            np.testing.assert_array_equal(np.isinf(got), np.isinf(ref2))



@pytest.mark.parametrize("kind", ["fused_matmul", "fused_gemm"])
def test_dense_gelu_epilogue_over_its_range(kind) -> None:
    # the dense epilogue's Gelu is 0.5 x (1 + erf(x / sqrt2)) with vm::erf (ONNX's formula, as
    # onnx.reference evaluates it): an identity weight puts every value of [-12, 12] (both branches
    # of erf, its clamp, the -0 of large negative x) through it, compared with onnxruntime and with
    # float64 math. For x in [-5.6, -3], 1 + erf cancels: the absolute error is up to about
    # 0.5 |x| ulp(1) = 1.7e-7 (a relative error of up to 1% on results below 1e-4)
    from math import erf

    w, n = np.eye(16, dtype=np.float32), 16
    nodes = [helper.make_node("MatMul", ["a", "W"], ["h"]), helper.make_node("Add", ["h", "C"], ["hb"]),
             helper.make_node("Gelu", ["hb"], ["y"])]
    shape = ["N", 2, n] if kind == "fused_matmul" else ["N", n]
    model = make_model(nodes, [value_info("a", np.float32, shape)], [value_info("y", np.float32, None)],
                       {"W": w, "C": np.zeros(n, np.float32)}, opset=20)
    m = sofie_root.compile(model)
    assert [x.op_type for x in m.graph.nodes] == ["FusedMatMul" if kind == "fused_matmul" else "FusedGemm"]
    a = np.linspace(-12, 12, 120 * n, dtype=np.float32).reshape(-1, *shape[1:])
    got = assert_matches_ort(model, a, compiled=m, rtol=1e-5, atol=2e-7)[0]
    exact = np.vectorize(lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))))(a.astype(np.float64))
    np.testing.assert_allclose(got, exact, rtol=2e-6, atol=2e-7)
    assert (got[a < -5.6] == 0).all() and (got[a > 0] > 0).all()


def test_dense_kernel_fixed_k_template_argument() -> None:
    """A float weight's fixed K (at most linalg.DENSE_FIXED_MAX_K) reaches the kernel as a template
    argument (the compiler unrolls the loop over K); a K above the limit and a float64 product do not."""
    from sofie_root.ops.linalg import DENSE_FIXED_MAX_K

    for k, dtype, fixed in ((24, np.float32, True), (DENSE_FIXED_MAX_K + 8, np.float32, False),
                            (24, np.float64, False)):
        model = make_model([helper.make_node("MatMul", ["a", "W"], ["y"])], [value_info("a", dtype, ["N", 3, k])],
                           [value_info("y", dtype, None)], {"W": _rand((k, 40), dtype)})
        m = sofie_root.compile(model)
        assert (f"gemm_bias<float, {k}>" in m.source or f"gemm_bias_panels<{k}>" in m.source) == fixed, m.source
        assert_matches_ort(model, _rand((5, 3, k), dtype), compiled=m, rtol=2e-5, atol=2e-5 * np.sqrt(k))


DENSE_HARNESS = r"""
// gemm_bias with K fixed at 12 (KC) called with a K or an lda other than KC: the run-time kernel
inline void sofie_dense_test_kc12(long M, long N, long K, const float *A, long lda, const float *B,
                                  const float *bias, float *C)
{ sofie_rt::dense::gemm_bias<float, 12>(M, N, K, A, lda, B, N, bias, C, N); }
"""


@pytest.mark.parametrize("k,lda", [(12, 12), (12, 17), (9, 9), (9, 12)])
def test_dense_kernel_fixed_k_falls_back_when_called_otherwise(k, lda) -> None:
    """The tiles read K and lda as KC: a call whose K or lda differs must take the run-time
    kernel (not read 12 columns of a row of 9, or rows 12 floats apart when they are 17)."""
    from sofie_root.jit import cling

    ROOT = cling.root()
    if not hasattr(ROOT, "sofie_dense_test_kc12"):
        assert ROOT.gInterpreter.Declare(cling.optimized(DENSE_HARNESS))
    m, n = 37, 40
    a = _rand((m, lda))
    b, bias = _rand((k, n)), _rand((n,))
    c = np.full((m, n), np.nan, np.float32)
    ROOT.sofie_dense_test_kc12(m, n, k, a, lda, b, bias, c)
    np.testing.assert_allclose(c, a[:, :k].astype(np.float64) @ b + bias, rtol=1e-5, atol=1e-5)


def test_dense_kernel_nan_and_stale_output() -> None:
    # NaN in one row of A reaches only that row; the output buffer's previous NaN does not leak
    k, n = 20, 24
    w = _rand((k, n))
    model = make_model([helper.make_node("MatMul", ["a", "W"], ["h"]), helper.make_node("Neg", ["h"], ["y"])],
                       [value_info("a", np.float32, ["N", k])], [value_info("y", np.float32, None)], {"W": w})
    m = sofie_root.compile(model)
    assert np.isnan(m.infer(np.full((9, k), np.nan, np.float32))[0]).all()
    a = _rand((9, k))
    a[4, 3] = np.nan
    y = m.infer(a)[0]
    assert np.isnan(y[4]).all() and not np.isnan(np.delete(y, 4, axis=0)).any()
    np.testing.assert_allclose(np.delete(y, 4, axis=0), -(np.delete(a, 4, axis=0) @ w), rtol=1e-5, atol=1e-5)
@pytest.mark.parametrize("a_shape,b_shape", [
    (("N", 4, 50, 16), ("N", 4, 16, 50)),  # attention heads: scores, N not a multiple of 8
    (("N", 4, 50, 50), ("N", 4, 50, 16)),  # attention heads: P V
    (("N", 3, 7, 5), (1, 3, 5, 13)),       # B broadcast over the batch, ragged rows
    (("N", 2, 9, 16), ("N", 1, 16, 24)),   # B broadcast over the heads
])
def test_batched_matmul_of_small_heads(a_shape, b_shape) -> None:
    """The register-blocked tiles of batched MatMul (sofie_rt::gemm_batch_entry): every shape of
    the tile edges, broadcast B (its entries reread), and a zero of A meeting an inf of B (NaN, as
    onnxruntime's GEMM gives), against onnxruntime."""
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    model = make_model([node], [value_info("a", np.float32, list(a_shape)), value_info("b", np.float32, list(b_shape))],
                       [value_info("y", np.float32, None)])
    m = sofie_root.compile(model)
    for batch in (1, 3):
        a = _rand(tuple(batch if d == "N" else d for d in a_shape))
        b = _rand(tuple(batch if d == "N" else d for d in b_shape))
        a[0, 0, 1, 2] = 0.0
        b[0, 0, 2, 3] = np.inf
        got = assert_matches_ort(model, a, b, compiled=m, rtol=1e-4, atol=1e-5)
        assert np.isnan(got[0][0, 0, 1, 3])


# -- recurrent cells: R stored transposed (gemm_pretranspose), batch 1 through gemv ---------

@pytest.mark.parametrize("op,extra", [("LSTM", {}), ("GRU", {"linear_before_reset": 0}),
                                      ("GRU", {"linear_before_reset": 1}), ("RNN", {})])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_recurrent_batch1_both_weight_layouts(op, extra, direction) -> None:
    from sofie_root.ops.rnn import R_TRANSPOSED, W_TRANSPOSED

    from .test_ops_rnn import build

    model, _ = build(op, direction, seq=7, batch=1, isz=5, hidden=9, batch_dim="N", **extra)
    transposed = sofie_root.compile(model)
    (node,) = [n for n in transposed.graph.nodes if n.op_type == op]
    assert node.attrs.get(R_TRANSPOSED) == 1 and node.attrs.get(W_TRANSPOSED) == 1
    plain = sofie_root.compile(model, passes=[])
    assert not [n for n in plain.graph.nodes if n.attrs.get(R_TRANSPOSED) or n.attrs.get(W_TRANSPOSED)]
    for batch in (1, 3):
        _, feeds = build(op, direction, seq=7, batch=batch, isz=5, hidden=9, batch_dim="N", seed=batch, **extra)
        for m in (transposed, plain):
            assert_matches_ort(model, *feeds, compiled=m, rtol=1e-4, atol=1e-5)


def test_recurrent_shared_R_is_not_transposed() -> None:
    # two LSTMs reading the same R: the pass leaves it alone (one layout for both readers)
    from sofie_root.ops.rnn import R_TRANSPOSED

    from .test_ops_rnn import build

    model, feeds = build("LSTM", seq=4, batch=1, isz=3, hidden=5, init=False, outputs=["Y", "", ""])
    node = model.graph.node[0]
    second = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y2"], hidden_size=5)
    model.graph.node.append(second)
    model.graph.output.append(value_info("Y2", np.float32, None))
    m = sofie_root.compile(model)
    assert not [n for n in m.graph.nodes if n.attrs.get(R_TRANSPOSED)]
    assert node.op_type == "LSTM"
    assert_matches_ort(model, *feeds, compiled=m, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act", ["Sigmoid", "Tanh"])
def test_recurrent_gate_activation_accuracy(act) -> None:
    # RNN with hidden_size 1, W = 1, R = 0 and no bias: Y = act(X) at every step, so the gate
    # approximation is checked point by point against the exact function
    x = np.concatenate([np.linspace(-40, 40, 4001), np.geomspace(1e-7, 3, 200), -np.geomspace(1e-7, 3, 200)])
    x = x.astype(np.float32).reshape(-1, 1, 1)
    node = helper.make_node("RNN", ["X", "W", "R"], ["Y"], hidden_size=1, activations=[act])
    model = make_model([node], [value_info("X", np.float32, list(x.shape))], [value_info("Y", np.float32, None)],
                       {"W": np.ones((1, 1, 1), np.float32), "R": np.zeros((1, 1, 1), np.float32)}, opset=14)
    y = sofie_root.compile(model).infer(x)[0].reshape(-1).astype(np.float64)
    xd = x.reshape(-1).astype(np.float64)
    ref = np.tanh(xd) if act == "Tanh" else 1 / (1 + np.exp(-xd))
    np.testing.assert_allclose(y, ref, rtol=0, atol=5e-7)
    if act == "Tanh":  # odd, and exact enough near zero to keep the sign and the magnitude
        np.testing.assert_allclose(y[np.abs(xd) < 1e-3], xd[np.abs(xd) < 1e-3], rtol=1e-6)


# -- Conv: im2col from a zero-padded copy, row copies (memcpy or strided loop) -------------

CONV_KERNEL_CASES = [
    # x shape (batch symbolic), w shape, attrs
    ((1, 33, 17), (4, 1, 3, 3), {"pads": [1, 1, 1, 1]}),                                  # odd sizes
    ((3, 9, 11), (6, 3, 3, 2), {"pads": [2, 0, 1, 1], "strides": [2, 3]}),                # asym pads, strides
    ((4, 10, 9), (4, 2, 3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2], "group": 2}),   # groups + dilations
    ((4, 7, 8), (8, 1, 3, 3), {"pads": [1, 1, 1, 1], "group": 4, "strides": [1, 2]}),      # depthwise x2
    ((2, 13), (3, 2, 5), {"pads": [3, 1], "strides": [2]}),                               # 1-D, strided
    ((2, 4, 5, 6), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1], "dilations": [1, 2, 1]}),  # 3-D
    ((3, 6, 6), (5, 3, 1, 1), {"pads": [1, 1, 0, 0]}),                                    # 1x1 with padding
    ((3, 6, 6), (5, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
]


@pytest.mark.parametrize("case", range(len(CONV_KERNEL_CASES)))
def test_conv_padded_im2col_batches(case) -> None:
    xs, ws, attrs = CONV_KERNEL_CASES[case]
    inits = {"W": _rand(ws), "B": _rand((ws[0],))}
    node = helper.make_node("Conv", ["x", "W", "B"], ["y"], **attrs)
    model = make_model([node], [value_info("x", np.float32, ["N", *xs])], [value_info("y", np.float32, None)],
                       inits, opset=19)
    m = sofie_root.compile(model)
    for batch in (1, 5, 2):  # the padded buffer's zero border must survive earlier images and calls
        assert_matches_ort(model, _rand((batch, *xs)), compiled=m, rtol=1e-4, atol=1e-5)


def test_conv_padded_buffer_shared_with_nan() -> None:
    # a NaN input in one call must not leave NaN in the padding of the next
    node = helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])
    model = make_model([node], [value_info("x", np.float32, ["N", 2, 5, 5])], [value_info("y", np.float32, None)],
                       {"W": _rand((3, 2, 3, 3))}, opset=19)
    m = sofie_root.compile(model)
    assert np.isnan(m.infer(np.full((2, 2, 5, 5), np.nan, np.float32))[0]).all()
    assert_matches_ort(model, _rand((2, 2, 5, 5)), compiled=m, rtol=1e-4, atol=1e-5)


def test_recurrent_W_graph_input_R_constant() -> None:
    # only R is a private constant: R is transposed, W (a graph input) keeps the ONNX layout
    from sofie_root.ops.rnn import R_TRANSPOSED, W_TRANSPOSED

    rng = np.random.default_rng(5)
    w = (rng.standard_normal((1, 4 * 6, 3)) * 0.5).astype(np.float32)
    r = (rng.standard_normal((1, 4 * 6, 6)) * 0.5).astype(np.float32)
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=6)
    model = make_model([node], [value_info("X", np.float32, [5, "N", 3]), value_info("W", np.float32, [1, 24, 3])],
                       [value_info("Y", np.float32, None)], {"R": r}, opset=14)
    m = sofie_root.compile(model)
    (n,) = m.graph.nodes
    assert n.attrs.get(R_TRANSPOSED) == 1 and not n.attrs.get(W_TRANSPOSED)
    for batch in (1, 2):
        assert_matches_ort(model, rng.standard_normal((5, batch, 3)).astype(np.float32), w, compiled=m,
                           rtol=1e-4, atol=1e-5)


# -- dense layers on packed panels (passes.layout.pack_dense_weights, dense::gemm_bias_panels) ---

def _panel_model(k: int, n: int, op: str, **attrs):
    w = _rand((k, n))
    if op == "Gemm":
        node = helper.make_node("Gemm", ["a", "W", "C"], ["y"], **attrs)
        inits, shape = {"W": w, "C": _rand((n,))}, ["N", k]
    else:
        node = helper.make_node("MatMul", ["a", "W"], ["y"])
        inits, shape = {"W": w}, ["N", 2, k]
    return make_model([node], [value_info("a", np.float32, shape)], [value_info("y", np.float32, None)], inits), inits


@pytest.mark.parametrize("k", [1, 5, 17, 33, 300, 301])
@pytest.mark.parametrize("n", [17, 33, 300, 301])
@pytest.mark.parametrize("op", ["Gemm", "MatMul"])
def test_dense_panels_odd_shapes_against_float64(k, n, op, monkeypatch) -> None:
    # every K and N not a multiple of the tile (1 x 16 columns, K unrolled 4x), M from 1 (gemv
    # on the unpacked B) through 31 (in-place tiles) to 32, 33, 300, 301 (the panels), against
    # numpy in float64: the error bound is a few ulp of the sum of |a| |w| per output. The weight
    # size limit of the packing pass is lowered so that small K and N reach the panels too
    from sofie_root.passes import layout

    monkeypatch.setattr(layout, "DENSE_MAX_WEIGHT", 0)
    model, inits = _panel_model(k, n, op)
    m = sofie_root.compile(model)
    assert "dense::gemm_bias_panels" in m.source
    (node,) = m.graph.nodes
    assert node.attrs["sofie_b_panels"] == 1 and node.inputs[-1] == "W__panels"
    w = inits["W"].astype(np.float64)
    for rows in (1, 5, 31, 32, 33, 300, 301):
        a = _rand((rows, k) if op == "Gemm" else (rows, 2, k))
        got = m.infer(a)[0]
        a64 = a.astype(np.float64)
        ref = a64 @ w + (inits["C"].astype(np.float64) if op == "Gemm" else 0.0)
        bound = 4 * np.finfo(np.float32).eps * (np.abs(a64) @ np.abs(w) + 1) * np.sqrt(k)
        assert got.shape == ref.shape and (np.abs(got - ref) <= bound).all(), (rows, float(np.abs(got - ref).max()))


@pytest.mark.parametrize("attrs", [{"transA": 1}, {"alpha": 0.5}, {"beta": 2.0}])
def test_dense_panels_not_made_for_other_gemm_forms(attrs) -> None:
    # transposed A, alpha != 1 or beta != 1 take the BLAS path: no packed copy is stored
    k, n = 40, 48
    w, c = _rand((k, n)), _rand((n,))
    node = helper.make_node("Gemm", ["a", "W", "C"], ["y"], **attrs)
    shape = [k, "N"] if attrs.get("transA") else ["N", k]
    model = make_model([node], [value_info("a", np.float32, shape)], [value_info("y", np.float32, None)],
                       {"W": w, "C": c})
    m = sofie_root.compile(model)
    assert "gemm_bias_panels" not in m.source and "W__panels" not in m.graph.initializers
    for rows in (1, 40):
        assert_matches_ort(model, _rand((k, rows) if attrs.get("transA") else (rows, k)), compiled=m, rtol=1e-4,
                           atol=1e-4)


def test_dense_panels_nan_inf_and_shared_weight(monkeypatch) -> None:
    # NaN and inf in A reach only their row (inf * a zero weight would be NaN: every product is
    # computed); an inf in the weight spreads to its column; one weight read by two MatMuls is
    # packed once; a fused bias + Relu epilogue runs on the panel path (the pass's size limit lowered)
    from sofie_root.passes import layout

    monkeypatch.setattr(layout, "DENSE_MAX_WEIGHT", 0)
    k, n = 70, 40
    w, b = _rand((k, n)), _rand((n,))
    w[5, 7] = np.inf
    nodes = [helper.make_node("MatMul", ["a", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["y"]), helper.make_node("MatMul", ["a", "W"], ["z"])]
    model = make_model(nodes, [value_info("a", np.float32, ["N", 3, k])],
                       [value_info("y", np.float32, None), value_info("z", np.float32, None)], {"W": w, "b": b})
    m = sofie_root.compile(model)
    assert [i for i in m.graph.initializers if i.endswith("__panels")] == ["W__panels"]
    assert m.source.count("gemm_bias_panels") == 2
    a = np.abs(_rand((40, 3, k))) + 0.1
    a[3, 1, 2] = np.nan
    a[7, 0, 9] = -np.inf
    y, z = m.infer(a)
    ref_y, ref_z = run_ort(model, a)
    for got, ref in ((y, ref_y), (z, ref_z)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
        fin = np.isfinite(ref)
        np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-4, atol=1e-4)
    assert np.isnan(z[3, 1]).all() and np.isinf(np.delete(z.reshape(-1, n), [3 * 3 + 1, 7 * 3], axis=0)[:, 7]).all()


def test_dense_panels_skipped_by_the_gpu_pipeline_and_the_empty_pass_list() -> None:
    from sofie_root.passes import CPU_ONLY, DEFAULT

    assert "pack_dense_weights" in DEFAULT and "pack_dense_weights" in CPU_ONLY
    model, _ = _panel_model(64, 64, "MatMul")
    assert "gemm_bias_panels" not in sofie_root.compile(model, passes=[]).source
