"""GPU emission of the matrix products: Gemm, MatMul (strided-batched GEMMs for attention) and
the fused FusedGemm / FusedMatMul: the GEMM, then one epilogue kernel adding the bias (Gemm's C,
broadcast, times beta; MatMul's bias along the last axis) and applying the activation.

Shapes and attributes come from the operators (``sofie_root/ops/linalg.py``, ``fused.py``);
GEMMs go through ``sofie_gpu::gemm_batched`` (cuBLAS, hipBLAS, or OpenBLAS in the emulation).
"""

from __future__ import annotations

from ..ir.dims import Dim, numel
from ..ops.base import NodeView, lookup
from ..ops.fused import _activation_expr, _FusedProduct

FLOATS = ("float32", "float64")


def _float_check(v: NodeView) -> str | None:
    dt = v.input(0).dtype.name
    if dt not in FLOATS:
        return f"matrix products in {dt} are not supported (float32/float64: cuBLAS)"
    return None


def activation_kernel(e, v: NodeView, y: str, count, bias: str | None = None, n=None, addend=None) -> str:
    """The epilogue kernel of a fused product: ``y[i] = act(y[i] + bias)``, the bias along the
    last axis (``bias``, of length ``n``) or ONNX-broadcast to ``count``'s shape (``addend`` =
    (pointer, its shape, the output shape, C++ factor): Gemm's beta * C)."""
    _, act, attrs = _FusedProduct.split(v.node)
    dt = e.out_info(0).dtype
    x = e.tmp("x")
    load, code, checks = f"{y}[i]", "", []
    if bias:
        load += f" + {bias}[i % {e.dim(n)}]"
    if addend is not None:
        ptr, shape, out_shape, factor = addend
        checks = e.broadcast_checks(list(out_shape), [list(shape)])
        (off,), code = e.broadcast_index("i", list(out_shape), [list(shape)])
        load += f" + {factor} * {ptr}[{off}]"
    expr = _activation_expr(act, attrs, x, dt, v.label) if act else x
    body = (code + "\n" if code else "") + f"const {dt.cpp} {x} = {load};\n{y}[i] = {expr};"
    return "\n".join([*checks, e.kernel(e.dim(count), body)])


class Gemm:
    def check(self, v: NodeView) -> str | None:
        return _float_check(v)

    def emit(self, v: NodeView, e) -> str:
        fused = v.node.op_type == "FusedGemm"
        view = lookup("sofie", "FusedGemm")._base_view(v) if fused else v  # type: ignore[union-attr]
        m, n, k = lookup("", "Gemm")._dims(view)  # type: ignore[union-attr]
        dt = v.input(0).dtype
        a, b = v.input(0), v.input(1)
        ta, tb = bool(view.attr("transA", 0)), bool(view.attr("transB", 0))
        k2 = b.shape[1] if tb else b.shape[0]
        lines = [] if k == k2 else [f"if ({e.dim(k)} != {e.dim(k2)}) " + e.fail("inner dimensions of A and B differ")]
        beta_v = view.attr("beta", 1.0)
        has_c = v.has_input(2) and beta_v != 0
        beta = e.lit(beta_v, dt)
        if has_c and not fused:  # C (times beta) written first, the GEMM adds to it: one kernel either way
            lines.append(e.broadcast_raw(e.out(), (m, n), [e.inp(2)], [v.input(2).shape], lambda x: f"{beta} * {x[0]}"))
        c_beta = e.lit(1 if has_c and not fused else 0, dt)
        lines.append(e.gemm(dt, ta, tb, e.dim(m), e.dim(n), e.dim(k), e.lit(view.attr("alpha", 1.0), dt), e.inp(0),
                            e.dim(a.shape[1]), e.inp(1), e.dim(b.shape[1]), c_beta, e.out(), e.dim(n)))
        if fused:  # the epilogue: + beta * C and the activation in one kernel after the GEMM
            addend = (e.inp(2), v.input(2).shape, (m, n), beta) if has_c else None
            lines.append(activation_kernel(e, v, e.out(), m * n, addend=addend))
        return "\n".join(lines)


