"""Compile time against graph size: element-wise chains and a deep transformer encoder.

    python benchmarks/compile_time.py                  # chains of 1k-20k nodes, a 5,000-node transformer
    python benchmarks/compile_time.py --quick          # 1k and 2k chains, a 1,000-node transformer
    python benchmarks/compile_time.py --sizes 1000,4000 --modes none --timeout 300

Every model is compiled in a fresh child process (a crash or a timeout is reported as such, not
lost) and timed per phase: ROOT's start-up with the runtime header (``startup``, once per process,
not counted in ``total``), ONNX -> IR (``convert``), the passes, C++ generation and the JIT
(``cling``). ``fused`` runs the default passes (an element-wise chain becomes one fused node);
``none`` runs ``passes=[]`` (one C++ block per node). The outputs of each model are compared with
onnxruntime in the child, so a fast but wrong compilation does not count.

Compile time should grow linearly with the number of nodes: the table prints the time per
node, which should stay flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CHAIN_OPS = ("Add", "Mul", "Relu", "Sub", "Tanh")


def chain_model(n: int):
    """``x`` through ``n`` element-wise nodes (Add/Mul/Sub by 0.5, Relu, Tanh in turn)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, prev = [], "x"
    for k in range(n):
        op = CHAIN_OPS[k % len(CHAIN_OPS)]
        out = "y" if k == n - 1 else f"t{k}"
        nodes.append(helper.make_node(op, [prev, "c"] if op in ("Add", "Mul", "Sub") else [prev], [out]))
        prev = out
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
                          [numpy_helper.from_array(np.array(0.5, np.float32), "c")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def transformer_model(target_nodes: int, d: int = 16, heads: int = 2, hidden: int = 32, seq: int = 8):
    """Encoder layers (LayerNorm, multi-head attention, MLP, residuals; 25 nodes each) stacked
    until the graph has about ``target_nodes`` nodes."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def w(name, *shape, scale=0.3):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    const("heads_shape", np.array([0, seq, heads, d // heads], np.int64))
    const("merge_shape", np.array([0, seq, d], np.int64))
    const("scale", np.array(1 / np.sqrt(d // heads), np.float32))
    x, layer = "x", 0
    while len(nodes) + 25 <= target_nodes or layer == 0:
        p = f"l{layer}_"

        def n(op, ins, out, p=p, **attrs):
            nodes.append(helper.make_node(op, ins, [p + out], **attrs))
            return p + out

        h = n("LayerNormalization", [x, w(p + "g1", d), w(p + "b1", d)], "ln1", axis=-1)
        qkv = []
        for which in "qkv":
            t = n("MatMul", [h, w(p + "w" + which, d, d)], which + "_mm")
            t = n("Add", [t, w(p + "b" + which, d)], which + "_b")
            t = n("Reshape", [t, "heads_shape"], which + "_r")
            qkv.append(n("Transpose", [t], which + "_t", perm=[0, 2, 1, 3] if which != "k" else [0, 2, 3, 1]))
        s = n("MatMul", [qkv[0], qkv[1]], "scores")
        s = n("Mul", [s, "scale"], "scaled")
        s = n("Softmax", [s], "probs", axis=-1)
        a = n("MatMul", [s, qkv[2]], "attn")
        a = n("Transpose", [a], "attn_t", perm=[0, 2, 1, 3])
        a = n("Reshape", [a, "merge_shape"], "attn_r")
        a = n("MatMul", [a, w(p + "wo", d, d)], "o_mm")
        a = n("Add", [a, w(p + "bo", d)], "o_b")
        x1 = n("Add", [x, a], "res1")
        h = n("LayerNormalization", [x1, w(p + "g2", d), w(p + "b2", d)], "ln2", axis=-1)
        h = n("MatMul", [h, w(p + "w1", d, hidden)], "fc1")
        h = n("Add", [h, w(p + "c1", hidden)], "fc1_b")
        h = n("Relu", [h], "act")
        h = n("MatMul", [h, w(p + "w2", hidden, d)], "fc2")
        h = n("Add", [h, w(p + "c2", d)], "fc2_b")
        x = n("Add", [x1, h], "res2")
        layer += 1
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    g = helper.make_graph(nodes, "transformer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", seq, d])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", seq, d])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _child(kind: str, n: int, mode: str) -> None:
    """Compile one model and print its timings as one JSON line."""
    import onnxruntime as ort

    from sofie_root.codegen.emitter import generate
    from sofie_root.frontends.onnx import convert_model
    from sofie_root.jit import cling
    from sofie_root.model import Model
    from sofie_root.passes import run_passes

    proto = chain_model(n) if kind == "chain" else transformer_model(n)
    passes = None if mode == "fused" else []
    # ROOT's start-up and the runtime header, paid once per process whatever the model: timed
    # apart so that the per-model figures are the model's own
    ts = time.perf_counter()
    cling.root()
    startup = time.perf_counter() - ts
    t0 = time.perf_counter()
    graph = convert_model(proto, kind)
    t1 = time.perf_counter()
    optimised = run_passes(graph, passes)
    t2 = time.perf_counter()
    gen = generate(optimised, f"ct_{kind}{n}_{mode}")
    t3 = time.perf_counter()
    model = Model(graph, passes=passes)  # passes, generation (again) and the JIT
    t4 = time.perf_counter()
    # the JIT's share: the model's time less the passes and generation just measured
    jit = max(0.0, (t4 - t3) - (t3 - t1))
    x = np.random.default_rng(1).uniform(-1, 1, (3, *[int(d) for d in model.inputs[0].shape[1:]])).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    err = float(np.abs(model(x) - ref).max())
    print(json.dumps({"nodes": len(proto.graph.node), "ir_nodes": len(optimised.nodes), "startup": startup,
                      "convert": t1 - t0,
                      "passes": t2 - t1, "generate": t3 - t2, "cling": jit, "total": (t3 - t0) + jit,
                      "source_kb": len(gen.source) // 1024, "max_abs_err_vs_ort": err}))


def run_one(kind: str, n: int, mode: str, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(n), mode]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return {"status": f"timeout > {timeout:.0f} s"}
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode or not lines:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1][:80]
        return {"status": f"failed (exit {p.returncode}): {tail}", "wall": time.perf_counter() - t0}
    return {"status": "ok", **json.loads(lines[-1])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="1k and 2k chains, a 1,000-node transformer")
    ap.add_argument("--sizes", help="chain lengths, comma-separated (default 1000,2000,5000,10000,20000; "
                                    "0: no chain)")
    ap.add_argument("--modes", default="fused,none", help="fused (default passes) and/or none (passes=[])")
    ap.add_argument("--transformer", type=int, help="nodes of the transformer (default 5000; 0: skip)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per model")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]), args.child[2])
        return
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else \
        ([1000, 2000] if args.quick else [1000, 2000, 5000, 10000, 20000])
    modes = args.modes.split(",")
    trans = args.transformer if args.transformer is not None else (1000 if args.quick else 5000)
    jobs = [("chain", n, m) for m in modes for n in sizes if n > 0] + ([("transformer", trans, m) for m in modes] if trans else [])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'model':<12} {'nodes':>6} {'passes':<6} {'IR nodes':>8} {'startup':>8} {'convert':>8} {'generate':>8} "
          f"{'cling':>8} {'total s':>8} {'ms/node':>8} {'err vs ORT':>10}  status")
    rows = []
    for kind, n, mode in jobs:
        r = run_one(kind, n, mode, args.timeout)
        r.update(model=kind, requested=n, mode=mode)
        rows.append(r)
        if r["status"] == "ok":
            print(f"{kind:<12} {r['nodes']:>6} {mode:<6} {r['ir_nodes']:>8} {r['startup']:>8.2f} {r['convert']:>8.2f} "
                  f"{r['generate']:>8.2f} "
                  f"{r['cling']:>8.2f} {r['total']:>8.2f} {1000 * r['total'] / r['nodes']:>8.2f} "
                  f"{r['max_abs_err_vs_ort']:>10.1e}  ok", flush=True)
        else:
            print(f"{kind:<12} {n:>6} {mode:<6} {'':>8} {'':>8} {'':>8} {'':>8} {'':>8} {'':>8} {'':>8} {'':>10}  "
                  f"{r['status']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
