"""The optional native backend: generated models compiled by the system C++ compiler.

``sofie_root.compile(..., backend="native")`` (or ``SOFIE_ROOT_BACKEND=native``) builds the
generated C++ -- the same source cling would see, with the same runtime header -- into a shared
library with ``$CXX`` (else ``c++``, ``g++``, ``clang++`` on PATH) at ``-O3 -march=native``, and
loads it into the process. Only four ``extern "C"`` functions are exported (``<ns>_create``,
``<ns>_destroy``, ``<ns>_run`` and, in profiling builds, ``<ns>_profile``); they have the signatures
of the cling entry points, so :class:`~sofie_root.Model` and the benchmark loop call either
backend the same way. No C++ exception crosses the library boundary: the wrappers return error
codes and messages, as the cling ones do.

Libraries are cached in ``$SOFIE_ROOT_CACHE`` (default ``~/.cache/sofie_root``) under a key that
covers the translation unit (model source, runtime header, BLAS switch), the compiler (path and
``--version``), the flags and the CPU (``-march=native`` code must not run on another CPU model
sharing the cache). Each library has a side-car file with its SHA-256: a library that does not
match it (truncated, overwritten) is rebuilt, never loaded. Files are written under temporary
names and renamed, so processes compiling the same model at once each see a complete file.

The C++ namespace of a native model ends in ``_nat``: a cling-declared model of the same content
may live in the same process. For code inside cling that uses ``<ns>::Session`` (the RDataFrame
functors), :func:`cling.is_declared` declares a small proxy -- a ``Session`` with the same
constants, ``run`` and ``infer`` that forwards to the library and turns error codes into
``std::runtime_error`` -- the first time it is asked about the namespace.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import CompilationError
from . import cling

log = logging.getLogger("sofie_root")

#: every backend name compile() accepts; the GPU ones are built by sofie_root.gpu (see gpu/build.py)
BACKENDS = ("cling", "native", "cuda", "hip", "gpu-emulated")
#: compiler flags of every native build (part of the cache key). -fno-trapping-math is clang's
#: (and so cling's) default; without it g++ does not vectorise floorf, which the runtime's exp,
#: sigmoid, tanh, softmax and GELU loops use (measured: FusedMatMul+GELU 2.7x, Softmax 2.1x slower
#: than cling on the transformer benchmark). Nothing in the generated code relies on FP traps.
#: -fno-math-errno likewise: with errno, g++ keeps std::sqrt a possible library call and vectorises
#: no loop calling it (sofie_rt::vm::sqrt; cling uses clang's errno-free builtin); nothing reads errno.
FLAGS = ("-std=c++17", "-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-fPIC", "-shared", "-fvisibility=hidden",
         "-fvisibility-inlines-hidden") + (("-fno-plt", "-Wl,-z,defs") if sys.platform.startswith("linux") else ())
#: bumped whenever the wrapper or the cache layout changes, so old libraries are not reused
FORMAT_VERSION = "1"
COMPILE_TIMEOUT = 900  # seconds; a large CNN takes a few seconds, this only stops a hung compiler

_lock = threading.RLock()
_loaded: dict[str, cling.ModelEntry] = {}
_libraries: list[ctypes.CDLL] = []  # kept alive for the life of the process (never dlclose'd)
_compilers: dict[str | None, Compiler] = {}
_blas_threads_set = False

#: what this process did (for tests and diagnostics): compiler runs, cache hits, cached
#: libraries rejected because they did not match their checksum
stats = {"compiles": 0, "cache_hits": 0, "rejected": 0}

_INFER_RE = re.compile(r"^   void infer\(.*?^   \}\n", re.S | re.M)
_CONST_RE = re.compile(r"^   static constexpr (?:std::size_t|int) k\w+ = \d+;$", re.M)


def resolve_backend(backend: str | None) -> str:
    """``backend`` checked, or ``$SOFIE_ROOT_BACKEND`` (default ``"cling"``) when it is None."""
    value = os.environ.get("SOFIE_ROOT_BACKEND", "cling") if backend is None else backend
    if value not in BACKENDS:
        where = " (from the environment variable SOFIE_ROOT_BACKEND)" if backend is None else ""
        raise ValueError(f"backend must be 'cling' or 'native' (CPU), or 'cuda', 'hip' or 'gpu-emulated' (GPU), "
                         f"got {value!r}{where}")
    return value


def cache_dir() -> Path:
    """Where native libraries are kept: ``$SOFIE_ROOT_CACHE`` or ``~/.cache/sofie_root``."""
    return Path(os.environ.get("SOFIE_ROOT_CACHE") or Path.home() / ".cache" / "sofie_root")


@dataclass(frozen=True)
class Compiler:
    argv: tuple[str, ...]  # the command, e.g. ("g++",) or ("ccache", "g++")
    identity: str  # resolved path and --version output, part of the cache key


def compiler() -> Compiler:
    """The C++ compiler native builds use: ``$CXX`` if set (and only it), else the first of
    ``c++``, ``g++``, ``clang++`` found on PATH that answers ``--version``.

    Raises:
        CompilationError: none works; the message lists what was tried and what to do.
    """
    env = os.environ.get("CXX") or None
    with _lock:
        found = _compilers.get(env)
        if found is not None:
            return found
        candidates = [shlex.split(env)] if env else [["c++"], ["g++"], ["clang++"]]
        tried = []
        for argv in candidates:
            if not argv:
                tried.append(f"CXX={env!r} (empty)")
                continue
            exe = shutil.which(argv[0])
            label = f"CXX={env!r}" if env else argv[0]
            if exe is None:
                tried.append(f"{label} (not found)")
                continue
            try:
                r = subprocess.run([exe, *argv[1:], "--version"], capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as e:
                tried.append(f"{label} ({e})")
                continue
            if r.returncode != 0:
                tried.append(f"{label} (--version failed: {r.stderr.strip()[:200]})")
                continue
            found = Compiler((exe, *argv[1:]), f"{os.path.realpath(exe)}\n{r.stdout.strip()}")
            _compilers[env] = found
            return found
    raise CompilationError(
        "the native backend needs a C++ compiler; tried " + ", ".join(tried) + ". Install one "
        "(e.g. `apt-get install g++`, `dnf install gcc-c++` or `conda install -c conda-forge cxx-compiler`) "
        "and set CXX=/path/to/c++ if it is not on PATH, or use backend='cling' (SOFIE_ROOT_BACKEND=cling), "
        "which needs no compiler.")


def _cpu_identity() -> str:
    """CPU model and instruction-set flags: ``-march=native`` code is only valid for them."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "vendor_id"))]
    except OSError:
        return "unknown"
    return "".join(dict.fromkeys(lines))  # one copy of each line (they repeat per core)


