"""Matrix products: Gemm and MatMul (batched, broadcasting, 1-D promotion); Det."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ir.dims import Dim, DimLike, broadcast_shapes, numel
from ..ir.dtypes import FLOAT64, DType
from .base import NodeView, Operator, OutInfo, register

FLOATS = ("float32", "float64")
#: rows of a Gemm with a bias or an activation computed per block (``Gemm._blocked``); measured
#: in docs/performance.md, "Convolutions and dense layers"
GEMM_ROW_BLOCK = 256
NUMERIC = FLOATS + ("int32", "int64", "uint32", "uint64")
#: weights of at most this many floats run in the runtime's register-blocked kernel; larger
#: ones in BLAS (``sofie_rt::dense::gemm_bias`` has the same limit, K * N <= 32768)
DENSE_MAX_WEIGHT = 32768
#: node attribute set by ``passes.layout.pack_dense_weights``: the node's last input is its
#: constant B also stored as ``panels(B)``, which the dense kernel reads from 32 rows on
B_PANELS = "sofie_b_panels"
#: a constant float weight [K, N] of more than DENSE_MAX_WEIGHT floats is also stored packed when K
#: is at most PANELS_MAX_K
#: (``DENSE_PACK_MAX_K`` in runtime.hxx: a tile's 6 rows of A then stay in L1) and N at least
#: PANELS_MIN_N (narrower, the padded panel does 16 columns of work for N: [256, 64] x [64, 5]
#: was 4% slower packed); measured in docs/performance.md, "Register-blocked dense layers"
PANELS_MAX_K = 512
PANELS_MIN_N = 16
#: the largest fixed inner dimension K handed to the dense kernel as a compile-time constant
#: (each distinct K costs the JIT about 0.1 s: ``benchmarks/dense_kernel.py``)
DENSE_FIXED_MAX_K = 512


def panels(b: np.ndarray) -> np.ndarray:
    """``b`` [K, N] in the layout ``sofie_rt::dense::gemm_bias_panels`` reads: panels of 16 columns, each
    [K, 16] contiguous, the last one zero-padded; flat."""
    k, n = b.shape
    p = -(-n // 16)
    padded = np.zeros((k, p * 16), dtype=b.dtype)
    padded[:, :n] = b
    return np.ascontiguousarray(padded.reshape(k, p, 16).transpose(1, 0, 2)).reshape(-1)


def panels_input(v: NodeView, e) -> str | None:
    """The C++ pointer of the node's packed B (its last input) when the layout pass added one."""
    return e.inp(len(v.node.inputs) - 1) if v.attr(B_PANELS, 0) and len(v.node.inputs) > 2 else None


