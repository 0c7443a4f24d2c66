"""Normalization operators: BatchNormalization (inference and training mode), LayerNormalization,
InstanceNormalization, GroupNormalization, LpNormalization and MeanVarianceNormalization.

Row statistics come from the runtime's row kernels (sofie_rt::rows in codegen/runtime.hxx):
two passes over a row (the sum of x - x[0], then the squared deviations from the mean) in 8
float lanes for float rows, in double otherwise; a constant row gives x - mean = 0 exactly, a
row far from 0 keeps its mean to double precision. LayerNormalization with scale and bias over
the whole normalised shape is one kernel call; MeanVarianceNormalization sums contiguous runs by
a row kernel when its innermost axes are reduced (a strided walk otherwise). The LayerNorm path
for partially broadcast scales keeps one-pass double statistics over partial accumulators.
Every dimension, the batch included, may be symbolic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..ir.dims import Dim, DimLike, numel
from ..ir.dtypes import FLOAT32, FLOAT64, DType
from .base import NodeView, Operator, OutInfo, normalize_axis, register

FLOATS = ("float32", "float64")


def _is_one(d: DimLike) -> bool:
    return isinstance(d, int) and d == 1


def _out_wanted(v: NodeView, k: int) -> bool:
    return len(v.node.outputs) > k and bool(v.node.outputs[k])


def _total(e, acc: str, n: str, term) -> list[str]:
    """C++ declaring ``double acc`` = the sum of ``term(i)`` for i in [0, n), over 8 partial
    accumulators: a loop carrying one floating-point accumulator does not vectorise (the compiler
    may not reorder the additions), one with 8 independent ones does (LayerNorm over [1, 51, 64]
    from a C++ loop: 32 us -> 18 us, measured under cling)."""
    p, lane, j = e.tmp("p"), e.tmp("l"), e.tmp("j")
    return [f"double {acc} = 0;",
            "{",
            f"   double {p}[8] = {{0, 0, 0, 0, 0, 0, 0, 0}};",
            f"   std::int64_t {j} = 0;",
            f"   for (; {j} + 8 <= {n}; {j} += 8)",
            f"      for (int {lane} = 0; {lane} < 8; ++{lane}) {p}[{lane}] += {term(f'{j} + {lane}')};",
            f"   for (int {lane} = 0; {lane} < 8; ++{lane}) {acc} += {p}[{lane}];",
            f"   for (; {j} < {n}; ++{j}) {acc} += {term(j)};",
            "}"]


def _stats_one_pass(e, xr: str, count: DimLike) -> tuple[list[str], str, str]:
    """C++ computing the mean and the (biased) variance, in double, of ``count`` contiguous values,
    reading them once: sum and sum of squares together (8 partial accumulators each, see _total),
    variance = E[x^2] - mean^2 clamped at 0. In double this loses nothing that
    float data can hold: a constant row still gives x - mean = 0 exactly (n copies of c sum
    exactly in double), so its outputs are exactly the bias."""
    mu, var, s, q = e.tmp("mu"), e.tmp("var"), e.tmp("s"), e.tmp("q")
    p, p2, lane, j, xv = e.tmp("p"), e.tmp("p2"), e.tmp("l"), e.tmp("j"), e.tmp("xv")
    n = e.dim(count)
    lines = [f"double {s} = 0, {q} = 0;",
             "{",
             f"   double {p}[8] = {{0, 0, 0, 0, 0, 0, 0, 0}}, {p2}[8] = {{0, 0, 0, 0, 0, 0, 0, 0}};",
             f"   std::int64_t {j} = 0;",
             f"   for (; {j} + 8 <= {n}; {j} += 8)",
             f"      for (int {lane} = 0; {lane} < 8; ++{lane}) {{ const double {xv} = {xr}[{j} + {lane}]; "
             f"{p}[{lane}] += {xv}; {p2}[{lane}] += {xv} * {xv}; }}",
             f"   for (int {lane} = 0; {lane} < 8; ++{lane}) {{ {s} += {p}[{lane}]; {q} += {p2}[{lane}]; }}",
             f"   for (; {j} < {n}; ++{j}) {{ const double {xv} = {xr}[{j}]; {s} += {xv}; {q} += {xv} * {xv}; }}",
             "}",
             f"const double {mu} = {s} / double({n});",
             f"double {var} = {q} / double({n}) - {mu} * {mu};",
             f"if (!({var} > 0)) {var} = {var} != {var} ? {var} : 0.0;  // rounding below 0; NaN stays"]
    return lines, mu, var


def _bcast_index(e, j: str, target: Sequence[DimLike], src: Sequence[DimLike]) -> str:
    """Index into a tensor of shape ``src`` broadcast (numpy rules) to ``target`` at flat index ``j``."""
    if all(_is_one(d) for d in src):
        return "0"
    aligned = [1] * (len(target) - len(src)) + list(src)
    first = next(k for k, d in enumerate(aligned) if not _is_one(d))
    if all(aligned[k] == target[k] for k in range(first, len(target))):
        # the source covers a trailing block of the target: a modulo (or nothing)
        if first == 0:
            return j
        return f"({j} % {e.dim(numel(target[first:]))})"
    terms = []
    t_stride: DimLike = 1
    s_stride: DimLike = 1
    for k in reversed(range(len(target))):
        if not _is_one(aligned[k]):
            terms.append(f"(({j} / {e.dim(t_stride)}) % {e.dim(target[k])}) * {e.dim(s_stride)}")
            s_stride = s_stride * aligned[k]
        t_stride = t_stride * target[k]
    return "(" + " + ".join(terms) + ")"


def _check_bcast(v: NodeView, what: str, src: Sequence[DimLike], target: Sequence[DimLike]) -> None:
    aligned = [1] * (len(target) - len(src)) + list(src)
    if len(src) > len(target) or any(not (_is_one(a) or a == t) for a, t in zip(aligned, target)):
        raise v.fail(f"{what} shape {list(map(str, src))} does not broadcast to the normalized "
                     f"shape {list(map(str, target))}")


def _check_vector(v: NodeView, i: int, what: str, n: DimLike) -> None:
    if not v.has_input(i):
        raise v.fail(f"{what} (input {i}) is required")
    info = v.input(i)
    if info.size != n:
        raise v.fail(f"{what} {info} must have {n} elements")


# -- BatchNormalization -----------------------------------------------------------------------

def training_mode(v: NodeView) -> bool:
    """Whether a BatchNormalization node normalises with the batch's statistics (opset >= 14
    ``training_mode=1``)."""
    return v.opset >= 14 and bool(int(v.attr("training_mode", 0)))


@register
class BatchNormalization(Operator):
    """ONNX BatchNormalization, every opset: inference mode (running mean and variance), opset < 9
    ``spatial=0`` (per-activation statistics) included; and opset >= 14 ``training_mode=1``: the
    batch's mean and (biased) variance per channel normalise X, and the optional outputs
    running_mean/running_var are ``input * momentum + batch statistic * (1 - momentum)``. The
    training outputs of opsets 9-13 (mean, var, saved_mean, saved_var) are refused."""

    op_type = "BatchNormalization"
    dtypes = FLOATS
    # y[i] from x[i] only; in training mode each channel's statistics are complete (every x of
    # the channel read) before its first y is written
    inplace_ok = True

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if sum(1 for o in v.node.outputs if o) > 1 and not training_mode(v):
            if v.opset < 14:
                return ("the training outputs of opsets 9-13 (mean, var, saved_mean, saved_var) are not "
                        "supported; opset >= 14 training_mode=1 is")
            return "running_mean/running_var are outputs of training_mode=1 only"
        if training_mode(v) and len(v.node.outputs) != 3:
            # (ONNX's shape inference requires the three, running statistics possibly unnamed)
            return (f"training mode has 3 outputs (Y, running_mean, running_var; unwanted ones with an empty "
                    f"name), the node has {len(v.node.outputs)}")
        return None

    def _layout(self, v: NodeView) -> tuple[DimLike, DimLike, DimLike]:
        """(batch, channels, inner): statistics are per channel, shared by ``inner`` values."""
        x = v.input(0)
        if x.rank < 2:
            raise v.fail(f"input must have rank >= 2 ([N, C, ...]), got {x}")
        if v.opset < 9 and int(v.attr("spatial", 1)) == 0:
            ch, inner = numel(x.shape[1:]), 1
        else:
            ch, inner = x.shape[1], numel(x.shape[2:])
        for i, what in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")):
            _check_vector(v, i, what, ch)
        return x.shape[0], ch, inner

    def infer(self, v: NodeView) -> list[OutInfo]:
        _, ch, _ = self._layout(v)
        x = v.input(0)
        outs = [OutInfo(x.dtype, x.shape)]
        if training_mode(v):
            outs += [OutInfo(v.input(3).dtype, (ch,)), OutInfo(v.input(4).dtype, (ch,))]
        return outs

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        # per channel: scale, mean and bias in X's type, computed once per call (not once per
        # image: at [N, 64], a double sqrt and division per element made BatchNorm 20x slower
        # than onnxruntime, benchmarks/breadth.py)
        if training_mode(v):
            return []
        _, ch, _ = self._layout(v)
        return [(v.input(0).dtype, 3 * ch)] if isinstance(ch, int) else []

    def emit(self, v: NodeView, e) -> str:
        if training_mode(v):
            return self._emit_training(v, e)
        n, ch, inner = self._layout(v)
        t = v.input(0).dtype.cpp
        eps = e.lit(v.attr("epsilon", 1e-5), FLOAT64)
        b, c, i, xp, yp = e.tmp("n"), e.tmp("c"), e.tmp("i"), e.tmp("xp"), e.tmp("yp")
        a, m, bb = e.tmp("a"), e.tmp("m"), e.tmp("b")
        if isinstance(ch, int):
            return "\n".join([
                f"{t} *const {a} = {e.ws(0)}, *const {m} = {a} + {ch}, *const {bb} = {m} + {ch};",
                f"for (std::int64_t {c} = 0; {c} < {ch}; ++{c}) {{",
                f"   {a}[{c}] = {t}(double({e.inp(1)}[{c}]) / std::sqrt(double({e.inp(4)}[{c}]) + {eps}));",
                f"   {m}[{c}] = {t}({e.inp(3)}[{c}]);",
                f"   {bb}[{c}] = {t}({e.inp(2)}[{c}]);",
                "}",
                f"for (std::int64_t {b} = 0; {b} < {e.dim(n)}; ++{b}) {{",
                f"for (std::int64_t {c} = 0; {c} < {ch}; ++{c}) {{",
                f"const {t} *{xp} = {e.inp(0)} + ({b} * {ch} + {c}) * {e.dim(inner)};",
                f"{t} *{yp} = {e.out()} + ({b} * {ch} + {c}) * {e.dim(inner)};",
                f"const {t} {a}c = {a}[{c}], {m}c = {m}[{c}], {bb}c = {bb}[{c}];",
                f"for (std::int64_t {i} = 0; {i} < {e.dim(inner)}; ++{i}) "
                f"{yp}[{i}] = ({xp}[{i}] - {m}c) * {a}c + {bb}c;",
                "}}",
            ])
        return "\n".join([
            f"for (std::int64_t {b} = 0; {b} < {e.dim(n)}; ++{b}) {{",
            f"for (std::int64_t {c} = 0; {c} < {e.dim(ch)}; ++{c}) {{",
            f"const {t} {a} = {t}(double({e.inp(1)}[{c}]) / std::sqrt(double({e.inp(4)}[{c}]) + {eps}));",
            f"const {t} {m} = {t}({e.inp(3)}[{c}]);",
            f"const {t} {bb} = {t}({e.inp(2)}[{c}]);",
            f"const {t} *{xp} = {e.inp(0)} + ({b} * {e.dim(ch)} + {c}) * {e.dim(inner)};",
            f"{t} *{yp} = {e.out()} + ({b} * {e.dim(ch)} + {c}) * {e.dim(inner)};",
            f"for (std::int64_t {i} = 0; {i} < {e.dim(inner)}; ++{i}) {yp}[{i}] = ({xp}[{i}] - {m}) * {a} + {bb};",
            "}}",
        ])


    def _emit_training(self, v: NodeView, e) -> str:
        """Per channel: the batch mean and variance (sum and sum of squares in double, over 8
        partial accumulators per image block, see _total), then y, then the running statistics."""
        n, ch, inner = self._layout(v)
        t = v.input(0).dtype.cpp
        eps = e.lit(v.attr("epsilon", 1e-5), FLOAT64)
        # (an ONNX float attribute is a float32: the default too, as a model stating it would carry it)
        mom = float(np.float32(v.attr("momentum", 0.9)))
        b, c, i, xp, yp = e.tmp("n"), e.tmp("c"), e.tmp("i"), e.tmp("xp"), e.tmp("yp")
        s, q, mu, var, a, m, bb = (e.tmp(p) for p in ("s", "q", "mu", "var", "a", "m", "b"))
        sb, qb = e.tmp("sb"), e.tmp("qb")
        block = f"({b} * {e.dim(ch)} + {c}) * {e.dim(inner)}"
        lines = [f"for (std::int64_t {c} = 0; {c} < {e.dim(ch)}; ++{c}) {{",
                 f"double {s} = 0, {q} = 0;",
                 f"for (std::int64_t {b} = 0; {b} < {e.dim(n)}; ++{b}) {{",
                 f"const {t} *{xp} = {e.inp(0)} + {block};",
                 *_total(e, sb, e.dim(inner), lambda j: f"double({xp}[{j}])"),
                 *_total(e, qb, e.dim(inner), lambda j: f"double({xp}[{j}]) * double({xp}[{j}])"),
                 f"{s} += {sb}; {q} += {qb};",
                 "}",
                 f"const double {mu} = {s} / double({e.dim(n * inner)});",
                 f"double {var} = {q} / double({e.dim(n * inner)}) - {mu} * {mu};",
                 f"if (!({var} > 0)) {var} = {var} != {var} ? {var} : 0.0;  // rounding below 0; NaN stays",
                 f"const {t} {a} = {t}(double({e.inp(1)}[{c}]) / std::sqrt({var} + {eps}));",
                 f"const {t} {m} = {t}({mu});",
                 f"const {t} {bb} = {t}({e.inp(2)}[{c}]);",
                 f"for (std::int64_t {b} = 0; {b} < {e.dim(n)}; ++{b}) {{",
                 f"const {t} *{xp} = {e.inp(0)} + {block};",
                 f"{t} *{yp} = {e.out()} + {block};",
                 f"for (std::int64_t {i} = 0; {i} < {e.dim(inner)}; ++{i}) {yp}[{i}] = ({xp}[{i}] - {m}) * {a} + {bb};",
                 "}"]
        for k, stat, inp in ((1, mu, 3), (2, var, 4)):
            if _out_wanted(v, k):
                ot = v.input(inp).dtype
                lines.append(f"{e.out(k)}[{c}] = {ot.cpp}(double({e.inp(inp)}[{c}]) * {e.lit(mom, FLOAT64)} "
                             f"+ {stat} * {e.lit(1.0 - mom, FLOAT64)});")
        lines.append("}")
        return "\n".join(lines)


# -- LayerNormalization -----------------------------------------------------------------------

_STASH = {1: FLOAT32, 11: FLOAT64}


@register
class LayerNormalization(Operator):
    """ONNX LayerNormalization (opset 17): any axis, optional B, Mean and InvStdDev outputs,
    stash_type float or double; Scale and B broadcast over the normalized dimensions."""

    op_type = "LayerNormalization"
    dtypes = FLOATS
    inplace_ok = True  # per row: statistics first, then y[j] from x[j] only

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if int(v.attr("stash_type", 1)) not in _STASH:
            return f"stash_type={v.attr('stash_type')} is not supported (float or double only)"
        return None

    def _axis(self, v: NodeView) -> int:
        x = v.input(0)
        if x.rank < 1:
            raise v.fail("input must have rank >= 1")
        a = normalize_axis(int(v.attr("axis", -1)), x.rank, v)
        norm = x.shape[a:]
        _check_bcast(v, "Scale", v.input(1).shape, norm)
        if v.has_input(2):
            _check_bcast(v, "B", v.input(2).shape, norm)
        return a

    def infer(self, v: NodeView) -> list[OutInfo]:
        a = self._axis(v)
        x = v.input(0)
        u = _STASH[int(v.attr("stash_type", 1))]
        stat = tuple(x.shape[:a]) + (1,) * (x.rank - a)
        return [OutInfo(x.dtype, x.shape), OutInfo(u, stat), OutInfo(u, stat)]

    def emit(self, v: NodeView, e) -> str:
        a = self._axis(v)
        x = v.input(0)
        t = x.dtype.cpp
        u = _STASH[int(v.attr("stash_type", 1))].cpp
        norm = x.shape[a:]
        d = numel(norm)
        rows = numel(x.shape[:a])
        r, xr, yr, j = e.tmp("r"), e.tmp("xr"), e.tmp("yr"), e.tmp("j")
        full = [_bcast_index(e, j, norm, v.input(k).shape) == j for k in (1, 2) if v.has_input(k)]
        if all(full):
            # scale and bias over the whole normalised shape (the usual case): sofie_rt::rows::layernorm,
            # two-pass statistics in 8 float lanes (float input) and a vectorised affine pass
            ustash = _STASH[int(v.attr("stash_type", 1))]
            bias = e.inp(2) if v.has_input(2) else "nullptr"
            return (f"sofie_rt::rows::layernorm<{t}, {u}>({e.inp(0)}, {e.out()}, {e.dim(rows)}, {e.dim(d)}, "
                    f"{e.inp(1)}, {bias}, {e.lit(v.attr('epsilon', 1e-5), ustash)}, "
                    f"{e.out(1) if _out_wanted(v, 1) else 'nullptr'}, {e.out(2) if _out_wanted(v, 2) else 'nullptr'});")
        mean, inv = e.tmp("mean"), e.tmp("inv")
        lines = [f"for (std::int64_t {r} = 0; {r} < {e.dim(rows)}; ++{r}) {{",
                 f"const {t} *{xr} = {e.inp(0)} + {r} * {e.dim(d)};",
                 f"{t} *{yr} = {e.out()} + {r} * {e.dim(d)};"]
        st, mu, var = _stats_one_pass(e, xr, d)
        lines += st
        eps = e.lit(v.attr("epsilon", 1e-5), _STASH[int(v.attr("stash_type", 1))])
        lines.append(f"const {u} {mean} = {u}({mu});")
        lines.append(f"const {u} {inv} = {u}(1) / std::sqrt({u}({var}) + {eps});")
        sc = f"{e.inp(1)}[{_bcast_index(e, j, norm, v.input(1).shape)}]"
        val = f"{t}(({u}({xr}[{j}]) - {mean}) * {inv}) * {sc}"
        if v.has_input(2):
            val += f" + {e.inp(2)}[{_bcast_index(e, j, norm, v.input(2).shape)}]"
        lines.append(f"for (std::int64_t {j} = 0; {j} < {e.dim(d)}; ++{j}) {yr}[{j}] = {val};")
        if _out_wanted(v, 1):
            lines.append(f"{e.out(1)}[{r}] = {mean};")
        if _out_wanted(v, 2):
            lines.append(f"{e.out(2)}[{r}] = {inv};")
        lines.append("}")
        return "\n".join(lines)


# -- InstanceNormalization / GroupNormalization -----------------------------------------------

@register
class InstanceNormalization(Operator):
    """ONNX InstanceNormalization: per (image, channel) statistics over the spatial dimensions."""

    op_type = "InstanceNormalization"
    dtypes = FLOATS
    inplace_ok = True  # per row: statistics first, then y[j] from x[j] only

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        if x.rank < 2:
            raise v.fail(f"input must have rank >= 2 ([N, C, ...]), got {x}")
        _check_vector(v, 1, "scale", x.shape[1])
        _check_vector(v, 2, "B", x.shape[1])
        return [OutInfo(x.dtype, x.shape)]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        t = x.dtype.cpp
        ch = x.shape[1]
        sp = numel(x.shape[2:])
        r, xr, yr, j, c, a, b, m = (e.tmp(p) for p in ("r", "xr", "yr", "j", "c", "a", "b", "m"))
        eps = e.lit(v.attr("epsilon", 1e-5), FLOAT64)
        lines = [f"for (std::int64_t {r} = 0; {r} < {e.dim(numel(x.shape[:2]))}; ++{r}) {{",
                 f"const {t} *{xr} = {e.inp(0)} + {r} * {e.dim(sp)};",
                 f"{t} *{yr} = {e.out()} + {r} * {e.dim(sp)};",
                 f"const std::int64_t {c} = {r} % {e.dim(ch)};"]
        mo = e.tmp("mo")
        # statistics by the runtime's two-pass row kernel (8 float lanes for float input), then
        # y = x a + b in the element type (vectorises at full width)
        lines.append(f"const sofie_rt::rows::Moments {mo} = sofie_rt::rows::moments<{t}>({xr}, {e.dim(sp)});")
        lines.append(f"const double {a}d = double({e.inp(1)}[{c}]) / std::sqrt({mo}.var + {eps});")
        # ((x - mean_hi) - mean_lo) a + b in the element type: the mean split in two floats keeps
        # x - mean exact to the element type's precision for rows far from 0 (a plane at 500 with
        # a spread of 0.05), where one rounded float mean would be off by 3e-5 (6e-4 in y)
        lines.append(f"const {t} {a} = {t}({a}d), {b} = {e.inp(2)}[{c}], {m} = {t}({mo}.mean), "
                     f"{m}lo = {t}({mo}.mean - double({m}));")
        lines.append(f"for (std::int64_t {j} = 0; {j} < {e.dim(sp)}; ++{j}) "
                     f"{yr}[{j}] = (({xr}[{j}] - {m}) - {m}lo) * {a} + {b};")
        lines.append("}")
        return "\n".join(lines)


@register
class GroupNormalization(Operator):
    """ONNX GroupNormalization: statistics per (image, group of channels); scale and bias are
    per group in opset 18 and per channel from opset 21 (stash_type float or double)."""

    op_type = "GroupNormalization"
    dtypes = FLOATS
    inplace_ok = True  # per group: statistics first, then y[j] from x[j] only

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if int(v.attr("stash_type", 1)) not in _STASH:
            return f"stash_type={v.attr('stash_type')} is not supported (float or double only)"
        return None

    def _groups(self, v: NodeView) -> tuple[int, DimLike]:
        x = v.input(0)
        if x.rank < 2:
            raise v.fail(f"input must have rank >= 2 ([N, C, ...]), got {x}")
        g = v.attr("num_groups")
        if g is None:
            raise v.fail("num_groups is required")
        g = int(g)
        ch = x.shape[1]
        if isinstance(ch, Dim):
            raise v.fail("the channel dimension must be known at compile time")
        if g < 1 or ch % g:
            raise v.fail(f"num_groups={g} must divide the {ch} channels")
        per = g if v.opset < 21 else ch
        _check_vector(v, 1, "scale", per)
        _check_vector(v, 2, "bias", per)
        return g, ch // g

    def infer(self, v: NodeView) -> list[OutInfo]:
        self._groups(v)
        x = v.input(0)
        return [OutInfo(x.dtype, x.shape)]

    def emit(self, v: NodeView, e) -> str:
        g, cg = self._groups(v)
        x = v.input(0)
        t = x.dtype.cpp
        sp = numel(x.shape[2:])
        per_group = v.opset < 21
        r, xr, yr, gi, c, ch, j, a, b = (e.tmp(p) for p in ("r", "xr", "yr", "g", "c", "ch", "j", "a", "b"))
        eps = e.lit(v.attr("epsilon", 1e-5), FLOAT64)
        size = cg * sp
        lines = [f"for (std::int64_t {r} = 0; {r} < {e.dim(x.shape[0])} * {g}; ++{r}) {{",
                 f"const {t} *{xr} = {e.inp(0)} + {r} * {e.dim(size)};",
                 f"{t} *{yr} = {e.out()} + {r} * {e.dim(size)};",
                 f"const std::int64_t {gi} = {r} % {g};"]
        mo = e.tmp("mo")
        lines.append(f"const sofie_rt::rows::Moments {mo} = sofie_rt::rows::moments<{t}>({xr}, {e.dim(size)});")
        mu, var = f"{mo}.mean", f"{mo}.var"
        if v.opset >= 21:
            # the function body of opset 21 normalizes in the stash type
            u = _STASH[int(v.attr("stash_type", 1))]
            inv = e.tmp("inv")
            lines.append(f"const double {inv} = double({u.cpp}(1) / std::sqrt({u.cpp}({var}) + "
                         f"{e.lit(v.attr('epsilon', 1e-5), u)}));")
        else:
            inv = e.tmp("inv")
            lines.append(f"const double {inv} = 1.0 / std::sqrt({var} + {eps});")
        lines.append(f"for (std::int64_t {c} = 0; {c} < {cg}; ++{c}) {{")
        idx = gi if per_group else f"{ch}"
        if not per_group:
            lines.append(f"const std::int64_t {ch} = {gi} * {cg} + {c};")
        lines.append(f"const double {a} = double({e.inp(1)}[{idx}]) * {inv};")
        lines.append(f"const double {b} = double({e.inp(2)}[{idx}]) - {mu} * {a};")
        lines.append(f"for (std::int64_t {j} = 0; {j} < {e.dim(sp)}; ++{j}) "
                     f"{yr}[{c} * {e.dim(sp)} + {j}] = {t}(double({xr}[{c} * {e.dim(sp)} + {j}]) * {a} + {b});")
        lines.append("}")
        lines.append("}")
        return "\n".join(lines)


# -- LpNormalization --------------------------------------------------------------------------

@register
class LpNormalization(Operator):
    """ONNX LpNormalization: x / ||x||_p along one axis (p = 1 or 2); a zero norm gives 0."""

    op_type = "LpNormalization"
    dtypes = FLOATS

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if int(v.attr("p", 2)) not in (1, 2):
            return f"p={v.attr('p')} is not supported (ONNX defines p = 1 or 2)"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        normalize_axis(int(v.attr("axis", -1)), x.rank, v)
        return [OutInfo(x.dtype, x.shape)]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        t = x.dtype.cpp
        a = normalize_axis(int(v.attr("axis", -1)), x.rank, v)
        outer, n, inner = numel(x.shape[:a]), x.shape[a], numel(x.shape[a + 1:])
        o, i, k, base, s, nrm, xv = (e.tmp(p) for p in ("o", "i", "k", "base", "s", "nrm", "xv"))
        p = int(v.attr("p", 2))
        acc = f"std::abs({xv})" if p == 1 else f"{xv} * {xv}"
        st = e.dim(inner)
        if _is_one(inner):  # the usual case, a row per norm: the sum over partial accumulators
            r = e.tmp("r")
            term = (lambda q: f"std::abs(double({r}[{q}]))") if p == 1 else \
                (lambda q: f"(double({r}[{q}]) * double({r}[{q}]))")
            return "\n".join([
                f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o}) {{",
                f"const {t} *{r} = {e.inp(0)} + {o} * {e.dim(n)};",
                *_total(e, s, e.dim(n), term),
                f"const double {nrm} = {'std::sqrt(' + s + ')' if p == 2 else s};",
                f"const double {xv} = {nrm} == 0 ? 0.0 : 1.0 / {nrm};",
                f"for (std::int64_t {k} = 0; {k} < {e.dim(n)}; ++{k}) {e.out()}[{o} * {e.dim(n)} + {k}] = "
                f"{t}(double({r}[{k}]) * {xv});",
                "}"])
        return "\n".join([
            f"for (std::int64_t {o} = 0; {o} < {e.dim(outer)}; ++{o}) {{",
            f"for (std::int64_t {i} = 0; {i} < {st}; ++{i}) {{",
            f"const std::int64_t {base} = {o} * {e.dim(n * inner)} + {i};",
            f"double {s} = 0;",
            f"for (std::int64_t {k} = 0; {k} < {e.dim(n)}; ++{k}) {{ const double {xv} = "
            f"double({e.inp(0)}[{base} + {k} * {st}]); {s} += {acc}; }}",
            f"const double {nrm} = {'std::sqrt(' + s + ')' if p == 2 else s};",
            f"for (std::int64_t {k} = 0; {k} < {e.dim(n)}; ++{k}) {e.out()}[{base} + {k} * {st}] = "
            f"{nrm} == 0 ? {t}(0) : {t}(double({e.inp(0)}[{base} + {k} * {st}]) / {nrm});",
            "}}",
        ])


# -- MeanVarianceNormalization ----------------------------------------------------------------

@register
class MeanVarianceNormalization(Operator):
    """ONNX MeanVarianceNormalization: (x - mean) / (std + 1e-9) over ``axes`` (default [0, 2, 3])."""

    op_type = "MeanVarianceNormalization"
    dtypes = FLOATS

    def _axes(self, v: NodeView) -> set[int]:
        x = v.input(0)
        axes = v.attr("axes", [0, 2, 3])
        out = {normalize_axis(int(a), x.rank, v) for a in axes}
        if len(out) != len(axes):
            raise v.fail(f"repeated axes {list(axes)}")
        return out

    def _merged(self, v: NodeView) -> list[tuple[DimLike, bool]]:
        """Adjacent dimensions merged when both are reduced or both kept: (size, reduced)."""
        x = v.input(0)
        axes = self._axes(v)
        out: list[tuple[DimLike, bool]] = []
        for k, d in enumerate(x.shape):
            if _is_one(d):
                continue
            red = k in axes
            if out and out[-1][1] == red:
                out[-1] = (out[-1][0] * d, red)
            else:
                out.append((d, red))
        return out or [(1, True)]

    def infer(self, v: NodeView) -> list[OutInfo]:
        self._axes(v)
        x = v.input(0)
        return [OutInfo(x.dtype, x.shape)]

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        kept = numel(d for d, red in self._merged(v) if not red)
        return [(FLOAT64, kept), (FLOAT64, kept)]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        t = x.dtype.cpp
        dims = self._merged(v)
        kept = numel(d for d, red in dims if not red)
        cnt = numel(d for d, red in dims if red)
        mean, sd = e.ws(0), e.ws(1)
        idx = [e.tmp("i") for _ in dims]
        # index of each element in the kept (statistics) space
        kterms = []
        stride: DimLike = 1
        for k in reversed(range(len(dims))):
            d, red = dims[k]
            if not red:
                kterms.append(idx[k] if _is_one(stride) else f"{idx[k]} * {e.dim(stride)}")
                stride = stride * d
        kidx = " + ".join(kterms) if kterms else "0"

        def loops(body: str) -> list[str]:
            off = e.tmp("off")
            out = [f"std::int64_t {off} = 0;"]
            for k, (d, _) in enumerate(dims):
                out.append(f"for (std::int64_t {idx[k]} = 0; {idx[k]} < {e.dim(d)}; ++{idx[k]}) {{")
            out.append(body.replace("@OFF", f"{off}++").replace("@K", f"({kidx})"))
            out.append("}" * len(dims))
            return ["{"] + out + ["}"]

        q, dv = e.tmp("q"), e.tmp("dv")
        lines = [f"std::fill({mean}, {mean} + {e.dim(kept)}, 0.0);",
                 f"std::fill({sd}, {sd} + {e.dim(kept)}, 0.0);"]
        if dims[-1][1]:
            # the innermost (contiguous) dimensions are reduced: a row kernel per run of them
            # (8 float lanes), instead of a scalar walk accumulating into the statistics arrays
            run = e.dim(dims[-1][0])

            def row_loops(body: str) -> list[str]:
                off = e.tmp("off")
                out = [f"std::int64_t {off} = 0;"]
                for k, (d, _) in enumerate(dims[:-1]):
                    out.append(f"for (std::int64_t {idx[k]} = 0; {idx[k]} < {e.dim(d)}; ++{idx[k]}) {{")
                out.append("{ " + body.replace("@OFF", off).replace("@K", f"({kidx})") + f" {off} += {run}; }}")
                out.append("}" * (len(dims) - 1))
                return ["{"] + out + ["}"]

            xin, ms, ss, jj = e.inp(0), e.tmp("m"), e.tmp("s"), e.tmp("j")
            lines += row_loops(f"{mean}[@K] += sofie_rt::rows::row_sum<{t}>({xin} + @OFF, {run});")
            lines.append(f"for (std::int64_t {q} = 0; {q} < {e.dim(kept)}; ++{q}) "
                         f"{mean}[{q}] /= double({e.dim(cnt)});")
            lines += row_loops(f"{sd}[@K] += sofie_rt::rows::row_sqdev<{t}>({xin} + @OFF, {run}, {mean}[@K]);")
            lines.append(f"for (std::int64_t {q} = 0; {q} < {e.dim(kept)}; ++{q}) "
                         f"{sd}[{q}] = 1.0 / (std::sqrt({sd}[{q}] / double({e.dim(cnt)})) + 1e-9);")
            # the mean split in two values of the element type, as InstanceNormalization's
            lines += row_loops(f"const {t} {ms} = {t}({mean}[@K]), {ms}lo = {t}({mean}[@K] - double({ms})), "
                               f"{ss} = {t}({sd}[@K]); "
                               f"for (std::int64_t {jj} = 0; {jj} < {run}; ++{jj}) "
                               f"{e.out()}[@OFF + {jj}] = (({xin}[@OFF + {jj}] - {ms}) - {ms}lo) * {ss};")
            return "\n".join(lines)
        lines += loops(f"{mean}[@K] += double({e.inp(0)}[@OFF]);")
        lines.append(f"for (std::int64_t {q} = 0; {q} < {e.dim(kept)}; ++{q}) {mean}[{q}] /= double({e.dim(cnt)});")
        lines += loops(f"{{ const double {dv} = double({e.inp(0)}[@OFF]) - {mean}[@K]; {sd}[@K] += {dv} * {dv}; }}")
        lines.append(f"for (std::int64_t {q} = 0; {q} < {e.dim(kept)}; ++{q}) "
                     f"{sd}[{q}] = 1.0 / (std::sqrt({sd}[{q}] / double({e.dim(cnt)})) + 1e-9);")
        lines += loops(f"{{ const std::int64_t {dv} = @OFF; {e.out()}[{dv}] = "
                       f"{t}((double({e.inp(0)}[{dv}]) - {mean}[@K]) * {sd}[@K]); }}")
        return "\n".join(lines)
