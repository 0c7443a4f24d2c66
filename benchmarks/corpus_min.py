"""Minimum-based ORT run / infer of selected corpus models, for a loaded machine.

    python benchmarks/corpus_min.py MODELS REPS BATCH      e.g. transformer,part 12 256

ONNX Runtime ``run`` (one thread) and ``model.infer`` interleaved REPS times in one process;
prints the **minimum** time of each per event and their ratio (above 1: faster than ONNX
Runtime). Medians (``benchmarks/bench.py``) move with the other jobs on a shared machine; minima
move less. To compare two versions of the code, run this file from each tree back to back (it
imports the sofie_root next to it).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sofie_root  # before ROOT: it sets EXTRA_CLING_ARGS
from benchmarks import corpus


def main(argv: list[str]) -> int:
    import onnxruntime as ort

    names, reps, batch = argv[0].split(","), int(argv[1]), int(argv[2])
    print(f"{sofie_root.__file__}: load {os.getloadavg()[0]:.1f}", flush=True)
    for name in names:
        proto, _ = corpus.MODELS[name](2)
        x = corpus.MODELS[name].inputs(batch)
        model = sofie_root.compile(proto)
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {i.name: a for i, a in zip(sess.get_inputs(), x)}
        calls = {"ort": lambda s=sess, f=feed: s.run(None, f), "infer": lambda m=model, a=x: m.infer(*a)}
        best = dict.fromkeys(calls, float("inf"))
        for _ in range(reps):
            for key, call in calls.items():
                t0 = time.perf_counter()
                call()
                best[key] = min(best[key], time.perf_counter() - t0)
        print(f"{name:16s} b{batch}: ORT run {best['ort'] * 1e6 / batch:9.1f} µs/event, infer "
              f"{best['infer'] * 1e6 / batch:9.1f}, ORT run / infer {best['ort'] / best['infer']:.2f}", flush=True)
    print(f"load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
