"""GPU emission of reductions (ReduceSum, ReduceMean, ReduceMax, ... over any axes), Softmax /
LogSoftmax, LayerNormalization and TopK.

Each is one work item per output element (per row for Softmax, LayerNorm and TopK rows); the
accumulation snippets (init, step, finish) of the reductions are the operators' own
(``sofie_root/ops/reduce.py``), so both backends reduce the same way, NaN rules included.
"""

from __future__ import annotations

from ..ir.dims import numel, strides
from ..ops import reduce as rd
from ..ops.base import NodeView, lookup


class Reduce:
    def __init__(self, op):
        self.op = op

    def check(self, v: NodeView) -> str | None:
        return None

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        dt = x.dtype
        T = dt.cpp
        axes = self.op._reduced(v)
        count = e.dim(numel([x.shape[a] for a in axes]))
        kept = [a for a in range(x.rank) if a not in axes]
        red = [a for a in range(x.rank) if a in axes]
        ist = strides(x.shape)
        if not red or all(isinstance(x.shape[a], int) and x.shape[a] == 1 for a in red):
            if isinstance(self.op, rd.ReduceLogSumExp):
                return e.kernel(e.size_in(0), f"{e.out()}[i] = {e.inp(0)}[i];")
            body = (f"const {T} x_ = {e.inp(0)}[i];\n"
                    f"{e.out()}[i] = {self.op._finish(self.op.step(self.op.init(dt), 'x_', dt), count, dt)};")
            return e.kernel(e.size_in(0), body)
        oc, ocode = e.unravel("i", [x.shape[a] for a in kept], "o")
        base = e.offset(oc, [ist[a] for a in kept]) if kept else "0"
        rc, rcode = e.unravel("r_", [x.shape[a] for a in red], "q")
        roff = e.offset(rc, [ist[a] for a in red])
        rn = e.dim(numel([x.shape[a] for a in red]))
        loop = (f"for (std::int64_t r_ = 0; r_ < {rn}; ++r_) {{\n"
                + "\n".join("   " + line for line in rcode.splitlines())
                + f"\n   const {T} x_ = {e.inp(0)}[base_ + {roff}];\n")
        if isinstance(self.op, rd.ReduceLogSumExp):
            # as on the CPU: log(sum(exp(x - m))) + m over the largest finite m, in double for integers
            C = self.op._ct(dt).cpp
            ninf = rd._lowest(self.op._ct(dt))
            res = "std::log(s_) + m_" if dt.is_float else f"sofie_rt::float_to_int<{T}>(std::log(s_) + m_)"
            body = (f"{ocode}\nconst std::int64_t base_ = {base};\n{C} m_ = {ninf};\n"
                    f"{loop}   m_ = (std::isfinite({C}(x_)) && {C}(x_) > m_) ? {C}(x_) : m_;\n}}\n"
                    f"m_ = m_ == {ninf} ? {C}(0) : m_;\n{C} s_ = {C}(0);\n"
                    f"{loop}   s_ += std::exp({C}(x_) - m_);\n}}\n{e.out()}[i] = {res};")
            return e.kernel(e.dim(numel([x.shape[a] for a in kept])), body)
        body = (f"{ocode}\nconst std::int64_t base_ = {base};\n{T} acc_ = {self.op.init(dt)};\n"
                f"for (std::int64_t r_ = 0; r_ < {rn}; ++r_) {{\n"
                + "\n".join("   " + line for line in rcode.splitlines())
                + f"\n   const {T} x_ = {e.inp(0)}[base_ + {roff}];\n   acc_ = {self.op.step('acc_', 'x_', dt)};\n}}\n"
                f"{e.out()}[i] = {self.op._finish('acc_', count, dt)};")
        return e.kernel(e.dim(numel([x.shape[a] for a in kept])), body)


class Softmax:
    def __init__(self, log: bool):
        self.log = log

    def emit(self, v: NodeView, e) -> str:
        outer, a, inner = lookup("", v.node.op_type)._split(v)  # type: ignore[union-attr]
        dt = v.input(0).dtype
        T = dt.cpp
        na, ni = e.dim(a), e.dim(inner)
        x, y = e.inp(0), e.out()
        at = f"(o_ * {na} + j_) * {ni} + k_"
        body = [f"const std::int64_t o_ = i / {ni}, k_ = i % {ni};",
                f"{T} m_ = {rd._lowest(dt)};",
                f"for (std::int64_t j_ = 0; j_ < {na}; ++j_) m_ = {x}[{at}] > m_ ? {x}[{at}] : m_;",
                f"{T} s_ = {T}(0);"]
        if self.log:
            body += [f"for (std::int64_t j_ = 0; j_ < {na}; ++j_) s_ += std::exp({x}[{at}] - m_);",
                     "s_ = m_ + std::log(s_);",
                     f"for (std::int64_t j_ = 0; j_ < {na}; ++j_) {y}[{at}] = {x}[{at}] - s_;"]
        else:
            body += [f"for (std::int64_t j_ = 0; j_ < {na}; ++j_) {{ const {T} z_ = std::exp({x}[{at}] - m_); "
                     f"{y}[{at}] = z_; s_ += z_; }}",
                     f"s_ = {T}(1) / s_;",
                     f"for (std::int64_t j_ = 0; j_ < {na}; ++j_) {y}[{at}] *= s_;"]
        return e.kernel(e.dim(outer * inner), "\n".join(body))


