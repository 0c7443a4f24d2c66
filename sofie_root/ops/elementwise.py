"""Element-wise operators: unary math and activations, binary arithmetic, comparisons and logic
with ONNX broadcasting, variadic Max/Min/Sum/Mean, Where, Clip, Cast and CastLike.

Each operator is a C++ expression over the element(s); the loop nest (with broadcasting and
merged axes) comes from ``NodeEmitter.broadcast``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..ir.dims import Dim, broadcast_shapes
from ..ir.dtypes import BOOL, DType, dtype_from_onnx
from .base import NodeView, Operator, OutInfo, register

FLOATS = ("float32", "float64")
SIGNED_INTS = ("int8", "int16", "int32", "int64")
UNSIGNED_INTS = ("uint8", "uint16", "uint32", "uint64")
INTS = SIGNED_INTS + UNSIGNED_INTS
NUMERIC = FLOATS + INTS

# -- unary ------------------------------------------------------------------------------------

UnaryExpr = Callable[[str, DType, NodeView], str]


class _Unary(Operator):
    inplace_ok = inplace_repeated_ok = True
    expr: UnaryExpr
    out_dtype: DType | None = None
    #: vector iterations clang interleaves in the float32 loop (0: its own choice, which is 1 for
    #: these long bodies); see INTERLEAVE
    interleave = 0

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        return [OutInfo(self.out_dtype or x.dtype, x.shape)]

    def emit(self, v: NodeView, e) -> str:
        dt = v.input(0).dtype
        code = e.broadcast(0, [0], lambda a: self.expr(a[0], dt, v))
        return interleaved(code, self.interleave) if dt.name == "float32" else code


#: interleave counts of the float32 loops of the vm-layer operators, measured under cling on
#: [32768] (ns per element, interleave 1 / 2 / 4, load ~9): tanh 0.57 / 0.45 / 0.38, erf 1.99 /
#: 1.65 / 3.06, gelu 2.70 / 1.86 / 1.64, exp 0.89 / 0.66 / 1.13, sigmoid 1.10 / 0.79 / 1.24, log
#: 1.52 / 1.14 / 1.31, asin 0.54 / 0.45 / 0.59, cosh 1.25 / 0.97 / 1.25; asinh and atanh gain
#: nothing. With one vector per iteration the long dependence chains (a polynomial, a division)
#: leave the FMA units idle; at 4 the 16 AVX2 registers spill for the larger bodies. Tanh (the
#: [9/8] rational) at 4: [1, 128] 44.5 ns, [256, 128] 9.8 us (ORT 13.3). It was briefly at 2 for a
#: 96 ns stall at [1, 128] that came from the flush-to-zero guard's stack words, not from this loop
#: (FPModeGuard keeps them in a cache line of their own now; docs/performance.md).
INTERLEAVE = {"Tanh": 4, "Erf": 4, "Gelu": 4, "Exp": 4, "Sigmoid": 4, "Log": 2, "Softplus": 2, "Elu": 2,
              "Celu": 2, "Selu": 2, "Swish": 2, "Mish": 2, "Asin": 2, "Acos": 2, "Atan": 2, "Sinh": 2,
              "Cosh": 2, "Acosh": 2}


def interleaved(code: str, count: int) -> str:
    """``code`` (one element-wise loop nest) with clang's interleave pragma on its first loop, when
    ``count`` > 1; g++ ignores it (the #if keeps -Wunknown-pragmas quiet)."""
    if count <= 1:
        return code
    at = code.find("for (")
    if at < 0:
        return code
    line = code.rfind("\n", 0, at) + 1
    if code[line:at].strip():  # the loop does not start its line: leave it
        return code
    pragma = f"#if defined(__clang__)\n#pragma clang loop interleave_count({count})\n#endif\n"
    return code[:line] + pragma + code[line:]


def _lit(value: float, dt: DType) -> str:
    from ..codegen.emitter import cpp_literal

    return cpp_literal(value, dt)


def _unary(name: str, dtypes: tuple[str, ...], expr: UnaryExpr, out_dtype: DType | None = None) -> None:
    cls = type(name, (_Unary,), {"op_type": name, "dtypes": dtypes, "expr": staticmethod(expr),
                                 "out_dtype": out_dtype, "interleave": INTERLEAVE.get(name, 0),
                                 "__doc__": f"ONNX {name}."})
    register(cls)


def _abs(x: str, dt: DType, v: NodeView) -> str:
    if dt.is_float:
        return f"std::abs({x})"
    if dt.name in UNSIGNED_INTS:
        return x
    return f"{dt.cpp}({x} < 0 ? sofie_rt::wrap_neg({x}) : {x})"  # |min| wraps to min, as in numpy


def _sign(x: str, dt: DType, v: NodeView) -> str:
    if dt.name in UNSIGNED_INTS:
        return f"{dt.cpp}({x} > 0)"
    if dt.is_float:
        return f"({x} > 0 ? {dt.cpp}(1) : ({x} < 0 ? {dt.cpp}(-1) : {x}))"
    return f"{dt.cpp}(({x} > 0) - ({x} < 0))"


def _std(fn: str) -> UnaryExpr:
    return lambda x, dt, v: f"std::{fn}({x})"


def _vm(fn: str) -> UnaryExpr:
    # the runtime's vectorisable math layer (float32; its float64 overloads call std::)
    return lambda x, dt, v: f"sofie_rt::vm::{fn}({x})"


def _clamp01(r: str, dt: DType) -> str:
    """``r`` clamped to [0, 1] with NaN kept (std::min/max would turn NaN into a bound)."""
    return f"sofie_rt::clamp_nan({r}, {dt.cpp}(0), {dt.cpp}(1))"


for _name, _fn in [("Floor", "floor"), ("Ceil", "ceil")]:
    _unary(_name, FLOATS, _std(_fn))


class _ArrayUnary(_Unary):
    """A unary operator whose float32 tensors go through a runtime function over the whole array
    (``array_call``); float64 and the fused element-wise chains keep the per-element expression
    (the GPU backends too: the functions are host loops)."""

    def array_call(self) -> str:
        raise NotImplementedError

    def emit(self, v: NodeView, e) -> str:
        if v.input(0).dtype.name != "float32":
            return super().emit(v, e)
        return f"{self.array_call()}({e.inp(0)}, {e.out(0)}, {e.size_in(0)});"


class _Trig(_ArrayUnary):
    """Sin, Cos, Tan: float32 tensors go through sofie_rt::vm::map_trig (the vectorised reduction
    for |x| < 2^28, the library for the rest, block by block); float64 and the fused element-wise
    chains keep std:: (the per-element expression, which has no place for the library fallback)."""

    which = 0

    def array_call(self) -> str:
        return f"sofie_rt::vm::map_trig<{self.which}>"


for _k, (_name, _fn) in enumerate([("Sin", "sin"), ("Cos", "cos"), ("Tan", "tan")]):
    register(type(_name, (_Trig,), {"op_type": _name, "dtypes": FLOATS, "expr": staticmethod(_std(_fn)),
                                    "which": _k, "__doc__": f"ONNX {_name}."}))


class _Exp(_ArrayUnary):
    """Exp: a float32 tensor goes through sofie_rt::vm::exp_n (AVX-512: vscalefps instead of vm::exp's
    exponent arithmetic, 1.2x faster; else the vm::exp loop); float64 and fused chains use vm::exp."""

    op_type = "Exp"
    dtypes = FLOATS
    expr = staticmethod(_vm("exp"))

    def array_call(self) -> str:
        return "sofie_rt::vm::exp_n"


register(_Exp)
for _name, _fn in [("Log", "log"), ("Erf", "erf"), ("Tanh", "tanh"), ("Sqrt", "sqrt"),
                   ("Asin", "asin"), ("Acos", "acos"), ("Atan", "atan"), ("Sinh", "sinh"), ("Cosh", "cosh"),
                   ("Asinh", "asinh"), ("Acosh", "acosh"), ("Atanh", "atanh")]:
    _unary(_name, FLOATS, _vm(_fn))

_unary("Round", FLOATS, lambda x, dt, v: f"std::nearbyint({x})")
_unary("Abs", NUMERIC, _abs)
_unary("Neg", FLOATS + SIGNED_INTS, lambda x, dt, v: f"{dt.cpp}(-{x})" if dt.is_float else f"sofie_rt::wrap_neg({x})")
_unary("Sign", NUMERIC, _sign)
_unary("Reciprocal", FLOATS, lambda x, dt, v: f"{_lit(1, dt)} / {x}")
# NaN must come out as NaN (max(NaN, 0) in ONNX's reference): the comparison is false for NaN
_unary("Relu", FLOATS + SIGNED_INTS, lambda x, dt, v: f"({x} < 0 ? {dt.cpp}(0) : {x})")
_unary("Sigmoid", FLOATS, lambda x, dt, v: f"sofie_rt::vm::sigmoid({x})")
_unary("Softplus", FLOATS, lambda x, dt, v: f"sofie_rt::vm::softplus({x})")
_unary("Softsign", FLOATS, lambda x, dt, v: f"{x} / ({_lit(1, dt)} + std::abs({x}))")
_unary("Mish", FLOATS, lambda x, dt, v: f"{x} * sofie_rt::vm::tanh(sofie_rt::vm::softplus({x}))")
_unary("LeakyRelu", FLOATS,
       lambda x, dt, v: f"({x} >= 0 ? {x} : {_lit(v.attr('alpha', 0.01), dt)} * {x})")
_unary("ThresholdedRelu", FLOATS,
       lambda x, dt, v: f"({x} > {_lit(v.attr('alpha', 1.0), dt)} ? {x} : {dt.cpp}(0))")
# expm1 keeps the relative accuracy of alpha * (e^x - 1) for x near 0
_unary("Elu", FLOATS,
       lambda x, dt, v: f"({x} >= 0 ? {x} : {_lit(v.attr('alpha', 1.0), dt)} * sofie_rt::vm::expm1({x}))")
_unary("Celu", FLOATS,
       lambda x, dt, v: (f"({x} > 0 ? {x} : {_lit(v.attr('alpha', 1.0), dt)} * "
                         f"sofie_rt::vm::expm1({x} / {_lit(v.attr('alpha', 1.0), dt)}))"))
_unary("Selu", FLOATS,
       lambda x, dt, v: (f"{_lit(v.attr('gamma', 1.05070102214813232421875), dt)} * ({x} > 0 ? {x} : "
                         f"{_lit(v.attr('alpha', 1.67326319217681884765625), dt)} * sofie_rt::vm::expm1({x}))"))
_unary("HardSigmoid", FLOATS,
       lambda x, dt, v: _clamp01(f"{_lit(v.attr('alpha', 0.2), dt)} * {x} + {_lit(v.attr('beta', 0.5), dt)}", dt))
_unary("HardSwish", FLOATS,
       lambda x, dt, v: f"{x} * {_clamp01(f'{_lit(1 / 6, dt)} * {x} + {_lit(0.5, dt)}', dt)}")
_unary("Swish", FLOATS,
       lambda x, dt, v: f"{x} / ({_lit(1, dt)} + sofie_rt::vm::exp(-{_lit(v.attr('alpha', 1.0), dt)} * {x}))")
_unary("IsNaN", FLOATS, lambda x, dt, v: f"({x} != {x})", out_dtype=BOOL)
_unary("IsInf", FLOATS,
       lambda x, dt, v: (f"(std::isinf({x}) && ({x} > 0 ? {int(v.attr('detect_positive', 1))} : "
                         f"{int(v.attr('detect_negative', 1))}))"), out_dtype=BOOL)
_unary("Not", ("bool",), lambda x, dt, v: f"!{x}")
_unary("BitwiseNot", INTS, lambda x, dt, v: f"{dt.cpp}(~{x})")
_unary("Shrink", NUMERIC,
       lambda x, dt, v: (f"({x} < {_lit(-v.attr('lambd', 0.5), dt) if dt.is_signed else dt.cpp + '(0)'} ? "
                         f"{dt.cpp}({x} + {_lit(v.attr('bias', 0.0), dt)}) : ({x} > {_lit(v.attr('lambd', 0.5), dt)} ? "
                         f"{dt.cpp}({x} - {_lit(v.attr('bias', 0.0), dt)}) : {dt.cpp}(0)))"))


@register
class Gelu(_Unary):
    """ONNX Gelu (opset 20): exact (erf) or tanh approximation."""

    op_type = "Gelu"
    dtypes = FLOATS
    interleave = INTERLEAVE["Gelu"]

    def check(self, v: NodeView) -> str | None:
        if v.attr("approximate", "none") not in ("none", "tanh"):
            return f"approximate={v.attr('approximate')!r} is not defined by ONNX"
        return super().check(v)

    @staticmethod
    def expr(x: str, dt: DType, v: NodeView) -> str:
        if v.attr("approximate", "none") == "tanh":
            c = _lit(math.sqrt(2 / math.pi), dt)
            return (f"{_lit(0.5, dt)} * {x} * ({_lit(1, dt)} + sofie_rt::vm::tanh({c} * ({x} + "
                    f"{_lit(0.044715, dt)} * {x} * {x} * {x})))")
        return f"sofie_rt::vm::gelu({x})"


# -- binary -----------------------------------------------------------------------------------

BinaryExpr = Callable[[str, str, DType, NodeView], str]


class _Binary(Operator):
    inplace_ok = inplace_repeated_ok = True
    expr: BinaryExpr
    out_bool = False
    same_type = True

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        a, b = v.input(0), v.input(1)
        if self.same_type and a.dtype != b.dtype:
            return f"inputs have different element types ({a.dtype.name} and {b.dtype.name})"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        a, b = v.input(0), v.input(1)
        shape = broadcast_shapes(a.shape, b.shape, where=f"{v.label}: ")
        return [OutInfo(BOOL if self.out_bool else a.dtype, shape)]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        fn = _SHAPE_ARITH.get(self.op_type)
        a, b = v.known_value(0), v.known_value(1)
        if fn is None or a is None or b is None or len(outs[0].shape) > 1:
            return [None]
        if len(a) != len(b) and 1 not in (len(a), len(b)):
            return [None]
        n = max(len(a), len(b))
        a = a * n if len(a) == 1 else a
        b = b * n if len(b) == 1 else b
        try:
            return [tuple(fn(x, y) for x, y in zip(a, b))]
        except Exception:
            return [None]

    def emit(self, v: NodeView, e) -> str:
        dt = v.input(0).dtype
        return e.broadcast(0, [0, 1], lambda x: self.expr(x[0], x[1], dt, v))


def _known_equal(x, y) -> bool:
    """Equality of two compile-time values, possibly symbolic. A symbolic size with non-negative
    coefficients never equals a negative number (exporters test shapes against -1, as in torch's
    ``Where(Equal(shape, -1), 1, shape)`` before Expand); anything undecidable raises."""
    if not isinstance(x, Dim) and not isinstance(y, Dim):
        return x == y
    if isinstance(x, Dim) and isinstance(y, Dim) and x.terms == y.terms:
        return True
    d, other = (x, y) if isinstance(x, Dim) else (y, x)
    if not isinstance(other, Dim) and int(other) < 0 and all(c > 0 for c in d.terms.values()):
        return False
    raise ValueError("undecidable at compile time")


_SHAPE_ARITH = {
    "Add": lambda x, y: x + y,
    "Sub": lambda x, y: x - y,
    "Mul": lambda x, y: x * y,
    "Div": lambda x, y: x // y,
    "Equal": _known_equal,
}


def _binary(name: str, dtypes: tuple[str, ...], expr: BinaryExpr, out_bool: bool = False,
            same_type: bool = True) -> None:
    cls = type(name, (_Binary,), {"op_type": name, "dtypes": dtypes, "expr": staticmethod(expr),
                                  "out_bool": out_bool, "same_type": same_type, "__doc__": f"ONNX {name}."})
    register(cls)


# integers wrap around (sofie_rt::wrap_*: a signed overflow is undefined behaviour in C++)
_binary("Add", NUMERIC, lambda a, b, dt, v: f"{dt.cpp}({a} + {b})" if dt.is_float else f"sofie_rt::wrap_add({a}, {b})")
_binary("Sub", NUMERIC, lambda a, b, dt, v: f"{dt.cpp}({a} - {b})" if dt.is_float else f"sofie_rt::wrap_sub({a}, {b})")
_binary("Mul", NUMERIC, lambda a, b, dt, v: f"{dt.cpp}({a} * {b})" if dt.is_float else f"sofie_rt::wrap_mul({a}, {b})")
_binary("Div", NUMERIC, lambda a, b, dt, v: f"{a} / {b}" if dt.is_float else f"sofie_rt::int_div({a}, {b})")
_binary("Mod", NUMERIC,
        lambda a, b, dt, v: (f"sofie_rt::mod_trunc({a}, {b})" if v.attr("fmod", 0) else f"sofie_rt::mod_floor({a}, {b})"))
_binary("PRelu", FLOATS + SIGNED_INTS, lambda a, b, dt, v: f"({a} < 0 ? {dt.cpp}({b} * {a}) : {a})")
_binary("Equal", NUMERIC + ("bool",), lambda a, b, dt, v: f"{a} == {b}", out_bool=True)
_binary("Less", NUMERIC, lambda a, b, dt, v: f"{a} < {b}", out_bool=True)
_binary("Greater", NUMERIC, lambda a, b, dt, v: f"{a} > {b}", out_bool=True)
_binary("LessOrEqual", NUMERIC, lambda a, b, dt, v: f"{a} <= {b}", out_bool=True)
_binary("GreaterOrEqual", NUMERIC, lambda a, b, dt, v: f"{a} >= {b}", out_bool=True)
_binary("And", ("bool",), lambda a, b, dt, v: f"{a} && {b}", out_bool=True)
_binary("Or", ("bool",), lambda a, b, dt, v: f"{a} || {b}", out_bool=True)
_binary("Xor", ("bool",), lambda a, b, dt, v: f"{a} != {b}", out_bool=True)
_binary("BitwiseAnd", INTS, lambda a, b, dt, v: f"{dt.cpp}({a} & {b})")
_binary("BitwiseOr", INTS, lambda a, b, dt, v: f"{dt.cpp}({a} | {b})")
_binary("BitwiseXor", INTS, lambda a, b, dt, v: f"{dt.cpp}({a} ^ {b})")
# shifts by negative amounts or by the type's width are undefined in C++; the helpers do what ONNX says
_binary("BitShift", INTS,
        lambda a, b, dt, v: f"sofie_rt::{'shift_left' if v.attr('direction', 'LEFT') == 'LEFT' else 'shift_right'}({a}, {b})")


def _int_power(x: str, n: int) -> str:
    """x^n for an integer n >= 1 by repeated squaring, as one expression over ``x``."""
    if n == 1:
        return x
    half = _int_power(x, n // 2)
    sq = f"({half} * {half})"
    return f"({sq} * {x})" if n % 2 else sq


#: |exponent| up to which an integer constant exponent becomes multiplications (at most 4
#: roundings: within 2 ulp of the correctly rounded power)
MAX_INT_EXPONENT = 8


def pow_expr(a: str, b: str, dt: DType, exponent: float | None, b_dt: DType | None = None) -> str:
    """C++ expression of ONNX Pow(a, b) for element type ``dt`` of ``a``; ``exponent`` is b's value
    when it is a compile-time scalar. Integer exponents up to MAX_INT_EXPONENT become
    multiplications (1 / product for negative ones), +-0.5 a square root; the special cases of
    IEEE pow are kept (pow(x, 0) = 1 even for NaN, pow(-0, 0.5) = +0, pow(-inf, 0.5) = inf,
    pow(-0, -1) = -inf), which the products, sqrt and the reciprocal give as they are."""
    if not dt.is_float:
        return f"sofie_rt::int_pow({a}, {dt.cpp}({b}))"
    one = _lit(1, dt)
    if exponent is not None and not math.isfinite(exponent):
        return f"sofie_rt::vm::pow({a}, {_lit(exponent, dt)})"
    if exponent is not None:
        if exponent == 0:
            return one
        if exponent == int(exponent) and abs(exponent) <= MAX_INT_EXPONENT:
            p = _int_power(a, abs(int(exponent)))
            return p if exponent > 0 else f"({one} / {p})"
        if exponent == 0.5:
            return f"sofie_rt::vm::pow_half({a})"
        if exponent == -0.5:
            return f"({one} / sofie_rt::vm::pow_half({a}))"
        return f"sofie_rt::vm::pow({a}, {_lit(exponent, dt)})"
    if b_dt is not None and b_dt != dt:
        # a different exponent type (ONNX allows any numeric one): computed in double, exactly as
        # the mixed-type C++ call did (integer exponents above 2^24 keep their parity there)
        return f"{dt.cpp}(sofie_rt::vm::pow(double({a}), double({b})))"
    return f"sofie_rt::vm::pow({a}, {b})"


def scalar_exponent(v: NodeView) -> float | None:
    """The exponent of a Pow node when it is a compile-time scalar (input 1 constant, or the
    ``exponent`` attribute the element-wise fusion records for a constant it turns into an input)."""
    c = v.const(1)
    if c is not None and c.size == 1:
        return float(c.reshape(-1)[0])
    e = v.attr("exponent")
    return float(e) if isinstance(e, (int, float)) and not isinstance(e, bool) else None


@register
class Pow(_Binary):
    """ONNX Pow: any numeric base and exponent type; constant exponents are specialised."""

    op_type = "Pow"
    dtypes = NUMERIC
    same_type = False

    @staticmethod
    def expr(a: str, b: str, dt: DType, v: NodeView, b_dt: DType | None = None) -> str:
        return pow_expr(a, b, dt, scalar_exponent(v), b_dt)

    def emit(self, v: NodeView, e) -> str:
        dt, b_dt = v.input(0).dtype, v.input(1).dtype
        return e.broadcast(0, [0, 1], lambda x: self.expr(x[0], x[1], dt, v, b_dt))


# -- variadic ---------------------------------------------------------------------------------

class _Variadic(Operator):
    inplace_ok = inplace_repeated_ok = True
    dtypes = NUMERIC
    combine: Callable[[list[str], DType], str]

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if len({i.dtype for i in v.inputs if i is not None}) > 1:
            return "inputs have different element types"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        shapes = [i.shape for i in v.inputs if i is not None]
        return [OutInfo(v.input(0).dtype, broadcast_shapes(*shapes, where=f"{v.label}: "))]

    def emit(self, v: NodeView, e) -> str:
        dt = v.input(0).dtype
        ins = [k for k, i in enumerate(v.inputs) if i is not None]
        return e.broadcast(0, ins, lambda xs: self.combine(xs, dt))


def _fold(fn: str) -> Callable[[list[str], DType], str]:
    def combine(xs: list[str], dt: DType) -> str:
        acc = xs[0]
        for x in xs[1:]:
            acc = f"{fn}({acc}, {x})"
        return acc
    return combine


def _nan_max(xs: list[str], dt: DType) -> str:
    acc = xs[0]
    for x in xs[1:]:
        acc = f"sofie_rt::nan_max({acc}, {x})" if dt.is_float else f"std::max({acc}, {x})"
    return acc


def _nan_min(xs: list[str], dt: DType) -> str:
    acc = xs[0]
    for x in xs[1:]:
        acc = f"sofie_rt::nan_min({acc}, {x})" if dt.is_float else f"std::min({acc}, {x})"
    return acc


for _name, _comb in [
    ("Max", _nan_max),
    ("Min", _nan_min),
    ("Sum", lambda xs, dt: f"{dt.cpp}(" + " + ".join(xs) + ")"),
    ("Mean", lambda xs, dt: f"{dt.cpp}((" + " + ".join(xs) + f") / {dt.cpp}({len(xs)}))"),
]:
    register(type(_name, (_Variadic,), {"op_type": _name, "combine": staticmethod(_comb),
                                        "__doc__": f"ONNX {_name} (variadic, broadcasting)."}))


# -- Where, Clip, Cast ------------------------------------------------------------------------

@register
class Where(Operator):
    """ONNX Where(condition, X, Y) with broadcasting."""

    op_type = "Where"
    inplace_ok = inplace_repeated_ok = True

    def check(self, v: NodeView) -> str | None:
        if v.input(0).dtype != BOOL:
            return "condition must be bool"
        if v.input(1).dtype != v.input(2).dtype:
            return "X and Y have different element types"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        shape = broadcast_shapes(v.input(0).shape, v.input(1).shape, v.input(2).shape, where=f"{v.label}: ")
        return [OutInfo(v.input(1).dtype, shape)]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        c, x, y = v.known_value(0), v.known_value(1), v.known_value(2)
        if c is None or x is None or y is None or len(outs[0].shape) != 1:
            return [None]
        n = int(outs[0].shape[0])
        c, x, y = [(t * n if len(t) == 1 else t) for t in (c, x, y)]
        return [tuple(xx if cc else yy for cc, xx, yy in zip(c, x, y))]

    def emit(self, v: NodeView, e) -> str:
        return e.broadcast(0, [0, 1, 2], lambda a: f"({a[0]} ? {a[1]} : {a[2]})")


@register
class Clip(Operator):
    """ONNX Clip: bounds as attributes (opset < 11) or optional inputs (constant or run time)."""

    op_type = "Clip"
    dtypes = NUMERIC
    inplace_ok = inplace_repeated_ok = True  # the bounds are read before the loop

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(v.input(0).dtype, v.input(0).shape)]

    def emit(self, v: NodeView, e) -> str:
        dt = v.input(0).dtype
        lo = hi = None
        pre = []
        if v.opset < 11:
            lo = _lit(v.attr("min", -math.inf), dt) if dt.is_float else None
            hi = _lit(v.attr("max", math.inf), dt) if dt.is_float else None
        else:
            for k in (1, 2):
                if not v.has_input(k):
                    continue
                c = v.const(k)
                if c is not None:
                    val = _lit(c.reshape(-1)[0].item(), dt)
                else:
                    var = e.tmp("b")
                    pre.append(f"const {dt.cpp} {var} = {e.inp(k)}[0];")
                    val = var
                if k == 1:
                    lo = val
                else:
                    hi = val
        def expr(a: list[str]) -> str:
            r = a[0]
            if lo is not None:
                r = f"({r} < {lo} ? {lo} : {r})"
            if hi is not None:
                r = f"({r} > {hi} ? {hi} : {r})"
            return r
        return "\n".join(pre + [e.broadcast(0, [0], expr)])


def _cast_expr(a: str, src: DType, dst: DType) -> str:
    if dst.name == "bool":
        return f"({a} != 0)"
    if src.is_float and dst.is_int:
        # out-of-range float -> int conversion is undefined behaviour in C++; the runtime gives numpy's
        # and onnxruntime's results (x86-64 semantics, see sofie_rt::cast_float_to_int)
        return f"sofie_rt::cast_float_to_int<{dst.cpp}>({a})"
    return f"static_cast<{dst.cpp}>({a})"


@register
class Cast(Operator):
    """ONNX Cast between the supported numeric types and bool."""

    op_type = "Cast"
    inplace_ok = inplace_repeated_ok = True  # only when the type does not change (same dtype)

    def check(self, v: NodeView) -> str | None:
        try:
            dtype_from_onnx(v.attr("to", 0))
        except Exception as e:
            return str(e)
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(dtype_from_onnx(v.attr("to")), v.input(0).shape)]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        val = v.known_value(0)
        if val is not None and outs[0].dtype.is_int:
            return [val]
        return [None]

    def emit(self, v: NodeView, e) -> str:
        src, dst = v.input(0).dtype, dtype_from_onnx(v.attr("to"))
        return e.broadcast(0, [0], lambda a: _cast_expr(a[0], src, dst))


