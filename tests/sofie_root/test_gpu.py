"""The GPU backend (sofie_root.gpu) without a GPU: every kernel through the host emulation
(``backend="gpu-emulated"``) against onnxruntime and the ONNX node cases, the generated CUDA and
HIP sources compiled by nvcc / hipcc where those are installed, errors, device-array inputs, and
the GPU path in a process where ROOT, uproot and awkward cannot be imported.

nvcc (sm_90) and hipcc (gfx90a) each compile every test model's source in one translation unit,
and one corpus model goes through the real fat-binary CUDA build; with SOFIE_GPU_SLOW=1 nvcc also
compiles every node-case group (about a minute of CPU). On a machine with a GPU,
``tools/gpu_check.sh`` runs the model and node-case tests on the device.
"""

from __future__ import annotations

import functools
import os
import re
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
try:  # the benchmark corpus (benchmarks/corpus.py: hep_models' five and more), where it exists
    from benchmarks import corpus as _corpus
except ImportError:
    _corpus = None
#: the models checked through the emulation: every corpus model (a model added to the corpus, or
#: to hep_models.MODELS without it, is picked up here); dense and jet are also compiled by nvcc
MODELS = sorted(_corpus.MODELS if _corpus is not None else hep_models.MODELS)
SLOW = bool(os.environ.get("SOFIE_GPU_SLOW"))


@pytest.fixture(scope="module")
def exported() -> dict[str, Path]:
    return {}  # filled lazily by _model_path: each model is exported once per module


def _model_path(exported: dict[str, Path], name: str, tmp_path_factory) -> Path:
    if name not in exported:
        if _corpus is not None:
            exported[name] = Path(_corpus.onnx_path(name))  # exports cached on disk by the corpus
        else:
            path = tmp_path_factory.mktemp("gpu_onnx") / f"{name}.onnx"
            hep_models.export(name, path)
            exported[name] = path
    return exported[name]


def _inputs(name: str, batch: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(batch)
    return _corpus.MODELS[name].inputs(batch, rng) if _corpus is not None else hep_models.inputs(name, batch, rng)


@pytest.mark.parametrize("name", MODELS)
def test_model_matches_onnxruntime(name, exported, tmp_path_factory) -> None:
    import onnxruntime as ort

    path = _model_path(exported, name, tmp_path_factory)
    model = sofie_root.compile(path, backend=EMU)
    assert model.backend == EMU and type(model).__name__ == "GpuModel"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # the batch dimension stays symbolic
        xs = _inputs(name, batch)
        want = sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})
        got = model.infer(*xs)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


@functools.cache
def _gpu_cases():
    return nc.gpu_cases(set(_exclusions()), check=False)  # (cases, {}): by op type only, for collection


def _node_groups():
    cases, _ = _gpu_cases()
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