def flags() -> tuple[str, ...]:
    """:data:`FLAGS` plus ``$SOFIE_ROOT_NATIVE_FLAGS`` (e.g. ``-ffast-math``; part of the cache key)."""
    return FLAGS + tuple(shlex.split(os.environ.get("SOFIE_ROOT_NATIVE_FLAGS", "")))


def _use_blas() -> str | None:
    """Path of the BLAS library generated GEMMs call (linked with an rpath), or None; as for
    cling (gpu/build.py links the same one)."""
    lib = cling.blas()
    return lib.path if lib is not None else None


def translation_unit(namespace: str, source: str, blas: cling.Blas | None) -> str:
    """The file given to the compiler: runtime header, the model source unchanged, and the
    exported C wrappers (noexcept: an escaping exception terminates instead of unwinding into
    a foreign frame; the model's entry points already catch everything)."""
    prelude = blas.prelude() if blas else ""
    api = '__attribute__((visibility("default")))'
    profile = ""
    if "const double *profile(void *s)" in source:
        profile = (f"{api} const double *{namespace}_profile(void *s) noexcept "
                   f"{{ return {namespace}::profile(s); }}\n")
    return f"""{prelude}{cling.runtime_text()}
{source}
extern "C" {{
{entry_points(namespace)}{profile}}}
"""


