"""Sphinx configuration of the sofie_root documentation (``make docs`` builds it into docs/_build).

Pages are Markdown (MyST); they hold the project's documentation (README.md is the short front
page that links to them). The operator table, ``docs/operators.md``, is written from the registry
by ``python -m sofie_root.docs --write`` (tests/sofie_root/test_project.py fails when it is stale).
Two pages are generated here at build time from the code, so they cannot go stale: the tutorial
gallery (each tutorial's header comment, its source and, when present, its plot from
``docs/_static/gallery``) and the benchmark tables (``benchmarks/bench.py``'s renderer over
``benchmarks/results/latest.json`` when it exists, else the snapshot in ``docs/_data``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROOT_BATCH", "1")

import sofie_root  # noqa: E402

project = "sofie_root"
author = "sofie_root developers"
release = version = sofie_root.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated/*.part.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = f"sofie_root {release}"
html_static_path = ["_static"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

GENERATED = HERE / "_generated"
GALLERY_IMAGES = HERE / "_static" / "gallery"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:  # unchanged files keep Sphinx's cache valid
        path.write_text(text)


def _tutorial_header(path: Path) -> tuple[str, str]:
    """(title, description) from a tutorial's ``##`` header (ROOT's tutorial convention)."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("//"):
            line = "##" + line[2:].lstrip("/")
        if not line.startswith("##"):
            if lines:
                break
            continue
        text = line[2:].strip()
        if text.startswith("\\") or (not text and not lines):
            continue
        lines.append(text)
    paragraphs = "\n".join(lines).strip().split("\n\n")
    return paragraphs[0].replace("\n", " "), "\n\n".join(p for p in paragraphs[1:] if not p.startswith("\\"))


def _gallery() -> None:
    out = ["# Tutorial gallery", "",
           "The tutorials in `tutorials/` are run by the test suite (`tests/tutorials`). Each writes its "
           "inputs itself (no download). Plots are those of the last `make docs-gallery` run.", ""]
    for path in sorted((REPO / "tutorials").glob("sofie_root*")):
        if path.suffix not in (".py", ".C"):
            continue
        title, text = _tutorial_header(path)
        out += [f"## {path.name}", "", f"**{title}**", "", text, ""]
        prefix = re.match(r"sofie_root\d+", path.stem)
        for png in sorted(GALLERY_IMAGES.glob(f"{prefix.group()}_*.png")) if prefix else []:
            out += [f"![{png.stem}](../_static/gallery/{png.name})", ""]
        lang = "python" if path.suffix == ".py" else "cpp"
        out += ["```{literalinclude} " + f"../../tutorials/{path.name}", f":language: {lang}", "```", ""]
    _write(GENERATED / "gallery.md", "\n".join(out))


def _performance() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.bench import tables

    latest = REPO / "benchmarks" / "results" / "latest.json"
    source = latest if latest.exists() else HERE / "_data" / "benchmark.json"
    if not source.exists():
        _write(GENERATED / "benchmarks.md", "# Benchmark tables\n\nNo benchmark results yet: run `make bench`.\n")
        return
    data = json.loads(source.read_text())
    m = data["machine"]
    out = ["# Benchmark tables", "",
           f"Rendered from `{source.relative_to(REPO)}` (written by `make bench`; "
           f"{m.get('date', '?')}, load average {m['loadavg_start'][0]:.1f} at the start). Ratios are "
           "against ONNX Runtime measured in the same process and run, interleaved; absolute times on a "
           "shared machine are noisy.", "", tables(data["models"], m), ""]
    _write(GENERATED / "benchmarks.md", "\n".join(out))


_gallery()
_performance()
