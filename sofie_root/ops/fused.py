"""Fused operators created by the optimisation passes (domain ``sofie``, hidden from ``supported_ops``).

* ``FusedGemm`` / ``FusedConv`` / ``FusedMatMul``: a Gemm, Conv or MatMul followed by an activation
  (and, for MatMul, a bias along the last axis). The product itself is
  emitted by the plain Gemm/Conv operator (through a view of the node with the base attributes),
  so kernel choices made there apply unchanged; the activation then runs over the output while it
  is still in cache, instead of as a separate node reading it back.
* ``FusedElementwise``: a chain (or a tree with one consumer per intermediate) of element-wise
  operators evaluated in one loop: each element is read once, the intermediates live in registers
  and only the final value is stored.

Everything a fused node needs is in plain attributes (strings, numbers, lists), so fused graphs
are saved to .root files and compiled again like any other. Attributes read from a file are
validated before anything is emitted: operator names must be known element-wise operators,
references must point backwards, and every value that reaches C++ goes through ``cpp_literal``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..ir.dims import broadcast_shapes, numel
from ..ir.dtypes import DType, dtype_by_name
from ..ir.graph import Node
from .base import NodeView, Operator, OutInfo, lookup, register
from .elementwise import INTERLEAVE, Cast, Clip, Pow, Where, _Binary, _cast_expr, _lit, _Unary, _Variadic, interleaved
from .linalg import dense_call, panels_input

#: activation attributes of FusedGemm/FusedConv are stored as ``act_<name>``
ACT_PREFIX = "act_"

#: activations the Gemm/Conv fusion accepts, with the attributes each may carry
ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "Relu": (), "Sigmoid": (), "Tanh": (), "Softplus": (), "Softsign": (), "Mish": (), "HardSwish": (),
    "LeakyRelu": ("alpha",), "Elu": ("alpha",), "Celu": ("alpha",), "ThresholdedRelu": ("alpha",),
    "Selu": ("alpha", "gamma"), "HardSigmoid": ("alpha", "beta"), "Swish": ("alpha",),
    "Gelu": ("approximate",), "Clip": ("min", "max"),
}


def _activation_expr(act: str, attrs: dict[str, Any], x: str, dt: DType, where: str) -> str:
    """C++ expression of activation ``act`` (attributes without prefix) applied to ``x``."""
    if act not in ACTIVATIONS:
        raise ValueError(f"{where}: unknown fused activation {act!r}")
    if act == "Clip":
        r = x
        if "min" in attrs:
            lo = _lit(float(attrs["min"]), dt)
            r = f"({r} < {lo} ? {lo} : {r})"
        if "max" in attrs:
            hi = _lit(float(attrs["max"]), dt)
            r = f"({r} > {hi} ? {hi} : {r})"
        return r
    op = lookup("", act)
    view = NodeView(Node(act, [x], [x], dict(attrs)), [], [])
    return op.expr(x, dt, view)  # type: ignore[union-attr]


def dense_epilogue_expr(act: str, attrs: dict[str, Any], x: str, dt: DType, where: str) -> str:
    """The activation of a dense product's epilogue (FusedGemm, FusedMatMul): as
    ``_activation_expr``, except exact float Gelu, which is 0.5 x (1 + erf(x / sqrt2)) with
    ``vm::erf`` (no division, one exponential) instead of ``vm::gelu``'s erfc form: ONNX's
    definition as ONNX Runtime evaluates it (MLAS erf), 1.3x faster per element under cling, at
    the cost of relative accuracy for x < -3 where 1 + erf cancels (absolute error below 1e-7
    |x|; x < -5.6 gives -0, as onnxruntime). Measured in docs/performance.md, "Convolutions and
    dense layers"."""
    if act == "Gelu" and attrs.get("approximate", "none") == "none" and dt.cpp == "float":
        return f"(0.5f * {x} * (1.0f + sofie_rt::vm::erf({x} * 0.70710678118654752f)))"
    return _activation_expr(act, attrs, x, dt, where)


