"""No undefined behaviour in the generated C++ on the inputs where C++ has it (issue 11): Cast of
NaN, +-inf and out-of-range floats to every integer type, shifts by the type's width and more,
integer division and modulo of the minimum by -1 and by 0, signed overflow of Add/Sub/Mul/Neg/Abs
(numpy wraps around), Gather/GatherElements with negative indices. The models are built by the
native backend with ``-fsanitize=undefined -fno-sanitize-recover=all`` in a child process
(tests/sofie_root/ubsan_child.py): any UB report aborts it. Skipped, with the reason, where the
compiler has no UBSan runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sofie_root.errors import CompilationError
from sofie_root.jit import native

ROOT_DIR = Path(__file__).resolve().parents[2]
FLAGS = "-fsanitize=undefined -fno-sanitize-recover=all"


def _ubsan_missing(tmp_path: Path) -> str | None:
    """Why UBSan cannot be used here (None if it can): a program with a signed overflow must be
    built and must be stopped by the sanitizer."""
    try:
        cc = native.compiler()
    except CompilationError as e:
        return f"no C++ compiler: {e}"
    src = tmp_path / "probe.cc"
    src.write_text("int main(int argc, char **) { int x = 2147483647; return (x + argc) > 0 ? 0 : 3; }\n")
    exe = tmp_path / "probe"
    p = subprocess.run([*cc.argv, *FLAGS.split(), str(src), "-o", str(exe)], capture_output=True, text=True)
    if p.returncode:
        return f"{cc.argv[0]} cannot build with {FLAGS}: {p.stderr.strip()[-300:]}"
    p = subprocess.run([str(exe)], capture_output=True, text=True)
    if "runtime error" not in p.stderr:
        return f"the UBSan runtime did not report a signed overflow (exit {p.returncode})"
    return None


def test_generated_code_has_no_undefined_behaviour(tmp_path):
    why = _ubsan_missing(tmp_path)
    if why:
        print(f"skipping the UBSan test: {why}")
        pytest.skip(why)
    env = {**os.environ, "SOFIE_ROOT_NATIVE_FLAGS": FLAGS, "SOFIE_ROOT_CACHE": str(tmp_path / "cache"),
           "SOFIE_ROUNDTRIP_CHECK": "0", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT_DIR)}
    p = subprocess.run([sys.executable, str(Path(__file__).with_name("ubsan_child.py"))], capture_output=True,
                       text=True, cwd=ROOT_DIR, env=env, timeout=1800)
    reports = [line for line in p.stderr.splitlines() if "runtime error" in line]
    assert not reports, "\n".join(reports[:10])
    assert p.returncode == 0 and "UBSAN-CHILD-DONE" in p.stdout, (p.returncode, p.stdout[-1000:], p.stderr[-2000:])