def entry_points(namespace: str, run_args: str = "") -> str:
    """The exported C wrappers of a model's ``create``, ``destroy`` and ``run`` (which gets
    ``run_args`` after the common arguments), for an ``extern "C"`` block; the GPU build uses
    them too."""
    api = '__attribute__((visibility("default")))'
    return f"""{api} void *{namespace}_create(const void *w, std::size_t n, char *err, std::size_t errlen) noexcept
{{ return {namespace}::create(w, n, err, errlen); }}
{api} void {namespace}_destroy(void *s) noexcept {{ {namespace}::destroy(s); }}
{api} int {namespace}_run(void *s, std::int64_t *sym, const void *const *in, void *const *out, char *err,
                     std::size_t errlen) noexcept
{{ return {namespace}::run(s, sym, in, out, err, errlen{run_args}); }}
"""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(lib: Path) -> bool:
    """The cached library exists and matches its side-car checksum."""
    side = lib.with_name(lib.name + ".sha256")
    try:
        want = side.read_text().strip()
        return bool(want) and _digest(lib) == want
    except OSError:
        return False


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build(namespace: str, source: str) -> Path:
    """The path of the model's library, compiled now unless a verified copy is cached."""
    cc = compiler()
    blas = cling.blas()
    unit = translation_unit(namespace, source, blas)
    link = [] if blas is None else [f"-L{Path(blas.path).parent}", f"-l:{Path(blas.path).name}",
                                    f"-Wl,-rpath,{Path(blas.path).parent}"]
    return compile_cached(namespace, unit, cc.argv, cc.identity, list(flags()), link,
                          key_extra=_cpu_identity(), what="backend='cling'")


def compile_cached(namespace: str, unit: str, argv, identity: str, opts: list[str], link: list[str], *,
                   suffix: str = ".cpp", key_extra: str = "", what: str = "backend='cling'",
                   env: dict[str, str] | None = None) -> Path:
    """Compile ``unit`` with ``argv + opts -o lib source + link`` into a shared library in the
    cache (keyed by all of them plus ``key_extra``), unless a verified copy is there; the GPU
    backend (:mod:`sofie_root.gpu.build`) builds with nvcc/hipcc through this too. ``what`` is
    the fallback suggested when the compiler fails."""
    key = hashlib.sha256("\0".join([FORMAT_VERSION, identity, " ".join(opts), " ".join(link),
                                    key_extra, unit]).encode()).hexdigest()
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CompilationError(f"the native cache directory {directory} cannot be created ({e}); "
                               "set SOFIE_ROOT_CACHE to a writable directory") from e
    lib = directory / f"{namespace}-{key[:24]}.so"
    if _verified(lib):
        stats["cache_hits"] += 1
        return lib
    if lib.exists():
        stats["rejected"] += 1
        log.warning("native library %s does not match its checksum: rebuilding it", lib)
    try:
        fd, tmp_so = tempfile.mkstemp(prefix=f".{lib.name}.", suffix=".tmp", dir=directory)
        os.close(fd)
        fd, tmp_cpp = tempfile.mkstemp(prefix=f".{namespace}-", suffix=suffix, dir=directory)
    except OSError as e:
        raise CompilationError(f"the native cache directory {directory} is not writable ({e}); "
                               "set SOFIE_ROOT_CACHE to a writable directory") from e
    try:
        with os.fdopen(fd, "w") as f:
            f.write(unit)
        cmd = [*argv, *opts, "-o", tmp_so, tmp_cpp, *link]
        log.info("native build of %s: %s", namespace, " ".join(map(shlex.quote, cmd)))
        stats["compiles"] += 1
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT, env=env)
        except (OSError, subprocess.SubprocessError) as e:
            raise CompilationError(f"running the compiler {argv[0]} for model {namespace} failed: {e}") from e
        if r.returncode != 0:
            kept = directory / f"failed-{namespace}{suffix}"
            os.replace(tmp_cpp, kept)
            raise CompilationError(
                f"{argv[0]} failed to compile model {namespace} (exit code {r.returncode}); the source is "
                f"kept in {kept}; this is a bug in sofie_root (or the compiler), please report it, and use "
                f"{what} meanwhile.\n{r.stderr[-4000:]}")
        digest = _digest(Path(tmp_so))
        os.chmod(tmp_so, 0o755)
        os.replace(tmp_so, lib)
        _atomic_write(lib.with_name(lib.name + ".sha256"), digest + "\n")
    finally:
        Path(tmp_so).unlink(missing_ok=True)
        Path(tmp_cpp).unlink(missing_ok=True)
    return lib


def _single_threaded_blas(path: str) -> None:
    """One BLAS thread, as for cling: a Session per thread is the parallelism model."""
    global _blas_threads_set
    if not _blas_threads_set:
        try:
            cling.single_threaded(path)
        except OSError:
            pass
        _blas_threads_set = True


