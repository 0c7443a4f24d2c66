"""ONNX Runtime timed from a C++ loop, through its C API: what a C++ event loop that embeds ONNX
Runtime pays per call, with no Python in it.

The per-operator table compares the generated ``run`` called from a C++ loop with ONNX Runtime;
from Python, ORT's I/O binding carries a ~3-4 us Python call that the table subtracts as an
estimate ("ORT net"). This module removes the estimate: it loads the ``libonnxruntime.so`` that
the onnxruntime wheel ships (``onnxruntime/capi``), creates the session and the input and output
``OrtValue`` s once (over the caller's arrays: outputs preallocated, as with I/O binding), and
times ``OrtApi::Run`` called ``n`` times from a loop compiled by cling, like ``bench.CppLoop``.

The wheel has the library but not its header. ``OrtApi`` is a table of function pointers that
ONNX Runtime only ever appends to (its C API is ABI-stable across releases: a program built
against version 1 of the API runs on every later library), so the few functions used here are
taken from the table by their fixed positions, ``_API`` below, and the table is requested at
API version 10 (onnxruntime 1.10, which has all of them). Each one is checked by use: a status is read back through ``GetErrorMessage``, the
session must load, and the outputs of a timed run are compared with ORT's Python results by the
caller (``ops.py`` checks them before timing).

    python benchmarks/ort_capi.py        # the fixed cost of a call: Identity on one float
"""

from __future__ import annotations

import ctypes
import glob
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: the C API version requested (onnxruntime 1.10; every function below exists there)
_API_VERSION = 10
#: positions in ONNX Runtime's ``OrtApi`` table (onnxruntime_c_api.h; a position never changes)
_API = {"CreateStatus": 0, "GetErrorMessage": 2, "CreateEnv": 3, "CreateSessionFromArray": 8, "Run": 9,
        "CreateSessionOptions": 10, "SetSessionLogSeverityLevel": 22, "SetIntraOpNumThreads": 24,
        "SetInterOpNumThreads": 25, "CreateTensorWithDataAsOrtValue": 49, "CreateCpuMemoryInfo": 69,
        "ReleaseStatus": 93, "ReleaseMemoryInfo": 94, "ReleaseSession": 95, "ReleaseValue": 96,
        "ReleaseSessionOptions": 100, "RunWithBinding": 133, "CreateIoBinding": 134, "ReleaseIoBinding": 135,
        "BindInput": 136, "BindOutput": 137}
_ORT_LOGGING_LEVEL_ERROR = 3
_ORT_ARENA_ALLOCATOR, _ORT_MEM_TYPE_DEFAULT = 1, 0

_LOOP_CODE = r"""
#include <chrono>
#include <cstddef>
namespace sofie_bench_ort {
// OrtApi::RunWithBinding and OrtApi::Run as the C API declares them (an OrtStatus* result: null on success)
using run_binding_fn = void *(*)(void *, const void *, const void *);
using run_fn = void *(*)(void *, const void *, const char *const *, const void *const *, std::size_t,
                         const char *const *, std::size_t, void **);
// Seconds for n calls of RunWithBinding; a failing call stops the loop and hands its status back in *failed.
inline double loop_binding(void *run, void *session, void *binding, long n, void **failed)
{
   auto r = reinterpret_cast<run_binding_fn>(run);
   *failed = nullptr;
   auto t0 = std::chrono::steady_clock::now();
   for (long i = 0; i < n; ++i) {
      if (void *status = r(session, nullptr, binding)) {
         *failed = status;
         break;
      }
   }
   return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
// The same with Run and preallocated outputs.
inline double loop_run(void *run, void *session, const char *const *in_names, const void *const *in,
                       std::size_t n_in, const char *const *out_names, void **out, std::size_t n_out, long n,
                       void **failed)
{
   auto r = reinterpret_cast<run_fn>(run);
   *failed = nullptr;
   auto t0 = std::chrono::steady_clock::now();
   for (long i = 0; i < n; ++i) {
      if (void *status = r(session, nullptr, in_names, in, n_in, out_names, n_out, out)) {
         *failed = status;
         break;
      }
   }
   return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}
"""


