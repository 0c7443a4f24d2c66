"""Loss operators: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (reduction none, sum or
mean; optional class weights; ignore_index, negative included; any number of extra dimensions;
SoftmaxCrossEntropyLoss's optional log_prob output), and RMSNormalization (opset 23).

Target classes are data: each one is checked in the generated code, and a class outside
[0, C) that is not ``ignore_index`` throws instead of reading out of bounds. Sums are accumulated
in double. ``mean`` divides by the sum of the applied weights (1 per non-ignored element without
weights), as the ONNX specification and onnxruntime do.
"""

from __future__ import annotations

from ..ir.dims import DimLike, numel
from ..ir.dtypes import FLOAT32, FLOAT64, DType
from .base import NodeView, Operator, OutInfo, normalize_axis, register
from .normalization import _bcast_index, _check_bcast

FLOATS = ("float32", "float64")
REDUCTIONS = ("none", "sum", "mean")


def _out_wanted(v: NodeView, k: int) -> bool:
    return len(v.node.outputs) > k and bool(v.node.outputs[k])


class _Loss(Operator):
    """Shared shape rules and loop of the two losses."""

    softmax = False

    def check(self, v: NodeView) -> str | None:
        x, t = v.input(0), v.input(1)
        if x.dtype.name not in FLOATS:
            return f"element type {x.dtype.name} is not supported (supported: float32, float64)"
        if t.dtype.name not in ("int32", "int64"):
            return f"target element type {t.dtype.name} is not supported (int32, int64)"
        if v.has_input(2) and v.input(2).dtype != x.dtype:
            return f"the weights ({v.input(2).dtype.name}) must have the input's type ({x.dtype.name})"
        red = v.attr("reduction", "mean")
        if red not in REDUCTIONS:
            return f"reduction={red!r} is not one of {', '.join(REDUCTIONS)}"
        return None

    def _shapes(self, v: NodeView):
        x, t = v.input(0), v.input(1)
        if x.rank < 2:
            raise v.fail(f"the input must have rank >= 2 ([N, C, d1, ...]), got {x}")
        if t.rank != x.rank - 1:
            raise v.fail(f"the target {t} must have rank {x.rank - 1} ([N, d1, ...]) for the input {x}")
        for k, (dt, dx) in enumerate(zip(t.shape, (x.shape[0], *x.shape[2:]))):
            if dt != dx:  # symbolic dims must be the same symbol: target is read at x's extents
                raise v.fail(f"the target {t} does not match the input {x} (dimension {k})")
        if v.has_input(2):
            w = v.input(2)
            if w.rank != 1 or w.shape[0] != x.shape[1]:
                raise v.fail(f"the weights {w} must be a vector of the {x.shape[1]} classes")
        return x.shape[0], x.shape[1], numel(x.shape[2:])

    def infer(self, v: NodeView) -> list[OutInfo]:
        self._shapes(v)
        x, t = v.input(0), v.input(1)
        red = v.attr("reduction", "mean")
        outs = [OutInfo(x.dtype, tuple(t.shape) if red == "none" else ())]
        if self.softmax:
            outs.append(OutInfo(x.dtype, x.shape))
        return outs

    def _rows(self, v: NodeView) -> bool:
        """Log-sum-exp of contiguous class rows ([N, C] input) computed for all rows at once:
        the exponentials in one long loop that vectorises instead of C scalar calls per row."""
        return self.softmax and self._shapes(v)[2] == 1

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        if not self._rows(v):
            return []
        n_, c_, _ = self._shapes(v)
        return [(v.input(0).dtype, numel((n_, c_))), (v.input(0).dtype, n_)]

    def emit(self, v: NodeView, e) -> str:
        n_, c_, s_ = self._shapes(v)
        x = v.input(0)
        tt = x.dtype.cpp
        red = v.attr("reduction", "mean")
        ii = v.attr("ignore_index")
        N, C, S = e.dim(n_), e.dim(c_), e.dim(s_)
        xs, ts, ys = e.inp(0), e.inp(1), e.out(0)
        n, d, c, k = e.tmp("n"), e.tmp("d"), e.tmp("c"), e.tmp("k")
        rows = self._rows(v)
        pre = []
        if rows:
            # ew_: x - row max, then its exp; the row sums go to ew_[n * C] (no longer needed),
            # lse_a[n]: the row max, then the log-sum-exp (the same operations as the per-row loop)
            ew, la, i = e.ws(0), e.ws(1), e.tmp("i")
            pre = [f"for (std::int64_t {n} = 0; {n} < {N}; ++{n}) {{",
                   f"const {tt} *xr_ = {xs} + {n} * {C};",
                   f"{tt} mx_ = -std::numeric_limits<{tt}>::infinity();",
                   f"for (std::int64_t {c} = 0; {c} < {C}; ++{c}) mx_ = xr_[{c}] > mx_ ? xr_[{c}] : mx_;",
                   f"{la}[{n}] = mx_;",
                   f"for (std::int64_t {c} = 0; {c} < {C}; ++{c}) {ew}[{n} * {C} + {c}] = xr_[{c}] - mx_;",
                   "}",
                   f"for (std::int64_t {i} = 0; {i} < {N} * {C}; ++{i}) {ew}[{i}] = sofie_rt::vm::exp({ew}[{i}]);",
                   f"if ({C} > 0) {{",
                   f"for (std::int64_t {n} = 0; {n} < {N}; ++{n}) {{",
                   f"{tt} se_ = 0;",
                   f"for (std::int64_t {c} = 0; {c} < {C}; ++{c}) se_ += {ew}[{n} * {C} + {c}];",
                   f"{ew}[{n} * {C}] = se_;",
                   "}",
                   f"for (std::int64_t {n} = 0; {n} < {N}; ++{n}) {la}[{n}] += sofie_rt::vm::log({ew}[{n} * {C}]);",
                   f"}} else {{ for (std::int64_t {n} = 0; {n} < {N}; ++{n}) {la}[{n}] += sofie_rt::vm::log({tt}(0)); }}"]
        lines = pre + ["double acc_ = 0, wsum_ = 0;",
                 f"for (std::int64_t {n} = 0; {n} < {N}; ++{n}) {{",
                 f"for (std::int64_t {d} = 0; {d} < {S}; ++{d}) {{",
                 f"const std::int64_t {k} = {n} * {S} + {d};",
                 f"const {tt} *xp_ = {xs} + {n} * {C} * {S} + {d};"]
        if self.softmax:
            # log-softmax over the classes (stride S) of this (n, d)
            lp = e.out(1) if _out_wanted(v, 1) else None
            if rows:
                lines.append(f"const {tt} lse_ = {e.ws(1)}[{n}];")
            else:
                lines += [f"{tt} mx_ = -std::numeric_limits<{tt}>::infinity();",  # no read when C == 0
                          f"for (std::int64_t {c} = 0; {c} < {C}; ++{c}) mx_ = xp_[{c} * {S}] > mx_ ? xp_[{c} * {S}] : mx_;",
                          f"{tt} se_ = 0;",
                          f"for (std::int64_t {c} = 0; {c} < {C}; ++{c}) se_ += sofie_rt::vm::exp(xp_[{c} * {S}] - mx_);",
                          f"const {tt} lse_ = mx_ + sofie_rt::vm::log(se_);"]
            if lp is not None:
                lines.append(f"for (std::int64_t {c} = 0; {c} < {C}; ++{c}) "
                             f"{lp}[{n} * {C} * {S} + {c} * {S} + {d}] = xp_[{c} * {S}] - lse_;")
        lines.append(f"const std::int64_t t_ = std::int64_t({ts}[{k}]);")
        if ii is not None:
            skip = f"{ys}[{k}] = {tt}(0); " if red == "none" else ""
            lines.append(f"if (t_ == std::int64_t({int(ii)}LL)) {{ {skip}continue; }}")
        lines.append(f"if (t_ < 0 || t_ >= {C}) {e.fail('target class out of range [0, C)')}")
        w = f"double({e.inp(2)}[t_])" if v.has_input(2) else "1.0"
        val = "double(lse_ - xp_[t_ * " + S + "])" if self.softmax else f"-double(xp_[t_ * {S}])"
        lines.append(f"const double w_ = {w};")
        lines.append(f"const double l_ = {val} * w_;")
        if red == "none":
            lines.append(f"{ys}[{k}] = {tt}(l_);")
        else:
            lines.append("acc_ += l_; wsum_ += w_;")
        lines.append("}}")
        if red == "sum":
            lines.append(f"{ys}[0] = {tt}(acc_);")
        elif red == "mean":
            lines.append(f"{ys}[0] = {tt}(acc_ / wsum_);")
        else:
            lines.append("(void)acc_; (void)wsum_;")
        return "\n".join(lines)