def load_model(namespace: str, source: str) -> cling.ModelEntry:
    """Build (or find in the cache) and load a model's library once per process; returns its
    entry points, called exactly like those of :func:`cling.declare_model`."""
    with _lock:
        entry = _loaded.get(namespace)
        if entry is not None:
            return entry
        lib_path = build(namespace, source)
        try:
            lib = ctypes.CDLL(str(lib_path), mode=os.RTLD_NOW | os.RTLD_LOCAL)
        except OSError as e:
            raise CompilationError(f"the native library {lib_path} of model {namespace} cannot be loaded: {e}; "
                                   "delete it to have it rebuilt, or use backend='cling'") from e
        _libraries.append(lib)
        blas = _use_blas()
        if blas is not None:
            _single_threaded_blas(blas)
        addr = {fn: ctypes.cast(getattr(lib, f"{namespace}_{fn}"), ctypes.c_void_p).value
                for fn in ("create", "destroy", "run")}
        entry = cling.ModelEntry(namespace, cling._CREATE(addr["create"]), cling._DESTROY(addr["destroy"]),
                                 cling._RUN(addr["run"]), library=str(lib_path))
        if "const double *profile(void *s)" in source:
            addr["profile"] = ctypes.cast(getattr(lib, f"{namespace}_profile"), ctypes.c_void_p).value
            entry.profile = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_double), ctypes.c_void_p)(addr["profile"])
        cling.register_proxy(namespace, entry, lambda: proxy_source(namespace, source, addr))
        _loaded[namespace] = entry
        return entry


def proxy_source(namespace: str, source: str, addr: dict[str, int]) -> str:
    """C++ for cling: ``namespace <ns>`` with a ``Session`` (the generated one's constants,
    ``run``, ``infer``) and ``create``/``destroy``/``run`` forwarding to the loaded library."""
    consts = _CONST_RE.findall(source.split("struct Session {", 1)[-1].split("explicit Session(", 1)[0])
    infer = _INFER_RE.search(source)
    if not consts or infer is None:
        raise CompilationError(f"the generated code of {namespace} does not have the expected Session layout "
                               "(constants, infer); the native proxy cannot be made (a bug in sofie_root)")
    create_t = "void *(*)(const void *, std::size_t, char *, std::size_t)"
    run_t = "int (*)(void *, std::int64_t *, const void *const *, void *const *, char *, std::size_t)"
    profile = ""
    if "profile" in addr:
        profile = (f"inline const double *profile(void *s) {{ return reinterpret_cast<const double *(*)(void *)>"
                   f"({addr['profile']}ULL)(s); }}\n")
    consts_text = "\n".join(consts)
    return f"""// cling proxy of the natively compiled model {namespace}
namespace {namespace} {{
namespace native {{
inline const auto create = reinterpret_cast<{create_t}>({addr['create']}ULL);
inline const auto destroy = reinterpret_cast<void (*)(void *)>({addr['destroy']}ULL);
inline const auto run = reinterpret_cast<{run_t}>({addr['run']}ULL);
}}

struct Session {{
{consts_text}

   explicit Session(const void *weights = nullptr, std::size_t nbytes = 0)
   {{
      char err[1024] = "";
      fImpl = native::create(weights, nbytes, err, sizeof(err));
      if (!fImpl)
         throw std::runtime_error(err);
   }}
   Session(const Session &) = delete;
   Session &operator=(const Session &) = delete;
   ~Session() {{ native::destroy(fImpl); }}

{infer.group(0)}
   void run(std::int64_t *sym, const void *const *in, void *const *out)
   {{
      char err[1024];
      if (native::run(fImpl, sym, in, out, err, sizeof(err)))
         throw std::runtime_error(err);
   }}

   void *fImpl = nullptr;
}};

inline void *create(const void *weights, std::size_t nbytes, char *err, std::size_t errlen)
{{ return native::create(weights, nbytes, err, errlen); }}
inline void destroy(void *s) {{ native::destroy(s); }}
inline int run(void *s, std::int64_t *sym, const void *const *in, void *const *out, char *err, std::size_t errlen)
{{ return native::run(s, sym, in, out, err, errlen); }}
{profile}
}} // namespace {namespace}
"""
