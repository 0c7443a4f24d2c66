"""The ROOT macro tutorial: the header from `sofie-root emit` and the .root file, run by ROOT in a
process that never imports sofie_root, inside an RDataFrame with implicit multi-threading."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import uproot

import sofie_root
from benchmarks import hep_models
from sofie_root import cli

MACRO = Path(__file__).resolve().parents[2] / "tutorials" / "sofie_root002_emit_rdf.C"

RUNNER = textwrap.dedent("""
    import sys
    import ROOT
    ROOT.gROOT.SetBatch(True)
    ROOT.gInterpreter.AddIncludePath(sys.argv[2])
    err = ROOT.gROOT.ProcessLine('.x {}("model.root", "events.root", "scores.root", 4)'.format(sys.argv[1]))
    assert "sofie_root" not in sys.modules, "the macro process must not use sofie_root"
    sys.exit(1 if err else 0)
""")


def test_macro_runs_the_model_in_rdataframe(tmp_path, hep_onnx) -> None:
    model = sofie_root.compile(hep_onnx["dense"])
    model.save(tmp_path / "model.root", "dense")
    assert cli.main(["emit", f"{tmp_path / 'model.root'}:dense", "-o", str(tmp_path / "include")]) == 0
    n = 3000
    x = hep_models.inputs("dense", n, np.random.default_rng(5))[0]
    with uproot.recreate(tmp_path / "events.root") as f:
        f.mktree("Events", {**{f"x{i}": np.float32 for i in range(7)}, "event": np.int64})
        f["Events"].extend({**{f"x{i}": x[:, i] for i in range(7)}, "event": np.arange(n, dtype=np.int64)})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    r = subprocess.run([sys.executable, "-c", RUNNER, str(MACRO), str(tmp_path / "include")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"scored {n} events" in r.stdout
    with uproot.open(tmp_path / "scores.root") as f:
        got = f["Scores"].arrays(["event", "score"], library="np")
    order = np.argsort(got["event"])
    assert np.array_equal(got["event"][order], np.arange(n))
    expected = model(x)[:, 0]
    # the macro's build has no BLAS and other vector flags: same maths, other summation order
    np.testing.assert_allclose(got["score"][order], expected, rtol=1e-5, atol=1e-6)
