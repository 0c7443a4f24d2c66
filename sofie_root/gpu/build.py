"""Building generated GPU models into cached shared libraries, and loading them.

* ``cuda``: ``nvcc`` (``$NVCC``, else on PATH, else ``/usr/local/cuda/bin/nvcc``), a fat binary for
  ``$SOFIE_ROOT_CUDA_ARCHS`` (default ``80,90``: sm_80 and sm_90 code plus compute_90 PTX, which
  the driver compiles for newer GPUs), linked to cuBLAS from the ``nvidia-cublas`` wheel
  (``pip install sofie-root[cuda]``) or the toolkit.
* ``hip``: ``hipcc`` (``$HIPCC``), ``--offload-arch`` for each of ``$SOFIE_ROOT_HIP_ARCHS``
  (default ``gfx90a,gfx1030``), hipBLAS when its header is found (else the plain GEMM kernel).
* ``gpu-emulated``: the system C++ compiler (as the native backend), the same kernels run on the
  host, GEMMs through OpenBLAS (scipy-openblas32): what the tests run without a GPU.

Libraries are cached like native ones (:func:`sofie_root.jit.native.compile_cached`: content
key, checksum side-car, atomic renames). Nothing here imports ROOT.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..codegen.headers import header_text
from ..errors import CompilationError
from ..jit import native
from ..jit.cling import _CREATE, _DESTROY, _RUN  # the entry points' C signatures, as the CPU models'

RUNTIME_PATH = Path(__file__).resolve().parent / "gpu_runtime.cuh"
GPU_BACKENDS = ("cuda", "hip", "gpu-emulated")
DEFAULT_CUDA_ARCHS = "80,90"
DEFAULT_HIP_ARCHS = "gfx90a,gfx1030"


def runtime_text() -> str:
    """The GPU runtime header as one text (the shared scalar helpers spliced in)."""
    return header_text(RUNTIME_PATH).replace("#pragma once", "", 1)


_DEFINE = {"cuda": "SOFIE_GPU_CUDA", "hip": "SOFIE_GPU_HIP", "gpu-emulated": "SOFIE_GPU_EMULATED"}

_lock = threading.RLock()
_loaded: dict[tuple[str, str], LoadedModel] = {}
_libraries: list[ctypes.CDLL] = []
_tools: dict[str, tuple[str, str]] = {}



@dataclass
class LoadedModel:
    namespace: str
    backend: str
    create: object
    destroy: object
    run: object         # host pointers: inputs copied to the device, outputs copied back
    run_device: object  # device pointers, no copies
    alloc: object       # (nbytes, err, errlen) -> device pointer
    free: object        # (pointer, nbytes)
    download: object    # (host dst, device src, nbytes, err, errlen) -> status
    library: str
    build_seconds: float


def _find_tool(env: str, names: tuple[str, ...], extra: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """(path, ``--version`` output) of a compiler, or None."""
    if env in _tools:
        return _tools[env]
    cands = [os.environ[env]] if os.environ.get(env) else [*names, *extra]
    for c in cands:
        exe = shutil.which(c) or (c if os.path.isfile(c) and os.access(c, os.X_OK) else None)
        if not exe:
            continue
        try:
            r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60,
                               env=tool_env("hip") if env == "HIPCC" else None)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            _tools[env] = (exe, r.stdout.strip())
            return _tools[env]
    return None


def nvcc() -> tuple[str, str] | None:
    return _find_tool("NVCC", ("nvcc",), ("/usr/local/cuda/bin/nvcc",))


def hipcc() -> tuple[str, str] | None:
    return _find_tool("HIPCC", ("hipcc",), ("/opt/rocm/bin/hipcc",))


def cublas_paths() -> tuple[Path, Path] | None:
    """(include dir, lib dir) holding ``cublas_v2.h`` and ``libcublas.so.13``: the nvidia-cublas
    wheel first, then the CUDA toolkit next to nvcc."""
    cands: list[Path] = []
    try:
        import importlib.util

        spec = importlib.util.find_spec("nvidia")
        for loc in (spec.submodule_search_locations or []) if spec else []:
            cands += [Path(loc) / "cu13", Path(loc) / "cublas"]
    except (ImportError, ValueError):
        pass
    tool = nvcc()
    if tool:
        root = Path(os.path.realpath(tool[0])).parent.parent
        cands += [root, Path("/usr/local/cuda")]
    for c in cands:
        inc = c / "include"
        for libdir in (c / "lib", c / "lib64"):
            if (inc / "cublas_v2.h").exists() and any(libdir.glob("libcublas.so*")):
                return inc, libdir
    return None


def tool_env(backend: str) -> dict[str, str] | None:
    """The environment of compiler runs: hipcc targets AMD (it picks NVIDIA by itself where nvcc
    is installed, unless HIP_PLATFORM says otherwise)."""
    if backend != "hip":
        return None
    env = dict(os.environ)
    env.setdefault("HIP_PLATFORM", "amd")
    return env


def _archs(env: str, default: str) -> list[str]:
    return [a.strip() for a in os.environ.get(env, default).split(",") if a.strip()]


def _unit_head(backend: str, blas: bool = False) -> str:
    """The start of every translation unit: the target's define and the runtime header."""
    prelude = f"#define {_DEFINE[backend]} 1\n" + ("#define SOFIE_RT_CBLAS 1\n" if blas else "")
    return f"{prelude}{runtime_text()}\n"


