"""LinearAttention (ONNX opset 27) against ONNX Runtime: per-call time of one node.

    python benchmarks/linear_attention.py [--quick]

One LinearAttention node, batch 1, 8 query and 4 key/value heads of 64 (d_k = d_v = 64), with a
past state, for the update rules and sequence lengths of a decoder: T = 1 (a decode step) and
T = 64 (a prefill). Inputs are random (keys L2-normalised, decay = -|x|/2, beta in (0, 1)).

Each is timed through ``Model.infer`` and ONNX Runtime's ``run`` (one thread) from Python,
interleaved (A, B, A, B, ...) so that load from other processes hits both alike: medians of the
repetitions, and the ratio as the median of the per-repetition ratios. The outputs are checked
against ONNX Runtime's first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

import sofie_root  # noqa: E402  (before ROOT: it sets EXTRA_CLING_ARGS)
from benchmarks.bench import interleaved, ort_session, python_rep  # noqa: E402

F = onnx.TensorProto.FLOAT
HQ, HKV, D = 8, 4, 64


def model(rule: str, steps: int) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    rng = np.random.default_rng(steps)
    shapes = {"query": (1, steps, HQ * D), "key": (1, steps, HKV * D), "value": (1, steps, HKV * D),
              "past_state": (1, HKV, D, D)}
    if rule in ("gated", "gated_delta"):
        shapes["decay"] = (1, steps, HKV)
    if rule in ("delta", "gated_delta"):
        shapes["beta"] = (1, steps, HKV)
    names = [n if n in shapes else "" for n in ("query", "key", "value", "past_state", "decay", "beta")]
    while not names[-1]:
        names.pop()
    node = helper.make_node("LinearAttention", names, ["y", "state"], q_num_heads=HQ, kv_num_heads=HKV,
                            update_rule=rule)
    g = helper.make_graph([node], "bench", [helper.make_tensor_value_info(n, F, s) for n, s in shapes.items()],
                          [helper.make_tensor_value_info("y", F, None), helper.make_tensor_value_info("state", F, None)])
    arrays = []
    for n, s in shapes.items():
        x = rng.standard_normal(s)
        if n == "key":
            x /= np.linalg.norm(x.reshape(1, steps, HKV, D), axis=-1).repeat(D, axis=-1).reshape(s)
        elif n == "decay":
            x = -np.abs(x) / 2
        elif n == "beta":
            x = 1 / (1 + np.exp(-x))
        elif n == "past_state":
            x = x * 0.1
        arrays.append(x.astype(np.float32))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 27)], ir_version=11), arrays


CASES = [(rule, steps) for steps in (1, 64) for rule in ("linear", "gated", "delta", "gated_delta")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 short repetitions instead of 7")
    a = p.parse_args(argv)
    reps, budget = (3, 0.03) if a.quick else (7, 0.1)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for rule, steps in CASES:
            m_proto, arrays = model(rule, steps)
            path = Path(d) / f"{rule}_{steps}.onnx"
            onnx.save(m_proto, str(path))
            m = sofie_root.compile(str(path))
            sess = ort_session(path)
            feed = dict(zip([i.name for i in sess.get_inputs()], arrays))
            for got, want in zip(m.infer(*arrays), sess.run(None, feed)):
                np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
            times = interleaved({"sofie": python_rep(lambda m=m, x=arrays: m.infer(*x), budget),
                                 "ort": python_rep(lambda s=sess, f=feed: s.run(None, f), budget)}, reps)
            ratio = statistics.median(o / s for s, o in zip(times["sofie"], times["ort"]))
            rows.append((f"{rule} T={steps}", statistics.median(times["sofie"]) * 1e6,
                         statistics.median(times["ort"]) * 1e6, ratio))
    print(f"{'case':<18} {'sofie infer us':>15} {'ORT run us':>11} {'ORT/sofie':>10}")
    for name, s, o, r in rows:
        print(f"{name:<18} {s:>15.1f} {o:>11.1f} {r:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