def conv_vector_activation(act: str, attrs: dict[str, Any]):
    """The float activation ``act`` of an 8-float vector ``sofie_rt::rows::f8`` as a function of its
    C++ expression, for the register-blocked convolutions to apply to their accumulators before
    the single store (None if there is none: the activation then runs over the stored tile, a
    scalar pass after vector stores that cost a ReLU 3x3 1 -> 8 convolution 2.5x its time).
    Comparisons against a splat keep NaN (NaN < 0 is false), as the scalar expressions do."""
    s = "sofie_rt::rows::splat"
    if act == "Tanh":
        return lambda y: f"sofie_rt::rows::tanh8({y})"
    if act == "Relu":
        return lambda y: f"({y} < {s}(0.0f) ? {s}(0.0f) : {y})"
    if act == "LeakyRelu":
        alpha = _lit(float(attrs.get("alpha", 0.01)), dtype_by_name("float32"))
        return lambda y: f"({y} >= {s}(0.0f) ? {y} : {s}({alpha}) * {y})"
    if act == "Clip" and ("min" in attrs or "max" in attrs):
        def clip(y: str) -> str:
            r = y
            if "min" in attrs:
                lo = f"{s}({_lit(float(attrs['min']), dtype_by_name('float32'))})"
                r = f"({r} < {lo} ? {lo} : {r})"
            if "max" in attrs:
                hi = f"{s}({_lit(float(attrs['max']), dtype_by_name('float32'))})"
                r = f"({r} > {hi} ? {hi} : {r})"
            return r
        return clip
    return None


def activation_check(act: str, attrs: dict[str, Any], dt: DType) -> str | None:
    """Why ``act`` with ``attrs`` cannot be fused after a product of type ``dt`` (None if it can)."""
    if act not in ACTIVATIONS:
        return f"activation {act!r} cannot be fused"
    if not dt.is_float:
        return f"fused activations need a float type, not {dt.name}"
    for k, val in attrs.items():
        if k not in ACTIVATIONS[act]:
            return f"activation {act} has no attribute {k!r}"
        if k == "approximate":
            if val not in ("none", "tanh"):
                return f"Gelu approximate={val!r} is not defined by ONNX"
        elif isinstance(val, bool) or not isinstance(val, (int, float)) or math.isnan(float(val)):
            return f"activation attribute {k!r} must be a number"
    return None


class _FusedProduct(Operator):
    """A Gemm or Conv (``base``) followed by an activation over its output."""

    domain = "sofie"
    internal = True
    base: str = ""

    @staticmethod
    def split(node: Node) -> tuple[dict[str, Any], str, dict[str, Any]]:
        base = {k: v for k, v in node.attrs.items() if k != "activation" and not k.startswith(ACT_PREFIX)}
        act = {k[len(ACT_PREFIX):]: v for k, v in node.attrs.items() if k.startswith(ACT_PREFIX)}
        return base, str(node.attrs.get("activation", "")), act

    def _base_view(self, v: NodeView) -> NodeView:
        attrs, _, _ = self.split(v.node)
        node = Node(self.base, v.node.inputs, v.node.outputs, attrs, v.node.name, "", v.node.opset)
        return NodeView(node, v.inputs, v.consts, v.outputs)

    def check(self, v: NodeView) -> str | None:
        _, act, attrs = self.split(v.node)
        if not v.inputs or v.inputs[0] is None:
            return "input 0 is missing"
        reason = activation_check(act, attrs, v.inputs[0].dtype)
        if reason:
            return reason
        return lookup("", self.base).check(self._base_view(v))  # type: ignore[union-attr]

    def infer(self, v: NodeView) -> list[OutInfo]:
        return lookup("", self.base).infer(self._base_view(v))  # type: ignore[union-attr]

    def workspace(self, v: NodeView):
        return lookup("", self.base).workspace(self._base_view(v))  # type: ignore[union-attr]

    def emit(self, v: NodeView, e) -> str:
        reason = self.check(v)  # attributes may come from a file: never emit what check refuses
        if reason:
            raise v.fail(reason)
        base = lookup("", self.base)
        _, act, attrs = self.split(v.node)
        dt = e.out_info(0).dtype
        i, x = e.tmp("i"), e.tmp("x")
        expr = _activation_expr(act, attrs, x, dt, v.label)

        def loop(y: str, count: str) -> str:
            return (f"for (std::int64_t {i} = 0; {i} < {count}; ++{i}) "
                    f"{{ const {dt.cpp} {x} = {y}[{i}]; {y}[{i}] = {expr}; }}")

        if self.base in ("Conv", "Gemm"):
            # with the bias, per image (Conv) or per block of rows (Gemm), right after its GEMM: at
            # batch 256 a second pass over the whole output would read it back from L3 or memory
            kw = {}
            if self.base == "Conv" and dt.cpp == "float":
                vec = conv_vector_activation(act, attrs)
                if vec is not None:
                    # tanh's temporaries for a whole tile of accumulators do not fit in the vector
                    # registers: it runs over each finished block of output channels instead
                    kw.update(act_vec=vec, act_vec_regs=act != "Tanh")
            expr_of = dense_epilogue_expr if self.base == "Gemm" else _activation_expr
            return base.emit(self._base_view(v), e,  # type: ignore[union-attr]
                             act=lambda y: expr_of(act, attrs, y, dt, v.label), **kw)
        code = base.emit(self._base_view(v), e)  # type: ignore[union-attr]
        return f"{code}\n{loop(e.out(), e.size_out())}"


