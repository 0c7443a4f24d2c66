"""Sizes and times of .root model files against ONNX, per compression algorithm.

    .venv/bin/python benchmarks/serialization.py [--repeat 3] [--big-width 2048]

For the end-to-end HEP models (benchmarks/hep_models.py) and one MLP of 12.6 M parameters:
the ONNX file size (with external data), the .root size per compression, the time of
``Model.save`` against ``onnx.save`` and of reading the IR back (``serialization.reader.read``,
checks included) against ``onnx.load``. Medians over ``--repeat`` runs. Not part of the tests.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sofie_root
from benchmarks import hep_models

reader = __import__("sofie_root.serialization.reader", fromlist=["read"])

COMPRESSIONS = ["ZSTD:1", "ZSTD:5", "ZSTD:9", "LZMA:6", "LZ4:4", "ZLIB:6", "NONE"]


def big_mlp(path: Path, width: int) -> None:
    """x[N, width/2] -> width -> width -> width -> width/2: about 12.6 M parameters at 2048."""
    rng = np.random.default_rng(0)
    sizes = [width // 2, width, width, width, width // 2]
    nodes, inits, prev = [], [], "x"
    for k, (a, b) in enumerate(itertools.pairwise(sizes)):
        bound = 1 / np.sqrt(a)  # torch.nn.Linear's initialisation
        inits.append(numpy_helper.from_array(rng.uniform(-bound, bound, (b, a)).astype(np.float32), f"w{k}"))
        inits.append(numpy_helper.from_array(rng.uniform(-bound, bound, b).astype(np.float32), f"b{k}"))
        nodes.append(helper.make_node("Gemm", [prev, f"w{k}", f"b{k}"], [f"g{k}"], transB=1))
        prev = f"g{k}"
        if k < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{k}"]))
            prev = f"r{k}"
    graph = helper.make_graph(nodes, "big_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def onnx_bytes(path: Path) -> int:
    proto = onnx.load(str(path), load_external_data=False)
    extra = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in extra)


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-width", type=int, default=2048)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sofie_ser_bench_"))
    paths = {}
    for name in sorted(hep_models.MODELS):
        paths[name] = tmp / f"{name}.onnx"
        hep_models.export(name, paths[name])
    paths["mlp_12M"] = tmp / "mlp_12M.onnx"
    big_mlp(paths["mlp_12M"], args.big_width)

    rows = []
    for name, path in paths.items():
        model = sofie_root.compile(path)
        params = int(sum(a.size for a in model.graph.initializers.values()))
        proto = onnx.load(str(path))
        size_onnx = onnx_bytes(path)
        t_onnx_save = timed(lambda: onnx.save(proto, str(tmp / "resave.onnx")), args.repeat)  # noqa: B023
        t_onnx_load = timed(lambda: onnx.load(str(tmp / "resave.onnx")), args.repeat)
        for comp in COMPRESSIONS:
            out = tmp / f"{name}_{comp.replace(':', '_')}.root"

            def save(out=out, comp=comp, model=model, name=name) -> None:
                out.unlink(missing_ok=True)
                model.save(out, name, compression=comp)

            t_save = timed(save, args.repeat)
            t_read = timed(lambda out=out: reader.read(out), args.repeat)
            rows.append((name, params, size_onnx, comp, out.stat().st_size, t_save, t_onnx_save, t_read, t_onnx_load))

    head = (f"{'model':<8} {'params':>10} {'onnx bytes':>12} {'compression':<11} {'root bytes':>12} {'ratio':>6} "
            f"{'save s':>8} {'onnx.save':>9} {'read s':>8} {'onnx.load':>9}")
    print(head)
    print("-" * len(head))
    for name, params, so, comp, sr, ts, tos, tr, tol in rows:
        print(f"{name:<8} {params:>10,} {so:>12,} {comp:<11} {sr:>12,} {sr / so:>6.3f} "
              f"{ts:>8.3f} {tos:>9.3f} {tr:>8.3f} {tol:>9.3f}")
    print("\nratio = .root / .onnx bytes; save = Model.save (writing with uproot), read = the IR and weights "
          "read back and checked (serialization.reader.read), against onnx.save / onnx.load of the same model. "
          f"Medians of {args.repeat}.")


if __name__ == "__main__":
    main()
