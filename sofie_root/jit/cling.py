"""JIT compilation with cling (ROOT's C++ interpreter) and the C entry points of a compiled model.

ROOT is imported lazily, in batch mode, the first time a model is compiled. Declared code is
cached per process by namespace (content hash), so compiling the same model twice declares it
once. Each model exposes three C functions (create, destroy, run) whose addresses are called
through ctypes: errors come back as return codes with a message, never as C++ exceptions
crossing into Python.

Models built by the native backend (:mod:`sofie_root.jit.native`) have the same entry points; for
cling code that uses their ``Session`` (RDataFrame functors) a forwarding proxy is declared here
on demand (:func:`register_proxy`, :func:`is_declared`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..codegen.headers import RUNTIME_PATH as RUNTIME_PATH  # the CPU runtime header, for callers
from ..codegen.headers import runtime_text
from ..errors import CompilationError

log = logging.getLogger("sofie_root")
_lock = threading.RLock()
#: what cling is told when sofie_root starts ROOT (users may set EXTRA_CLING_ARGS themselves).
#: ``-mllvm -optimize-regalloc``: cling builds its JIT's target machine at code-generation level
#: "none" whatever -O says (the IR is optimised and vectorised, but the fast register allocator
#: then keeps every loop-carried value on the stack: reductions, running maxima and accumulators
#: pay a store and a reload per iteration). This LLVM option selects the optimising (greedy)
#: allocator instead. Measured under cling: a sum over 6400 floats 4.3 -> 1.5 us, a scalar running
#: maximum 58 -> 1.9 us; InstanceNormalization 0.23 -> 0.51x ORT, LayerNormalization [N,300] at
#: batch 256 0.40 -> 1.20x, the Attention operator 0.04 -> 0.10x (benchmarks/ops.py, load 5).
DEFAULT_CLING_ARGS = "-O3 -march=native -mllvm -optimize-regalloc"
_declared: dict[str, ModelEntry] = {}
#: native models whose cling proxy is declared the first time someone asks for the namespace
_proxies: dict[str, tuple[ModelEntry, Callable[[], str]]] = {}
_root = None


_CREATE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)
_DESTROY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_RUN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                        ctypes.c_char_p, ctypes.c_size_t)


@dataclass
class ModelEntry:
    namespace: str
    create: object
    destroy: object
    run: object
    profile: object = None  # only in models generated with profiling code
    library: str | None = None  # the shared library of a native model (None: declared to cling)


def root():
    """Import ROOT once (batch mode, quiet) and declare the runtime header."""
    global _root
    with _lock:
        if _root is None:
            os.environ.setdefault("ROOT_BATCH", "1")
            if "ROOT" not in sys.modules:
                # cling reads its compiler flags once, when ROOT starts: by default it compiles at a
                # low optimisation level for generic x86-64, which makes loop code 10-100x slower
                os.environ.setdefault("EXTRA_CLING_ARGS", DEFAULT_CLING_ARGS)
            else:
                log.info("ROOT was imported before sofie_root: generated code is compiled with "
                         "EXTRA_CLING_ARGS=%r; import sofie_root first (or set EXTRA_CLING_ARGS=%r) "
                         "for full speed", os.environ.get("EXTRA_CLING_ARGS", ""), DEFAULT_CLING_ARGS)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import ROOT
            ROOT.gROOT.SetBatch(True)
            prelude = _load_blas(ROOT)
            _declare(ROOT, optimized(prelude + runtime_text()), "the sofie_root runtime header")
            _root = ROOT
        return _root


def target_features() -> str:
    """Vector instruction sets of this CPU that generated code may use ("" if unknown).

    cling compiles for generic x86-64 (SSE2) by default; enabling AVX2/FMA for our functions
    halves the time of vectorised loops. Read from /proc/cpuinfo, so it never asks for more
    than the machine has. ``SOFIE_ROOT_TARGET`` overrides it ("" disables).
    """
    if "SOFIE_ROOT_TARGET" in os.environ:
        return os.environ["SOFIE_ROOT_TARGET"]
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ""
    return "avx2,fma" if "avx2" in flags and "fma" in flags else ""


def optimized(code: str) -> str:
    """Wrap code so cling compiles it at -O3 for this CPU's vector units (see target_features)."""
    features = target_features()
    head = "#pragma cling optimize(3)\n"
    if not features:
        return head + code
    return (head + f'#pragma clang attribute push (__attribute__((target("{features}"))), apply_to = function)\n'
            + code + "\n#pragma clang attribute pop\n")


