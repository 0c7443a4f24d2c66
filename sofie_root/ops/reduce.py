"""Reductions and normalising operators along axes.

* ``Reduce*`` (Mean, Sum, Max, Min, Prod, SumSquare, L1, L2, LogSum, LogSumExp): axes as an
  attribute (older opsets) or a compile-time input (ReduceSum since 13, the others since 18),
  ``keepdims``, ``noop_with_empty_axes``, empty-set reductions (the identity of the reduction).
* ``ArgMax`` / ``ArgMin`` (``select_last_index``), ``Softmax`` / ``LogSoftmax`` / ``Hardmax``
  (coerced to 2-D before opset 13, a single axis since), ``TopK`` and ``CumSum``.

Every operator sees its input as ``[O, A, I]`` (outer, reduced, inner) or, for multi-axis
reductions, as alternating groups of kept and reduced axes (adjacent axes of the same kind are
merged, axes of static size 1 dropped). Scratch buffers come from ``workspace``; nothing is
allocated per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..ir.dims import Dim, DimLike, numel
from ..ir.dtypes import FLOAT32, FLOAT64, INT64, DType
from .base import NodeView, Operator, OutInfo, normalize_axis, register

FLOATS = ("float32", "float64")
SIGNED_INTS = ("int32", "int64")
UNSIGNED_INTS = ("uint32", "uint64")
SUM_TYPES = FLOATS + SIGNED_INTS + UNSIGNED_INTS
SMALL_INTS = ("int8", "uint8", "int16", "uint16")
ORDERED = SUM_TYPES + SMALL_INTS


def _is1(d: DimLike) -> bool:
    return isinstance(d, int) and d == 1


def _is0(d: DimLike) -> bool:
    return isinstance(d, int) and d == 0


def _oai(shape: Sequence[DimLike], axis: int) -> tuple[DimLike, DimLike, DimLike]:
    """(outer, axis, inner) extents of ``shape`` around ``axis``."""
    return numel(shape[:axis]), shape[axis], numel(shape[axis + 1:])


def _lowest(dt: DType) -> str:
    if dt.name == "bool":
        return "false"
    if dt.is_float:
        return f"(-std::numeric_limits<{dt.cpp}>::infinity())"
    return f"std::numeric_limits<{dt.cpp}>::lowest()"


def _highest(dt: DType) -> str:
    if dt.name == "bool":
        return "true"
    if dt.is_float:
        return f"std::numeric_limits<{dt.cpp}>::infinity()"
    return f"std::numeric_limits<{dt.cpp}>::max()"


def _abs(x: str, dt: DType) -> str:
    if dt.is_float:
        return f"std::abs({x})"
    if dt.is_signed:
        return f"({x} < 0 ? -{x} : {x})"
    return x


def _via_double(fn: str, acc: str, dt: DType) -> str:
    if dt.is_float:
        return f"sofie_rt::vm::log({acc})" if fn == "log" else f"std::{fn}({acc})"
    return f"sofie_rt::cast_float_to_int<{dt.cpp}>(std::{fn}(double({acc})))"


# -- Reduce* ----------------------------------------------------------------------------------

class _Reduce(Operator):
    """Common part of the Reduce* operators; subclasses give the accumulation as C++ snippets."""

    static_inputs = (1,)
    axes_input_since = 18

    # C++ snippets: initial accumulator, accumulation step, final value (None: the accumulator)
    def init(self, dt: DType) -> str:
        return f"{dt.cpp}(0)"

    def step(self, acc: str, x: str, dt: DType) -> str:
        return f"{dt.cpp}({acc} + {x})"

    def fin(self, acc: str, count: str, dt: DType) -> str | None:
        return None

    #: the kind of sofie_rt::rows::reduce doing this reduction over contiguous rows (0 sum,
    #: 1 max, 2 min, 3 log-sum-exp, 4 product, 5 sum of squares, 6 sum of absolute values), or
    #: None; ``row_div`` divides a sum (ReduceMean); ``fin``, if any, runs on its results
    row_kind: int | None = None
    row_div = False

    #: Python fold of known integer values (shape arithmetic), or None
    fold: Callable[[list[DimLike]], DimLike] | None = None

    # -- shapes -------------------------------------------------------------------------------
    def _axes(self, v: NodeView) -> tuple[set[int] | None, bool]:
        """(reduced axes, noop); axes None means every axis."""
        x = v.input(0)
        if v.opset < self.axes_input_since:
            raw = v.attr("axes")
            raw = None if raw is None else list(raw)
        elif v.has_input(1):
            raw = [int(a) for a in v.require_value(1, "the axes")]
        else:
            raw = None
        if not raw:
            if v.opset >= self.axes_input_since and v.attr("noop_with_empty_axes", 0):
                return set(), True
            return None, False
        axes = {normalize_axis(a, x.rank, v) for a in raw}
        if len(axes) != len(raw):
            raise v.fail(f"repeated axes {raw}")
        return axes, False

    def _reduced(self, v: NodeView) -> set[int]:
        axes, _ = self._axes(v)
        return set(range(v.input(0).rank)) if axes is None else axes

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        axes = self._reduced(v)
        keep = v.attr("keepdims", 1)
        out = []
        for k, d in enumerate(x.shape):
            if k in axes:
                if keep:
                    out.append(1)
            else:
                out.append(d)
        return [OutInfo(x.dtype, tuple(out))]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        val = v.known_value(0)
        x = v.input(0)
        if val is None or x.rank > 1:
            return [None]
        axes, noop = self._axes(v)
        if noop or (axes is not None and not axes):
            return [val] if type(self) in (ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceMean) else [None]
        if self.fold is None or not val:
            return [None]
        try:
            return [(self.fold(list(val)),)]
        except Exception:
            return [None]

    def workspace(self, v: NodeView):
        return []

    # -- code ---------------------------------------------------------------------------------
    @staticmethod
    def _groups(shape: Sequence[DimLike], axes: set[int]) -> list[tuple[DimLike, bool]]:
        groups: list[list] = []
        for k, d in enumerate(shape):
            if _is1(d):
                continue
            red = k in axes
            if groups and groups[-1][1] == red:
                groups[-1][0] = groups[-1][0] * d
            else:
                groups.append([d, red])
        return [(d, r) for d, r in groups]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        dt = x.dtype
        axes = self._reduced(v)
        groups = self._groups(x.shape, axes)
        count = numel([x.shape[a] for a in axes])
        return self._emit_groups(v, e, dt, groups, e.dim(count), e.inp(0), e.out())

    def _finish(self, acc: str, count: str, dt: DType) -> str:
        f = self.fin(acc, count, dt)
        return acc if f is None else f

    def _emit_groups(self, v: NodeView, e, dt: DType, groups, count: str, x: str, y: str) -> str:
        T = dt.cpp
        reduced = [g for g in groups if g[1]]
        if not reduced:
            # nothing to reduce (noop, or every reduced axis has size 1): one step per element
            i, xv = e.tmp("i"), e.tmp("x")
            return (f"for (std::int64_t {i} = 0; {i} < {e.size_in(0)}; ++{i}) {{\n"
                    f"   const {T} {xv} = {x}[{i}];\n"
                    f"   {y}[{i}] = {self._finish(self.step(self.init(dt), xv, dt), count, dt)};\n}}")
        if len(reduced) == 1 and groups[-1][1] and dt.is_float and self.row_kind is not None:
            # [outer kept] x [reduced contiguous rows]: the runtime's row kernel (8-lane vectors)
            outer = groups[0][0] if len(groups) == 2 else 1
            div = f"{dt.cpp}({count})" if self.row_div else f"{dt.cpp}(1)"
            # (the generated loop of 8 partial products or sums of squares over rows of 64 took
            # 5-10x ReduceSum's time: 0.9x onnxruntime at [256, 50, 64], benchmarks/ops.py)
            return (f"sofie_rt::rows::reduce<{dt.cpp}>({x}, {y}, {e.dim(outer)}, {e.dim(groups[-1][0])}, "
                    f"{self.row_kind}, {div});" + self._finish_outputs(e, dt, y, count))
        if len(reduced) == 1 and groups[-1][1]:
            # [outer kept] x [reduced] (integers, or a subclass without a row kernel): a local
            # accumulator per output
            outer = groups[0][0] if len(groups) == 2 else 1
            r = groups[-1][0]
            o, j, acc, xv = e.tmp("o"), e.tmp("r"), e.tmp("acc"), e.tmp("x")
            return (f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o}) {{\n"
                    f"   {T} {acc} = {self.init(dt)};\n"
                    f"   for (std::int64_t {j} = 0; {j} < {e.dim(r)}; ++{j}) {{\n"
                    f"      const {T} {xv} = {x}[{o} * {e.dim(r)} + {j}];\n"
                    f"      {acc} = {self.step(acc, xv, dt)};\n"
                    f"   }}\n"
                    f"   {y}[{o}] = {self._finish(acc, count, dt)};\n}}")
        if (len(reduced) == 1 and not groups[-1][1] and len(groups) <= 3 and dt == FLOAT32
                and self.row_kind in (0, 1, 2)):
            # [outer kept] x [reduced] x [inner kept]: sofie_rt::rows::reduce_inner, vector
            # accumulators over the contiguous inner dimension (the walk below took twice their
            # time on [1, 50, 64] over axis 1; the same at batch 256, where memory bounds both)
            outer = groups[0][0] if len(groups) == 3 else 1
            div = f"float({count})" if self.row_div else "1.0f"
            return (f"sofie_rt::rows::reduce_inner<float>({x}, {y}, {e.dim(outer)}, {e.dim(groups[-2][0])}, "
                    f"{e.dim(groups[-1][0])}, {self.row_kind}, {div});" + self._finish_outputs(e, dt, y, count))
        # general: initialise the outputs, accumulate walking the input in order, finish
        lines = [self._fill(e, y, self.init(dt))]
        lines.append(self._walk(e, groups, lambda oo, xv: f"{y}[{oo}] = {self.step(f'{y}[{oo}]', xv, dt)};",
                                x, T))
        return "\n".join(lines) + self._fin_loop(e, dt, y, count)

    def _finish_outputs(self, e, dt: DType, y: str, count: str) -> str:
        """C++ applying ``fin`` to every output after a runtime kernel (ReduceL2's square root,
        ReduceLogSum's log); empty when the kernel divided (ReduceMean)."""
        return "" if self.row_div else self._fin_loop(e, dt, y, count)

    def _fin_loop(self, e, dt: DType, y: str, count: str) -> str:
        """C++ (after a newline) applying ``fin`` to every output in place; empty without one."""
        if self.fin("", count, dt) is None:
            return ""
        k = e.tmp("k")
        return (f"\nfor (std::int64_t {k} = 0; {k} < {e.size_out()}; ++{k})\n"
                f"   {y}[{k}] = {self.fin(f'{y}[{k}]', count, dt)};")

    @staticmethod
    def _fill(e, ptr: str, value: str) -> str:
        k = e.tmp("k")
        return f"for (std::int64_t {k} = 0; {k} < {e.size_out()}; ++{k})\n   {ptr}[{k}] = {value};"

    @staticmethod
    def _walk(e, groups, body: Callable[[str, str], str], x: str, T: str) -> str:
        """Nested loops over the merged groups in input order; ``body(out_index, x_value)``."""
        n = len(groups)
        ostride: list[DimLike] = [0] * n
        acc: DimLike = 1
        for j in reversed(range(n)):
            if not groups[j][1]:
                ostride[j] = acc
                acc = acc * groups[j][0]
        idx = [e.tmp("i") for _ in range(n)]
        ii, oo, xv = e.tmp("ii"), e.tmp("oo"), e.tmp("x")
        lines = [f"std::int64_t {ii} = 0;"]
        for j, (d, _) in enumerate(groups):
            lines.append("   " * j + f"for (std::int64_t {idx[j]} = 0; {idx[j]} < {e.dim(d)}; ++{idx[j]}) {{")
        terms = [f"{idx[j]} * {e.dim(ostride[j])}" for j in range(n) if not groups[j][1]]
        pad = "   " * n
        lines.append(f"{pad}const std::int64_t {oo} = {' + '.join(terms) if terms else '0'};")
        lines.append(f"{pad}const {T} {xv} = {x}[{ii}++];")
        lines.append(pad + body(oo, xv))
        lines.extend("   " * j + "}" for j in reversed(range(n)))
        return "\n".join(lines)


def _prod(vals: list[DimLike]) -> DimLike:
    r: DimLike = 1
    for x in vals:
        r = r * x
    return r


def _sum(vals: list[DimLike]) -> DimLike:
    r: DimLike = 0
    for x in vals:
        r = r + x
    return r


def _int_max(vals: list[DimLike]) -> DimLike:
    if any(isinstance(x, Dim) for x in vals):
        raise ValueError("symbolic")
    return max(vals)


def _int_min(vals: list[DimLike]) -> DimLike:
    if any(isinstance(x, Dim) for x in vals):
        raise ValueError("symbolic")
    return min(vals)


@register
class ReduceSum(_Reduce):
    """ONNX ReduceSum (axes as an input since opset 13)."""

    op_type = "ReduceSum"
    dtypes = SUM_TYPES
    axes_input_since = 13
    row_kind = 0
    fold = staticmethod(_sum)


@register
class ReduceMean(_Reduce):
    """ONNX ReduceMean (integer means truncate, like the reference)."""

    op_type = "ReduceMean"
    dtypes = SUM_TYPES
    row_kind, row_div = 0, True

    def fin(self, acc: str, count: str, dt: DType) -> str | None:
        if dt.is_float:
            return f"{acc} / {dt.cpp}({count})"
        return f"({count} == 0 ? {dt.cpp}(0) : {dt.cpp}({acc} / {dt.cpp}({count})))"


@register
class ReduceProd(_Reduce):
    """ONNX ReduceProd."""

    op_type = "ReduceProd"
    dtypes = SUM_TYPES
    row_kind = 4
    fold = staticmethod(_prod)

    def init(self, dt: DType) -> str:
        return f"{dt.cpp}(1)"

    def step(self, acc: str, x: str, dt: DType) -> str:
        return f"{dt.cpp}({acc} * {x})"


@register
class ReduceSumSquare(_Reduce):
    """ONNX ReduceSumSquare."""

    op_type = "ReduceSumSquare"
    dtypes = SUM_TYPES
    row_kind = 5

    def step(self, acc: str, x: str, dt: DType) -> str:
        return f"{dt.cpp}({acc} + {x} * {x})"


@register
class ReduceL1(_Reduce):
    """ONNX ReduceL1: sum of absolute values."""

    op_type = "ReduceL1"
    dtypes = SUM_TYPES
    row_kind = 6

    def step(self, acc: str, x: str, dt: DType) -> str:
        return f"{dt.cpp}({acc} + {_abs(x, dt)})"


@register
class ReduceL2(_Reduce):
    """ONNX ReduceL2: square root of the sum of squares (truncated for integers)."""

    op_type = "ReduceL2"
    dtypes = SUM_TYPES
    row_kind = 5

    def step(self, acc: str, x: str, dt: DType) -> str:
        return f"{dt.cpp}({acc} + {x} * {x})"

    def fin(self, acc: str, count: str, dt: DType) -> str | None:
        return _via_double("sqrt", acc, dt)


@register
class ReduceLogSum(_Reduce):
    """ONNX ReduceLogSum: log of the sum."""

    op_type = "ReduceLogSum"
    dtypes = SUM_TYPES
    row_kind = 0

    def fin(self, acc: str, count: str, dt: DType) -> str | None:
        return _via_double("log", acc, dt)


class _MaxMin(_Reduce):
    """ReduceMax / ReduceMin: NaN propagates (like numpy); bool is any / all."""

    dtypes = (*ORDERED, "bool")
    greater = True

    def init(self, dt: DType) -> str:
        return _lowest(dt) if self.greater else _highest(dt)

    def step(self, acc: str, x: str, dt: DType) -> str:
        if dt.name == "bool":
            return f"({acc} || {x})" if self.greater else f"({acc} && {x})"
        op = ">" if self.greater else "<"
        if dt.is_float:
            return f"(({x} {op} {acc} || {x} != {x}) ? {x} : {acc})"
        return f"{dt.cpp}({x} {op} {acc} ? {x} : {acc})"


@register
class ReduceMax(_MaxMin):
    """ONNX ReduceMax (bool since opset 20; the empty set gives the lowest value)."""

    op_type = "ReduceMax"
    row_kind = 1
    fold = staticmethod(_int_max)


@register
class ReduceMin(_MaxMin):
    """ONNX ReduceMin (bool since opset 20; the empty set gives the highest value)."""

    op_type = "ReduceMin"
    greater = False
    row_kind = 2
    fold = staticmethod(_int_min)


@register
class ReduceLogSumExp(_Reduce):
    """ONNX ReduceLogSumExp, computed stably: max + log(sum(exp(x - max))) over the finite maximum.

    Integer inputs (allowed before opset 28) are computed in double and truncated.
    """

    op_type = "ReduceLogSumExp"
    dtypes = SUM_TYPES

    def check(self, v: NodeView) -> str | None:
        if v.opset >= 28 and v.input(0).dtype.is_int:
            return "integer inputs were removed from ReduceLogSumExp in opset 28"
        return super().check(v)

    @staticmethod
    def _ct(dt: DType) -> DType:
        return dt if dt.is_float else FLOAT64

    def workspace(self, v: NodeView):
        x = v.input(0)
        groups = self._groups(x.shape, self._reduced(v))
        red = [g for g in groups if g[1]]
        if not red or (len(red) == 1 and groups[-1][1]):
            return []
        n = numel(self.infer(v)[0].shape)
        ct = self._ct(x.dtype)
        return [(ct, n), (ct, n)]

    def _emit_groups(self, v: NodeView, e, dt: DType, groups, count: str, x: str, y: str) -> str:
        T = dt.cpp
        ct = self._ct(dt)
        C = ct.cpp
        reduced = [g for g in groups if g[1]]
        ninf = _lowest(ct)

        def max_step(m: str, xv: str) -> str:
            return f"(std::isfinite({xv}) && {xv} > {m}) ? {xv} : {m}"

        def shift(m: str) -> str:
            return f"({m} == {ninf} ? {C}(0) : {m})"

        def result(s: str, m: str) -> str:
            r = f"sofie_rt::vm::log({s}) + {m}"
            return r if dt.is_float else f"sofie_rt::cast_float_to_int<{T}>({r})"

        if not reduced:
            i = e.tmp("i")
            return f"for (std::int64_t {i} = 0; {i} < {e.size_in(0)}; ++{i})\n   {y}[{i}] = {x}[{i}];"
        if len(reduced) == 1 and groups[-1][1] and dt.is_float:
            outer = groups[0][0] if len(groups) == 2 else 1
            return f"sofie_rt::rows::reduce<{T}>({x}, {y}, {e.dim(outer)}, {e.dim(groups[-1][0])}, 3, {T}(1));"
        if len(reduced) == 1 and groups[-1][1]:
            outer = groups[0][0] if len(groups) == 2 else 1
            r = e.dim(groups[-1][0])
            o, j, m, s = e.tmp("o"), e.tmp("r"), e.tmp("m"), e.tmp("s")
            row = e.tmp("row")
            return (f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o}) {{\n"
                    f"   const {T} *{row} = {x} + {o} * {r};\n"
                    f"   {C} {m} = {ninf};\n"
                    f"   for (std::int64_t {j} = 0; {j} < {r}; ++{j})\n"
                    f"      {m} = {max_step(m, f'{C}({row}[{j}])')};\n"
                    f"   {m} = {shift(m)};\n"
                    f"   {C} {s} = {C}(0);\n"
                    f"   for (std::int64_t {j} = 0; {j} < {r}; ++{j})\n"
                    f"      {s} += sofie_rt::vm::exp({C}({row}[{j}]) - {m});\n"
                    f"   {y}[{o}] = {result(s, m)};\n}}")
        mx, sm = e.ws(0), e.ws(1)
        k = e.tmp("k")
        lines = [f"for (std::int64_t {k} = 0; {k} < {e.size_out()}; ++{k}) {{ {mx}[{k}] = {ninf}; {sm}[{k}] = {C}(0); }}"]
        lines.append(self._walk(e, groups, lambda oo, xv: f"{mx}[{oo}] = {max_step(f'{mx}[{oo}]', xv)};", x, C))
        k = e.tmp("k")
        lines.append(f"for (std::int64_t {k} = 0; {k} < {e.size_out()}; ++{k})\n   {mx}[{k}] = {shift(f'{mx}[{k}]')};")
        lines.append(self._walk(e, groups, lambda oo, xv: f"{sm}[{oo}] += sofie_rt::vm::exp({xv} - {mx}[{oo}]);", x, C))
        k = e.tmp("k")
        lines.append(f"for (std::int64_t {k} = 0; {k} < {e.size_out()}; ++{k})\n"
                     f"   {y}[{k}] = {result(f'{sm}[{k}]', f'{mx}[{k}]')};")
        return "\n".join(lines)


# -- ArgMax / ArgMin --------------------------------------------------------------------------

class _Arg(Operator):
    dtypes = ORDERED
    greater = True

    def _split(self, v: NodeView) -> tuple[int, DimLike, DimLike, DimLike]:
        x = v.input(0)
        if x.rank == 0:
            raise v.fail("the input must have rank >= 1")
        axis = normalize_axis(v.attr("axis", 0), x.rank, v)
        o, a, i = _oai(x.shape, axis)
        if _is0(a):
            raise v.fail(f"cannot take the {self.op_type} of an empty axis")
        return axis, o, a, i

    def infer(self, v: NodeView) -> list[OutInfo]:
        axis, *_ = self._split(v)
        shape = list(v.input(0).shape)
        if v.attr("keepdims", 1):
            shape[axis] = 1
        else:
            shape.pop(axis)
        return [OutInfo(INT64, tuple(shape))]

    def workspace(self, v: NodeView):
        _, _, _, i = self._split(v)
        return [] if _is1(i) or v.input(0).dtype == FLOAT32 else [(v.input(0).dtype, i)]

    def _better(self, xv: str, best: str, dt: DType, last: bool) -> str:
        op = (">" if self.greater else "<") + ("=" if last else "")
        if not dt.is_float:
            return f"{xv} {op} {best}"
        if last:  # the last NaN wins; nothing beats a NaN that is not one
            return f"({xv} != {xv} || ({best} == {best} && {xv} {op} {best}))"
        return f"({xv} {op} {best} || ({xv} != {xv} && {best} == {best}))"

    def _row_two_pass(self, e, dt: DType, row: str, n: str, out: str, last: bool, scalar: str) -> str:
        """C++ for the index of the extreme of a contiguous row: the extreme value by a
        vectorised select over 8 lanes, then the first (last) position holding it. Rows with a NaN
        (counted in a vectorised pass) take ``scalar``, the one-pass loop, for NaN's ordering:
        about 4x faster than ``scalar`` alone on rows of 64 floats under cling."""
        T, op = dt.cpp, (">" if self.greater else "<")
        m, p, lane, j, nan = e.tmp("m"), e.tmp("p"), e.tmp("l"), e.tmp("j"), e.tmp("nan")
        find = (f"for (std::int64_t {j} = {n} - 1; {j} >= 0; --{j}) if ({row}[{j}] == {m}) {{ {out} = {j}; break; }}"
                if last else
                f"for (std::int64_t {j} = 0; {j} < {n}; ++{j}) if ({row}[{j}] == {m}) {{ {out} = {j}; break; }}")
        code = [f"{T} {m} = {row}[0];",
                "{",
                f"   {T} {p}[8];",
                f"   for (int {lane} = 0; {lane} < 8; ++{lane}) {p}[{lane}] = {row}[0];",
                f"   std::int64_t {j} = 0;",
                f"   for (; {j} + 8 <= {n}; {j} += 8)",
                f"      for (int {lane} = 0; {lane} < 8; ++{lane}) "
                f"{p}[{lane}] = {row}[{j} + {lane}] {op} {p}[{lane}] ? {row}[{j} + {lane}] : {p}[{lane}];",
                f"   for (int {lane} = 0; {lane} < 8; ++{lane}) {m} = {p}[{lane}] {op} {m} ? {p}[{lane}] : {m};",
                f"   for (; {j} < {n}; ++{j}) {m} = {row}[{j}] {op} {m} ? {row}[{j}] : {m};",
                "}"]
        if dt.is_float:
            code += [f"std::int64_t {nan} = 0;",
                     f"for (std::int64_t {j} = 0; {j} < {n}; ++{j}) {nan} += {row}[{j}] != {row}[{j}];",
                     f"if ({nan}) {{",
                     *("   " + line for line in scalar.splitlines()),
                     f"}} else {{\n   {out} = 0;\n   {find}\n}}"]
        else:
            code += [f"{out} = 0;", find]
        return "\n".join(code)

    def emit(self, v: NodeView, e) -> str:
        _, outer, a, inner = self._split(v)
        dt = v.input(0).dtype
        T = dt.cpp
        last = bool(v.attr("select_last_index", 0))
        x, y = e.inp(0), e.out()
        o, j, k = e.tmp("o"), e.tmp("a"), e.tmp("i")
        lines = []
        if not isinstance(a, int):
            lines.append(f"if ({e.dim(a)} == 0) {e.fail('empty reduction axis')}")
        if _is1(inner) and dt == FLOAT32:
            # sofie_rt::rows::arg_extreme: 8 rows at a time, each lane's extreme and its position
            # in one pass (the generated two-pass loop below searched each row element by element:
            # 2.7-3.6x its time on [N, 50, 64])
            lines.append(f"sofie_rt::rows::arg_extreme<float>({x}, {y}, {e.dim(outer)}, {e.dim(a)}, "
                         f"{'true' if self.greater else 'false'}, {'true' if last else 'false'});")
            return "\n".join(lines)
        if _is1(inner):
            best, bi, xv, row = e.tmp("best"), e.tmp("bi"), e.tmp("x"), e.tmp("row")
            scalar = (f"{T} {best} = {row}[0];\n"
                      f"std::int64_t {bi} = 0;\n"
                      f"for (std::int64_t {j} = 1; {j} < {e.dim(a)}; ++{j}) {{\n"
                      f"   const {T} {xv} = {row}[{j}];\n"
                      f"   if ({self._better(xv, best, dt, last)}) {{ {best} = {xv}; {bi} = {j}; }}\n"
                      f"}}\n"
                      f"{y}[{o}] = {bi};")
            body = self._row_two_pass(e, dt, row, e.dim(a), f"{y}[{o}]", last, scalar)
            lines.append(
                f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o}) {{\n"
                f"   const {T} *{row} = {x} + {o} * {e.dim(a)};\n"
                + "\n".join("   " + line for line in body.splitlines()) + "\n}")
            return "\n".join(lines)
        if dt == FLOAT32:
            # sofie_rt::rows::arg_extreme_cols: 32 columns at a time in vector lanes (the scalar
            # loop below, a branch per element: 0.72x onnxruntime on [N, 50, 64] axis 1)
            lines.append(f"sofie_rt::rows::arg_extreme_cols<float>({x}, {y}, {e.dim(outer)}, {e.dim(a)}, "
                         f"{e.dim(inner)}, {'true' if self.greater else 'false'}, {'true' if last else 'false'});")
            return "\n".join(lines)
        best, xv, xo, yo = e.ws(0), e.tmp("x"), e.tmp("xo"), e.tmp("yo")
        n_i = e.dim(inner)
        lines.append(
            f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o}) {{\n"
            f"   const {T} *{xo} = {x} + {o} * {e.dim(a * inner)};\n"
            f"   std::int64_t *{yo} = {y} + {o} * {n_i};\n"
            f"   for (std::int64_t {k} = 0; {k} < {n_i}; ++{k}) {{ {best}[{k}] = {xo}[{k}]; {yo}[{k}] = 0; }}\n"
            f"   for (std::int64_t {j} = 1; {j} < {e.dim(a)}; ++{j})\n"
            f"      for (std::int64_t {k} = 0; {k} < {n_i}; ++{k}) {{\n"
            f"         const {T} {xv} = {xo}[{j} * {n_i} + {k}];\n"
            f"         if ({self._better(xv, f'{best}[{k}]', dt, last)}) {{ {best}[{k}] = {xv}; {yo}[{k}] = {j}; }}\n"
            f"      }}\n}}")
        return "\n".join(lines)


@register
class ArgMax(_Arg):
    """ONNX ArgMax (keepdims, select_last_index; NaN counts as the maximum, like numpy)."""

    op_type = "ArgMax"


@register
class ArgMin(_Arg):
    """ONNX ArgMin (keepdims, select_last_index; NaN counts as the minimum, like numpy)."""

    op_type = "ArgMin"
    greater = False


# -- Softmax, LogSoftmax, Hardmax -------------------------------------------------------------

class _SoftmaxLike(Operator):
    dtypes = FLOATS

    def _split(self, v: NodeView) -> tuple[DimLike, DimLike, DimLike]:
        x = v.input(0)
        if v.opset < 13:
            # the input is coerced to 2-D: [d0 * .. * d(axis-1), d(axis) * .. * d(n-1)]
            if x.rank == 0:
                return 1, 1, 1
            axis = normalize_axis(v.attr("axis", 1), x.rank, v) if x.rank else 0
            return numel(x.shape[:axis]), numel(x.shape[axis:]), 1
        if x.rank == 0:
            raise v.fail("the input must have rank >= 1")
        axis = normalize_axis(v.attr("axis", -1), x.rank, v)
        return _oai(x.shape, axis)

    def infer(self, v: NodeView) -> list[OutInfo]:
        self._split(v)
        x = v.input(0)
        return [OutInfo(x.dtype, x.shape)]

    def workspace(self, v: NodeView):
        _, _, inner = self._split(v)
        return [] if _is1(inner) else [(v.input(0).dtype, 2 * inner)]

    def emit(self, v: NodeView, e) -> str:
        outer, a, inner = self._split(v)
        dt = v.input(0).dtype
        T = dt.cpp
        x, y = e.inp(0), e.out()
        o, j, k = e.tmp("o"), e.tmp("a"), e.tmp("i")
        xo, yo = e.tmp("xo"), e.tmp("yo")
        na, ni = e.dim(a), e.dim(inner)
        if _is1(inner):
            call = self._row_kernel(dt, x, y, e.dim(outer), na)
            if call:
                return call
            m, s = e.tmp("m"), e.tmp("s")
            body = [f"const {T} *{xo} = {x} + {o} * {na};", f"{T} *{yo} = {y} + {o} * {na};"]
            body += self._row(e, dt, xo, yo, j, na, m, s)
            inner_code = "\n".join("   " + line for line in "\n".join(body).splitlines())
            return f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o}) {{\n{inner_code}\n}}"
        call = self._inner_kernel(dt, x, y, e.dim(outer), na, ni)
        if call:
            return call
        m, s = e.ws(0), f"({e.ws(0)} + {ni})"
        body = [f"const {T} *{xo} = {x} + {o} * {e.dim(a * inner)};",
                f"{T} *{yo} = {y} + {o} * {e.dim(a * inner)};"]
        body += self._block(e, dt, xo, yo, j, k, na, ni, m, s)
        inner_code = "\n".join("   " + line for line in "\n".join(body).splitlines())
        return f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o}) {{\n{inner_code}\n}}"

    def _row_kernel(self, dt, x: str, y: str, rows: str, n: str) -> str | None:
        """A call of a runtime row kernel doing the whole operator over contiguous rows, or None."""
        return None

    def _inner_kernel(self, dt, x: str, y: str, outer: str, a: str, inner: str) -> str | None:
        """A call of a runtime kernel doing the whole operator along a strided axis, or None."""
        return None

    def _row(self, e, dt, xo, yo, j, na, m, s) -> list[str]:
        raise NotImplementedError

    def _block(self, e, dt, xo, yo, j, k, na, ni, m, s) -> list[str]:
        raise NotImplementedError


