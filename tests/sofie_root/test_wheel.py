"""The wheel installs clean: built from the source tree, installed (without dependencies) into a
fresh virtual environment that cannot see the source tree, it runs the quickstart, a .root save
and load, the CLI and an RDataFrame functor. Catches package data left out of the wheel (the
``.hxx`` runtimes, the GPU runtime, SCHEMA.md) and imports that only work from a checkout.

The new environment reuses the test environment's third-party packages (ROOT, torch, onnx) through
a ``.pth`` line naming its site-packages; the editable install of sofie_root there is not active in
it (``.pth`` files of an added directory are not run), so ``sofie_root`` can only come from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import sofie_root

ROOT_DIR = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import sofie_root

    here = Path(sofie_root.__file__).resolve()
    print("sofie_root from", here)
    assert "site-packages" in str(here) and not str(here).startswith(sys.argv[1]), here
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "wheel",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                          [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), "m.onnx")
    model = sofie_root.compile("m.onnx")
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(model(x), x @ w, rtol=1e-6)
    model.save("m.root", "wheel", columns=["a", "b", "c"])
    np.testing.assert_array_equal(sofie_root.load("m.root")(x), model(x))
    # the GPU runtime from the wheel (it includes codegen/scalar.hxx), through the emulation
    np.testing.assert_allclose(sofie_root.compile("m.onnx", backend="gpu-emulated")(x), x @ w, rtol=1e-6)

    import ROOT
    df = ROOT.RDataFrame(5).Define("a", "float(rdfentry_)").Define("b", "1.f").Define("c", "2.f")
    df = sofie_root.rdf.define(df, "y", "m.root", outputs="y")
    got = np.array([list(v) for v in df.AsNumpy(["y"])["y"]], dtype=np.float32)
    rows = np.stack([np.arange(5), np.ones(5), 2 * np.ones(5)], 1).astype(np.float32)
    np.testing.assert_allclose(got, rows @ w, rtol=1e-6)
    print("wheel checks passed")
''')


def _run(argv, cwd, env, timeout=600):
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert r.returncode == 0, f"{argv} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_wheel_installs_and_runs_without_the_source_tree(tmp_path) -> None:
    assert (ROOT_DIR / "pyproject.toml").exists(), "the source tree is not where the test expects it"
    dist = tmp_path / "dist"
    # built from a copy: setuptools leaves build/ and *.egg-info behind, and would reuse a stale build/
    src = tmp_path / "src"
    shutil.copytree(ROOT_DIR, src, ignore=shutil.ignore_patterns(".venv", "build", ".git", "*.egg-info", "__pycache__",
                                                                 "docs", "_build", "*.root", "*.png"))
    # no build isolation: setuptools is in the test environment (an isolated build would download it)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
          str(src)], cwd=tmp_path, env=os.environ, timeout=300)
    (wheel,) = dist.glob("sofie_root-*.whl")
    assert wheel.name.startswith(f"sofie_root-{sofie_root.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    for data in ("sofie_root/codegen/runtime.hxx", "sofie_root/codegen/scalar.hxx", "sofie_root/gpu/gpu_runtime.cuh",
                 "sofie_root/rdf/sofie_rdf.hxx", "sofie_root/serialization/SCHEMA.md"):
        assert data in names, f"{data} missing from the wheel"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=os.environ)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=os.environ).strip())
    (site / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
         cwd=tmp_path, env=os.environ, timeout=300)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "work"
    work.mkdir()
    out = _run([str(py), "-c", SCRIPT, str(ROOT_DIR)], cwd=work, env=env)
    assert "wheel checks passed" in out and str(venv) in out
    cli = venv / "bin" / "sofie-root"
    assert cli.exists()
    assert "sofie_root" in _run([str(cli), "inspect", "m.root"], cwd=work, env=env)
    _run([str(cli), "compile", "m.onnx", "-o", "cli.root"], cwd=work, env=env)
    quickstart = work / "quickstart.py"
    shutil.copy(ROOT_DIR / "tutorials" / "sofie_root001_quickstart.py", quickstart)
    assert "max |sofie_root - onnxruntime|" in _run([str(py), str(quickstart)], cwd=work, env=env)
