"""The native backend (sofie_root.jit.native): models built by the system C++ compiler agree with
cling and onnxruntime, the on-disk cache is reused across processes and rebuilt when corrupt,
native models work inside RDataFrame through the cling proxy, and the errors are clear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import sofie_root
from sofie_root.errors import CompilationError, SofieError
from sofie_root.jit import native

from .ort_check import make_model, run_ort, value_info

ROOT_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT_DIR))

try:
    native.compiler()
    HAVE_CXX = True
except CompilationError as e:
    HAVE_CXX, _why = False, str(e)

pytestmark = pytest.mark.skipif(not HAVE_CXX, reason="no C++ compiler on this machine (CI has one)")


@pytest.fixture(autouse=True, scope="module")
def cache(tmp_path_factory):
    """A private library cache, so the tests neither use nor fill the user's."""
    path = tmp_path_factory.mktemp("native_cache")
    old = os.environ.get("SOFIE_ROOT_CACHE")
    os.environ["SOFIE_ROOT_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SOFIE_ROOT_CACHE", None)
    else:
        os.environ["SOFIE_ROOT_CACHE"] = old


def assert_close(got, ref, rtol=1e-4, atol=1e-5):
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        r = np.asarray(r)
        assert g.shape == r.shape and g.dtype == r.dtype
        if r.dtype.kind == "f":
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(g, r)


@pytest.fixture(scope="module")
def hep_paths(tmp_path_factory):
    from benchmarks import hep_models

    d = tmp_path_factory.mktemp("hep")
    paths = {}
    for name in ("dense", "jet", "cnn"):
        paths[name] = d / f"{name}.onnx"
        hep_models.export(name, paths[name])
    return paths


@pytest.mark.parametrize("name", ["dense", "jet", "cnn"])
def test_hep_models_agree_with_cling_and_onnxruntime(hep_paths, name):
    from benchmarks import hep_models

    path = hep_paths[name]
    nat = sofie_root.compile(path, backend="native")
    cl = sofie_root.compile(path, backend="cling")
    assert (nat.backend, cl.backend) == ("native", "cling")
    assert nat.namespace != cl.namespace and nat.namespace.endswith("_nat")
    assert nat.source.replace(nat.namespace, "NS") == cl.source.replace(cl.namespace, "NS")
    proto = onnx.load(path)
    rng = np.random.default_rng(1)
    for batch in (1, 64):  # the batch dimension is symbolic in these exports
        arrays = hep_models.inputs(name, batch, rng)
        ref = run_ort(proto, *arrays)
        got = nat.infer(*arrays)
        assert_close(got, ref)
        assert_close(got, cl.infer(*arrays), rtol=1e-5, atol=1e-6)


def nonzero_model():
    nodes = [helper.make_node("NonZero", ["x"], ["idx"]),
             helper.make_node("Relu", ["x"], ["r"])]
    return make_model(nodes, [value_info("x", np.float32, ["N", 5])],
                      [value_info("idx", np.int64, None), value_info("r", np.float32, None)], opset=13)


def test_data_dependent_nonzero():
    proto = nonzero_model()
    nat = sofie_root.compile(proto, backend="native")
    rng = np.random.default_rng(2)
    for batch in (1, 7, 64):
        x = np.where(rng.random((batch, 5)) > 0.6, rng.standard_normal((batch, 5)), 0).astype(np.float32)
        assert_close(nat.infer(x), run_ort(proto, x))


def test_profiled_model(hep_paths):
    from benchmarks import hep_models

    nat = sofie_root.compile(hep_paths["dense"], backend="native")
    x = hep_models.inputs("dense", 4, np.random.default_rng(3))
    timed = sofie_root.Model(nat.graph, passes=[], backend="native", _profile=True)
    assert timed.backend == "native" and timed._entry.profile is not None
    assert_close(timed.infer(*x), run_ort(onnx.load(hep_paths["dense"]), *x))
    rows = nat.profile(*x, repeat=3)
    assert sorted(r[0] for r in rows) == sorted(n.name or n.outputs[0] for n in nat.graph.nodes)
    assert all(r[2] >= 0 for r in rows) and sum(r[2] for r in rows) > 0


