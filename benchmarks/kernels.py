"""The convolutions and dense layers of the benchmark corpus, one by one, against ONNX Runtime.

    python benchmarks/kernels.py [--quick] [--models pixel_cnn,cnn] [--json PATH]

Every Conv, Gemm and MatMul with a constant weight of the corpus models (benchmarks/corpus.py),
as sofie_root compiles them (BatchNorm folded, the activation fused: FusedConv, FusedGemm,
FusedMatMul), becomes a small model of its own: the product with its weights, then its bias and
activation as plain ONNX nodes (which ONNX Runtime fuses too). Identical layers are timed once.
Each is checked against ONNX Runtime (``benchmarks/ops.py``'s tolerance), then timed in one
process, one thread, interleaved, medians, in the **thread's CPU time** (on a machine shared with
other jobs, wall-clock time mostly measures how often the scheduler ran someone else; ORT with
one intra-op thread runs on the calling thread): the generated ``run`` from a C++ loop against
ORT's I/O binding minus ORT's fixed cost per call (I/O binding of a one-element Identity model),
**ORT net / C++** (above 1: faster than ORT), at batch 1 and 256. The table is sorted by the
worse of the two ratios, so its first rows are the layers to work on. ``--whole`` times the
models themselves the same way.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sofie_root  # before ROOT: it sets EXTRA_CLING_ARGS
from benchmarks import corpus
from benchmarks.bench import aligned_empty, ort_iobinding
from benchmarks.ops import _geomean, ort_floor
from sofie_root.ir.dims import Dim

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "kernels.json"
PRODUCTS = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul")
ACT_PREFIX = "act_"


class Layer:
    """One product node of a compiled corpus model as a stand-alone ONNX model (duck-typed like
    ``benchmarks.ops.Case`` for ``run_case``)."""

    batches = (1, 256)

    def __init__(self, graph, node, model_name: str) -> None:
        self.models = [model_name]
        base = node.op_type.removeprefix("Fused")
        self.op = base
        attrs = {k: v for k, v in node.attrs.items() if k != "activation" and not k.startswith(ACT_PREFIX)}
        self.act = str(node.attrs.get("activation", "")) if node.op_type.startswith("Fused") else ""
        act_attrs = {k[len(ACT_PREFIX):]: v for k, v in node.attrs.items() if k.startswith(ACT_PREFIX)}
        x = graph.info(node.inputs[0])
        self.x_shape = tuple(d if isinstance(d, int) else ("N" if str(d) == "N" else str(d)) for d in x.shape)
        self.x_dims = tuple(x.shape)
        w = graph.initializers[node.inputs[1]]
        bias = graph.initializers[node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else None
        inits = {"w": w}
        nodes = []
        if base == "MatMul":
            nodes.append(helper.make_node("MatMul", ["x", "w"], ["p"]))
            cur = "p"
            if bias is not None:
                inits["b"] = bias
                nodes.append(helper.make_node("Add", ["p", "b"], ["pb"]))
                cur = "pb"
        else:
            ins = ["x", "w"] + (["b"] if bias is not None else [])
            if bias is not None:
                inits["b"] = bias
            nodes.append(helper.make_node(base, ins, ["p"], **attrs))
            cur = "p"
        if self.act:
            nodes.append(helper.make_node(self.act, [cur], ["y"], **act_attrs))
        else:
            nodes[-1].output[0] = "y"
        self.nodes, self.inits = nodes, inits
        geo = ""
        if base == "Conv":
            k = "x".join(str(int(v)) for v in w.shape[2:])
            g = int(attrs.get("group", 1))
            s = attrs.get("strides")
            geo = (f"{k} {int(w.shape[1]) * g}->{w.shape[0]}" + (f" g{g}" if g > 1 else "")
                   + (f" s{s[0]}" if s and max(s) > 1 else ""))
        else:
            geo = f"x[{w.shape[0]},{w.shape[1]}]" + (" +b" if bias is not None else "")
        shape = ",".join(str(d) for d in self.x_shape)
        self.label = f"{base} {geo} [{shape}]" + (f" +{self.act}" if self.act else "")
        self.key = self.label

    def model(self) -> onnx.ModelProto:
        ins = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(self.x_shape))]
        outs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]
        graph = helper.make_graph(self.nodes, "layer", ins, outs,
                                  [numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        opset = 20 if self.act == "Gelu" else 17
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)

    def arrays(self, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
        shape = tuple(d.evaluate({"N": batch}) if isinstance(d, Dim) else d for d in self.x_dims)
        return [rng.standard_normal(shape).astype(np.float32)]


class WholeModel:
    """A corpus model as a whole (``--whole``), timed like a layer."""

    batches = (1, 256)

    def __init__(self, name: str) -> None:
        self.label, self.models, self.name = name, [name], name

    def model(self) -> onnx.ModelProto:
        return onnx.load(corpus.onnx_path(self.name))

    def arrays(self, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
        return list(corpus.MODELS[self.name].inputs(batch, rng))


def layers(models: list[str]) -> list[Layer]:
    """The distinct product layers of ``models`` (a layer shared by several keeps their names)."""
    seen: dict = {}
    for name in models:
        proto, _ = corpus.MODELS[name](1)
        g = sofie_root.compile(proto).graph
        for node in g.nodes:
            if node.op_type not in PRODUCTS or len(node.inputs) < 2 or node.inputs[1] not in g.initializers:
                continue
            layer = Layer(g, node, name)
            if layer.key in seen:
                if name not in seen[layer.key].models:
                    seen[layer.key].models.append(name)
            else:
                seen[layer.key] = layer
    return list(seen.values())


_CPU_LOOP = r"""
#include <time.h>
namespace sofie_kernels {
using run_fn = int (*)(void *, const std::int64_t *, const void *const *, void *const *, char *, std::size_t);
inline double loop(void *fn, void *session, const std::int64_t *sym, const void *const *in, void *const *out,
                   long n)
{
   char err[256];
   auto run = reinterpret_cast<run_fn>(fn);
   timespec t0, t1;
   clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
   for (long i = 0; i < n; ++i)
      run(session, sym, in, out, err, sizeof(err));
   clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
   return double(t1.tv_sec - t0.tv_sec) + 1e-9 * double(t1.tv_nsec - t0.tv_nsec);
}
}
"""


class CpuLoop:
    """The generated ``run`` called from a C++ loop, timed in the thread's CPU time."""

    def __init__(self) -> None:
        from sofie_root.jit import cling

        root = cling.root()
        cling._declare(root, _CPU_LOOP, "the kernel benchmark loop")
        addr = int(root.gInterpreter.ProcessLine("(long long)(&sofie_kernels::loop);"))
        self.loop = ctypes.CFUNCTYPE(ctypes.c_double, *[ctypes.c_void_p] * 5, ctypes.c_long)(addr)

    def prepare(self, model, arrays, budget: float) -> Callable[[], float]:
        syms: dict[str, int] = {}
        for info, a in zip(model.graph.input_infos, arrays):
            model._bind(info, a.shape, syms)
        sym = (ctypes.c_int64 * max(1, len(model._symbols)))(*[syms[s] for s in model._symbols])
        outs = [aligned_empty(tuple(d.evaluate(syms) if isinstance(d, Dim) else d for d in i.shape), i.dtype.numpy)
                for i in model.graph.output_infos]
        ins = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        outp = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
        fn = ctypes.cast(model._entry.run, ctypes.c_void_p).value
        n = 1
        while self.loop(fn, model._session, sym, ins, outp, n) < budget / 4:
            n *= 4
        keep = (arrays, outs, ins, outp, sym)

        def rep() -> float:
            assert keep
            return self.loop(fn, model._session, sym, ins, outp, n) / n

        return rep


