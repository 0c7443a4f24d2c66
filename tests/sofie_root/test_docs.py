"""The documentation site builds with warnings as errors (as ``make docs`` does), and its generated
pages hold what the code says: every operator of the registry, every tutorial."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import sofie_root

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_docs_build_without_warnings(tmp_path) -> None:
    pytest.importorskip("sphinx")
    out = tmp_path / "html"
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d",
                        str(tmp_path / "doctrees"), str(DOCS), str(out)], capture_output=True, text=True,
                       timeout=900, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    operators = (out / "operators.html").read_text()
    for op in sofie_root.supported_ops():
        assert f"<td><p>{op}</p></td>" in operators, op
    gallery = (out / "_generated" / "gallery.html").read_text()
    for tutorial in (DOCS.parent / "tutorials").glob("sofie_root*.py"):
        assert tutorial.name in gallery
    api = (out / "api.html").read_text()
    for name in ("sofie_root.compile", "sofie_root.Model", "sofie_root.rdf.functor", "sofie_root.awkward.apply"):
        assert f'id="{name}"' in api, name