def _loop(var: str, n: str, body: str) -> str:
    return f"for (std::int64_t {var} = 0; {var} < {n}; ++{var}) {body}"


def _partial(e, dt, n: str, acc: str, init: str, step) -> list[str]:
    """``acc`` = a reduction over ``[0, n)`` with 8 partial accumulators: a loop carrying a single
    float accumulator does not vectorise (the compiler may not reorder float operations), one
    with 8 independent ones does. ``step(a, i)`` is the C++ expression of accumulator ``a``
    after element ``i``; ``step(a, _, b)`` combines accumulators ``a`` and ``b``."""
    T, p, i, lane = dt.cpp, e.tmp("p"), e.tmp("i"), e.tmp("l")
    return [f"{T} {acc} = {init};",
            "{",
            f"   {T} {p}[8];",
            f"   for (int {lane} = 0; {lane} < 8; ++{lane}) {p}[{lane}] = {init};",
            f"   std::int64_t {i} = 0;",
            f"   for (; {i} + 8 <= {n}; {i} += 8)",
            f"      for (int {lane} = 0; {lane} < 8; ++{lane}) {p}[{lane}] = {step(f'{p}[{lane}]', f'{i} + {lane}')};",
            f"   for (int {lane} = 0; {lane} < 8; ++{lane}) {acc} = {step(acc, lane, f'{p}[{lane}]')};",
            f"   for (; {i} < {n}; ++{i}) {acc} = {step(acc, i)};",
            "}"]


