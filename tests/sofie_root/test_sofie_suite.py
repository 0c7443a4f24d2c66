"""ROOT TMVA SOFIE's own ONNX unit-test models (``../shared/peer/sofie_suite``, 151 models with
SOFIE's inputs, references and tolerances), run with the suite's runner: one forked worker per
model, SOFIE's comparison criterion. Every model must pass, except the invalid ones, which must be
refused with an error naming the problem. Skipped (with the reason printed) where the shared
folder is absent."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[2].parent / "shared" / "peer" / "sofie_suite"

#: invalid ONNX models refused on purpose: name -> (error class, text the message must contain)
REFUSED = dict.fromkeys(
    ("RNNBidirectional", "RNNBidirectionalBatchwise", "RNNSequence", "RNNSequenceBatchwise", "LSTMPeepholes"),
    ("InvalidGraphError", "sequence_lens is float32"))


def test_sofie_suite_every_model_has_its_expected_outcome():
    runner = SUITE / "run_suite.py"
    if not runner.exists():
        pytest.skip(f"SOFIE's suite is not at {SUITE} (CI keeps shared/ next to the clone)")
    manifest = json.loads((SUITE / "manifest.json").read_text())
    names = {e["name"] for e in manifest["models"]}
    assert set(REFUSED) <= names
    proc = subprocess.run([sys.executable, str(runner), "--timeout", "240", "--jobs", "2"], capture_output=True, text=True,
                          timeout=1500, cwd=str(Path(__file__).resolve().parents[2]))
    lines = proc.stdout.splitlines()
    outcome: dict[str, tuple[str, str]] = {}
    for line in lines:
        m = re.match(r"^(PASS|FAIL|ERROR) ([^:]+): (.*)$", line)
        if m:
            outcome[m.group(2)] = (m.group(1), m.group(3))
    assert set(outcome) == names, f"models without a verdict: {sorted(names - set(outcome))}\n{proc.stderr[-2000:]}"
    wrong = []
    for name in sorted(names):
        status, detail = outcome[name]
        if name in REFUSED:
            cls, text = REFUSED[name]
            if status != "ERROR" or cls not in detail or text not in detail or "[compile]" not in detail:
                wrong.append(f"{name}: expected {cls} ({text!r}) at compile, got {status} {detail}")
        elif status != "PASS":
            wrong.append(f"{name}: {status} {detail}")
    passed = sum(s == "PASS" for s, _ in outcome.values())
    print(f"SOFIE suite: {passed} of {len(names)} pass; {len(REFUSED)} invalid models refused")
    assert not wrong, "\n".join(wrong)
    assert lines[-1] == f"sofie-suite: {len(names) - len(REFUSED)} passed, {len(REFUSED)} failed"
