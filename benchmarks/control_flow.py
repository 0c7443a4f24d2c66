"""Control flow and sequences against ONNX Runtime: per-call time of small recurrent models.

    python benchmarks/control_flow.py [--quick]

Models built here with ``onnx.helper`` (the patterns exporters write for run-time loops):

- ``loop_rnn``: Loop of 32 steps (constant trip count), carried state [1, 64], body MatMul + Tanh,
  every step's state as a scan output;
- ``while_exit``: Loop whose condition is computed from the state, at most N (the batch of the
  input, symbolic) steps: a scan output whose length is known after the run;
- ``scan_rnn``: Scan over 64 steps of [1, 32] inputs, state [1, 32], tanh(x Wx + h Wh);
- ``list_append``: a list appended to in a 24-step Loop (SequenceEmpty, SequenceInsert), then
  ConcatFromSequence (becomes a scan output).

Each is timed through ``Model.infer`` and ONNX Runtime's ``run`` (one thread) from Python, at
batch 1, interleaved (A, B, A, B, ...) so that load from other processes hits both alike: medians
of the repetitions, and the ratio as the median of the per-repetition ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

import sofie_root  # noqa: E402  (before ROOT: it sets EXTRA_CLING_ARGS)
from benchmarks.bench import interleaved, ort_session, python_rep  # noqa: E402

F = onnx.TensorProto.FLOAT
I64 = onnx.TensorProto.INT64
B = onnx.TensorProto.BOOL


def _w(name: str, *shape: int, seed: int = 0) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)


def _vi(name: str, t: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, t, shape)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "bench", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def loop_rnn():
    # (onnxruntime returns garbage when one body output is both a carried value and a scan output)
    body = helper.make_graph([helper.make_node("MatMul", ["h", "W"], ["m"]), helper.make_node("Tanh", ["m"], ["h2"]),
                              helper.make_node("Identity", ["h2"], ["hs_t"]),
                              helper.make_node("Identity", ["c"], ["c2"])], "body",
                             [_vi("i", I64, []), _vi("c", B, []), _vi("h", F, [1, 64])],
                             [_vi("c2", B, []), _vi("h2", F, [1, 64]), _vi("hs_t", F, [1, 64])])
    m = _model([helper.make_node("Loop", ["M", "", "x"], ["hf", "hs"], body=body)], [_vi("x", F, [1, 64])],
               [_vi("hf", F, None), _vi("hs", F, None)],
               [_w("W", 64, 64), numpy_helper.from_array(np.array(32, np.int64), "M")])
    return m, [np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)]


def while_exit():
    body = helper.make_graph([helper.make_node("MatMul", ["h", "W"], ["m"]), helper.make_node("Tanh", ["m"], ["h2"]),
                              helper.make_node("ReduceSum", ["h2"], ["s"], keepdims=0),
                              helper.make_node("Identity", ["h2"], ["hs_t"]),
                              helper.make_node("Less", ["s", "thr"], ["c2"])], "body",
                             [_vi("i", I64, []), _vi("c", B, []), _vi("h", F, [1, 64])],
                             [_vi("c2", B, []), _vi("h2", F, [1, 64]), _vi("hs_t", F, [1, 64])])
    nodes = [helper.make_node("Shape", ["x"], ["shp"], start=0, end=1), helper.make_node("Squeeze", ["shp"], ["M"]),
             helper.make_node("Loop", ["M", "t", "h0"], ["hf", "hs"], body=body)]
    m = _model(nodes, [_vi("x", F, ["N", 1]), _vi("h0", F, [1, 64])], [_vi("hf", F, None), _vi("hs", F, None)],
               [_w("W", 64, 64), numpy_helper.from_array(np.array(True), "t"),
                numpy_helper.from_array(np.array(1e9, np.float32), "thr")])
    return m, [np.zeros((48, 1), np.float32), np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)]


def scan_rnn():
    body = helper.make_graph([helper.make_node("MatMul", ["xt", "Wx"], ["a"]), helper.make_node("MatMul", ["h", "Wh"], ["b"]),
                              helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Tanh", ["s"], ["h2"]),
                              helper.make_node("Identity", ["h2"], ["hs_t"])],
                             "body", [_vi("h", F, [1, 32]), _vi("xt", F, [1, 32])],
                             [_vi("h2", F, [1, 32]), _vi("hs_t", F, [1, 32])])
    m = _model([helper.make_node("Scan", ["h0", "X"], ["hf", "hs"], body=body, num_scan_inputs=1)],
               [_vi("h0", F, [1, 32]), _vi("X", F, [64, 1, 32])], [_vi("hf", F, None), _vi("hs", F, None)],
               [_w("Wx", 32, 32, seed=2), _w("Wh", 32, 32, seed=3)])
    rng = np.random.default_rng(1)
    return m, [rng.standard_normal((1, 32)).astype(np.float32), rng.standard_normal((64, 1, 32)).astype(np.float32)]


def list_append():
    seq = helper.make_tensor_sequence_value_info
    body = helper.make_graph([helper.make_node("MatMul", ["h", "W"], ["m"]), helper.make_node("Tanh", ["m"], ["h2"]),
                              helper.make_node("SequenceInsert", ["s", "h2"], ["s2"]),
                              helper.make_node("Identity", ["c"], ["c2"])], "body",
                             [_vi("i", I64, []), _vi("c", B, []), _vi("h", F, [1, 64]), seq("s", F, None)],
                             [_vi("c2", B, []), _vi("h2", F, [1, 64]), seq("s2", F, None)])
    nodes = [helper.make_node("SequenceEmpty", [], ["e"]),
             helper.make_node("Loop", ["M", "", "x", "e"], ["hf", "sf"], body=body),
             helper.make_node("ConcatFromSequence", ["sf"], ["y"], axis=0, new_axis=1)]
    m = _model(nodes, [_vi("x", F, [1, 64])], [_vi("y", F, None)],
               [_w("W", 64, 64), numpy_helper.from_array(np.array(24, np.int64), "M")])
    return m, [np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)]


MODELS = {"loop_rnn": loop_rnn, "while_exit": while_exit, "scan_rnn": scan_rnn, "list_append": list_append}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 short repetitions instead of 7")
    a = p.parse_args(argv)
    reps, budget = (3, 0.03) if a.quick else (7, 0.1)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, make in MODELS.items():
            model, arrays = make()
            path = Path(d) / f"{name}.onnx"
            onnx.save(model, str(path))
            m = sofie_root.compile(str(path))
            sess = ort_session(path)
            names = [i.name for i in sess.get_inputs()]
            feed = dict(zip(names, arrays))
            for got, want in zip(m.infer(*arrays), sess.run(None, feed)):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
            times = interleaved({"sofie": python_rep(lambda m=m, x=arrays: m.infer(*x), budget),
                                 "ort": python_rep(lambda s=sess, f=feed: s.run(None, f), budget)}, reps)
            ratio = statistics.median(o / s for s, o in zip(times["sofie"], times["ort"]))
            rows.append((name, statistics.median(times["sofie"]) * 1e6, statistics.median(times["ort"]) * 1e6, ratio))
    print(f"{'model':<12} {'sofie infer us':>15} {'ORT run us':>11} {'ORT/sofie':>10}")
    for name, s, o, r in rows:
        print(f"{name:<12} {s:>15.1f} {o:>11.1f} {r:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