def blas_library() -> str | None:
    """Path of the BLAS library from the scipy-openblas32 wheel, or None if it is not installed."""
    try:
        import scipy_openblas32
    except ImportError:
        return None
    path = Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"
    return str(path) if path.exists() else None


@dataclass(frozen=True)
class Blas:
    """The BLAS library generated GEMMs call: its path and the prefix of its CBLAS symbols."""

    name: str
    path: str
    prefix: str

    def prelude(self) -> str:
        """The defines the runtime header reads (SOFIE_RT_CBLAS, and the symbol prefix)."""
        return f"#define SOFIE_RT_CBLAS 1\n#define SOFIE_RT_CBLAS_PREFIX {self.prefix}\n"


#: where SOFIE_ROOT_BLAS=mkl / blis look (the mkl wheel installs into this Python's lib/)
_BLAS_SEARCH = {"mkl": [Path(sys.prefix) / "lib"], "blis": [Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib64"),
                                                            Path("/usr/local/lib"), Path(sys.prefix) / "lib"]}
_BLAS_FILES = {"mkl": "libmkl_rt.so*", "blis": "libblis.so*"}


def blas() -> Blas | None:
    """The BLAS chosen by ``$SOFIE_ROOT_BLAS``: ``openblas`` (the default: the scipy-openblas32
    wheel), ``mkl`` (the ``mkl`` wheel's libmkl_rt, sequential), ``blis`` (a system libblis),
    ``none`` (the portable loops; as ``$SOFIE_ROOT_NO_BLAS``), or the path of a shared library
    exporting ``cblas_sgemm``/``dgemm``/``sgemv``/``dgemv``. benchmarks/blas.py measured them
    on the corpus's shapes (docs/performance.md, "BLAS")."""
    from ..errors import SofieError

    choice = os.environ.get("SOFIE_ROOT_BLAS", "").strip() or "openblas"
    if os.environ.get("SOFIE_ROOT_NO_BLAS") or choice == "none":
        return None
    if choice == "openblas":
        path = blas_library()
        return Blas("openblas", path, "scipy_cblas_") if path else None
    if choice in _BLAS_SEARCH:
        found = [f for d in _BLAS_SEARCH[choice] for f in sorted(d.glob(_BLAS_FILES[choice])) if f.is_file()]
        if not found:
            raise SofieError(f"SOFIE_ROOT_BLAS={choice}: no {_BLAS_FILES[choice]} in "
                             f"{', '.join(map(str, _BLAS_SEARCH[choice]))}")
        if choice == "mkl":  # read when libmkl_rt loads (cling or a native model's library)
            os.environ.setdefault("MKL_THREADING_LAYER", "SEQUENTIAL")
        return Blas(choice, str(found[0]), "cblas_")
    if not Path(choice).is_file():
        raise SofieError(f"SOFIE_ROOT_BLAS={choice!r} is neither openblas, mkl, blis, none nor a library file")
    return Blas(Path(choice).name, choice, "cblas_")


def single_threaded(path: str) -> None:
    """One thread for the BLAS library at ``path`` (one Session per thread is the parallelism
    model; BLAS threads inside would oversubscribe the cores)."""
    handle = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    for fn, arg in (("scipy_openblas_set_num_threads", ctypes.c_int(1)), ("MKL_Set_Num_Threads", ctypes.c_int(1)),
                    ("bli_thread_set_num_threads", ctypes.c_long(1)), ("openblas_set_num_threads", ctypes.c_int(1))):
        f = getattr(handle, fn, None)
        if f is not None:
            f(arg)
            return


def _load_blas(ROOT) -> str:
    """Load the chosen BLAS into the process for GEMMs, single-threaded; the runtime header's
    prelude ("" without BLAS)."""
    lib = blas()
    if lib is None:
        return ""
    if ROOT.gSystem.Load(lib.path) < 0:
        return ""
    try:
        single_threaded(lib.path)
    except OSError:
        pass
    return lib.prelude()


