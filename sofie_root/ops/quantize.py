"""Quantization operators: QuantizeLinear, DequantizeLinear (per-tensor, per-axis and blocked
scales and zero points), DynamicQuantizeLinear, and the integer products MatMulInteger,
ConvInteger, QLinearMatMul and QLinearConv.

Quantized element types are the 8- and 16-bit integers (and int32 as a DequantizeLinear input);
float8, int4/uint4, int2/uint2 and float4 are outside the supported element types. Rounding is
half to even (``std::nearbyint`` in the default rounding mode) and quantized results saturate.

The integer products subtract the zero points into int32 workspaces and multiply with the int32
GEMM of the runtime; convolutions reuse the geometry and im2col of :mod:`.conv`, matrix products
the shape rules of :class:`.linalg.MatMul`. The QLinear* requantization multiplies the int32
accumulator by ``a_scale * b_scale / y_scale`` (computed in float, as the scales' type) in
double, which is what the ONNX reference does.
"""

from __future__ import annotations

from ..ir.dims import Dim, DimLike, broadcast_shapes, numel
from ..ir.dtypes import BY_NAME, BY_ONNX, FLOAT32, INT32, UINT8, DType
from ..ir.graph import TensorInfo
from .base import NodeView, Operator, OutInfo, normalize_axis, register
from .conv import _check_common, _conv_geom, _Geom, _im2col, _kernel, _prod, _spatial
from .linalg import MatMul

# saturation ranges of the supported quantized types
QRANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}
SCALE_TYPES = ("float32", "float64")
# ONNX element types that exist but that sofie_root does not support (for clear reasons)
_OTHER_TYPES = {10: "float16", 16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2",
                20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1", 24: "float8e8m0",
                25: "uint2", 26: "int2"}


def _type_name(onnx_type: int) -> str:
    if onnx_type in BY_ONNX:
        return BY_ONNX[onnx_type].name
    return _OTHER_TYPES.get(onnx_type, f"elem_type {onnx_type}")


def _is_one(d: DimLike) -> bool:
    return isinstance(d, int) and d == 1


def _differs(a: DimLike, b: DimLike) -> bool:
    """Not provably equal: a symbolic dimension must be the same symbol (a static length read at a
    symbolic extent could run past the end at run time)."""
    return a != b


# -- scale / zero-point layouts ---------------------------------------------------------------

def _layout(v: NodeView, x: TensorInfo, s: TensorInfo, z: TensorInfo | None) -> tuple[str, int, int]:
    """(mode, axis, block_size) of a QuantizeLinear/DequantizeLinear scale: tensor, axis or block."""
    block = int(v.attr("block_size", 0) or 0)
    if block < 0:
        raise v.fail(f"block_size={block} must not be negative")
    if z is not None and tuple(z.shape) != tuple(s.shape):
        raise v.fail(f"the zero point {z} and the scale {s} must have the same shape")
    if _is_one(s.size) and s.rank <= 1:
        return "tensor", 0, 0
    if x.rank == 0:
        raise v.fail(f"a scalar input needs a scalar scale, got {s}")
    axis = normalize_axis(int(v.attr("axis", 1)), x.rank, v)
    a = x.shape[axis]
    if not block:
        if s.rank != 1:
            raise v.fail(f"the scale {s} must be a scalar or a 1-D tensor (per-axis) without block_size")
        if _differs(s.shape[0], a):
            raise v.fail(f"the per-axis scale {s} must have {a} elements (axis {axis} of {x})")
        return "axis", axis, 0
    if s.rank != x.rank:
        raise v.fail(f"blocked quantization needs a scale of the input's rank, got {s} for {x}")
    for j in range(x.rank):
        if j != axis and _differs(s.shape[j], x.shape[j]):
            raise v.fail(f"the blocked scale {s} must match the input {x} except along axis {axis}")
    nb = s.shape[axis]
    if not (isinstance(a, int) and isinstance(nb, int)):
        raise v.fail(f"blocked quantization needs a static length along axis {axis} ({x}, scale {s})")
    if nb * block < a:
        raise v.fail(f"the blocked scale {s} has {nb} blocks of {block} along axis {axis}, "
                     f"too few for {a} elements")
    return "block", axis, block