def cpu_rep(fn: Callable[[], object], budget: float) -> Callable[[], float]:
    """Seconds of the thread's CPU time per ``fn()`` call, over about ``budget`` seconds."""
    fn()
    calls, t = 0, time.thread_time()
    while time.thread_time() - t < budget / 4:
        fn()
        calls += 1
    calls = max(1, calls * 4)

    def rep() -> float:
        t0 = time.thread_time()
        for _ in range(calls):
            fn()
        return (time.thread_time() - t0) / calls

    return rep


def run_layer(layer: Layer, loop: CpuLoop, reps: int, budget: float, floor) -> dict:
    """Compile, check against ORT and time one layer at batch 1 and 256."""
    import onnxruntime as ort

    res: dict = {"case": layer.label}
    proto = layer.model()
    model = sofie_root.compile(proto)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    names = [i.name for i in sess.get_inputs()]
    for batch in layer.batches:
        arrays = layer.arrays(batch, rng)
        refs = sess.run(None, dict(zip(names, arrays)))
        for ours, ref in zip(model.infer(*arrays), refs):
            if ours.shape != ref.shape or not np.allclose(ours, ref, rtol=1e-3, atol=1e-4):
                res["error"] = f"output differs from onnxruntime at batch {batch}"
                return res
        variants = {"cpp": loop.prepare(model, tuple(arrays), budget),
                    "ort_iobinding": cpu_rep(ort_iobinding(sess, arrays), budget), "ort_floor": cpu_rep(floor, budget)}
        times = {k: [] for k in variants}
        for _ in range(reps):
            for k, rep in variants.items():
                times[k].append(rep())
        net = [max(b - f, 0.01 * b) for b, f in zip(times["ort_iobinding"], times["ort_floor"])]
        res[f"cpp_b{batch}_us"] = statistics.median(times["cpp"]) * 1e6
        res[f"ort_net_b{batch}_us"] = statistics.median(net) * 1e6
        res[f"ort_net_over_cpp_b{batch}"] = statistics.median(n / c for c, n in zip(times["cpp"], net))
    return res


