"""The GPU backend: CUDA (cuBLAS), HIP (hipBLAS) and a host emulation of the same kernels.

``sofie_root.compile(model, backend="cuda" | "hip" | "gpu-emulated")`` generates kernels in the
CUDA/HIP common subset (:mod:`.codegen`, one ``emit_<family>.py`` per operator family) over the
portability header ``gpu_runtime.cuh``, builds them (:mod:`.build`) and returns a
:class:`~sofie_root.gpu.model.GpuModel`. :func:`gpu_available` says whether a backend can run here,
and why not. Nothing in this package imports ROOT, uproot or awkward.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

__all__ = ["GpuStatus", "gpu_available"]


@dataclass
class GpuStatus:
    """Whether ``backend`` can build and run models here (truthy if so), and why not."""

    backend: str
    available: bool
    reason: str
    devices: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.available

    def __str__(self) -> str:
        return self.reason


def _cuda_devices() -> tuple[list[str], str]:
    """(device names, "" or why none) through the CUDA driver API (libcuda), without a toolkit."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return [], f"no NVIDIA driver (libcuda.so.1 cannot be loaded: {e})"
    msg = ctypes.c_char_p()

    def why(rc: int) -> str:
        try:
            lib.cuGetErrorString(rc, ctypes.byref(msg))
            return f"{rc} ({msg.value.decode() if msg.value else 'unknown'})"
        except (AttributeError, OSError):
            return str(rc)

    rc = lib.cuInit(0)
    if rc:
        return [], f"the CUDA driver did not initialise: cuInit returned {why(rc)}"
    count = ctypes.c_int(0)
    rc = lib.cuDeviceGetCount(ctypes.byref(count))
    if rc or count.value == 0:
        return [], f"no CUDA device (cuDeviceGetCount: {why(rc) if rc else '0 devices'})"
    names = []
    for k in range(count.value):
        dev = ctypes.c_int(0)
        buf = ctypes.create_string_buffer(256)
        if lib.cuDeviceGet(ctypes.byref(dev), k) == 0 and lib.cuDeviceGetName(buf, 256, dev) == 0:
            names.append(buf.value.decode(errors="replace"))
    return names, ""


def _hip_devices() -> tuple[list[str], str]:
    try:
        lib = ctypes.CDLL("libamdhip64.so")
    except OSError as e:
        return [], f"no HIP runtime (libamdhip64.so cannot be loaded: {e})"
    count = ctypes.c_int(0)
    rc = lib.hipGetDeviceCount(ctypes.byref(count))
    if rc or count.value == 0:
        return [], f"no HIP device (hipGetDeviceCount returned {rc}, {count.value} devices)"
    return [f"HIP device {k}" for k in range(count.value)], ""


def gpu_available(backend: str = "cuda") -> GpuStatus:
    """Can ``backend`` ("cuda", "hip" or "gpu-emulated") build and run models on this machine?

    >>> status = sofie_root.gpu_available()   # doctest: +SKIP
    >>> bool(status), status.reason            # doctest: +SKIP
    (False, 'no NVIDIA driver (libcuda.so.1 cannot be loaded: ...)')
    """
    from ..errors import CompilationError
    from . import build

    if backend not in build.GPU_BACKENDS:
        raise ValueError(f"backend must be one of {build.GPU_BACKENDS}, got {backend!r}")
    try:
        build._command(backend)  # the toolchain: compiler (and cuBLAS for CUDA)
    except CompilationError as e:
        return GpuStatus(backend, False, str(e))
    if backend == "gpu-emulated":
        return GpuStatus(backend, True, "the emulated device (the host CPU) is always available", ["host (emulated)"])
    devices, why = _cuda_devices() if backend == "cuda" else _hip_devices()
    if not devices:
        return GpuStatus(backend, False, f"{why}; the {backend} toolchain is installed, so models compile, but they "
                                         "cannot run here (backend='gpu-emulated' runs the same kernels on the CPU)")
    return GpuStatus(backend, True, f"{len(devices)} device(s): {', '.join(devices)}", devices)
