"""Single-node speed of the transcendental operators (the sofie_rt::vm math layer) against ONNX Runtime.

    python benchmarks/math_ops.py [--quick] [--ops Tanh,Erf] [--json out.json]

Each operator is a one-node float32 model at [256, 128] and [1, 128]. Measured in one process,
interleaved (every variant once per round), medians over the rounds: the generated ``run``
called from a C++ loop and ``model.infer`` from Python, against ONNX Runtime (one thread, which
runs in the calling thread) ``run`` and I/O binding from Python. Times are the calling thread's
CPU time (CLOCK_THREAD_CPUTIME_ID), not wall time, so that a loaded machine (other processes
taking the core) changes them little. Ratios are ORT time / ours
(above 1: faster than ORT): C++ loop against I/O binding (the least overhead each side has) and
``infer`` against ``run``; and **ORT net** / C++ loop, ORT's I/O binding time minus that of a
one-element Identity model (its fixed cost per call from Python, measured in the same rounds), as
``benchmarks/ops.py`` has it but in CPU time.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sofie_root
from benchmarks.bench import interleaved, ort_iobinding, ort_session

_LOOP_CODE = r"""
#include <ctime>
namespace sofie_math_bench {
using run_fn = int (*)(void *, const std::int64_t *, const void *const *, void *const *, char *, std::size_t);
inline double cpu_now()
{
   timespec t;
   clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
   return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}
inline double loop(void *fn, void *session, const std::int64_t *sym, const void *const *in, void *const *out,
                   long n)
{
   char err[256];
   auto run = reinterpret_cast<run_fn>(fn);
   const double t0 = cpu_now();
   for (long i = 0; i < n; ++i)
      run(session, sym, in, out, err, sizeof(err));
   return cpu_now() - t0;
}
}
"""


class CpuLoop:
    """The generated ``run`` called n times from C++; thread CPU seconds per call."""

    def __init__(self) -> None:
        from sofie_root.jit import cling

        root = cling.root()
        cling._declare(root, _LOOP_CODE, "the math benchmark loop")
        addr = int(root.gInterpreter.ProcessLine("(long long)(&sofie_math_bench::loop);"))
        self.loop = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long)(addr)

    def prepare(self, model, x: np.ndarray, budget: float):
        syms: dict[str, int] = {}
        model._bind(model.graph.input_infos[0], x.shape, syms)
        sym = (ctypes.c_int64 * max(1, len(model._symbols)))(*[syms[s] for s in model._symbols])
        out = np.empty_like(x)
        ins = (ctypes.c_void_p * 1)(x.ctypes.data)
        outp = (ctypes.c_void_p * 1)(out.ctypes.data)
        fn = ctypes.cast(model._entry.run, ctypes.c_void_p).value
        keep = (x, out, ins, outp, sym)
        n = 1
        while (t := self.loop(fn, model._session, sym, ins, outp, n)) < budget / 4:
            n *= 4
        n = max(1, int(n * budget / t))

        def rep() -> float:
            assert keep
            return self.loop(fn, model._session, sym, ins, outp, n) / n

        return rep


def python_rep(fn, budget: float):
    """One repetition of about ``budget`` CPU seconds of ``fn()`` calls: thread CPU seconds per call."""
    fn()
    t0 = time.thread_time()
    calls = 0
    while time.thread_time() - t0 < budget / 10:
        fn()
        calls += 1
    calls = max(1, calls * 10)

    def rep() -> float:
        t = time.thread_time()
        for _ in range(calls):
            fn()
        return (time.thread_time() - t) / calls

    return rep

OPS = {
    "Tanh": ("Tanh", {}, None),
    "Erf": ("Erf", {}, None),
    "Exp": ("Exp", {}, None),
    "Log": ("Log", {}, None),
    "Pow2": ("Pow", {}, np.float32(2.0)),
    "Pow1.7": ("Pow", {}, np.float32(1.7)),
    "Sigmoid": ("Sigmoid", {}, None),
    "Softplus": ("Softplus", {}, None),
    "Elu": ("Elu", {}, None),
    "Gelu": ("Gelu", {}, None),
    "Sqrt": ("Sqrt", {}, None),
    "Asin": ("Asin", {}, None),
    "Acos": ("Acos", {}, None),
    "Atan": ("Atan", {}, None),
    "Sinh": ("Sinh", {}, None),
    "Cosh": ("Cosh", {}, None),
    "Asinh": ("Asinh", {}, None),
    "Acosh": ("Acosh", {}, None),
    "Atanh": ("Atanh", {}, None),
    "Sin": ("Sin", {}, None),
    "Cos": ("Cos", {}, None),
    "Tan": ("Tan", {}, None),
}
SHAPES = [(256, 128), (1, 128)]


def model(op: str, attrs: dict, exponent) -> onnx.ModelProto:
    ins = ["x"] + (["e"] if exponent is not None else [])
    inits = [numpy_helper.from_array(np.asarray(exponent), "e")] if exponent is not None else []
    node = helper.make_node(op, ins, ["y"], **attrs)
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 128])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 128])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


def inputs(name: str, shape) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3
    if name in ("Asin", "Acos", "Atanh"):  # the domain (-1, 1), as benchmarks/ops.py's "unit"
        return np.random.default_rng(0).uniform(-0.9, 0.9, shape).astype(np.float32)
    if name == "Acosh":
        return np.abs(x) + np.float32(1.1)
    return np.abs(x) + np.float32(0.1) if name in ("Log", "Pow1.7", "Sqrt") else x


def _floor_session(d: str):
    """ORT's fixed cost of a call from Python: an Identity model on one float (I/O binding)."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "floor",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    path = Path(d) / "floor.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9), path)
    return ort_iobinding(ort_session(path), (np.ones(1, np.float32),))