class LayerNorm:
    inplace_safe = True  # one work item per row: statistics first, then y[j] from x[j]

    def emit(self, v: NodeView, e) -> str:
        from ..ops.normalization import _STASH, _bcast_index, _out_wanted

        op = lookup("", "LayerNormalization")
        a = op._axis(v)  # type: ignore[union-attr]
        x = v.input(0)
        t = x.dtype.cpp
        stash = _STASH[int(v.attr("stash_type", 1))]
        u = stash.cpp
        norm = x.shape[a:]
        d = e.dim(numel(norm))
        eps = e.lit(v.attr("epsilon", 1e-5), stash)
        sc = f"{e.inp(1)}[{_bcast_index(e, 'j_', norm, v.input(1).shape)}]"
        val = f"{t}(({u}(xr_[j_]) - mean_) * inv_) * {sc}"
        if v.has_input(2):
            val += f" + {e.inp(2)}[{_bcast_index(e, 'j_', norm, v.input(2).shape)}]"
        body = [f"const {t} *xr_ = {e.inp(0)} + i * {d};", f"{t} *yr_ = {e.out()} + i * {d};",
                "double s_ = 0;", f"for (std::int64_t j_ = 0; j_ < {d}; ++j_) s_ += double(xr_[j_]);",
                f"const double mu_ = s_ / double({d});", "double q_ = 0;",
                f"for (std::int64_t j_ = 0; j_ < {d}; ++j_) {{ const double c_ = double(xr_[j_]) - mu_; q_ += c_ * c_; }}",
                f"const {u} mean_ = {u}(mu_);",
                f"const {u} inv_ = {u}(1) / std::sqrt({u}(q_ / double({d})) + {eps});",
                f"for (std::int64_t j_ = 0; j_ < {d}; ++j_) yr_[j_] = {val};"]
        if _out_wanted(v, 1):
            body.append(f"{e.out(1)}[i] = mean_;")
        if _out_wanted(v, 2):
            body.append(f"{e.out(2)}[i] = inv_;")
        return e.kernel(e.dim(numel(x.shape[:a])), "\n".join(body))


class TopK:
    """One work item per input element: its rank in the row (values in order, ties to the lower
    index, NaN above every number) is counted; the elements ranked below K are written at their
    rank. O(n^2) per row, fully parallel: meant for the short rows of k-NN and tagger heads."""

    def check(self, v: NodeView) -> str | None:
        x = v.input(0)
        if not (x.dtype.is_float or x.dtype.is_int):
            return f"TopK of {x.dtype.name} is not supported"
        return None

    def emit(self, v: NodeView, e) -> str:
        op = lookup("", "TopK")
        axis, k = op._params(v)  # type: ignore[union-attr]
        x = v.input(0)
        _, a, inner = rd._oai(x.shape, axis)
        na, ni, nk = e.dim(a), e.dim(inner), e.dim(k)
        largest = bool(v.attr("largest", 1))
        T = x.dtype.cpp
        has_values = len(v.node.outputs) > 0 and bool(v.node.outputs[0])
        has_indices = len(v.node.outputs) > 1 and bool(v.node.outputs[1])
        nan = x.dtype.is_float
        # "b comes before a" in the output order
        if largest:
            cmp = "(yb_ > ya_ || (yb_ == ya_ && j_ < q_))"
            if nan:
                cmp = f"((yb_ != yb_) ? (ya_ == ya_ || j_ < q_) : ((ya_ == ya_) && {cmp}))"
        else:
            cmp = "(yb_ < ya_ || (yb_ == ya_ && j_ < q_))"
            if nan:
                cmp = f"((ya_ != ya_) ? (yb_ == yb_ || j_ < q_) : ((yb_ == yb_) && {cmp}))"
        lines = []
        if not (isinstance(k, int) and isinstance(a, int)):
            lines.append(f"if ({nk} < 0 || {nk} > {na}) {e.fail('K is out of range for the axis')}")
        body = [f"const std::int64_t t_ = i % {ni}; const std::int64_t q_ = (i / {ni}) % {na};",
                f"const std::int64_t o_ = i / ({ni} * {na});",
                f"const {T} *row_ = {e.inp(0)} + o_ * {na} * {ni} + t_;",
                f"const {T} ya_ = row_[q_ * {ni}];",
                "std::int64_t rank_ = 0;",
                f"for (std::int64_t j_ = 0; j_ < {na} && rank_ < {nk}; ++j_) {{",
                f"   const {T} yb_ = row_[j_ * {ni}];",
                f"   rank_ += {cmp} ? 1 : 0;",
                "}",
                f"if (rank_ < {nk}) {{",
                f"   const std::int64_t dst_ = (o_ * {nk} + rank_) * {ni} + t_;"]
        if has_values:
            body.append(f"   {e.out(0)}[dst_] = ya_;")
        if has_indices:
            body.append(f"   {e.out(1)}[dst_] = q_;")
        body.append("}")
        lines.append(e.kernel(e.dim(x.size), "\n".join(body)))
        return "\n".join(lines)


def emitters() -> dict:
    from ..ops.base import REGISTRY

    out: dict = {}
    for (dom, name), op in REGISTRY.items():
        if not dom and isinstance(op, rd._Reduce):
            out[("", name)] = Reduce(op)
    out[("", "Softmax")] = Softmax(False)
    out[("", "LogSoftmax")] = Softmax(True)
    out[("", "LayerNormalization")] = LayerNorm()
    out[("", "TopK")] = TopK()
    return out