class _Softmax(_SoftmaxLike):
    log = False

    def _row_kernel(self, dt, x: str, y: str, rows: str, n: str) -> str | None:
        # sofie_rt::rows::softmax: 8-lane vectors with a padded tail, exp and sum in one pass (the
        # generated loops below took 0.4-0.5x ORT's time on rows of 10 and 40 under cling)
        return f"sofie_rt::rows::softmax<{dt.cpp}>({x}, {y}, {rows}, {n}, {'true' if self.log else 'false'});"

    def workspace(self, v: NodeView):
        return [] if v.input(0).dtype == FLOAT32 else super().workspace(v)

    def _inner_kernel(self, dt, x: str, y: str, outer: str, a: str, inner: str) -> str | None:
        # sofie_rt::rows::softmax_inner: 8 columns of the contiguous inner dimension per vector
        # (float; other types keep the loops of _block)
        if dt != FLOAT32:
            return None
        return (f"sofie_rt::rows::softmax_inner<float>({x}, {y}, {outer}, {a}, {inner}, "
                f"{'true' if self.log else 'false'});")

    def _row(self, e, dt, xo, yo, j, na, m, s) -> list[str]:
        # max, exp, sum and scale as separate loops: each vectorises on its own (4x faster than one
        # loop computing exp and summing, measured under cling on 204 rows of 51)
        T = dt.cpp

        def mx(a: str, i: str, b: str | None = None) -> str:
            b = b or f"{xo}[{i}]"
            return f"({b} > {a} ? {b} : {a})"

        def add(a: str, i: str, b: str | None = None) -> str:
            return f"{a} + {b or f'{yo}[{i}]'}"

        lines = _partial(e, dt, na, m, _lowest(dt), mx)
        lines.append(_loop(j, na, f"{yo}[{j}] = sofie_rt::exp_nonpos({xo}[{j}] - {m});"))
        lines += _partial(e, dt, na, s, f"{T}(0)", add)
        if self.log:
            lines.append(f"{s} = {m} + sofie_rt::vm::log({s});")
            lines.append(_loop(j, na, f"{yo}[{j}] = {xo}[{j}] - {s};"))
        else:
            lines.append(f"{s} = {T}(1) / {s};")
            lines.append(_loop(j, na, f"{yo}[{j}] *= {s};"))
        return lines

    def _block(self, e, dt, xo, yo, j, k, na, ni, m, s) -> list[str]:
        T = dt.cpp
        at = f"{j} * {ni} + {k}"
        lines = [_loop(k, ni, f"{{ {m}[{k}] = {_lowest(dt)}; {s}[{k}] = {T}(0); }}"),
                 _loop(j, na, _loop(k, ni, f"{m}[{k}] = {xo}[{at}] > {m}[{k}] ? {xo}[{at}] : {m}[{k}];"))]
        if self.log:
            lines.append(_loop(j, na, _loop(k, ni, f"{s}[{k}] += sofie_rt::exp_nonpos({xo}[{at}] - {m}[{k}]);")))
            lines.append(_loop(k, ni, f"{s}[{k}] = {m}[{k}] + sofie_rt::vm::log({s}[{k}]);"))
            lines.append(_loop(j, na, _loop(k, ni, f"{yo}[{at}] = {xo}[{at}] - {s}[{k}];")))
        else:
            lines.append(_loop(j, na, _loop(k, ni, f"{{ {yo}[{at}] = sofie_rt::exp_nonpos({xo}[{at}] - {m}[{k}]); "
                                                    f"{s}[{k}] += {yo}[{at}]; }}")))
            lines.append(_loop(k, ni, f"{s}[{k}] = {T}(1) / {s}[{k}];"))
            lines.append(_loop(j, na, _loop(k, ni, f"{yo}[{at}] *= {s}[{k}];")))
        return lines