class MatMul:
    def check(self, v: NodeView) -> str | None:
        return _float_check(v)

    def emit(self, v: NodeView, e) -> str:
        fused = v.node.op_type == "FusedMatMul"
        view = lookup("sofie", "FusedMatMul")._base_view(v) if fused else v  # type: ignore[union-attr]
        mm = lookup("", "MatMul")
        a2, b2, batch, m, n, k, out_shape = mm._shapes(view)  # type: ignore[union-attr]
        dt = v.input(0).dtype
        one, zero = e.lit(1, dt), e.lit(0, dt)
        a_batch, b_batch = a2[:-2], b2[:-2]
        lines = [] if b2[-2] == k else [f"if ({e.dim(k)} != {e.dim(b2[-2])}) "
                                         + e.fail("inner dimensions of A and B differ")]
        for x_batch in (a_batch, b_batch):
            for d, out_d in zip(reversed(x_batch), reversed(batch)):
                if isinstance(d, Dim) and d != out_d:
                    lines.append(f"if ({e.dim(d)} != {e.dim(out_d)}) " + e.fail("batch dimensions of A and B differ"))
        rank = len(batch)
        a_al = [1] * (rank - len(a_batch)) + list(a_batch)
        b_al = [1] * (rank - len(b_batch)) + list(b_batch)

        def kind(al):  # "one": no batch (stride 0), "full": every batch dimension, else mixed
            if all(isinstance(d, int) and d == 1 for d in al):
                return "one"
            if all(d == bd or (isinstance(d, int) and isinstance(bd, int) and d == bd) for d, bd in zip(al, batch)):
                return "full"
            return "mixed"

        ka, kb = kind(a_al), kind(b_al)
        M, N, K = e.dim(m), e.dim(n), e.dim(k)
        if kb == "one":
            lines.append(e.gemm(dt, False, False, e.dim(numel(a_batch) * m), N, K, one, e.inp(0), K, e.inp(1), N,
                                zero, e.out(), N))
        elif ka != "mixed" and kb != "mixed":
            lines.append(e.gemm(dt, False, False, M, N, K, one, e.inp(0), K, e.inp(1), N, zero, e.out(), N,
                                batch=e.dim(numel(batch)), sa="0" if ka == "one" else e.dim(m * k),
                                sb=e.dim(k * n), sc=e.dim(m * n)))
        else:  # mixed broadcasting of batch dimensions: one GEMM per batch entry
            i = e.tmp("b")
            lines.append(f"for (std::int64_t {i} = 0; {i} < {e.dim(numel(batch))}; ++{i}) {{")
            lines.append(f"   std::int64_t rem = {i}, aoff = 0, boff = 0;")
            a_st, b_st = m * k, k * n
            for ax in reversed(range(rank)):
                d = batch[ax]
                lines.append(f"   {{ const std::int64_t idx = rem % {e.dim(d)}; rem /= {e.dim(d)};")
                if not (isinstance(a_al[ax], int) and a_al[ax] == 1):
                    lines.append(f"     aoff += idx * {e.dim(a_st)};")
                    a_st = a_st * a_al[ax]
                if not (isinstance(b_al[ax], int) and b_al[ax] == 1):
                    lines.append(f"     boff += idx * {e.dim(b_st)};")
                    b_st = b_st * b_al[ax]
                lines.append("     (void)idx; }")
            lines.append("   " + e.gemm(dt, False, False, M, N, K, one, f"{e.inp(0)} + aoff", K, f"{e.inp(1)} + boff",
                                        N, zero, f"{e.out()} + {i} * {e.dim(m * n)}", N))
            lines.append("}")
        if fused:
            has_bias = len(v.inputs) > 2 and v.inputs[2] is not None
            _, act, _ = _FusedProduct.split(v.node)
            if has_bias or act:
                lines.append(activation_kernel(e, v, e.out(), numel(out_shape), e.inp(2) if has_bias else None,
                                               out_shape[-1] if out_shape else 1))
        return "\n".join(lines)


def emitters() -> dict:
    return {("", "Gemm"): Gemm(), ("sofie", "FusedGemm"): Gemm(), ("", "MatMul"): MatMul(),
            ("sofie", "FusedMatMul"): MatMul()}