def library_path() -> Path | None:
    """The C API library inside the installed onnxruntime wheel, or None (older wheels lack it)."""
    import onnxruntime

    found = sorted(glob.glob(str(Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime.so*")))
    return Path(found[-1]) if found else None


class OrtCError(RuntimeError):
    """ONNX Runtime's C API returned an error status (its message is the exception's)."""


class OrtCLoop:
    """ONNX Runtime sessions driven through the C API, timed from a C++ loop."""

    def __init__(self, lib: Path | None = None) -> None:
        from sofie_root.jit import cling

        lib = lib or library_path()
        if lib is None:
            raise OrtCError("this onnxruntime wheel has no libonnxruntime.so (its C API library)")
        self._lib = ctypes.CDLL(str(lib))
        self._lib.OrtGetApiBase.restype = ctypes.POINTER(ctypes.c_void_p * 2)
        base = self._lib.OrtGetApiBase().contents
        get_api = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)(base[0])
        version = ctypes.CFUNCTYPE(ctypes.c_char_p)(base[1])().decode()
        api = get_api(_API_VERSION)
        if not api:
            raise OrtCError(f"libonnxruntime {version} does not offer C API version {_API_VERSION}")
        self.version = version
        table = ctypes.cast(api, ctypes.POINTER(ctypes.c_void_p))
        self._ptr = {name: table[i] for name, i in _API.items()}
        st = ctypes.c_void_p
        f = ctypes.CFUNCTYPE
        P = ctypes.c_void_p
        self._message = f(ctypes.c_char_p, P)(self._ptr["GetErrorMessage"])
        self._release_status = f(None, P)(self._ptr["ReleaseStatus"])
        # the positions are checked by use: a status made by CreateStatus reads back through GetErrorMessage
        probe = f(st, ctypes.c_int, ctypes.c_char_p)(self._ptr["CreateStatus"])(1, b"sofie_root probe")
        if self._message(probe) != b"sofie_root probe":
            raise OrtCError(f"libonnxruntime {version}: the C API table is not laid out as expected")
        self._release_status(probe)
        self._create_env = f(st, ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(P))(self._ptr["CreateEnv"])
        self._create_options = f(st, ctypes.POINTER(P))(self._ptr["CreateSessionOptions"])
        self._set_int = {k: f(st, P, ctypes.c_int)(self._ptr[k]) for k in
                         ("SetSessionLogSeverityLevel", "SetIntraOpNumThreads", "SetInterOpNumThreads")}
        self._create_session = f(st, P, ctypes.c_char_p, ctypes.c_size_t, P, ctypes.POINTER(P))(
            self._ptr["CreateSessionFromArray"])
        self._cpu_info = f(st, ctypes.c_int, ctypes.c_int, ctypes.POINTER(P))(self._ptr["CreateCpuMemoryInfo"])
        self._tensor = f(st, P, P, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int64), ctypes.c_size_t, ctypes.c_int,
                         ctypes.POINTER(P))(self._ptr["CreateTensorWithDataAsOrtValue"])
        self._release = {k: f(None, P)(self._ptr[k]) for k in
                         ("ReleaseMemoryInfo", "ReleaseSession", "ReleaseValue", "ReleaseSessionOptions")}
        self._env = P()
        self._check(self._create_env(_ORT_LOGGING_LEVEL_ERROR, b"sofie_root_bench", ctypes.byref(self._env)))
        self._info = P()
        self._check(self._cpu_info(_ORT_ARENA_ALLOCATOR, _ORT_MEM_TYPE_DEFAULT, ctypes.byref(self._info)))
        root = cling.root()
        cling._declare(root, _LOOP_CODE, "the ONNX Runtime C API benchmark loop")
        addr = int(root.gInterpreter.ProcessLine("(long long)(&sofie_bench_ort::loop_run);"))
        self._loop_run = f(ctypes.c_double, P, P, P, P, ctypes.c_size_t, P, P, ctypes.c_size_t, ctypes.c_long,
                           ctypes.POINTER(P))(addr)
        addr = int(root.gInterpreter.ProcessLine("(long long)(&sofie_bench_ort::loop_binding);"))
        self._loop_binding = f(ctypes.c_double, P, P, P, ctypes.c_long, ctypes.POINTER(P))(addr)
        self._create_binding = f(st, P, ctypes.POINTER(P))(self._ptr["CreateIoBinding"])
        self._bind = {k: f(st, P, ctypes.c_char_p, P)(self._ptr[k]) for k in ("BindInput", "BindOutput")}
        self._release["ReleaseIoBinding"] = f(None, P)(self._ptr["ReleaseIoBinding"])

    def _check(self, status) -> None:
        if status:
            msg = self._message(status).decode(errors="replace")
            self._release_status(status)
            raise OrtCError(msg)

    def session(self, model: bytes, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> OrtCSession:
        """A one-thread session of ``model`` (serialised ONNX) bound to ``inputs`` and to the
        preallocated ``outputs`` (C-contiguous numpy arrays, by graph name; outputs of the shapes
        ORT produces)."""
        opts = ctypes.c_void_p()
        self._check(self._create_options(ctypes.byref(opts)))
        try:
            for k, v in (("SetSessionLogSeverityLevel", _ORT_LOGGING_LEVEL_ERROR), ("SetIntraOpNumThreads", 1),
                         ("SetInterOpNumThreads", 1)):
                self._check(self._set_int[k](opts, v))
            sess = ctypes.c_void_p()
            self._check(self._create_session(self._env, model, len(model), opts, ctypes.byref(sess)))
        finally:
            self._release["ReleaseSessionOptions"](opts)
        return OrtCSession(self, sess, inputs, outputs)

    def value(self, a: np.ndarray) -> ctypes.c_void_p:
        from onnx.helper import np_dtype_to_tensor_dtype

        if not a.flags.c_contiguous:
            raise ValueError("arrays bound to an ORT C API session must be C-contiguous")
        shape = (ctypes.c_int64 * max(1, a.ndim))(*a.shape)
        v = ctypes.c_void_p()
        self._check(self._tensor(self._info, a.ctypes.data, a.nbytes, shape, a.ndim,
                                 np_dtype_to_tensor_dtype(a.dtype), ctypes.byref(v)))
        return v


class OrtCSession:
    """One session with its inputs and outputs bound; :meth:`prepare` gives a timer like
    ``bench.CppLoop.prepare``."""

    def __init__(self, owner: OrtCLoop, sess, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]):
        self._o = owner
        self._sess = sess
        self.inputs, self.outputs = inputs, outputs  # the buffers the values point into
        in_vals = [owner.value(a) for a in inputs.values()]
        out_vals = [owner.value(a) for a in outputs.values()]
        self._values = in_vals + out_vals
        self._in_names = (ctypes.c_char_p * len(inputs))(*[k.encode() for k in inputs])
        self._out_names = (ctypes.c_char_p * len(outputs))(*[k.encode() for k in outputs])
        self._in = (ctypes.c_void_p * len(inputs))(*[v.value for v in in_vals])
        self._out = (ctypes.c_void_p * len(outputs))(*[v.value for v in out_vals])
        self._binding = ctypes.c_void_p()
        owner._check(owner._create_binding(sess, ctypes.byref(self._binding)))
        for k, v in zip(inputs, in_vals):
            owner._check(owner._bind["BindInput"](self._binding, k.encode(), v))
        for k, v in zip(outputs, out_vals):
            owner._check(owner._bind["BindOutput"](self._binding, k.encode(), v))

    def run(self, n: int, binding: bool = True) -> float:
        """Seconds for ``n`` calls of RunWithBinding (or of Run)."""
        failed = ctypes.c_void_p()
        if binding:
            t = self._o._loop_binding(self._o._ptr["RunWithBinding"], self._sess, self._binding, n,
                                      ctypes.byref(failed))
        else:
            t = self._o._loop_run(self._o._ptr["Run"], self._sess, self._in_names, self._in, len(self._in),
                                  self._out_names, self._out, len(self._out), n, ctypes.byref(failed))
        self._o._check(failed.value)
        return t

    def prepare(self, budget: float) -> Callable[[], float]:
        """A function timing one repetition (about ``budget`` seconds): seconds per call."""
        n = 1
        while True:
            t = self.run(n)
            if t > budget / 4:
                break
            n *= 4
        n = max(1, int(n * budget / t))
        return lambda: self.run(n) / n

    def close(self) -> None:
        if self._binding:
            self._o._release["ReleaseIoBinding"](self._binding)
            self._binding = None
        for v in self._values:
            self._o._release["ReleaseValue"](v)
        self._values = []
        if self._sess:
            self._o._release["ReleaseSession"](self._sess)
            self._sess = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone
            pass


def main(argv: list[str]) -> int:
    from onnx import TensorProto, helper

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    loop = OrtCLoop()
    print(f"onnxruntime C API {loop.version} from {library_path()}")
    for shape in ([1], [1, 128], [256, 128]):
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "floor",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 22)])
        m.ir_version = 10
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        y = np.empty_like(x)
        s = loop.session(m.SerializeToString(), {"x": x}, {"y": y})
        rep = s.prepare(0.05)
        t = statistics.median(rep() for _ in range(7))
        t_run = statistics.median(s.run(20000, binding=False) / 20000 for _ in range(7))
        if not np.array_equal(x, y):
            raise AssertionError("Identity through the C API did not copy its input")
        print(f"Identity {shape}: {t * 1e9:.0f} ns per RunWithBinding, {t_run * 1e9:.0f} ns per Run")
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