@register
class FusedGemm(_FusedProduct):
    """Internal: Gemm (same inputs and attributes) followed by ``activation`` (``act_*`` attributes)."""

    op_type = "FusedGemm"
    base = "Gemm"


@register
class FusedConv(_FusedProduct):
    """Internal: Conv (same inputs and attributes) followed by ``activation`` (``act_*`` attributes)."""

    op_type = "FusedConv"
    base = "Conv"


# -- element-wise chains ----------------------------------------------------------------------

def fusable_elementwise(op_type: str, domain: str = "") -> bool:
    """True for the default-domain operators a FusedElementwise step may be."""
    if domain:
        return False
    op = lookup("", op_type)
    return isinstance(op, (_Unary, _Binary, _Variadic, Where, Clip)) or type(op) is Cast


_STRING_ATTRS = ("approximate", "direction")


def encode_steps(steps: list[dict[str, Any]]) -> str:
    return json.dumps(steps, sort_keys=True, separators=(",", ":"))


def decode_steps(v: NodeView) -> list[dict[str, Any]]:
    """The validated step list of a FusedElementwise node.

    Each step is ``{"op": type, "in": [refs], "attrs": {...}, "dtype": name, "opset": n}`` where a
    ref is ``["x", k]`` (node input k), ``["s", k]`` (an earlier step) or null (omitted input)."""
    try:
        steps = json.loads(v.attr("steps", ""))
    except (TypeError, ValueError) as e:
        raise v.fail(f"attribute 'steps' is not valid JSON: {e}") from None
    if not isinstance(steps, list) or not steps:
        raise v.fail("attribute 'steps' must be a non-empty list")
    n_in = len(v.node.inputs)
    for k, s in enumerate(steps):
        if not isinstance(s, dict) or not isinstance(s.get("op"), str) or not fusable_elementwise(s["op"]):
            raise v.fail(f"step {k} is not a fusable element-wise operator")
        refs = s.get("in")
        if not isinstance(refs, list) or not refs:
            raise v.fail(f"step {k} ({s['op']}) has no inputs")
        for r in refs:
            if r is None:
                continue
            if (not isinstance(r, list) or len(r) != 2 or r[0] not in ("x", "s") or isinstance(r[1], bool)
                    or not isinstance(r[1], int) or r[1] < 0 or r[1] >= (n_in if r[0] == "x" else k)):
                raise v.fail(f"step {k} ({s['op']}) has a bad input reference {r!r}")
        attrs = s.get("attrs", {})
        if not isinstance(attrs, dict) or not all(
                isinstance(a, str) and (isinstance(b, (int, float, str)) and not isinstance(b, bool))
                for a, b in attrs.items()):
            raise v.fail(f"step {k} ({s['op']}) has attributes that are not plain numbers or strings")
        for a, b in attrs.items():
            # only these are strings in ONNX's element-wise operators; every other value must be a
            # number (it is printed through cpp_literal)
            if isinstance(b, str) != (a in _STRING_ATTRS):
                raise v.fail(f"step {k} ({s['op']}) attribute {a!r} has the wrong kind")
        try:
            dtype_by_name(s.get("dtype", ""))
        except Exception:
            raise v.fail(f"step {k} ({s['op']}) has an unknown element type {s.get('dtype')!r}") from None
        if not isinstance(s.get("opset", 0), int):
            raise v.fail(f"step {k} ({s['op']}) has a bad opset")
    return steps


