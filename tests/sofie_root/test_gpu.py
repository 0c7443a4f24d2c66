"""The GPU backend (sofie_root.gpu) without a GPU: every kernel through the host emulation
(``backend="gpu-emulated"``) against onnxruntime and the ONNX node cases, the generated CUDA and
HIP sources compiled by nvcc / hipcc where those are installed, errors, device-array inputs, and
the GPU path in a process where ROOT, uproot and awkward cannot be imported.

With SOFIE_GPU_SLOW=1 it also compiles every model and every node-case group
with nvcc and hipcc (minutes); on a machine with a GPU, ``tools/gpu_check.sh`` runs them on the device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import sofie_root
from benchmarks import hep_models
from sofie_root.errors import InputError, SofieError, UnsupportedOperatorError
from sofie_root.gpu import build

from . import gpu_node_cases as nc
from .test_node_conformance import _exclusions

#: the backend the model and node-case tests run on: the emulation, or the device in make gpu-check
EMU = os.environ.get("SOFIE_GPU_TEST_BACKEND", "gpu-emulated")
ON_DEVICE = EMU != "gpu-emulated"
# the CPU end-to-end tolerances (test_end_to_end.py)
RTOL, ATOL = 1e-4, 1e-5
#: the models checked through the emulation: every benchmark model (a corpus model added to
#: hep_models.MODELS is picked up here); the first two are also compiled by nvcc in make test
MODELS = sorted(hep_models.MODELS)
NVCC_MODELS = ["dense", "jet"]
SLOW = bool(os.environ.get("SOFIE_GPU_SLOW"))


@pytest.fixture(scope="module")
def exported() -> dict[str, Path]:
    return {}  # filled lazily by _model_path: each model is exported once per module


def _model_path(exported: dict[str, Path], name: str, tmp_path_factory) -> Path:
    if name not in exported:
        path = tmp_path_factory.mktemp("gpu_onnx") / f"{name}.onnx"
        hep_models.export(name, path)
        exported[name] = path
    return exported[name]


@pytest.mark.parametrize("name", MODELS)
def test_model_matches_onnxruntime(name, exported, tmp_path_factory) -> None:
    import onnxruntime as ort

    path = _model_path(exported, name, tmp_path_factory)
    model = sofie_root.compile(path, backend=EMU)
    assert model.backend == EMU and type(model).__name__ == "GpuModel"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # the batch dimension stays symbolic
        xs = hep_models.inputs(name, batch, np.random.default_rng(batch))
        want = sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})
        got = model.infer(*xs)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def _node_groups():
    cases, _ = nc.gpu_cases(set(_exclusions()))
    return [pytest.param(g, id=f"{g[0].name}+{len(g) - 1}") for g in nc.groups(cases, size=120)]


@pytest.mark.parametrize("group", _node_groups())
def test_node_cases(group) -> None:
    """Every ONNX node case of the operators the GPU backend runs (the CPU backends' exclusions
    aside), many per build, each compared with its own expected outputs and tolerance."""
    model = sofie_root.compile(nc.merge(group), backend=EMU)
    got = model.infer(*[x for c in group for x in c.inputs])
    failures, pos = [], 0
    for c in group:
        why = nc.compare(c, got[pos:pos + len(c.outputs)])
        pos += len(c.outputs)
        if why:
            failures.append(f"{c.name}: {why}")
    assert not failures, "\n".join(failures)


def test_node_cases_all_claimed() -> None:
    """No node case of a GPU operator is refused by the GPU backend (every refusal is a gap)."""
    cases, refused = nc.gpu_cases(set(_exclusions()))
    assert len(cases) > 500
    assert not refused, refused


def _tiny(op: str = "Relu", **attrs) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="the_node", **attrs)], "tiny", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_unsupported_operator_listed_at_compile_time() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("CumSum", ["r", "ax"], ["y"], name="cs")]
    g = helper.make_graph(nodes, "m", [x], [y], [helper.make_tensor("ax", TensorProto.INT64, [], [1])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    before = build.native.stats["compiles"]
    with pytest.raises(UnsupportedOperatorError, match=r"CumSum.*'cs'.*GPU backend \(gpu-emulated\)"):
        sofie_root.compile(model, backend=EMU)
    assert build.native.stats["compiles"] == before  # refused before anything was built


class _CudaArray:
    """A stand-in for a device array (CuPy, PyTorch): in the emulation, device memory is host memory."""

    def __init__(self, a: np.ndarray):
        self.a = a
        self.__cuda_array_interface__ = {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False),
                                         "version": 3, "strides": None}


class _DLPackArray:
    def __init__(self, a: np.ndarray):
        self.a = a

    def __dlpack__(self, stream=None):
        return self.a.__dlpack__()

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def _device_wrappers():
    if not ON_DEVICE:
        return (_CudaArray, _DLPackArray)
    torch = pytest.importorskip("torch")
    return (lambda a: torch.from_numpy(a).cuda(),)


def test_device_inputs_without_copies() -> None:
    model = sofie_root.compile(_tiny("Sigmoid"), backend=EMU)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    (host,) = model.infer(x)
    np.testing.assert_allclose(host, want, rtol=1e-6)
    for wrap in _device_wrappers():
        (dev,) = model.infer(wrap(x))
        assert type(dev).__name__ == "DeviceArray" and dev.shape == (5, 4)
        assert dev.__cuda_array_interface__["typestr"] == "<f4"
        np.testing.assert_array_equal(dev.numpy(), host)
        # an output can be an input again, still on the device
        (again,) = model.infer(dev)
        np.testing.assert_allclose(again.numpy(), 1 / (1 + np.exp(-want)), rtol=1e-5)
    if ON_DEVICE:
        return
    with pytest.raises(InputError, match=r"expects float32.*float64"):
        model.infer(_CudaArray(x.astype(np.float64)))
    with pytest.raises(InputError, match="not C-contiguous"):
        model.infer(_DLPackArray(np.asfortranarray(np.ones((4, 4), np.float32))))


def test_index_out_of_range_names_the_node() -> None:
    data = helper.make_tensor_value_info("d", TensorProto.FLOAT, [5, 3])
    idx = helper.make_tensor_value_info("i", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph([helper.make_node("Gather", ["d", "i"], ["y"], name="pick_rows")], "g", [data, idx], [y])
    model = sofie_root.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), backend=EMU)
    d = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(model.infer(d, np.array([4, -5]))[0], d[[4, 0]])
    with pytest.raises(SofieError, match=r"pick_rows.*index out of range"):
        model.infer(d, np.array([1, 5]))
    np.testing.assert_array_equal(model.infer(d, np.array([2, 1]))[0], d[[2, 1]])  # the session still works


def test_gpu_available_says_why() -> None:
    emu = sofie_root.gpu_available(EMU)
    assert emu and "emulated" in emu.reason
    cuda = sofie_root.gpu_available("cuda")
    if not cuda:
        assert cuda.reason and any(w in cuda.reason for w in ("driver", "device", "nvcc", "cuBLAS")), cuda.reason
    with pytest.raises(ValueError):
        sofie_root.gpu_available("opencl")


_CHILD = r"""
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ROOT", "cppyy", "uproot", "awkward"):
            raise ImportError(f"{name} is blocked in this test (a GPU node without ROOT)")