@register
class CastLike(Cast):
    """ONNX CastLike: Cast to the element type of the second input."""

    op_type = "CastLike"
    static_inputs = (1,)

    def check(self, v: NodeView) -> str | None:
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(v.input(1).dtype, v.input(0).shape)]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        val = v.known_value(0)
        return [val if val is not None and outs[0].dtype.is_int else None]

    def emit(self, v: NodeView, e) -> str:
        src, dst = v.input(0).dtype, v.input(1).dtype
        return e.broadcast(0, [0], lambda a: _cast_expr(a[0], src, dst))


@register
class RoundFloat(Operator):
    """Internal (domain ``sofie``): round float32 values to float16 or bfloat16 precision.

    The ONNX frontend computes half-precision models in float32 and turns each Cast to a half
    type into Cast-to-float32 followed by this rounding, so results keep the half type's values.
    """

    op_type = "RoundFloat"
    domain = "sofie"
    inplace_ok = inplace_repeated_ok = True
    internal = True
    dtypes = ("float32",)

    def check(self, v: NodeView) -> str | None:
        if v.attr("dtype") not in ("float16", "bfloat16"):
            return f"unknown rounding type {v.attr('dtype')!r}"
        return super().check(v)

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(v.input(0).dtype, v.input(0).shape)]

    def evaluate(self, v: NodeView, inputs: list) -> list:
        import numpy as np

        if v.attr("dtype") == "float16":
            return [inputs[0].astype(np.float16).astype(np.float32)]
        import ml_dtypes

        return [inputs[0].astype(ml_dtypes.bfloat16).astype(np.float32)]

    def emit(self, v: NodeView, e) -> str:
        fn = "round_float16" if v.attr("dtype") == "float16" else "round_bfloat16"
        return e.broadcast(0, [0], lambda a: f"sofie_rt::{fn}({a[0]})")
