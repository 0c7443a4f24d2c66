"""Every tutorial runs, as a user would run it, and succeeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[2] / "tutorials").glob("*.py"))


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs(script: Path, tmp_path) -> None:
    if "coffea" in script.name:
        pytest.importorskip("coffea", reason="the coffea tutorial needs coffea (in the test extra)")
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    if ".png" in script.read_text():  # tutorials that draw must have written their PNG
        assert list(tmp_path.glob("*.png")), f"{script.name} wrote no PNG"
    if script.name == "sofie_root001_quickstart.py":
        assert "max |sofie_root - onnxruntime|" in r.stdout and "compile time" in r.stdout
    if script.name == "sofie_root022_graph_network.py":  # the graph network also ran in RDataFrame
        assert "max |RDataFrame - PyTorch|" in r.stdout and "sofie_root022_graph_network.png" in r.stdout + r.stderr