@register
class Softmax(_Softmax):
    """ONNX Softmax (max-subtracted): 2-D coercion before opset 13, one axis since."""

    op_type = "Softmax"


@register
class LogSoftmax(_Softmax):
    """ONNX LogSoftmax: x - max - log(sum(exp(x - max))); 2-D coercion before opset 13."""

    op_type = "LogSoftmax"
    log = True


@register
class Hardmax(_SoftmaxLike):
    """ONNX Hardmax: 1 at the first maximum along the axis, 0 elsewhere."""

    op_type = "Hardmax"

    def _row_kernel(self, dt, x: str, y: str, rows: str, n: str) -> str | None:
        return f"sofie_rt::rows::hardmax<{dt.cpp}>({x}, {y}, {rows}, {n});"

    def _inner_kernel(self, dt, x: str, y: str, outer: str, a: str, inner: str) -> str | None:
        # sofie_rt::rows::hardmax_inner: 8 columns of the contiguous inner dimension per vector (the
        # generated loops it replaced compared with the running maximum by index, which does not
        # vectorise: 0.94x ORT on [256, 64, 50] along axis 1)
        return f"sofie_rt::rows::hardmax_inner<{dt.cpp}>({x}, {y}, {outer}, {a}, {inner});"

    def workspace(self, v: NodeView):
        return []