def _param_loop(e, shape, layout: tuple[str, int, int], s_shape, body) -> str:
    """A loop over every element of ``shape``; ``body(i, si)`` gets the flat index of the element
    and the flat index of its scale / zero point (as C++ expressions)."""
    mode, axis, block = layout
    if mode == "tensor":
        i = e.tmp("i")
        return f"for (std::int64_t {i} = 0; {i} < {e.dim(numel(shape))}; ++{i}) {{\n{body(i, '0')}\n}}"
    outer, a, inner = numel(shape[:axis]), shape[axis], numel(shape[axis + 1:])
    o, ai, j, i = e.tmp("o"), e.tmp("a"), e.tmp("j"), e.tmp("i")
    lines = [f"std::int64_t {i} = 0;",
             f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o}) {{",
             f"for (std::int64_t {ai} = 0; {ai} < {e.dim(a)}; ++{ai}) {{"]
    if mode == "axis":
        lines.append(f"for (std::int64_t {j} = 0; {j} < {e.dim(inner)}; ++{j}, ++{i}) {{")
        lines.append(body(i, ai))
    else:
        si = e.tmp("si")
        lines.append(f"const std::int64_t {si} = ({o} * {e.dim(s_shape[axis])} + {ai} / {block}) * {e.dim(inner)};")
        lines.append(f"for (std::int64_t {j} = 0; {j} < {e.dim(inner)}; ++{j}, ++{i}) {{")
        lines.append(body(i, f"{si} + {j}"))
    lines.append("}}}")
    return "\n".join(lines)


def _saturate(val: str, ftype: str, out: DType) -> str:
    """C++ expression: the (already rounded) floating value ``val`` clamped into ``out``'s range,
    NaN mapping to the minimum (as the ONNX reference's int32 conversion does)."""
    lo, hi = QRANGES[out.name]
    # v > lo ? v : lo is lo for NaN and one vmaxps, then one vminps: the explicit NaN select on
    # top of std::max/std::min cost a compare, and clang moved the select after the narrowing
    # (two pack chains and a byte blend per vector): QuantizeLinear [256, 128] 9.8 -> 7.0 us
    lo_, hi_ = f"{ftype}({lo})", f"{ftype}({hi})"
    low = f"({val} > {lo_} ? {val} : {lo_})"
    return f"{out.cpp}({low} < {hi_} ? {low} : {hi_})"


# -- QuantizeLinear / DequantizeLinear --------------------------------------------------------

@register
class QuantizeLinear(Operator):
    """ONNX QuantizeLinear (opsets 10-25): y = saturate(round_half_even(x / y_scale) + y_zero_point),
    per-tensor, per-axis or blocked scales; int8, uint8, int16 and uint16 outputs (zero point type
    or output_dtype); x float32, float64 or int32. Float8/int4/float4 outputs are not supported."""

    op_type = "QuantizeLinear"

    def _out_dtype(self, v: NodeView) -> tuple[DType | None, str | None]:
        od = int(v.attr("output_dtype", 0) or 0)
        if v.has_input(2):
            zt = v.input(2).dtype
            if od and od != zt.onnx:
                return None, (f"output_dtype={_type_name(od)} differs from the zero point's type "
                              f"{zt.name}")
            name = zt.name
        elif od:
            name = _type_name(od)
        else:
            name = "uint8"
        if name not in QRANGES:
            return None, (f"quantization to {name} is not supported (supported: "
                          f"{', '.join(QRANGES)}; float8/int4/uint4/int2/uint2/float4 are outside "
                          "sofie_root's element types)")
        return BY_NAME[name], None

    def _ftype(self, v: NodeView) -> DType:
        prec = int(v.attr("precision", 0) or 0)
        if prec:
            return BY_ONNX[prec]
        x, s = v.input(0), v.input(1)
        if x.dtype.name == "float32" and s.dtype.name == "float32":
            return FLOAT32
        return BY_NAME["float64"]  # numpy's promotion of x / y_scale (int32 / float32 included)

    def check(self, v: NodeView) -> str | None:
        x, s = v.input(0), v.input(1)
        if x.dtype.name not in ("float32", "float64", "int32"):
            return f"input element type {x.dtype.name} is not supported (float32, float64, int32)"
        if s.dtype.name not in SCALE_TYPES:
            return f"scale element type {s.dtype.name} is not supported (float32, float64)"
        prec = int(v.attr("precision", 0) or 0)
        if prec and prec not in (FLOAT32.onnx, BY_NAME["float64"].onnx):
            return f"precision={_type_name(prec)} is not supported (float32 or float64)"
        _, reason = self._out_dtype(v)
        return reason

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        _layout(v, x, v.input(1), v.input(2) if v.has_input(2) else None)
        out, _ = self._out_dtype(v)
        assert out is not None
        return [OutInfo(out, x.shape)]

    def emit(self, v: NodeView, e) -> str:
        x, s = v.input(0), v.input(1)
        z = v.input(2) if v.has_input(2) else None
        lay = _layout(v, x, s, z)
        out, _ = self._out_dtype(v)
        f = self._ftype(v).cpp
        xs, ss, ys = e.inp(0), e.inp(1), e.out()
        zs = e.inp(2) if z is not None else None

        def body(i: str, si: str) -> str:
            zp = f" + {f}({zs}[{si}])" if zs else ""
            return (f"const {f} q_ = std::nearbyint({f}({xs}[{i}]) / {f}({ss}[{si}])){zp};\n"
                    f"{ys}[{i}] = {_saturate('q_', f, out)};")
        return _param_loop(e, x.shape, lay, s.shape, body)


@register
class DequantizeLinear(Operator):
    """ONNX DequantizeLinear (opsets 10-25): y = (x - x_zero_point) * x_scale, per-tensor, per-axis
    or blocked; x int8, uint8, int16, uint16 or int32; output the scale's type or output_dtype."""

    op_type = "DequantizeLinear"

    def _out_dtype(self, v: NodeView) -> DType:
        od = int(v.attr("output_dtype", 0) or 0)
        return BY_ONNX[od] if od else v.input(1).dtype

    def check(self, v: NodeView) -> str | None:
        x, s = v.input(0), v.input(1)
        if x.dtype.name not in (*QRANGES, "int32"):
            return (f"input element type {x.dtype.name} is not supported (int8, uint8, int16, uint16, "
                    "int32; float8/int4/uint4/int2/uint2/float4 are outside sofie_root's element types)")
        if s.dtype.name not in SCALE_TYPES:
            return f"scale element type {s.dtype.name} is not supported (float32, float64)"
        if v.has_input(2) and v.input(2).dtype != x.dtype:
            return f"the zero point ({v.input(2).dtype.name}) and x ({x.dtype.name}) have different types"
        od = int(v.attr("output_dtype", 0) or 0)
        if od and _type_name(od) not in SCALE_TYPES:
            return f"output_dtype={_type_name(od)} is not supported (float32, float64)"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        _layout(v, x, v.input(1), v.input(2) if v.has_input(2) else None)
        return [OutInfo(self._out_dtype(v), x.shape)]

    def emit(self, v: NodeView, e) -> str:
        x, s = v.input(0), v.input(1)
        z = v.input(2) if v.has_input(2) else None
        lay = _layout(v, x, s, z)
        f = s.dtype.cpp
        o = self._out_dtype(v).cpp
        xs, ss, ys = e.inp(0), e.inp(1), e.out()
        zs = e.inp(2) if z is not None else None

        def body(i: str, si: str) -> str:
            diff = (f"{f}(std::int64_t({xs}[{i}]) - std::int64_t({zs}[{si}]))" if zs
                    else f"{f}({xs}[{i}])")
            return f"{ys}[{i}] = {o}({diff} * {ss}[{si}]);"
        return _param_loop(e, x.shape, lay, s.shape, body)


@register
class DynamicQuantizeLinear(Operator):
    """ONNX DynamicQuantizeLinear: uint8 quantization of a float32 tensor with the scale and zero
    point computed from its range (which always includes 0)."""

    op_type = "DynamicQuantizeLinear"
    dtypes = ("float32",)

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        return [OutInfo(UINT8, x.shape), OutInfo(FLOAT32, ()), OutInfo(UINT8, ())]

    def emit(self, v: NodeView, e) -> str:
        x = e.inp(0)
        n = e.size_in(0)
        outs = v.node.outputs
        # the range in vector registers (sofie_rt::range_with_zero): a select chain over the
        # elements would be a serial dependence, 0.1x ONNX Runtime at [256, 128]
        lines = ["float mn_, mx_;",
                 f"sofie_rt::range_with_zero({x}, {n}, mn_, mx_);",
                 "const float sc_ = (mx_ == mn_ ? 1.f : mx_ - mn_) / 255.f;",
                 "const float zp_ = std::nearbyint(std::min(255.f, std::max(0.f, 0.f - mn_ / sc_)));"]
        if outs[0]:
            j = e.tmp("i")
            lines.append(f"for (std::int64_t {j} = 0; {j} < {n}; ++{j}) {{")
            lines.append(f"   const float q_ = std::nearbyint({x}[{j}] / sc_) + zp_;")
            lines.append(f"   {e.out(0)}[{j}] = {_saturate('q_', 'float', UINT8)};")
            lines.append("}")
        if len(outs) > 1 and outs[1]:
            lines.append(f"{e.out(1)}[0] = sc_;")
        if len(outs) > 2 and outs[2]:
            lines.append(f"{e.out(2)}[0] = std::uint8_t(zp_);")
        return "\n".join(lines)


# -- integer matrix products ------------------------------------------------------------------

def _zp_shape(v: NodeView, x: TensorInfo, z: TensorInfo, per: str, what: str) -> tuple[DimLike, ...]:
    """The shape a zero point (or scale) broadcasts as against ``x`` (a matmul operand): scalar,
    per row ('row': a vector of x's rows) or per column ('col': a vector of x's columns), or an
    N-D tensor broadcasting numpy-style."""
    if _is_one(z.size):
        return ()
    if z.rank == 1:
        if x.rank < 2:
            raise v.fail(f"{what} {z} must be a scalar for a 1-D operand {x}")
        if per == "row":
            if _differs(z.shape[0], x.shape[-2]):
                raise v.fail(f"{what} {z} must have one value per row of {x}")
            return (z.shape[0], 1)
        if _differs(z.shape[0], x.shape[-1]):
            raise v.fail(f"{what} {z} must have one value per column of {x}")
        return (z.shape[0],)
    shape = tuple(z.shape)
    if broadcast_shapes(x.shape, shape, where=f"{v.label}: {what} ") != tuple(x.shape):
        raise v.fail(f"{what} {z} does not broadcast to {x}")
    return shape


def _shift(e, v: NodeView, src: int, zp: int | None, dst: str, per: str, what: str) -> str:
    """dst (int32) = input ``src`` minus its zero point input ``zp`` (broadcast)."""
    x = v.input(src)
    if zp is None or not v.has_input(zp):
        i = e.tmp("i")
        return (f"for (std::int64_t {i} = 0; {i} < {e.size_in(src)}; ++{i}) "
                f"{dst}[{i}] = std::int32_t({e.inp(src)}[{i}]);")
    zshape = _zp_shape(v, x, v.input(zp), per, what)
    if not zshape:
        i = e.tmp("i")
        return (f"for (std::int64_t {i} = 0; {i} < {e.size_in(src)}; ++{i}) "
                f"{dst}[{i}] = std::int32_t({e.inp(src)}[{i}]) - std::int32_t({e.inp(zp)}[0]);")
    return e.broadcast_raw(dst, x.shape, [e.inp(src), e.inp(zp)], [x.shape, zshape],
                           lambda a: f"std::int32_t({a[0]}) - std::int32_t({a[1]})")


def _mm_shapes(v: NodeView, ai: int, bi: int):
    """MatMul's shape rules (1-D promotion, batch broadcasting) for inputs ``ai`` @ ``bi``, with
    symbolic inner and batch dimensions required to be provably equal (no run-time overreads)."""
    shapes = MatMul._shapes(NodeView(v.node, [v.input(ai), v.input(bi)], []))
    a2, b2 = shapes[0], shapes[1]
    if _differs(a2[-1], b2[-2]):
        raise v.fail(f"inner dimensions differ: {v.input(ai)} @ {v.input(bi)}")
    ab, bb = a2[:-2], b2[:-2]
    for da, db in zip(ab[::-1], bb[::-1]):
        if _differs(da, db) and not (_is_one(da) or _is_one(db)):
            raise v.fail(f"batch dimensions of {v.input(ai)} and {v.input(bi)} must be equal or 1")
    return shapes


def _int_matmul(e, a: str, b: str, y: str, shapes) -> str:
    """Batched int32 GEMM y = a @ b (MatMul's loop, on given pointers)."""
    a2, b2, batch, m, n, k, _ = shapes
    one, zero = "std::int32_t(1)", "std::int32_t(0)"
    a_batch, b_batch = a2[:-2], b2[:-2]
    if not b_batch or all(_is_one(d) for d in b_batch):
        rows = numel(a_batch) * m
        return (f"sofie_rt::gemm<std::int32_t>(false, false, {e.dim(rows)}, {e.dim(n)}, {e.dim(k)}, {one}, "
                f"{a}, {e.dim(k)}, {b}, {e.dim(n)}, {zero}, {y}, {e.dim(n)});")
    rank = len(batch)
    a_al = [1] * (rank - len(a_batch)) + list(a_batch)
    b_al = [1] * (rank - len(b_batch)) + list(b_batch)
    i, rem, ao, bo = e.tmp("b"), e.tmp("rem"), e.tmp("ao"), e.tmp("bo")
    lines = [f"for (std::int64_t {i} = 0; {i} < {e.dim(numel(batch))}; ++{i}) {{",
             f"std::int64_t {rem} = {i}, {ao} = 0, {bo} = 0;"]
    a_stride: DimLike = m * k
    b_stride: DimLike = k * n
    for ax in reversed(range(rank)):
        d = batch[ax]
        idx = e.tmp("idx")
        lines.append(f"{{ const std::int64_t {idx} = {rem} % {e.dim(d)}; {rem} /= {e.dim(d)};")
        if not _is_one(a_al[ax]):
            lines.append(f"  {ao} += {idx} * {e.dim(a_stride)};")
            a_stride = a_stride * a_al[ax]
        if not _is_one(b_al[ax]):
            lines.append(f"  {bo} += {idx} * {e.dim(b_stride)};")
            b_stride = b_stride * b_al[ax]
        lines.append(f"  (void){idx}; }}")
    lines.append(f"sofie_rt::gemm<std::int32_t>(false, false, {e.dim(m)}, {e.dim(n)}, {e.dim(k)}, {one}, "
                 f"{a} + {ao}, {e.dim(k)}, {b} + {bo}, {e.dim(n)}, {zero}, {y} + {i} * {e.dim(m * n)}, {e.dim(n)});")
    lines.append("}")
    return "\n".join(lines)


_INT8S = ("int8", "uint8")


def _check_zp(v: NodeView, data: int, zp: int, what: str) -> str | None:
    if v.has_input(zp) and v.input(zp).dtype != v.input(data).dtype:
        return f"{what} ({v.input(zp).dtype.name}) must have the type of its input ({v.input(data).dtype.name})"
    return None


@register
class MatMulInteger(Operator):
    """ONNX MatMulInteger: int32 (A - a_zero_point) @ (B - b_zero_point) for int8/uint8 inputs;
    zero points per tensor, per row of A / per column of B, batched and broadcasting like MatMul."""

    op_type = "MatMulInteger"

    def check(self, v: NodeView) -> str | None:
        for k in (0, 1):
            if v.input(k).dtype.name not in _INT8S:
                return f"input {k} element type {v.input(k).dtype.name} is not supported (int8, uint8)"
        return _check_zp(v, 0, 2, "a_zero_point") or _check_zp(v, 1, 3, "b_zero_point")

    def infer(self, v: NodeView) -> list[OutInfo]:
        *_, out = _mm_shapes(v, 0, 1)
        if v.has_input(2):
            _zp_shape(v, v.input(0), v.input(2), "row", "a_zero_point")
        if v.has_input(3):
            _zp_shape(v, v.input(1), v.input(3), "col", "b_zero_point")
        return [OutInfo(INT32, out)]

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        return [(INT32, v.input(0).size), (INT32, v.input(1).size)]

    def emit(self, v: NodeView, e) -> str:
        return "\n".join([_shift(e, v, 0, 2, e.ws(0), "row", "a_zero_point"),
                          _shift(e, v, 1, 3, e.ws(1), "col", "b_zero_point"),
                          _int_matmul(e, e.ws(0), e.ws(1), e.out(), _mm_shapes(v, 0, 1))])


def _scalar(v: NodeView, i: int, what: str) -> None:
    if not _is_one(v.input(i).size):
        raise v.fail(f"{what} {v.input(i)} must be a scalar (one element)")


@register
class QLinearMatMul(Operator):
    """ONNX QLinearMatMul (opsets 10, 21): quantized MatMul of int8/uint8 tensors with float32 or
    float64 scales; a per tensor or per row, b per tensor or per column, y per tensor."""

    op_type = "QLinearMatMul"

    def check(self, v: NodeView) -> str | None:
        for k in (0, 3):
            if v.input(k).dtype.name not in _INT8S:
                return f"input {k} element type {v.input(k).dtype.name} is not supported (int8, uint8)"
        for k in (1, 4, 6):
            if v.input(k).dtype.name not in SCALE_TYPES:
                return f"scale input {k} element type {v.input(k).dtype.name} is not supported (float32, float64)"
        if v.input(7).dtype.name not in _INT8S:
            return f"y_zero_point element type {v.input(7).dtype.name} is not supported (int8, uint8)"
        return _check_zp(v, 0, 2, "a_zero_point") or _check_zp(v, 3, 5, "b_zero_point")

    def _params(self, v: NodeView):
        a, b = v.input(0), v.input(3)
        sa = _zp_shape(v, a, v.input(1), "row", "a_scale")
        sb = _zp_shape(v, b, v.input(4), "col", "b_scale")
        for k, what in ((2, "a_zero_point"), (5, "b_zero_point")):
            if tuple(v.input(k).shape) != tuple(v.input(k - 1).shape) and not (
                    _is_one(v.input(k).size) and _is_one(v.input(k - 1).size)):
                raise v.fail(f"{what} {v.input(k)} must have the shape of its scale {v.input(k - 1)}")
        _scalar(v, 6, "y_scale")
        _scalar(v, 7, "y_zero_point")
        return sa, sb

    def infer(self, v: NodeView) -> list[OutInfo]:
        *_, out = _mm_shapes(v, 0, 3)
        self._params(v)
        return [OutInfo(v.input(7).dtype, out)]

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        *_, out = _mm_shapes(v, 0, 3)
        return [(INT32, v.input(0).size), (INT32, v.input(3).size), (INT32, numel(out))]

    def emit(self, v: NodeView, e) -> str:
        shapes = _mm_shapes(v, 0, 3)
        _, _, batch, m, n, _, _ = shapes
        sa, sb = self._params(v)
        ydt = v.input(7).dtype
        fa, fb, fy = (v.input(i).dtype.cpp for i in (1, 4, 6))
        lines = [_shift(e, v, 0, 2, e.ws(0), "row", "a_zero_point"),
                 _shift(e, v, 3, 5, e.ws(1), "col", "b_zero_point"),
                 _int_matmul(e, e.ws(0), e.ws(1), e.ws(2), shapes)]
        r, c, p = e.tmp("r"), e.tmp("c"), e.tmp("p")
        rows = numel(batch) * m
        ra = f"{r} % {e.dim(m)}" if sa else "0"
        cb = c if sb else "0"
        lines += [f"std::int64_t {p} = 0;",
                  f"for (std::int64_t {r} = 0; {r} < {e.dim(rows)}; ++{r}) {{",
                  f"for (std::int64_t {c} = 0; {c} < {e.dim(n)}; ++{c}, ++{p}) {{",
                  # the combined scale in the scales' type, the product in double (as the reference)
                  f"const auto ms_ = {fa}({e.inp(1)}[{ra}]) * {fb}({e.inp(4)}[{cb}]) / {fy}({e.inp(6)}[0]);",
                  f"const double q_ = std::nearbyint(double({e.ws(2)}[{p}]) * double(ms_)) + double({e.inp(7)}[0]);",
                  f"{e.out()}[{p}] = {_saturate('q_', 'double', ydt)};",
                  "}}"]
        return "\n".join(lines)


# -- integer convolutions ---------------------------------------------------------------------

def _qconv_geom(v: NodeView, xi: int, wi: int) -> tuple[_Geom, int]:
    """Conv's geometry (groups, pads, strides, dilations, auto_pad) for input ``xi`` and weight ``wi``."""
    x, w = v.input(xi), v.input(wi)
    inp = _spatial(v, x.shape)
    if w.rank != x.rank:
        raise v.fail(f"weight {w} must have the input's rank {x.rank} ([M, C/group, kernel...])")
    group = int(v.attr("group", 1))
    c, m, cg = int(x.shape[1]), int(w.shape[0]), int(w.shape[1])
    if group < 1 or c % group or m % group:
        raise v.fail(f"group={group} must divide the input channels ({c}) and the output channels ({m})")
    if cg * group != c:
        raise v.fail(f"the input has {c} channels but the weight {w} expects {cg} x group {group}")
    k = _kernel(v, w.shape[2:], len(inp))
    return _conv_geom(v, inp, k), group


def _check_qconv(v: NodeView, xi: int, wi: int) -> str | None:
    for k in (xi, wi):
        if v.input(k).dtype.name not in _INT8S:
            return f"input {k} element type {v.input(k).dtype.name} is not supported (int8, uint8)"
    if any(isinstance(d, Dim) for d in v.input(wi).shape):
        return f"the weight shape {v.input(wi)} must be known at compile time"
    return _check_common(v)


def _pointwise(g: _Geom) -> bool:
    return all(k == 1 for k in g.k) and all(s == 1 for s in g.s) and not any(g.pb) and not any(g.pe)


def _per_channel(v: NodeView, i: int, m: int, what: str) -> bool:
    """Whether input ``i`` is per output channel (M values) rather than per tensor."""
    t = v.input(i)
    if _is_one(t.size):
        return False
    if t.rank != 1 or _differs(t.shape[0], m):
        raise v.fail(f"{what} {t} must be a scalar or have one value per output channel ({m})")
    return True


def _conv_workspace(v: NodeView, xi: int, wi: int, acc: bool) -> list[tuple[DType, DimLike]]:
    g, _ = _qconv_geom(v, xi, wi)
    x, w = v.input(xi), v.input(wi)
    ws: list[tuple[DType, DimLike]] = [(INT32, int(x.shape[1]) * _prod(g.inp)), (INT32, w.size)]
    ws.append((INT32, 1 if _pointwise(g) else int(w.shape[1]) * _prod(g.k) * _prod(g.out)))
    if acc:
        ws.append((INT32, int(w.shape[0]) * _prod(g.out)))
    return ws


def _conv_code(e, v: NodeView, xi: int, xz: int | None, wi: int, wz: int | None, acc: str | None,
               after_image) -> str:
    """int32 convolution of input ``xi`` minus its zero point with weight ``wi`` minus its zero point
    (per tensor or per output channel), image by image: into ``acc`` (one image of [M, out]) and
    then ``after_image(n)`` if given, else straight into the output."""
    g, group = _qconv_geom(v, xi, wi)
    x, w = v.input(xi), v.input(wi)
    c, m, cg = int(x.shape[1]), int(w.shape[0]), int(w.shape[1])
    mg, kk, p, isz = m // group, _prod(g.k), _prod(g.out), _prod(g.inp)
    xs, ws, col = e.ws(0), e.ws(1), e.ws(2)
    lines = []
    # weights minus zero point (per tensor or per output channel)
    i = e.tmp("i")
    if wz is not None and v.has_input(wz):
        per = _per_channel(v, wz, m, "w_zero_point")
        zi = f"{i} / {cg * kk}" if per else "0"
        lines.append(f"for (std::int64_t {i} = 0; {i} < {m * cg * kk}; ++{i}) "
                     f"{ws}[{i}] = std::int32_t({e.inp(wi)}[{i}]) - std::int32_t({e.inp(wz)}[{zi}]);")
    else:
        lines.append(f"for (std::int64_t {i} = 0; {i} < {m * cg * kk}; ++{i}) {ws}[{i}] = std::int32_t({e.inp(wi)}[{i}]);")
    n, gi, j = e.tmp("n"), e.tmp("g"), e.tmp("j")
    lines.append(f"for (std::int64_t {n} = 0; {n} < {e.dim(x.shape[0])}; ++{n}) {{")
    xoff = f"{n} * std::int64_t({c * isz})"
    if xz is not None and v.has_input(xz):
        _scalar(v, xz, "x_zero_point")
        zx = f" - std::int32_t({e.inp(xz)}[0])"
    else:
        zx = ""
    lines.append(f"for (std::int64_t {j} = 0; {j} < {c * isz}; ++{j}) "
                 f"{xs}[{j}] = std::int32_t({e.inp(xi)}[{xoff} + {j}]){zx};")
    lines.append(f"for (std::int64_t {gi} = 0; {gi} < {group}; ++{gi}) {{")
    xg, yg, cp = e.tmp("xg"), e.tmp("yg"), e.tmp("col")
    lines.append(f"const std::int32_t *{xg} = {xs} + {gi} * std::int64_t({cg * isz});")
    if acc is not None:
        lines.append(f"std::int32_t *{yg} = {acc} + {gi} * std::int64_t({mg * p});")
    else:
        lines.append(f"std::int32_t *{yg} = {e.out()} + ({n} * {m} + {gi} * {mg}) * std::int64_t({p});")
    if _pointwise(g):
        lines.append(f"const std::int32_t *{cp} = {xg};")
    else:
        lines.append(f"std::int32_t *{cp} = {col};")
        lines.extend(_im2col(e, xg, cp, cg, g, "std::int32_t"))
    lines.append(f"sofie_rt::gemm<std::int32_t>(false, false, {mg}, {p}, {cg * kk}, std::int32_t(1), "
                 f"{ws} + {gi} * std::int64_t({mg * cg * kk}), {cg * kk}, {cp}, {p}, std::int32_t(0), {yg}, {p});")
    lines.append("}")
    if after_image is not None:
        lines.append(after_image(n))
    lines.append("}")
    return "\n".join(lines)


@register
class ConvInteger(Operator):
    """ONNX ConvInteger: int32 convolution of (x - x_zero_point) and (w - w_zero_point) for int8/uint8
    inputs, w_zero_point per tensor or per output channel; N-D, groups, pads, strides, dilations."""

    op_type = "ConvInteger"

    def check(self, v: NodeView) -> str | None:
        return _check_qconv(v, 0, 1) or _check_zp(v, 0, 2, "x_zero_point") or _check_zp(v, 1, 3, "w_zero_point")

    def infer(self, v: NodeView) -> list[OutInfo]:
        g, _ = _qconv_geom(v, 0, 1)
        if v.has_input(2):
            _scalar(v, 2, "x_zero_point")
        if v.has_input(3):
            _per_channel(v, 3, int(v.input(1).shape[0]), "w_zero_point")
        x, w = v.input(0), v.input(1)
        return [OutInfo(INT32, (x.shape[0], w.shape[0], *g.out))]

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        return _conv_workspace(v, 0, 1, acc=False)

    def emit(self, v: NodeView, e) -> str:
        return _conv_code(e, v, 0, 2, 1, 3, None, None)


@register
class QLinearConv(Operator):
    """ONNX QLinearConv: quantized Conv of int8/uint8 tensors (int32 bias), float32/float64 scales,
    w_scale and w_zero_point per tensor or per output channel; N-D, groups, pads, strides, dilations."""

    op_type = "QLinearConv"

    def check(self, v: NodeView) -> str | None:
        reason = _check_qconv(v, 0, 3) or _check_zp(v, 0, 2, "x_zero_point") or _check_zp(v, 3, 5, "w_zero_point")
        if reason:
            return reason
        for k in (1, 4, 6):
            if v.input(k).dtype.name not in SCALE_TYPES:
                return f"scale input {k} element type {v.input(k).dtype.name} is not supported (float32, float64)"
        if v.has_input(7) and v.input(7).dtype.name not in _INT8S:
            return f"y_zero_point element type {v.input(7).dtype.name} is not supported (int8, uint8)"
        if v.has_input(8) and v.input(8).dtype != INT32:
            return f"the bias must be int32, got {v.input(8).dtype.name}"
        return None

    def _out_dtype(self, v: NodeView) -> DType:
        return v.input(7).dtype if v.has_input(7) else v.input(0).dtype

    def infer(self, v: NodeView) -> list[OutInfo]:
        g, _ = _qconv_geom(v, 0, 3)
        x, w = v.input(0), v.input(3)
        m = int(w.shape[0])
        for k, what in ((1, "x_scale"), (2, "x_zero_point"), (6, "y_scale"), (7, "y_zero_point")):
            if v.has_input(k):
                _scalar(v, k, what)
        _per_channel(v, 4, m, "w_scale")
        if v.has_input(5):
            _per_channel(v, 5, m, "w_zero_point")
        if v.has_input(8) and (v.input(8).rank != 1 or _differs(v.input(8).shape[0], m)):
            raise v.fail(f"bias {v.input(8)} must be a vector of the {m} output channels")
        return [OutInfo(self._out_dtype(v), (x.shape[0], w.shape[0], *g.out))]

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        return _conv_workspace(v, 0, 3, acc=True)

    def emit(self, v: NodeView, e) -> str:
        g, _ = _qconv_geom(v, 0, 3)
        m = int(v.input(3).shape[0])
        p = _prod(g.out)
        odt = self._out_dtype(v)
        acc = e.ws(3)
        fx, fw, fy = (v.input(i).dtype.cpp for i in (1, 4, 6))
        ws_i = "mm_" if _per_channel(v, 4, m, "w_scale") else "0"
        bias = f" + {e.inp(8)}[mm_]" if v.has_input(8) else ""
        zy = f" + double({e.inp(7)}[0])" if v.has_input(7) else ""

        def after(n: str) -> str:
            q = e.tmp("q")
            return "\n".join([
                f"for (std::int64_t mm_ = 0; mm_ < {m}; ++mm_) {{",
                f"const auto ms_ = {fx}({e.inp(1)}[0]) * {fw}({e.inp(4)}[{ws_i}]) / {fy}({e.inp(6)}[0]);",
                f"for (std::int64_t {q} = 0; {q} < {p}; ++{q}) {{",
                f"const double q_ = std::nearbyint(double({acc}[mm_ * {p} + {q}]{bias}) * double(ms_)){zy};",
                f"{e.out()}[({n} * {m} + mm_) * std::int64_t({p}) + {q}] = {_saturate('q_', 'double', odt)};",
                "}}"])
        return _conv_code(e, v, 0, 2, 3, 5, acc, after)
