"""Element-wise operators against onnxruntime: unary math and activations, broadcasting binary
operators, comparisons and logic, variadic operators, Where, Clip, Cast."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from .ort_check import assert_matches_ort, make_model, value_info

RNG = np.random.default_rng(1234)

# op -> (input generator, attributes)
UNARY = {
    "Abs": (lambda s: RNG.standard_normal(s), {}),
    "Neg": (lambda s: RNG.standard_normal(s), {}),
    "Sqrt": (lambda s: RNG.uniform(0.1, 4, s), {}),
    "Exp": (lambda s: RNG.uniform(-3, 3, s), {}),
    "Log": (lambda s: RNG.uniform(0.1, 4, s), {}),
    "Reciprocal": (lambda s: RNG.uniform(0.5, 3, s) * RNG.choice([-1, 1], s), {}),
    "Floor": (lambda s: RNG.uniform(-5, 5, s), {}),
    "Ceil": (lambda s: RNG.uniform(-5, 5, s), {}),
    "Round": (lambda s: np.round(RNG.uniform(-5, 5, s) * 2) / 2, {}),
    "Sign": (lambda s: RNG.standard_normal(s) * (RNG.uniform(size=s) > 0.2), {}),
    "Sin": (lambda s: RNG.uniform(-4, 4, s), {}),
    "Cos": (lambda s: RNG.uniform(-4, 4, s), {}),
    "Tan": (lambda s: RNG.uniform(-1.2, 1.2, s), {}),
    "Asin": (lambda s: RNG.uniform(-0.99, 0.99, s), {}),
    "Acos": (lambda s: RNG.uniform(-0.99, 0.99, s), {}),
    "Atan": (lambda s: RNG.uniform(-4, 4, s), {}),
    "Sinh": (lambda s: RNG.uniform(-3, 3, s), {}),
    "Cosh": (lambda s: RNG.uniform(-3, 3, s), {}),
    "Asinh": (lambda s: RNG.uniform(-4, 4, s), {}),
    "Acosh": (lambda s: RNG.uniform(1.01, 5, s), {}),
    "Atanh": (lambda s: RNG.uniform(-0.95, 0.95, s), {}),
    "Erf": (lambda s: RNG.uniform(-3, 3, s), {}),
    "Relu": (lambda s: RNG.standard_normal(s), {}),
    "Sigmoid": (lambda s: RNG.uniform(-8, 8, s), {}),
    "Tanh": (lambda s: RNG.uniform(-4, 4, s), {}),
    "Softplus": (lambda s: RNG.uniform(-30, 30, s), {}),
    "Softsign": (lambda s: RNG.standard_normal(s), {}),
    "LeakyRelu": (lambda s: RNG.standard_normal(s), {"alpha": 0.2}),
    "Elu": (lambda s: RNG.standard_normal(s), {"alpha": 0.7}),
    "Selu": (lambda s: RNG.standard_normal(s), {}),
    "Celu": (lambda s: RNG.standard_normal(s), {"alpha": 1.3}),
    "HardSigmoid": (lambda s: RNG.uniform(-5, 5, s), {"alpha": 0.3, "beta": 0.4}),
    "HardSwish": (lambda s: RNG.uniform(-5, 5, s), {}),
    "ThresholdedRelu": (lambda s: RNG.uniform(-3, 3, s), {"alpha": 0.5}),
    "Mish": (lambda s: RNG.uniform(-5, 5, s), {}),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary(op: str, dtype) -> None:
    gen, attrs = UNARY[op]
    x = gen((3, 4, 5)).astype(dtype)
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    model = make_model([node], [value_info("x", dtype, ["N", 4, 5])], [value_info("y", dtype, None)], opset=18)
    assert_matches_ort(model, x, rtol=2e-6 if dtype == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate: str) -> None:
    x = RNG.uniform(-4, 4, (2, 7)).astype(np.float32)
    node = helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)
    model = make_model([node], [value_info("x", np.float32, [2, 7])], [value_info("y", np.float32, None)],
                       opset=20)
    assert_matches_ort(model, x, rtol=1e-5, atol=1e-6)


def test_is_nan_inf_and_not() -> None:
    x = np.array([1.0, np.nan, np.inf, -np.inf, -2.0, 0.0], dtype=np.float32)
    nodes = [helper.make_node("IsNaN", ["x"], ["a"]),
             helper.make_node("IsInf", ["x"], ["b"], detect_negative=0),
             helper.make_node("Not", ["a"], ["c"])]
    model = make_model(nodes, [value_info("x", np.float32, [6])],
                       [value_info(n, np.bool_, None) for n in "abc"])
    assert_matches_ort(model, x)


BINARY_SHAPES = [
    ((3, 4, 5), (3, 4, 5)),
    ((3, 4, 5), (5,)),
    ((3, 4, 5), ()),
    ((3, 1, 5), (4, 1)),
    ((1, 4, 1), (3, 1, 5)),
    ((2, 3, 4, 5), (1, 3, 1, 1)),
]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"])
@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=str)
def test_binary_broadcast(op: str, shapes) -> None:
    a = RNG.uniform(0.5, 2, shapes[0]).astype(np.float32)
    b = RNG.uniform(0.5, 2, shapes[1]).astype(np.float32) * (1 if op in ("Pow",) else RNG.choice([-1, 1], shapes[1]))
    if op == "PRelu":
        a = (a * RNG.choice([-1, 1], shapes[0])).astype(np.float32)
    b = np.asarray(b, dtype=np.float32)
    node = helper.make_node(op, ["a", "b"], ["y"])
    model = make_model([node], [value_info("a", np.float32, a.shape), value_info("b", np.float32, b.shape)],
                       [value_info("y", np.float32, None)])
    assert_matches_ort(model, a, b, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float64])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
def test_binary_dtypes(op: str, dtype) -> None:
    a = RNG.integers(-20, 20, (4, 6)).astype(dtype)
    b = RNG.integers(1, 7, (6,)).astype(dtype)
    node = helper.make_node(op, ["a", "b"], ["y"])
    model = make_model([node], [value_info("a", dtype, a.shape), value_info("b", dtype, b.shape)],
                       [value_info("y", dtype, None)])
    assert_matches_ort(model, a, b)


# ONNX requires fmod=1 for floating-point Mod
@pytest.mark.parametrize("fmod,dtype", [(1, np.float32), (0, np.int32), (1, np.int32), (0, np.int64), (1, np.int64)])
def test_mod(fmod: int, dtype) -> None:
    a = RNG.integers(-30, 30, (3, 5)).astype(dtype)
    b = (RNG.integers(1, 7, (5,)) * RNG.choice([-1, 1], 5)).astype(dtype)
    node = helper.make_node("Mod", ["a", "b"], ["y"], fmod=fmod)
    model = make_model([node], [value_info("a", dtype, a.shape), value_info("b", dtype, b.shape)],
                       [value_info("y", dtype, None)])
    assert_matches_ort(model, a, b)


def test_mod_float32_bitwise_as_numpy_fmod() -> None:
    """The float32 fmod fast path (a quotient in double) against numpy's fmod, bit for bit:
    quotients from 0 to 2^40 (both paths), quotients one ulp below an integer, signed zeros,
    subnormal-free extremes, b = +-inf, b = 0, a = +-inf and NaN."""
    import sofie_root

    rng = np.random.default_rng(7)
    a = (rng.standard_normal(4000) * 10.0 ** rng.uniform(-6, 8, 4000)).astype(np.float32)
    b = (rng.standard_normal(4000) * 10.0 ** rng.uniform(-6, 3, 4000)).astype(np.float32)
    ints = rng.integers(1, 1 << 20, 500).astype(np.float32)
    bb = rng.uniform(0.5, 3, 500).astype(np.float32)
    near = np.nextafter(ints * bb, np.float32(0)).astype(np.float32)  # just below a multiple of b
    special = np.array([0.0, -0.0, 5.0, -5.0, np.inf, -np.inf, np.nan, 3.0, -7.5, 1e30, -1e-30, 4.0], np.float32)
    sb = np.array([3.0, 3.0, np.inf, -np.inf, 2.0, 2.0, 1.0, 0.0, np.nan, 1e-30, 1e30, -2.0], np.float32)
    a = np.concatenate([a, near, special])
    b = np.concatenate([b, bb, sb])
    node = helper.make_node("Mod", ["a", "b"], ["y"], fmod=1)
    model = make_model([node], [value_info("a", np.float32, a.shape), value_info("b", np.float32, b.shape)],
                       [value_info("y", np.float32, None)])
    with np.errstate(invalid="ignore"):
        want = np.fmod(a, b)
    got = sofie_root.compile(model).infer(a, b)[0]
    both_nan = np.isnan(got) & np.isnan(want)
    np.testing.assert_array_equal(got.view(np.uint32)[~both_nan], want.view(np.uint32)[~both_nan])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_comparisons(op: str, dtype) -> None:
    a = RNG.integers(-3, 3, (4, 5)).astype(dtype)
    b = RNG.integers(-3, 3, (5,)).astype(dtype)
    node = helper.make_node(op, ["a", "b"], ["y"])
    model = make_model([node], [value_info("a", dtype, a.shape), value_info("b", dtype, b.shape)],
                       [value_info("y", np.bool_, None)])
    assert_matches_ort(model, a, b)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op: str) -> None:
    a = RNG.integers(0, 2, (3, 4)).astype(bool)
    b = RNG.integers(0, 2, (1, 4)).astype(bool)
    node = helper.make_node(op, ["a", "b"], ["y"])
    model = make_model([node], [value_info("a", np.bool_, a.shape), value_info("b", np.bool_, b.shape)],
                       [value_info("y", np.bool_, None)])
    assert_matches_ort(model, a, b)


def test_variadic_three_inputs() -> None:
    xs = [RNG.standard_normal(s).astype(np.float32) for s in [(2, 3, 4), (3, 1), (4,)]]
    for op in ("Max", "Min", "Sum", "Mean"):
        node = helper.make_node(op, ["a", "b", "c"], ["y"])
        model = make_model([node], [value_info(n, np.float32, x.shape) for n, x in zip("abc", xs)],
                           [value_info("y", np.float32, None)])
        assert_matches_ort(model, *xs)


def test_where() -> None:
    c = RNG.integers(0, 2, (3, 1, 5)).astype(bool)
    x = RNG.standard_normal((4, 5)).astype(np.float32)
    y = RNG.standard_normal((3, 4, 1)).astype(np.float32)
    node = helper.make_node("Where", ["c", "x", "y"], ["z"])
    model = make_model([node], [value_info("c", np.bool_, c.shape), value_info("x", np.float32, x.shape),
                                value_info("y", np.float32, y.shape)], [value_info("z", np.float32, None)])
    assert_matches_ort(model, c, x, y)


@pytest.mark.parametrize("variant", ["const", "runtime", "min_only", "none", "opset6"])
def test_clip(variant: str) -> None:
    x = RNG.uniform(-3, 3, (4, 6)).astype(np.float32)
    inits: dict[str, np.ndarray] = {}
    inputs = [value_info("x", np.float32, x.shape)]
    arrays = [x]
    opset = 13
    if variant == "const":
        inits = {"lo": np.float32(-1.0), "hi": np.float32(1.5)}
        node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"])
    elif variant == "runtime":
        inputs += [value_info("lo", np.float32, []), value_info("hi", np.float32, [])]
        arrays += [np.array(-0.5, np.float32), np.array(2.0, np.float32)]
        node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"])
    elif variant == "min_only":
        inits = {"lo": np.float32(0.25)}
        node = helper.make_node("Clip", ["x", "lo"], ["y"])
    elif variant == "none":
        node = helper.make_node("Clip", ["x"], ["y"])
    else:
        opset = 6
        node = helper.make_node("Clip", ["x"], ["y"], min=-0.3, max=0.7)
    model = make_model([node], inputs, [value_info("y", np.float32, None)], inits, opset=opset)
    assert_matches_ort(model, *arrays)


@pytest.mark.parametrize("src,dst", [(np.float32, np.int64), (np.int64, np.float32), (np.float32, np.float64),
                                     (np.float32, np.bool_), (np.bool_, np.float32), (np.int32, np.int64),
                                     (np.float64, np.int32), (np.uint8, np.float32)])
def test_cast(src, dst) -> None:
    x = (RNG.uniform(-50, 50, (3, 7)) if np.dtype(src).kind != "b" else RNG.integers(0, 2, (3, 7)))
    if np.dtype(src).kind == "u":
        x = np.abs(x)
    x = x.astype(src)
    to = helper.np_dtype_to_tensor_dtype(np.dtype(dst))
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=to)]
    model = make_model(nodes, [value_info("x", src, x.shape)], [value_info("y", dst, None)])
    assert_matches_ort(model, x)


def test_castlike() -> None:
    x = RNG.uniform(-5, 5, (2, 3)).astype(np.float32)
    nodes = [helper.make_node("CastLike", ["x", "t"], ["y"])]
    model = make_model(nodes, [value_info("x", np.float32, x.shape)], [value_info("y", np.float64, None)],
                       {"t": np.zeros(1, np.float64)}, opset=15)
    assert_matches_ort(model, x)


def test_symbolic_batch_two_sizes() -> None:
    nodes = [helper.make_node("Mul", ["x", "w"], ["m"]), helper.make_node("Sigmoid", ["m"], ["y"])]
    model = make_model(nodes, [value_info("x", np.float32, ["N", 3])], [value_info("y", np.float32, ["N", 3])],
                       {"w": np.array([1.0, -2.0, 0.5], np.float32)})
    import sofie_root

    compiled = sofie_root.compile(model)
    for n in (1, 17, 2):
        assert_matches_ort(model, RNG.standard_normal((n, 3)).astype(np.float32), compiled=compiled)


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64])
def test_bitshift_unsigned(direction: str, dtype) -> None:
    bits = 8 * np.dtype(dtype).itemsize
    x = RNG.integers(0, 200, (3, 5)).astype(dtype)
    y = RNG.integers(0, bits, (5,)).astype(dtype)
    node = helper.make_node("BitShift", ["x", "y"], ["z"], direction=direction)
    model = make_model([node], [value_info("x", dtype, x.shape), value_info("y", dtype, y.shape)],
                       [value_info("z", dtype, None)], opset=11)
    assert_matches_ort(model, x, y)


def test_bitwise_not_and_shrink() -> None:
    x = RNG.integers(-100, 100, (4, 3)).astype(np.int32)
    model = make_model([helper.make_node("BitwiseNot", ["x"], ["y"])], [value_info("x", np.int32, x.shape)],
                       [value_info("y", np.int32, None)], opset=18)
    assert_matches_ort(model, x)
    f = RNG.uniform(-2, 2, (4, 3)).astype(np.float32)
    model = make_model([helper.make_node("Shrink", ["x"], ["y"], lambd=0.7, bias=0.2)],
                       [value_info("x", np.float32, f.shape)], [value_info("y", np.float32, None)], opset=18)
    assert_matches_ort(model, f)


def test_symbolic_dimension_broadcast_against_fixed() -> None:
    # "N" meets 3: N must be 3 (element-wise) or 1 (broadcast); anything else is an error, not a bad read
    node = helper.make_node("Add", ["a", "b"], ["y"])
    model = make_model([node], [value_info("a", np.float32, ["N"]), value_info("b", np.float32, [3])],
                       [value_info("y", np.float32, None)])
    import sofie_root

    m = sofie_root.compile(model)
    b = np.array([1.0, 2.0, 3.0], np.float32)
    np.testing.assert_array_equal(m(np.array([10.0, 20.0, 30.0], np.float32), b), [11, 22, 33])
    np.testing.assert_array_equal(m(np.array([10.0], np.float32), b), [11, 12, 13])
    with pytest.raises(sofie_root.SofieError, match="cannot be broadcast"):
        m(np.array([1.0, 2.0], np.float32), b)