def dense_call(e, dt: DType, rows: DimLike, n: DimLike, k: DimLike, a: str, b: str, bias: str | None, y: str,
               act: Callable[[str], str] | None = None, packed: str | None = None) -> str:
    """C++ of ``y[rows, n] = a[rows, k] @ b[k, n] (+ bias[n])``, then ``act`` on every element, by
    the runtime's register-blocked kernel (``sofie_rt::dense::gemm_bias``, float): the bias is
    loaded into the accumulators and the activation runs on each block of rows right after the
    kernel wrote it (in L1), instead of an sgemm writing the output and passes reading it back.
    ``packed``: B also in ``panels`` layout (``gemm_bias_panels``)."""
    cols = e.dim(n)
    args = (f"{e.dim(rows)}, {cols}, {e.dim(k)}, {a}, {e.dim(k)}, {b}, {cols}, "
            + (f"{packed}, " if packed else "") + f"{bias if bias else 'nullptr'}, {y}, {cols}")
    # a fixed K is given to the float kernel as a template argument too (0: not fixed), so its
    # tiles address A's rows by constant offsets (benchmarks/dense_kernel.py, "fixed K" columns)
    kc = k if isinstance(k, int) and 0 < k <= DENSE_FIXED_MAX_K and dt.name == "float32" else 0
    fn = f"sofie_rt::dense::gemm_bias_panels<{kc}>" if packed else f"sofie_rt::dense::gemm_bias<{dt.cpp}, {kc}>"
    if act is None:
        return f"{fn}({args});"
    r0, rb, i, x = e.tmp("r0"), e.tmp("rb"), e.tmp("i"), e.tmp("x")
    # the block is contiguous (ldc = n): one flat loop, which the compiler vectorises
    return (f"{fn}({args}, [=](std::int64_t {r0}, std::int64_t {rb}) {{\n"
            f"   for (std::int64_t {i} = {r0} * {cols}; {i} < ({r0} + {rb}) * {cols}; ++{i}) "
            f"{{ const {dt.cpp} {x} = {y}[{i}]; {y}[{i}] = {act(x)}; }}\n}});")


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

    def emit(self, v: NodeView, e, act: Callable[[str], str] | None = None) -> str:
        """``act(x)``, if given, is the C++ expression of an activation of ``x`` applied to every
        output element (FusedGemm)."""
        m, n, k = self._dims(v)
        dt = v.input(0).dtype
        a, b = v.input(0), v.input(1)
        alpha = e.lit(v.attr("alpha", 1.0), dt)
        beta_v = v.attr("beta", 1.0)
        k2 = b.shape[1] if v.attr("transB", 0) else b.shape[0]
        lines = [] if k == k2 else [inner_check(e, k, k2)]
        has_c = v.has_input(2) and beta_v != 0
        c_shape = tuple(v.input(2).shape) if has_c else ()
        # a weight above DENSE_MAX_WEIGHT floats stays on the BLAS path below (bias and activation
        # one pass per block) unless the layout pass also stored it in panels (K <= 512)
        packed = panels_input(v, e)
        small = packed is not None or not (isinstance(n, int) and isinstance(k, int) and n * k > DENSE_MAX_WEIGHT)
        if (dt.cpp == "float" and small and not v.attr("transA", 0) and not v.attr("transB", 0)
                and float(v.attr("alpha", 1.0)) == 1.0
                and (not has_c or (c_shape in ((n,), (1, n)) and n != 1 and float(beta_v) == 1.0))):
            lines.append(dense_call(e, dt, m, n, k, e.inp(0), e.inp(1), e.inp(2) if has_c else None, e.out(), act,
                                    packed))
            return "\n".join(lines)
        if dt.is_float and (act is not None or has_c) and c_shape in ((), (1,), (1, 1), (n,), (1, n)):
            lines.append(self._blocked(v, e, m, n, k, dt, alpha, has_c and c_shape[-1:] == (n,) and n != 1,
                                       e.lit(beta_v, dt) if has_c else None, act))
            return "\n".join(lines)
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
        if act is not None:
            i, x = e.tmp("i"), e.tmp("x")
            lines.append(f"for (std::int64_t {i} = 0; {i} < {e.size_out()}; ++{i}) "
                         f"{{ const {dt.cpp} {x} = {e.out()}[{i}]; {e.out()}[{i}] = {act(x)}; }}")
        return "\n".join(lines)


    @staticmethod
    def _blocked(v: NodeView, e, m, n, k, dt, alpha: str, row_bias: bool, beta: str | None,
                 act: Callable[[str], str] | None) -> str:
        """The product in blocks of rows, each followed by its bias (a row vector or a scalar C)
        and activation while the block is still in cache: one GEMM with beta = 0 and one pass
        over the output, instead of broadcasting C into it first, a GEMM that reads it back
        (beta = 1) and a pass for the activation."""
        ta, tb = bool(v.attr("transA", 0)), bool(v.attr("transB", 0))
        a, y = e.inp(0), e.out()
        r0, rb, r, j, x = e.tmp("r0"), e.tmp("rb"), e.tmp("r"), e.tmp("j"), e.tmp("x")
        rows, cols = e.dim(m), e.dim(n)
        lda, ldb = e.dim(v.input(0).shape[1]), e.dim(v.input(1).shape[1])
        a_off = r0 if ta else f"{r0} * {lda}"
        val = f"{y}[{r} * {cols} + {j}]"
        load = val if beta is None else f"{val} + {beta} * {e.inp(2)}[{j if row_bias else '0'}]"
        store = act(x) if act is not None else x
        return (f"for (std::int64_t {r0} = 0; {r0} < {rows}; {r0} += {GEMM_ROW_BLOCK}) {{\n"
                f"   const std::int64_t {rb} = std::min<std::int64_t>({GEMM_ROW_BLOCK}, {rows} - {r0});\n"
                f"   sofie_rt::gemm<{dt.cpp}>({'true' if ta else 'false'}, {'true' if tb else 'false'}, {rb}, "
                f"{cols}, {e.dim(k)}, {alpha}, {a} + {a_off}, {lda}, {e.inp(1)}, {ldb}, {e.lit(0, dt)}, "
                f"{y} + {r0} * {cols}, {cols});\n"
                f"   for (std::int64_t {r} = {r0}; {r} < {r0} + {rb}; ++{r})\n"
                f"      for (std::int64_t {j} = 0; {j} < {cols}; ++{j}) "
                f"{{ const {dt.cpp} {x} = {load}; {val} = {store}; }}\n}}")


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
            if dt.cpp == "float":
                return dense_call(e, dt, rows, n, k, e.inp(0), e.inp(1), None, e.out(), packed=panels_input(v, e))
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
        # per entry: register-blocked tiles for small float products (batches of attention heads),
        # else gemm; the tiles may read 7 elements past the entry's B while the buffer has them
        lines.append(f"   sofie_rt::gemm_batch_entry<{dt.cpp}>({e.dim(m)}, {e.dim(n)}, {e.dim(k)}, "
                     f"{e.inp(0)} + aoff, {e.inp(1)} + boff, {e.out()} + {i} * {e.dim(m * n)}, "
                     f"boff + {e.dim(k * n)} + 8 <= {e.dim(numel(b2))});")
        lines.append("}")
        return "\n".join(lines)