def bench(names: list[str], rounds: int, budget: float) -> list[dict]:
    loop = CpuLoop()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        floor = _floor_session(d)
        for name in names:
            op, attrs, exponent = OPS[name]
            path = Path(d) / f"{name}.onnx"
            onnx.save(model(op, attrs, exponent), path)
            m = sofie_root.compile(str(path))
            sess = ort_session(path)
            for shape in SHAPES:
                x = inputs(name, shape)
                np.testing.assert_allclose(m(x), sess.run(None, {"x": x})[0], rtol=2e-5, atol=1e-6)
                reps = {
                    "loop": loop.prepare(m, x, budget),
                    "infer": python_rep(lambda m=m, x=x: m.infer(x), budget),
                    "ort_run": python_rep(lambda s=sess, x=x: s.run(None, {"x": x}), budget),
                    "ort_io": python_rep(ort_iobinding(sess, (x,)), budget),
                    "ort_floor": python_rep(floor, budget),
                }
                t = interleaved(reps, rounds)
                med = {k: statistics.median(v) * 1e6 for k, v in t.items()}
                ratio_loop = statistics.median(a / b for a, b in zip(t["ort_io"], t["loop"]))
                # ORT's own time for the node (I/O binding minus its fixed cost per call, at least 1%
                # of it), against the C++ loop: benchmarks/ops.py's "ORT net / C++" in CPU time
                ratio_net = statistics.median(max(a - f, 0.01 * a) / b
                                              for a, f, b in zip(t["ort_io"], t["ort_floor"], t["loop"]))
                ratio_infer = statistics.median(a / b for a, b in zip(t["ort_run"], t["infer"]))
                rows.append({"op": name, "shape": list(shape), **{f"{k}_us": v for k, v in med.items()},
                             "ort_io_over_loop": ratio_loop, "ort_net_over_loop": ratio_net,
                             "ort_run_over_infer": ratio_infer})
                print(f"{name:9s} {list(shape)!s:10s} loop {med['loop']:8.2f} us  infer {med['infer']:8.2f} us  "
                      f"ORT io {med['ort_io']:8.2f} us  run {med['ort_run']:8.2f} us  "
                      f"ORT/ours loop {ratio_loop:6.2f}  net {ratio_net:6.2f}  infer {ratio_infer:6.2f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="5 rounds of 20 ms (default 9 rounds of 50 ms)")
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated subset of " + ",".join(OPS))
    p.add_argument("--json", help="write the rows as JSON here")
    a = p.parse_args(argv)
    names = [n for n in a.ops.split(",") if n]
    unknown = sorted(set(names) - set(OPS))
    if unknown:
        p.error(f"unknown operators {unknown}")
    rounds, budget = (5, 0.02) if a.quick else (9, 0.05)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; times are medians over {rounds} "
          "interleaved rounds", flush=True)
    rows = bench(names, rounds, budget)
    ratios = [r["ort_io_over_loop"] for r in rows]
    net = [r["ort_net_over_loop"] for r in rows]
    print(f"geometric mean ORT/ours (C++ loop vs I/O binding): {float(np.exp(np.mean(np.log(ratios)))):.2f}; "
          f"ORT net / C++ loop: {float(np.exp(np.mean(np.log(net)))):.2f}, worst "
          + ", ".join(f"{r['op']} {r['shape']} {r['ort_net_over_loop']:.2f}"
                      for r in sorted(rows, key=lambda r: r["ort_net_over_loop"])[:3]))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
