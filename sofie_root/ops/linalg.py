"""Matrix products: Gemm and MatMul (batched, broadcasting, 1-D promotion)."""

from __future__ import annotations

from ..ir.dims import Dim, DimLike, broadcast_shapes, numel
from .base import NodeView, Operator, OutInfo, register

FLOATS = ("float32", "float64")
NUMERIC = FLOATS + ("int32", "int64", "uint32", "uint64")


def inner_check(e, k: DimLike, k2: DimLike) -> str:
    """Run-time check that symbolic inner dimensions agree (else the GEMM would read out of bounds)."""
    return f"if ({e.dim(k)} != {e.dim(k2)}) " + e.fail("inner dimensions of A and B differ")


@register
class Gemm(Operator):
    """ONNX Gemm: Y = alpha * op(A) @ op(B) + beta * C, C broadcast to [M, N]."""

    op_type = "Gemm"
    dtypes = NUMERIC

    def _dims(self, v: NodeView) -> tuple[DimLike, DimLike, DimLike]:
        a, b = v.input(0), v.input(1)
        if a.rank != 2 or b.rank != 2:
            raise v.fail(f"A and B must be matrices, got shapes {a} and {b}")
        m, k = (a.shape[1], a.shape[0]) if v.attr("transA", 0) else a.shape
        k2, n = (b.shape[1], b.shape[0]) if v.attr("transB", 0) else b.shape
        if k != k2 and isinstance(k, int) and isinstance(k2, int):
            raise v.fail(f"inner dimensions differ: A is {a}, B is {b} (transA={v.attr('transA', 0)}, "
                         f"transB={v.attr('transB', 0)})")
        return m, n, k

    def infer(self, v: NodeView) -> list[OutInfo]:
        m, n, _ = self._dims(v)
        if v.has_input(2):
            broadcast_shapes((m, n), v.input(2).shape, where=f"{v.label}: C ")
        return [OutInfo(v.input(0).dtype, (m, n))]

    def emit(self, v: NodeView, e) -> str:
        m, n, k = self._dims(v)
        dt = v.input(0).dtype
        a, b = v.input(0), v.input(1)
        alpha = e.lit(v.attr("alpha", 1.0), dt)
        beta_v = v.attr("beta", 1.0)
        k2 = b.shape[1] if v.attr("transB", 0) else b.shape[0]
        lines = [] if k == k2 else [inner_check(e, k, k2)]
        if v.has_input(2) and beta_v != 0:
            beta = e.lit(beta_v, dt)
            lines.append(e.broadcast_raw(e.out(), (m, n), [e.inp(2)], [v.input(2).shape],
                                         lambda x: f"{beta} * {x[0]}"))
            c_beta = e.lit(1, dt)
        else:
            c_beta = e.lit(0, dt)
        lines.append(
            f"sofie_rt::gemm<{dt.cpp}>({'true' if v.attr('transA', 0) else 'false'}, "
            f"{'true' if v.attr('transB', 0) else 'false'}, {e.dim(m)}, {e.dim(n)}, {e.dim(k)}, {alpha}, "
            f"{e.inp(0)}, {e.dim(a.shape[1])}, {e.inp(1)}, {e.dim(b.shape[1])}, {c_beta}, {e.out()}, {e.dim(n)});"
        )
        return "\n".join(lines)


