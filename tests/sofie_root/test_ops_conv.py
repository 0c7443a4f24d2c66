"""Conv, ConvTranspose and the pools against onnxruntime (float32) and, where onnxruntime has
no float64 kernel or deviates from the ONNX specification, against onnx.reference."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import sofie_root

from .ort_check import assert_matches_ort, make_model, run_ort, value_info

RNG = np.random.default_rng(2024)


def _rand(shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _model(op: str, x_shape, dtype=np.float32, weights: dict | None = None, n_out: int = 1,
           out_dtypes=None, opset: int = 19, **attrs):
    """One-node model: graph input x (x_shape, may hold "N"), constant weights, outputs y, y1..."""
    weights = weights or {}
    names = ["x", *weights]
    outs = ["y"] + [f"y{k}" for k in range(1, n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    out_dtypes = out_dtypes or [dtype] * n_out
    return make_model([node], [value_info("x", dtype, x_shape)],
                      [value_info(o, dt, None) for o, dt in zip(outs, out_dtypes)],
                      initializers=weights, opset=opset)


def assert_matches_reference(model, *arrays, rtol=1e-7, atol=1e-9, compiled=None):
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
    """Compile once with a symbolic batch and compare at batch 1 and 3."""
    m = sofie_root.compile(model)
    for n in (1, 3):
        check(model, shape_fn(n), compiled=m, **kw)


# -- Conv -------------------------------------------------------------------------------------

CONV_CASES = {
    "basic_bias": ((2, 3, 7, 6), (4, 3, 3, 3), True, {}),
    "no_bias_kernel_attr": ((2, 3, 7, 6), (4, 3, 3, 2), False, {"kernel_shape": [3, 2]}),
    "asym_pads_strides": ((1, 2, 9, 8), (3, 2, 3, 3), True, {"pads": [1, 0, 2, 1], "strides": [2, 1]}),
    "dilations": ((1, 2, 9, 8), (3, 2, 3, 2), True, {"dilations": [2, 3], "pads": [1, 1, 1, 1]}),
    "group2": ((2, 4, 6, 6), (6, 2, 3, 3), True, {"group": 2, "pads": [1, 1, 1, 1]}),
    "depthwise": ((1, 3, 8, 7), (3, 1, 3, 3), True, {"group": 3, "pads": [1, 1, 1, 1]}),
    "depthwise_mult2": ((1, 3, 8, 7), (6, 1, 3, 3), False, {"group": 3, "strides": [2, 2]}),
    "same_upper_s2": ((1, 2, 8, 7), (3, 2, 3, 4), True, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "same_lower_s2": ((1, 2, 8, 7), (3, 2, 3, 4), True, {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    "same_upper_dil": ((1, 2, 8, 7), (3, 2, 3, 3), False, {"auto_pad": "SAME_UPPER", "dilations": [2, 1]}),
    "valid": ((1, 2, 8, 7), (3, 2, 3, 3), True, {"auto_pad": "VALID", "strides": [2, 3]}),
    "pointwise": ((2, 5, 4, 3), (7, 5, 1, 1), True, {}),
    "pointwise_stride": ((2, 5, 5, 4), (7, 5, 1, 1), False, {"strides": [2, 2]}),
    # the register-blocked 1x1 kernel (ops/conv.py _pointwise_tiled: 4 channels x 16 positions)
    "pointwise_tiled": ((2, 5, 4, 8), (12, 5, 1, 1), True, {}),
    "pointwise_tiled_group": ((2, 6, 4, 4), (8, 3, 1, 1), False, {"group": 2}),
    # positions past the whole tiles: a one-vector tile, then scalar sums (25 = 16 + 8 + 1, 9, 13)
    "pointwise_tiled_tail": ((2, 5, 25), (8, 5, 1), True, {}),
    "pointwise_tiled_short": ((2, 3, 3, 3), (4, 3, 1, 1), False, {}),
    "pointwise_tiled_13_group": ((2, 6, 13), (8, 3, 1), True, {"group": 2}),
    # output channels past the whole 4-channel tiles (13 = 3 x 4 + 1) of 24 positions, then
    # one-vector tiles of 12 + 1 channels for the positions past them (50 = 2 x 24 + 2)
    "pointwise_tiled_odd_channels": ((2, 5, 5, 10), (13, 5, 1, 1), True, {}),
    # an input of more than 256 KB: tiles of 6 channels x 16 positions (13 = 5 + 4 + 4; 1042 =
    # 65 x 16 + an overlapping one-vector tile)
    "pointwise_tiled_wide_input": ((1, 64, 1042), (13, 64, 1), True, {}),
    # the register-blocked direct kernel (ops/conv.py _direct_tiled): 16- and 8-position tiles of
    # an output row, scalar tails; pads, dilations, leading strides, groups, 1-D and 3-D
    "direct_tiled": ((2, 3, 9, 20), (8, 3, 3, 3), True, {"pads": [1, 1, 1, 1]}),
    "direct_tiled_dil_stride": ((1, 2, 9, 13), (4, 2, 3, 3), False,
                                {"pads": [1, 0, 1, 2], "dilations": [2, 1], "strides": [2, 1]}),
    "direct_tiled_1d": ((2, 4, 30), (8, 4, 5), True, {"pads": [2, 2]}),
    "direct_tiled_3d": ((1, 2, 3, 4, 21), (4, 2, 2, 2, 3), True, {"pads": [0, 1, 1, 0, 0, 1]}),
    "direct_tiled_group": ((2, 4, 6, 14), (8, 2, 3, 3), True, {"group": 2, "pads": [1, 1, 1, 1]}),
    "direct_tiled_no_pads": ((1, 3, 5, 18), (4, 3, 2, 3), True, {}),
    # output channels past the whole 6-channel tiles (7 = 6 + 1, 13 = 6 + 6 + 1, 3 < 6), 8-position
    # tiles of two rows with a last odd row, rows of exactly 8 and of 15 and 20 (an overlapping tile)
    "direct_tiled_odd_channels": ((2, 3, 7, 15), (7, 3, 3, 3), True, {"pads": [1, 1, 1, 1]}),
    "direct_tiled_13_rows_of_8": ((1, 2, 3, 5, 8), (13, 2, 2, 3, 3), False, {"pads": [0, 1, 1, 1, 1, 1]}),
    "direct_tiled_3_channels_1d": ((2, 5, 20), (3, 5, 4), True, {"pads": [2, 1]}),
    # rows of 10: more than a fifth of an overlapping tile wasted, im2col + GEMM instead
    "im2col_short_rows": ((1, 2, 3, 4, 10), (4, 2, 2, 2, 3), True, {"pads": [0, 1, 1, 0, 0, 1]}),
    "conv1d": ((2, 3, 11), (4, 3, 3), True, {"pads": [2, 1], "strides": [2], "dilations": [2]}),
    "conv3d": ((1, 2, 5, 6, 4), (3, 2, 3, 2, 3), True, {"pads": [1, 0, 1, 0, 1, 1], "strides": [1, 2, 1]}),
    "big_pad": ((1, 1, 3, 3), (2, 1, 2, 2), True, {"pads": [3, 3, 3, 3]}),
    # im2col + the dense kernel (dense::gemm_bias): 5x5 stride 2 (16 channels: tiles of 6 + 6 + 4
    # rows), one output channel over 16 positions (gemv_narrow) and over 25 (BLAS gemv)
    "im2col_5x5_s2": ((2, 1, 28, 28), (16, 1, 5, 5), True, {"pads": [2, 2, 2, 2], "strides": [2, 2]}),
    "im2col_one_channel_16": ((1, 2, 6, 6), (1, 2, 5, 5), True, {"pads": [1, 1, 1, 1]}),
    "im2col_one_channel_25": ((1, 2, 9, 9), (1, 2, 5, 5), False, {}),
    # stride-2 rows of im2col read from the phase-split padded copy: dilated, odd left pad, 1-D
    "im2col_s2_split_dilated": ((1, 3, 9, 15), (4, 3, 3, 3), True,
                                {"pads": [1, 2, 0, 1], "strides": [2, 2], "dilations": [1, 2]}),
    "im2col_s2_split_1d": ((2, 4, 21), (5, 4, 5), False, {"pads": [1, 2], "strides": [2]}),
    # the direct kernel (at most 9 terms per output, ops/conv.py _direct_conv): several input
    # channels summed into a row, dilations and strides on a depthwise kernel, 1-D and 3-D
    "direct_channels": ((2, 3, 7, 6), (4, 3, 1, 3), True, {"pads": [0, 1, 0, 1]}),
    "direct_depthwise_dil": ((2, 4, 9, 10), (4, 1, 3, 3), True,
                             {"group": 4, "dilations": [2, 2], "strides": [1, 2], "pads": [2, 1, 0, 2]}),
    "direct_depthwise_1d": ((2, 4, 11), (8, 1, 3), False, {"group": 4, "pads": [1, 1]}),
    "direct_3d": ((1, 1, 4, 5, 6), (2, 1, 2, 2, 2), True, {"pads": [1, 0, 1, 0, 1, 1], "strides": [1, 1, 2]}),
    # stride-2 rows read from a padded copy split into even and odd phases (ops/conv.py _split_rows,
    # 16 values at a time with rows::even8 / odd8, the rest one by one): depthwise, input channels
    # summed, dilated, odd padded widths, left pads 0, 1 and 2, 1-D and 3-D
    "direct_s2_vec_depthwise": ((2, 4, 9, 16), (4, 1, 3, 3), True, {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "direct_s2_vec_channels": ((2, 3, 5, 32), (4, 3, 1, 3), True, {"strides": [1, 2], "pads": [0, 1, 0, 1]}),
    "direct_s2_vec_dilated": ((1, 2, 6, 16), (2, 1, 3, 3), False,
                              {"group": 2, "dilations": [1, 2], "strides": [1, 2], "pads": [1, 2, 1, 2]}),
    "direct_s2_split_odd": ((2, 3, 7, 13), (3, 1, 3, 3), True, {"group": 3, "strides": [2, 2], "pads": [1, 0, 0, 1]}),
    "direct_s2_split_tail": ((1, 2, 5, 19), (4, 2, 1, 3), False, {"strides": [1, 2], "pads": [0, 1, 0, 2]}),
    "direct_s2_split_1d": ((2, 4, 33), (4, 1, 5), True, {"group": 4, "strides": [2], "pads": [2, 2]}),
    "direct_s2_split_3d": ((1, 1, 3, 4, 18), (2, 1, 1, 2, 3), True, {"strides": [1, 1, 2], "pads": [0, 1, 1, 0, 0, 1]}),
}


#: onnxruntime rejects these (dilations with auto_pad SAME): compared with onnx.reference in float64
CONV_REF_ONLY = {"same_upper_dil"}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv(case: str) -> None:
    xs, ws, bias, attrs = CONV_CASES[case]
    dt = np.float64 if case in CONV_REF_ONLY else np.float32
    weights = {"W": _rand(ws, dt)}
    if bias:
        weights["B"] = _rand((ws[0],), dt)
    model = _model("Conv", xs, dt, weights=weights, **attrs)
    if case in CONV_REF_ONLY:
        assert_matches_reference(model, _rand(xs, dt))
    else:
        assert_matches_ort(model, _rand(xs), rtol=1e-4, atol=1e-5)


def test_conv_weight_as_graph_input() -> None:
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    model = make_model([node], [value_info("x", np.float32, [1, 2, 5, 5]), value_info("w", np.float32, [3, 2, 3, 3]),
                                value_info("b", np.float32, [3])], [value_info("y", np.float32, None)])
    assert_matches_ort(model, _rand((1, 2, 5, 5)), _rand((3, 2, 3, 3)), _rand((3,)), rtol=1e-4, atol=1e-5)


def test_conv_symbolic_batch() -> None:
    model = _model("Conv", ["N", 3, 8, 8], weights={"W": _rand((4, 3, 3, 3)), "B": _rand((4,))},
                   pads=[1, 1, 1, 1], strides=[2, 2])
    _batches(model, lambda n: _rand((n, 3, 8, 8)), rtol=1e-4, atol=1e-5)


def test_conv_float64() -> None:
    model = _model("Conv", ["N", 4, 7, 6], np.float64,
                   weights={"W": _rand((6, 2, 3, 3), np.float64), "B": _rand((6,), np.float64)},
                   group=2, pads=[1, 0, 1, 2], dilations=[1, 2])
    _batches(model, lambda n: _rand((n, 4, 7, 6), np.float64), check=assert_matches_reference)


# -- ConvTranspose ----------------------------------------------------------------------------

CONVT_CASES = {
    "basic_bias": ((2, 3, 4, 5), (3, 2, 3, 3), True, {}),
    "strides_output_padding": ((1, 2, 3, 4), (2, 3, 3, 3), True, {"strides": [3, 2], "output_padding": [1, 1]}),
    "pads": ((1, 2, 4, 4), (2, 3, 3, 3), False, {"strides": [2, 2], "pads": [1, 2, 0, 1]}),
    "dilations": ((1, 2, 4, 3), (2, 2, 2, 3), True, {"dilations": [2, 3]}),
    "group2": ((2, 4, 3, 3), (4, 2, 3, 3), True, {"group": 2, "strides": [2, 1]}),
    "depthwise": ((1, 3, 4, 4), (3, 1, 3, 3), True, {"group": 3, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "output_shape": ((1, 2, 3, 3), (2, 2, 3, 3), True, {"strides": [3, 2], "output_shape": [10, 8]}),
    "output_shape_crop": ((1, 2, 3, 3), (2, 2, 3, 3), False, {"strides": [3, 2], "output_shape": [8, 6]}),
    "same_upper_even": ((1, 2, 3, 4), (2, 2, 4, 4), True, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "same_lower_even": ((1, 2, 3, 4), (2, 2, 4, 4), True, {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    "kernel_attr": ((1, 1, 3, 3), (1, 2, 3, 3), False, {"kernel_shape": [3, 3], "strides": [2, 2]}),
    "convt1d": ((2, 2, 5), (2, 3, 3), True, {"strides": [2], "pads": [1, 0], "output_padding": [1]}),
    "convt3d": ((1, 2, 3, 2, 3), (2, 2, 2, 3, 2), True, {"strides": [2, 1, 2], "pads": [0, 1, 0, 0, 1, 1]}),
    # the register-blocked product (4 x 16 tiles, tails) and the 2x2 stride-2 rows as interleaved pairs
    "s2_k2_tiled": ((2, 4, 4, 8), (4, 3, 2, 2), True, {"strides": [2, 2]}),
    "s2_k2_pads_output_padding": ((1, 3, 3, 9), (3, 2, 2, 2), False,
                                  {"strides": [2, 2], "pads": [1, 0, 0, 0], "output_padding": [1, 1]}),
    "s2_k2_3d": ((1, 2, 2, 3, 4), (2, 2, 2, 2, 2), True, {"strides": [1, 2, 2]}),
    # 3 output channels x 4 kernel offsets = 12 rows of the register-blocked product over 27 positions
    "s2_k2_odd_channels": ((2, 5, 3, 9), (5, 3, 2, 2), True, {"strides": [2, 2]}),
    # more kernel offsets than are written out one by one (bounds from tables)
    "kernel_6x6": ((1, 2, 3, 3), (2, 2, 6, 6), True, {"strides": [2, 2], "pads": [1, 2, 0, 1]}),
}


@pytest.mark.parametrize("case", sorted(CONVT_CASES))
def test_conv_transpose(case: str) -> None:
    xs, ws, bias, attrs = CONVT_CASES[case]
    weights = {"W": _rand(ws)}
    if bias:
        weights["B"] = _rand((ws[1] * attrs.get("group", 1),))
    model = _model("ConvTranspose", xs, weights=weights, **attrs)
    assert_matches_ort(model, _rand(xs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_conv_transpose_same_odd_padding(auto_pad: str) -> None:
    """Odd total padding: the ONNX specification (SAME_UPPER puts the extra pad at the end) is
    followed, as in onnx.reference; onnxruntime puts it at the start for SAME_UPPER."""
    model = _model("ConvTranspose", [1, 2, 3, 3], np.float64, weights={"W": _rand((2, 2, 3, 3), np.float64)},
                   auto_pad=auto_pad, strides=[2, 2])
    assert_matches_reference(model, _rand((1, 2, 3, 3), np.float64))


def test_conv_transpose_symbolic_batch_float64() -> None:
    """onnxruntime has no float64 ConvTranspose and onnx.reference fails with groups: the float64
    result is compared with onnxruntime's float32 run on the same values."""
    w, b = _rand((4, 3, 3, 2), np.float64), _rand((6,), np.float64)
    attrs = {"group": 2, "strides": [2, 3], "pads": [1, 0, 0, 1], "output_padding": [1, 0]}
    model = _model("ConvTranspose", ["N", 4, 3, 4], np.float64, weights={"W": w, "B": b}, **attrs)
    model32 = _model("ConvTranspose", ["N", 4, 3, 4], weights={"W": w.astype(np.float32), "B": b.astype(np.float32)},
                     **attrs)
    m = sofie_root.compile(model)
    for n in (1, 3):
        x = _rand((n, 4, 3, 4), np.float64)
        (got,) = m.infer(x)
        (ref,) = run_ort(model32, x.astype(np.float32))
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_conv_transpose_symbolic_batch() -> None:
    model = _model("ConvTranspose", ["N", 2, 4, 4], weights={"W": _rand((2, 3, 3, 3))}, strides=[2, 2])
    _batches(model, lambda n: _rand((n, 2, 4, 4)), rtol=1e-4, atol=1e-5)


