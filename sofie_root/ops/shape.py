"""Shape operators whose data is a plain copy: Shape, Size, Reshape, Flatten, Squeeze, Unsqueeze,
Identity, Dropout, Constant.

Shape and Size produce compile-time values (possibly symbolic, such as ``(N, 12)``), which is how
shape sub-graphs fold away; Reshape and friends read their target shapes at compile time.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataDependentShapeError, UnsupportedOperatorError
from ..ir.dims import Dim, DimLike, numel
from ..ir.dtypes import BOOL, INT64, dtype_from_numpy, dtype_from_onnx
from .base import NodeView, Operator, OutInfo, normalize_axis, register


def copy_code(v: NodeView, e, src: int = 0, dst: int = 0) -> str:
    """Copy input ``src`` to output ``dst``; nothing to do when the planner gave both one buffer."""
    info = v.input(src)
    out, inp = e.out(dst), e.inp(src)
    return (f"if (static_cast<const void *>({out}) != static_cast<const void *>({inp})) "
            f"std::memcpy({out}, {inp}, std::size_t({e.size_in(src)}) * sizeof({info.dtype.cpp}));")


class _Copy(Operator):
    """Operators whose output holds the input's elements unchanged (only the shape differs)."""

    view_of_input = True

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        return [OutInfo(x.dtype, x.shape)]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        return [v.known_value(0)] + [None] * (len(outs) - 1)

    def emit(self, v: NodeView, e) -> str:
        return copy_code(v, e)


@register
class Shape(Operator):
    """ONNX Shape (with start/end since opset 15): a compile-time value, symbolic dims included."""

    op_type = "Shape"
    static_inputs = (0,)

    def _slice(self, v: NodeView) -> tuple[DimLike, ...]:
        shape = v.input(0).shape
        r = len(shape)
        start = v.attr("start", 0)
        end = v.attr("end", r)
        start = min(max(start + r if start < 0 else start, 0), r)
        end = min(max(end + r if end < 0 else end, 0), r)
        return tuple(shape[start:end])

    def infer(self, v: NodeView) -> list[OutInfo]:
        dims = self._slice(v)
        return [OutInfo(INT64, (len(dims),), dims)]

    def emit(self, v: NodeView, e) -> str:  # pragma: no cover - always folded by the frontend
        dims = self._slice(v)
        return "\n".join(f"{e.out()}[{k}] = {e.dim(d)};" for k, d in enumerate(dims))


@register
class Size(Operator):
    """ONNX Size: the element count as an int64 scalar (a compile-time value)."""

    op_type = "Size"
    static_inputs = (0,)

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(INT64, (), (v.input(0).size,))]

    def emit(self, v: NodeView, e) -> str:  # pragma: no cover - always folded by the frontend
        return f"{e.out()}[0] = {e.dim(v.input(0).size)};"


@register
class Identity(_Copy):
    op_type = "Identity"


@register
class Dropout(_Copy):
    """ONNX Dropout at inference: the identity, and an all-true mask if asked for."""

    op_type = "Dropout"
    static_inputs = (1, 2)

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        if v.opset >= 12 and v.has_input(2):
            # training_mode (and the ratio) must be known: random dropout is not supported,
            # training with a zero ratio is the identity
            training = bool(v.require_value(2, "training_mode")[0])
            ratio = v.const(1) if v.has_input(1) else None
            if training and v.has_input(1) and ratio is None:
                raise DataDependentShapeError(f"{v.label}: the dropout ratio must be known", v.input(1).name)
            if training and (ratio is None or float(ratio.reshape(-1)[0]) != 0.0):
                raise UnsupportedOperatorError([(v.node.op_type, v.node.name, v.node.domain, v.opset,
                                                 "training-mode dropout with a non-zero ratio is random "
                                                 "(inference only)")])
        return [OutInfo(x.dtype, x.shape), OutInfo(BOOL, x.shape)]

    def emit(self, v: NodeView, e) -> str:
        lines = [copy_code(v, e)]
        if len(v.node.outputs) > 1 and v.node.outputs[1]:
            lines.append(f"std::fill({e.out(1)}, {e.out(1)} + {e.size_in(0)}, true);")
        return "\n".join(lines)