@register
class Det(Operator):
    """ONNX Det: determinants of square matrices [..., M, M], by LU decomposition with partial
    pivoting in double precision (a copy of each matrix in a workspace)."""

    op_type = "Det"
    dtypes = FLOATS

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        if x.rank < 2:
            raise v.fail(f"the input must have rank >= 2, got {x}")
        m, n = x.shape[-2:]
        if isinstance(m, int) and isinstance(n, int) and m != n:
            raise v.fail(f"the matrices must be square, got {x}")
        return [OutInfo(x.dtype, tuple(x.shape[:-2]))]

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        m = v.input(0).shape[-1]
        return [(FLOAT64, m * m)]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        m, m2 = x.shape[-2:]
        T = x.dtype.cpp
        a = e.ws(0)
        b, i, j, k, p, det, n = (e.tmp(t) for t in ("b", "i", "j", "k", "p", "det", "n"))
        lines = []
        if isinstance(m, Dim) or isinstance(m2, Dim):
            lines.append(f"if ({e.dim(m)} != {e.dim(m2)}) {e.fail('the matrices are not square')}")
        lines += [
            f"const std::int64_t {n} = {e.dim(m)};",
            f"for (std::int64_t {b} = 0; {b} < {e.dim(numel(x.shape[:-2]))}; ++{b}) {{",
            f"   for (std::int64_t {i} = 0; {i} < {n} * {n}; ++{i}) {a}[{i}] = double({e.inp(0)}[{b} * {n} * {n} + {i}]);",
            f"   double {det} = 1.0;",
            f"   for (std::int64_t {k} = 0; {k} < {n} && {det} != 0.0; ++{k}) {{",
            f"      std::int64_t {p} = {k};",
            f"      for (std::int64_t {i} = {k} + 1; {i} < {n}; ++{i})",
            f"         if (std::abs({a}[{i} * {n} + {k}]) > std::abs({a}[{p} * {n} + {k}])) {p} = {i};",
            f"      if ({a}[{p} * {n} + {k}] == 0.0) {{ {det} = 0.0; break; }}",
            f"      if ({p} != {k}) {{",
            f"         for (std::int64_t {j} = 0; {j} < {n}; ++{j}) std::swap({a}[{p} * {n} + {j}], {a}[{k} * {n} + {j}]);",
            f"         {det} = -{det};",
            "      }",
            f"      {det} *= {a}[{k} * {n} + {k}];",
            f"      for (std::int64_t {i} = {k} + 1; {i} < {n}; ++{i}) {{",
            f"         const double f = {a}[{i} * {n} + {k}] / {a}[{k} * {n} + {k}];",
            f"         for (std::int64_t {j} = {k} + 1; {j} < {n}; ++{j}) {a}[{i} * {n} + {j}] -= f * {a}[{k} * {n} + {j}];",
            "      }",
            "   }",
            f"   {e.out()}[{b}] = {T}({det});",
            "}",
        ]
        return "\n".join(lines)
