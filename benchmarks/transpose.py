"""Batched 2-D transposes ([N, R, C] -> [N, C, R], ``sofie_rt::transpose2d``): JIT seconds and speed.

    python benchmarks/transpose.py [REPS] [--shapes 2x100,32x100,...]

For each shape, a one-node Transpose model (perm 0, 2, 1) is compiled (the JIT seconds of that
model alone: a trivial model is compiled first, so ROOT's start-up and the runtime header are not
counted) and its generated ``run`` is timed from a C++ loop at batch 1 and 256, interleaved REPS
times with ONNX Runtime's I/O binding, one thread; **minima** (compare two versions of the code
run back to back with them), ORT net = I/O binding minus ORT's fixed cost of a call (an Identity on
one float), as in ``benchmarks/ops_min.py``. The default shapes are ParticleNet's five
(``benchmarks/hep_models.py``) and a few more with few rows or few columns. Every output is
compared with numpy's transpose first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sofie_root  # before ROOT: it sets EXTRA_CLING_ARGS
from benchmarks import ops
from benchmarks.bench import CppLoop, interleaved, ort_iobinding, python_rep

SHAPES = ((2, 100), (8, 100), (32, 100), (1600, 8), (1600, 32), (3, 50), (100, 100), (64, 64), (20, 3), (5, 7))


def transpose_model(rows: int, cols: int):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", rows, cols])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", cols, rows])
    node = helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1])
    graph = helper.make_graph([node], f"transpose_{rows}x{cols}", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main(argv: list[str]) -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reps", nargs="?", type=int, default=7)
    ap.add_argument("--shapes", default=",".join(f"{r}x{c}" for r, c in SHAPES))
    args = ap.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]

    sofie_root.compile(ops.Case("warm-up", "Relu", [("x", ("N", 4), "normal")]).model())
    loop, floor = CppLoop(), ops.ort_floor()
    print(f"load {os.getloadavg()[0]:.2f}; minima of {args.reps} interleaved repetitions", flush=True)
    print(f"{'[N, R, C]':>14s} {'JIT s':>6s} | {'b1 C++ ns':>10s} {'ORT net':>8s} {'ratio':>5s} | "
          f"{'b256 C++ us':>11s} {'ORT net':>9s} {'ratio':>5s}")
    rng = np.random.default_rng(0)
    for rows, cols in shapes:
        proto = transpose_model(rows, cols)
        t = time.perf_counter()
        model = sofie_root.compile(proto)
        jit = time.perf_counter() - t
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        cells = []
        for b in (1, 256):
            x = rng.standard_normal((b, rows, cols)).astype(np.float32)
            (y,) = model.infer(x)
            if not np.array_equal(y, x.transpose(0, 2, 1)):
                raise SystemExit(f"[N, {rows}, {cols}] at batch {b}: the output is not numpy's transpose")
            tm = interleaved({"cpp": loop.prepare(model, (x,), 0.01),
                              "iob": python_rep(ort_iobinding(sess, [x]), 0.01),
                              "floor": python_rep(floor, 0.01)}, args.reps)
            cpp = min(tm["cpp"])
            net = max(min(tm["iob"]) - min(tm["floor"]), 0.01 * min(tm["iob"]))
            cells.append((cpp, net))
        (c1, n1), (c256, n256) = cells
        print(f"{f'[N, {rows}, {cols}]':>14s} {jit:6.2f} | {c1 * 1e9:10.1f} {n1 * 1e9:8.1f} {n1 / c1:5.2f} | "
              f"{c256 * 1e6:11.2f} {n256 * 1e6:9.2f} {n256 / c256:5.2f}", flush=True)
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
