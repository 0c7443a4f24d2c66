"""``SOFIE_ROOT_BLAS``: which BLAS the generated GEMMs call (jit/cling.py's ``blas()``), and a
model run with another library (BLIS, when the system has it) in a fresh process, against numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sofie_root
from sofie_root.jit import cling

ROOT_DIR = Path(__file__).resolve().parents[2]


def test_choices(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("SOFIE_ROOT_NO_BLAS", raising=False)
    monkeypatch.delenv("SOFIE_ROOT_BLAS", raising=False)
    default = cling.blas()
    assert default is not None and default.name == "openblas" and default.prefix == "scipy_cblas_"
    assert "SOFIE_RT_CBLAS_PREFIX scipy_cblas_" in default.prelude()
    monkeypatch.setenv("SOFIE_ROOT_BLAS", "none")
    assert cling.blas() is None
    monkeypatch.setenv("SOFIE_ROOT_BLAS", "openblas")
    monkeypatch.setenv("SOFIE_ROOT_NO_BLAS", "1")
    assert cling.blas() is None
    monkeypatch.delenv("SOFIE_ROOT_NO_BLAS")
    monkeypatch.setenv("SOFIE_ROOT_BLAS", str(tmp_path / "missing.so"))
    with pytest.raises(sofie_root.SofieError, match=r"SOFIE_ROOT_BLAS=.*missing\.so.*neither"):
        cling.blas()
    lib = tmp_path / "libmycblas.so"
    lib.write_bytes(b"")
    monkeypatch.setenv("SOFIE_ROOT_BLAS", str(lib))
    chosen = cling.blas()
    assert chosen is not None and chosen.path == str(lib) and chosen.prefix == "cblas_"


_CHILD = r"""
import json, sys
import numpy as np
from onnx import TensorProto, helper, numpy_helper
import sofie_root
rng = np.random.default_rng(0)
w = rng.standard_normal((300, 300)).astype(np.float32)
b = rng.standard_normal(300).astype(np.float32)
g = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 300])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 300])],
                      [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
m = sofie_root.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))
err = 0.0
for n in (1, 7, 64):  # one row goes to sgemv, more to sgemm
    x = rng.standard_normal((n, 300)).astype(np.float32)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
    err = max(err, float(np.max(np.abs(m.infer(x)[0] - ref))))
maps = open("/proc/self/maps").read()
from sofie_root.jit import cling
print("RESULT " + json.dumps({"err": err, "blis": "libblis" in maps, "openblas32": cling.blas_library() in maps}))
"""


def test_a_model_runs_with_blis(monkeypatch) -> None:
    monkeypatch.delenv("SOFIE_ROOT_NO_BLAS", raising=False)
    monkeypatch.setenv("SOFIE_ROOT_BLAS", "blis")
    try:
        cling.blas()
    except sofie_root.SofieError:
        pytest.skip("no libblis on this system (Debian: apt-get install libblis4-serial)")
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, cwd=ROOT_DIR,
                       timeout=600)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert r.returncode == 0 and line, r.stderr[-3000:]
    out = json.loads(line.split(" ", 1)[1])
    assert out["blis"] and not out["openblas32"], out  # (numpy's own OpenBLAS is another library)
    assert out["err"] < 1e-3, out
