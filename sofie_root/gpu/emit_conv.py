"""GPU emission of convolutions (Conv, FusedConv: N-D, groups, pads, strides, dilations) and
pooling (MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool).

A convolution is an im2col kernel (skipped for pointwise 1x1 convolutions, whose input already
is the GEMM operand) and one strided-batched GEMM per group over the images, writing the output
in NCHW directly (``y[n] = W[M, C*K] @ col[n][C*K, P]``); bias and activation follow in one
kernel. Geometry (pads, auto_pad, output sizes) comes from ``sofie_root/ops/conv.py``.
"""

from __future__ import annotations

from ..ir.dims import numel
from ..ops.base import NodeView, lookup
from ..ops.fused import _activation_expr, _FusedProduct


def _prod(xs) -> int:
    r = 1
    for x in xs:
        r *= int(x)
    return r


class Conv:
    def _view(self, v: NodeView) -> NodeView:
        return lookup("sofie", "FusedConv")._base_view(v) if v.node.op_type == "FusedConv" else v  # type: ignore

    def _geom(self, v: NodeView):
        return lookup("", "Conv")._geom(self._view(v))  # type: ignore[union-attr]

    def check(self, v: NodeView) -> str | None:
        return None

    def workspace(self, v: NodeView):
        g, _ = self._geom(v)
        if lookup("", "Conv")._pointwise(g):  # type: ignore[union-attr]
            return []
        x = v.input(0)
        return [(x.dtype, x.shape[0] * int(x.shape[1]) * _prod(g.k) * _prod(g.out))]

    def emit(self, v: NodeView, e) -> str:
        g, group = self._geom(v)
        x, w = v.input(0), v.input(1)
        dt = x.dtype
        t = dt.cpp
        n, c, m = x.shape[0], int(x.shape[1]), int(w.shape[0])
        cg, mg = c // group, m // group
        kk, p, isz = _prod(g.k), _prod(g.out), _prod(g.inp)
        ckk = cg * kk
        lines = []
        if lookup("", "Conv")._pointwise(g):  # type: ignore[union-attr]
            src, src_group, src_image = e.inp(0), cg * p, c * p
        else:
            col = e.ws(0)
            nd = g.rank
            # work item: (image, channel, kernel offset, output position)
            body = [f"const std::int64_t p_ = i % {p};", f"std::int64_t r_ = i / {p};",
                    f"const std::int64_t kk_ = r_ % {kk}; r_ /= {kk};",
                    f"const std::int64_t ch_ = r_ % {c};", f"const std::int64_t n_ = r_ / {c};",
                    "bool inside_ = true;", "std::int64_t src_ = 0;"]
            body.append("std::int64_t pr_ = p_, kr_ = kk_;")
            for j in reversed(range(nd)):
                body.append(f"const std::int64_t o{j}_ = pr_ % {g.out[j]}; pr_ /= {g.out[j]};")
                body.append(f"const std::int64_t q{j}_ = kr_ % {g.k[j]}; kr_ /= {g.k[j]};")
            stride = 1
            for j in reversed(range(nd)):
                body.append(f"const std::int64_t s{j}_ = o{j}_ * {g.s[j]} - {g.pb[j]} + q{j}_ * {g.d[j]};")
                body.append(f"inside_ = inside_ && s{j}_ >= 0 && s{j}_ < {g.inp[j]};")
                body.append(f"src_ += s{j}_ * {stride};")
                stride *= g.inp[j]
            body.append(f"{col}[i] = inside_ ? {e.inp(0)}[(n_ * {c} + ch_) * {isz} + src_] : {t}(0);")
            lines.append(e.kernel(e.dim(n * c * kk * p), "\n".join(body)))
            src, src_group, src_image = col, ckk * p, c * kk * p
        one, zero = e.lit(1, dt), e.lit(0, dt)
        for gi in range(group):
            lines.append(e.gemm(dt, False, False, str(mg), str(p), str(ckk), one, f"{e.inp(1)} + {gi * mg * ckk}",
                                str(ckk), f"{src} + {gi * src_group}", str(p), zero, f"{e.out()} + {gi * mg * p}",
                                str(p), batch=e.dim(n), sa="0", sb=str(src_image), sc=str(m * p)))
        _, act, attrs = _FusedProduct.split(v.node) if v.node.op_type == "FusedConv" else ({}, "", {})
        has_bias = v.has_input(2)
        if has_bias or act:
            xv = e.tmp("x")
            load = f"{e.out()}[i]" + (f" + {e.inp(2)}[(i / {p}) % {m}]" if has_bias else "")
            expr = _activation_expr(act, attrs, xv, dt, v.label) if act else xv
            lines.append(e.kernel(e.dim(n * m * p), f"const {t} {xv} = {load};\n{e.out()}[i] = {expr};"))
        return "\n".join(lines)