# -- TopK -------------------------------------------------------------------------------------

@register
class TopK(Operator):
    """ONNX TopK: the K largest (or smallest) values along an axis and their int64 indices.

    Ties go to the lower index; NaN counts as larger than every number. The output is always
    sorted (which ``sorted=0`` allows).
    """

    op_type = "TopK"
    dtypes = ORDERED
    static_inputs = (1,)

    def _params(self, v: NodeView) -> tuple[int, DimLike]:
        x = v.input(0)
        if x.rank == 0:
            raise v.fail("the input must have rank >= 1")
        axis = normalize_axis(v.attr("axis", -1), x.rank, v)
        if v.opset < 10:
            k: DimLike = v.attr("k")
            if k is None:
                raise v.fail("attribute k is required")
        else:
            vals = v.require_value(1, "K")
            if len(vals) != 1:
                raise v.fail(f"K must hold one value, got {len(vals)}")
            k = vals[0]
        if isinstance(k, int):
            if k < 0:
                raise v.fail(f"K = {k} is negative")
            d = x.shape[axis]
            if isinstance(d, int) and k > d:
                raise v.fail(f"K = {k} is larger than the axis ({d})")
        return axis, k

    def infer(self, v: NodeView) -> list[OutInfo]:
        axis, k = self._params(v)
        x = v.input(0)
        shape = list(x.shape)
        shape[axis] = k
        return [OutInfo(x.dtype, tuple(shape)), OutInfo(INT64, tuple(shape))]

    def workspace(self, v: NodeView):
        # one integer key per element of a row: 8 bytes, or 16 for 64-bit element types
        axis, _ = self._params(v)
        x = v.input(0)
        n = x.shape[axis]
        return [(INT64, n * 2 if x.dtype.itemsize == 8 else n)]

    def emit(self, v: NodeView, e) -> str:
        # sofie_rt::topk selects on integer keys (order bits above the index, see runtime.hxx)
        # instead of partial_sort of an index array through a branchy value comparator
        axis, k = self._params(v)
        x = v.input(0)
        outer, a, inner = _oai(x.shape, axis)
        na, ni, nk = e.dim(a), e.dim(inner), e.dim(k)
        largest = bool(v.attr("largest", 1))
        has_values = len(v.node.outputs) > 0 and bool(v.node.outputs[0])
        has_indices = len(v.node.outputs) > 1 and bool(v.node.outputs[1])
        values = e.out(0) if has_values else "nullptr"
        indices = e.out(1) if has_indices else "nullptr"
        lines = []
        if not (isinstance(k, int) and isinstance(a, int)):
            lines.append(f"if ({nk} < 0 || {nk} > {na}) {e.fail('K is out of range for the axis')}")
        lines.append(
            f"sofie_rt::topk<{x.dtype.cpp}>({e.inp(0)}, {e.dim(outer)}, {na}, {ni}, {nk}, "
            f"{'true' if largest else 'false'}, {values}, {indices}, {e.ws(0)});")
        return "\n".join(lines)


