"""Einsum: general Einstein summation (float32/float64/int32/int64).

The equation is parsed into labels per input axis (letters, and one label per broadcast ellipsis
dimension): explicit (``->``) or implicit output, ``...`` with broadcasting, repeated indices
within a term (diagonals), reductions, transposes, any number of inputs.

Two-input contractions whose labels group into ``batch, M, K`` x ``batch, K, N`` -> ``batch, M, N``
(each group contiguous, in any of the orders a transposed GEMM can read) become calls of
``sofie_rt::gemm`` (one per batch entry); everything else is one loop nest over the output
labels with the summed labels innermost.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..ir.dims import DimLike, numel
from ..ir.dtypes import FLOAT32
from .base import NodeView, Operator, OutInfo, register

DTYPES = ("float32", "float64", "int32", "int64")


def _ell(j: int) -> str:
    return f".{j}"


def parse_equation(eq: str, ranks: Sequence[int]) -> tuple[list[list[str]], list[str]]:
    """Labels of every input axis and of the output axes. Ellipsis dimensions get labels
    ``.0 .. .{E-1}`` (numpy broadcasting: right-aligned). Raises ValueError when malformed."""
    eq = eq.replace(" ", "")
    if eq.count("->") > 1:
        raise ValueError(f"equation {eq!r} has more than one '->'")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"equation {eq!r} has {len(terms)} input term(s) but the node has {len(ranks)} input(s)")

    def letters(term: str, where: str) -> tuple[list[str], bool]:
        if term.count("...") > 1:
            raise ValueError(f"{where} {term!r} has more than one ellipsis")
        ell = "..." in term
        rest = term.replace("...", "\0")
        out: list[str] = []
        for ch in rest:
            if ch == "\0":
                out.append("...")
            elif ch.isascii() and ch.isalpha():
                out.append(ch)
            else:
                raise ValueError(f"{where} {term!r} has an invalid character {ch!r}")
        return out, ell

    parsed = [letters(t, "input term") for t in terms]
    ell_ranks = []
    for (labs, ell), rank in zip(parsed, ranks):
        n = len(labs) - (1 if ell else 0)
        if (ell and n > rank) or (not ell and n != rank):
            raise ValueError(f"term {''.join(labs).replace('...', '...')!r} does not match an input of rank {rank}")
        ell_ranks.append(rank - n if ell else 0)
    n_ell = max(ell_ranks, default=0)
    any_ell = any(ell for _, ell in parsed)
    ins: list[list[str]] = []
    for (labs, _), er in zip(parsed, ell_ranks):
        full: list[str] = []
        for lab in labs:
            if lab == "...":
                full.extend(_ell(n_ell - er + j) for j in range(er))
            else:
                full.append(lab)
        ins.append(full)
    if arrow:
        labs, ell = letters(rhs, "output term")
        out: list[str] = []
        for lab in labs:
            if lab == "...":
                out.extend(_ell(j) for j in range(n_ell))
            else:
                out.append(lab)
        seen = [x for x in out if not x.startswith(".")]
        if len(set(seen)) != len(seen):
            raise ValueError(f"output term {rhs!r} repeats a label")
        known = {x for t in ins for x in t}
        for x in seen:
            if x not in known:
                raise ValueError(f"output label {x!r} does not appear in any input")
    else:
        counts: dict[str, int] = {}
        for t in ins:
            for x in t:
                if not x.startswith("."):
                    counts[x] = counts.get(x, 0) + 1
        out = ([_ell(j) for j in range(n_ell)] if any_ell else []) + sorted(x for x, c in counts.items() if c == 1)
    return ins, out


def _is_one(d: DimLike) -> bool:
    return isinstance(d, int) and d == 1


@register
class Einsum(Operator):
    """ONNX Einsum: any equation (implicit output, ellipsis, diagonals, reductions, batch matmul)."""

    op_type = "Einsum"
    dtypes = DTYPES

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if len({i.dtype for i in v.inputs if i is not None}) > 1:
            return "inputs have different element types"
        if not v.inputs:
            return "Einsum needs at least one input"
        try:
            parse_equation(str(v.attr("equation", "")), [i.rank for i in v.inputs])
        except ValueError as exc:
            return str(exc)
        return None

    def _analyse(self, v: NodeView):
        """(input labels, output labels, size per label, runtime checks [(dimA, dimB)])."""
        try:
            ins, out = parse_equation(str(v.attr("equation", "")), [v.input(k).rank for k in range(len(v.inputs))])
        except ValueError as exc:
            raise v.fail(str(exc)) from None
        sizes: dict[str, DimLike] = {}
        checks: list[tuple[DimLike, DimLike]] = []
        for k, labs in enumerate(ins):
            for lab, d in zip(labs, v.input(k).shape):
                if lab not in sizes:
                    sizes[lab] = d
                    continue
                cur = sizes[lab]
                if cur == d:
                    continue
                if lab.startswith(".") and _is_one(cur):
                    sizes[lab] = d
                    continue
                if lab.startswith(".") and _is_one(d):
                    continue
                if isinstance(cur, int) and isinstance(d, int):
                    raise v.fail(f"label {lab.lstrip('.') if not lab.startswith('.') else '...'} has sizes "
                                 f"{cur} and {d} in {v.attr('equation')!r}")
                checks.append((cur, d))
        return ins, out, sizes, checks

    def infer(self, v: NodeView) -> list[OutInfo]:
        _, out, sizes, _ = self._analyse(v)
        return [OutInfo(v.input(0).dtype, tuple(sizes[x] for x in out))]

    # -- code ----------------------------------------------------------------------------------
    def emit(self, v: NodeView, e) -> str:
        ins, out, sizes, checks = self._analyse(v)
        lines = []
        for a, b in checks:
            lines.append(f"if ({e.dim(a)} != {e.dim(b)}) {e.fail('operand dimensions do not match the equation')}")
        gemm = self._gemm_plan(v, ins, out, sizes)
        if gemm is not None:
            lines.append(self._emit_gemm(v, e, gemm, sizes))
        else:
            lines.append(self._emit_loops(v, e, ins, out, sizes))
        return "\n".join(lines)

    def _gemm_plan(self, v: NodeView, ins, out, sizes):
        if len(ins) != 2:
            return None
        la, lb = ins
        if len(set(la)) != len(la) or len(set(lb)) != len(lb):
            return None
        # broadcast ellipsis axes (size 1 against a larger size) need the loop nest
        for k, labs in enumerate(ins):
            for lab, d in zip(labs, v.input(k).shape):
                if sizes[lab] != d:
                    return None
        sa, sb, so = set(la), set(lb), set(out)
        batch = [x for x in out if x in sa and x in sb]
        m = [x for x in out if x in sa and x not in sb]
        n = [x for x in out if x in sb and x not in sa]
        k_set = (sa & sb) - so
        if (sa - sb) - so or (sb - sa) - so:
            return None  # a label summed within one input only
        if not k_set and not (m and n):
            return None  # element-wise products: the loop nest is better than 1x1 GEMMs
        nb = len(batch)
        if la[:nb] != batch or lb[:nb] != batch:
            return None
        ra, rb = la[nb:], lb[nb:]
        swap = False
        if out == batch + m + n:
            pass
        elif out == batch + n + m:
            ra, rb, m, n = rb, ra, n, m
            swap = True
        else:
            return None

        def split(rest, first_group):
            """rest == first_group + K (trans False) or K + first_group (trans True); returns (K order, trans)."""
            g = len(first_group)
            if rest[:g] == first_group and set(rest[g:]) == k_set:
                return rest[g:], False
            if rest[len(rest) - g:] == first_group and set(rest[:len(rest) - g]) == k_set:
                return rest[:len(rest) - g], True
            return None

        pa = split(ra, m)          # A: [M, K] (no transpose) or [K, M] (transposed)
        pb = split(rb, n)          # B: [N, K] (transposed) or [K, N]
        if pa is None or pb is None:
            return None
        ka, trans_a = pa
        kb, b_k_last = pb
        if ka != kb and len(ka) > 0:
            return None
        # B as stored: rest == N + K -> B^T is used (transB true); rest == K + N -> plain
        trans_b = not b_k_last
        return {"swap": swap, "batch": batch, "m": m, "n": n, "k": ka, "transA": trans_a, "transB": trans_b}

    def _emit_gemm(self, v: NodeView, e, p, sizes) -> str:
        dt = v.input(0).dtype
        a, b = (1, 0) if p["swap"] else (0, 1)
        M = numel(sizes[x] for x in p["m"])
        N = numel(sizes[x] for x in p["n"])
        K = numel(sizes[x] for x in p["k"])
        nbatch = numel(sizes[x] for x in p["batch"])
        ta, tb = p["transA"], p["transB"]
        lda = M if ta else K
        ldb = K if tb else N
        one, zero = e.lit(1, dt), e.lit(0, dt)
        if dt == FLOAT32 and not ta and not tb:
            # the dense layers' register tiles (BLAS beyond a 128 KiB B, as there): "bij,jk->bik"
            # as sgemm ran at 0.86x onnxruntime at batch 256 (benchmarks/breadth.py)
            call = (f"sofie_rt::dense::gemm_bias<float>({e.dim(M)}, {e.dim(N)}, {e.dim(K)}, {e.inp(a)}{{oa}}, "
                    f"{e.dim(lda)}, {e.inp(b)}{{ob}}, {e.dim(ldb)}, nullptr, {e.out()}{{oc}}, {e.dim(N)});")
        else:
            call = (f"sofie_rt::gemm<{dt.cpp}>({'true' if ta else 'false'}, {'true' if tb else 'false'}, "
                    f"{e.dim(M)}, {e.dim(N)}, {e.dim(K)}, {one}, {e.inp(a)}{{oa}}, {e.dim(lda)}, "
                    f"{e.inp(b)}{{ob}}, {e.dim(ldb)}, {zero}, {e.out()}{{oc}}, {e.dim(N)});")
        if not p["batch"]:
            return call.format(oa="", ob="", oc="")
        i = e.tmp("b")
        return (f"for (std::int64_t {i} = 0; {i} < {e.dim(nbatch)}; ++{i})\n   "
                + call.format(oa=f" + {i} * {e.dim(M * K)}", ob=f" + {i} * {e.dim(K * N)}",
                              oc=f" + {i} * {e.dim(M * N)}"))

    def _emit_loops(self, v: NodeView, e, ins, out, sizes) -> str:
        dt = v.input(0).dtype
        red = []
        for labs in ins:
            for x in labs:
                if x not in out and x not in red:
                    red.append(x)
        var = {x: e.tmp("i") for x in list(out) + red}
        # index expression of every input
        idx_exprs = []
        for k, labs in enumerate(ins):
            shape = v.input(k).shape
            terms = []
            stride: DimLike = 1
            for lab, d in reversed(list(zip(labs, shape))):
                if not (_is_one(d) and not _is_one(sizes[lab])):
                    terms.append(var[lab] if _is_one(stride) else f"{var[lab]} * {e.dim(stride)}")
                stride = stride * d
            idx_exprs.append(" + ".join(reversed(terms)) if terms else "0")
        prod = " * ".join(f"{e.inp(k)}[{idx_exprs[k]}]" for k in range(len(ins)))
        lines = []
        o = e.tmp("o")
        acc = e.tmp("acc")
        lines.append(f"std::int64_t {o} = 0;")
        depth = 0
        for x in out:
            lines.append("   " * depth + f"for (std::int64_t {var[x]} = 0; {var[x]} < {e.dim(sizes[x])}; ++{var[x]}) {{")
            depth += 1
        lines.append("   " * depth + f"{dt.cpp} {acc} = {e.lit(0, dt)};")
        inner = depth
        for x in red:
            lines.append("   " * inner + f"for (std::int64_t {var[x]} = 0; {var[x]} < {e.dim(sizes[x])}; ++{var[x]}) {{")
            inner += 1
        lines.append("   " * inner + f"{acc} += {prod};")
        if red:
            lines.append("   " * depth + "}" * len(red))
        lines.append("   " * depth + f"{e.out()}[{o}++] = {acc};")
        if out:
            lines.append("}" * len(out))
        return "\n".join(lines)