@register
class NegativeLogLikelihoodLoss(_Loss):
    """ONNX NegativeLogLikelihoodLoss: -input[n, target[n, d...], d...] * weight[target], reduction
    none/sum/mean, ignore_index (negative included), any number of extra dimensions."""

    op_type = "NegativeLogLikelihoodLoss"
    softmax = False


@register
class SoftmaxCrossEntropyLoss(_Loss):
    """ONNX SoftmaxCrossEntropyLoss: NegativeLogLikelihoodLoss of log-softmax over the classes,
    with the optional log_prob output; reduction, weights and ignore_index as NLL."""

    op_type = "SoftmaxCrossEntropyLoss"
    softmax = True


_STASH = {1: FLOAT32, 11: FLOAT64}


@register
class RMSNormalization(Operator):
    """ONNX RMSNormalization (opset 23): x / sqrt(mean(x^2 over axis..rank-1) + epsilon) * scale,
    any axis, stash_type float or double, scale broadcast over the normalized dimensions."""

    op_type = "RMSNormalization"
    dtypes = FLOATS

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if v.input(1).dtype != v.input(0).dtype:
            return "X and scale have different element types"
        if int(v.attr("stash_type", 1)) not in _STASH:
            return f"stash_type={v.attr('stash_type')} is not supported (float or double only)"
        return None

    def _axis(self, v: NodeView) -> int:
        x = v.input(0)
        if x.rank < 1:
            raise v.fail("input must have rank >= 1")
        a = normalize_axis(int(v.attr("axis", -1)), x.rank, v)
        _check_bcast(v, "scale", v.input(1).shape, x.shape[a:])
        return a

    def infer(self, v: NodeView) -> list[OutInfo]:
        self._axis(v)
        return [OutInfo(v.input(0).dtype, v.input(0).shape)]

    def emit(self, v: NodeView, e) -> str:
        a = self._axis(v)
        x = v.input(0)
        t = x.dtype.cpp
        us = _STASH[int(v.attr("stash_type", 1))]
        u = us.cpp
        norm = x.shape[a:]
        d, rows = numel(norm), numel(x.shape[:a])
        r, xr, yr, j, ss, inv = (e.tmp(n) for n in ("r", "xr", "yr", "j", "ss", "inv"))
        eps = e.lit(v.attr("epsilon", 1e-5), us)
        sc = f"{e.inp(1)}[{_bcast_index(e, j, norm, v.input(1).shape)}]"
        return "\n".join([
            f"for (std::int64_t {r} = 0; {r} < {e.dim(rows)}; ++{r}) {{",
            f"const {t} *{xr} = {e.inp(0)} + {r} * {e.dim(d)};",
            f"{t} *{yr} = {e.out()} + {r} * {e.dim(d)};",
            # the sum of squares by the runtime's row kernel (8 float lanes for float rows)
            f"const double {ss} = sofie_rt::rows::row_sqdev<{t}>({xr}, {e.dim(d)}, 0.0);",
            f"const {u} {inv} = {u}(1) / std::sqrt({u}({ss} / double({e.dim(d)})) + {eps});",
            f"for (std::int64_t {j} = 0; {j} < {e.dim(d)}; ++{j}) {yr}[{j}] = {t}({u}({xr}[{j}]) * {inv}) * {sc};",
            "}"])