def test_gemm_epilogue_fuses_bias_and_activation() -> None:
    """Gemm + activation runs as the GEMM and one epilogue kernel (beta * C, broadcast from each
    shape ONNX allows, plus the activation), matching onnxruntime."""
    import onnxruntime as ort
    from onnx import numpy_helper

    rng = np.random.default_rng(3)
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 5])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 5])
    branches = [((4,), "Relu", {}), ((1, 4), "Sigmoid", {"beta": 0.5}), ((3, 1), "LeakyRelu", {"alpha": 2.0}),
                ((3, 4), "Tanh", {"transB": 1}), ((), "Elu", {"beta": -1.5})]
    nodes, inits, outs = [], [], []
    for k, (c_shape, act, attrs) in enumerate(branches):
        x = "b" if c_shape in ((3, 1), (3, 4)) else "a"  # a C with 3 rows needs M = 3
        w_shape = (4, 5) if attrs.get("transB") else (5, 4)
        inits += [numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32), f"w{k}"),
                  numpy_helper.from_array(rng.standard_normal(c_shape).astype(np.float32), f"c{k}")]
        nodes += [helper.make_node("Gemm", [x, f"w{k}", f"c{k}"], [f"g{k}"], name=f"gemm{k}", **attrs),
                  helper.make_node(act, [f"g{k}"], [f"y{k}"], name=f"act{k}")]
        outs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, ["N" if x == "a" else 3, 4]))
    proto = helper.make_model(helper.make_graph(nodes, "epilogue", [a, b], outs, inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model = sofie_root.compile(proto, backend=EMU)
    fused = [n for n in model.graph.nodes if n.op_type == "FusedGemm"]
    assert len(fused) == len(branches), [n.op_type for n in model.graph.nodes]
    if not ON_DEVICE:
        assert model._generated.kernels == len(branches)  # one epilogue kernel per Gemm, none before it
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 6):
        xs = [rng.standard_normal((batch, 5)).astype(np.float32), rng.standard_normal((3, 5)).astype(np.float32)]
        want = sess.run(None, {"a": xs[0], "b": xs[1]})
        for g, w in zip(model.infer(*xs), want):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


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


def _gather_model() -> onnx.ModelProto:
    data = helper.make_tensor_value_info("d", TensorProto.FLOAT, [5, 3])
    idx = helper.make_tensor_value_info("i", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph([helper.make_node("Gather", ["d", "i"], ["y"], name="pick_rows")], "g", [data, idx], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


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
    model = sofie_root.compile(_gather_model(), backend=EMU)
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
    """Skip (a skip, not a pass; -ra prints the reason) where the compiler or cuBLAS is missing."""
    try:
        build._command(backend, compile_only=True)
    except SofieError as e:
        pytest.skip(f"{backend} compile check not run: {e}")


@pytest.fixture(scope="module")
def test_sources(exported, tmp_path_factory) -> list[tuple[str, str, str]]:
    """(label, namespace, generated source) of every GPU test model: each corpus model and the
    small models of this file. The source is the same for every GPU backend; the emulated build
    it comes with is cached (the model tests built it already)."""
    models = [(name, _model_path(exported, name, tmp_path_factory)) for name in MODELS]
    models += [(f"tiny {op}", _tiny(op, **attrs)) for op, attrs in
               (("Relu", {}), ("Sigmoid", {}), ("Softsign", {}), ("Elu", {"alpha": 0.5}))]
    models.append(("gather", _gather_model()))
    out = []
    for label, m in models:
        model = sofie_root.compile(m, backend="gpu-emulated")
        out.append((label, model.namespace, model.source))
    return out


def _compile_all(sources: list[tuple[str, str, str]], backend: str, arch: str) -> float:
    """Every source in one translation unit (the runtime header parsed once, one compiler start:
    2.6x less CPU time than a run per model); on a failure, each model alone, to name the culprits."""
    try:
        return build.compile_check([(ns, src) for _, ns, src in sources], backend=backend, archs=[arch])
    except SofieError:
        failures = []
        for label, ns, src in sources:
            try:
                build.compile_check(src, ns, backend, archs=[arch])
            except SofieError as e:
                failures.append(f"--- {label}:\n{e}")
        assert failures, "the models compile one by one but not together (a clash between namespaces?)"
        raise AssertionError(f"{backend} ({arch}) cannot compile {len(failures)} of {len(sources)} test models:\n"
                             + "\n".join(failures)) from None


def test_nvcc_compiles_every_test_model(test_sources) -> None:
    """nvcc (sm_90, object file) compiles the generated CUDA source of every corpus model and
    every small test model of this file."""
    _need("cuda")
    seconds = _compile_all(test_sources, "cuda", "90")
    print(f"nvcc sm_90: {len(test_sources)} models in one translation unit, {seconds:.1f} s")


def test_hipcc_compiles_every_test_model(test_sources) -> None:
    """hipcc (gfx90a, object file) compiles the same sources for AMD. Without hipBLAS (Debian's
    hipcc has none) the GEMMs compile to the runtime's plain GEMM kernel, as the hip build does
    when hipBLAS is not asked for (SOFIE_GPU_NO_VENDOR_BLAS)."""
    _need("hip")
    seconds = _compile_all(test_sources, "hip", "gfx90a")
    print(f"hipcc gfx90a: {len(test_sources)} models in one translation unit, {seconds:.1f} s")


def test_cuda_fat_binary_build_of_a_corpus_model(exported, tmp_path_factory, monkeypatch) -> None:
    """The real build of compile(backend="cuda") with the default architectures: a library with
    sm_80 and sm_90 code and compute_90 PTX, cuBLAS linked, which loads; without a GPU, creating
    the session is a clear SofieError (with one, the outputs match onnxruntime)."""
    _need("cuda")
    import onnxruntime as ort

    monkeypatch.delenv("SOFIE_ROOT_CUDA_ARCHS", raising=False)
    name = "jet" if "jet" in MODELS else MODELS[0]  # Conv1D, LSTM, GEMMs: kernels and cuBLAS
    path = _model_path(exported, name, tmp_path_factory)
    try:
        model = sofie_root.compile(path, backend="cuda")
    except SofieError as e:
        assert not sofie_root.gpu_available("cuda")
        assert re.search(r"cuda session failed: looking for a CUDA device: CUDA error \d+", str(e)), e
        model = None
    # the library was built and loaded before the session failed; its namespace is the emulated
    # model's but for the backend suffix (the same graph hash)
    namespace = sofie_root.compile(path, backend="gpu-emulated").namespace.removesuffix("_emu") + "_cu"
    images = build.fatbin_images(build._loaded[(namespace, "cuda")].library)
    assert {("elf", 80), ("elf", 90), ("ptx", 90)} <= set(images), images
    if model is not None:
        xs = _inputs(name, 3)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want = sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})
        for g, w in zip(model.infer(*xs), want):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


@pytest.mark.skipif(not SLOW, reason="slow mode only (SOFIE_GPU_SLOW=1): nvcc on every node-case group (~1 min CPU)")
def test_nvcc_compiles_node_cases() -> None:
    _need("cuda")
    sources = []
    for group in [p.values[0] for p in _node_groups()]:
        model = sofie_root.compile(nc.merge(group), backend=EMU)
        if hasattr(model, "_variants"):  # specialised on input values: compile the variant of the case's values
            model.infer(*[x for c in group for x in c.inputs])
            model = model._last
        sources.append((group[0].name, model.namespace, model.source))
    _compile_all(sources, "cuda", "90")


def test_gpu_ops_listed() -> None:
    from sofie_root.gpu.emitters import gpu_ops

    ops = gpu_ops()
    for op in ("Gemm", "MatMul", "Conv", "LSTM", "GRU", "Softmax", "LayerNormalization", "TopK", "ScatterND",
               "GatherElements", "Where", "Expand", "sofie::FusedElementwise"):
        assert op in ops
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert {o for o in ops if "::" not in o} <= set(sofie_root.supported_ops())


def test_rdataframe_functor_refuses_a_gpu_model() -> None:
    model = sofie_root.compile(_tiny(), backend=EMU)
    with pytest.raises(SofieError, match="compile it with backend='cling' or 'native'"):
        sofie_root.functor(model, ["a", "b", "c", "d"])


def test_cli_check_with_gpu_backend(tmp_path, capsys) -> None:
    from sofie_root.cli import main

    path = tmp_path / "m.onnx"
    onnx.save(_tiny("Elu", alpha=0.5), path)
    assert main(["check", str(path), "--backend", EMU]) == 0
    assert EMU in capsys.readouterr().out
