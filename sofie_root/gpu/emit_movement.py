"""GPU emission of data movement: Reshape/Flatten/Squeeze/Unsqueeze/Identity/Dropout (a device
copy, nothing when the planner gave input and output one buffer), Transpose, Concat, Slice,
Expand, Gather, GatherElements, ScatterElements, ScatterND, Range, Shape and Size, and
RotaryEmbedding (``ops/rotary.py``).

Parameters (perm, slice bounds, axes, target shapes) come from the operators in
``sofie_root/ops/movement.py`` and ``shape.py``; each kernel is one work item per output element.
Indices are checked in the kernel: an index out of range is reported after the run, naming the node.
"""

from __future__ import annotations

from ..ir.dims import numel, strides
from ..ops import movement as mv
from ..ops.base import NodeView, lookup


def _I(dt) -> str:
    return "static_cast<std::int64_t>({})" if dt.is_int else "{}"


def index_code(e, var: str, src: str, dim, what: str) -> str:
    """Kernel code reading an index into ``var``: negative ones wrap, out-of-range ones are
    reported (and replaced by 0 so the kernel reads nothing outside the tensor)."""
    d = e.dim(dim)
    return (f"std::int64_t {var} = static_cast<std::int64_t>({src});\n"
            f"if ({var} < 0) {var} += {d};\n"
            f"if ({var} < 0 || {var} >= {d}) {{ {e.device_fail(what)} {var} = 0; }}")


class Copy:
    """Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout (inference): the bytes unchanged."""

    inplace_safe = True

    def check(self, v: NodeView) -> str | None:
        return None

    def emit(self, v: NodeView, e) -> str:
        info = v.input(0)
        code = e.copy(e.out(), e.inp(0), f"std::size_t({e.size_in(0)}) * sizeof({info.dtype.cpp})")
        if v.node.op_type == "Dropout" and e.has_out(1):  # inference: the mask keeps everything
            code += "\n" + e.kernel(e.size_out(1), f"{e.out(1)}[i] = true;")
        return code


class Transpose:
    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        perm = lookup("", "Transpose")._perm(v)  # type: ignore[union-attr]
        out_shape = [x.shape[p] for p in perm]
        ist = strides(x.shape)
        return e.strided_copy(out_shape, e.out(), 0, strides(out_shape), e.inp(0), 0, [ist[p] for p in perm])


class Concat:
    def emit(self, v: NodeView, e) -> str:
        axis = lookup("", "Concat")._axis(v)  # type: ignore[union-attr]
        out = e.out_info(0)
        outer = numel(out.shape[:axis])
        post = numel(out.shape[axis + 1:])
        inner_out = out.shape[axis] * post
        lines = []
        pos = 0
        for k, info in enumerate(v.inputs):
            if info is None:
                continue
            lines += mv._same_dim_checks(e, [(info.shape[a], out.shape[a]) for a in range(info.rank) if a != axis],
                                         "input shapes differ outside the concatenation axis")
            inner = info.shape[axis] * post
            if not mv._is(info.size, 0):
                lines.append(e.strided_copy([outer, inner], e.out(), pos * post, [inner_out, 1], e.inp(k), 0,
                                            [inner, 1]))
            pos = pos + info.shape[axis]
        return "\n".join(lines)


class Slice:
    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        start, size, step, checks = lookup("", "Slice")._params(v)  # type: ignore[union-attr]
        ist = strides(x.shape)
        off = 0
        for a in range(x.rank):
            off = off + start[a] * ist[a]
        lines = mv._checks(e, checks, "slice bounds fall outside the input for this batch size")
        lines.append(e.strided_copy(size, e.out(), 0, strides(size), e.inp(0), off,
                                    [ist[a] * step[a] for a in range(x.rank)]))
        return "\n".join(lines)


