"""The convolutions and dense layers of the benchmark corpus, one by one, against ONNX Runtime.

    python benchmarks/kernels.py [--quick] [--models pixel_cnn,cnn] [--json PATH]

Every Conv, Gemm and MatMul with a constant weight of the corpus models (benchmarks/corpus.py),
as sofie_root compiles them (BatchNorm folded, the activation fused: FusedConv, FusedGemm,
FusedMatMul), becomes a small model of its own: the product with its weights, then its bias and
activation as plain ONNX nodes (which ONNX Runtime fuses too). Identical layers are timed once.
Each is checked against ONNX Runtime, then timed like a case of ``benchmarks/ops.py`` (one
process, one thread, interleaved, medians): the generated ``run`` from a C++ loop against ORT's
I/O binding minus ORT's fixed cost per call (**ORT net / C++**), at batch 1 and 256. The table is
sorted by the worse of the two ratios, so its first rows are the layers to work on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sofie_root  # before ROOT: it sets EXTRA_CLING_ARGS
from benchmarks import corpus
from benchmarks.bench import CppLoop
from benchmarks.ops import _geomean, ort_floor, run_case
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
    p.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the results (default: %(default)s)")
    a = p.parse_args(argv)
    reps, budget = (3, 0.02) if a.quick else (7, 0.06)
    t0 = time.perf_counter()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "load_start": os.getloadavg()[0], "blas": os.environ.get("SOFIE_ROOT_BLAS", "openblas")}
    selected = [x for x in layers([m.strip() for m in a.models.split(",") if m.strip()]) if a.only in x.label]
    loop = CppLoop()
    floor = ort_floor()
    results = []
    for i, layer in enumerate(selected):
        r = run_case(layer, loop, reps, budget, floor)  # type: ignore[arg-type]
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