def _step_expr(s: dict[str, Any], args: list[str | None], in_dts: list[DType | None], opset: int) -> str:
    op_type = s["op"]
    attrs = s.get("attrs", {})
    op = lookup("", op_type)
    view = NodeView(Node(op_type, [], [], dict(attrs), opset=int(s.get("opset", opset))), [], [])
    dt = in_dts[0]
    if isinstance(op, _Unary):
        return op.expr(args[0], dt, view)
    if isinstance(op, Pow):
        return op.expr(args[0], args[1], dt, view, in_dts[1])
    if isinstance(op, _Binary):
        return op.expr(args[0], args[1], dt, view)
    if isinstance(op, _Variadic):
        return op.combine([a for a in args if a is not None], dt)
    if isinstance(op, Where):
        return f"({args[0]} ? {args[1]} : {args[2]})"
    if isinstance(op, Clip):
        r = args[0]
        lo = args[1] if len(args) > 1 else None
        hi = args[2] if len(args) > 2 else None
        if "min" in attrs:
            lo = _lit(float(attrs["min"]), dt)
        if "max" in attrs:
            hi = _lit(float(attrs["max"]), dt)
        if lo is not None:
            r = f"({r} < {lo} ? {lo} : {r})"
        if hi is not None:
            r = f"({r} > {hi} ? {hi} : {r})"
        return r
    return _cast_expr(args[0], dt, dtype_by_name(s["dtype"]))


@register
class FusedElementwise(Operator):
    """Internal: several element-wise operators (attribute ``steps``, JSON) computed in one loop."""

    op_type = "FusedElementwise"
    domain = "sofie"
    internal = True
    #: output 0 may share the buffer of a same-shape input that dies here: each element is read
    #: before it is written, and only at its own index
    inplace_ok = True

    def check(self, v: NodeView) -> str | None:
        try:
            steps = decode_steps(v)
        except Exception as e:
            return str(e)
        if any(i is None for i in v.inputs):
            return "an input is missing"
        for k, s in enumerate(steps):
            if s["op"] == "Gelu" and s.get("attrs", {}).get("approximate", "none") not in ("none", "tanh"):
                return f"step {k}: Gelu approximate is not defined by ONNX"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        steps = decode_steps(v)
        shape = broadcast_shapes(*[i.shape for i in v.inputs if i is not None], where=f"{v.label}: ")
        return [OutInfo(dtype_by_name(steps[-1]["dtype"]), shape)]

    def emit(self, v: NodeView, e) -> str:
        reason = self.check(v)
        if reason:
            raise v.fail(reason)
        steps = decode_steps(v)
        ins = list(range(len(v.node.inputs)))
        in_dts = [v.input(i).dtype for i in ins]

        def expr(args: list[str]) -> str:
            # a GNU statement expression: every step's value is a named local, so builders that
            # use their operand several times (LeakyRelu, Elu) do not recompute it
            lines = []
            xs = []
            for k, a in enumerate(args):
                xv = f"x{k}_"
                lines.append(f"const {in_dts[k].cpp} {xv} = {a};")
                xs.append(xv)
            dts: list[DType] = []
            for k, s in enumerate(steps):
                refs = s["in"]
                vals = [None if r is None else (xs[r[1]] if r[0] == "x" else f"s{r[1]}_") for r in refs]
                vdts = [None if r is None else (in_dts[r[1]] if r[0] == "x" else dts[r[1]]) for r in refs]
                dt = dtype_by_name(s["dtype"])
                lines.append(f"const {dt.cpp} s{k}_ = {_step_expr(s, vals, vdts, v.opset)};")
                dts.append(dt)
            return "({ " + " ".join(lines) + f" s{len(steps) - 1}_; }})"

        code = e.broadcast(0, ins, expr)
        if steps[-1]["dtype"] != "float32":
            return code
        # the interleave of the chain's slowest step (a sigmoid, erf, exp...): its dependence chain
        # is the loop's, the cheap steps around it do not change that
        return interleaved(code, max(INTERLEAVE.get(s["op"], 0) for s in steps))



#: rows of x @ W computed before their bias and activation are applied (an output block of
#: 64 rows x a few hundred columns stays in L2)
ROW_BLOCK = 64