def test_error_from_generated_code_becomes_an_exception():
    # an out-of-range Gather index throws inside the library; it must come back as an error code
    nodes = [helper.make_node("Gather", ["x", "i"], ["y"], axis=1)]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 4]), value_info("i", np.int64, [2])],
                       [value_info("y", np.float32, None)], opset=13)
    nat = sofie_root.compile(proto, backend="native")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert_close(nat.infer(x, np.array([3, -1])), run_ort(proto, x, np.array([3, -1])))
    with pytest.raises(SofieError, match="inference failed"):
        nat.infer(x, np.array([0, 9]))
    assert_close(nat.infer(x, np.array([1, 2])), run_ort(proto, x, np.array([1, 2])))  # still usable


def small_model(seed: int = 5):
    w = np.random.default_rng(seed).standard_normal((3, 2)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])]
    return make_model(nodes, [value_info("x", np.float32, ["N", 3])], [value_info("y", np.float32, ["N", 2])],
                      initializers={"w": w})


_CHILD = r"""
import json, sys
import numpy as np
import sofie_root
from sofie_root.jit import native
m = sofie_root.compile(sys.argv[1], backend="native")
x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
print(json.dumps({"stats": native.stats, "library": m._entry.library, "y": m(x).tolist()}))
"""


def _child(path: Path, cache: Path) -> dict:
    env = dict(os.environ, SOFIE_ROOT_CACHE=str(cache))
    r = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_cache_reused_by_a_fresh_process_and_rebuilt_when_corrupt(tmp_path):
    proto = small_model()
    path = tmp_path / "small.onnx"
    onnx.save(proto, path)
    cache = tmp_path / "cache"
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    (ref,) = run_ort(proto, x)

    first = _child(path, cache)
    assert first["stats"] == {"compiles": 1, "cache_hits": 0, "rejected": 0}
    lib = Path(first["library"])
    assert lib.parent == cache and lib.exists()
    mtime = lib.stat().st_mtime_ns
    np.testing.assert_allclose(first["y"], ref, rtol=1e-5, atol=1e-6)

    second = _child(path, cache)  # the compiler is not run again: the cached library is loaded
    assert second["stats"] == {"compiles": 0, "cache_hits": 1, "rejected": 0}
    assert second["library"] == first["library"] and lib.stat().st_mtime_ns == mtime

    data = bytearray(lib.read_bytes())  # flip bytes in the middle: still an ELF file, wrong content
    mid = len(data) // 2  # inverted, not zeroed: the middle of a small library can be zero padding
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    lib.unlink()  # a new file: never write into a library some process may have mapped
    lib.write_bytes(bytes(data))
    third = _child(path, cache)
    assert third["stats"] == {"compiles": 1, "cache_hits": 0, "rejected": 1}
    np.testing.assert_allclose(third["y"], ref, rtol=1e-5, atol=1e-6)
    assert native._verified(lib)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_two_processes_building_the_same_model_at_once(tmp_path):
    proto = small_model()
    path = tmp_path / "small.onnx"
    onnx.save(proto, path)
    cache = tmp_path / "cache"
    env = dict(os.environ, SOFIE_ROOT_CACHE=str(cache))
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    (ref,) = run_ort(proto, x)
    for r in results:
        np.testing.assert_allclose(r["y"], ref, rtol=1e-5, atol=1e-6)
    libs = sorted(p for p in cache.iterdir() if p.suffix == ".so")
    assert len(libs) == 1 and native._verified(libs[0])
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_specializing_and_torch_models_use_the_backend():
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, [2, 6]), value_info("s", np.int64, [2])],
                       [value_info("y", np.float32, None)], opset=13)
    m = sofie_root.compile(proto, backend="native")
    assert isinstance(m, sofie_root.model.SpecializingModel) and m.backend == "native"
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    for shape in ([3, 4], [4, 3]):
        s = np.array(shape, np.int64)
        assert_close(m.infer(x, s), run_ort(proto, x, s))
        assert m._last.backend == "native" and m.namespace.endswith("_nat")

    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.GELU(), torch.nn.Linear(8, 2)).eval()
    xt = torch.randn(3, 5)
    tm = sofie_root.compile(net, example_inputs=(xt,), backend="native")
    assert tm.backend == "native"
    with torch.no_grad():
        np.testing.assert_allclose(tm(xt.numpy()), net(xt).numpy(), rtol=1e-4, atol=1e-5)


