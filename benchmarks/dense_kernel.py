"""The runtime's register-blocked dense kernel against the BLAS GEMM it replaced, on the dense
layers' shapes of the corpus.

    python benchmarks/dense_kernel.py [--shapes 50x64x64,256x300x300] [--reps 3]

Both are called from a C++ loop compiled by cling in this process, as the generated code calls
them: ``sofie_rt::dense::gemm_bias`` (C = A B + bias, the bias in the accumulators) and
``sofie_rt::gemm`` (the BLAS chosen by ``SOFIE_ROOT_BLAS``, OpenBLAS by default) followed by a pass
adding the bias. For K up to ``linalg.DENSE_FIXED_MAX_K`` also ``gemm_bias<float, K>``, the form the
generated code calls for a weight's fixed K, with the seconds cling took to compile its loop (one
instantiation per K, as a model with that K pays). Times are the thread's CPU time per call (best of 7 timings of a loop of about
30 MFLOP, then the best of ``--reps`` alternated rounds: on a shared machine a register-bound
kernel can only be slowed down by others); each result is first checked against numpy. Shapes
are M x N x K (A is [M, K], B [K, N]). docs/performance.md, "Register-blocked dense layers",
quotes this table.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: (M, N, K) of the corpus's dense products at batch 1 and 256 (3-D MatMuls with rows folded)
SHAPES = [(50, 64, 64), (12800, 64, 64), (13056, 128, 64), (13056, 64, 128), (13056, 192, 64), (256, 300, 300),
          (256, 300, 7), (2, 300, 300), (5, 300, 300), (8192, 96, 32), (8192, 32, 32), (8192, 32, 8),
          (256, 32, 1024), (256, 32, 720), (256, 5, 64), (6400, 64, 2)]

_HARNESS = r"""
#include <time.h>
namespace sofie_dense_bench {
inline double cpu_ns() { timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
// ns per call of the BLAS GEMM + bias pass (which = 0) or the dense kernel (which = 1), best of 7
inline double time_ns(int which, std::int64_t M, std::int64_t N, std::int64_t K, int reps, const float *A,
                      const float *B, const float *bias, float *C)
{
   double best = 1e30;
   for (int t = 0; t < 7; ++t) {
      const double t0 = cpu_ns();
      for (int r = 0; r < reps; ++r) {
         if (which == 0) {
            sofie_rt::gemm<float>(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
            for (std::int64_t i = 0; i < M; ++i)
               for (std::int64_t j = 0; j < N; ++j)
                  C[i * N + j] += bias[j];
         } else {
            sofie_rt::dense::gemm_bias<float>(M, N, K, A, K, B, N, bias, C, N);
         }
      }
      const double dt = (cpu_ns() - t0) / reps;
      best = dt < best ? dt : best;
   }
   return best;
}
}
"""


_FIXED = r"""
namespace sofie_dense_bench_k%(k)d {
inline double time_ns(std::int64_t M, std::int64_t N, int reps, const float *A, const float *B, const float *bias,
                      float *C)
{
   double best = 1e30;
   for (int t = 0; t < 7; ++t) {
      const double t0 = sofie_dense_bench::cpu_ns();
      for (int r = 0; r < reps; ++r)
         sofie_rt::dense::gemm_bias<float, %(k)d>(M, N, %(k)d, A, %(k)d, B, N, bias, C, N);
      const double dt = (sofie_dense_bench::cpu_ns() - t0) / reps;
      best = dt < best ? dt : best;
   }
   return best;
}
}
"""


def _fixed_timer(k: int):
    """The fixed-K kernel's timer for ``k`` and the seconds cling took to compile it."""
    import time

    from sofie_root.jit import cling

    root = cling.root()
    t = time.perf_counter()
    cling._declare(root, cling.optimized(_FIXED % {"k": k}), "the fixed-K dense kernel benchmark")
    addr = int(root.gInterpreter.ProcessLine(f"(long long)(&sofie_dense_bench_k{k}::time_ns);"))
    jit = time.perf_counter() - t
    proto = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, *[ctypes.c_void_p] * 4)
    return proto(addr), jit


def _timer():
    from sofie_root.jit import cling

    root = cling.root()
    cling._declare(root, cling.optimized(_HARNESS), "the dense kernel benchmark")
    proto = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                             ctypes.c_int, *[ctypes.c_void_p] * 4)
    return proto(int(root.gInterpreter.ProcessLine("(long long)(&sofie_dense_bench::time_ns);")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="", help="comma-separated MxNxK (default: the corpus's)")
    p.add_argument("--reps", type=int, default=3, help="alternated rounds per shape (default 3)")
    a = p.parse_args(argv)
    shapes = [tuple(int(x) for x in s.split("x")) for s in a.shapes.split(",")] if a.shapes else SHAPES
    from sofie_root.ops.linalg import DENSE_FIXED_MAX_K

    time_ns = _timer()
    fixed = {k: _fixed_timer(k) for k in sorted({k for _, _, k in shapes if k <= DENSE_FIXED_MAX_K})}
    rng = np.random.default_rng(0)
    print("| M x N x K | BLAS + bias µs | BLAS + bias GFLOP/s | dense µs | dense GFLOP/s | speed-up "
          "| fixed K µs | fixed K / dense | fixed K JIT s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, n, k in shapes:
        x, w = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        ref = x.astype(np.float64) @ w + bias
        outs = [np.full((m, n), np.nan, np.float32) for _ in range(2)]
        ptr = [v.ctypes.data for v in (x, w, bias)]
        reps = max(1, int(3e7 / (2 * m * n * k)))
        for which in (0, 1):
            time_ns(which, m, n, k, 1, *ptr, outs[which].ctypes.data)
            err = float(np.abs(outs[which] - ref).max())
            if not err <= 1e-4 * np.sqrt(k) * (1 + np.abs(ref).max()):
                raise SystemExit(f"{m}x{n}x{k}: {'BLAS' if which == 0 else 'dense'} differs from numpy by {err}")
        if k in fixed:
            out = np.full((m, n), np.nan, np.float32)
            fixed[k][0](m, n, 1, *ptr, out.ctypes.data)
            if not np.abs(out - ref).max() <= 1e-4 * np.sqrt(k) * (1 + np.abs(ref).max()):
                raise SystemExit(f"{m}x{n}x{k}: the fixed-K kernel differs from numpy")
        best = [1e30] * 3
        for _ in range(a.reps):  # alternated rounds
            best[0] = min(best[0], time_ns(0, m, n, k, reps, *ptr, outs[0].ctypes.data))
            best[1] = min(best[1], time_ns(1, m, n, k, reps, *ptr, outs[1].ctypes.data))
            if k in fixed:
                best[2] = min(best[2], fixed[k][0](m, n, reps, *ptr, out.ctypes.data))
        if k in fixed:
            fix = f" {best[2] / 1e3:.2f} | {best[1] / best[2]:.3f} | {fixed[k][1]:.2f} |"
        else:
            fix = " – | – | – |"
        gf = [2 * m * n * k / t for t in best[:2]]
        print(f"| {m} x {n} x {k} | {best[0] / 1e3:.2f} | {gf[0]:.1f} | {best[1] / 1e3:.2f} | {gf[1]:.1f} | "
              f"{best[0] / best[1]:.2f} |" + fix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
