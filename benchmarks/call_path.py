"""What a call from Python costs beyond the generated code: ``Model.infer`` on a one-node model.

    python benchmarks/call_path.py [--quick]

A one-input, one-output model (Relu on [N, 8]) at batch 1, where the generated code takes well
under a microsecond, so what is measured is the Python call path: ``model.infer(x)``,
``model.infer(x, out=[y])`` (preallocated output), ``model(x)``, the generated ``run`` called
from a C++ loop (the floor), and ONNX Runtime (one thread) ``run`` and I/O binding on the same
model. Interleaved repetitions in one process, medians; the Python overhead is the time per call
minus the C++ loop's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sofie_root
from benchmarks.bench import CppLoop, interleaved, ort_iobinding, python_rep


def relu_model(width: int = 8):
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="5 short repetitions instead of 15")
    a = p.parse_args(argv)
    reps, budget = (5, 0.05) if a.quick else (15, 0.1)
    import onnxruntime as ort

    proto = relu_model()
    model = sofie_root.compile(proto)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    y = np.empty_like(x)
    assert np.array_equal(model.infer(x)[0], np.maximum(x, 0))
    variants = {
        "C++ loop": CppLoop().prepare(model, (x,), budget),
        "infer(x)": python_rep(lambda: model.infer(x), budget),
        "infer(x, out=[y])": python_rep(lambda: model.infer(x, out=[y]), budget),
        "model(x)": python_rep(lambda: model(x), budget),
        "ORT run": python_rep(lambda: sess.run(None, {"x": x}), budget),
        "ORT iobind": python_rep(ort_iobinding(sess, (x,)), budget),
    }
    times = interleaved(variants, reps)
    floor = statistics.median(times["C++ loop"])
    print("| call (Relu [1, 8]) | µs per call | minus C++ loop µs | / ORT iobind |\n|---|---|---|---|")
    for k, t in times.items():
        med = statistics.median(t)
        ratio = statistics.median(a / b for a, b in zip(t, times["ORT iobind"]))
        print(f"| {k} | {med * 1e6:.2f} | {(med - floor) * 1e6:.2f} | {ratio:.2f} |")
    import os

    print(f"\n(load average {os.getloadavg()[0]:.2f}; {reps} interleaved repetitions, medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