@register
class MatMul(Operator):
    """ONNX MatMul with numpy semantics: 1-D promotion and broadcasting batch dimensions."""

    op_type = "MatMul"
    dtypes = NUMERIC

    @staticmethod
    def _shapes(v: NodeView):
        a, b = v.input(0).shape, v.input(1).shape
        if len(a) == 0 or len(b) == 0:
            raise v.fail("MatMul inputs must have rank >= 1")
        a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
        b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
        m, k = a2[-2], a2[-1]
        k2, n = b2[-2], b2[-1]
        if isinstance(k, int) and isinstance(k2, int) and k != k2:
            raise v.fail(f"inner dimensions differ: {v.input(0)} @ {v.input(1)}")
        batch = broadcast_shapes(a2[:-2], b2[:-2], where=f"{v.label}: batch dimensions ")
        out = list(batch) + [m, n]
        if len(b) == 1:
            out.pop(-1)
        if len(a) == 1:
            out.pop(-2 if len(b) != 1 else -1)
        return a2, b2, batch, m, n, k, tuple(out)

    def infer(self, v: NodeView) -> list[OutInfo]:
        *_, out = self._shapes(v)
        return [OutInfo(v.input(0).dtype, out)]

    def emit(self, v: NodeView, e) -> str:
        a2, b2, batch, m, n, k, _ = self._shapes(v)
        dt = v.input(0).dtype
        one, zero = e.lit(1, dt), e.lit(0, dt)
        a_batch, b_batch = a2[:-2], b2[:-2]
        checks = [] if b2[-2] == k else [inner_check(e, k, b2[-2])]
        for x_batch in (a_batch, b_batch):
            # a symbolic batch dimension broadcast against a fixed one must equal it at run time
            for d, out_d in zip(reversed(x_batch), reversed(batch)):
                if isinstance(d, Dim) and d != out_d:
                    checks.append(f"if ({e.dim(d)} != {e.dim(out_d)}) "
                                  + e.fail("batch dimensions of A and B do not match"))
        return "\n".join([*checks, self._emit(v, e, a2, b2, batch, m, n, k, dt, one, zero, a_batch, b_batch)])

    def _emit(self, v, e, a2, b2, batch, m, n, k, dt, one, zero, a_batch, b_batch) -> str:
        if not b_batch or all(isinstance(d, int) and d == 1 for d in b_batch):
            # B shared by every batch entry: fold A's batch dimensions into M (one GEMM)
            rows = numel(a_batch) * m
            return (f"sofie_rt::gemm<{dt.cpp}>(false, false, {e.dim(rows)}, {e.dim(n)}, {e.dim(k)}, {one}, "
                    f"{e.inp(0)}, {e.dim(k)}, {e.inp(1)}, {e.dim(n)}, {zero}, {e.out()}, {e.dim(n)});")
        rank = len(batch)
        a_al = [1] * (rank - len(a_batch)) + list(a_batch)
        b_al = [1] * (rank - len(b_batch)) + list(b_batch)
        lines = []
        i = e.tmp("b")
        lines.append(f"for (std::int64_t {i} = 0; {i} < {e.dim(numel(batch))}; ++{i}) {{")
        lines.append(f"   std::int64_t rem = {i}, aoff = 0, boff = 0;")
        a_stride: DimLike = m * k
        b_stride: DimLike = k * n
        for ax in reversed(range(rank)):
            d = batch[ax]
            lines.append(f"   {{ const std::int64_t idx = rem % {e.dim(d)}; rem /= {e.dim(d)};")
            if not (isinstance(a_al[ax], int) and a_al[ax] == 1):
                lines.append(f"     aoff += idx * {e.dim(a_stride)};")
                a_stride = a_stride * a_al[ax]
            if not (isinstance(b_al[ax], int) and b_al[ax] == 1):
                lines.append(f"     boff += idx * {e.dim(b_stride)};")
                b_stride = b_stride * b_al[ax]
            lines.append("     (void)idx; }")
        lines.append(f"   sofie_rt::gemm<{dt.cpp}>(false, false, {e.dim(m)}, {e.dim(n)}, {e.dim(k)}, {one}, "
                     f"{e.inp(0)} + aoff, {e.dim(k)}, {e.inp(1)} + boff, {e.dim(n)}, {zero}, "
                     f"{e.out()} + {i} * {e.dim(m * n)}, {e.dim(n)});")
        lines.append("}")
        return "\n".join(lines)