class Expand:
    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        out = e.out_info(0).shape
        r = len(out)
        aligned = [1] * (r - x.rank) + list(x.shape)
        ist = [0] * (r - x.rank) + strides(x.shape)
        src_st = [0 if mv._is(aligned[k], 1) else ist[k] for k in range(r)]
        lines = mv._same_dim_checks(e, [(aligned[k], out[k]) for k in range(r) if not mv._is(aligned[k], 1)],
                                    "the input does not broadcast to the target shape")
        lines.append(e.strided_copy(out, e.out(), 0, strides(out), e.inp(0), 0, src_st))
        return "\n".join(lines)


class Gather:
    def emit(self, v: NodeView, e) -> str:
        x, ind = v.input(0), v.input(1)
        a = lookup("", "Gather")._axis(v)  # type: ignore[union-attr]
        d = x.shape[a]
        inner, n = numel(x.shape[a + 1:]), ind.size
        ni, nn = e.dim(inner), e.dim(n)
        body = (f"const std::int64_t t_ = i % {ni}; const std::int64_t q_ = (i / {ni}) % {nn};\n"
                f"const std::int64_t o_ = i / ({ni} * {nn});\n"
                + index_code(e, "k_", f"{e.inp(1)}[q_]", d, "index out of range in Gather")
                + f"\n{e.out()}[i] = {e.inp(0)}[(o_ * {e.dim(d)} + k_) * {ni} + t_];")
        return e.kernel(e.dim(numel(x.shape[:a]) * n * inner), body)


class GatherElements:
    def emit(self, v: NodeView, e) -> str:
        x, ind = v.input(0), v.input(1)
        a = lookup("", "GatherElements")._axis(v)  # type: ignore[union-attr]
        lines = mv._checks(e, [(ind.shape[k], x.shape[k]) for k in range(x.rank) if k != a],
                           "indices do not fit in data outside the gather axis")
        coords, code = e.unravel("i", list(ind.shape))
        dst = strides(x.shape)
        data_st = [0 if k == a else dst[k] for k in range(x.rank)]
        body = (code + "\n" + index_code(e, "k_", f"{e.inp(1)}[i]", x.shape[a], "index out of range in GatherElements")
                + f"\n{e.out()}[i] = {e.inp(0)}[{e.offset(coords, data_st)} + k_ * {e.dim(dst[a])}];")
        lines.append(e.kernel(e.dim(ind.size), body))
        return "\n".join(lines)


def _scatter_update(e, dt, reduction: str, dst: str, val: str) -> str:
    """Kernel code applying one update; reductions are atomic (several updates may hit one element)."""
    if reduction == "none":
        return f"{dst} = {val};"
    if reduction == "add":
        return f"sofie_gpu_atomic_add(&{dst}, {val});"
    if reduction == "mul":
        return f"sofie_gpu_atomic_mul(&{dst}, {val});"
    return f"sofie_gpu_atomic_{reduction}(&{dst}, {val});"


class GatherND:
    """One work item per output element: its row's indices are read (and checked) in the kernel."""

    def emit(self, v: NodeView, e) -> str:
        x, ind = v.input(0), v.input(1)
        b, m = lookup("", "GatherND")._dims(v)  # type: ignore[union-attr]
        nb, n, sl = numel(ind.shape[:b]), numel(ind.shape[b:-1]), numel(x.shape[b + m:])
        xst = strides(x.shape)
        lines = mv._same_dim_checks(e, [(x.shape[k], ind.shape[k]) for k in range(b)],
                                    "batch dimensions of data and indices differ")
        if any(mv._is(q, 0) for q in (nb, n, sl)):
            return "\n".join([*lines, "// empty output"])
        ns, nn = e.dim(sl), e.dim(n)
        body = [f"const std::int64_t t_ = i % {ns}; const std::int64_t row_ = i / {ns};",
                f"std::int64_t off_ = (row_ / {nn}) * {e.dim(numel(x.shape[b:]))} + t_;"]
        for q in range(m):
            body.append(index_code(e, f"k{q}_", f"{e.inp(1)}[row_ * {m} + {q}]", x.shape[b + q],
                                   "index out of range in GatherND"))
            body.append(f"off_ += k{q}_ * {e.dim(xst[b + q])};")
        body.append(f"{e.out()}[i] = {e.inp(0)}[off_];")
        lines.append(e.kernel(e.dim(nb * n * sl), "\n".join(body)))
        return "\n".join(lines)