def test_native_and_cling_of_the_same_model_coexist_and_load_from_root_file(tmp_path):
    proto = small_model()
    x = np.random.default_rng(6).standard_normal((5, 3)).astype(np.float32)
    nat = sofie_root.compile(proto, backend="native")
    cl = sofie_root.compile(proto)
    (ref,) = run_ort(proto, x)
    np.testing.assert_allclose(nat(x), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cl(x), ref, rtol=1e-5, atol=1e-6)
    nat.save(tmp_path / "m.root", "small")
    loaded = sofie_root.load(tmp_path / "m.root", backend="native")
    assert loaded.backend == "native" and loaded.namespace == nat.namespace
    np.testing.assert_allclose(loaded(x), ref, rtol=1e-5, atol=1e-6)
    assert sofie_root.compile(f"{tmp_path / 'm.root'}:small", backend="native").backend == "native"


def test_backend_from_environment_and_invalid_values(monkeypatch):
    proto = small_model()
    monkeypatch.setenv("SOFIE_ROOT_BACKEND", "native")
    assert sofie_root.compile(proto).backend == "native"
    monkeypatch.setenv("SOFIE_ROOT_BACKEND", "gcc")
    with pytest.raises(ValueError, match="SOFIE_ROOT_BACKEND"):
        sofie_root.compile(proto)
    monkeypatch.delenv("SOFIE_ROOT_BACKEND")
    assert sofie_root.compile(proto).backend == "cling"
    with pytest.raises(ValueError, match="'cling' or 'native'"):
        sofie_root.compile(proto, backend="Native")


def test_missing_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(CompilationError, match=r"/nonexistent/c\+\+.*not found.*backend='cling'") as e:
        sofie_root.compile(nonzero_model(), backend="native")
    assert "install" in str(e.value).lower()
    with pytest.raises(CompilationError, match="nonexistent"):
        native.compiler()


def test_rdataframe_define_with_native_model_matches_cling(hep_paths):
    from sofie_root.jit import cling

    ROOT = cling.root()
    path = hep_paths["dense"]
    nat = sofie_root.compile(path, backend="native")
    cl = sofie_root.compile(path)
    cols = [f"f{k}" for k in range(7)]
    df = ROOT.RDataFrame(500)
    for k, c in enumerate(cols):
        df = df.Define(c, f"float(std::sin(0.37 * rdfentry_ + {k}) * {k + 1})")
    f_nat = sofie_root.functor(nat, cols, df=df)
    f_cl = sofie_root.functor(cl, cols, df=df)
    out = df.Define("s_nat", f_nat, f_nat.columns).Define("s_cl", f_cl, f_cl.columns).AsNumpy(["s_nat", "s_cl", *cols])
    x = np.stack([out[c] for c in cols], axis=1).astype(np.float32)
    (ref,) = run_ort(onnx.load(path), x)
    np.testing.assert_allclose(out["s_nat"], ref[:, 0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["s_nat"], out["s_cl"], rtol=1e-5, atol=1e-7)
    # the proxy Session reports errors as C++ exceptions (a wrong weight blob here)
    with pytest.raises(Exception, match="weight blob"):
        getattr(ROOT, nat.namespace).Session(0, 3)


def test_cli_backend_option(tmp_path, capsys):
    from sofie_root import cli

    path = tmp_path / "small.onnx"
    onnx.save(small_model(), path)
    assert cli.main(["check", str(path), "--backend", "native"]) == 0
    assert cli.main(["bench", str(path), "--batch", "1", "--backend", "native"]) == 0
    out = capsys.readouterr().out
    assert out.count("(native)") == 2 and "OK" in out
    assert cli.main(["compile", str(path), "-o", str(tmp_path / "m.root"), "--backend", "native"]) == 0
    with pytest.raises(SystemExit):
        cli.main(["bench", str(path), "--backend", "gcc"])


def test_compiler_failure_is_reported_with_the_kept_source(monkeypatch, tmp_path):
    # a compiler that answers --version but cannot build: the error carries its diagnostics
    monkeypatch.setenv("CXX", f"{native.compiler().argv[0]} -include {tmp_path / 'missing.h'}")
    monkeypatch.setenv("SOFIE_ROOT_CACHE", str(tmp_path / "cache"))
    # weights no other test uses: a model already loaded by this process would not be rebuilt
    with pytest.raises(CompilationError, match=r"(?s)failed to compile model .*missing\.h") as e:
        sofie_root.compile(small_model(seed=1234), backend="native", passes=[])
    kept = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("failed-")]
    assert len(kept) == 1 and str(kept[0]) in str(e.value)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]