class ConvTranspose:
    """col[n, g] = W_g^T X[n, g] (one strided-batched GEMM per group), then one work item per
    output element gathering its kernel taps from col (no atomics: every tap is read, not added)."""

    def check(self, v: NodeView) -> str | None:
        return None

    def workspace(self, v: NodeView):
        g, group = lookup("", "ConvTranspose")._geom(v)  # type: ignore[union-attr]
        x, w = v.input(0), v.input(1)
        return [(x.dtype, x.shape[0] * group * int(w.shape[1]) * _prod(g.k) * _prod(g.inp))]

    def emit(self, v: NodeView, e) -> str:
        g, group = lookup("", "ConvTranspose")._geom(v)  # type: ignore[union-attr]
        x, w = v.input(0), v.input(1)
        dt = x.dtype
        t = dt.cpp
        c, mg = int(x.shape[1]), int(w.shape[1])
        cg, m = c // group, mg * group
        kk, isz, osz = _prod(g.k), _prod(g.inp), _prod(g.out)
        col = e.ws(0)
        lines = []
        for gi in range(group):
            lines.append(e.gemm(dt, True, False, str(mg * kk), str(isz), str(cg), e.lit(1, dt),
                                f"{e.inp(1)} + {gi * cg * mg * kk}", str(mg * kk), f"{e.inp(0)} + {gi * cg * isz}",
                                str(isz), e.lit(0, dt), f"{col} + {gi * mg * kk * isz}", str(isz), batch=e.dim(x.shape[0]),
                                sa="0", sb=str(c * isz), sc=str(group * mg * kk * isz)))
        nd = g.rank
        body = [f"const std::int64_t op_ = i % {osz}; const std::int64_t ch_ = (i / {osz}) % {m};",
                f"const std::int64_t n_ = i / ({osz} * {m});",
                f"const std::int64_t g_ = ch_ / {mg}, mm_ = ch_ % {mg};",
                f"const {t} *cr_ = {col} + ((n_ * {group} + g_) * {mg} + mm_) * {kk * isz};",
                "std::int64_t r_ = op_;"]
        for j in reversed(range(nd)):
            body.append(f"const std::int64_t o{j}_ = r_ % {g.out[j]}; r_ /= {g.out[j]};")
        body.append(f"{t} acc_ = {t}({e.inp(2) + '[ch_]' if v.has_input(2) else '0'});")
        for j in range(nd):
            body.append(f"for (std::int64_t k{j}_ = 0; k{j}_ < {g.k[j]}; ++k{j}_) {{")
            body.append(f"const std::int64_t p{j}_ = o{j}_ + {g.pb[j]} - k{j}_ * {g.d[j]};")
            body.append(f"if (p{j}_ < 0 || p{j}_ % {g.s[j]} != 0 || p{j}_ / {g.s[j]} >= {g.inp[j]}) continue;")
            body.append(f"const std::int64_t i{j}_ = p{j}_ / {g.s[j]};")
        kflat, iflat = "0", "0"
        for j in range(nd):
            kflat = f"({kflat}) * {g.k[j]} + k{j}_"
            iflat = f"({iflat}) * {g.inp[j]} + i{j}_"
        body.append(f"acc_ += cr_[({kflat}) * {isz} + {iflat}];")
        body.append("}" * nd)
        body.append(f"{e.out()}[i] = acc_;")
        lines.append(e.kernel(e.dim(x.shape[0] * m * osz), "\n".join(body)))
        return "\n".join(lines)