class ScatterElements:
    def check(self, v: NodeView) -> str | None:
        red = v.attr("reduction", "none")
        dt = v.input(0).dtype.name
        if red != "none" and dt not in ("float32", "float64", "int32", "int64"):
            return f"reduction={red!r} on {dt} is not supported (float32/float64/int32/int64)"
        return None

    def emit(self, v: NodeView, e) -> str:
        x, ind = v.input(0), v.input(1)
        a = lookup("", "ScatterElements")._axis(v)  # type: ignore[union-attr]
        dt = x.dtype
        lines = [e.copy(e.out(), e.inp(0), f"std::size_t({e.size_in(0)}) * sizeof({dt.cpp})")]
        lines += mv._checks(e, [(ind.shape[k], x.shape[k]) for k in range(x.rank) if k != a],
                            "indices do not fit in data outside the scatter axis")
        coords, code = e.unravel("i", list(ind.shape))
        dst = strides(x.shape)
        data_st = [0 if k == a else dst[k] for k in range(x.rank)]
        body = (code + "\n" + index_code(e, "k_", f"{e.inp(1)}[i]", x.shape[a], "index out of range in ScatterElements")
                + "\n" + _scatter_update(e, dt, v.attr("reduction", "none"),
                                         f"{e.out()}[{e.offset(coords, data_st)} + k_ * {e.dim(dst[a])}]",
                                         f"{e.inp(2)}[i]"))
        lines.append(e.kernel(e.dim(ind.size), body))
        return "\n".join(lines)


class ScatterND:
    check = ScatterElements.check

    def emit(self, v: NodeView, e) -> str:
        x, ind = v.input(0), v.input(1)
        m = int(ind.shape[-1])
        dt = x.dtype
        upd = numel(ind.shape[:-1])
        slice_size = numel(x.shape[m:])
        xs = strides(x.shape)
        lines = [e.copy(e.out(), e.inp(0), f"std::size_t({e.size_in(0)}) * sizeof({dt.cpp})")]
        ns = e.dim(slice_size)
        body = [f"const std::int64_t u_ = i / {ns}; const std::int64_t t_ = i % {ns};", "std::int64_t off_ = t_;"]
        for j in range(m):
            body.append(index_code(e, f"k{j}_", f"{e.inp(1)}[u_ * {m} + {j}]", x.shape[j],
                                   "index out of range in ScatterND"))
            body.append(f"off_ += k{j}_ * {e.dim(xs[j])};")
        body.append(_scatter_update(e, dt, v.attr("reduction", "none"), f"{e.out()}[off_]", f"{e.inp(2)}[i]"))
        lines.append(e.kernel(e.dim(upd * slice_size), "\n".join(body)))
        return "\n".join(lines)


class Range:
    def emit(self, v: NodeView, e) -> str:
        dt = v.input(0).dtype
        start, delta, n = lookup("", "Range")._params(v)  # type: ignore[union-attr]
        if mv._is(n, 0):
            return "// empty output"
        if dt.is_float:
            return e.kernel(mv._cx(e, n), f"{e.out()}[i] = {e.lit(start, dt)} + static_cast<{dt.cpp}>(i) * "
                                          f"{e.lit(delta, dt)};")
        return e.kernel(mv._cx(e, n), f"{e.out()}[i] = static_cast<{dt.cpp}>({mv._cx(e, start)} + i * "
                                      f"{mv._cx(e, delta)});")