def _unit_model(namespace: str, source: str) -> str:
    """One model's part of a translation unit: its source and its exported C entry points."""
    api = '__attribute__((visibility("default")))'
    return f"""{source}
extern "C" {{
{native.entry_points(namespace, ", true")}
{api} int {namespace}_run_device(void *s, std::int64_t *sym, const void *const *in, void *const *out,
                            char *err, std::size_t errlen) noexcept
{{ return {namespace}::run(s, sym, in, out, err, errlen, false); }}
{api} void *{namespace}_alloc(std::size_t n, char *err, std::size_t errlen) noexcept
{{
   try {{ return sofie_gpu::device_alloc(n, "a tensor of {namespace}"); }}
   catch (const std::exception &e) {{ std::snprintf(err, errlen, "%s", e.what()); }}
   return nullptr;
}}
{api} void {namespace}_free(void *p, std::size_t n) noexcept {{ sofie_gpu::device_free(p, n); }}
{api} int {namespace}_download(void *dst, const void *src, std::size_t n, char *err, std::size_t errlen) noexcept
{{
   try {{ sofie_gpu::download(dst, src, n); return 0; }}
   catch (const std::exception &e) {{ std::snprintf(err, errlen, "%s", e.what()); }}
   return 1;
}}
}}
"""


def translation_unit(namespace: str, source: str, backend: str, blas: bool = False) -> str:
    """The file given to the compiler for one model."""
    return _unit_head(backend, blas) + _unit_model(namespace, source)


def _command(backend: str, compile_only: bool = False, archs: list[str] | None = None):
    """(compiler argv, identity, options, link options, source suffix) for ``backend``."""
    if backend == "gpu-emulated":
        cc = native.compiler()
        blas = native._use_blas()
        opts = ["-std=c++17", "-O2", "-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-x", "c++"]
        link = [] if blas is None else [f"-L{Path(blas).parent}", f"-l:{Path(blas).name}",
                                        f"-Wl,-rpath,{Path(blas).parent}"]
        return list(cc.argv), cc.identity, opts + (["-c"] if compile_only else ["-shared"]), link, ".cpp", blas
    if backend == "cuda":
        tool = nvcc()
        if tool is None:
            raise CompilationError("backend='cuda' needs nvcc (the CUDA toolkit): not found on PATH, in $NVCC or "
                                   "/usr/local/cuda/bin; install the CUDA toolkit, or use backend='gpu-emulated' "
                                   "(same kernels, on the CPU)")
        paths = cublas_paths()
        if paths is None:
            raise CompilationError("backend='cuda' needs cuBLAS headers and libcublas.so.13: `pip install "
                                   "nvidia-cublas` (or sofie-root[cuda]), or a CUDA toolkit that ships cuBLAS")
        inc, lib = paths
        archs = archs or _archs("SOFIE_ROOT_CUDA_ARCHS", DEFAULT_CUDA_ARCHS)
        gen = []
        for a in archs:
            gen += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        gen += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]  # PTX for newer GPUs
        opts = ["-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC,-fvisibility=hidden",
                f"-I{inc}", *gen, "-x", "cu"]
        link = [f"-L{lib}", "-l:libcublas.so.13", "-Xlinker", f"-rpath,{lib}"]
        return [tool[0]], tool[1], opts + (["-c"] if compile_only else ["-shared"]), link, ".cu", None
    if backend == "hip":
        tool = hipcc()
        if tool is None:
            raise CompilationError("backend='hip' needs hipcc (ROCm, or Debian's hipcc package): not found on PATH, "
                                   "in $HIPCC or /opt/rocm/bin; or use backend='gpu-emulated'")
        archs = archs or _archs("SOFIE_ROOT_HIP_ARCHS", DEFAULT_HIP_ARCHS)
        opts = ["-std=c++17", "-O3", "-fPIC", "-fvisibility=hidden", *[f"--offload-arch={a}" for a in archs],
                "-x", "hip"]
        link = ["-lhipblas"] if os.environ.get("SOFIE_ROOT_HIPBLAS") else []
        if not link:
            opts.append("-DSOFIE_GPU_NO_VENDOR_BLAS")
        return [tool[0]], tool[1], opts + (["-c"] if compile_only else ["-shared"]), link, ".hip", None
    raise ValueError(f"unknown GPU backend {backend!r}; one of {GPU_BACKENDS}")


