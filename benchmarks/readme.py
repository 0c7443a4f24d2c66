"""Write the README's speed summary from the JSON of the last benchmark runs.

    python benchmarks/readme.py [--ops benchmarks/results/ops.json]
                                [--corpus benchmarks/results/latest.json] [--check]

The README shows, as issue 10 asks, the per-operator table's geometric mean and its slowest 15
ratios (ORT C / C++ loop and ORT net / C++ loop, from ``benchmarks/ops.py``) and the corpus's geometric means and worst
models at batch 1 and 256 (ORT run / ``infer``, from ``benchmarks/bench.py``). The figures belong
to one machine and one run, so they are written from those runs' JSON (with their date, load and
onnxruntime version), never typed by hand. The block between the two markers below is replaced;
the rest of the README is left as it is. ``--check`` only reports whether the block is current.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parent.parent
README = ROOT_DIR / "README.md"
BEGIN = "<!-- speed summary: written by benchmarks/readme.py -->"
END = "<!-- end of speed summary -->"


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def ops_lines(data: dict) -> list[str]:
    """The per-operator summary: geometric mean, count below 1.0, the slowest 15; for ORT net /
    C++ loop and, when the run has it, for ORT C / C++ loop (ORT from a C++ loop, its C API)."""
    s, meta = data["summary"], data["meta"]
    load = f"{meta['load_start']:.1f}-{meta['load_end']:.1f}"
    when = f"({meta['date'][:16].replace('T', ' ')} UTC, onnxruntime {meta['onnxruntime']}, load {load}.)"
    lines = []
    if s.get("timed_c"):
        slowest = ", ".join(f"{name} {ratio:.2f}" for ratio, name in s["slowest_c"])
        lines.append(
            f"- **Per-operator table, C++ against C++** (`make bench-ops`, {s['timed_c']} shapes of one-node models, "
            f"ORT C / C++ loop: ONNX Runtime's `RunWithBinding` and the generated `run`, each called from a C++ loop; "
            f"above 1 is faster than ONNX Runtime): geometric mean **{s['geomean_c']:.2f}**, {s['below_1_c']} of "
            f"{s['timed_c']} below 1.0. The slowest 15: {slowest}.")
    slowest = ", ".join(f"{name} {ratio:.2f}" for ratio, name in s["slowest"])
    lines.append(
        f"- **Per-operator table, ORT net** ({s['timed']} shapes, ORT net / C++ loop: ORT's I/O binding from Python "
        f"minus its whole fixed cost per call, an Identity model's, so ORT is charged for its kernel only): "
        f"geometric mean **{s['geomean_net']:.2f}**, {s['below_1']} of {s['timed']} below 1.0. "
        f"The slowest 15: {slowest}. {when}")
    return lines


def corpus_lines(data: dict) -> list[str]:
    """Per batch size: the geometric mean and the slowest models of ORT run / infer."""
    out = []
    models = data["models"]
    for batch in (1, 256):
        key = f"ort_run_over_infer_b{batch}"
        ratios = sorted((m[key], m["model"]) for m in models if m.get(key))
        if not ratios:
            continue
        worst = ", ".join(f"{name} {ratio:.2f}" for ratio, name in ratios[:3])
        out.append(f"- **Corpus, batch {batch}** (`make bench`, {len(ratios)} HEP networks, ORT run / `infer`): "
                   f"geometric mean **{_geomean([r for r, _ in ratios]):.2f}**, "
                   f"{sum(r < 1 for r, _ in ratios)} of {len(ratios)} slower than ONNX Runtime; the slowest: {worst}.")
    machine = data.get("machine", {})
    if out and machine:
        load = machine.get("loadavg_start") or [float("nan")]
        out[-1] += (f" ({str(machine.get('date', ''))[:16].replace('T', ' ')} UTC, onnxruntime "
                    f"{machine.get('onnxruntime', '?')}, {machine.get('cpu', '?')}, load {load[0]:.1f}.)")
    return out


def render(ops: dict | None, corpus: dict | None) -> str:
    lines = [BEGIN]
    if corpus:
        lines += corpus_lines(corpus)
    if ops:
        lines += ops_lines(ops)
    lines.append(END)
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README}: the markers {BEGIN!r} and {END!r} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + block + tail


def _load(path: Path, what: str) -> dict | None:
    if not path.exists():
        print(f"{path}: no {what} results (run it first); that part of the summary is left out", file=sys.stderr)
        return None
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", default=str(ROOT_DIR / "benchmarks" / "results" / "ops.json"))
    p.add_argument("--corpus", default=str(ROOT_DIR / "benchmarks" / "results" / "latest.json"))
    p.add_argument("--check", action="store_true", help="exit 1 if the README's block differs")
    a = p.parse_args(argv)
    ops = _load(Path(a.ops), "benchmarks/ops.py")
    corpus = _load(Path(a.corpus), "benchmarks/bench.py")
    if ops is None and corpus is None:
        return 1
    text = README.read_text()
    new = replace_block(text, render(ops, corpus))
    if a.check:
        print("README speed summary is " + ("current" if new == text else "out of date"))
        return 0 if new == text else 1
    README.write_text(new)
    print(f"{README}: speed summary written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