class ShapeValue:
    """Shape and Size: compile-time (possibly symbolic) values, written by a one-item kernel."""

    def emit(self, v: NodeView, e) -> str:
        if v.node.op_type == "Size":
            vals = [v.input(0).size]
        else:
            vals = list(lookup("", "Shape")._slice(v))  # type: ignore[union-attr]
        if not vals:
            return "// empty output"
        body = "\n".join(f"{e.out()}[{k}] = {e.dim(d)};" for k, d in enumerate(vals))
        return e.kernel("1", f"(void)i;\n{body}")


class RotaryEmbedding:
    """One work item per output element: its head row's cos/sin entry (by position id or by the
    caches' own [batch, sequence] rows) and its rotation partner (the other half, or the other
    element of its interleaved pair); past the rotary dimension a copy."""

    def check(self, v: NodeView) -> str | None:
        return lookup("", "RotaryEmbedding").check(v)  # type: ignore[union-attr]

    def emit(self, v: NodeView, e) -> str:
        nb, ns, nh, d, rd, four = lookup("", "RotaryEmbedding").geometry(v)  # type: ignore[union-attr]
        T = v.input(0).dtype.cpp
        S, H = e.dim(ns), e.dim(nh)
        half = rd // 2
        if four:  # [batch, heads, sequence, head]
            coords = f"const std::int64_t s_ = (i / {d}) % {S}, b_ = i / ({d} * {S} * {H});"
        else:  # [batch, sequence, heads x head]
            coords = f"const std::int64_t s_ = (i / ({d} * {H})) % {S}, b_ = i / ({d} * {H} * {S});"
        lines = []
        if v.has_input(3):
            row = index_code(e, "r_", f"{e.inp(3)}[b_ * {S} + s_]", v.input(1).shape[0],
                             "a position id is outside the cos/sin caches")
        else:
            cs = v.input(1).shape
            lines.append(f"if ({e.dim(cs[0])} != {e.dim(nb)} || {e.dim(cs[1])} != {S}) "
                         + e.fail("without position_ids the caches must be [batch, sequence, rotary dim / 2]"))
            row = "const std::int64_t r_ = b_ * " + S + " + s_;"
        if int(v.attr("interleaved", 0) or 0):
            pair = (f"const std::int64_t k_ = d_ / 2, p_ = i - (d_ & 1);\n"
                    f"const {T} x1_ = X[p_], x2_ = X[p_ + 1];\n"
                    f"const bool second_ = (d_ & 1) != 0;")
        else:
            pair = (f"const bool second_ = d_ >= {half};\n"
                    f"const std::int64_t k_ = second_ ? d_ - {half} : d_, p_ = i - d_ + k_;\n"
                    f"const {T} x1_ = X[p_], x2_ = X[p_ + {half}];")
        body = "\n".join([
            f"const std::int64_t d_ = i % {d};",
            f"const {T} *X = {e.inp(0)};",
            f"if (d_ >= {rd}) {{ {e.out()}[i] = X[i]; continue; }}",
            coords,
            row,
            pair,
            f"const {T} c_ = {e.inp(1)}[r_ * {half} + k_], n_ = {e.inp(2)}[r_ * {half} + k_];",
            f"{e.out()}[i] = second_ ? n_ * x1_ + c_ * x2_ : c_ * x1_ - n_ * x2_;",
        ])
        lines.append(e.kernel(e.size_out(0), body))
        return "\n".join(lines)


def emitters() -> dict:
    out = {("", n): Copy() for n in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")}
    out.update({("", "Transpose"): Transpose(), ("", "Concat"): Concat(), ("", "Slice"): Slice(),
                ("", "Expand"): Expand(), ("", "Gather"): Gather(), ("", "GatherElements"): GatherElements(), ("", "GatherND"): GatherND(),
                ("", "ScatterElements"): ScatterElements(), ("", "ScatterND"): ScatterND(), ("", "Range"): Range(),
                ("", "Shape"): ShapeValue(), ("", "Size"): ShapeValue(), ("", "RotaryEmbedding"): RotaryEmbedding()})
    return out
