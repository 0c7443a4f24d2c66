"""Latency and throughput of compiled models against ONNX Runtime, in one process.

    python benchmarks/bench.py [--models dense,jet,cnn] [--json out.json]

For each model: compile time (ONNX -> callable, in a fresh process, ``import ROOT`` excluded),
per-event latency at batch 1 (the generated code called from a C++ loop, ``model.infer`` from
Python, ONNX Runtime ``run`` and I/O binding, single thread), and per-event time at batch 256.
Medians over repetitions; ratios are against ONNX Runtime from the same run.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import hep_models

REPS = 7

_LOOP_CODE = r"""
#include <chrono>
namespace sofie_bench {
using run_fn = int (*)(void *, const std::int64_t *, const void *const *, void *const *, char *, std::size_t);
inline double loop(void *fn, void *session, const std::int64_t *sym, const void *const *in, void *const *out,
                   long n)
{
   char err[256];
   auto run = reinterpret_cast<run_fn>(fn);
   auto t0 = std::chrono::steady_clock::now();
   for (long i = 0; i < n; ++i)
      run(session, sym, in, out, err, sizeof(err));
   return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}
"""


def _median_time(fn, calls: int) -> float:
    """Median over REPS repetitions of the time per call, in seconds."""
    fn()
    times = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def _calls_for(fn, budget: float = 0.15) -> int:
    t0 = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t0, 1e-7)
    return max(1, int(budget / dt))


def compile_time(path: Path) -> float:
    """ONNX -> callable in a fresh process, ROOT already imported and initialised."""
    code = ("import time, sofie_root; from sofie_root.jit import cling; cling.root(); "
            f"t = time.perf_counter(); sofie_root.compile({str(path)!r}); print(time.perf_counter() - t)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


class CppLoop:
    """Times the generated ``run`` entry point called from a C++ loop (what an event loop pays)."""

    def __init__(self) -> None:
        from sofie_root.jit import cling

        root = cling.root()
        cling._declare(root, _LOOP_CODE, "the benchmark loop")
        addr = int(root.gInterpreter.ProcessLine("(long long)(&sofie_bench::loop);"))
        self.loop = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long)(addr)

    def per_call(self, model, arrays: tuple[np.ndarray, ...]) -> float:
        syms = {}
        for info, a in zip(model.graph.input_infos, arrays):
            model._bind(info, a.shape, syms)
        sym = (ctypes.c_int64 * max(1, len(model._symbols)))(*[syms[s] for s in model._symbols])
        outs = [np.empty(tuple(d.evaluate(syms) if hasattr(d, "evaluate") else d for d in i.shape), i.dtype.numpy)
                for i in model.graph.output_infos]
        ins = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        outp = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
        fn = ctypes.cast(model._entry.run, ctypes.c_void_p).value
        n = 10
        while True:
            t = self.loop(fn, model._session, sym, ins, outp, n)
            if t > 0.05:
                break
            n *= 4
        times = [self.loop(fn, model._session, sym, ins, outp, n) / n for _ in range(REPS)]
        return statistics.median(times)


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_iobinding(sess, arrays):
    import onnxruntime as ort

    binding = sess.io_binding()
    for i, a in zip(sess.get_inputs(), arrays):
        binding.bind_ortvalue_input(i.name, ort.OrtValue.ortvalue_from_numpy(a))
    for o in sess.get_outputs():
        binding.bind_output(o.name)
    sess.run_with_iobinding(binding)
    return lambda: sess.run_with_iobinding(binding)


def bench_model(name: str, workdir: Path, loop: CppLoop) -> dict:
    import sofie_root

    path = workdir / f"{name}.onnx"
    hep_models.export(name, path)
    result: dict = {"model": name, "compile_s": compile_time(path)}
    model = sofie_root.compile(path)
    sess = ort_session(path)
    names = [i.name for i in sess.get_inputs()]
    rng = np.random.default_rng(0)
    for batch in (1, 256):
        arrays = hep_models.inputs(name, batch, rng)
        ours = model.infer(*arrays)
        ref = sess.run(None, dict(zip(names, arrays)))
        result[f"max_abs_diff_b{batch}"] = float(max(np.max(np.abs(a - r)) for a, r in zip(ours, ref)))
        feeds = dict(zip(names, arrays))
        f_infer = lambda arrays=arrays: model.infer(*arrays)  # noqa: E731
        f_ort = lambda feeds=feeds: sess.run(None, feeds)  # noqa: E731
        f_bind = ort_iobinding(sess, arrays)
        result[f"cpp_loop_b{batch}_us"] = loop.per_call(model, arrays) * 1e6 / batch
        result[f"infer_b{batch}_us"] = _median_time(f_infer, _calls_for(f_infer)) * 1e6 / batch
        result[f"ort_run_b{batch}_us"] = _median_time(f_ort, _calls_for(f_ort)) * 1e6 / batch
        result[f"ort_iobinding_b{batch}_us"] = _median_time(f_bind, _calls_for(f_bind)) * 1e6 / batch
    return result


def table(results: list[dict]) -> str:
    head = ("| model | compile s | b1 C++ loop µs | b1 infer µs | b1 ORT run µs | b1 ORT iobind µs | "
            "b1 C++/ORT-iobind | b256 C++ µs/evt | b256 ORT µs/evt | b256 C++/ORT |")
    lines = [head, "|---" * 10 + "|"]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['compile_s']:.2f} | {r['cpp_loop_b1_us']:.1f} | {r['infer_b1_us']:.1f} | "
            f"{r['ort_run_b1_us']:.1f} | {r['ort_iobinding_b1_us']:.1f} | "
            f"{r['cpp_loop_b1_us'] / r['ort_iobinding_b1_us']:.2f} | {r['cpp_loop_b256_us']:.2f} | "
            f"{r['ort_iobinding_b256_us']:.2f} | {r['cpp_loop_b256_us'] / r['ort_iobinding_b256_us']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(hep_models.MODELS))
    p.add_argument("--json", help="also write the results as JSON to this file")
    a = p.parse_args(argv)
    loop = CppLoop()
    results = []
    with tempfile.TemporaryDirectory() as d:
        for name in a.models.split(","):
            results.append(bench_model(name, Path(d), loop))
            print(f"  {name}: done", file=sys.stderr)
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