def build(namespace: str, source: str, backend: str) -> tuple[Path, float]:
    """The model's library (built now unless cached) and the seconds the build took (0 if cached)."""
    argv, identity, opts, link, suffix, blas = _command(backend)
    unit = translation_unit(namespace, source, backend, blas is not None)
    t0 = time.perf_counter()
    before = native.stats["compiles"]
    lib = native.compile_cached(namespace, unit, argv, identity, opts, link, suffix=suffix, key_extra=backend,
                                what="backend='gpu-emulated' or a CPU backend", env=tool_env(backend))
    return lib, (time.perf_counter() - t0) if native.stats["compiles"] > before else 0.0


def compile_check(source: str | list[tuple[str, str]], namespace: str = "", backend: str = "cuda",
                  archs: list[str] | None = None, *, link: bool = False) -> float:
    """Compile a model's translation unit (no cache) and return the seconds it took: an object
    file only, for the architectures ``archs`` (default: the build's); with ``link``, the shared
    library exactly as :func:`build` makes it (fat binary, BLAS linked). Used by the tests to
    check the CUDA and HIP sources where no GPU is. ``source`` may also be a list of
    (namespace, source) pairs: one translation unit holding them all (the runtime header parsed
    once, the compiler started once: quicker than one run each)."""
    argv, _, opts, link_opts, suffix, blas = _command(backend, compile_only=not link, archs=archs)
    models = source if isinstance(source, list) else [(namespace, source)]
    unit = _unit_head(backend, blas is not None) + "".join(_unit_model(ns, src) for ns, src in models)
    label = models[0][0] if len(models) == 1 else f"{len(models)} models ({models[0][0]}, ...)"
    with tempfile.TemporaryDirectory(prefix="sofie_gpu_") as d:
        src = Path(d) / f"{models[0][0]}{suffix}"
        src.write_text(unit)
        out = Path(d) / ("model.so" if link else "model.o")
        cmd = [*argv, *opts, "-o", str(out), str(src), *(link_opts if link else [])]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=native.COMPILE_TIMEOUT, env=tool_env(backend))
        if r.returncode != 0:
            raise CompilationError(f"{argv[0]} failed on model {label} ({backend}):\n"
                                   f"{' '.join(map(shlex.quote, cmd))}\n{r.stderr[-6000:]}")
        return time.perf_counter() - t0


def fatbin_images(library: str | os.PathLike) -> list[tuple[str, int]]:
    """The device images of a CUDA library's fat binaries, as ("elf", 90) for sm_90 code and
    ("ptx", 90) for compute_90 PTX: what a build holds, without the toolkit's cuobjdump (the
    fat binary container: a 16-byte header with magic 0xBA55ED50, then entries of kind 1 = PTX,
    2 = ELF, each with its header size, payload size and SM version at byte 28)."""
    data = Path(library).read_bytes()
    magic = struct.pack("<I", 0xBA55ED50)
    images, pos = [], data.find(magic)
    while pos >= 0 and pos + 16 <= len(data):
        _, _, head, size = struct.unpack_from("<IHHQ", data, pos)
        off, end = pos + head, min(pos + head + size, len(data))
        while off + 32 <= end:
            kind, _, entry_head, entry_size = struct.unpack_from("<HHIQ", data, off)
            if entry_head < 32:
                break
            images.append(({1: "ptx", 2: "elf"}.get(kind, str(kind)), struct.unpack_from("<I", data, off + 28)[0]))
            off += entry_head + entry_size
        pos = data.find(magic, max(end, pos + 4))
    return images


def load_model(namespace: str, source: str, backend: str) -> LoadedModel:
    """Build (or find in the cache) and load a GPU model's library once per process."""
    with _lock:
        entry = _loaded.get((namespace, backend))
        if entry is not None:
            return entry
        lib_path, seconds = build(namespace, source, backend)
        try:
            lib = ctypes.CDLL(str(lib_path), mode=os.RTLD_NOW | os.RTLD_LOCAL)
        except OSError as e:
            raise CompilationError(f"the {backend} library {lib_path} of model {namespace} cannot be loaded: {e}; "
                                   "delete it to have it rebuilt") from e
        _libraries.append(lib)
        blas = native._use_blas() if backend == "gpu-emulated" else None
        if blas is not None:
            native._single_threaded_blas(blas)

        def fn(name: str) -> int:
            return ctypes.cast(getattr(lib, f"{namespace}_{name}"), ctypes.c_void_p).value

        entry = LoadedModel(
            namespace, backend, _CREATE(fn("create")), _DESTROY(fn("destroy")), _RUN(fn("run")),
            _RUN(fn("run_device")),
            ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)(fn("alloc")),
            ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t)(fn("free")),
            ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                             ctypes.c_size_t)(fn("download")), str(lib_path), seconds)
        _loaded[(namespace, backend)] = entry
        return entry
