"""The :class:`~sofie_root.Model` of the GPU backends (``backend="cuda" | "hip" | "gpu-emulated"``).

``infer`` takes numpy arrays (copied to the device and back, as the CPU models take them) or
device arrays -- objects with ``__cuda_array_interface__`` (CuPy, PyTorch CUDA tensors, Numba) or
DLPack (``__dlpack__``) -- which are used in place; outputs are then :class:`DeviceArray` objects
on the device (``__cuda_array_interface__``, ``.numpy()``). In the emulation the "device" is the
host, so the device path is exercised by the tests with host memory.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterable

import numpy as np

from ..errors import InputError, SofieError
from ..ir.dims import Dim
from ..ir.graph import Graph
from ..model import Model
from ..passes import CPU_ONLY, DEFAULT, run_passes

_SUFFIX = {"cuda": "_cu", "hip": "_hip", "gpu-emulated": "_emu"}
# DLPack device types accepted per backend (kDLCPU = 1 for the emulated device, which is the host)
_DLPACK_DEVICES = {"cuda": (2, 13), "hip": (10,), "gpu-emulated": (1,)}


class DeviceArray:
    """An output left on the device: ``__cuda_array_interface__`` (for ``cupy.asarray``,
    ``torch.as_tensor(..., device="cuda")``), ``numpy()`` to copy it to the host. It owns its
    memory (freed with the object)."""

    def __init__(self, entry, ptr: int, shape: tuple[int, ...], dtype: np.dtype):
        self._entry = entry
        self.ptr = ptr
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3,
                "strides": None, "stream": None}

    def numpy(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        if self.nbytes:
            err = ctypes.create_string_buffer(512)
            if self._entry.download(out.ctypes.data, self.ptr, self.nbytes, err, len(err)):
                raise SofieError(f"copying a device array to the host failed: {err.value.decode(errors='replace')}")
        return out

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"<sofie_root DeviceArray {self.dtype.name}{list(self.shape)} ({self._entry.backend})>"

    def __del__(self) -> None:
        if getattr(self, "ptr", None):
            self._entry.free(self.ptr, self.nbytes)
            self.ptr = 0


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DL_KIND = {0: "i", 1: "u", 2: "f", 6: "b"}


def _dlpack_view(obj, name: str, backend: str) -> tuple[int, tuple[int, ...], np.dtype, object]:
    """(pointer, shape, dtype, capsule kept alive for the call) of a DLPack tensor."""
    dev_type = int(obj.__dlpack_device__()[0])
    if dev_type not in _DLPACK_DEVICES[backend]:
        raise InputError(f"input {name!r}: a DLPack tensor on device type {dev_type}, which the {backend} backend "
                         f"cannot read (give a numpy array, or a tensor on the device)")
    capsule = obj.__dlpack__()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    t = _DLTensor.from_address(get(capsule, b"dltensor"))  # DLManagedTensor starts with its DLTensor
    shape = tuple(int(t.shape[k]) for k in range(t.ndim))
    kind = _DL_KIND.get(t.dtype.code)
    if kind is None or t.dtype.lanes != 1:
        raise InputError(f"input {name!r}: DLPack element type code {t.dtype.code} is not supported")
    dtype = np.dtype("bool") if kind == "b" else np.dtype(f"{kind}{t.dtype.bits // 8}")
    if t.strides:
        want = 1
        for k in reversed(range(t.ndim)):
            if shape[k] != 1 and int(t.strides[k]) != want:
                raise InputError(f"input {name!r}: the device tensor is not C-contiguous; make it contiguous first")
            want *= shape[k]
    return int(t.data or 0) + int(t.byte_offset), shape, dtype, capsule


def _cai_view(obj, name: str) -> tuple[int, tuple[int, ...], np.dtype, object]:
    cai = obj.__cuda_array_interface__
    shape = tuple(int(d) for d in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    if strides is not None:
        want = dtype.itemsize
        for k in reversed(range(len(shape))):
            if shape[k] != 1 and int(strides[k]) != want:
                raise InputError(f"input {name!r}: the device array is not C-contiguous; make it contiguous first")
            want *= shape[k]
    return int(cai["data"][0] or 0), shape, dtype, obj


def is_device_array(obj) -> bool:
    return not isinstance(obj, np.ndarray) and (hasattr(obj, "__cuda_array_interface__")
                                                or hasattr(obj, "__dlpack_device__"))


class GpuModel(Model):
    """A model compiled for a GPU backend; see the module docstring for what ``infer`` takes."""

    def __init__(self, graph: Graph, passes: Iterable[str] | None = None, *, backend: str | None = None,
                 _profile: bool = False):
        from ..codegen.emitter import content_hash
        from ..ops.custom import graph_fingerprint
        from .build import load_model
        from .codegen import check_supported, generate_gpu

        if _profile:
            raise SofieError(f"profiling is not available for the {backend} backend")
        t0 = time.perf_counter()
        self._backend = str(backend)
        self.graph = run_passes(graph, [p for p in DEFAULT if p not in CPU_ONLY] if passes is None else passes)
        g = self.graph
        check_supported(g, self._backend)  # before any build: the list of what the GPU cannot run
        blob_probe = b"".join(np.require(a, requirements="C").tobytes() for a in g.initializers.values())
        meta = sorted((k, v) for k, v in g.metadata.items() if k != "source")
        self.hash = content_hash(str(g) + repr(meta) + graph_fingerprint(g), blob_probe)
        self._generated = generate_gpu(g, f"sofie_{self.hash}{_SUFFIX[self._backend]}", self._backend)
        self._generated.data_symbols = {}
        # the Session uploads a copy of the blob; Model._blob rebuilds it from the graph when asked
        blob = self._generated.weight_blob(g)
        self._entry = load_model(self._generated.namespace, self._generated.source, self._backend)
        self.build_seconds = self._entry.build_seconds
        self._err = ctypes.create_string_buffer(1024)
        ptr = self._entry.create(blob.ctypes.data if blob.size else None, blob.size, self._err, len(self._err))
        del blob
        if not ptr:
            raise SofieError(f"creating the {self._backend} session failed: {self._err.value.decode(errors='replace')}")
        self._session = ptr
        import threading

        self._lock = threading.Lock()
        self._symbols = self._generated.symbols
        self._in_infos = g.input_infos
        self._out_infos = g.output_infos
        self._checked_syms: dict[str, int] | None = None  # run-time limit checked for these sizes (Model.infer)
        from ..model import io_types

        self._io_types = io_types(g)
        self._prepare_calls()
        self.compile_seconds = time.perf_counter() - t0

    @property
    def runtime_source(self) -> str:
        from .build import runtime_text

        return runtime_text()

    def memory_stats(self, **symbols: int) -> dict[str, int]:
        """Device arena figures as for the CPU models (:meth:`Model.memory_stats`)."""
        from ..codegen.emitter import _is_ws

        values = {k: int(v) for k, v in symbols.items()}
        missing = [s for s in self._symbols if s not in values]
        if missing:
            raise InputError(f"memory_stats: give a value for each of the model's symbols {missing}")
        stats = self._generated.arena.stats(values, workspace=_is_ws) if self._generated.arena else {}
        stats["weight_bytes"] = self._generated.weight_bytes
        return stats

    def profile(self, *arrays: object, repeat: int = 100):
        raise SofieError(f"profile() is not available for the {self._backend} backend")

    def infer(self, *arrays: object, out=None, **named: object):
        """Run the model. numpy inputs: numpy outputs (copies to and from the device), written
        into ``out`` when given (as :meth:`Model.infer`). Device inputs (``__cuda_array_interface__``
        or DLPack, of the model's exact dtypes, C-contiguous): :class:`DeviceArray` outputs,
        nothing copied."""
        if out is not None and not isinstance(out, (list, tuple)) and "out" in self.graph.inputs:
            named, out = {**named, "out": out}, None  # a model input called "out", given by name
        args = list(arrays) if (not named and len(arrays) == len(self._in_infos)) else self._collect(arrays, named)
        if not any(is_device_array(a) for a in args):
            return super().infer(*args, out=out)
        if out is not None:
            raise InputError("out= takes numpy arrays for numpy inputs; with device inputs the outputs are "
                             "new DeviceArrays")
        return self._infer_device(args)

    def _infer_device(self, args: list[object]) -> list[DeviceArray]:
        syms: dict[str, int] = {}
        ptrs, keep = [], []
        for info, a in zip(self._in_infos, args):
            if not is_device_array(a):
                raise InputError(f"input {info.name!r}: give either all inputs on the device or none "
                                 f"(got a {type(a).__name__} among device arrays)")
            if hasattr(a, "__cuda_array_interface__"):
                ptr, shape, dtype, hold = _cai_view(a, info.name)
            else:
                ptr, shape, dtype, hold = _dlpack_view(a, info.name, self._backend)
            if dtype != info.dtype.numpy:
                raise InputError(f"input {info.name!r} expects {info.dtype.name}, got a device array of {dtype.name} "
                                 "(device inputs are not converted: cast them first)")
            self._bind(info, shape, syms)
            ptrs.append(ptr)
            keep.append(hold)
        outs = []
        for info in self._out_infos:
            shape = tuple(d.evaluate(syms) if isinstance(d, Dim) else int(d) for d in info.shape)
            nbytes = int(np.prod(shape, dtype=np.int64)) * info.dtype.itemsize
            ptr = self._entry.alloc(nbytes, self._err, len(self._err)) if nbytes else 0
            if nbytes and not ptr:
                raise SofieError(f"allocating output {info.name!r}: {self._err.value.decode(errors='replace')}")
            outs.append(DeviceArray(self._entry, ptr or 0, shape, info.dtype.numpy))
        n_sym = max(1, len(self._symbols))
        sym_arr = (ctypes.c_int64 * n_sym)(*[syms[s] for s in self._symbols])
        in_arr = (ctypes.c_void_p * max(1, len(ptrs)))(*ptrs)
        out_arr = (ctypes.c_void_p * max(1, len(outs)))(*[o.ptr for o in outs])
        with self._lock:
            rc = self._entry.run_device(self._session, sym_arr, in_arr, out_arr, self._err, len(self._err))
        del keep
        if rc:
            raise SofieError(f"inference failed: {self._err.value.decode(errors='replace')}")
        return outs