def table(results: list[dict], meta: dict) -> str:
    lines = ["| layer | models | µs C++ b1 | µs ORT net b1 | ORT net / C++ b1 | µs/event C++ b256 | "
             "µs/event ORT net b256 | ORT net / C++ b256 |", "|---" * 8 + "|"]

    def f(v):
        return "–" if v is None else f"{v:.2f}"

    for r in results:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['models']} | not timed: {r['error'].splitlines()[0][:100]} |||||")
            continue
        lines.append(f"| {r['case']} | {r['models']} | {f(r.get('cpp_b1_us'))} | {f(r.get('ort_net_b1_us'))} | "
                     f"{f(r.get('ort_net_over_cpp_b1'))} | {f(r['cpp_b256_us'] / 256)} | "
                     f"{f(r['ort_net_b256_us'] / 256)} | {f(r.get('ort_net_over_cpp_b256'))} |")
    timed = [r for r in results if "error" not in r]
    for b in (1, 256):
        vals = [r[f"ort_net_over_cpp_b{b}"] for r in timed]
        if vals:
            lines.append(f"\nBatch {b}: ORT net / C++ geometric mean {_geomean(vals):.2f}, "
                         f"{sum(v < 1 for v in vals)} of {len(vals)} layers below 1.0.")
    lines.append(f"\n{meta['date']}, BLAS {meta['blas']}, load average {meta['load_start']:.2f} at the start, "
                 f"{meta['load_end']:.2f} at the end, {meta['seconds']:.0f} s.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 short repetitions instead of 7")
    p.add_argument("--models", default=",".join(corpus.MODELS), help="comma-separated corpus models")
    p.add_argument("--only", default="", help="only layers whose label contains this text")
    p.add_argument("--whole", action="store_true", help="time the models themselves instead of their layers")
    p.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the results (default: %(default)s)")
    a = p.parse_args(argv)
    reps, budget = (3, 0.02) if a.quick else (7, 0.06)
    t0 = time.perf_counter()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "load_start": os.getloadavg()[0], "blas": os.environ.get("SOFIE_ROOT_BLAS", "openblas")}
    names = [m.strip() for m in a.models.split(",") if m.strip()]
    selected = ([WholeModel(m) for m in names] if a.whole
                else [x for x in layers(names) if a.only in x.label])
    loop = CpuLoop()
    floor = ort_floor()
    results = []
    for i, layer in enumerate(selected):
        r = run_layer(layer, loop, reps, budget, floor)
        r["models"] = ",".join(layer.models)
        results.append(r)
        print(f"  [{i + 1}/{len(selected)}] {layer.label}: " + (r.get("error", "") or
              f"b1 {r['ort_net_over_cpp_b1']:.2f} b256 {r['ort_net_over_cpp_b256']:.2f}"), file=sys.stderr, flush=True)
    results.sort(key=lambda r: min(r.get("ort_net_over_cpp_b1", 0), r.get("ort_net_over_cpp_b256", 0)))
    meta["load_end"] = os.getloadavg()[0]
    meta["seconds"] = time.perf_counter() - t0
    print(table(results, meta), flush=True)
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "layers": results}, indent=1))
    print(f"\n(written to {out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
