"""Data movement operators: Transpose, Concat, Split, Slice, Gather, GatherElements, GatherND,
ScatterElements (and the older Scatter), ScatterND, Expand, Tile, Pad, Range, ConstantOfShape,
EyeLike, Trilu, OneHot, NonZero (constant input only), DepthToSpace and SpaceToDepth.

Most of them are a strided copy: the output is walked in order while the input offset moves by
per-axis strides (zero for a broadcast axis, negative for a reversed slice); ``_nest`` writes that
loop nest, merging axes that are contiguous in every tensor involved. Indices read from data
(Gather, Scatter*, OneHot) are checked in the generated code: an out-of-range index throws.

Inputs that decide the output shape (Slice starts/ends, Expand/Tile shapes, Pad pads, Split sizes,
Range bounds, ConstantOfShape shape, OneHot depth) are compile-time ``static_inputs``; their values
may be symbolic (``N``), and ``propagate`` carries known values through Concat, Gather, Slice,
Split, Expand, Tile, Range and ConstantOfShape so that shape sub-graphs fold at compile time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ShapeInferenceError
from ..ir.dims import Dim, DimLike, Shape, broadcast_shapes, numel, strides
from ..ir.dtypes import INT64, DType, dtype_from_numpy, dtype_from_onnx
from ..limits import check_shape
from .base import NodeView, Operator, OutInfo, normalize_axis, register

INDEX_TYPES = ("int32", "int64")
#: a Slice bound at least this large (in magnitude) means "to the end" of a symbolic dimension
BIG = 2**31 - 1
#: compile-time values are propagated for outputs of at most this many elements
MAX_VALUE_LEN = 1024

I64 = "std::int64_t"


# -- helpers ------------------------------------------------------------------------------------

def _is(d: DimLike, k: int) -> bool:
    return isinstance(d, int) and d == k


def _cx(e, x: DimLike | str) -> str:
    """C++ expression of a dimension-like value (or a C++ expression given as a string)."""
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return f"({x})" if x < 0 else str(x)
    return e.dim(x)


def _term(e, i: str, s: DimLike) -> str | None:
    if _is(s, 0):
        return None
    if _is(s, 1):
        return i
    return f"{i} * {_cx(e, s)}"


def _sum(parts: Sequence[str | None]) -> str:
    parts = [p for p in parts if p and p != "0"]
    return " + ".join(parts) if parts else "0"


def _nest(e, dims: Sequence[DimLike], offsets: Sequence[tuple[DimLike | str, Sequence[DimLike]]],
          body: Callable[[list[str]], str], merge: bool = True,
          block: Callable[[list[DimLike], DimLike], Callable[[list[str]], str] | None] | None = None) -> str:
    """Loops over ``dims`` tracking one offset per ``(base, strides)``; ``body`` gets the offset
    expressions and returns the innermost statement(s). With ``merge``, size-1 axes are dropped
    and adjacent axes that are contiguous for every offset are merged into one loop. ``block``,
    given the innermost (merged) axis's strides and length, may return code for that whole axis
    (a function of the offsets at its start) to replace its loop, or None to keep the loop."""
    dims = list(dims)
    strides = [list(s) for _, s in offsets]
    if any(_is(d, 0) for d in dims):
        return "// empty: nothing to do"
    axes = list(range(len(dims)))
    if merge:
        axes = [a for a in axes if not _is(dims[a], 1)]
    m_dims: list[DimLike] = []
    m_st: list[list[DimLike]] = []
    for a in axes:
        d = dims[a]
        st = [s[a] for s in strides]
        if merge and m_dims and all(prev == cur * d for prev, cur in zip(m_st[-1], st)):
            m_dims[-1] = m_dims[-1] * d
            m_st[-1] = st
            continue
        m_dims.append(d)
        m_st.append(st)
    whole = block(m_st[-1], m_dims[-1]) if block is not None and m_dims else None
    if whole is not None:
        m_dims = m_dims[:-1]
    cur = [_cx(e, b) for b, _ in offsets]
    lines: list[str] = []
    depth = 0
    for j, d in enumerate(m_dims):
        i = e.tmp("i")
        ind = "   " * depth
        lines.append(f"{ind}for ({I64} {i} = 0; {i} < {_cx(e, d)}; ++{i}) {{")
        depth += 1
        nxt = []
        for k, c in enumerate(cur):
            expr = _sum([c, _term(e, i, m_st[j][k])])
            if j < len(m_dims) - 1 and expr != c:
                var = e.tmp("p")
                lines.append("   " * depth + f"const {I64} {var} = {expr};")
                expr = var
            nxt.append(expr)
        cur = nxt
    for line in (whole or body)(cur).splitlines():
        lines.append("   " * depth + line)
    lines.append("}" * depth)
    return "\n".join(lines)


def _loops_idx(e, dims: Sequence[DimLike], body: Callable[[list[str]], str]) -> str:
    """Plain nested loops over ``dims`` (no merging); ``body`` gets the index variables."""
    if any(_is(d, 0) for d in dims):
        return "// empty: nothing to do"
    idx = [e.tmp("i") for _ in dims]
    lines = []
    for j, (i, d) in enumerate(zip(idx, dims)):
        lines.append("   " * j + f"for ({I64} {i} = 0; {i} < {_cx(e, d)}; ++{i}) {{")
    for line in body(idx).splitlines():
        lines.append("   " * len(dims) + line)
    lines.append("}" * len(dims))
    return "\n".join(lines)


def _copy(e, dims: Sequence[DimLike], dst: str, dst_off: DimLike | str, dst_st: Sequence[DimLike],
          src: str, src_off: DimLike | str, src_st: Sequence[DimLike]) -> str:
    def block(st: list[DimLike], n: DimLike) -> Callable[[list[str]], str] | None:
        # A contiguous innermost run is one memmove, not an element loop: cling does not vectorise
        # the loop (the views might overlap for all it knows), and clang at -O3 fully unrolls a
        # short constant-length copy loop nest, then spends ~10 s vectorising it when both
        # pointers come from the arena (a Transpose [N,8,2,8] -> [N,2,8,8] took 10 s to JIT, 0.05 s
        # as memmove). memmove, not memcpy: nothing here proves the views are disjoint. A
        # broadcast run (source stride 0) is a sofie_rt::fill (inlined: std::fill_n stayed a call).
        if not _is(st[0], 1):
            return None
        if _is(st[1], 1):
            return lambda o: f"std::memmove({dst} + {o[0]}, {src} + {o[1]}, std::size_t({_cx(e, n)}) * sizeof(*{dst}));"
        if _is(st[1], 0) and not (isinstance(n, int) and n < 4):
            return lambda o: f"sofie_rt::fill({dst} + {o[0]}, std::int64_t({_cx(e, n)}), {src}[{o[1]}]);"
        return None

    return _nest(e, dims, [(dst_off, dst_st), (src_off, src_st)], lambda o: f"{dst}[{o[0]}] = {src}[{o[1]}];",
                 block=block)


def _checks(e, conds: Sequence[tuple[DimLike, DimLike]], what: str) -> list[str]:
    """Run-time checks ``lhs <= rhs`` for those not decidable at compile time."""
    out = []
    for lhs, rhs in conds:
        if isinstance(lhs, int) and isinstance(rhs, int) and lhs <= rhs:
            continue
        out.append(f"if (!({_cx(e, lhs)} <= {_cx(e, rhs)})) {e.fail(what)}")
    return out


def _same_dim_checks(e, pairs: Sequence[tuple[DimLike, DimLike]], what: str) -> list[str]:
    out = []
    for a, b in pairs:
        if a == b:
            continue
        out.append(f"if ({_cx(e, a)} != {_cx(e, b)}) {e.fail(what)}")
    return out


def _index_code(e, var: str, src: str, dim: DimLike, what: str, dt: DType | None = None) -> list[str]:
    """Read an index into ``var``, wrap a negative one, throw if out of range."""
    read = f"static_cast<{I64}>({src})"
    if dt is not None and dt.is_float:
        read = f"sofie_rt::float_to_int<{I64}>({src})"
    d = _cx(e, dim)
    return [f"{I64} {var} = {read};",
            f"if ({var} < 0) {var} += {d};",
            f"if ({var} < 0 || {var} >= {d}) {e.fail(what)}"]


def _merge_dim(a: DimLike, b: DimLike) -> DimLike:
    """Two dimensions that must be equal: the static one if there is one."""
    return b if isinstance(a, Dim) and isinstance(b, int) else a


def _ints(vals: Sequence[DimLike] | None) -> bool:
    return vals is not None and all(isinstance(x, int) for x in vals)


def _value_ok(n: DimLike) -> bool:
    return isinstance(n, int) and n <= MAX_VALUE_LEN


def _reduce_expr(reduction: str, a: str, u: str, dt: DType) -> str:
    if reduction == "add":
        return f"static_cast<{dt.cpp}>({a} + {u})"
    if reduction == "mul":
        return f"static_cast<{dt.cpp}>({a} * {u})"
    # float max/min propagate NaN (np.maximum / np.minimum in the reference)
    if reduction == "max":
        return f"sofie_rt::nan_max({a}, {u})" if dt.is_float else f"({u} > {a} ? {u} : {a})"
    if reduction == "min":
        return f"sofie_rt::nan_min({a}, {u})" if dt.is_float else f"({u} < {a} ? {u} : {a})"
    return u


# -- Transpose ----------------------------------------------------------------------------------

@register
class Transpose(Operator):
    """ONNX Transpose (perm defaults to reversing the axes)."""

    op_type = "Transpose"

    @staticmethod
    def _perm(v: NodeView) -> list[int]:
        r = v.input(0).rank
        perm = v.attr("perm")
        if perm is None:
            return list(reversed(range(r)))
        perm = [normalize_axis(int(p), r, v) for p in perm]
        if sorted(perm) != list(range(r)):
            raise v.fail(f"perm {list(v.attr('perm'))} is not a permutation of the {r} axes")
        return perm

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        return [OutInfo(x.dtype, tuple(x.shape[p] for p in self._perm(v)))]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        return [v.known_value(0) if v.input(0).rank <= 1 else None]

    @staticmethod
    def _batched_2d(dims: Sequence[DimLike], src_st: Sequence[DimLike]) -> tuple[DimLike, DimLike, DimLike] | None:
        """(batch, rows, cols) when this transpose is y[b, c, r] = x[b, r, c] once size-1 axes
        are dropped and axes that stay adjacent are merged (perm [0, 3, 1, 2] of [N, P, K, C] is
        x [N, P*K, C] -> [N, C, P*K]); None otherwise (the innermost axis is already contiguous
        in the input, or the permutation mixes more axes)."""
        m_dims: list[DimLike] = []
        m_src: list[DimLike] = []
        for d, st in zip(dims, src_st):
            if _is(d, 1):
                continue
            if m_dims and m_src[-1] == st * d:
                m_dims[-1] = m_dims[-1] * d
                m_src[-1] = st
                continue
            m_dims.append(d)
            m_src.append(st)
        if len(m_dims) not in (2, 3):
            return None
        *batch, cols, rows = m_dims
        *batch_st, cols_st, rows_st = m_src
        if cols_st != 1 or rows_st != cols or (batch and batch_st[0] != rows * cols):
            return None
        return (batch[0] if batch else 1, rows, cols)

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        perm = self._perm(v)
        out_shape = [x.shape[p] for p in perm]
        ist = strides(x.shape)
        src_st = [ist[p] for p in perm]
        if x.dtype.name != "string" and not _is(x.size, 0):
            plan = self._batched_2d(out_shape, src_st)
            if plan is not None:  # read by cache tiles (sofie_rt::transpose2d), not one line per element
                batch, rows, cols = (_cx(e, d) for d in plan)
                return f"sofie_rt::transpose2d({e.inp(0)}, {e.out()}, {batch}, {rows}, {cols});"
        return _copy(e, out_shape, e.out(), 0, strides(out_shape), e.inp(0), 0, src_st)


# -- Concat / Split -----------------------------------------------------------------------------

@register
class Concat(Operator):
    """ONNX Concat along one axis (negative axis allowed; zero-size inputs contribute nothing)."""

    op_type = "Concat"

    def check(self, v: NodeView) -> str | None:
        ins = [i for i in v.inputs if i is not None]
        if not ins:
            return "Concat needs at least one input"
        if len({i.dtype for i in ins}) > 1:
            return "inputs have different element types"
        return None

    def _axis(self, v: NodeView) -> int:
        axis = v.attr("axis", 1 if v.opset < 4 else None)
        if axis is None:
            raise v.fail("the axis attribute is required")
        return normalize_axis(int(axis), v.input(0).rank, v)

    def infer(self, v: NodeView) -> list[OutInfo]:
        ins = [i for i in v.inputs if i is not None]
        r = ins[0].rank
        axis = self._axis(v)
        out = list(ins[0].shape)
        total: DimLike = 0
        for info in ins:
            if info.rank != r:
                raise v.fail(f"inputs have different ranks ({ins[0]} and {info})")
            for k in range(r):
                if k == axis:
                    continue
                a, b = out[k], info.shape[k]
                if isinstance(a, int) and isinstance(b, int) and a != b:
                    raise v.fail(f"input shapes {ins[0]} and {info} differ outside axis {axis}")
                out[k] = _merge_dim(a, b)
            total = total + info.shape[axis]
        out[axis] = total
        return [OutInfo(ins[0].dtype, tuple(out))]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        if len(outs[0].shape) != 1 or not _value_ok(outs[0].shape[0]):
            return [None]
        vals: list[DimLike] = []
        for k in range(len(v.inputs)):
            if not v.has_input(k):
                continue
            kv = v.known_value(k)
            if kv is None:
                return [None]
            vals.extend(kv)
        return [tuple(vals)]

    def emit(self, v: NodeView, e) -> str:
        axis = self._axis(v)
        out = e.out_info(0)
        outer = numel(out.shape[:axis])
        post = numel(out.shape[axis + 1:])
        inner_out = out.shape[axis] * post
        lines = []
        pos: DimLike = 0
        for k, info in enumerate(v.inputs):
            if info is None:
                continue
            lines += _same_dim_checks(e, [(info.shape[a], out.shape[a]) for a in range(info.rank) if a != axis],
                                      "input shapes differ outside the concatenation axis")
            inner = info.shape[axis] * post
            if not _is(info.size, 0):
                lines.append(_copy(e, [outer, inner], e.out(), pos * post, [inner_out, 1],
                                   e.inp(k), 0, [inner, 1]))
            pos = pos + info.shape[axis]
        return "\n".join(lines)


@register
class Split(Operator):
    """ONNX Split: sizes as attribute (opset < 13) or input, equal parts, or num_outputs (opset 18)
    with a smaller last chunk."""

    op_type = "Split"
    static_inputs = (1,)

    def _sizes(self, v: NodeView) -> tuple[int, list[DimLike]]:
        x = v.input(0)
        axis = normalize_axis(int(v.attr("axis", 0)), x.rank, v)
        d = x.shape[axis]
        n = len(v.node.outputs)
        if v.opset < 2 and v.has_input(1):
            split = v.require_value(1, "the split sizes")
        elif v.opset < 13:
            split = v.attr("split")
        else:
            split = v.require_value(1, "the split sizes") if v.has_input(1) else None
        if split is not None and len(split) > 0:
            split = list(split)
            if len(split) != n:
                raise v.fail(f"{len(split)} split sizes given for {n} outputs")
            total: DimLike = 0
            for s in split:
                if isinstance(s, int) and s < 0:
                    raise v.fail(f"negative split size in {split}")
                total = total + s
            if isinstance(total, int) and isinstance(d, int) and total != d:
                raise v.fail(f"split sizes {split} do not add up to dimension {d} of axis {axis}")
            return axis, split
        parts = v.attr("num_outputs") if v.opset >= 18 else None
        parts = int(parts) if parts is not None else n
        if parts != n:
            raise v.fail(f"num_outputs={parts} but the node has {n} outputs")
        if isinstance(d, int):
            if d % n == 0:
                return axis, [d // n] * n
            # chunks of ceil(d / n), the last ones smaller (possibly empty when n does not divide
            # well, e.g. 5 into 4 gives 2, 2, 1, 0: what the reference implementation produces)
            chunk = d // n + 1
            return axis, [min(chunk, max(0, d - k * chunk)) for k in range(n)]
        try:
            return axis, [d // n] * n
        except ShapeInferenceError:
            raise v.fail(f"cannot split the symbolic dimension {d} into {n} equal parts") from None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        axis, sizes = self._sizes(v)
        outs = []
        for s in sizes:
            shape = list(x.shape)
            shape[axis] = s
            outs.append(OutInfo(x.dtype, tuple(shape)))
        return outs

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        val = v.known_value(0)
        _, sizes = self._sizes(v)
        if val is None or v.input(0).rank != 1 or not _ints(sizes):
            return [None] * len(outs)
        res, pos = [], 0
        for s in sizes:
            res.append(tuple(val[pos:pos + s]))
            pos += s
        return res

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        axis, sizes = self._sizes(v)
        outer = numel(x.shape[:axis])
        post = numel(x.shape[axis + 1:])
        in_inner = x.shape[axis] * post
        total: DimLike = 0
        for s in sizes:
            total = total + s
        lines = _same_dim_checks(e, [(total, x.shape[axis])], "split sizes do not add up to the input dimension")
        pos: DimLike = 0
        for k, s in enumerate(sizes):
            if k < len(v.node.outputs) and v.node.outputs[k]:
                inner = s * post
                lines.append(_copy(e, [outer, inner], e.out(k), 0, [inner, 1], e.inp(0), pos * post, [in_inner, 1]))
            pos = pos + s
        return "\n".join(lines)


# -- Slice ----------------------------------------------------------------------------------------

def _slice_axis(v: NodeView, d: DimLike, s: DimLike, en: DimLike, st: int,
                checks: list[tuple[DimLike, DimLike]]) -> tuple[DimLike, DimLike]:
    """(start, size) of slicing a dimension ``d``; records run-time checks for symbolic cases."""
    if st == 0:
        raise v.fail("a slice step is 0")
    if isinstance(d, int) and isinstance(s, int) and isinstance(en, int):
        if s < 0:
            s += d
        if en < 0:
            en += d
        if st > 0:
            s = min(max(s, 0), d)
            en = min(max(en, 0), d)
        else:
            s = min(max(s, 0), d - 1)
            en = min(max(en, -1), d - 1)
        size = max(0, -((s - en) // st))
        return s, size

    def bound(i: DimLike, is_end: bool) -> DimLike:
        if isinstance(i, Dim):
            checks.append((i, d))
            return i
        if st > 0:
            if i >= BIG:
                return d
            if i <= -BIG:
                return 0
            if i >= 0:
                checks.append((i, d))
                return i
            checks.append((-i, d))
            return d + i
        if i >= BIG:
            return d - 1
        if i <= -BIG:
            return -1 if is_end else 0
        if i >= 0:
            checks.append((i + 1, d))
            return i
        checks.append((-i - (1 if is_end else 0), d))
        return d + i

    s2, en2 = bound(s, False), bound(en, True)
    diff = en2 - s2 if st > 0 else s2 - en2
    a = abs(st)
    if isinstance(diff, int):
        return s2, max(0, -((-diff) // a))
    checks.append((s2, en2) if st > 0 else (en2, s2))
    if a == 1:
        return s2, diff
    try:
        return s2, diff // a
    except ShapeInferenceError:
        raise v.fail(f"slicing the symbolic extent {diff} with step {st} is not supported") from None


@register
class Slice(Operator):
    """ONNX Slice: starts/ends/axes/steps as attributes (opset < 10) or compile-time inputs;
    negative steps, clamping, INT_MAX ends; symbolic dimensions sliced with run-time checks."""

    op_type = "Slice"
    static_inputs = (1, 2, 3, 4)

    def _params(self, v: NodeView):
        x = v.input(0)
        r = x.rank
        if v.opset < 10:
            starts = list(v.attr("starts", []))
            ends = list(v.attr("ends", []))
            axes = v.attr("axes")
            steps = None
        else:
            starts = list(v.require_value(1, "the slice starts"))
            ends = list(v.require_value(2, "the slice ends"))
            axes = v.require_value(3, "the slice axes") if v.has_input(3) else None
            steps = v.require_value(4, "the slice steps") if v.has_input(4) else None
        if len(starts) != len(ends):
            raise v.fail(f"{len(starts)} starts but {len(ends)} ends")
        axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
        steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
        if len(axes) != len(starts) or len(steps) != len(starts):
            raise v.fail("starts, ends, axes and steps have different lengths")
        axes = [normalize_axis(a, r, v) for a in axes]
        if len(set(axes)) != len(axes):
            raise v.fail(f"repeated axes {axes}")
        start: list[DimLike] = [0] * r
        size: list[DimLike] = list(x.shape)
        step = [1] * r
        checks: list[tuple[DimLike, DimLike]] = []
        for a, s, en, st in zip(axes, starts, ends, steps):
            start[a], size[a] = _slice_axis(v, x.shape[a], s, en, st, checks)
            step[a] = st
        return start, size, step, checks

    def infer(self, v: NodeView) -> list[OutInfo]:
        _, size, _, _ = self._params(v)
        return [OutInfo(v.input(0).dtype, tuple(size))]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        val = v.known_value(0)
        if val is None or v.input(0).rank != 1:
            return [None]
        start, size, step, _ = self._params(v)
        if not (isinstance(start[0], int) and isinstance(size[0], int)):
            return [None]
        return [tuple(val[start[0] + i * step[0]] for i in range(size[0]))]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        start, size, step, checks = self._params(v)
        ist = strides(x.shape)
        off: DimLike = 0
        for a in range(x.rank):
            off = off + start[a] * ist[a]
        lines = _checks(e, checks, "slice bounds fall outside the input for this batch size")
        lines.append(_copy(e, size, e.out(), 0, strides(size), e.inp(0), off,
                           [ist[a] * step[a] for a in range(x.rank)]))
        return "\n".join(lines)


@register
class SliceFixed(Operator):
    """Internal (domain ``sofie``): a Slice whose starts and ends are read at run time while its
    extent along each sliced axis (attribute ``sizes``) is fixed, as the frontend proves for
    bounds that differ by a constant (``frontends/slice_bounds.py``: ``Slice(x, i, i + 1)`` in a
    Loop body). The bounds are clamped as ONNX says at run time; bounds that give another extent
    (outside the input) throw, naming the node. ``axes`` and ``steps`` are compile-time."""

    op_type = "SliceFixed"
    domain = "sofie"
    internal = True

    def check(self, v: NodeView) -> str | None:
        for k in (1, 2):
            if v.input(k).dtype.name not in INDEX_TYPES:
                return f"slice bounds must be int32 or int64, got {v.input(k).dtype.name}"
        return None

    def _params(self, v: NodeView) -> tuple[list[int], list[int], list[int]]:
        x = v.input(0)
        axes = [normalize_axis(int(a), x.rank, v) for a in v.attr("axes", [])]
        steps, sizes = [int(s) for s in v.attr("steps", [])], [int(s) for s in v.attr("sizes", [])]
        if not (len(axes) == len(steps) == len(sizes) == v.input(1).size == v.input(2).size):
            raise v.fail("axes, steps, sizes, starts and ends have different lengths")
        if len(set(axes)) != len(axes) or 0 in steps or min(sizes, default=0) < 0:
            raise v.fail(f"invalid axes {axes}, steps {steps} or sizes {sizes}")
        return axes, steps, sizes

    def infer(self, v: NodeView) -> list[OutInfo]:
        axes, _, sizes = self._params(v)
        shape = list(v.input(0).shape)
        for a, n in zip(axes, sizes):
            shape[a] = n
        return [OutInfo(v.input(0).dtype, tuple(shape))]

    def evaluate(self, v: NodeView, inputs: list) -> list:
        x, starts, ends = inputs[0], inputs[1].reshape(-1), inputs[2].reshape(-1)
        axes, steps, sizes = self._params(v)
        index = [slice(None)] * x.ndim
        for k, a in enumerate(axes):
            index[a] = slice(int(starts[k]), int(ends[k]), steps[k])
        out = x[tuple(index)]
        if any(out.shape[a] != n for a, n in zip(axes, sizes)):
            raise v.fail(f"the slice bounds give shape {list(out.shape)}, not the fixed extents {sizes}")
        return [out]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        axes, steps, sizes = self._params(v)
        ist = strides(x.shape)
        lines, offs = [], []
        for k, (a, st, n) in enumerate(zip(axes, steps, sizes)):
            d, s, en, ln = _cx(e, x.shape[a]), e.tmp("s"), e.tmp("e"), e.tmp("n")
            lo, hi = ("0", d) if st > 0 else ("0", f"{d} - 1")
            elo = "0" if st > 0 else "-1"
            lines += [
                f"{I64} {s} = static_cast<{I64}>({e.inp(1)}[{k}]), {en} = static_cast<{I64}>({e.inp(2)}[{k}]);",
                f"if ({s} < 0) {s} += {d};",
                f"if ({en} < 0) {en} += {d};",
                f"{s} = std::min<{I64}>(std::max<{I64}>({s}, {lo}), {hi});",
                f"{en} = std::min<{I64}>(std::max<{I64}>({en}, {elo}), {hi});",
                (f"const {I64} {ln} = {en} > {s} ? ({en} - {s} + {st - 1}) / {st} : 0;" if st > 0 else
                 f"const {I64} {ln} = {s} > {en} ? ({s} - {en} + {-st - 1}) / {-st} : 0;"),
                f"if ({ln} != {n}) "
                + e.fail(f"the run-time slice bounds along axis {a} take a different number of elements than "
                         f"the {n} the model is compiled for (a bound outside the input)"),
            ]
            offs.append(_term(e, s, ist[a]))
        shape = list(x.shape)
        for a, n in zip(axes, sizes):
            shape[a] = n
        step = [1] * x.rank
        for a, st in zip(axes, steps):
            step[a] = st
        lines.append(_copy(e, shape, e.out(), 0, strides(shape), e.inp(0), _sum(offs),
                           [ist[a] * step[a] for a in range(x.rank)]))
        return "\n".join(lines)


# -- Gather family --------------------------------------------------------------------------------

def _index_check(v: NodeView, k: int) -> str | None:
    dt = v.input(k).dtype.name
    if dt not in INDEX_TYPES:
        return f"indices must be int32 or int64, got {dt}"
    return None


@register
class Gather(Operator):
    """ONNX Gather along an axis; indices of any rank, negative indices wrap, out-of-range throws."""

    op_type = "Gather"

    def check(self, v: NodeView) -> str | None:
        return _index_check(v, 1)

    def _axis(self, v: NodeView) -> int:
        return normalize_axis(int(v.attr("axis", 0)), v.input(0).rank, v)

    def infer(self, v: NodeView) -> list[OutInfo]:
        x, ind = v.input(0), v.input(1)
        if x.rank == 0:
            raise v.fail("data must have rank >= 1")
        a = self._axis(v)
        return [OutInfo(x.dtype, tuple(x.shape[:a]) + tuple(ind.shape) + tuple(x.shape[a + 1:]))]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        data, ind = v.known_value(0), v.known_value(1)
        if data is None or ind is None or v.input(0).rank != 1 or not _ints(ind):
            return [None]
        n = len(data)
        res = []
        for i in ind:
            i = i + n if i < 0 else i
            if not 0 <= i < n:
                return [None]
            res.append(data[i])
        return [tuple(res)]

    def emit(self, v: NodeView, e) -> str:
        x, ind = v.input(0), v.input(1)
        a = self._axis(v)
        outer = numel(x.shape[:a])
        d = x.shape[a]
        inner = numel(x.shape[a + 1:])
        n = ind.size
        if any(_is(s, 0) for s in (outer, inner, n)):
            return "// empty output"
        o, j, k = e.tmp("o"), e.tmp("j"), e.tmp("k")
        lines = [f"for ({I64} {o} = 0; {o} < {_cx(e, outer)}; ++{o})",
                 f"for ({I64} {j} = 0; {j} < {_cx(e, n)}; ++{j}) {{"]
        lines += ["   " + s for s in _index_code(e, k, f"{e.inp(1)}[{j}]", d, "index out of range in Gather")]
        if _is(inner, 1):
            lines.append(f"   {e.out()}[{o} * {_cx(e, n)} + {j}] = {e.inp(0)}[{o} * {_cx(e, d)} + {k}];")
        else:
            # rows copied by std::copy_n (memmove for plain types): an element loop is not
            # vectorised by cling, which cannot rule out that the rows overlap
            lines.append(f"   std::copy_n({e.inp(0)} + ({o} * {_cx(e, d)} + {k}) * {_cx(e, inner)}, {_cx(e, inner)}, "
                         f"{e.out()} + ({o} * {_cx(e, n)} + {j}) * {_cx(e, inner)});")
        lines.append("}")
        return "\n".join(lines)


@register
class GatherElements(Operator):
    """ONNX GatherElements: out[i][j][k] = data[index][j][k] along the axis (checked)."""

    op_type = "GatherElements"

    def check(self, v: NodeView) -> str | None:
        return _index_check(v, 1)

    def _axis(self, v: NodeView) -> int:
        return normalize_axis(int(v.attr("axis", 0)), v.input(0).rank, v)

    def infer(self, v: NodeView) -> list[OutInfo]:
        x, ind = v.input(0), v.input(1)
        if x.rank != ind.rank or x.rank == 0:
            raise v.fail(f"data {x} and indices {ind} must have the same rank >= 1")
        a = self._axis(v)
        for k in range(x.rank):
            if k != a and isinstance(x.shape[k], int) and isinstance(ind.shape[k], int) and ind.shape[k] > x.shape[k]:
                raise v.fail(f"indices {ind} do not fit in data {x} outside axis {a}")
        return [OutInfo(x.dtype, tuple(ind.shape))]

    def emit(self, v: NodeView, e) -> str:
        x, ind = v.input(0), v.input(1)
        a = self._axis(v)
        dst = strides(x.shape)
        lines = _checks(e, [(ind.shape[k], x.shape[k]) for k in range(x.rank) if k != a],
                        "indices do not fit in data outside the gather axis")
        data_st = [0 if k == a else dst[k] for k in range(x.rank)]
        k = e.tmp("k")

        def body(o: list[str]) -> str:
            code = _index_code(e, k, f"{e.inp(1)}[{o[0]}]", x.shape[a], "index out of range in GatherElements")
            code.append(f"{e.out()}[{o[0]}] = {e.inp(0)}[{_sum([o[1], _term(e, k, dst[a])])}];")
            return "\n".join(code)

        lines.append(_nest(e, ind.shape, [(0, strides(ind.shape)), (0, data_st)], body))
        return "\n".join(lines)


@register
class GatherND(Operator):
    """ONNX GatherND with batch_dims; every index is checked."""

    op_type = "GatherND"

    def check(self, v: NodeView) -> str | None:
        return _index_check(v, 1)

    def _dims(self, v: NodeView):
        x, ind = v.input(0), v.input(1)
        b = int(v.attr("batch_dims", 0))
        if ind.rank < 1:
            raise v.fail("indices must have rank >= 1")
        m = ind.shape[-1]
        if not isinstance(m, int):
            raise v.fail("the last dimension of indices must be static")
        if not 0 <= b < min(x.rank, ind.rank) or b + m > x.rank:
            raise v.fail(f"batch_dims={b} and index length {m} do not fit data {x} and indices {ind}")
        for k in range(b):
            if isinstance(x.shape[k], int) and isinstance(ind.shape[k], int) and x.shape[k] != ind.shape[k]:
                raise v.fail(f"batch dimensions of data {x} and indices {ind} differ")
        return b, m

    def infer(self, v: NodeView) -> list[OutInfo]:
        x, ind = v.input(0), v.input(1)
        b, m = self._dims(v)
        return [OutInfo(x.dtype, tuple(ind.shape[:-1]) + tuple(x.shape[b + m:]))]

    def emit(self, v: NodeView, e) -> str:
        x, ind = v.input(0), v.input(1)
        b, m = self._dims(v)
        nb = numel(ind.shape[:b])
        n = numel(ind.shape[b:-1])
        s = numel(x.shape[b + m:])
        dbatch = numel(x.shape[b:])
        xst = strides(x.shape)
        lines = _same_dim_checks(e, [(x.shape[k], ind.shape[k]) for k in range(b)],
                                 "batch dimensions of data and indices differ")
        if any(_is(q, 0) for q in (nb, n, s)):
            return "\n".join([*lines, "// empty output"])
        bi, j, t, off = e.tmp("b"), e.tmp("j"), e.tmp("t"), e.tmp("off")
        lines.append(f"for ({I64} {bi} = 0; {bi} < {_cx(e, nb)}; ++{bi})")
        lines.append(f"for ({I64} {j} = 0; {j} < {_cx(e, n)}; ++{j}) {{")
        row = f"({bi} * {_cx(e, n)} + {j})"
        lines.append(f"   {I64} {off} = {bi} * {_cx(e, dbatch)};")
        for q in range(m):
            k = e.tmp("k")
            lines += ["   " + c for c in _index_code(e, k, f"{e.inp(1)}[{row} * {m} + {q}]", x.shape[b + q],
                                                     "index out of range in GatherND")]
            lines.append(f"   {off} += {k} * {_cx(e, xst[b + q])};")
        lines.append(f"   for ({I64} {t} = 0; {t} < {_cx(e, s)}; ++{t})")
        lines.append(f"      {e.out()}[{row} * {_cx(e, s)} + {t}] = {e.inp(0)}[{off} + {t}];")
        lines.append("}")
        return "\n".join(lines)


# -- Scatter family -------------------------------------------------------------------------------

_REDUCTIONS = ("none", "add", "mul", "max", "min")


def _copy_all(v: NodeView, e) -> str:
    info = v.input(0)
    return (f"std::copy({e.inp(0)}, {e.inp(0)} + {_cx(e, info.size)}, {e.out()});"
            if not _is(info.size, 0) else "")


@register
class ScatterElements(Operator):
    """ONNX ScatterElements (reduction none/add/mul/max/min); every index is checked."""

    op_type = "ScatterElements"

    def check(self, v: NodeView) -> str | None:
        reason = _index_check(v, 1)
        if reason:
            return reason
        if v.input(0).dtype != v.input(2).dtype:
            return "data and updates have different element types"
        if v.attr("reduction", "none") not in _REDUCTIONS:
            return f"reduction={v.attr('reduction')!r} is not supported"
        return None

    def _axis(self, v: NodeView) -> int:
        return normalize_axis(int(v.attr("axis", 0)), v.input(0).rank, v)

    def infer(self, v: NodeView) -> list[OutInfo]:
        x, ind, upd = v.input(0), v.input(1), v.input(2)
        if x.rank != ind.rank or x.rank == 0:
            raise v.fail(f"data {x} and indices {ind} must have the same rank >= 1")
        if ind.rank != upd.rank or any(isinstance(p, int) and isinstance(q, int) and p != q
                                       for p, q in zip(ind.shape, upd.shape)):
            raise v.fail(f"indices {ind} and updates {upd} must have the same shape")
        self._axis(v)
        return [OutInfo(x.dtype, tuple(x.shape))]

    def emit(self, v: NodeView, e) -> str:
        x, ind, upd = v.input(0), v.input(1), v.input(2)
        a = self._axis(v)
        red = v.attr("reduction", "none")
        xst = strides(x.shape)
        lines = [_copy_all(v, e)]
        lines += _checks(e, [(ind.shape[k], x.shape[k]) for k in range(x.rank) if k != a],
                         "indices do not fit in data outside the scatter axis")
        lines += _same_dim_checks(e, list(zip(ind.shape, upd.shape)), "indices and updates have different shapes")
        data_st = [0 if k == a else xst[k] for k in range(x.rank)]
        k, tgt = e.tmp("k"), e.tmp("tg")
        dt = x.dtype

        def body(o: list[str]) -> str:
            code = _index_code(e, k, f"{e.inp(1)}[{o[0]}]", x.shape[a], f"index out of range in {self.op_type}")
            code.append(f"const {I64} {tgt} = {_sum([o[1], _term(e, k, xst[a])])};")
            code.append(f"{e.out()}[{tgt}] = {_reduce_expr(red, f'{e.out()}[{tgt}]', f'{e.inp(2)}[{o[0]}]', dt)};")
            return "\n".join(code)

        lines.append(_nest(e, ind.shape, [(0, strides(ind.shape)), (0, data_st)], body))
        return "\n".join(line for line in lines if line)


@register
class Scatter(ScatterElements):
    """ONNX Scatter (opset 9-10, deprecated): ScatterElements without reduction."""

    op_type = "Scatter"


@register
class ScatterND(Operator):
    """ONNX ScatterND (reduction none/add/mul/max/min); every index is checked."""

    op_type = "ScatterND"

    def check(self, v: NodeView) -> str | None:
        if v.input(1).dtype.name != "int64":
            return f"indices must be int64, got {v.input(1).dtype.name}"
        if v.input(0).dtype != v.input(2).dtype:
            return "data and updates have different element types"
        if v.attr("reduction", "none") not in _REDUCTIONS:
            return f"reduction={v.attr('reduction')!r} is not supported"
        return None

    def _m(self, v: NodeView) -> int:
        x, ind, upd = v.input(0), v.input(1), v.input(2)
        if ind.rank < 1:
            raise v.fail("indices must have rank >= 1")
        m = ind.shape[-1]
        if not isinstance(m, int) or m > x.rank:
            raise v.fail(f"the last dimension of indices {ind} must be static and at most the rank of data {x}")
        want = tuple(ind.shape[:-1]) + tuple(x.shape[m:])
        if len(want) != upd.rank or any(isinstance(p, int) and isinstance(q, int) and p != q
                                        for p, q in zip(want, upd.shape)):
            raise v.fail(f"updates {upd} should have shape {[str(d) for d in want]}")
        return m

    def infer(self, v: NodeView) -> list[OutInfo]:
        self._m(v)
        x = v.input(0)
        return [OutInfo(x.dtype, tuple(x.shape))]

    def emit(self, v: NodeView, e) -> str:
        x, ind, upd = v.input(0), v.input(1), v.input(2)
        m = self._m(v)
        red = v.attr("reduction", "none")
        n = numel(ind.shape[:-1])
        s = numel(x.shape[m:])
        xst = strides(x.shape)
        want = tuple(ind.shape[:-1]) + tuple(x.shape[m:])
        lines = [_copy_all(v, e)]
        lines += _same_dim_checks(e, list(zip(want, upd.shape)), "updates have the wrong shape")
        if _is(n, 0) or _is(s, 0):
            return "\n".join(line for line in lines if line)
        j, t, off = e.tmp("j"), e.tmp("t"), e.tmp("off")
        lines.append(f"for ({I64} {j} = 0; {j} < {_cx(e, n)}; ++{j}) {{")
        lines.append(f"   {I64} {off} = 0;")
        for q in range(m):
            k = e.tmp("k")
            lines += ["   " + c for c in _index_code(e, k, f"{e.inp(1)}[{j} * {m} + {q}]", x.shape[q],
                                                     "index out of range in ScatterND")]
            lines.append(f"   {off} += {k} * {_cx(e, xst[q])};")
        tgt = f"{e.out()}[{off} + {t}]"
        lines.append(f"   for ({I64} {t} = 0; {t} < {_cx(e, s)}; ++{t})")
        lines.append(f"      {tgt} = {_reduce_expr(red, tgt, f'{e.inp(2)}[{j} * {_cx(e, s)} + {t}]', x.dtype)};")
        lines.append("}")
        return "\n".join(line for line in lines if line)


# -- Expand / Tile --------------------------------------------------------------------------------

@register
class Expand(Operator):
    """ONNX Expand: broadcast to a compile-time shape (possibly symbolic)."""

    op_type = "Expand"
    static_inputs = (1,)

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        shape = tuple(v.require_value(1, "the target shape"))
        for d in shape:
            if isinstance(d, int) and d < 0:
                raise v.fail(f"negative dimension in the target shape {list(map(str, shape))}")
        return [OutInfo(x.dtype, broadcast_shapes(tuple(x.shape), shape, where=f"{v.label}: "))]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        val = v.known_value(0)
        shape = outs[0].shape
        if val is None or len(shape) > 1:
            return [None]
        n = shape[0] if shape else 1
        if not _value_ok(n):
            return [None]
        if len(val) == 1:
            return [tuple(val) * n]
        return [tuple(val)] if len(val) == n else [None]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        out = e.out_info(0).shape
        r = len(out)
        aligned = [1] * (r - x.rank) + list(x.shape)
        ist = [0] * (r - x.rank) + strides(x.shape)
        src_st = [0 if _is(aligned[k], 1) else ist[k] for k in range(r)]
        lines = _same_dim_checks(e, [(aligned[k], out[k]) for k in range(r) if not _is(aligned[k], 1)],
                                 "the input does not broadcast to the target shape")
        lines.append(_copy(e, out, e.out(), 0, strides(out), e.inp(0), 0, src_st))
        return "\n".join(lines)


@register
class Tile(Operator):
    """ONNX Tile with compile-time repeats."""

    op_type = "Tile"
    static_inputs = (1,)

    def check(self, v: NodeView) -> str | None:
        if v.opset < 6:
            return "Tile-1 (tiles and axis inputs) is not supported; convert the model to opset >= 6"
        return None

    def _reps(self, v: NodeView) -> list[DimLike]:
        reps = list(v.require_value(1, "the repeats"))
        if len(reps) != v.input(0).rank:
            raise v.fail(f"{len(reps)} repeats for an input of rank {v.input(0).rank}")
        if any(isinstance(r, int) and r < 0 for r in reps):
            raise v.fail(f"negative repeats {reps}")
        return reps

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        reps = self._reps(v)
        return [OutInfo(x.dtype, tuple(d * r for d, r in zip(x.shape, reps)))]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        val = v.known_value(0)
        if val is None or v.input(0).rank != 1 or not _value_ok(outs[0].shape[0]):
            return [None]
        reps = self._reps(v)
        return [tuple(val) * int(reps[0])]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        reps = self._reps(v)
        out = e.out_info(0).shape
        ost = strides(out)
        ist = strides(x.shape)
        dims, dst, src = [], [], []
        for k in range(x.rank):
            dims += [reps[k], x.shape[k]]
            dst += [x.shape[k] * ost[k], ost[k]]
            src += [0, ist[k]]
        return _copy(e, dims, e.out(), 0, dst, e.inp(0), 0, src)


# -- Pad ------------------------------------------------------------------------------------------

@register
class Pad(Operator):
    """ONNX Pad: constant/reflect/edge/wrap; pads and value as attributes (opset < 11) or inputs
    (pads and axes at compile time, the constant value at run time); negative pads crop."""

    op_type = "Pad"
    static_inputs = (1, 3)

    def check(self, v: NodeView) -> str | None:
        mode = v.attr("mode", "constant")
        if mode not in ("constant", "reflect", "edge", "wrap"):
            return f"mode={mode!r} is not supported"
        if v.opset >= 11 and v.has_input(2) and v.input(2).dtype != v.input(0).dtype:
            return "constant_value has a different element type than data"
        return None

    def _pads(self, v: NodeView) -> list[int]:
        x = v.input(0)
        r = x.rank
        if v.opset < 11:
            pads = v.attr("pads", v.attr("paddings"))
            if pads is None:
                raise v.fail("the pads attribute is required")
            pads = list(pads)
            axes = list(range(r))
        else:
            pads = list(v.require_value(1, "the pads"))
            if v.opset >= 18 and v.has_input(3):
                axes = [normalize_axis(int(a), r, v) for a in v.require_value(3, "the pad axes")]
            else:
                axes = list(range(r))
        if len(pads) != 2 * len(axes):
            raise v.fail(f"{len(pads)} pads given for {len(axes)} axes")
        if not _ints(pads):
            raise v.fail("symbolic pads are not supported")
        full = [0] * (2 * r)
        for k, a in enumerate(axes):
            full[a] = int(pads[k])
            full[a + r] = int(pads[k + len(axes)])
        return full

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        r = x.rank
        pads = self._pads(v)
        out = []
        for k, d in enumerate(x.shape):
            o = d + pads[k] + pads[k + r]
            if isinstance(o, int) and o < 0:
                raise v.fail(f"pads {pads} crop dimension {k} ({d}) below zero")
            out.append(o)
        mode = v.attr("mode", "constant")
        if mode != "constant":
            for k, d in enumerate(x.shape):
                if _is(d, 0) and (pads[k] > 0 or pads[k + r] > 0):
                    raise v.fail(f"mode {mode!r} cannot pad the empty dimension {k}")
        return [OutInfo(x.dtype, tuple(out))]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        r = x.rank
        dt = x.dtype
        pads = self._pads(v)
        out = e.out_info(0).shape
        mode = v.attr("mode", "constant")
        ist, ost = strides(x.shape), strides(out)
        lines: list[str] = []
        if mode == "constant":
            if v.opset < 11:
                val = e.lit(v.attr("value", 0.0), dt)
            elif v.has_input(2):
                c = v.const(2)
                if c is not None:
                    val = e.lit(c.reshape(-1)[0].item(), dt) if c.size else e.lit(0, dt)
                else:
                    val = e.tmp("cv")
                    lines.append(f"const {dt.cpp} {val} = {e.inp(2)}[0];")
            else:
                val = e.lit(0, dt)
            if not _is(numel(out), 0):
                lines.append(f"std::fill({e.out()}, {e.out()} + {_cx(e, numel(out))}, {val});")
            region: list[DimLike] = []
            src_off: DimLike = 0
            dst_off: DimLike = 0
            for k in range(r):
                b, a = pads[k], pads[k + r]
                size = x.shape[k] - max(0, -b) - max(0, -a)
                if isinstance(size, int) and size <= 0:
                    return "\n".join(lines)
                region.append(size)
                src_off = src_off + max(0, -b) * ist[k]
                dst_off = dst_off + max(0, b) * ost[k]
            if any(isinstance(s, Dim) for s in region) and any(p < 0 for p in pads):
                lines += _checks(e, [(0, s) for s in region], "negative pads crop more than the input holds")
            lines.append(_copy(e, region, e.out(), dst_off, ost, e.inp(0), src_off, ist))
            return "\n".join(lines)
        # edge / reflect / wrap: every output element maps to one element of the input region left
        # after negative pads crop it (as onnxruntime does); that region must not be empty
        for k, d in enumerate(x.shape):
            if pads[k] > 0 or pads[k + r] > 0:
                region = d - max(0, -pads[k]) - max(0, -pads[k + r])
                lines += _checks(e, [(1, region)], f"mode {mode} cannot pad an empty dimension")
        if _is(numel(out), 0):
            return "\n".join(lines)
        idx = [e.tmp("i") for _ in range(r)]
        body: list[str] = []
        prev = "0"
        for k in range(r):
            i = idx[k]
            b, a = pads[k], pads[k + r]
            lo = max(0, -b)
            d = _cx(e, x.shape[k] - lo - max(0, -a))
            ind = "   " * k
            body.append(f"{ind}for ({I64} {i} = 0; {i} < {_cx(e, out[k])}; ++{i}) {{")
            xk = e.tmp("x")
            body.append(f"{ind}   {I64} {xk} = {i if b <= 0 else f'{i} - {b}'};")
            if b > 0 or a > 0:
                if mode == "edge":
                    body.append(f"{ind}   {xk} = {xk} < 0 ? 0 : ({xk} >= {d} ? {d} - 1 : {xk});")
                elif mode == "wrap":
                    body.append(f"{ind}   {xk} %= {d}; if ({xk} < 0) {xk} += {d};")
                else:
                    p = e.tmp("per")
                    body.append(f"{ind}   const {I64} {p} = 2 * ({d} - 1);")
                    body.append(f"{ind}   if ({p} == 0) {xk} = 0; else {{ {xk} %= {p}; if ({xk} < 0) {xk} += {p}; "
                                f"if ({xk} >= {d}) {xk} = {p} - {xk}; }}")
            if lo:
                body.append(f"{ind}   {xk} += {lo};")
            off = e.tmp("s")
            body.append(f"{ind}   const {I64} {off} = {_sum([prev, _term(e, xk, ist[k])])};")
            prev = off
        oc = e.tmp("o")
        lines.append(f"{I64} {oc} = 0;")
        lines += body
        lines.append("   " * r + f"{e.out()}[{oc}++] = {e.inp(0)}[{prev}];")
        lines.append("}" * r)
        return "\n".join(lines)


# -- generators: Range, ConstantOfShape, EyeLike, Trilu, OneHot, NonZero ---------------------------

def _scalar(v: NodeView, i: int, what: str) -> DimLike | float:
    c = v.const(i)
    if c is not None:
        if c.size != 1:
            raise v.fail(f"{what} must be a scalar")
        x = c.reshape(-1)[0].item()
        return x if isinstance(x, float) else int(x)
    val = v.require_value(i, what)
    if len(val) != 1:
        raise v.fail(f"{what} must be a scalar")
    return val[0]


@register
class Range(Operator):
    """ONNX Range with compile-time start/limit/delta (the limit may be symbolic with delta 1)."""

    op_type = "Range"
    static_inputs = (0, 1, 2)

    def check(self, v: NodeView) -> str | None:
        dts = {v.input(k).dtype for k in range(3)}
        if len(dts) != 1:
            return "start, limit and delta have different element types"
        if v.input(0).dtype.name == "bool":
            return "bool is not a valid Range type"
        return None

    def _params(self, v: NodeView):
        start = _scalar(v, 0, "the start")
        limit = _scalar(v, 1, "the limit")
        delta = _scalar(v, 2, "the delta")
        if isinstance(delta, (int, float)) and delta == 0:
            raise v.fail("delta is 0")
        if any(isinstance(q, Dim) for q in (start, limit, delta)):
            if isinstance(delta, (Dim, float)):
                raise v.fail("a symbolic Range needs a constant integer delta")
            diff = limit - start
            if isinstance(diff, int):
                n = max(0, -((-diff) // delta))
            elif delta == 1:
                n = diff
            elif delta == -1:
                n = -diff
            else:
                try:
                    n = diff // delta
                except ShapeInferenceError:
                    raise v.fail(f"the length of a Range over {diff} with step {delta} is not known") from None
        else:
            dt = v.input(0).dtype.numpy
            # the length from the arithmetic first: a Range(0, 1e12, 1) must not be materialised
            if delta == 0 or not all(math.isfinite(float(x)) for x in (start, limit, delta)):
                raise v.fail(f"Range({start}, {limit}, {delta}) has no finite length")
            check_shape((max(0, math.ceil((limit - start) / delta)),), 8, f"{v.label}: output")
            n = len(np.arange(start, limit, delta).astype(dt))
        return start, delta, n

    def infer(self, v: NodeView) -> list[OutInfo]:
        _, _, n = self._params(v)
        return [OutInfo(v.input(0).dtype, (n,))]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        start, delta, n = self._params(v)
        if not outs[0].dtype.is_int or not _value_ok(n) or isinstance(delta, float) or isinstance(start, float):
            return [None]
        return [tuple(start + i * delta for i in range(n))]

    def emit(self, v: NodeView, e) -> str:
        dt = v.input(0).dtype
        start, delta, n = self._params(v)
        if _is(n, 0):
            return "// empty output"
        i = e.tmp("i")
        if dt.is_float:
            s, d = e.lit(start, dt), e.lit(delta, dt)
            return (f"for ({I64} {i} = 0; {i} < {_cx(e, n)}; ++{i})\n"
                    f"   {e.out()}[{i}] = {s} + static_cast<{dt.cpp}>({i}) * {d};")
        return (f"for ({I64} {i} = 0; {i} < {_cx(e, n)}; ++{i})\n"
                f"   {e.out()}[{i}] = static_cast<{dt.cpp}>({_cx(e, start)} + {i} * {_cx(e, delta)});")


@register
class ConstantOfShape(Operator):
    """ONNX ConstantOfShape: a compile-time (possibly symbolic) shape filled with one value."""

    op_type = "ConstantOfShape"
    static_inputs = (0,)

    @staticmethod
    def _value(v: NodeView) -> np.ndarray:
        val = v.attr("value")
        if val is None:
            return np.zeros(1, dtype=np.float32)
        return np.asarray(val).reshape(-1)

    def check(self, v: NodeView) -> str | None:
        try:
            dtype_from_numpy(self._value(v).dtype)
        except ShapeInferenceError as ex:
            return str(ex)
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        shape = tuple(v.require_value(0, "the shape"))
        if any(isinstance(d, int) and d < 0 for d in shape):
            raise v.fail(f"negative dimension in shape {list(map(str, shape))}")
        val = self._value(v)
        if val.size != 1:
            raise v.fail("value must hold exactly one element")
        return [OutInfo(dtype_from_numpy(val.dtype), shape)]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        shape = outs[0].shape
        if not outs[0].dtype.is_int or len(shape) > 1:
            return [None]
        n = shape[0] if shape else 1
        if not _value_ok(n):
            return [None]
        return [(int(self._value(v)[0]),) * n]

    def emit(self, v: NodeView, e) -> str:
        out = e.out_info(0)
        if _is(out.size, 0):
            return "// empty output"
        return f"std::fill({e.out()}, {e.out()} + {_cx(e, out.size)}, {e.lit(self._value(v)[0].item(), out.dtype)});"


@register
class EyeLike(Operator):
    """ONNX EyeLike: ones on the k-th diagonal of a matrix shaped like the input (dtype attribute)."""

    op_type = "EyeLike"
    static_inputs = (0,)

    def check(self, v: NodeView) -> str | None:
        if v.attr("dtype") is not None:
            try:
                dtype_from_onnx(v.attr("dtype"))
            except ShapeInferenceError as ex:
                return str(ex)
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        if x.rank != 2:
            raise v.fail(f"input must be a matrix, got {x}")
        dt = dtype_from_onnx(v.attr("dtype")) if v.attr("dtype") is not None else x.dtype
        return [OutInfo(dt, tuple(x.shape))]

    def emit(self, v: NodeView, e) -> str:
        out = e.out_info(0)
        rows, cols = out.shape
        k = int(v.attr("k", 0))
        dt = out.dtype

        def body(idx: list[str]) -> str:
            return (f"{e.out()}[{idx[0]} * {_cx(e, cols)} + {idx[1]}] = "
                    f"({idx[1]} - {idx[0]} == {k}) ? {e.lit(1, dt)} : {e.lit(0, dt)};")

        return _loops_idx(e, [rows, cols], body)


@register
class Trilu(Operator):
    """ONNX Trilu: upper or lower triangle of the last two axes; k read at run time if not constant."""

    op_type = "Trilu"

    def check(self, v: NodeView) -> str | None:
        if v.has_input(1) and v.input(1).dtype.name != "int64":
            return "k must be int64"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        if x.rank < 2:
            raise v.fail(f"input must have rank >= 2, got {x}")
        return [OutInfo(x.dtype, tuple(x.shape))]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        rows, cols = x.shape[-2], x.shape[-1]
        batch = numel(x.shape[:-2])
        lines = []
        if not v.has_input(1):
            k = "0"
        elif v.const(1) is not None:
            k = f"{I64}({int(v.const(1).reshape(-1)[0])}LL)"
        else:
            k = e.tmp("k")
            lines.append(f"const {I64} {k} = {e.inp(1)}[0];")
        upper = bool(v.attr("upper", 1))
        zero = e.lit(0, x.dtype)
        # Each row is a run of zeros and a run of copies split at one column (j - i >= k for
        # the upper triangle, j - i <= k for the lower), so the inner loops have no per-element
        # test and vectorise; k is clamped first so that i + k cannot overflow.
        kc = e.tmp("kc")
        lines.append(f"const {I64} {kc} = std::min<{I64}>(std::max<{I64}>({k}, -{_cx(e, rows)} - 1), "
                     f"{_cx(e, cols)} + 1);")
        C = _cx(e, cols)

        def body(idx: list[str]) -> str:
            o = f"({idx[0]} * {_cx(e, rows)} + {idx[1]}) * {C}"
            cut = f"{idx[1]} + {kc}" + ("" if upper else " + 1")
            x_, y_ = f"{e.inp(0)} + {o}", f"{e.out()} + {o}"
            if upper:
                runs = [f"std::fill_n({y_}, cut_, {zero});",
                        f"std::copy({x_} + cut_, {x_} + {C}, {y_} + cut_);"]
            else:
                runs = [f"std::copy({x_}, {x_} + cut_, {y_});",
                        f"std::fill_n({y_} + cut_, {C} - cut_, {zero});"]
            return "\n".join([f"const {I64} cut_ = std::min<{I64}>({C}, std::max<{I64}>(0, {cut}));", *runs])

        lines.append(_loops_idx(e, [batch, rows], body))
        return "\n".join(lines)


@register
class OneHot(Operator):
    """ONNX OneHot: compile-time depth; negative indices wrap; out-of-range ones give all off_value
    (as the specification says), never an out-of-bounds write."""

    op_type = "OneHot"
    static_inputs = (1,)

    def check(self, v: NodeView) -> str | None:
        if v.input(0).dtype.name == "bool":
            return "indices must be numeric"
        if v.input(2).rank != 1:
            return "values must be a 2-element vector"
        return None

    def _depth(self, v: NodeView) -> DimLike:
        d = _scalar(v, 1, "the depth")
        if isinstance(d, float):
            d = int(d)
        if isinstance(d, int) and d < 1:
            raise v.fail(f"depth {d} must be positive")
        return d

    def _axis(self, v: NodeView) -> int:
        return normalize_axis(int(v.attr("axis", -1)), v.input(0).rank + 1, v)

    def infer(self, v: NodeView) -> list[OutInfo]:
        ind, vals = v.input(0), v.input(2)
        if isinstance(vals.shape[0], int) and vals.shape[0] != 2:
            raise v.fail(f"values must have 2 elements, got {vals}")
        a = self._axis(v)
        d = self._depth(v)
        return [OutInfo(vals.dtype, (*ind.shape[:a], d, *ind.shape[a:]))]

    def emit(self, v: NodeView, e) -> str:
        ind, vals = v.input(0), v.input(2)
        a = self._axis(v)
        d = self._depth(v)
        out = e.out_info(0)
        outer = numel(ind.shape[:a])
        inner = numel(ind.shape[a:])
        if _is(out.size, 0):
            return "// empty output"
        lines = _same_dim_checks(e, [(vals.shape[0], 2)], "values must have 2 elements")
        lines.append(f"std::fill({e.out()}, {e.out()} + {_cx(e, out.size)}, {e.inp(2)}[0]);")
        o, t, k = e.tmp("o"), e.tmp("t"), e.tmp("k")
        read = f"{e.inp(0)}[{o} * {_cx(e, inner)} + {t}]"
        read = (f"sofie_rt::float_to_int<{I64}>({read})" if ind.dtype.is_float else f"static_cast<{I64}>({read})")
        dd = _cx(e, d)
        lines.append(f"for ({I64} {o} = 0; {o} < {_cx(e, outer)}; ++{o})")
        lines.append(f"   for ({I64} {t} = 0; {t} < {_cx(e, inner)}; ++{t}) {{")
        lines.append(f"      {I64} {k} = {read};")
        lines.append(f"      if ({k} < 0) {k} += {dd};")
        lines.append(f"      if ({k} >= 0 && {k} < {dd}) {e.out()}[({o} * {dd} + {k}) * {_cx(e, inner)} + {t}] = "
                     f"{e.inp(2)}[1];")
        lines.append("   }")
        return "\n".join(lines)


@register
class NonZero(Operator):
    """ONNX NonZero: the indices of the non-zero elements, [rank, count]. On a run-time input the
    count is a data-dependent size, bounded by the number of elements for memory planning."""

    op_type = "NonZero"

    @staticmethod
    def _symbol(v: NodeView) -> str:
        return "nnz_" + re.sub(r"[^A-Za-z0-9_]", "_", v.node.outputs[0])

    def infer(self, v: NodeView) -> list[OutInfo]:
        c = v.const(0)
        x = v.input(0)
        if c is not None:
            return [OutInfo(INT64, (c.ndim, int(np.count_nonzero(c))))]
        return [OutInfo(INT64, (x.rank, Dim.symbol(self._symbol(v))))]

    def data_dependent(self, v: NodeView) -> dict:
        if v.const(0) is not None:
            return {}
        return {self._symbol(v): v.input(0).size}

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        count = e.out_info(0).shape[1]
        pos = e.tmp("pos")
        n = e.tmp("n")
        st = strides(x.shape)
        lines = [f"{I64} {n} = 0;",
                 f"for ({I64} {pos} = 0; {pos} < {e.size_in(0)}; ++{pos}) {n} += {e.inp(0)}[{pos}] != 0;"]
        if isinstance(count, Dim):
            lines.append(f"{e.dim(count)} = {n};")
        if x.rank == 0:
            return "\n".join(lines) + "\n(void)" + n + ";"
        lines.append(f"{I64} {pos} = 0;")

        def body(idx: list[str]) -> str:
            flat = _sum([_term(e, i, s) for i, s in zip(idx, st)])
            code = [f"if ({e.inp(0)}[{flat}] != 0) {{"]
            code += [f"   {e.out()}[{q} * {n} + {pos}] = {i};" for q, i in enumerate(idx)]
            code += [f"   ++{pos};", "}"]
            return "\n".join(code)

        return "\n".join(lines) + "\n" + _loops_idx(e, x.shape, body)


# -- DepthToSpace / SpaceToDepth ------------------------------------------------------------------

def _block(v: NodeView) -> int:
    b = v.attr("blocksize")
    if b is None or int(b) < 1:
        raise v.fail("blocksize must be a positive integer")
    return int(b)


def _mode(v: NodeView) -> str:
    return str(v.attr("mode", "DCR")).upper()


@register
class DepthToSpace(Operator):
    """ONNX DepthToSpace (DCR and CRD modes)."""

    op_type = "DepthToSpace"

    def check(self, v: NodeView) -> str | None:
        if _mode(v) not in ("DCR", "CRD"):
            return f"mode={v.attr('mode')!r} is not supported"
        return None

    def _shape(self, v: NodeView) -> tuple[Shape, DimLike, int]:
        x = v.input(0)
        if x.rank != 4:
            raise v.fail(f"input must be 4-D, got {x}")
        b = _block(v)
        n, c, h, w = x.shape
        try:
            c2 = c // (b * b)
        except ShapeInferenceError:
            raise v.fail(f"channels {c} are not a multiple of blocksize^2 = {b * b}") from None
        if isinstance(c, int) and c % (b * b):
            raise v.fail(f"channels {c} are not a multiple of blocksize^2 = {b * b}")
        return (n, c2, h * b, w * b), c2, b

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(v.input(0).dtype, self._shape(v)[0])]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        _, c2, b = self._shape(v)
        n, c, h, w = x.shape
        hw = h * w
        dims = [n, c2, h, b, w, b]
        if _mode(v) == "DCR":
            src = [c * hw, hw, w, b * c2 * hw, 1, c2 * hw]
        else:
            src = [c * hw, b * b * hw, w, b * hw, 1, hw]
        return _copy(e, dims, e.out(), 0, strides(dims), e.inp(0), 0, src)


@register
class SpaceToDepth(Operator):
    """ONNX SpaceToDepth (DCR, and CRD since opset 28)."""

    op_type = "SpaceToDepth"

    def check(self, v: NodeView) -> str | None:
        if _mode(v) not in ("DCR", "CRD"):
            return f"mode={v.attr('mode')!r} is not supported"
        return None

    def _shape(self, v: NodeView) -> tuple[Shape, int]:
        x = v.input(0)
        if x.rank != 4:
            raise v.fail(f"input must be 4-D, got {x}")
        b = _block(v)
        n, c, h, w = x.shape
        try:
            h2, w2 = h // b, w // b
        except ShapeInferenceError:
            raise v.fail(f"spatial dimensions {h}x{w} are not multiples of blocksize {b}") from None
        if (isinstance(h, int) and h % b) or (isinstance(w, int) and w % b):
            raise v.fail(f"spatial dimensions {h}x{w} are not multiples of blocksize {b}")
        return (n, c * b * b, h2, w2), b

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(v.input(0).dtype, self._shape(v)[0])]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        (_, _, h2, w2), b = self._shape(v)
        n, c, h, w = x.shape
        chw, hw = c * h * w, h * w
        if _mode(v) == "DCR":
            dims = [n, b, b, c, h2, w2]
            src = [chw, w, 1, hw, b * w, b]
        else:
            dims = [n, c, b, b, h2, w2]
            src = [chw, hw, w, 1, b * w, b]
        return _copy(e, dims, e.out(), 0, strides(dims), e.inp(0), 0, src)


# -- ReverseSequence / Compress ---------------------------------------------------------------------

@register
class ReverseSequence(Operator):
    """ONNX ReverseSequence: per batch entry b, reverse the first ``sequence_lens[b]`` elements along
    the time axis (the rest is copied); batch and time axes are 0 and 1 in either order."""

    op_type = "ReverseSequence"

    def check(self, v: NodeView) -> str | None:
        if v.has_input(1) and v.input(1).dtype.name not in ("int64", "int32"):
            return f"sequence_lens must be int64, got {v.input(1).dtype.name}"
        return None

    def _axes(self, v: NodeView) -> tuple[int, int]:
        x = v.input(0)
        if x.rank < 2:
            raise v.fail(f"the input must have rank >= 2, got {x}")
        b = normalize_axis(int(v.attr("batch_axis", 1)), x.rank, v)
        t = normalize_axis(int(v.attr("time_axis", 0)), x.rank, v)
        if {b, t} != {0, 1}:
            raise v.fail(f"batch_axis={b} and time_axis={t} must be 0 and 1 (in either order)")
        return b, t

    def infer(self, v: NodeView) -> list[OutInfo]:
        x, lens = v.input(0), v.input(1)
        b, _ = self._axes(v)
        if lens.rank != 1 or (not isinstance(lens.shape[0], Dim) and not isinstance(x.shape[b], Dim)
                              and lens.shape[0] != x.shape[b]):
            raise v.fail(f"sequence_lens {lens} must be a vector of the batch size {x.shape[b]}")
        return [OutInfo(x.dtype, x.shape)]

    def emit(self, v: NodeView, e) -> str:
        # one block copy per (axis 0, axis 1) position: the elements past the two axes are
        # contiguous, and only which time step they come from depends on the batch entry
        x = v.input(0)
        b, t = self._axes(v)
        lens = e.inp(1)
        d0, d1 = _cx(e, x.shape[0]), _cx(e, x.shape[1])
        nb, nt = _cx(e, x.shape[b]), _cx(e, x.shape[t])
        inner = _cx(e, numel(x.shape[2:]))
        k, i, j, n, src = e.tmp("k"), e.tmp("i"), e.tmp("j"), e.tmp("n"), e.tmp("src")
        bi, ti = (i, j) if b == 0 else (j, i)
        s0, s1 = (src, j) if t == 0 else (i, src)
        return "\n".join([
            f"for ({I64} {k} = 0; {k} < {nb}; ++{k}) if ({lens}[{k}] < 0 || {lens}[{k}] > {nt}) "
            f"{e.fail('sequence_lens has a value outside [0, the time axis length]')}",
            f"for ({I64} {i} = 0; {i} < {d0}; ++{i})",
            f"   for ({I64} {j} = 0; {j} < {d1}; ++{j}) {{",
            f"      const {I64} {n} = {I64}({lens}[{bi}]);",
            f"      const {I64} {src} = {ti} < {n} ? {n} - 1 - {ti} : {ti};",
            f"      std::memcpy({e.out()} + ({i} * {d1} + {j}) * {inner}, {e.inp(0)} + ({s0} * {d1} + {s1}) * {inner}, "
            f"std::size_t({inner}) * sizeof({x.dtype.cpp}));",
            "   }",
        ])


@register
class Compress(Operator):
    """ONNX Compress: the slices (along ``axis``, or of the flattened input) where the boolean
    condition is true. With a run-time condition the output length is a data-dependent size,
    bounded by the axis length for memory planning."""

    op_type = "Compress"

    def check(self, v: NodeView) -> str | None:
        if v.has_input(1) and v.input(1).dtype.name != "bool":
            return f"condition must be bool, got {v.input(1).dtype.name}"
        return None

    @staticmethod
    def _symbol(v: NodeView) -> str:
        return "ncompress_" + re.sub(r"[^A-Za-z0-9_]", "_", v.node.outputs[0])

    def _axis(self, v: NodeView) -> int | None:
        axis = v.attr("axis")
        return None if axis is None else normalize_axis(int(axis), v.input(0).rank, v)

    def _length(self, v: NodeView) -> DimLike:
        x = v.input(0)
        axis = self._axis(v)
        return x.size if axis is None else x.shape[axis]

    def infer(self, v: NodeView) -> list[OutInfo]:
        x, cond = v.input(0), v.input(1)
        if cond.rank != 1:
            raise v.fail(f"condition {cond} must be a vector")
        axis = self._axis(v)
        c = v.const(1)
        if self._static(v):
            length = int(self._length(v))
            if c.shape[0] > length and c[length:].any():
                raise v.fail(f"condition has true entries beyond the {length} slices of the input")
            count: DimLike = int(np.count_nonzero(c[:length]))
        else:
            count = Dim.symbol(self._symbol(v))
        shape = (count,) if axis is None else tuple(count if k == axis else d for k, d in enumerate(x.shape))
        return [OutInfo(x.dtype, shape)]

    def _static(self, v: NodeView) -> bool:
        """Whether the output length is known at compile time (constant condition, static axis)."""
        return v.const(1) is not None and not isinstance(self._length(v), Dim)

    def data_dependent(self, v: NodeView) -> dict:
        return {} if self._static(v) else {self._symbol(v): self._length(v)}

    def emit(self, v: NodeView, e) -> str:
        x, cond = v.input(0), v.input(1)
        axis = self._axis(v)
        length = self._length(v)
        if axis is None:
            outer, inner = 1, 1
        else:
            outer, inner = numel(x.shape[:axis]), numel(x.shape[axis + 1:])
        count = e.out_info(0).shape[0 if axis is None else axis]
        n, m, k, o, d, i = (e.tmp(s) for s in ("n", "m", "k", "o", "d", "i"))
        c = e.inp(1)
        lines = [f"const {I64} {n} = std::min<{I64}>({e.dim(cond.shape[0])}, {_cx(e, length)});",
                 f"for ({I64} {d} = {n}; {d} < {e.dim(cond.shape[0])}; ++{d}) if ({c}[{d}]) "
                 f"{e.fail('condition has true entries beyond the slices of the input')}",
                 f"{I64} {m} = 0;",
                 f"for ({I64} {d} = 0; {d} < {n}; ++{d}) {m} += {c}[{d}] ? 1 : 0;"]
        if isinstance(count, Dim):
            lines.append(f"{e.dim(count)} = {m};")
        ni, no = _cx(e, inner), _cx(e, outer)
        lines += [f"for ({I64} {o} = 0; {o} < {no}; ++{o}) {{",
                  f"   {I64} {k} = 0;",
                  f"   for ({I64} {d} = 0; {d} < {n}; ++{d}) {{",
                  f"      if (!{c}[{d}]) continue;",
                  f"      for ({I64} {i} = 0; {i} < {ni}; ++{i})",
                  f"         {e.out()}[({o} * {m} + {k}) * {ni} + {i}] = {e.inp(0)}[({o} * {_cx(e, length)} + {d}) * "
                  f"{ni} + {i}];",
                  f"      ++{k};",
                  "   }",
                  "}"]
        return "\n".join(lines)


@register
class TensorScatter(Operator):
    """ONNX TensorScatter (opset 24): a copy of the cache with ``update`` written along the sequence
    axis at each batch entry's write index (``mode`` linear: indices past the end are an error;
    circular: they wrap)."""

    op_type = "TensorScatter"

    def check(self, v: NodeView) -> str | None:
        if v.attr("mode", "linear") not in ("linear", "circular"):
            return f"mode={v.attr('mode')!r} is not linear or circular"
        if v.has_input(2) and v.input(2).dtype != INT64:
            return f"write_indices must be int64, got {v.input(2).dtype.name}"
        if v.has_input(1) and v.input(1).dtype != v.input(0).dtype:
            return "past_cache and update must have the same element type"
        return None

    def _axis(self, v: NodeView) -> int:
        x = v.input(0)
        axis = normalize_axis(int(v.attr("axis", -2)), x.rank, v)
        if axis == 0:
            raise v.fail("axis cannot be the batch axis 0")
        return axis

    def infer(self, v: NodeView) -> list[OutInfo]:
        cache, upd = v.input(0), v.input(1)
        axis = self._axis(v)
        if upd.rank != cache.rank or any(isinstance(a, int) and isinstance(b, int) and a != b
                                         for k, (a, b) in enumerate(zip(cache.shape, upd.shape)) if k != axis):
            raise v.fail(f"update {upd} must have the cache's shape {cache} except along axis {axis}")
        if v.has_input(2) and v.input(2).rank != 1:
            raise v.fail(f"write_indices {v.input(2)} must be a vector of the batch size")
        return [OutInfo(cache.dtype, cache.shape)]

    def emit(self, v: NodeView, e) -> str:
        cache, upd = v.input(0), v.input(1)
        axis = self._axis(v)
        circular = v.attr("mode", "linear") == "circular"
        per_batch = _cx(e, numel(cache.shape[1:axis]))
        prefix = _cx(e, numel(cache.shape[:axis]))
        inner = _cx(e, numel(cache.shape[axis + 1:]))
        cap, seq = _cx(e, cache.shape[axis]), _cx(e, upd.shape[axis])
        p, s, c, i = e.tmp("p"), e.tmp("s"), e.tmp("c"), e.tmp("i")
        start = f"{e.inp(2)}[{p} / {per_batch}]" if v.has_input(2) else "0"
        wrap = (f"{c} = (({c} % {cap}) + {cap}) % {cap};" if circular else
                f"if ({c} < 0 || {c} >= {cap}) {e.fail('a write index plus the update length is outside the cache')}")
        return "\n".join([
            f"if (static_cast<const void *>({e.out()}) != static_cast<const void *>({e.inp(0)})) "
            f"std::memcpy({e.out()}, {e.inp(0)}, std::size_t({e.size_in(0)}) * sizeof({cache.dtype.cpp}));",
            f"if ({seq} > {cap}) {e.fail('the update is longer than the cache')}",
            f"for ({I64} {p} = 0; {p} < {prefix}; ++{p})",
            f"   for ({I64} {s} = 0; {s} < {seq}; ++{s}) {{",
            f"      {I64} {c} = {start} + {s};",
            f"      {wrap}",
            f"      for ({I64} {i} = 0; {i} < {inner}; ++{i})",
            f"         {e.out()}[({p} * {cap} + {c}) * {inner} + {i}] = {e.inp(1)}[({p} * {seq} + {s}) * {inner} + {i}];",
            "   }",
        ])


@register
class Unique(Operator):
    """ONNX Unique: the distinct elements (or slices along ``axis``), sorted or in order of first
    occurrence, with first-occurrence indices, inverse indices and counts. The number of distinct
    values is a data-dependent size, bounded by the input length for memory planning. Elements of
    at most 32 bits (the flattened input, or a vector) are radix-sorted as (order key, index)
    integers; slices and 64-bit elements are sorted as indices with an index tie-break. NaNs sort
    last and count as equal."""

    op_type = "Unique"

    @staticmethod
    def _symbol(v: NodeView) -> str:
        return "nunique_" + re.sub(r"[^A-Za-z0-9_]", "_", v.node.outputs[0] or "unique")

    def check(self, v: NodeView) -> str | None:
        if v.input(0).dtype.name == "bool":
            return "bool inputs are not supported"
        return None

    def _geom(self, v: NodeView) -> tuple[int | None, DimLike, DimLike, DimLike]:
        """(axis, outer, length, inner) of the slices compared."""
        x = v.input(0)
        axis = v.attr("axis")
        if axis is None:
            return None, 1, x.size, 1
        axis = normalize_axis(int(axis), x.rank, v)
        return axis, numel(x.shape[:axis]), x.shape[axis], numel(x.shape[axis + 1:])

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        axis, _, length, _ = self._geom(v)
        count = Dim.symbol(self._symbol(v))
        y = (count,) if axis is None else tuple(count if k == axis else d for k, d in enumerate(x.shape))
        return [OutInfo(x.dtype, y), OutInfo(INT64, (count,)), OutInfo(INT64, (length,)), OutInfo(INT64, (count,))]

    def data_dependent(self, v: NodeView) -> dict:
        return {self._symbol(v): self._geom(v)[2]}

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        n = self._geom(v)[2]
        return [(INT64, n)] * 5  # sorted order, group of each sorted position, group firsts, group order, rank

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        axis, outer, length, inner = self._geom(v)
        T = x.dtype.cpp
        X = e.inp(0)
        no, n, ni = _cx(e, outer), _cx(e, length), _cx(e, inner)
        perm, grp, first, order, rank = (e.ws(k) for k in range(5))
        o, i, j, g, r = (e.tmp(s) for s in ("o", "i", "j", "g", "r"))
        ng = e.tmp("ng")
        if outer == 1 and inner == 1 and x.dtype.itemsize <= 4:
            # single elements of at most 32 bits: (order key, index) integers radix-sorted (the
            # order key puts NaNs last and equal, -0 with +0), groups where the key changes
            key, prev, kv = e.tmp("key"), e.tmp("prev"), e.tmp("kv")
            lines = [
                f"if ({n} > {I64}(0xFFFFFFFFll)) {e.fail('Unique: more than 2^32 elements')}",
                f"std::uint64_t *{key} = reinterpret_cast<std::uint64_t *>({perm});",
                f"for ({I64} {i} = 0; {i} < {n}; ++{i}) "
                f"{key}[{i}] = (std::uint64_t(sofie_rt::topk_key({X}[{i}])) << 32) | std::uint64_t({i});",
                f"sofie_rt::radix_sort_high32({key}, reinterpret_cast<std::uint64_t *>({grp}), {n});",
                f"{I64} {ng} = 0;",
                f"std::uint64_t {prev} = 0;",
                f"for ({I64} {i} = 0; {i} < {n}; ++{i}) {{",
                f"   const std::uint64_t {kv} = {key}[{i}];",
                f"   {perm}[{i}] = {I64}({kv} & 0xFFFFFFFFu);",
                f"   if ({i} == 0 || ({kv} >> 32) != {prev}) {{ {first}[{ng}] = {perm}[{i}]; ++{ng}; }}",
                f"   {prev} = {kv} >> 32;",
                f"   {grp}[{i}] = {ng} - 1;",
                "}",
            ]
        else:
            lines = self._comparison_sort(e, x, X, T, no, n, ni, perm, grp, first, ng)
        lines += [
            f"{e.dim(e.out_info(0).shape[0 if axis is None else axis])} = {ng};",
            # output position of each group: sorted order, or order of first occurrence
            f"for ({I64} {g} = 0; {g} < {ng}; ++{g}) {order}[{g}] = {g};",
        ]
        if not int(v.attr("sorted", 1)):
            lines.append(f"std::sort({order}, {order} + {ng}, [&]({I64} p, {I64} q) {{ return {first}[p] < {first}[q]; }});")
        lines += [
            f"for ({I64} {r} = 0; {r} < {ng}; ++{r}) {rank}[{order}[{r}]] = {r};",
        ]
        y_off = f"({o} * {ng} + {r}) * {ni} + {i}"
        lines += [
            f"for ({I64} {r} = 0; {r} < {ng}; ++{r}) {{",
            f"   const {I64} {j} = {first}[{order}[{r}]];",
            f"   for ({I64} {o} = 0; {o} < {no}; ++{o})",
            f"      for ({I64} {i} = 0; {i} < {ni}; ++{i}) {e.out(0)}[{y_off}] = {X}[({o} * {n} + {j}) * {ni} + {i}];",
        ]
        if self._has_out(v, 1):
            lines.append(f"   {e.out(1)}[{r}] = {j};")
        lines.append("}")
        if self._has_out(v, 2):
            lines.append(f"for ({I64} {i} = 0; {i} < {n}; ++{i}) {e.out(2)}[{perm}[{i}]] = {rank}[{grp}[{i}]];")
        if self._has_out(v, 3):
            lines += [f"for ({I64} {r} = 0; {r} < {ng}; ++{r}) {e.out(3)}[{r}] = 0;",
                      f"for ({I64} {i} = 0; {i} < {n}; ++{i}) ++{e.out(3)}[{rank}[{grp}[{i}]]];"]
        return "\n".join(lines)

    @staticmethod
    def _comparison_sort(e, x, X: str, T: str, no: str, n: str, ni: str, perm: str, grp: str, first: str,
                         ng: str) -> list[str]:
        """Slices (or wider elements) sorted as indices through a three-way slice comparison,
        ties by index; first slice of each group and group of each sorted position."""
        a, b, o, i, lt, cmp = (e.tmp(s) for s in ("a", "b", "o", "i", "lt", "cmp"))
        if x.dtype.is_float:
            less = f"auto {lt} = []({T} p, {T} q) {{ return !std::isnan(p) && (std::isnan(q) || p < q); }};"
        else:
            less = f"auto {lt} = []({T} p, {T} q) {{ return p < q; }};"
        return [
            less,
            # three-way comparison of slices a and b (lexicographic over outer, inner)
            f"auto {cmp} = [&]({I64} {a}, {I64} {b}) -> int {{",
            f"   for ({I64} {o} = 0; {o} < {no}; ++{o})",
            f"      for ({I64} {i} = 0; {i} < {ni}; ++{i}) {{",
            f"         const {T} p = {X}[({o} * {n} + {a}) * {ni} + {i}], q = {X}[({o} * {n} + {b}) * {ni} + {i}];",
            f"         if ({lt}(p, q)) return -1;",
            f"         if ({lt}(q, p)) return 1;",
            "      }",
            "   return 0;",
            "};",
            f"for ({I64} {i} = 0; {i} < {n}; ++{i}) {perm}[{i}] = {i};",
            f"std::sort({perm}, {perm} + {n}, [&]({I64} p, {I64} q) {{ const int c = {cmp}(p, q); "
            "return c < 0 || (c == 0 && p < q); });",
            f"{I64} {ng} = 0;",
            f"for ({I64} {i} = 0; {i} < {n}; ++{i}) {{",
            f"   if ({i} == 0 || {cmp}({perm}[{i} - 1], {perm}[{i}]) != 0) {{ {first}[{ng}] = {perm}[{i}]; ++{ng}; }}",
            f"   {grp}[{i}] = {ng} - 1;",
            "}",
        ]

    @staticmethod
    def _has_out(v: NodeView, k: int) -> bool:
        return k < len(v.node.outputs) and bool(v.node.outputs[k])