sys.meta_path.insert(0, Blocker())
import numpy as np, onnx
from onnx import TensorProto, helper
import sofie_root
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
w = helper.make_tensor("w", TensorProto.FLOAT, [3, 2], [1, 2, 3, 4, 5, 6])
g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Tanh", ["m"], ["y"])],
                      "g", [x], [y], [w])
m = sofie_root.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), backend="gpu-emulated")
a = np.arange(6, dtype=np.float32).reshape(2, 3)
out = m(a)
assert np.allclose(out, np.tanh(a @ np.arange(1, 7, dtype=np.float32).reshape(3, 2)), rtol=1e-6), out
print("cuda:", bool(sofie_root.gpu_available("cuda")), "emulated:", bool(sofie_root.gpu_available("gpu-emulated")))
assert not any(k.split(".")[0] in ("ROOT", "cppyy", "uproot", "awkward") for k in sys.modules)
print("OK")
"""


def test_gpu_path_without_root_uproot_awkward(tmp_path) -> None:
    env = dict(os.environ)
    env.pop("SOFIE_ROOT_LAZY", None)  # the eager ROOT start of `import sofie_root` must tolerate the failure
    env["SOFIE_ROOT_CACHE"] = str(tmp_path)
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(_CHILD)], capture_output=True, text=True, env=env,
                       cwd=root, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr


@pytest.mark.skipif(ON_DEVICE, reason="the emulated device's memory limit")
def test_out_of_device_memory(tmp_path) -> None:
    code = textwrap.dedent(r"""
        import numpy as np, onnx
        from onnx import TensorProto, helper
        import sofie_root
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 256])
        g = helper.make_graph([helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Sin", ["e"], ["y"])],
                              "g", [x], [y])
        m = sofie_root.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]),
                               backend="gpu-emulated")
        m(np.zeros((4, 256), np.float32))
        try:
            m(np.zeros((100000, 256), np.float32))
        except sofie_root.SofieError as e:
            print("ERROR:", e)
        print(m(np.zeros((4, 256), np.float32)).shape)
    """)
    env = dict(os.environ, SOFIE_ROOT_LAZY="1", SOFIE_ROOT_CACHE=str(tmp_path), SOFIE_GPU_EMULATED_MEMORY="2000000")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "out of device memory allocating" in r.stdout and "(4, 256)" in r.stdout, r.stdout


def test_save_and_load_with_gpu_backend(tmp_path) -> None:
    model = sofie_root.compile(_tiny("Softsign"), backend=EMU)
    model.save(tmp_path / "m.root")
    again = sofie_root.load(tmp_path / "m.root", backend=EMU)
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(again(x), x / (1 + np.abs(x)), rtol=1e-6)


def test_invalid_backend_names_the_choices() -> None:
    with pytest.raises(ValueError, match="gpu-emulated"):
        sofie_root.compile(_tiny(), backend="gpu")


# -- the CUDA and HIP sources, compiled where the compilers are ----------------------------------

def _need(backend: str) -> None:
    try:
        build._command(backend, compile_only=True)
    except SofieError as e:
        pytest.skip(f"{backend} compile check not run: {e}")


@pytest.mark.parametrize("name", MODELS if SLOW else NVCC_MODELS)
def test_nvcc_compiles_model(name, exported, tmp_path_factory) -> None:
    _need("cuda")
    model = sofie_root.compile(_model_path(exported, name, tmp_path_factory), backend=EMU)
    seconds = build.compile_check(model.source, model.namespace, "cuda", archs=["90"])
    print(f"nvcc sm_90 {name}: {seconds:.1f} s")


@pytest.mark.parametrize("name", MODELS if SLOW else ["dense"])
def test_hipcc_compiles_model(name, exported, tmp_path_factory) -> None:
    _need("hip")
    model = sofie_root.compile(_model_path(exported, name, tmp_path_factory), backend=EMU)
    seconds = build.compile_check(model.source, model.namespace, "hip", archs=["gfx90a"])
    print(f"hipcc gfx90a {name}: {seconds:.1f} s")


@pytest.mark.skipif(not SLOW, reason="slow mode only (SOFIE_GPU_SLOW=1): nvcc on every node-case group")
@pytest.mark.parametrize("group", _node_groups())
def test_nvcc_compiles_node_cases(group) -> None:
    _need("cuda")
    model = sofie_root.compile(nc.merge(group), backend=EMU)
    if hasattr(model, "_variants"):  # specialised on input values: compile the variant of the case's values
        model.infer(*[x for c in group for x in c.inputs])
        model = model._last
    build.compile_check(model.source, model.namespace, "cuda", archs=["90"])


def test_gpu_ops_listed() -> None:
    from sofie_root.gpu.emitters import gpu_ops

    ops = gpu_ops()
    for op in ("Gemm", "MatMul", "Conv", "LSTM", "GRU", "Softmax", "LayerNormalization", "TopK", "ScatterND",
               "GatherElements", "Where", "Expand", "sofie::FusedElementwise"):
        assert op in ops
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert {o for o in ops if "::" not in o} <= set(sofie_root.supported_ops())