class Pool:
    def __init__(self, kind: str):
        self.kind = kind

    def check(self, v: NodeView) -> str | None:
        return None

    def emit(self, v: NodeView, e) -> str:
        op = lookup("", v.node.op_type)
        g = op._geom(v)  # type: ignore[union-attr]
        x = v.input(0)
        dt = x.dtype
        t = dt.cpp
        nd = g.rank
        isz, osz = _prod(g.inp), _prod(g.out)
        want_idx = self.kind == "max" and len(v.node.outputs) > 1 and bool(v.node.outputs[1])
        count_pad = bool(v.attr("count_include_pad", 0))
        p = op._p(v) if self.kind == "lp" else 0.0  # type: ignore[union-attr]
        body = [f"const std::int64_t pl_ = i / {osz};", f"std::int64_t r_ = i % {osz};",
                f"const {t} *xp_ = {e.inp(0)} + pl_ * {isz};"]
        for j in reversed(range(nd)):
            body.append(f"const std::int64_t o{j}_ = r_ % {g.out[j]}; r_ /= {g.out[j]};")
        cnt = []
        for j in range(nd):
            d = g.d[j]
            body.append(f"const std::int64_t b{j}_ = o{j}_ * {g.s[j]} - {g.pb[j]};")
            body.append(f"const std::int64_t lo{j}_ = b{j}_ < 0 ? (-b{j}_ + {d - 1}) / {d} : 0;")
            body.append(f"const std::int64_t hi{j}_ = std::min<std::int64_t>({g.k[j]}, "
                        f"std::max<std::int64_t>(0, {g.inp[j]} - b{j}_ + {d - 1}) / {d});")
            if self.kind == "avg" and count_pad:
                body.append(f"const std::int64_t cp{j}_ = std::min<std::int64_t>({g.k[j]}, "
                            f"std::max<std::int64_t>(0, {g.inp[j] + g.pe[j]} - b{j}_ + {d - 1}) / {d});")
                cnt.append(f"cp{j}_")
            else:
                cnt.append(f"std::max<std::int64_t>(0, hi{j}_ - lo{j}_)")
        if self.kind == "max":
            init = f"{t}(-std::numeric_limits<float>::infinity())" if x.dtype.is_float else \
                f"std::numeric_limits<{t}>::lowest()"
            body.append(f"{t} acc_ = {init}; std::int64_t best_ = -1;")
        else:
            body.append(f"{t} acc_ = {t}(0);")
        for j in range(nd):
            body.append(f"for (std::int64_t k{j}_ = lo{j}_; k{j}_ < hi{j}_; ++k{j}_) {{")
            body.append(f"const std::int64_t s{j}_ = b{j}_ + k{j}_ * {g.d[j]};")
        flat = "0"
        for j in range(nd):
            flat = f"({flat}) * {g.inp[j]} + s{j}_"
        body.append(f"const {t} xv_ = xp_[{flat}];")
        if self.kind == "max":
            idx = flat
            if int(v.attr("storage_order", 0)):  # column major: the first spatial index varies fastest
                idx = f"s{nd - 1}_"
                for j in reversed(range(nd - 1)):
                    idx = f"({idx}) * {g.inp[j]} + s{j}_"
            body.append(f"if (xv_ > acc_ || best_ < 0) {{ acc_ = xv_; best_ = {idx}; }}"
                        if want_idx else "acc_ = xv_ > acc_ ? xv_ : acc_;")
        elif self.kind == "avg":
            body.append("acc_ += xv_;")
        elif p == 1:
            body.append("acc_ += std::abs(xv_);")
        elif p == 2:
            body.append("acc_ += xv_ * xv_;")
        else:
            body.append(f"acc_ += std::pow(std::abs(xv_), {e.lit(p, dt)});")
        body.append("}" * nd)
        if self.kind == "max":
            res = "acc_"
        elif self.kind == "avg":
            res = f"acc_ / {t}({' * '.join(cnt)})"
        elif p == 1:
            res = "acc_"
        elif p == 2:
            res = "std::sqrt(acc_)"
        else:
            res = f"std::pow(acc_, {e.lit(1.0 / p, dt)})"
        body.append(f"{e.out()}[i] = {res};")
        if want_idx:
            body.append(f"{e.out(1)}[i] = pl_ * {isz} + (best_ < 0 ? 0 : best_);")
        return e.kernel(e.dim(numel(x.shape[:2]) * osz), "\n".join(body))


class GlobalPool:
    def __init__(self, kind: str):
        self.kind = kind

    def check(self, v: NodeView) -> str | None:
        return None

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        t = x.dtype.cpp
        sp = e.dim(numel(x.shape[2:]))
        if self.kind == "max":
            # NaN anywhere in the plane gives NaN and a plane of -inf gives -inf, as the CPU's row kernel
            init = f"-std::numeric_limits<{t}>::infinity()"
            step, res = "acc_ = (xp_[j_] > acc_ || xp_[j_] != xp_[j_]) ? xp_[j_] : acc_;", "acc_"
        else:
            init, step, res = f"{t}(0)", "acc_ += xp_[j_];", f"acc_ / {t}({sp})"
        body = (f"const {t} *xp_ = {e.inp(0)} + i * {sp};\n{t} acc_ = {init};\n"
                f"for (std::int64_t j_ = 0; j_ < {sp}; ++j_) {step}\n{e.out()}[i] = {res};")
        return e.kernel(e.dim(numel(x.shape[:2])), body)


def emitters() -> dict:
    return {("", "Conv"): Conv(), ("sofie", "FusedConv"): Conv(), ("", "ConvTranspose"): ConvTranspose(),
            ("", "MaxPool"): Pool("max"),
            ("", "AveragePool"): Pool("avg"), ("", "LpPool"): Pool("lp"),
            ("", "GlobalAveragePool"): GlobalPool("avg"), ("", "GlobalMaxPool"): GlobalPool("max")}
