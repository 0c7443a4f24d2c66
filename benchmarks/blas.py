"""Which BLAS for the generated GEMMs: OpenBLAS (scipy-openblas32, the default) against Intel MKL
(also its JIT small-GEMM kernels for fixed shapes) and BLIS, on the GEMM shapes of the corpus.

    python benchmarks/blas.py [--quick] [--mkl PATH/libmkl_rt.so] [--blis PATH/libblis.so]

Every library runs single-threaded (as the generated code uses BLAS: one Session per thread).
Each GEMM shape is timed from a C++ loop (cling) calling each library's ``cblas_sgemm`` (and
``cblas_sgemv`` for one-row products, as ``sofie_rt::gemm`` does) through a function pointer;
the libraries are measured interleaved, in the thread's CPU time (on a shared machine, wall-clock
time mostly measures the other jobs), medians, and the ratios are medians of per-repetition
ratios OpenBLAS / other (above 1: the other is faster).

MKL is found from ``--mkl``, ``$SOFIE_BLAS_MKL`` or the ``mkl`` wheel in this Python's ``lib/``
(``pip install mkl``); BLIS from ``--blis``, ``$SOFIE_BLAS_BLIS`` or the system's
``libblis.so.4`` (Debian: ``apt-get install libblis4-serial``). A library that is not found is
left out of the table. The shapes (M, N, K, transB) are the row-major products the generated
code of the corpus models makes at batch 1 and 256 (dense layers as [batch, in] x [out, in]^T,
convolutions per image as [out channels, pixels] = [out, in * kernel] x im2col).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sofie_root  # noqa: F401  (before ROOT: it sets EXTRA_CLING_ARGS)
from sofie_root.jit import cling

# (label, M, N, K, transB): where each shape comes from in benchmarks/corpus.py (dense layers keep
# their weight as [in, out] after the frontend: transB false)
SHAPES = [
    ("dense 300x300 b1", 1, 300, 300, False), ("dense 300x300 b256", 256, 300, 300, False),
    ("dense 7->300 b256", 256, 300, 7, False),
    ("regression 64x64 b256", 256, 64, 64, False), ("autoencoder 64->32 b256", 256, 32, 64, False),
    ("cnn dense 1024->32 b256", 256, 32, 1024, False), ("calo3d dense 720->32 b256", 256, 32, 720, False),
    ("pixel_cnn 1x1 32->32 [32,64]", 32, 64, 32, False), ("pixel_cnn stem 3x3 1->16 [16,256]x[9]", 16, 256, 9, False),
    ("particlenet edge 1x1 16->32 [32,1600]", 32, 1600, 16, False),
    ("transformer qkv [51b,64]x[64,192] b1", 51, 192, 64, False),
    ("transformer qkv b256", 51 * 256, 192, 64, False),
    ("transformer attention [51,16]x[16,51]", 51, 51, 16, True),
    ("part pair MLP 1x1 conv [16,1024]x3", 16, 1024, 3, False),
    ("cnn conv2 3x3 8->16 [16,256]x[72]", 16, 256, 72, False),
    ("pixel_cnn 1x1 16->32 [32,256]", 32, 256, 16, False),
    ("calo3d conv2 3x3x3 8->16 [16,180]x[216]", 16, 180, 216, False),
    ("particlenet edge 1x1 64->64 [64,1600]", 64, 1600, 64, False),
    ("jet LSTM gates [b,128]x[32] b256", 256, 128, 32, True),
    ("jet LSTM gates b1", 1, 128, 32, True),
    ("interaction edge MLP [132b,12]x[12,32] b256", 132 * 256, 32, 12, False),
]

_LOOP = r"""
namespace sofie_blas {
// the calling thread's CPU time: on a machine shared with other jobs, wall-clock time mostly
// measures how often the scheduler ran someone else
inline double cpu_seconds()
{
   timespec t;
   clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
   return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}
using sgemm_fn = void (*)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                          int);
using sgemv_fn = void (*)(int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
using jit_fn = void (*)(void *, float *, float *, float *);
inline double run(long long gemm, long long gemv, long long jit, long long jitter, int M, int N, int K, bool tb,
                  float *A, float *B, float *C, long n)
{
   const double t0 = cpu_seconds();
   for (long i = 0; i < n; ++i) {
      if (jit) {
         reinterpret_cast<jit_fn>(jit)(reinterpret_cast<void *>(jitter), A, B, C);
      } else if (M == 1 && gemv) {  // what sofie_rt::gemm does for one row
         if (tb)
            reinterpret_cast<sgemv_fn>(gemv)(101, 111, N, K, 1.f, B, K, A, 1, 0.f, C, 1);
         else
            reinterpret_cast<sgemv_fn>(gemv)(101, 112, K, N, 1.f, B, N, A, 1, 0.f, C, 1);
      } else {
         reinterpret_cast<sgemm_fn>(gemm)(101, 111, tb ? 112 : 111, M, N, K, 1.f, A, K, B, tb ? K : N, 0.f, C, N);
      }
   }
   return cpu_seconds() - t0;
}
}
"""


class Library:
    def __init__(self, name: str, path: str, prefix: str = "cblas_"):
        self.name, self.path = name, path
        # MKL and BLIS both export cblas_sgemm and the Fortran sgemm_ it calls: loaded globally,
        # BLIS's cblas_sgemm would bind to MKL's sgemm_ (the first one loaded) and time MKL
        # twice. Local and deep binding keep each library's calls inside it.
        mode = ctypes.RTLD_GLOBAL if prefix != "cblas_" else ctypes.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0)
        self.lib = ctypes.CDLL(path, mode=mode)
        self.gemm = ctypes.cast(getattr(self.lib, prefix + "sgemm"), ctypes.c_void_p).value
        self.gemv = ctypes.cast(getattr(self.lib, prefix + "sgemv"), ctypes.c_void_p).value


def openblas() -> Library:
    lib = Library("OpenBLAS", cling.blas_library(), "scipy_cblas_")
    lib.lib.scipy_openblas_set_num_threads(1)
    return lib


def mkl(path: str | None) -> Library | None:
    if path is None:
        found = sorted(Path(sys.prefix, "lib").glob("libmkl_rt.so*"))
        path = str(found[0]) if found else None
    if path is None:
        return None
    os.environ.setdefault("MKL_THREADING_LAYER", "SEQUENTIAL")
    os.environ.setdefault("MKL_INTERFACE_LAYER", "LP64")
    lib = Library("MKL", path)
    lib.lib.MKL_Set_Num_Threads(1)
    return lib


def blis(path: str | None) -> Library | None:
    path = path or ("/usr/lib/x86_64-linux-gnu/libblis.so.4" if Path("/usr/lib/x86_64-linux-gnu/libblis.so.4").exists()
                    else None)
    if path is None:
        return None
    lib = Library("BLIS", path)
    lib.lib.bli_thread_set_num_threads(ctypes.c_long(1))
    return lib


def mkl_jit(lib: Library, m: int, n: int, k: int, tb: bool):
    """(kernel address, jitter) of MKL's JIT sgemm for this shape, or None."""
    jitter = ctypes.c_void_p()
    create = lib.lib.mkl_cblas_jit_create_sgemm
    create.restype = ctypes.c_int
    create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_int, ctypes.c_int, ctypes.c_float,
                       ctypes.c_int]
    status = create(ctypes.byref(jitter), 101, 111, 112 if tb else 111, m, n, k, 1.0, k, k if tb else n, 0.0, n)
    if status not in (0, 1):  # MKL_JIT_SUCCESS, MKL_NO_JIT (falls back to sgemm inside)
        return None
    if status == 1:
        # measured on an AMD EPYC (AVX2, no AVX-512): MKL 2026.2 answers MKL_NO_JIT for every
        # shape, and its "JIT" kernel is the ordinary sgemm
        print(f"  MKL JIT: no JIT code for {m}x{n}x{k} on this CPU (MKL_NO_JIT), the kernel is sgemm",
              file=sys.stderr)
    get = lib.lib.mkl_jit_get_sgemm_ptr
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.c_void_p]
    return get(jitter), jitter.value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 short repetitions instead of 9")
    p.add_argument("--mkl", default=os.environ.get("SOFIE_BLAS_MKL"))
    p.add_argument("--blis", default=os.environ.get("SOFIE_BLAS_BLIS"))
    a = p.parse_args(argv)
    reps, budget = (3, 0.02) if a.quick else (9, 0.05)
    libs = [x for x in (openblas(), mkl(a.mkl), blis(a.blis)) if x is not None]
    ROOT = cling.root()
    cling._declare(ROOT, "#include <time.h>\n" + _LOOP, "the BLAS benchmark loop")
    run = ctypes.CFUNCTYPE(ctypes.c_double, *[ctypes.c_longlong] * 4, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                           ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long)(
        int(ROOT.gInterpreter.ProcessLine("(long long)(&sofie_blas::run);")))
    rng = np.random.default_rng(0)
    rows = []
    for label, m, n, k, tb in SHAPES:
        A = rng.standard_normal((m, k)).astype(np.float32)
        B = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        ref = A.astype(np.float64) @ (B.T if tb else B).astype(np.float64)
        variants = {lib.name: (lib.gemm, lib.gemv, 0, 0) for lib in libs}
        mk = next((x for x in libs if x.name == "MKL"), None)
        if mk is not None:
            jit = mkl_jit(mk, m, n, k, tb)
            if jit is not None:
                variants["MKL JIT"] = (0, 0, *jit)
        reps_fn = {}
        for name, (g, v, jit, jitter) in variants.items():
            C = np.zeros((m, n), np.float32)
            args = (g, v, jit, jitter, m, n, k, tb, A.ctypes.data, B.ctypes.data, C.ctypes.data)
            run(*args, 1)
            if not np.allclose(C, ref, rtol=1e-3, atol=1e-3):
                raise SystemExit(f"{name} gives a wrong product for {label}")
            calls = 1
            while run(*args, calls) < budget / 4:
                calls *= 4
            calls = max(1, int(calls * budget / max(run(*args, calls), 1e-9)))
            reps_fn[name] = (lambda args=args, calls=calls, keep=C: run(*args, calls) / calls)
        times = {name: [] for name in reps_fn}
        for _ in range(reps):
            for name, fn in reps_fn.items():
                times[name].append(fn())
        row = {"shape": label, "gflops": {}, "vs_openblas": {}}
        for name, t in times.items():
            row["gflops"][name] = 2 * m * n * k / statistics.median(t) / 1e9
            row["vs_openblas"][name] = statistics.median(o / x for o, x in zip(times["OpenBLAS"], t))
        rows.append(row)
        print(f"  {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in row["vs_openblas"].items()), file=sys.stderr)
    names = list(rows[0]["gflops"]) if rows else []
    print("| shape (M, N, K) | " + " | ".join(f"{n} GFLOP/s" for n in names) + " | "
          + " | ".join(f"OpenBLAS / {n}" for n in names[1:]) + " |")
    print("|---" * (2 * len(names)) + "|")
    for r in rows:
        print(f"| {r['shape']} | " + " | ".join(f"{r['gflops'][n]:.1f}" for n in names) + " | "
              + " | ".join(f"{r['vs_openblas'].get(n, float('nan')):.2f}" for n in names[1:]) + " |")
    for n in names[1:]:
        vals = [r["vs_openblas"][n] for r in rows if n in r["vs_openblas"]]
        print(f"\nOpenBLAS / {n}: geometric mean {np.exp(np.mean(np.log(vals))):.2f}, "
              f"min {min(vals):.2f}, max {max(vals):.2f}", end="")
    print(f"\n(load average {os.getloadavg()[0]:.2f}; {reps} interleaved repetitions, medians; "
          + ", ".join(f"{lib.name}: {lib.path}" for lib in libs) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
