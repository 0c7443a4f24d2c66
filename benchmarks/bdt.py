"""Boosted decision trees of HEP size against ONNX Runtime.

    python benchmarks/bdt.py [--quick] [--json benchmarks/results/bdt.json]

Trains, in this process, an XGBoost and a LightGBM binary classifier (depth 6, on 20 features of
a toy signal/background sample, 10% missing values) and an XGBoost 3-class model, compiles each
with ``sofie_root.compile(booster)`` and times, interleaved (A, B, C, D, A, B, ...), at batch 1
and 256: the generated ``run`` called from a C++ loop (what an RDataFrame event loop pays),
``model.infer`` from Python, and ONNX Runtime (one thread) on the same converted ONNX model, from
Python with ``run`` and with I/O binding. Medians of the repetitions; ratios are medians of the
per-repetition ratios against ONNX Runtime (I/O binding, and ``run`` for ``infer``). Results are checked against the
framework's predict_proba first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

import sofie_root  # noqa: E402  (before ROOT: it sets EXTRA_CLING_ARGS)
from benchmarks.bench import CppLoop, interleaved, python_rep  # noqa: E402
from sofie_root.frontends.trees import trees_to_onnx  # noqa: E402

N_FEATURES = 20


def sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    score = x[:, 0] * x[:, 1] + np.sin(x[:, 2]) + 0.5 * x[:, 3] - 0.3 * x[:, 4] ** 2 + 0.2 * rng.normal(size=n)
    y = (score > 0).astype(np.int64)
    y3 = np.digitize(score, [-0.5, 0.5]).astype(np.int64)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x, y, y3


def models(n_trees: int):
    import lightgbm as lgb
    import xgboost as xgb

    x, y, y3 = sample(20000)
    out = [
        (f"XGBoost binary, {n_trees} trees, depth 6",
         xgb.XGBClassifier(n_estimators=n_trees, max_depth=6, learning_rate=0.1, n_jobs=1).fit(x, y)),
        (f"LightGBM binary, {n_trees} trees, depth 6",
         lgb.LGBMClassifier(n_estimators=n_trees, max_depth=6, num_leaves=63, learning_rate=0.1, n_jobs=1,
                            verbose=-1).fit(x, y)),
        (f"XGBoost 3 classes, {n_trees // 3}x3 trees, depth 6",
         xgb.XGBClassifier(n_estimators=n_trees // 3, max_depth=6, learning_rate=0.1, n_jobs=1).fit(x, y3)),
    ]
    return out, sample(4096, seed=1)[0]


def ort_session(proto):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def bench(name: str, model, x: np.ndarray, loop: CppLoop, reps: int, budget: float) -> dict:
    import onnxruntime as ort

    t0 = time.perf_counter()
    compiled = sofie_root.compile(model)
    compile_s = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sess = ort_session(trees_to_onnx(model))
    _, prob = compiled.infer(x)
    err = float(np.max(np.abs(prob - model.predict_proba(x))))
    row = {"model": name, "compile_s": compile_s, "max_abs_diff_vs_predict_proba": err}
    in_name = sess.get_inputs()[0].name
    for batch in (1, 256):
        xb = np.ascontiguousarray(x[:batch])
        binding = sess.io_binding()
        binding.bind_ortvalue_input(in_name, ort.OrtValue.ortvalue_from_numpy(xb))
        for o in sess.get_outputs():
            binding.bind_output(o.name)
        variants = {
            "cpp_loop": loop.prepare(compiled, (xb,), budget),
            "infer": python_rep(lambda xb=xb: compiled.infer(xb), budget),
            "ort_run": python_rep(lambda xb=xb: sess.run(None, {in_name: xb}), budget),
            "ort_iobinding": python_rep(lambda b=binding: sess.run_with_iobinding(b), budget),
        }
        times = interleaved(variants, reps)
        for k, ts in times.items():
            row[f"{k}_us_b{batch}"] = statistics.median(ts) / batch * 1e6
        for k in ("cpp_loop", "infer"):
            row[f"{k}_vs_ort_b{batch}"] = statistics.median(
                a / b for a, b in zip(times[k], times["ort_iobinding"]))
        row[f"infer_vs_ort_run_b{batch}"] = statistics.median(a / b for a, b in zip(times["infer"], times["ort_run"]))
    return row


def table(rows: list[dict]) -> str:
    head = ("| model | batch | C++ loop µs/event | infer µs/event | ORT run µs/event | ORT iobinding µs/event "
            "| C++ loop / ORT iobinding | infer / ORT iobinding | infer / ORT run |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        for b in (1, 256):
            lines.append(f"| {r['model']} | {b} | {r[f'cpp_loop_us_b{b}']:.2f} | {r[f'infer_us_b{b}']:.2f} "
                         f"| {r[f'ort_run_us_b{b}']:.2f} | {r[f'ort_iobinding_us_b{b}']:.2f} "
                         f"| {r[f'cpp_loop_vs_ort_b{b}']:.2f} | {r[f'infer_vs_ort_b{b}']:.2f} "
                         f"| {r[f'infer_vs_ort_run_b{b}']:.2f} |")
    lines.append("")
    lines.append("compile (booster -> callable): " + ", ".join(f"{r['model']}: {r['compile_s']:.1f} s" for r in rows))
    lines.append("max |probability - predict_proba|: "
                 + ", ".join(f"{r['max_abs_diff_vs_predict_proba']:.1e}" for r in rows))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 short repetitions and 150-tree models")
    p.add_argument("--trees", type=int, default=None, help="trees per model (default 300, --quick 150)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    reps, budget = (3, 0.03) if args.quick else (7, 0.1)
    n_trees = args.trees or (150 if args.quick else 300)
    built, x = models(n_trees)
    loop = CppLoop()
    rows = [bench(name, m, x, loop, reps, budget) for name, m in built]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
