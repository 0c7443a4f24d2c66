"""Quantization operators against onnxruntime (onnx.reference where onnxruntime has no kernel):
QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, ConvInteger,
QLinearMatMul and QLinearConv."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import sofie_root

from .ort_check import assert_matches_ort, make_model, run_ort, run_reference, value_info

RNG = np.random.default_rng(1234)

QTYPES = {np.uint8: (0, 255), np.int8: (-128, 127), np.uint16: (0, 65535), np.int16: (-32768, 32767)}


def _ints(shape, dtype):
    lo, hi = QTYPES.get(dtype, (-1000, 1000))
    return RNG.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def _scales(shape, dtype=np.float32):
    return (RNG.uniform(0.01, 0.2, size=shape)).astype(dtype)


def _node_model(op, inputs, out_specs, opset, **attrs):
    """A one-node model; ``inputs`` is a list of (name, array, is_initializer)."""
    node = helper.make_node(op, [n for n, _, _ in inputs], [o for o, _ in out_specs], **attrs)
    graph_inputs = [value_info(n, a.dtype, a.shape) for n, a, init in inputs if not init]
    inits = {n: a for n, a, init in inputs if init}
    return make_model([node], graph_inputs, [value_info(o, dt, None) for o, dt in out_specs],
                      initializers=inits, opset=opset)


def _run(model, inputs, **kw):
    arrays = [a for _, a, init in inputs if not init]
    return assert_matches_ort(model, *arrays, **kw)


def _mixed_sign(*types):
    return len({np.dtype(t).kind for t in types}) > 1


def _run_exact(model, inputs, types):
    """Integer products with operands of mixed signedness are checked against onnx.reference (exact
    integer arithmetic): onnxruntime 1.32's uint8 x int8 kernels sum pairs of products in saturating
    int16 on CPUs without VNNI, so they are off where a pair exceeds 32767; other pairs use onnxruntime."""
    if _mixed_sign(*types):
        _assert_matches_reference(model, *[a for _, a, init in inputs if not init])
    else:
        _run(model, inputs)


def _run_requantized(model, inputs):
    """QLinear* outputs: onnx.reference (which, like us, rescales in float32) exactly; onnxruntime
    1.32 rescales differently and lands one unit away on some near-ties, so within 1 unit."""
    arrays = [a for _, a, init in inputs if not init]
    _assert_matches_reference(model, *arrays)
    (got,), (ref,) = sofie_root.compile(model).infer(*arrays), run_ort(model, *arrays)
    assert np.abs(got.astype(np.int64) - ref.astype(np.int64)).max(initial=0) <= 1


def _assert_matches_reference(model, *arrays):
    got = sofie_root.compile(model).infer(*arrays)
    ref = run_reference(model, *arrays)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype and g.shape == r.shape
        np.testing.assert_array_equal(g, r)


# -- QuantizeLinear ---------------------------------------------------------------------------

# 16-bit quantization exists since opset 21
@pytest.mark.parametrize("qtype,opset", [(q, o) for q in (np.uint8, np.int8, np.uint16, np.int16)
                                         for o in (13, 19, 21) if o >= 21 or q in (np.uint8, np.int8)])
def test_quantize_per_tensor(qtype, opset):
    x = RNG.standard_normal((3, 4, 5)).astype(np.float32) * 20
    x.reshape(-1)[:4] = [0.5, 1.5, -2.5, 1000.0]  # ties (half to even) and saturation
    s = np.array(0.5 if qtype in (np.uint8, np.int8) else 0.001, np.float32)
    z = np.array(3 if qtype in (np.uint8, np.uint16) else -3, qtype)
    ins = [("x", x, False), ("s", s, False), ("z", z, False)]
    _run(_node_model("QuantizeLinear", ins, [("y", qtype)], opset), ins)


def test_quantize_ties_round_half_to_even():
    x = np.array([-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 300, -300], np.float32)
    ins = [("x", x, False), ("s", np.array(1, np.float32), True), ("z", np.array(0, np.int8), True)]
    got = _run(_node_model("QuantizeLinear", ins, [("y", np.int8)], 13), ins)
    np.testing.assert_array_equal(got[0], [-4, -2, -2, 0, 0, 2, 2, 4, 127, -128])


def test_quantize_no_zero_point_defaults_to_uint8():
    x = RNG.standard_normal((2, 7)).astype(np.float32) * 5
    ins = [("x", x, False), ("s", np.array(0.05, np.float32), True)]
    _run(_node_model("QuantizeLinear", ins, [("y", np.uint8)], 13), ins)


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
@pytest.mark.parametrize("qtype", [np.uint8, np.int8])
def test_quantize_per_axis(axis, qtype):
    x = RNG.standard_normal((3, 4, 5)).astype(np.float32) * 10
    n = x.shape[axis]
    ins = [("x", x, False), ("s", _scales((n,)), False), ("z", _ints((n,), qtype), False)]
    _run(_node_model("QuantizeLinear", ins, [("y", qtype)], 13, axis=axis), ins)


@pytest.mark.parametrize("axis,block", [(0, 2), (1, 3), (-1, 2)])
@pytest.mark.parametrize("with_zp", [True, False])
def test_quantize_blocked(axis, block, with_zp):
    x = RNG.standard_normal((4, 6, 5)).astype(np.float32) * 10
    sshape = list(x.shape)
    sshape[axis] = -(-sshape[axis] // block)
    ins = [("x", x, False), ("s", _scales(tuple(sshape)), False)]
    if with_zp:
        ins.append(("z", _ints(tuple(sshape), np.int8), False))
    out = np.int8 if with_zp else np.uint8
    _run(_node_model("QuantizeLinear", ins, [("y", out)], 21, axis=axis, block_size=block), ins)


@pytest.mark.parametrize("out", [TensorProto.INT8, TensorProto.UINT16, TensorProto.INT16])
def test_quantize_output_dtype(out):
    x = RNG.standard_normal((3, 8)).astype(np.float32) * 40
    ins = [("x", x, False), ("s", np.array(0.01, np.float32), True)]
    np_out = helper.tensor_dtype_to_np_dtype(out)
    _run(_node_model("QuantizeLinear", ins, [("y", np_out)], 21, output_dtype=out), ins)


def test_quantize_float64_and_int32_inputs():
    x = RNG.standard_normal((3, 8)) * 40
    ins = [("x", x, False), ("s", np.array(0.3, np.float64), False), ("z", np.array(7, np.uint8), False)]
    _assert_matches_reference(_node_model("QuantizeLinear", ins, [("y", np.uint8)], 21), x, ins[1][1], ins[2][1])
    xi = RNG.integers(-500, 500, (3, 8)).astype(np.int32)
    ins = [("x", xi, False), ("s", np.array(2.5, np.float32), True), ("z", np.array(-1, np.int8), True)]
    _assert_matches_reference(_node_model("QuantizeLinear", ins, [("y", np.int8)], 21), xi)


def test_quantize_symbolic_batch():
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1)
    model = make_model([node], [value_info("x", np.float32, ["N", 4, 3])], [value_info("y", np.int8, None)],
                       initializers={"s": _scales((4,)), "z": _ints((4,), np.int8)}, opset=13)
    m = sofie_root.compile(model)
    for n in (1, 5):
        assert_matches_ort(model, RNG.standard_normal((n, 4, 3)).astype(np.float32) * 5, compiled=m)


@pytest.mark.parametrize("out", [TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1])
def test_quantize_unsupported_outputs_have_a_reason(out):
    node = helper.make_node("QuantizeLinear", ["x", "s"], ["y"], output_dtype=out)
    model = make_model([node], [value_info("x", np.float32, [4])], [helper.make_tensor_value_info("y", out, [4])],
                       initializers={"s": np.array(1.0, np.float32)}, opset=21)
    with pytest.raises(sofie_root.UnsupportedOperatorError, match="not supported"):
        sofie_root.compile(model)


# -- DequantizeLinear -------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32])
def test_dequantize_per_tensor(qtype):
    opset = 13 if qtype in (np.uint8, np.int8, np.int32) else 21
    x = _ints((3, 5), qtype)
    ins = [("x", x, False), ("s", np.array(0.125, np.float32), False)]
    if qtype != np.int32:
        ins.append(("z", _ints((), qtype), False))
    _run(_node_model("DequantizeLinear", ins, [("y", np.float32)], opset), ins)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_dequantize_per_axis(axis):
    x = _ints((2, 3, 4), np.uint8)
    n = x.shape[axis]
    ins = [("x", x, False), ("s", _scales((n,)), False), ("z", _ints((n,), np.uint8), False)]
    _run(_node_model("DequantizeLinear", ins, [("y", np.float32)], 13, axis=axis), ins)


@pytest.mark.parametrize("axis,block", [(0, 3), (1, 2), (-1, 4)])
def test_dequantize_blocked(axis, block):
    x = _ints((5, 6, 7), np.int8)
    sshape = list(x.shape)
    sshape[axis] = -(-sshape[axis] // block)
    ins = [("x", x, False), ("s", _scales(tuple(sshape)), False), ("z", _ints(tuple(sshape), np.int8), False)]
    _run(_node_model("DequantizeLinear", ins, [("y", np.float32)], 21, axis=axis, block_size=block), ins)


def test_dequantize_float64_scale_and_output_dtype():
    x = _ints((4, 3), np.int16)
    ins = [("x", x, False), ("s", _scales((3,), np.float64), False), ("z", _ints((3,), np.int16), False)]
    model = _node_model("DequantizeLinear", ins, [("y", np.float64)], 21, axis=1)
    got = sofie_root.compile(model).infer(x, ins[1][1], ins[2][1])[0]
    np.testing.assert_allclose(got, run_reference(model, x, ins[1][1], ins[2][1])[0], rtol=1e-7)
    ins = [("x", x, False), ("s", np.array(0.5, np.float32), True)]
    model = _node_model("DequantizeLinear", ins, [("y", np.float64)], 23, output_dtype=TensorProto.DOUBLE)
    got = sofie_root.compile(model).infer(x)[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, run_reference(model, x)[0])


def test_dequantize_symbolic_batch():
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=1)
    model = make_model([node], [value_info("x", np.int8, ["N", 3])], [value_info("y", np.float32, None)],
                       initializers={"s": _scales((3,)), "z": _ints((3,), np.int8)}, opset=13)
    m = sofie_root.compile(model)
    for n in (2, 6):
        assert_matches_ort(model, _ints((n, 3), np.int8), compiled=m)


def test_quantize_dequantize_round_trip():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    model = make_model(nodes, [value_info("x", np.float32, [4, 6])], [value_info("y", np.float32, None)],
                       initializers={"s": np.array(0.02, np.float32), "z": np.array(128, np.uint8)}, opset=13)
    assert_matches_ort(model, RNG.standard_normal((4, 6)).astype(np.float32))


# -- DynamicQuantizeLinear --------------------------------------------------------------------

@pytest.mark.parametrize("shift", [0.0, 3.0, -3.0])
def test_dynamic_quantize(shift):
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    model = make_model([node], [value_info("x", np.float32, ["N", 5])],
                       [value_info("y", np.uint8, None), value_info("s", np.float32, None),
                        value_info("z", np.uint8, None)], opset=11)
    m = sofie_root.compile(model)
    for n in (1, 4):
        assert_matches_ort(model, RNG.standard_normal((n, 5)).astype(np.float32) + shift, compiled=m)


def test_dynamic_quantize_range_in_every_lane():
    # the range is taken 16 elements at a time in vector registers, then over the tail: put the
    # extremes in every lane of the vector part and in the tail, one case each
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    model = make_model([node], [value_info("x", np.float32, ["N", 37])],
                       [value_info("y", np.uint8, None), value_info("s", np.float32, None),
                        value_info("z", np.uint8, None)], opset=11)
    m = sofie_root.compile(model)
    for at in [0, 5, 8, 15, 16, 23, 31, 32, 36, 7 * 37 + 35]:
        x = RNG.uniform(-1, 1, (8, 37)).astype(np.float32)
        x.reshape(-1)[at] = 7.5
        x.reshape(-1)[(at * 7 + 3) % x.size] = -4.25
        assert_matches_ort(model, x, compiled=m)
    assert_matches_ort(model, np.abs(RNG.standard_normal((3, 37))).astype(np.float32) + 1, compiled=m)
    assert_matches_ort(model, -np.abs(RNG.standard_normal((3, 37))).astype(np.float32) - 1, compiled=m)


# -- MatMulInteger / QLinearMatMul ------------------------------------------------------------

@pytest.mark.parametrize("ta,tb", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8)])
@pytest.mark.parametrize("a_shape,b_shape", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                             ((4,), (4, 3))])
def test_matmul_integer(ta, tb, a_shape, b_shape):
    a, b = _ints(a_shape, ta), _ints(b_shape, tb)
    za, zb = _ints((), ta), _ints((), tb)
    ins = [("a", a, False), ("b", b, False), ("za", za, False), ("zb", zb, False)]
    model = _node_model("MatMulInteger", ins, [("y", np.int32)], 10)
    # exact integer arithmetic (numpy, int64) is the reference: onnxruntime's uint8 x int8 kernel
    # sums pairs of products in saturating int16 on CPUs without VNNI and can be off
    (got,) = sofie_root.compile(model).infer(a, b, za, zb)
    want = np.matmul(a.astype(np.int64) - np.int64(za), b.astype(np.int64) - np.int64(zb)).astype(np.int32)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    if (ta, tb) != (np.uint8, np.int8):
        _run(model, ins)


def test_matmul_integer_per_column_b_zero_point_and_no_zero_points():
    a, b = _ints((3, 4), np.uint8), _ints((4, 5), np.uint8)
    ins = [("a", a, False), ("b", b, False), ("za", _ints((), np.uint8), False), ("zb", _ints((5,), np.uint8), False)]
    _run(_node_model("MatMulInteger", ins, [("y", np.int32)], 10), ins)
    ins = [("a", a, False), ("b", b, False)]
    _run(_node_model("MatMulInteger", ins, [("y", np.int32)], 10), ins)


def test_matmul_integer_symbolic_batch():
    node = helper.make_node("MatMulInteger", ["a", "b", "za"], ["y"])
    model = make_model([node], [value_info("a", np.uint8, ["N", 3, 4])], [value_info("y", np.int32, None)],
                       initializers={"b": _ints((4, 2), np.uint8), "za": np.array(9, np.uint8)}, opset=10)
    m = sofie_root.compile(model)
    for n in (1, 3):
        assert_matches_ort(model, _ints((n, 3, 4), np.uint8), compiled=m)


@pytest.mark.parametrize("ta,tb,ty", [(np.uint8, np.uint8, np.uint8), (np.int8, np.int8, np.int8),
                                      (np.uint8, np.int8, np.int8)])
@pytest.mark.parametrize("opset", [10, 21])
def test_qlinear_matmul(ta, tb, ty, opset):
    a, b = _ints((2, 3, 8), ta), _ints((8, 4), tb)
    ins = [("a", a, False), ("sa", np.array(0.05, np.float32), False), ("za", _ints((), ta), False),
           ("b", b, False), ("sb", np.array(0.03, np.float32), False), ("zb", _ints((), tb), False),
           ("sy", np.array(0.4, np.float32), False), ("zy", _ints((), ty), False)]
    model = _node_model("QLinearMatMul", ins, [("y", ty)], opset)
    if _mixed_sign(ta, tb):
        _run_exact(model, ins, (ta, tb))
    else:
        _run_requantized(model, ins)


def test_qlinear_matmul_per_column_b():
    a, b = _ints((5, 6), np.uint8), _ints((6, 3), np.int8)
    ins = [("a", a, False), ("sa", np.array(0.05, np.float32), True), ("za", np.array(120, np.uint8), True),
           ("b", b, False), ("sb", _scales((3,)), True), ("zb", np.zeros(3, np.int8), True),
           ("sy", np.array(0.3, np.float32), True), ("zy", np.array(100, np.uint8), True)]
    _run_exact(_node_model("QLinearMatMul", ins, [("y", np.uint8)], 21), ins, (np.uint8, np.int8))


# -- ConvInteger / QLinearConv ----------------------------------------------------------------

CONV_CASES = [
    {"x": (1, 2, 5, 5), "w": (3, 2, 3, 3)},
    {"x": (2, 4, 6, 5), "w": (4, 2, 3, 2), "group": 2, "pads": [1, 0, 1, 1], "strides": [2, 1]},
    {"x": (1, 3, 7), "w": (2, 3, 3), "dilations": [2], "pads": [2, 1]},
    {"x": (2, 3, 4, 4), "w": (5, 3, 1, 1)},
    {"x": (1, 2, 5, 6), "w": (2, 2, 3, 3), "auto_pad": "SAME_UPPER"},
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("tx", [np.uint8, np.int8])
def test_conv_integer(case, tx):
    case = dict(case)
    xs, wsh = case.pop("x"), case.pop("w")
    ins = [("x", _ints(xs, tx), False), ("w", _ints(wsh, np.uint8), False), ("zx", _ints((), tx), False),
           ("zw", _ints((), np.uint8), False)]
    _run_exact(_node_model("ConvInteger", ins, [("y", np.int32)], 10, **case), ins, (tx, np.uint8))


def test_conv_integer_symbolic_batch_without_zero_points():
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = make_model([node], [value_info("x", np.uint8, ["N", 2, 4, 4])], [value_info("y", np.int32, None)],
                       initializers={"w": _ints((3, 2, 3, 3), np.uint8)}, opset=10)
    m = sofie_root.compile(model)
    for n in (1, 3):
        assert_matches_ort(model, _ints((n, 2, 4, 4), np.uint8), compiled=m)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("tx,tw", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8)])
def test_qlinear_conv(case, tx, tw):
    case = dict(case)
    xs, wsh = case.pop("x"), case.pop("w")
    m = wsh[0]
    ins = [("x", _ints(xs, tx), False), ("sx", np.array(0.02, np.float32), True),
           ("zx", _ints((), tx), True), ("w", _ints(wsh, tw), True), ("sw", _scales((m,)), True),
           ("zw", np.zeros((m,), tw), True), ("sy", np.array(1.5, np.float32), True),
           ("zy", _ints((), tx), True), ("B", RNG.integers(-500, 500, (m,)).astype(np.int32), True)]
    model = _node_model("QLinearConv", ins, [("y", tx)], 10, **case)
    if len(xs) != 3:
        _run_exact(model, ins, (tx, tw)) if _mixed_sign(tx, tw) else _run_requantized(model, ins)
        return
    # onnx.reference's QLinearConv returns a wrong shape for 1-D input: the reference is the same
    # convolution written in 2-D with a height of 1 (onnxruntime: see _run_exact, _run_requantized)
    ins2 = [(n, a[:, :, None] if n in ("x", "w") else a, init) for n, a, init in ins]
    case2 = {"dilations": [1, *case["dilations"]], "pads": [0, case["pads"][0], 0, case["pads"][1]]}
    (want,) = run_reference(_node_model("QLinearConv", ins2, [("y", tx)], 10, **case2), ins2[0][1])
    (got,) = sofie_root.compile(model).infer(ins[0][1])
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want[:, :, 0])
    if not _mixed_sign(tx, tw):
        (ref,) = run_ort(model, ins[0][1])
        assert np.abs(got.astype(np.int64) - ref.astype(np.int64)).max(initial=0) <= 1


def test_qlinear_conv_per_tensor_no_bias_symbolic_batch():
    node = helper.make_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"], ["y"], pads=[1, 1, 1, 1])
    inits = {"sx": np.array(0.05, np.float32), "zx": np.array(100, np.uint8), "w": _ints((3, 2, 3, 3), np.uint8),
             "sw": np.array(0.01, np.float32), "zw": np.array(128, np.uint8), "sy": np.array(0.2, np.float32),
             "zy": np.array(60, np.uint8)}
    model = make_model([node], [value_info("x", np.uint8, ["N", 2, 5, 5])], [value_info("y", np.uint8, None)],
                       initializers=inits, opset=10)
    m = sofie_root.compile(model)
    for n in (1, 2):
        assert_matches_ort(model, _ints((n, 2, 5, 5), np.uint8), compiled=m)


@pytest.mark.parametrize("op", ["ConvInteger", "QLinearConv"])
def test_conv_per_channel_weight_zero_point_against_reference(op):
    # onnxruntime only implements a per-tensor w_zero_point; the reference does per channel
    x, w = _ints((2, 4, 5, 5), np.uint8), _ints((6, 2, 3, 3), np.int8)
    zw = RNG.integers(-5, 5, (6,)).astype(np.int8)
    if op == "ConvInteger":
        names = ["x", "w", "zx", "zw"]
        inits = {"w": w, "zx": np.array(7, np.uint8), "zw": zw}
        out = np.int32
    else:
        names = ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"]
        inits = {"sx": np.array(0.02, np.float32), "zx": np.array(7, np.uint8), "w": w, "sw": _scales((6,)),
                 "zw": zw, "sy": np.array(0.5, np.float32), "zy": np.array(100, np.uint8)}
        out = np.uint8
    node = helper.make_node(op, names, ["y"], group=2, pads=[1, 1, 1, 1])
    model = make_model([node], [value_info("x", np.uint8, x.shape)], [value_info("y", out, None)],
                       initializers=inits, opset=10)
    _assert_matches_reference(model, x)


def test_per_axis_scale_along_a_symbolic_axis_is_rejected():
    # a static number of scales read along a dimension only known at run time could overrun
    node = helper.make_node("DequantizeLinear", ["x", "s"], ["y"], axis=0)
    model = make_model([node], [value_info("x", np.int8, ["N", 3])], [value_info("y", np.float32, None)],
                       initializers={"s": _scales((4,))}, opset=13)
    with pytest.raises(sofie_root.SofieError, match="per-axis scale"):
        sofie_root.compile(model)
