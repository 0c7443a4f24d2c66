"""GPU emission of Einsum: one work item per output element, the summed labels looped inside it.

Labels, sizes and the run-time checks come from ``sofie_root/ops/einsum.py`` (``_analyse``); the
CPU's GEMM plan is not used yet, so large contractions are slower than a cuBLAS call would be.
"""

from __future__ import annotations

from ..ops.base import NodeView, lookup
from ..ops.einsum import _is_one


class Einsum:
    def check(self, v: NodeView) -> str | None:
        return None

    def emit(self, v: NodeView, e) -> str:
        ins, out, sizes, checks = lookup("", "Einsum")._analyse(v)  # type: ignore[union-attr]
        dt = v.input(0).dtype
        lines = [f"if ({e.dim(a)} != {e.dim(b)}) {e.fail('operand dimensions do not match the equation')}"
                 for a, b in checks]
        red = []
        for labs in ins:
            for x in labs:
                if x not in out and x not in red:
                    red.append(x)
        coords, code = e.unravel("i", [sizes[x] for x in out]) if out else ([], "")
        var = dict(zip(out, coords))
        var.update({x: e.tmp("r") for x in red})
        idx = []
        for k, labs in enumerate(ins):
            terms, stride = [], 1
            for lab, d in reversed(list(zip(labs, v.input(k).shape))):
                if not (_is_one(d) and not _is_one(sizes[lab])):
                    terms.append(var[lab] if _is_one(stride) else f"{var[lab]} * {e.dim(stride)}")
                stride = stride * d
            idx.append(" + ".join(reversed(terms)) if terms else "0")
        prod = " * ".join(f"{e.inp(k)}[{idx[k]}]" for k in range(len(ins)))
        body = [code, f"{dt.cpp} acc_ = {e.lit(0, dt)};"]
        for x in red:
            body.append(f"for (std::int64_t {var[x]} = 0; {var[x]} < {e.dim(sizes[x])}; ++{var[x]})")
        body.append(f"   acc_ += {prod};")
        body.append(f"{e.out()}[i] = acc_;")
        size = 1
        for x in out:
            size = size * sizes[x]
        lines.append(e.kernel(e.dim(size), "\n".join(b for b in body if b)))
        return "\n".join(lines)


def emitters() -> dict:
    return {("", "Einsum"): Einsum()}