# -- pools ------------------------------------------------------------------------------------

POOL_CASES = {
    "basic": ((2, 3, 7, 6), {"kernel_shape": [3, 2]}),
    "pads_strides": ((1, 2, 7, 8), {"kernel_shape": [3, 3], "pads": [1, 0, 2, 1], "strides": [2, 3]}),
    "ceil": ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "ceil_pads": ((1, 2, 6, 6), {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    "dilations": ((1, 2, 8, 9), {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 1, 1, 1]}),
    "same_upper": ((1, 2, 7, 8), {"kernel_shape": [3, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "same_lower": ((1, 2, 7, 8), {"kernel_shape": [3, 2], "auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    "valid": ((1, 2, 7, 8), {"kernel_shape": [3, 2], "auto_pad": "VALID", "strides": [2, 2]}),
    "pool1d": ((2, 3, 10), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    "pool3d": ((1, 2, 5, 6, 4), {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2], "pads": [0, 1, 1, 1, 1, 0]}),
    # rows with 8 or more outputs whose window lies inside: looped apart with constant bounds
    "wide_rows": ((2, 3, 5, 40), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "wide_1d_dilated_s2": ((2, 3, 50), {"kernel_shape": [3], "strides": [2], "dilations": [2], "pads": [2, 1]}),
    "wide_ceil": ((1, 2, 3, 37), {"kernel_shape": [2, 4], "strides": [1, 3], "pads": [0, 2, 1, 1], "ceil_mode": 1}),
}


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_maxpool(case: str) -> None:
    xs, attrs = POOL_CASES[case]
    assert_matches_ort(_model("MaxPool", xs, **attrs), _rand(xs))


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("case", ["pads_strides", "pool3d", "ceil", "wide_rows", "wide_1d_dilated_s2"])
def test_maxpool_indices(case: str, storage_order: int) -> None:
    xs, attrs = POOL_CASES[case]
    model = _model("MaxPool", ["N", *xs[1:]], n_out=2, out_dtypes=[np.float32, np.int64],
                   storage_order=storage_order, **attrs)
    _batches(model, lambda n: _rand((n, *xs[1:])))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.float64])
def test_maxpool_dtypes(dtype) -> None:
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    x = (RNG.integers(info.min, info.max, (2, 3, 6, 5), endpoint=True).astype(dtype) if info
         else _rand((2, 3, 6, 5), dtype))
    model = _model("MaxPool", [2, 3, 6, 5], dtype, kernel_shape=[2, 3], pads=[1, 1, 0, 1], strides=[2, 1])
    assert_matches_ort(model, x)


# "basic" has no padding, so count_include_pad=1 would repeat the count_include_pad=0 case
@pytest.mark.parametrize("case,count_include_pad",
                         [(c, p) for c in ["basic", "pads_strides", "ceil", "ceil_pads", "dilations", "same_upper",
                                           "same_lower", "pool1d", "pool3d"] for p in (0, 1)
                          if not (c == "basic" and p == 1)])
def test_averagepool(case: str, count_include_pad: int) -> None:
    xs, attrs = POOL_CASES[case]
    assert_matches_ort(_model("AveragePool", xs, count_include_pad=count_include_pad, **attrs), _rand(xs))


def test_averagepool_float64_symbolic_batch() -> None:
    model = _model("AveragePool", ["N", 2, 7, 8], np.float64, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                   strides=[2, 2], ceil_mode=1)
    _batches(model, lambda n: _rand((n, 2, 7, 8), np.float64), check=assert_matches_reference)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("case", ["basic", "pads_strides", "same_upper", "pool1d"])
def test_lppool(case: str, p: int) -> None:
    xs, attrs = POOL_CASES[case]
    assert_matches_ort(_model("LpPool", xs, p=p, **attrs), _rand(xs), rtol=1e-4, atol=1e-5)


def test_lppool_float64_dilations() -> None:
    model = _model("LpPool", ["N", 2, 8, 9], np.float64, p=3, kernel_shape=[2, 3], dilations=[2, 2],
                   pads=[1, 1, 1, 1], opset=18)
    _batches(model, lambda n: _rand((n, 2, 8, 9), np.float64), check=assert_matches_reference)


@pytest.mark.parametrize("hw", [(8, 8), (4, 8), (16, 16), (6, 18), (7, 9), (2, 34), (5, 2)])
def test_maxpool_2x2_kernel_against_ort(hw: tuple) -> None:
    # the float32 2x2 stride-2 kernel (rows::maxpool2x2): planes 8 wide two output rows per step
    # (an odd number of them here), rows of 8 outputs in vectors plus scalar tails, odd sizes
    # (the last row or column unread); against onnxruntime, and with special values against
    # numpy under the documented rule (docs/conformance.md): NaN in a window skipped, a window of
    # NaN only -inf, -inf (a window of it: -inf, not -FLT_MAX), inf and -0 kept
    model = _model("MaxPool", ["N", 5, *hw], kernel_shape=[2, 2], strides=[2, 2])
    _batches(model, lambda n: _rand((n, 5, *hw)))
    x = _rand((3, 5, *hw))
    x[0, 0, 0, 0] = np.nan
    x[0, 1, 1, 1] = np.nan
    x[1, 2, :2, :2] = np.nan
    x[2, 1, 0, 1] = np.inf
    x[2, 3, :2, :2] = -np.inf
    x[0, 4, :2, :2] = -0.0
    (got,) = sofie_root.compile(model).infer(x)
    oh, ow = hw[0] // 2, hw[1] // 2
    win = x[:, :, :2 * oh, :2 * ow].reshape(3, 5, oh, 2, ow, 2).transpose(0, 1, 2, 4, 3, 5).reshape(3, 5, oh, ow, 4)
    want = np.where(np.isnan(win), -np.inf, win).max(axis=-1)
    np.testing.assert_array_equal(got, want)
    assert np.isneginf(got[1, 2, 0, 0]) and np.isneginf(got[2, 3, 0, 0])
    assert np.isposinf(got[2, 1, 0, 0]) and not np.isnan(got).any()


@pytest.mark.parametrize("op,attrs", [("GlobalAveragePool", {}), ("GlobalMaxPool", {}),
                                      ("GlobalLpPool", {}), ("GlobalLpPool", {"p": 1}),
                                      ("GlobalLpPool", {"p": 3})])
def test_global_pools(op: str, attrs: dict) -> None:
    model = _model(op, ["N", 3, 5, 4], **attrs)
    _batches(model, lambda n: _rand((n, 3, 5, 4)), rtol=1e-5, atol=1e-6)
    assert_matches_ort(_model(op, [2, 3, 7], **attrs), _rand((2, 3, 7)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,fn", [("GlobalAveragePool", np.mean), ("GlobalMaxPool", np.max),
                                   ("GlobalLpPool", lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis, keepdims=keepdims)))])
def test_global_pools_float64(op: str, fn) -> None:
    x = _rand((2, 3, 4, 3, 2), np.float64)
    (got,) = sofie_root.compile(_model(op, [2, 3, 4, 3, 2], np.float64)).infer(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, fn(x, axis=(2, 3, 4), keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("op,fn", [("GlobalAveragePool", np.mean), ("GlobalMaxPool", np.max)])
@pytest.mark.parametrize("spatial", [[1], [7], [8, 8], [10, 10], [3, 5, 7]])
def test_global_pools_row_kernel_special_values(op: str, fn, spatial: list) -> None:
    # the float32 row kernel over every plane (several planes at a time, vector tails): NaN in a
    # plane gives NaN, a plane of -inf gives -inf (max) and inf stays inf, as numpy's
    x = _rand((3, 5, *spatial))
    x[0, 1].flat[-1] = np.nan
    x[1, 2] = -np.inf
    x[2, 0].flat[0] = np.inf
    (got,) = sofie_root.compile(_model(op, ["N", 5, *spatial])).infer(x)
    want = fn(x.astype(np.float64), axis=tuple(range(2, x.ndim)), keepdims=True)
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-5, atol=1e-6)
    assert np.isnan(got[0, 1]).all() and np.isposinf(got[2, 0]).all()
    assert np.isneginf(got[1, 2]).all()


# -- errors -----------------------------------------------------------------------------------

def _compile_error(model) -> sofie_root.SofieError:
    with pytest.raises(sofie_root.SofieError) as info:
        sofie_root.compile(model)
    return info.value


def test_conv_wrong_channels() -> None:
    err = _compile_error(_model("Conv", [1, 4, 5, 5], weights={"W": _rand((2, 3, 3, 3))}))
    assert "channels" in str(err)


@pytest.mark.parametrize("attrs,wshape", [
    ({"group": 3}, (4, 2, 3, 3)),                     # 4 output channels not divisible by 3
    ({"pads": [1, 1]}, (2, 4, 3, 3)),                 # pads of the wrong length
    ({"kernel_shape": [2, 2]}, (2, 4, 3, 3)),         # kernel_shape differs from W
    ({"strides": [0, 1]}, (2, 4, 3, 3)),
    ({}, (2, 4, 7, 7)),                               # kernel larger than the input
])
def test_conv_bad_attributes(attrs, wshape) -> None:
    _compile_error(_model("Conv", [1, 4, 5, 5], weights={"W": _rand(wshape)}, **attrs))


def test_conv_bad_bias() -> None:
    _compile_error(_model("Conv", [1, 2, 5, 5], weights={"W": _rand((3, 2, 3, 3)), "B": _rand((4,))}))


def test_conv_symbolic_spatial_is_bound_at_the_call() -> None:
    # the geometry needs numbers: compiled at the call for the input's shape (test_symbolic_spatial.py)
    m = _model("Conv", ["N", 2, "H", 5], weights={"W": _rand((3, 2, 3, 3))})
    compiled = sofie_root.compile(m)
    assert_matches_ort(m, _rand((2, 2, 6, 5)), compiled=compiled)
    with pytest.raises(sofie_root.SofieError):
        compiled.infer(_rand((2, 3, 6, 5)))  # the channel count is not symbolic


def test_conv_transpose_wrong_channels() -> None:
    _compile_error(_model("ConvTranspose", [1, 3, 4, 4], weights={"W": _rand((2, 2, 3, 3))}))


def test_pool_errors() -> None:
    _compile_error(_model("MaxPool", [1, 2, 5, 5]))                          # no kernel_shape
    _compile_error(_model("AveragePool", [1, 2, 5, 5], kernel_shape=[7, 7]))  # window > input
    _compile_error(_model("MaxPool", [1, 2, 5, 5], kernel_shape=[2, 2], auto_pad="SAME"))
    _compile_error(_model("GlobalAveragePool", [2, 5]))                      # rank < 3
