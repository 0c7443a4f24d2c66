"""Sequences and optionals (the ONNX sequence and optional types), resolved at compile time.

A sequence is typed in the IR (``TensorInfo.elements``): its element type, its length and the
shape of each element (dimensions possibly symbolic) are known at compile time, which is what
exporters produce outside loops (a Python list of tensors, ``torch.split``/``unbind``,
``torch.cat``/``stack`` of a list). The elements are stored packed one after the other in one
buffer, so the arena plans a sequence like any tensor and nothing is allocated at run time;
every operator below is a few ``memcpy`` at offsets known when the code is generated. Where
the elements are tensors of the graph (a list built and concatenated, pieces of a split), the
``resolve_sequences`` pass (``passes/sequences.py``) reads those tensors instead, and these
operators do not run at all.
Positions (SequenceAt/Insert/Erase) must be known at compile time, except SequenceAt on a
sequence whose elements all have one shape, which reads the run-time position (checked).
Sequences whose length changes at run time (a list appended to inside a Loop) are refused, as
are sequence graph inputs and outputs.

An optional (``TensorInfo.optional``) holds a value or not, known at compile time: Optional of a
tensor holds it, Optional without input is empty, OptionalHasElement is then a constant and
OptionalGetElement a copy. An optional graph input must be given a value.
"""

from __future__ import annotations

import re

from ..ir.dims import DimLike, Shape, numel
from ..ir.dtypes import BOOL, FLOAT32, INT64, DType, dtype_from_onnx
from ..ir.graph import Graph, TensorInfo
from .base import NodeView, Operator, OutInfo, normalize_axis, register


def _seq(v: NodeView, i: int) -> TensorInfo:
    info = v.input(i)
    if not info.is_sequence:
        raise v.fail(f"input {i} ({info.name!r}) must be a sequence, got a tensor {info}")
    return info


def _offsets(elements) -> list[DimLike]:
    """Start of each element in the packed buffer, and the total size last."""
    out: list[DimLike] = [0]
    for shape in elements:
        out.append(out[-1] + numel(shape))
    return out


def _seq_out(dtype: DType, elements) -> OutInfo:
    elements = tuple(tuple(s) for s in elements)
    return OutInfo(dtype, (_offsets(elements)[-1],), elements=elements)


def _position(v: NodeView, i: int, what: str) -> int:
    p = v.require_value(i, what)
    if len(p) != 1 or not isinstance(p[0], int):
        raise v.fail(f"{what} must be one integer known at compile time, got {p}")
    return int(p[0])


def _memcpy(e, dst: str, src: str, count: DimLike, dtype: DType) -> str:
    return f"std::memcpy({dst}, {src}, std::size_t({e.dim(count)}) * sizeof({dtype.cpp}));"


def _view_copy(e, v: NodeView) -> str:
    """The copy of a ``view_of_input`` operator: nothing when the output took over the input's
    buffer (emitter.inplace_aliases)."""
    return (f"if (static_cast<const void *>({e.out()}) != static_cast<const void *>({e.inp(0)})) "
            + _memcpy(e, e.out(), e.inp(0), v.input(0).size, v.input(0).dtype))


def _at(ptr: str, e, offset: DimLike) -> str:
    return ptr if isinstance(offset, int) and offset == 0 else f"{ptr} + {e.dim(offset)}"


@register
class SequenceEmpty(Operator):
    """ONNX SequenceEmpty: a sequence of no element, of the ``dtype`` attribute's type."""

    op_type = "SequenceEmpty"

    def infer(self, v: NodeView) -> list[OutInfo]:
        dt = v.attr("dtype")
        return [_seq_out(FLOAT32 if dt is None else dtype_from_onnx(dt, f"{v.label}: "), ())]

    def emit(self, v: NodeView, e) -> str:
        return f"(void){e.out()};  // an empty sequence: nothing stored"