@register
class FusedMatMul(_FusedProduct):
    """Internal: MatMul(A, B) + an optional bias vector (input 2, along the last axis) followed by an
    optional ``activation``: the 3-D ``x @ W + b`` of transformer layers, which Gemm cannot take."""

    op_type = "FusedMatMul"
    base = "MatMul"

    def _base_view(self, v: NodeView) -> NodeView:
        attrs, _, _ = self.split(v.node)
        node = Node("MatMul", v.node.inputs[:2], v.node.outputs, attrs, v.node.name, "", v.node.opset)
        return NodeView(node, v.inputs[:2], v.consts[:2], v.outputs)

    def check(self, v: NodeView) -> str | None:
        _, act, attrs = self.split(v.node)
        if len(v.inputs) < 2 or v.inputs[0] is None or v.inputs[1] is None:
            return "inputs A and B are required"
        has_bias = len(v.inputs) > 2 and v.inputs[2] is not None
        if act or not has_bias:
            reason = activation_check(act, attrs, v.inputs[0].dtype)
            if reason:
                return reason
        reason = lookup("", "MatMul").check(self._base_view(v))  # type: ignore[union-attr]
        if reason or not has_bias:
            return reason
        out = lookup("", "MatMul").infer(self._base_view(v))[0]  # type: ignore[union-attr]
        b = v.inputs[2]
        if len(out.shape) < 1 or tuple(b.shape) != (out.shape[-1],) or b.dtype != out.dtype:
            return f"bias {b} must be a vector of the {out.shape[-1] if out.shape else '?'} output columns"
        return None

    def emit(self, v: NodeView, e) -> str:
        reason = self.check(v)
        if reason:
            raise v.fail(reason)
        matmul = lookup("", "MatMul")
        base = self._base_view(v)
        _, act, attrs = self.split(v.node)
        out = e.out_info(0)
        dt = out.dtype
        n = out.shape[-1]
        r, j, x, y = e.tmp("r"), e.tmp("j"), e.tmp("x"), e.out()
        has_bias = len(v.inputs) > 2 and v.inputs[2] is not None
        val = f"{y}[{r} * {e.dim(n)} + {j}]"
        load = f"{val} + {e.inp(2)}[{j}]" if has_bias else val
        expr = _activation_expr(act, attrs, x, dt, v.label) if act else x

        def epilogue(first: str, last: str) -> str:
            # SOFIE_RT_NO_UNROLL: a row of constant length fully unrolled costs the JIT seconds
            return (f"for (std::int64_t {r} = {first}; {r} < {last}; ++{r}) {{\n"
                    f"   SOFIE_RT_NO_UNROLL\n"
                    f"   for (std::int64_t {j} = 0; {j} < {e.dim(n)}; ++{j}) "
                    f"{{ const {dt.cpp} {x} = {load}; {val} = {expr}; }}\n}}")

        a2, b2, _, m, _, k, _ = matmul._shapes(base)  # type: ignore[union-attr]
        if len(v.input(0).shape) < 2 or len(v.input(1).shape) != 2 or b2[-2] != k:
            code = matmul.emit(base, e)  # type: ignore[union-attr]
            return f"{code}\n{epilogue('0', e.dim(numel(out.shape[:-1])))}"
        # one weight matrix for every row: the product runs in blocks of rows, each followed by its
        # bias and activation while the block is still in cache (at batch 256 the whole output of a
        # transformer MLP layer is megabytes, which a second pass would read back from memory)
        rows = numel(a2[:-2]) * m
        if dt.cpp == "float":
            # the runtime kernel adds the bias in its accumulators and calls the activation per block
            return dense_call(e, dt, rows, n, k, e.inp(0), e.inp(1), e.inp(2) if has_bias else None, y,
                              (lambda z: dense_epilogue_expr(act, attrs, z, dt, v.label)) if act else None,
                              panels_input(v, e))
        r0, rb = e.tmp("r0"), e.tmp("rb")
        one, zero = e.lit(1, dt), e.lit(0, dt)
        return (f"for (std::int64_t {r0} = 0; {r0} < {e.dim(rows)}; {r0} += {ROW_BLOCK}) {{\n"
                f"   const std::int64_t {rb} = std::min<std::int64_t>({ROW_BLOCK}, {e.dim(rows)} - {r0});\n"
                f"   sofie_rt::gemm<{dt.cpp}>(false, false, {rb}, {e.dim(n)}, {e.dim(k)}, {one}, "
                f"{e.inp(0)} + {r0} * {e.dim(k)}, {e.dim(k)}, {e.inp(1)}, {e.dim(n)}, {zero}, "
                f"{y} + {r0} * {e.dim(n)}, {e.dim(n)});\n"
                f"   {epilogue(r0, f'{r0} + {rb}')}\n}}")