# -- CumSum -----------------------------------------------------------------------------------

@register
class CumSum(Operator):
    """ONNX CumSum along a compile-time axis (exclusive, reverse)."""

    op_type = "CumSum"
    dtypes = SUM_TYPES
    static_inputs = (1,)
    combine, identity = "+", 0

    def _axis(self, v: NodeView) -> int:
        x = v.input(0)
        if x.rank == 0:
            raise v.fail("the input must have rank >= 1")
        vals = v.require_value(1, "the axis")
        if len(vals) != 1:
            raise v.fail(f"axis must hold one value, got {len(vals)}")
        return normalize_axis(int(vals[0]), x.rank, v)

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        self._axis(v)
        return [OutInfo(x.dtype, x.shape)]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        T = x.dtype.cpp
        outer, a, inner = _oai(x.shape, self._axis(v))
        na, ni = e.dim(a), e.dim(inner)
        exclusive = bool(v.attr("exclusive", 0))
        reverse = bool(v.attr("reverse", 0))
        if x.dtype == FLOAT32 and isinstance(inner, int) and inner >= 8:
            # sofie_rt::rows::scan_cols: running totals of 32 columns in vector registers
            fn = "scan_cols<" + ("true" if self.combine == "*" else "false") + ">"
            return (f"sofie_rt::rows::{fn}({e.inp(0)}, {e.out()}, {e.dim(outer)}, {na}, {ni}, "
                    f"{'true' if reverse else 'false'}, {'true' if exclusive else 'false'});")
        o, s, i = e.tmp("o"), e.tmp("s"), e.tmp("i")
        cur, prev, base = e.tmp("cur"), e.tmp("prev"), e.tmp("base")
        at_cur = f"{na} - 1 - {s}" if reverse else s
        at_prev = f"{na} - {s}" if reverse else f"{s} - 1"
        first = e.lit(self.identity, x.dtype) if exclusive else f"{e.inp(0)}[{cur} + {i}]"
        add = f"{e.inp(0)}[{prev} + {i}]" if exclusive else f"{e.inp(0)}[{cur} + {i}]"
        y = e.out()
        return (
            f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o}) {{\n"
            f"   const std::int64_t {base} = {o} * {e.dim(a * inner)};\n"
            f"   for (std::int64_t {s} = 0; {s} < {na}; ++{s}) {{\n"
            f"      const std::int64_t {cur} = {base} + ({at_cur}) * {ni};\n"
            f"      if ({s} == 0) {{\n"
            f"         for (std::int64_t {i} = 0; {i} < {ni}; ++{i}) {y}[{cur} + {i}] = {first};\n"
            f"      }} else {{\n"
            f"         const std::int64_t {prev} = {base} + ({at_prev}) * {ni};\n"
            f"         for (std::int64_t {i} = 0; {i} < {ni}; ++{i})\n"
            f"            {y}[{cur} + {i}] = {T}({y}[{prev} + {i}] {self.combine} {add});\n"
            f"      }}\n"
            f"   }}\n}}")


@register
class CumProd(CumSum):
    """ONNX CumProd (opset 26): cumulative product along a compile-time axis (exclusive, reverse)."""

    op_type = "CumProd"
    combine, identity = "*", 1