@register
class SequenceConstruct(Operator):
    """ONNX SequenceConstruct: the inputs, in order, as one sequence."""

    op_type = "SequenceConstruct"

    def check(self, v: NodeView) -> str | None:
        if not v.node.inputs:
            return "SequenceConstruct needs at least one input"
        dts = {v.input(i).dtype for i in range(len(v.node.inputs))}
        if len(dts) != 1:
            return f"the inputs have different element types ({', '.join(sorted(d.name for d in dts))})"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [_seq_out(v.input(0).dtype, [v.input(i).shape for i in range(len(v.node.inputs))])]

    def emit(self, v: NodeView, e) -> str:
        info = e.out_info(0)
        offs = _offsets(info.elements)
        return "\n".join(_memcpy(e, _at(e.out(), e, offs[i]), e.inp(i), v.input(i).size, info.dtype)
                         for i in range(len(v.node.inputs)))


@register
class SequenceInsert(Operator):
    """ONNX SequenceInsert: a new sequence with the tensor inserted at a compile-time position
    (default: at the end)."""

    op_type = "SequenceInsert"
    sequence_inputs = (0,)

    def check(self, v: NodeView) -> str | None:
        s, t = _seq(v, 0), v.input(1)
        if s.dtype != t.dtype:
            return f"inserting a {t.dtype.name} tensor into a sequence of {s.dtype.name}"
        return None

    def _pos(self, v: NodeView) -> int:
        n = len(_seq(v, 0).elements)
        if not v.has_input(2):
            return n
        p = _position(v, 2, "the position")
        if not -n <= p <= n:
            raise v.fail(f"position {p} is out of range for a sequence of {n} elements")
        return p + n if p < 0 else p

    def infer(self, v: NodeView) -> list[OutInfo]:
        els = list(_seq(v, 0).elements)
        els.insert(self._pos(v), tuple(v.input(1).shape))
        return [_seq_out(v.input(1).dtype, els)]

    def emit(self, v: NodeView, e) -> str:
        s = _seq(v, 0)
        offs = _offsets(s.elements)
        p = self._pos(v)
        dt = s.dtype
        lines = [_memcpy(e, e.out(), e.inp(0), offs[p], dt),
                 _memcpy(e, _at(e.out(), e, offs[p]), e.inp(1), v.input(1).size, dt),
                 _memcpy(e, _at(e.out(), e, offs[p] + v.input(1).size), _at(e.inp(0), e, offs[p]),
                         offs[-1] - offs[p], dt)]
        return "\n".join(lines)


@register
class SequenceErase(Operator):
    """ONNX SequenceErase: a new sequence without the element at a compile-time position
    (default: the last)."""

    op_type = "SequenceErase"
    sequence_inputs = (0,)

    def _pos(self, v: NodeView) -> int:
        n = len(_seq(v, 0).elements)
        if n == 0:
            raise v.fail("cannot erase from an empty sequence")
        p = _position(v, 1, "the position") if v.has_input(1) else -1
        if not -n <= p < n:
            raise v.fail(f"position {p} is out of range for a sequence of {n} elements")
        return p + n if p < 0 else p

    def infer(self, v: NodeView) -> list[OutInfo]:
        s = _seq(v, 0)
        els = list(s.elements)
        del els[self._pos(v)]
        return [_seq_out(s.dtype, els)]

    def emit(self, v: NodeView, e) -> str:
        s = _seq(v, 0)
        offs = _offsets(s.elements)
        p = self._pos(v)
        return "\n".join([_memcpy(e, e.out(), e.inp(0), offs[p], s.dtype),
                          _memcpy(e, _at(e.out(), e, offs[p]), _at(e.inp(0), e, offs[p + 1]),
                                  offs[-1] - offs[p + 1], s.dtype)])


