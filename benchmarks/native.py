"""cling against the native backend (system C++ compiler), interleaved in one process.

    python benchmarks/native.py [--models dense,jet,cnn] [--rounds 5] [--json out.json]

For each model: per-event time at batch 1 and 256 of the generated ``run`` called from the C++
loop of ``benchmarks/bench.py``, cling and native measured alternately (A, B, A, B, ...) so that
load from other processes hits both alike; medians over the rounds and the native/cling ratio.
Compile times (ONNX -> callable) are measured in fresh processes: cling, native with an empty
cache (cold: the compiler runs) and native again (cached: the library is only checked and loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench, hep_models


def compile_time(path: Path, backend: str, cache: Path) -> float:
    code = ("import time, sofie_root; from sofie_root.jit import cling; cling.root(); t = time.perf_counter(); "
            f"sofie_root.compile({str(path)!r}, backend={backend!r}); print(time.perf_counter() - t)")
    env = dict(os.environ, SOFIE_ROOT_CACHE=str(cache))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"compiling {path} ({backend}) in a fresh process failed:\n{r.stderr[-3000:]}")
    return float(r.stdout.strip().splitlines()[-1])


def bench_model(name: str, workdir: Path, loop: bench.CppLoop, rounds: int) -> dict:
    import sofie_root

    path = workdir / f"{name}.onnx"
    hep_models.export(name, path)
    cache = workdir / f"cache-{name}"
    result: dict = {"model": name, "compile_cling_s": compile_time(path, "cling", cache),
                    "compile_native_cold_s": compile_time(path, "native", cache),
                    "compile_native_cached_s": compile_time(path, "native", cache)}
    models = {"cling": sofie_root.compile(path, backend="cling"),
              "native": sofie_root.compile(path, backend="native")}
    rng = np.random.default_rng(0)
    for batch in (1, 256):
        arrays = hep_models.inputs(name, batch, rng)
        a, b = (m.infer(*arrays) for m in models.values())
        result[f"max_abs_diff_b{batch}"] = float(max(np.max(np.abs(x - y)) for x, y in zip(a, b)))
        times: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(rounds):
            for k, m in models.items():
                times[k].append(loop.per_call(m, arrays) * 1e6 / batch)
        for k in models:
            result[f"{k}_b{batch}_us"] = statistics.median(times[k])
        result[f"ratio_b{batch}"] = statistics.median(n / c for n, c in zip(times["native"], times["cling"]))
    return result


def table(results: list[dict]) -> str:
    lines = ["| model | compile cling s | native cold s | native cached s | b1 cling µs | b1 native µs | "
             "b1 native/cling | b256 cling µs/evt | b256 native µs/evt | b256 native/cling |",
             "|---" * 10 + "|"]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['compile_cling_s']:.2f} | {r['compile_native_cold_s']:.2f} | "
            f"{r['compile_native_cached_s']:.2f} | {r['cling_b1_us']:.2f} | {r['native_b1_us']:.2f} | "
            f"{r['ratio_b1']:.2f} | {r['cling_b256_us']:.2f} | {r['native_b256_us']:.2f} | {r['ratio_b256']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="dense,jet,cnn")
    p.add_argument("--rounds", type=int, default=5, help="alternating cling/native measurements per batch")
    p.add_argument("--json", help="also write the results as JSON to this file")
    a = p.parse_args(argv)
    loop = bench.CppLoop()
    results = []
    with tempfile.TemporaryDirectory() as d:
        for name in a.models.split(","):
            results.append(bench_model(name, Path(d), loop, a.rounds))
            print(f"  {name}: done", file=sys.stderr)
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
