"""This core's FP32 FMA peak and its cache read bandwidth, measured by the kernels in
peak_kernels.hxx, compiled by the system compiler (``g++ -O3 -march=native``, the machine's
figure) and by cling in the calling process (with the EXTRA_CLING_ARGS and optimisation pragma
sofie_root uses for generated code, what JIT-compiled loops can reach).

Measured on the benchmark machine (Sapphire Rapids, 2026-11-22): the same FMA kernel reaches
133 GFLOP/s compiled by g++ but about 40 GFLOP/s under cling at -O3: cling's code keeps the
accumulators on the stack (a store and a load per FMA) instead of in registers.

The FMA peak is what the benchmark's "fraction of peak" divides by; the bandwidth of reading the
dense model's weight bytes from cache gives its batch-1 weight-streaming floor
(weight bytes / bandwidth): a batch-1 dense layer is a matrix-vector product, which must read
every weight once per call.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

KERNELS = Path(__file__).resolve().parent / "peak_kernels.hxx"

_FMA = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_long, ctypes.POINTER(ctypes.c_float))
_STREAM = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p, ctypes.c_long, ctypes.c_long,
                           ctypes.POINTER(ctypes.c_float))
_CHAINS = 12
_NAMES = ("fma512", "fma256", "stream512", "stream256")
_fns: dict[str, dict[str, object]] = {}
_builddir: tempfile.TemporaryDirectory | None = None


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return set()


def _usable() -> dict[str, bool]:
    flags = cpu_flags()
    avx512, avx2 = "avx512f" in flags, {"avx2", "fma"} <= flags
    if not (avx512 or avx2):
        raise RuntimeError("the peak kernels need AVX2+FMA or AVX-512 (x86-64); this CPU has neither")
    return {"fma512": avx512, "fma256": avx2, "stream512": avx512, "stream256": avx2}


def compilers() -> list[str]:
    """Where the kernels can be built here: "gxx" (the system compiler, if any) and "cling"."""
    return (["gxx"] if shutil.which("g++") else []) + ["cling"]


def _kernels(compiler: str = "gxx") -> dict[str, object]:
    """The kernels usable on this CPU built by ``compiler`` ("gxx" or "cling"), by name; built once
    per process."""
    global _builddir
    if compiler in _fns:
        return _fns[compiler]
    usable = _usable()
    protos = {"fma512": _FMA, "fma256": _FMA, "stream512": _STREAM, "stream256": _STREAM}
    fns: dict[str, object] = {}
    if compiler == "gxx":
        if _builddir is None:
            _builddir = tempfile.TemporaryDirectory(prefix="sofie_peak_")
        src = Path(_builddir.name) / "peak.cpp"
        lib = Path(_builddir.name) / "libpeak.so"
        wrappers = "".join(
            f'extern "C" double sofie_peak_{n}({"long it, float *s" if n.startswith("fma") else "const float *x, long n, long r, float *s"}) '
            f'{{ return sofie_peak::{n}({"it, s" if n.startswith("fma") else "x, n, r, s"}); }}\n'
            for n in _NAMES)
        src.write_text(f'#include "{KERNELS}"\n{wrappers}')
        r = subprocess.run(["g++", "-O3", "-march=native", "-shared", "-fPIC", "-o", str(lib), str(src)],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"g++ failed to build the peak kernels:\n{r.stderr[-2000:]}")
        so = ctypes.CDLL(str(lib))
        for name in _NAMES:
            if usable[name]:
                fns[name] = protos[name](ctypes.cast(getattr(so, f"sofie_peak_{name}"), ctypes.c_void_p).value)
        fns["_lib"] = so  # keeps the library loaded
    elif compiler == "cling":
        import sofie_root  # noqa: F401  (sets EXTRA_CLING_ARGS before ROOT starts)
        from sofie_root.jit import cling

        root = cling.root()
        cling._declare(root, "#pragma cling optimize(3)\n" + KERNELS.read_text(), "the peak kernels")
        for name in _NAMES:
            if usable[name]:
                fns[name] = protos[name](int(root.gInterpreter.ProcessLine(f"(long long)(&sofie_peak::{name});")))
    else:
        raise ValueError(f"unknown compiler {compiler!r}; known: gxx, cling")
    _fns[compiler] = fns
    return fns


def _lanes(name: str) -> int:
    return 16 if name.endswith("512") else 8


def fma_peak(compiler: str = "gxx", reps: int = 7, seconds: float = 0.05) -> dict[str, float]:
    """GFLOP/s of each vector width this CPU has (``fma512``/``fma256``) and ``peak``, their max,
    with the kernels built by ``compiler``. Best of ``reps`` runs of about ``seconds`` each (other
    processes can only slow a register-bound kernel down, so the best run is the machine's figure)."""
    out: dict[str, float] = {}
    sink = ctypes.c_float()
    for name, fn in _kernels(compiler).items():
        if not name.startswith("fma"):
            continue
        iters = 1000
        while fn(iters, ctypes.byref(sink)) < seconds / 4:
            iters *= 4
        flop = iters * _CHAINS * _lanes(name) * 2
        out[name] = max(flop / fn(iters, ctypes.byref(sink)) for _ in range(reps)) / 1e9
    out["peak"] = max(out.values())
    return out


def stream_sum(x: np.ndarray, reps: int = 1, width: str | None = None,
               compiler: str = "gxx") -> tuple[float, float]:
    """(seconds, sum over all passes) of reading float32 array ``x`` ``reps`` times."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    fns = _kernels(compiler)
    name = width or ("stream512" if "stream512" in fns else "stream256")
    total = ctypes.c_float()
    t = fns[name](x.ctypes.data, x.size, reps, ctypes.byref(total))
    return t, total.value


def read_bandwidth(nbytes: int, compiler: str = "gxx", reps: int = 7, seconds: float = 0.05) -> dict[str, float]:
    """GB/s of reading an ``nbytes`` array over and over (it stays in cache when it fits), per
    vector width, and ``best``, with the kernels built by ``compiler``. Best of ``reps`` runs of
    about ``seconds`` each (as for :func:`fma_peak`)."""
    x = np.random.default_rng(0).random(max(1, nbytes // 4), dtype=np.float32) * 1e-3
    out: dict[str, float] = {}
    for name in ("stream512", "stream256"):
        if name not in _kernels(compiler):
            continue
        stream_sum(x, 4, name, compiler)  # into the cache
        passes = 4
        while stream_sum(x, passes, name, compiler)[0] < seconds / 4:
            passes *= 4
        out[name] = max(x.nbytes * passes / stream_sum(x, passes, name, compiler)[0] for _ in range(reps)) / 1e9
    out["best"] = max(out.values())
    return out