def _declare(ROOT, code: str, what: str) -> None:
    """Declare code to cling, capturing its diagnostics if it fails."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        fd = 2
        saved = os.dup(fd)
        try:
            os.dup2(tmp.fileno(), fd)
            ok = ROOT.gInterpreter.Declare(code)
        finally:
            os.dup2(saved, fd)
            os.close(saved)
        tmp.seek(0)
        diag = tmp.read().decode(errors="replace")
    if not ok:
        raise CompilationError(
            f"cling failed to compile {what}; this is a bug in sofie_root, please report it.\n"
            + diag[-4000:]
        )


def declare_model(namespace: str, source: str) -> ModelEntry:
    """Declare a model's source (once per namespace per process) and bind its entry points."""
    with _lock:
        if is_declared(namespace):
            return _declared[namespace]
        ROOT = root()
        _declare(ROOT, optimized(source), f"model {namespace}")
        addr = {}
        for fn in ("create", "destroy", "run"):
            a = int(ROOT.gInterpreter.ProcessLine(f"(long long)(&{namespace}::{fn});"))
            if not a:
                raise CompilationError(f"cling did not return the address of {namespace}::{fn}")
            addr[fn] = a
        entry = ModelEntry(namespace, _CREATE(addr["create"]), _DESTROY(addr["destroy"]), _RUN(addr["run"]))
        if "const double *profile(void *s)" in source:
            a = int(ROOT.gInterpreter.ProcessLine(f"(long long)(&{namespace}::profile);"))
            entry.profile = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_double), ctypes.c_void_p)(a)
        _declared[namespace] = entry
        return entry


def register_proxy(namespace: str, entry: ModelEntry, make_source: Callable[[], str]) -> None:
    """Remember a native model whose ``namespace`` cling code may refer to; ``make_source()``
    gives the proxy's C++, declared only when :func:`is_declared` is first asked about it
    (so native models cost no cling work unless used from C++)."""
    with _lock:
        if namespace not in _declared:
            _proxies[namespace] = (entry, make_source)


def is_declared(namespace: str) -> bool:
    """Whether cling code can use ``namespace`` (declaring a native model's proxy now if needed)."""
    with _lock:
        if namespace in _declared:
            return True
        pending = _proxies.get(namespace)
        if pending is None:
            return False
        entry, make_source = pending
        _declare(root(), make_source(), f"the cling proxy of the native model {namespace}")
        del _proxies[namespace]
        _declared[namespace] = entry
        return True


#: cppyy caller per signature of input and output element types (see fast_caller)
_callers: dict[tuple[tuple[str, ...], tuple[str, ...]], object] = {}

#: C++ element types whose numpy arrays cppyy passes as typed pointers (not the 8-bit ones,
#: which it may take for strings, nor bool)
_FAST_TYPES = {"float", "double", "int16_t", "uint16_t", "int32_t", "uint32_t", "int64_t", "uint64_t"}


def fast_caller(in_types: list[str], out_types: list[str]):
    """A function calling a model's ``run`` entry point with numpy arrays, or None.

    ``caller(run_address, session, sym, *inputs, *outputs, err_address, err_len)`` with ``sym``
    an int64 numpy array. Measured: about 0.5 us per batch-1 call, against about 5 us through
    ctypes (a ``ctypes`` call plus ``ndarray.ctypes.data`` per array), which is most of what
    ``Model.infer`` costs beyond the generated code on small models. One small wrapper is declared
    per signature (element types of inputs and outputs), typed, because cppyy converts numpy
    arrays to typed pointers quickly and to ``void*`` slowly. It releases the GIL like ctypes does.
    """
    key = (tuple(in_types), tuple(out_types))
    if not all(t in _FAST_TYPES for t in (*in_types, *out_types)):
        return None
    with _lock:
        if key in _callers:
            return _callers[key]
        ROOT = root()
        name = f"run_{len(_callers)}"
        params = [f"const {t} *x{i}" for i, t in enumerate(in_types)] + [f"{t} *y{i}" for i, t in enumerate(out_types)]
        ins = "".join(f"x{i}, " for i in range(len(in_types)))
        outs = "".join(f"y{i}, " for i in range(len(out_types)))
        code = (
            "namespace sofie_py {\n"
            f"inline int {name}(long long fn, long long s, std::int64_t *sym, {''.join(p + ', ' for p in params)}"
            "long long err, std::size_t errlen)\n{\n"
            f"   const void *in[{len(in_types) + 1}] = {{{ins}nullptr}};\n"
            f"   void *out[{len(out_types) + 1}] = {{{outs}nullptr}};\n"
            "   using run_fn = int (*)(void *, std::int64_t *, const void *const *, void *const *, char *, std::size_t);\n"
            "   return reinterpret_cast<run_fn>(fn)(reinterpret_cast<void *>(s), sym, in, out, "
            "reinterpret_cast<char *>(err), errlen);\n}\n}\n")
        _declare(ROOT, code, "the Python call wrapper")
        fn = getattr(ROOT.sofie_py, name)
        try:
            fn.__release_gil__ = True
        except (AttributeError, TypeError):
            pass
        _callers[key] = fn
        return fn