@register
class Reshape(_Copy):
    """ONNX Reshape; the target shape must be known at compile time (it may be symbolic)."""

    op_type = "Reshape"
    static_inputs = (1,)

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        if v.opset < 5:
            target = tuple(v.attr("shape", []))
        else:
            target = v.require_value(1, "the target shape")
        allowzero = v.attr("allowzero", 0)
        out: list[DimLike] = []
        infer_at = None
        for k, d in enumerate(target):
            if isinstance(d, int) and d == -1:
                if infer_at is not None:
                    raise v.fail(f"target shape {list(map(str, target))} has more than one -1")
                infer_at = k
                out.append(1)
            elif isinstance(d, int) and d == 0 and not allowzero:
                if k >= x.rank:
                    raise v.fail(f"target shape {list(map(str, target))} copies dimension {k} of a rank-{x.rank} input")
                out.append(x.shape[k])
            elif isinstance(d, int) and d < 0:
                raise v.fail(f"target shape {list(map(str, target))} has a negative dimension")
            else:
                out.append(d)
        total = x.size
        if infer_at is not None:
            rest = numel(out)
            if isinstance(rest, int) and rest == 0:
                raise v.fail("cannot infer -1 when another target dimension is 0")
            out[infer_at] = total // rest
            if isinstance(out[infer_at], int) and isinstance(total, int) and out[infer_at] * rest != total:
                raise v.fail(f"cannot reshape {x} to {list(map(str, target))}")
        elif numel(out) != total and not (isinstance(numel(out), Dim) or isinstance(total, Dim)):
            raise v.fail(f"cannot reshape {x} ({total} elements) to {list(map(str, target))}")
        return [OutInfo(x.dtype, tuple(out))]


@register
class Flatten(_Copy):
    """ONNX Flatten: [d0..d(axis-1)] x [d(axis)..] as a matrix."""

    op_type = "Flatten"

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        axis = v.attr("axis", 1)
        axis = axis + x.rank if axis < 0 else axis
        if not 0 <= axis <= x.rank:
            raise v.fail(f"axis {v.attr('axis')} is out of range for rank {x.rank}")
        return [OutInfo(x.dtype, (numel(x.shape[:axis]), numel(x.shape[axis:])))]


def _axes(v: NodeView, attr_until: int, what: str) -> list[int] | None:
    if v.opset < attr_until:
        a = v.attr("axes")
        return None if a is None else list(a)
    if not v.has_input(1):
        return None
    return [int(x) for x in v.require_value(1, what)]


@register
class Squeeze(_Copy):
    op_type = "Squeeze"
    static_inputs = (1,)

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        axes = _axes(v, 13, "the axes")
        if axes is None:
            axes = [k for k, d in enumerate(x.shape) if isinstance(d, int) and d == 1]
        axes = {normalize_axis(a, x.rank, v) for a in axes}
        for a in axes:
            if isinstance(x.shape[a], int) and x.shape[a] != 1:
                raise v.fail(f"cannot squeeze axis {a} of size {x.shape[a]}")
        return [OutInfo(x.dtype, tuple(d for k, d in enumerate(x.shape) if k not in axes))]


@register
class Unsqueeze(_Copy):
    op_type = "Unsqueeze"
    static_inputs = (1,)

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        axes = _axes(v, 13, "the axes")
        if axes is None:
            raise v.fail("axes are required")
        r = x.rank + len(axes)
        axes_n = sorted(normalize_axis(a, r, v) for a in axes)
        if len(set(axes_n)) != len(axes_n):
            raise v.fail(f"repeated axes {axes}")
        out = list(x.shape)
        for a in axes_n:
            out.insert(a, 1)
        return [OutInfo(x.dtype, tuple(out))]


@register
class Constant(Operator):
    """ONNX Constant (the frontend turns it into an initializer; registered for the op list)."""

    op_type = "Constant"

    def infer(self, v: NodeView) -> list[OutInfo]:
        val = v.attr("value")
        if val is None:
            raise v.fail("only tensor values are supported")
        arr = np.asarray(val)
        return [OutInfo(dtype_from_numpy(arr.dtype), tuple(arr.shape))]


@register
class BitCast(Operator):
    """ONNX BitCast (opset 26): the input's bytes reinterpreted as another element type of the
    same width (little endian, as the host). float16/bfloat16 tensors are held as float32 here, so
    their bits cannot be reinterpreted: the frontend refuses those."""

    op_type = "BitCast"

    def _to(self, v: NodeView):
        to = v.attr("to")
        if to is None:
            raise v.fail("the attribute 'to' is required")
        return dtype_from_onnx(int(to), f"{v.label}: to: ")

    def check(self, v: NodeView) -> str | None:
        to, x = self._to(v), v.input(0)
        if to.itemsize != x.dtype.itemsize or to == BOOL:
            # bytes other than 0 and 1 are no valid C++ bool: reinterpreting as bool is refused
            return f"cannot reinterpret {x.dtype.name} as {to.name} (the element widths must be equal; not to bool)"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(self._to(v), v.input(0).shape)]

    def emit(self, v: NodeView, e) -> str:
        return f"std::memcpy({e.out()}, {e.inp(0)}, std::size_t({e.size_in(0)}) * {v.input(0).dtype.itemsize});"