@register
class SequenceAt(Operator):
    """ONNX SequenceAt: one element; the position is read at run time (and checked) when every
    element has the same shape, else it must be known at compile time."""

    op_type = "SequenceAt"
    sequence_inputs = (0,)

    @staticmethod
    def _uniform(s: TensorInfo) -> bool:
        return len(s.elements) > 0 and all(tuple(x) == tuple(s.elements[0]) for x in s.elements)

    def _pos(self, v: NodeView) -> int | None:
        s = _seq(v, 0)
        n = len(s.elements)
        if v.known_value(1) is None and self._uniform(s):
            return None
        p = _position(v, 1, "the position")
        if not -n <= p < n:
            raise v.fail(f"position {p} is out of range for a sequence of {n} elements")
        return p + n if p < 0 else p

    def check(self, v: NodeView) -> str | None:
        if v.input(1).dtype.name not in ("int32", "int64") or v.input(1).size != 1:
            return f"the position must be one int32 or int64, got {v.input(1)}"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        s = _seq(v, 0)
        p = self._pos(v)
        return [OutInfo(s.dtype, tuple(s.elements[0 if p is None else p]))]

    def emit(self, v: NodeView, e) -> str:
        s = _seq(v, 0)
        p = self._pos(v)
        offs = _offsets(s.elements)
        if p is not None:
            return _memcpy(e, e.out(), _at(e.inp(0), e, offs[p]), numel(s.elements[p]), s.dtype)
        n = len(s.elements)
        k = e.tmp("k")
        size = e.dim(numel(s.elements[0]))
        return "\n".join([
            f"std::int64_t {k} = static_cast<std::int64_t>({e.inp(1)}[0]);",
            f"if ({k} < -{n} || {k} >= {n}) " + e.fail(f"position out of range for a sequence of {n} elements"),
            f"if ({k} < 0) {k} += {n};",
            f"std::memcpy({e.out()}, {e.inp(0)} + {k} * {size}, std::size_t({size}) * sizeof({s.dtype.cpp}));"])


@register
class SequenceLength(Operator):
    """ONNX SequenceLength: the number of elements (a compile-time constant)."""

    op_type = "SequenceLength"
    sequence_inputs = (0,)

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(INT64, ())]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        return [(len(_seq(v, 0).elements),)]

    def emit(self, v: NodeView, e) -> str:
        return f"{e.out()}[0] = {len(_seq(v, 0).elements)};"


def _split_axis(v: NodeView, x: TensorInfo) -> tuple[int, int]:
    """(axis, length along it); the length must be known to know how many elements there are."""
    axis = normalize_axis(int(v.attr("axis", 0)), x.rank, v)
    length = x.shape[axis]
    return axis, length


@register
class SplitToSequence(Operator):
    """ONNX SplitToSequence: pieces of the input along ``axis`` (of the sizes of a compile-time
    ``split``, or of one element each, squeezed unless ``keepdims``) as a sequence."""

    op_type = "SplitToSequence"
    static_inputs = (1,)

    def _sizes(self, v: NodeView) -> tuple[int, list[DimLike], bool]:
        x = v.input(0)
        if x.rank == 0:
            raise v.fail("cannot split a scalar")
        axis, length = _split_axis(v, x)
        if not v.has_input(1):
            if not isinstance(length, int):
                raise v.fail(f"splitting along axis {axis} of symbolic length {length} gives a number of "
                             "elements known only at run time")
            return axis, [1] * length, not int(v.attr("keepdims", 1))
        split = v.require_value(1, "split")
        if v.input(1).rank == 0:
            s = split[0]
            if not isinstance(s, int) or s <= 0:
                raise v.fail(f"split must be a positive integer, got {s}")
            if not isinstance(length, int):
                raise v.fail(f"splitting axis {axis} of symbolic length {length} in pieces of {s} gives a "
                             "number of elements known only at run time")
            sizes = [s] * (length // s) + ([length % s] if length % s else [])
            return axis, sizes, False
        total: DimLike = 0
        for s in split:
            if isinstance(s, int) and s < 0:
                raise v.fail(f"split sizes must not be negative, got {list(split)}")
            total = total + s
        if total != length:
            raise v.fail(f"split sizes {list(split)} do not add up to the length {length} of axis {axis}")
        return axis, list(split), False

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        axis, sizes, squeeze = self._sizes(v)
        els = []
        for s in sizes:
            shape = list(x.shape)
            if squeeze:
                del shape[axis]
            else:
                shape[axis] = s
            els.append(tuple(shape))
        return [_seq_out(x.dtype, els)]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        axis, sizes, _ = self._sizes(v)
        outer = numel(x.shape[:axis])
        inner = numel(x.shape[axis + 1:])
        length = x.shape[axis]
        lines = []
        start: DimLike = 0
        dst: DimLike = 0
        o = e.tmp("o")
        for s in sizes:
            piece = s * inner
            lines.append(f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o})")
            lines.append(f"   std::memcpy({_at(e.out(), e, dst)} + {o} * {e.dim(piece)}, "
                         f"{e.inp(0)} + ({o} * {e.dim(length)} + {e.dim(start)}) * {e.dim(inner)}, "
                         f"std::size_t({e.dim(piece)}) * sizeof({x.dtype.cpp}));")
            start = start + s
            dst = dst + outer * piece
        return "\n".join(lines) if lines else f"(void){e.out()};"


