"""A breadth sweep: common operators at shapes, axes and permutations the operator table does not
hold, against ONNX Runtime, to find the slow ones.

    python benchmarks/breadth.py [REPS] [--match "PREFIX;PREFIX..."]

``benchmarks/ops.py`` times every operator at two shapes; a kernel can be fast there and slow on
another axis, permutation or size (the batched 2-D Transposes were 0.3-0.7x ONNX Runtime at
shapes the table did not hold). Here the usual HEP operators run at several shapes each: one-node
models with a symbolic batch, compiled and checked against onnxruntime (allclose, 1e-4), then the
C++ loop against ORT's I/O binding at batch 1 and 256, interleaved REPS times, one thread;
**minima**, ORT net = I/O binding minus ORT's fixed cost of a call (an Identity on one float), as
in ``benchmarks/ops_min.py``, and ORT C = ORT's ``RunWithBinding`` from a C++ loop through its C
API (``benchmarks/ort_capi.py``, as in the operator table). Prints one row per case and the cases
below 1.0 at the end, by each measure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sofie_root  # before ROOT: it sets EXTRA_CLING_ARGS
from benchmarks import ops
from benchmarks.bench import CppLoop, aligned_empty, interleaved, ort_iobinding, python_rep
from benchmarks.ops import Case
from benchmarks.ort_capi import OrtCLoop

F = np.float32


def _w(*shape: int) -> np.ndarray:
    return (np.random.default_rng(sum(shape)).standard_normal(shape) * 0.1).astype(F)


def _i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def cases() -> list[Case]:
    out: list[Case] = []
    for shape, perm in (((16, 16, 32), (0, 3, 1, 2)), ((32, 16, 16), (0, 2, 3, 1)), ((4, 50, 16), (0, 1, 3, 2)),
                        ((50, 4, 16), (0, 2, 3, 1)), ((100, 3), (0, 2, 1)), ((3, 100), (0, 2, 1)),
                        ((8, 8, 8, 8), (0, 4, 3, 2, 1)), ((100, 16, 32), (0, 2, 1, 3)), ((16, 100, 3), (0, 3, 1, 2))):
        out.append(Case(f"Transpose [N,{','.join(map(str, shape))}] perm {''.join(map(str, perm))}", "Transpose",
                        [("x", ("N", *shape), "normal")], {"perm": list(perm)}))
    for op in ("ReduceSum", "ReduceMean", "ReduceMax"):
        for shape, axes in (((50, 64), (1,)), ((50, 64), (1, 2)), ((16, 16, 16), (2, 3)), ((16, 16, 16), (1,)),
                            ((300,), (0,))):
            out.append(Case(f"{op} [N,{','.join(map(str, shape))}] axes {axes}", op, [("x", ("N", *shape), "normal")],
                            {"keepdims": 1}, {"axes": _i64(*axes)}, opset=18))
    for axis in (1, 2, -1):
        out.append(Case(f"Softmax [N,50,64] axis {axis}", "Softmax", [("x", ("N", 50, 64), "normal")], {"axis": axis}))
    out.append(Case("Softmax [N,1000]", "Softmax", [("x", ("N", 1000), "normal")], {"axis": -1}))
    out.append(Case("LogSoftmax [N,7]", "LogSoftmax", [("x", ("N", 7), "normal")], {"axis": -1}))
    out.append(Case("LayerNormalization [N,50,64] axes -2,-1", "LayerNormalization",
                    [("x", ("N", 50, 64), "normal")], {"axis": -2}, {"s": _w(50, 64), "b": _w(50, 64)}))
    out.append(Case("LayerNormalization [N,100,8]", "LayerNormalization", [("x", ("N", 100, 8), "normal")],
                    {"axis": -1}, {"s": _w(8), "b": _w(8)}))
    out.append(Case("BatchNormalization [N,64,10,10]", "BatchNormalization", [("x", ("N", 64, 10, 10), "normal")],
                    {}, {"s": _w(64), "b": _w(64), "m": _w(64), "v": np.abs(_w(64)) + 0.5}))
    for axis in (1, 2):
        out.append(Case(f"Concat [N,50,64] x2 axis {axis}", "Concat",
                        [("x", ("N", 50, 64), "normal"), ("x2", ("N", 50, 64), "normal")], {"axis": axis}))
    out.append(Case("Slice [N,50,64] step 2 axis 2", "Slice", [("x", ("N", 50, 64), "normal")], {},
                    {"st": _i64(0), "en": _i64(64), "ax": _i64(2), "sp": _i64(2)}))
    out.append(Case("Gather [N,50,64] axis 2, 20 indices", "Gather", [("x", ("N", 50, 64), "normal")], {"axis": 2},
                    {"i": np.arange(0, 60, 3, dtype=np.int64)}))
    for a, b in (((50, 64), (64,)), ((50, 64), (50, 1)), ((1, 64), (50, 1)), ((16, 16, 16), (16, 1, 1))):
        out.append(Case(f"Add [N,{','.join(map(str, a))}] + [{','.join(map(str, b))}]", "Add",
                        [("x", ("N", *a), "normal")], {}, {"c": _w(*b)}))
    out.append(Case("Mul [N,50,1] * [N,50,64]", "Mul", [("x", ("N", 50, 1), "normal"), ("x2", ("N", 50, 64), "normal")]))
    out.append(Case("Where [N,50,64] mask [N,1,64]", "Where",
                    [("c", ("N", 1, 64), "bool"), ("x", ("N", 50, 64), "normal"), ("x2", ("N", 50, 64), "normal")]))
    out.append(Case("MatMul [N,50,64]x[N,64,50]", "MatMul", [("x", ("N", 50, 64), "normal"),
                                                           ("x2", ("N", 64, 50), "normal")]))
    for k, n in ((1000, 10), (16, 1), (64, 10), (128, 128)):
        out.append(Case(f"Gemm [N,{k}]x[{k},{n}]", "Gemm", [("x", ("N", k), "normal")], {"transB": 1},
                        {"w": _w(n, k), "b": _w(n)}))
    out.append(Case("Conv 3x3 32->32 [N,32,16,16]", "Conv", [("x", ("N", 32, 16, 16), "normal")], {"pads": [1] * 4},
                    {"w": _w(32, 32, 3, 3), "b": _w(32)}))
    out.append(Case("Conv 1x1 64->64 [N,64,8,8]", "Conv", [("x", ("N", 64, 8, 8), "normal")], {},
                    {"w": _w(64, 64, 1, 1), "b": _w(64)}))
    out.append(Case("Conv 5x5 s2 1->16 [N,1,28,28]", "Conv", [("x", ("N", 1, 28, 28), "normal")],
                    {"pads": [2] * 4, "strides": [2, 2]}, {"w": _w(16, 1, 5, 5), "b": _w(16)}))
    out.append(Case("Conv1d k=3 16->32 [N,16,100]", "Conv", [("x", ("N", 16, 100), "normal")], {"pads": [1, 1]},
                    {"w": _w(32, 16, 3), "b": _w(32)}))
    out.append(Case("Conv 3x3 dil 2 16->16 [N,16,16,16]", "Conv", [("x", ("N", 16, 16, 16), "normal")],
                    {"pads": [2] * 4, "dilations": [2, 2]}, {"w": _w(16, 16, 3, 3), "b": _w(16)}))
    out.append(Case("MaxPool 3x3 s2 [N,32,16,16]", "MaxPool", [("x", ("N", 32, 16, 16), "normal")],
                    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}))
    out.append(Case("AveragePool 2x2 [N,32,16,16]", "AveragePool", [("x", ("N", 32, 16, 16), "normal")],
                    {"kernel_shape": [2, 2], "strides": [2, 2]}))
    out.append(Case("GlobalAveragePool [N,64,8,8]", "GlobalAveragePool", [("x", ("N", 64, 8, 8), "normal")]))
    for op in ("Relu", "Tanh", "Sigmoid"):
        out.append(Case(f"{op} [N,1000]", op, [("x", ("N", 1000), "normal")]))
        out.append(Case(f"{op} [N,7]", op, [("x", ("N", 7), "normal")]))
    out.append(Case("CumSum [N,50,64] axis 2", "CumSum", [("x", ("N", 50, 64), "normal")], inits={"axis": _i64(2)}))
    out.append(Case("ArgMax [N,50,64] axis 1", "ArgMax", [("x", ("N", 50, 64), "normal")], {"axis": 1},
                    outputs=[("y", np.int64)]))
    # second set (2026-12-04): recurrent, resampling, normalisations, gathers and scatters, other
    # einsum and matmul forms, pools and reductions of other kinds
    out.append(Case("GRU 50x8->32", "GRU", [("x", (50, "N", 8), "normal")],
                    {"hidden_size": 32}, {"W": _w(1, 96, 8), "R": _w(1, 96, 32), "B": _w(1, 192)},
                    outputs=[("y", F)]))
    out.append(Case("LSTM 20x16->64", "LSTM", [("x", (20, "N", 16), "normal")], {"hidden_size": 64},
                    {"W": _w(1, 256, 16), "R": _w(1, 256, 64), "B": _w(1, 512)}, outputs=[("y", F)]))
    out.append(Case("Resize linear x2 [N,16,8,8]", "Resize", [("x", ("N", 16, 8, 8), "normal")],
                    {"mode": "linear"}, {"roi": np.zeros(0, F), "scales": np.array([1, 1, 2, 2], F)}, opset=19))
    out.append(Case("Pad reflect [N,16,16,16] by 2", "Pad", [("x", ("N", 16, 16, 16), "normal")], {"mode": "reflect"},
                    {"pads": _i64(0, 0, 2, 2, 0, 0, 2, 2)}))
    out.append(Case("Einsum bhqd,bhkd->bhqk", "Einsum", [("q", ("N", 4, 50, 16), "normal"),
                                                          ("k", ("N", 4, 50, 16), "normal")],
                    {"equation": "bhqd,bhkd->bhqk"}))
    out.append(Case("Einsum bij,jk->bik", "Einsum", [("x", ("N", 50, 64), "normal")], {"equation": "bij,jk->bik"},
                    {"w": _w(64, 32)}))
    out.append(Case("MatMul [N,100,16]x[16,64]", "MatMul", [("x", ("N", 100, 16), "normal")], {}, {"w": _w(16, 64)}))
    out.append(Case("MatMul [N,64]x[64,256]", "MatMul", [("x", ("N", 64), "normal")], {}, {"w": _w(64, 256)}))
    out.append(Case("GroupNormalization [N,32,16,16] 8 groups", "GroupNormalization",
                    [("x", ("N", 32, 16, 16), "normal")], {"num_groups": 8}, {"s": _w(32), "b": _w(32)}, opset=21))
    out.append(Case("InstanceNormalization [N,64,100]", "InstanceNormalization", [("x", ("N", 64, 100), "normal")],
                    {}, {"s": _w(64), "b": _w(64)}))
    out.append(Case("BatchNormalization [N,64]", "BatchNormalization", [("x", ("N", 64), "normal")],
                    {}, {"s": _w(64), "b": _w(64), "m": _w(64), "v": np.abs(_w(64)) + 0.5}))
    out.append(Case("LayerNormalization [N,25,512]", "LayerNormalization", [("x", ("N", 25, 512), "normal")],
                    {"axis": -1}, {"s": _w(512), "b": _w(512)}))
    out.append(Case("GatherElements [N,50,64] axis 1", "GatherElements",
                    [("x", ("N", 50, 64), "normal"), ("i", ("N", 10, 64), "int64:50")], {"axis": 1}))
    out.append(Case("Gather [N,50,64] 2-D indices axis 1", "Gather", [("x", ("N", 50, 64), "normal")], {"axis": 1},
                    {"i": (np.arange(12, dtype=np.int64).reshape(3, 4) * 4)}))
    out.append(Case("ScatterElements add [N,100,16] axis 1", "ScatterElements",
                    [("x", ("N", 100, 16), "normal"), ("i", ("N", 40, 16), "int64:100"),
                     ("u", ("N", 40, 16), "normal")], {"axis": 1, "reduction": "add"}))
    out.append(Case("TopK [N,50,64] axis 1 k=5", "TopK", [("x", ("N", 50, 64), "normal")], {"axis": 1},
                    {"k": _i64(5)}, outputs=[("v", F), ("i", np.int64)]))
    for rev, exc in ((1, 1), (1, 0), (0, 1)):
        out.append(Case(f"CumSum [N,50,64] axis 1{' reverse' * rev}{' exclusive' * exc}", "CumSum",
                        [("x", ("N", 50, 64), "normal")], {"reverse": rev, "exclusive": exc}, {"axis": _i64(1)}))
    for op in ("ReduceL2", "ReduceLogSumExp", "ReduceProd", "ReduceSumSquare", "ReduceMin"):
        out.append(Case(f"{op} [N,50,64] axes (1,)", op, [("x", ("N", 50, 64), "unit")], {"keepdims": 0},
                        {"axes": _i64(1)}, opset=18))
    out.append(Case("Softmax [N,4,40,40] axis 2", "Softmax", [("x", ("N", 4, 40, 40), "normal")], {"axis": 2}))
    out.append(Case("MaxPool 2x2 [N,64,8,8]", "MaxPool", [("x", ("N", 64, 8, 8), "normal")],
                    {"kernel_shape": [2, 2], "strides": [2, 2]}))
    out.append(Case("GlobalMaxPool [N,64,8,8]", "GlobalMaxPool", [("x", ("N", 64, 8, 8), "normal")]))
    out.append(Case("MaxPool1d k3 s1 [N,32,100]", "MaxPool", [("x", ("N", 32, 100), "normal")],
                    {"kernel_shape": [3], "pads": [1, 1]}))
    out.append(Case("Conv 3x3 s2 32->64 [N,32,16,16]", "Conv", [("x", ("N", 32, 16, 16), "normal")],
                    {"pads": [1] * 4, "strides": [2, 2]}, {"w": _w(64, 32, 3, 3), "b": _w(64)}))
    out.append(Case("Conv 3x3 group 4 32->32 [N,32,16,16]", "Conv", [("x", ("N", 32, 16, 16), "normal")],
                    {"pads": [1] * 4, "group": 4}, {"w": _w(32, 8, 3, 3), "b": _w(32)}))
    out.append(Case("Conv1d k=7 1->16 [N,1,200]", "Conv", [("x", ("N", 1, 200), "normal")], {"pads": [3, 3]},
                    {"w": _w(16, 1, 7), "b": _w(16)}))
    out.append(Case("ConvTranspose 3x3 s2 32->16 [N,32,8,8]", "ConvTranspose", [("x", ("N", 32, 8, 8), "normal")],
                    {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
                    {"w": _w(32, 16, 3, 3), "b": _w(16)}))
    for op, attrs in (("LeakyRelu", {"alpha": 0.1}), ("Elu", {}), ("HardSigmoid", {}), ("Softplus", {}),
                      ("Erf", {}), ("Gelu", {})):
        out.append(Case(f"{op} [N,50,64]", op, [("x", ("N", 50, 64), "normal")], attrs, opset=20))
    out.append(Case("Sum of 3 [N,50,64]", "Sum", [("x", ("N", 50, 64), "normal"), ("x2", ("N", 50, 64), "normal"),
                                                 ("x3", ("N", 50, 64), "normal")]))
    out.append(Case("Max [N,50,64] vs [64]", "Max", [("x", ("N", 50, 64), "normal")], {}, {"c": _w(64)}))
    out.append(Case("Div [N,50,64] / [N,50,1]", "Div", [("x", ("N", 50, 64), "normal"), ("x2", ("N", 50, 1), "pos")]))
    out.append(Case("Expand [N,1,1] -> [N,50,64]", "Expand", [("x", ("N", 1, 1), "normal")], {},
                    {"s": _i64(1, 50, 64)}))
    out.append(Case("Cast float->int64 [N,50,64]", "Cast", [("x", ("N", 50, 64), "normal")], {"to": 7},
                    outputs=[("y", np.int64)]))
    out.append(Case("Concat [N,50,16] x4 axis 2", "Concat",
                    [(f"x{k}", ("N", 50, 16), "normal") for k in range(4)], {"axis": 2}))
    out.append(Case("Split [N,50,64] in 4 axis 2", "Split", [("x", ("N", 50, 64), "normal")],
                    {"axis": 2, "num_outputs": 4}, outputs=[(f"y{k}", F) for k in range(4)], opset=18))
    return out


def main(argv: list[str]) -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reps", nargs="?", type=int, default=5)
    ap.add_argument("--match", default="", help="label prefixes separated by semicolons")
    args = ap.parse_args(argv)
    pats = [p for p in args.match.split(";") if p]
    sel = [c for c in cases() if not pats or any(c.label.startswith(p) for p in pats)]
    loop, floor, ort_c = CppLoop(), ops.ort_floor(), OrtCLoop()
    print(f"load {os.getloadavg()[0]:.2f}; minima of {args.reps} interleaved repetitions", flush=True)
    slow, slow_c = [], []
    for c in sel:
        proto = c.model()
        model = sofie_root.compile(proto)
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        row = f"{c.label:44s}"
        for b in (1, 256):
            arrays = c.arrays(b, rng)
            ours = model.infer(*arrays)
            ref = sess.run(None, dict(zip((i.name for i in sess.get_inputs()), arrays)))
            for o, r in zip(ours, ref):
                if not np.allclose(o, r, rtol=1e-4, atol=1e-4, equal_nan=True):
                    raise SystemExit(f"{c.label} at batch {b}: the output differs from onnxruntime's")
            c_sess = ort_c.session(proto.SerializeToString(), dict(zip((i.name for i in sess.get_inputs()), arrays)),
                                   {o.name: aligned_empty(r.shape, r.dtype) for o, r in zip(proto.graph.output, ref)})
            t = interleaved({"cpp": loop.prepare(model, tuple(arrays), 0.01),
                             "iob": python_rep(ort_iobinding(sess, arrays), 0.01),
                             "floor": python_rep(floor, 0.01), "c": c_sess.prepare(0.01)}, args.reps)
            c_out = list(c_sess.outputs.values())
            c_sess.close()
            if not all(np.allclose(o, r, rtol=1e-4, atol=1e-4, equal_nan=True) for o, r in zip(c_out, ref)):
                raise SystemExit(f"{c.label} at batch {b}: ORT's C API gave other outputs than its Python API")
            cpp, c_ort = min(t["cpp"]), min(t["c"])
            net = max(min(t["iob"]) - min(t["floor"]), 0.01 * min(t["iob"]))
            row += (f" | b{b}: {cpp * 1e6:9.2f} us ORT net {net * 1e6:9.2f} ratio {net / cpp:5.2f}"
                    f" ORT C {c_ort * 1e6:9.2f} ratio {c_ort / cpp:5.2f}")
            if net / cpp < 1.0:
                slow.append((net / cpp, f"{c.label} (b{b})"))
            if c_ort / cpp < 1.0:
                slow_c.append((c_ort / cpp, f"{c.label} (b{b})"))
        print(row, flush=True)
    print(f"load {os.getloadavg()[0]:.2f}")
    print("below 1.0, ORT net: " + (", ".join(f"{label} {r:.2f}" for r, label in sorted(slow)) or "none"))
    print("below 1.0, ORT C: " + (", ".join(f"{label} {r:.2f}" for r, label in sorted(slow_c)) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
