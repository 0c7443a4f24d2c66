"""What ONNX Runtime's fixed cost per call is made of: I/O binding of tiny one-node models (and of a
model with no node at all), each call timed on its own, medians (``bench.python_call_median``).

    python benchmarks/ort_floor.py [REPS]

The per-operator table's ORT net time subtracts the Identity-on-one-float model's time (its
"floor"); this shows how much that choice decides at batch 1: the cost of executing one node
(no node against Identity) and how it differs between operators on one element. See
docs/performance.md, "ORT net, call by call".
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench import interleaved, ort_iobinding, python_call_median

#: label -> (op type or None for a model with no node, input shape)
MODELS = {"no node [1]": (None, [1]), "Identity [1]": ("Identity", [1]), "Relu [1]": ("Relu", [1]),
          "Neg [1]": ("Neg", [1]), "Identity [1, 128]": ("Identity", [1, 128]), "Relu [1, 128]": ("Relu", [1, 128]),
          "Exp [1, 128]": ("Exp", [1, 128]), "Erf [1, 128]": ("Erf", [1, 128])}


def session(op: str | None, shape: list[int]):
    import onnxruntime as ort

    nodes = [helper.make_node(op, ["x"], ["y"])] if op else []
    out = "y" if op else "x"
    g = helper.make_graph(nodes, "floor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 22)])
    m.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def main(argv: list[str]) -> int:
    reps = int(argv[0]) if argv else 9
    rng = np.random.default_rng(0)
    timers = {label: python_call_median(ort_iobinding(session(op, shape), [rng.standard_normal(shape).astype(np.float32)]),
                                        0.05) for label, (op, shape) in MODELS.items()}
    times = interleaved(timers, reps)
    print(f"load {os.getloadavg()[0]:.2f}, {reps} interleaved repetitions, I/O binding, median call")
    print("| model | ns per call | minus Identity [1] |")
    print("|---|---|---|")
    base = statistics.median(times["Identity [1]"])
    for label, t in times.items():
        print(f"| {label} | {statistics.median(t) * 1e9:.0f} | {(statistics.median(t) - base) * 1e9:+.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