@register
class ConcatFromSequence(Operator):
    """ONNX ConcatFromSequence: the elements concatenated along ``axis`` (or stacked along a new
    axis with ``new_axis=1``)."""

    op_type = "ConcatFromSequence"
    sequence_inputs = (0,)

    def _axis(self, v: NodeView) -> tuple[int, bool, TensorInfo]:
        s = _seq(v, 0)
        if not s.elements:
            raise v.fail("cannot concatenate an empty sequence")
        if v.attr("axis") is None:
            raise v.fail("the axis attribute is required")
        new = bool(v.attr("new_axis", 0))
        r = len(s.elements[0])
        axis = normalize_axis(int(v.attr("axis")), r + 1 if new else r, v)
        return axis, new, s

    def infer(self, v: NodeView) -> list[OutInfo]:
        axis, new, s = self._axis(v)
        first = list(s.elements[0])
        total: DimLike = 0
        for k, shape in enumerate(s.elements):
            if len(shape) != len(first) or any(a != b for j, (a, b) in enumerate(zip(shape, first))
                                               if new or j != axis):
                raise v.fail(f"element {k} has shape {list(shape)}, which does not "
                             f"{'stack' if new else 'concatenate'} with element 0's {first} along axis {axis}")
            total = total + (1 if new else shape[axis])
        out = list(first)
        if new:
            out.insert(axis, total)
        else:
            out[axis] = total
        return [OutInfo(s.dtype, tuple(out))]

    def emit(self, v: NodeView, e) -> str:
        axis, new, s = self._axis(v)
        first = s.elements[0]
        outer = numel(first[:axis])
        inner = numel(first[axis:] if new else first[axis + 1:])
        offs = _offsets(s.elements)
        total = e.out_info(0).shape[axis]
        o = e.tmp("o")
        # one pass over the output, each outer row filled from every element in turn (a loop
        # per element would stride over the whole output once per element: stacking along the
        # last axis wrote single values len(elements) apart)
        lines = [f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o}) {{"]
        cum: DimLike = 0
        for k, shape in enumerate(s.elements):
            ln = 1 if new else shape[axis]
            piece = ln * inner
            lines.append(f"   std::memcpy({e.out()} + ({o} * {e.dim(total)} + {e.dim(cum)}) * {e.dim(inner)}, "
                         f"{_at(e.inp(0), e, offs[k])} + {o} * {e.dim(piece)}, "
                         f"std::size_t({e.dim(piece)}) * sizeof({s.dtype.cpp}));")
            cum = cum + ln
        lines.append("}")
        return "\n".join(lines)


@register
class SequenceMap(Operator):
    """ONNX SequenceMap: the body applied to each element (a C++ loop over the elements, which
    must all have one shape per input sequence); extra tensor inputs are passed to every call."""

    op_type = "SequenceMap"

    @property
    def sequence_inputs(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(range(64))

    def _length(self, v: NodeView) -> int:
        n = len(_seq(v, 0).elements)
        for i in range(1, len(v.node.inputs)):
            info = v.input(i)
            if info.is_sequence and len(info.elements) != n:
                raise v.fail(f"input {i} has {len(info.elements)} elements, input 0 has {n}")
        return n

    def body_inputs(self, v: NodeView, attr: str) -> list[tuple[DType, Shape]] | None:
        if attr != "body":
            return None
        out = []
        for i in range(len(v.node.inputs)):
            info = v.input(i)
            if info.is_sequence:
                if not info.elements or any(tuple(x) != tuple(info.elements[0]) for x in info.elements):
                    raise v.fail(f"input {i}: the elements must all have one shape (and be at least one), got "
                                 f"{info}")
                out.append((info.dtype, tuple(info.elements[0])))
            else:
                out.append((info.dtype, info.shape))
        return out

    def check(self, v: NodeView) -> str | None:
        body = v.attr("body")
        if not isinstance(body, Graph):
            return "the body must be a graph"
        if len(body.inputs) != len(v.node.inputs):
            return f"the body has {len(body.inputs)} inputs, the node {len(v.node.inputs)}"
        if len(body.outputs) < len(v.node.outputs):
            return f"the body has {len(body.outputs)} outputs, the node {len(v.node.outputs)}"
        for name in body.outputs:
            if body.info(name).is_sequence or body.info(name).optional is not None:
                return f"body output {name!r} is a sequence or an optional"
        self._length(v)
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        body = v.attr("body")
        n = self._length(v)
        return [_seq_out(body.info(o).dtype, [body.info(o).shape] * n) for o in body.outputs[:len(v.node.outputs)]]

    def _plan(self, v: NodeView):
        from .control import _plan

        body = v.attr("body")
        direct = [o for k, o in enumerate(body.outputs) if k < len(v.node.outputs) and v.node.outputs[k]]
        return _plan(v.label, body, list(dict.fromkeys(direct)))

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        return self._plan(v).workspace()

    def emit(self, v: NodeView, e) -> str:
        from ..codegen.names import comment
        from .control import _copy, _emit_body

        body = v.attr("body")
        plan = self._plan(v)
        base = getattr(e._m, "prefix", "") + f"smap{e.index}_"
        it = f"{base}i"
        inner = []
        bind: dict[str, str] = {}
        for i, name in enumerate(body.inputs):
            info = v.input(i)
            if info.is_sequence:
                p = f"{base}x{i}"
                inner.append(f"const {info.dtype.cpp} *const {p} = {e.inp(i)} + {it} * "
                             f"{e.dim(numel(info.elements[0]))};")
                bind[name] = p
            else:
                bind[name] = e.inp(i)
        outs = {}
        for k, name in enumerate(body.outputs[:len(v.node.outputs)]):
            if not v.node.outputs[k]:
                continue
            info = body.info(name)
            p = f"{base}o{k}"
            inner.append(f"{info.dtype.cpp} *const {p} = {e.out(k)} + {it} * {e.dim(info.size)};")
            outs[k] = p
            if name in plan.direct and name not in bind:
                bind[name] = p
        code, _, scope = _emit_body(e, plan, base + "b_", 0, bind)
        inner += code
        for k, p in outs.items():
            name = body.outputs[k]
            if bind.get(name) != p:
                inner.append(_copy(e, p, scope.var[name], body.info(name)) + f"  // {comment(name)}")
        n = self._length(v)
        return "\n".join([f"for (std::int64_t {it} = 0; {it} < {n}; ++{it}) {{"]
                         + ["   " + ln if ln else "" for ln in inner] + ["}"])


# -- optionals ----------------------------------------------------------------------------------------

_TENSOR_TYPE = re.compile(r"^tensor\((\d+)\)$")


@register
class Optional(Operator):
    """ONNX Optional: an optional holding the input, or an empty one of the ``type`` attribute."""

    op_type = "Optional"
    sequence_inputs = (0,)
    #: holds the input's bytes: takes over its buffer when nothing reads the input afterwards
    view_of_input = True

    def check(self, v: NodeView) -> str | None:
        if v.has_input(0):
            if v.input(0).optional is not None:
                return "an optional of an optional is not a valid ONNX type"
            return None
        t = v.attr("type")
        if not isinstance(t, str) or not _TENSOR_TYPE.match(t):
            return f"an empty optional needs a tensor type attribute, got {t!r}"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        if v.has_input(0):
            x = v.input(0)
            return [OutInfo(x.dtype, x.shape, elements=x.elements, optional=True)]
        m = _TENSOR_TYPE.match(v.attr("type"))
        return [OutInfo(dtype_from_onnx(int(m.group(1)), f"{v.label}: "), (0,), optional=False)]

    def emit(self, v: NodeView, e) -> str:
        if not v.has_input(0):
            return f"(void){e.out()};  // an empty optional: nothing stored"
        return _view_copy(e, v)


def _has_element(v: NodeView) -> bool:
    return v.has_input(0) and v.input(0).optional is not False


@register
class OptionalHasElement(Operator):
    """ONNX OptionalHasElement: known at compile time (an optional graph input holds a value)."""

    op_type = "OptionalHasElement"
    sequence_inputs = (0,)

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(BOOL, ())]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        return [(int(_has_element(v)),)]

    def emit(self, v: NodeView, e) -> str:
        return f"{e.out()}[0] = {'true' if _has_element(v) else 'false'};"


@register
class OptionalGetElement(Operator):
    """ONNX OptionalGetElement: the value of an optional (or a plain tensor or sequence) that
    holds one; an empty optional is an error at compile time."""

    op_type = "OptionalGetElement"
    sequence_inputs = (0,)
    view_of_input = True  # the optional's bytes: its buffer when nothing reads the optional afterwards

    def check(self, v: NodeView) -> str | None:
        if not _has_element(v):
            return "the optional is empty (it has no element to get)"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        return [OutInfo(x.dtype, x.shape, elements=x.elements)]

    def emit(self, v: NodeView, e) -> str:
        return _view_copy(e, v)


@register
class StackedConcat(Operator):
    """Internal (``frontends/loop_lists.py``): ConcatFromSequence of a list built in a loop, read
    from the loop's scan output ``[L, *element]`` (L possibly known only at run time):
    ``out[o, l, i] = in[l, o, i]`` with ``o`` over the element axes before ``axis`` and ``i``
    over the rest (with ``new_axis=0`` the axis ``axis`` itself is in ``i``)."""

    op_type = "StackedConcat"
    domain = "sofie"
    internal = True

    def _axis(self, v: NodeView) -> tuple[int, bool]:
        x = v.input(0)
        if x.rank < 1:
            raise v.fail("the stacked input must have a leading axis")
        new = bool(v.attr("new_axis", 0))
        r = x.rank - 1
        if not new and r == 0:
            raise v.fail("cannot concatenate scalars without new_axis=1")
        return normalize_axis(int(v.attr("axis", 0)), r + 1 if new else r, v), new

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        axis, new = self._axis(v)
        count, el = x.shape[0], list(x.shape[1:])
        if new:
            el.insert(axis, count)
        else:
            el[axis] = el[axis] * count
        return [OutInfo(x.dtype, tuple(el))]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        axis, _ = self._axis(v)
        el = x.shape[1:]
        outer, inner, count = numel(el[:axis]), numel(el[axis:]), x.shape[0]
        l, o = e.tmp("l"), e.tmp("o")
        return "\n".join([
            f"for (std::int64_t {l} = 0; {l} < {e.dim(count)}; ++{l})",
            f"   for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o})",
            f"      std::memcpy({e.out()} + ({o} * {e.dim(count)} + {l}) * {e.dim(inner)}, "
            f"{e.inp(0)} + ({l} * {e.dim(outer)} + {o}) * {e.dim(inner)}, "
            f"std::size_t({e.dim(inner)}) * sizeof({x.dtype.cpp}));"])
