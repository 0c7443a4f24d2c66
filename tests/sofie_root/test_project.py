"""Project hygiene: README front page and operator page, environment.yml, lint, package layout, CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import tomllib
from onnx import helper

import sofie_root
from sofie_root import cli, docs

from .ort_check import make_model, value_info

ROOT = Path(__file__).resolve().parents[2]


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("```", 2)[1]
    lines = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    assert lines[:2] == ["make demo", "make test"]


def test_operator_page_matches_registry() -> None:
    text = (ROOT / "docs" / "operators.md").read_text()
    assert docs.render_page(text) == text, "run: python -m sofie_root.docs --write"
    for op in sofie_root.supported_ops():
        assert f"| {op} |" in text


def test_readme_operator_count_matches_registry() -> None:
    text = (ROOT / "README.md").read_text()
    assert docs.render_readme(text) == text, "run: python -m sofie_root.docs --write"
    assert f"**{len(docs._rows())} operators**" in text


def test_gpu_operator_list_matches_the_gpu_backend() -> None:
    from sofie_root.gpu.emitters import gpu_ops

    text = (ROOT / "docs" / "guide" / "gpu.md").read_text()
    assert docs.render_gpu_page(text) == text, "run: python -m sofie_root.docs --write"
    listed = text.split(docs.GPU_START, 1)[1].split(docs.GPU_END, 1)[0]
    for op in gpu_ops():
        assert f" {op}," in listed or f" {op}\n" in listed, op


def test_readme_links_resolve() -> None:
    """The front page links to the documentation's pages by path (readable on a git forge)."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    assert any(t.startswith("docs/") for t in targets)
    for target in targets:
        assert (ROOT / target).exists(), target


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r.strip(), maxsplit=1)[0].lower() for r in reqs}


def test_environment_yml_names_the_runtime_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = _names(pyproject["project"]["dependencies"])
    env_lines = (ROOT / "environment.yml").read_text().splitlines()
    conda = {re.split(r"[<>=! ]", ln.strip()[2:], maxsplit=1)[0].lower()
             for ln in env_lines if ln.strip().startswith("- ") and not ln.strip().startswith("- pip")
             and not ln.strip().endswith(":")}
    assert "root" in conda
    assert runtime <= conda, f"environment.yml lacks {sorted(runtime - conda)}"


def test_subpackages_are_installed_under_sofie_root() -> None:
    import sofie_root.rdf
    import sofie_root.serialization

    assert Path(sofie_root.rdf.__file__).parent == ROOT / "rdf"
    assert Path(sofie_root.serialization.__file__).parent == ROOT / "serialization"


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    r = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _model(tmp_path: Path) -> Path:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 3])], [value_info("y", np.float32, None)])
    path = tmp_path / "relu.onnx"
    onnx.save(proto, path)
    return path


def test_cli_ops_check_source(tmp_path, capsys) -> None:
    assert cli.main(["ops"]) == 0
    assert "Gemm" in capsys.readouterr().out.split()
    path = _model(tmp_path)
    assert cli.main(["check", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
    out = tmp_path / "m.cxx"
    assert cli.main(["source", str(path), "-o", str(out)]) == 0
    assert "struct Session" in out.read_text()


def test_cli_errors_exit_nonzero(tmp_path, capsys) -> None:
    assert cli.main(["check", str(tmp_path / "nope.onnx")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_console_script_runs() -> None:
    exe = Path(sys.executable).parent / "sofie-root"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "sofie-root" in r.stdout
    r = subprocess.run([str(exe), "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2


def test_cli_bench_with_profile(tmp_path, capsys) -> None:
    path = _model(tmp_path)
    assert cli.main(["bench", str(path), "--batch", "1", "4", "--profile", "--repeat", "3"]) == 0
    out = capsys.readouterr().out
    assert "batch     1:" in out and "batch     4:" in out and "us per event" in out
    assert "time per operator" in out and "Relu" in out
