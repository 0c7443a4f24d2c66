"""The benchmark suite: compiled models against ONNX Runtime and against this core's limits.

    python benchmarks/bench.py [--models dense,jet,...] [--quick] [--no-fresh]
                               [--json benchmarks/results/latest.json]      (or: make bench)

For each model of the corpus (benchmarks/corpus.py: fourteen HEP networks, the five of
benchmarks/hep_models.py among them), side by side in one process:

- per-event time at batch 1 and at batch 256 of the generated ``run`` called from a C++ loop
  (what an event loop pays), of the same with the native backend (``backend="native"``, when
  sofie_root has it), of ``model.infer`` from Python, and of ONNX Runtime (one thread) ``run``
  and I/O binding from Python. The variants are measured interleaved (A, B, C, A, B, C, ...), so
  load from other processes hits them alike; medians over the repetitions, and ratios against
  ONNX Runtime as medians of the per-repetition ratios;
- FLOP per event (benchmarks/flops.py, from the compiled graph) and the fraction of this core's
  FP32 FMA peak that the C++ loop reaches at batch 1 and 256 (the peak measured by
  benchmarks/peak.py, compiled by g++ when there is one);
- for the dense model, the weight-streaming floor at batch 1: its weight bytes divided by the
  rate at which one core reads that many bytes from cache, and its latency in units of it;
- compile time (ONNX file -> callable) and peak RSS of compiling and running the model once at
  batch 1 and 256, in a fresh process (``import ROOT`` done before the clock starts); the RSS of a
  process that only starts sofie_root and ROOT is reported as the baseline;
- arena bytes against the sum of intermediate tensor sizes and the liveness lower bound at
  batch 1 and 256 (``Model.memory_stats``, "n/a" in versions without it).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

import sofie_root  # noqa: E402  (before ROOT: it sets EXTRA_CLING_ARGS)
from benchmarks import corpus, flops, peak  # noqa: E402

DEFAULT_JSON = ROOT_DIR / "benchmarks" / "results" / "latest.json"
REPS = 7          # repetitions per variant (--quick: 3)
BUDGET = 0.1      # seconds per repetition of one variant (--quick: 0.03)
BATCHES = (1, 256)

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

# What a fresh process does for the compile-time and memory columns. Inputs are made from the
# model's own input specs, so the child does not import torch (that would dominate its RSS).
# Peak RSS is the kernel's high-water mark of the child's own memory (VmHWM): getrusage's
# ru_maxrss is not usable here, as Linux carries the RSS of the forking process (this one, with
# torch and the models in it) into the child's ru_maxrss across exec. Once ROOT is up, the child
# resets the high-water mark (/proc/self/clear_refs), so VmHWM at the end is the peak of
# compiling and running; "rise" is that peak minus the RSS at the reset.
_CHILD = r"""
import json, re, resource, sys, time
import numpy as np
import sofie_root
from sofie_root.jit import cling
cling.root()

def status(key):
    try:
        with open("/proc/self/status") as f:
            return int(re.search(key + r":\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return None

hwm_start = status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {"peak_rss_kb": hwm_start}
if len(sys.argv) > 1:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start = status("VmRSS")
    except OSError:
        start = None
    t = time.perf_counter()
    model = sofie_root.compile(sys.argv[1])
    out["compile_s"] = time.perf_counter() - t
    rng = np.random.default_rng(0)
    for batch in (1, 256):
        model.infer(*[rng.standard_normal([batch if isinstance(d, str) else d for d in s.shape]).astype(s.dtype)
                      for s in model.inputs])
    hwm = status("VmHWM")
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak_rss_kb"] = max(hwm_start, hwm)
    if start is not None:
        out["rise_kb"] = hwm - start
print("SOFIE_BENCH " + json.dumps(out))
"""


def fresh_process(path: Path | None = None) -> dict:
    """In a new process: compile time, peak RSS (``peak_rss_kb``) and the rise of RSS above the
    level once ROOT is up (``rise_kb``) of compiling ``path`` and running it once at batch 1 and
    256; without ``path``, the peak RSS of a process that only starts sofie_root and ROOT."""
    args = [sys.executable, "-c", _CHILD] + ([str(path)] if path else [])
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT_DIR)
    line = next((x for x in r.stdout.splitlines() if x.startswith("SOFIE_BENCH ")), None)
    if r.returncode or line is None:
        raise RuntimeError(f"benchmark child process failed ({path}):\n{r.stderr[-3000:]}")
    return json.loads(line.split(" ", 1)[1])


def compile_time(path: Path) -> float:
    """ONNX -> callable in a fresh process, ROOT already imported and initialised."""
    return fresh_process(path)["compile_s"]


def aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``align``-byte boundary.

    The C++ loop writes its outputs here: onnxruntime's I/O binding, which it is compared with,
    writes into outputs its own allocator made (64-byte aligned), while numpy's ``np.empty`` gives
    16-byte alignment, at which a row of vector stores straddles cache lines (store-bound cases
    ran up to 1.6x slower, Tile [256, 64] x 4: 2.8 against 4.4 us; docs/performance.md, "Output
    alignment")."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


class CppLoop:
    """Times the generated ``run`` entry point called from a C++ loop (what an event loop pays)."""

    def __init__(self) -> None:
        from sofie_root.jit import cling

        root = cling.root()
        cling._declare(root, _LOOP_CODE, "the benchmark loop")
        addr = int(root.gInterpreter.ProcessLine("(long long)(&sofie_bench::loop);"))
        self.loop = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long)(addr)

    def prepare(self, model, arrays: tuple[np.ndarray, ...], budget: float = BUDGET) -> Callable[[], float]:
        """A function timing one repetition (about ``budget`` seconds): seconds per call."""
        syms: dict[str, int] = {}
        for info, a in zip(model.graph.input_infos, arrays):
            model._bind(info, a.shape, syms)
        # outputs sized by the data (Unique, Compress, NonMaxSuppression) at their upper bound, as infer does
        data = getattr(model._generated, "data_symbols", {})
        syms.update({k: (b.evaluate(syms) if hasattr(b, "evaluate") else int(b)) for k, b in data.items()})
        n_sym = len(model._symbols) + len(data)
        values = [syms[s] for s in model._symbols]
        sym = (ctypes.c_int64 * max(1, n_sym))(*values)
        outs = [aligned_empty(tuple(d.evaluate(syms) if hasattr(d, "evaluate") else d for d in i.shape), i.dtype.numpy)
                for i in model.graph.output_infos]
        ins = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        outp = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
        fn = ctypes.cast(model._entry.run, ctypes.c_void_p).value
        keep = (arrays, outs, ins, outp, sym)  # alive as long as the closure
        n = 1
        while True:
            t = self.loop(fn, model._session, sym, ins, outp, n)
            if t > budget / 4:
                break
            n *= 4
        n = max(1, int(n * budget / t))

        def rep() -> float:
            assert keep
            return self.loop(fn, model._session, sym, ins, outp, n) / n

        return rep

    def per_call(self, model, arrays: tuple[np.ndarray, ...]) -> float:
        """Median over REPS repetitions of the time per call, in seconds."""
        rep = self.prepare(model, arrays)
        return statistics.median(rep() for _ in range(REPS))


def _calls_per_rep(fn: Callable[[], object], budget: float) -> int:
    """How many ``fn()`` calls take about ``budget`` seconds (after one warm-up call)."""
    fn()
    t0 = time.perf_counter()
    fn()
    return max(1, int(budget / max(time.perf_counter() - t0, 1e-7)))


def python_rep(fn: Callable[[], object], budget: float = BUDGET) -> Callable[[], float]:
    """A function timing one repetition of about ``budget`` seconds of ``fn()`` calls: seconds per call."""
    calls = _calls_per_rep(fn, budget)

    def rep() -> float:
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t) / calls

    return rep


def python_call_median(fn: Callable[[], object], budget: float = BUDGET) -> Callable[[], float]:
    """Like :func:`python_rep`, but each call is timed on its own and a repetition gives the
    median of its calls: seconds per call plus the cost of reading the clock, which cancels in a
    difference of two such figures (ORT net = I/O binding minus the Identity floor). The mean of a
    repetition moves by 1-3% of ORT's ~4.4 us call from one repetition to the next, more than a
    batch-1 operator takes; the median of thousands of single calls does not."""
    calls = _calls_per_rep(fn, budget)
    clock = time.perf_counter_ns

    def rep() -> float:
        ts = [0] * calls
        for i in range(calls):
            t = clock()
            fn()
            ts[i] = clock() - t
        return statistics.median(ts) * 1e-9

    return rep


def interleaved(reps: dict[str, Callable[[], float]], n: int) -> dict[str, list[float]]:
    """``n`` rounds, each running every variant once in turn; the times per variant."""
    times: dict[str, list[float]] = {k: [] for k in reps}
    for _ in range(n):
        for k, rep in reps.items():
            times[k].append(rep())
    return times


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


def has_native() -> bool:
    return "backend" in inspect.signature(sofie_root.compile).parameters


def _symbols(model, arrays) -> dict[str, int]:
    syms: dict[str, int] = {}
    for info, a in zip(model.graph.input_infos, arrays):
        model._bind(info, a.shape, syms)
    return syms


def bench_model(name: str, path: Path, loop: CppLoop, peak_gflops: float, reps: int, budget: float,
                fresh: bool = True) -> dict:
    result: dict = {"model": name, "compile_s": None, "rss_kb": None, "rss_rise_kb": None}
    if fresh:
        child = fresh_process(path)
        result.update(compile_s=child["compile_s"], rss_kb=child["peak_rss_kb"], rss_rise_kb=child.get("rise_kb"))
    model = sofie_root.compile(path)
    models = {"cpp": model}
    if has_native():
        try:
            models["native"] = sofie_root.compile(path, backend="native")
        except Exception as e:  # the JSON says why the column is missing
            result["native_error"] = f"{type(e).__name__}: {e}"[:300]
    sess = ort_session(path)
    names = [i.name for i in sess.get_inputs()]
    rng = np.random.default_rng(0)
    result["weight_bytes"] = flops.weight_bytes(model.graph)
    for batch in BATCHES:
        arrays = corpus.MODELS[name].inputs(batch, rng)
        syms = _symbols(model, arrays)
        result["flop_per_event"] = flops.total(model.graph, syms) / batch
        if hasattr(model, "memory_stats"):
            result[f"memory_b{batch}"] = {k: int(v) for k, v in model.memory_stats(**syms).items()}
        feeds = dict(zip(names, arrays))
        ref = sess.run(None, feeds)
        for k, m in models.items():
            ours = m.infer(*arrays)
            result[f"{k}_max_abs_diff_b{batch}"] = float(max(np.max(np.abs(a - r)) for a, r in zip(ours, ref)))
        variants = {k: loop.prepare(m, arrays, budget) for k, m in models.items()}
        variants["infer"] = python_rep(lambda arrays=arrays: model.infer(*arrays), budget)
        variants["ort_run"] = python_rep(lambda feeds=feeds: sess.run(None, feeds), budget)
        variants["ort_iobinding"] = python_rep(ort_iobinding(sess, arrays), budget)
        times = interleaved(variants, reps)
        for k, t in times.items():
            result[f"{k}_b{batch}_us"] = statistics.median(t) * 1e6 / batch
        for k in ("cpp", "native", "infer"):
            if k in times:
                result[f"{k}_vs_ort_iobinding_b{batch}"] = statistics.median(
                    a / b for a, b in zip(times[k], times["ort_iobinding"]))
        # the figure of merit: ORT run / infer (above 1: faster than ONNX Runtime from Python)
        result[f"ort_run_over_infer_b{batch}"] = statistics.median(
            b / a for a, b in zip(times["infer"], times["ort_run"]))
        flop = result["flop_per_event"]
        result[f"cpp_peak_fraction_b{batch}"] = flop / (result[f"cpp_b{batch}_us"] * 1e-6) / (peak_gflops * 1e9)
        result[f"ort_peak_fraction_b{batch}"] = (flop / (result[f"ort_iobinding_b{batch}_us"] * 1e-6)
                                                 / (peak_gflops * 1e9))
    return result


def machine(fresh: bool = True) -> dict:
    """The machine's figures: CPU, load, FP32 FMA peak and cache read bandwidth."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    out: dict = {"cpu": cpu, "cores": os.cpu_count(), "loadavg_start": os.getloadavg(),
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "extra_cling_args": os.environ.get("EXTRA_CLING_ARGS", "")}
    import onnxruntime

    out["onnxruntime"] = onnxruntime.__version__
    out["baseline_rss_kb"] = fresh_process()["peak_rss_kb"] if fresh else None
    # many short runs (shorter than a scheduler slice): the best one is one no other process interrupted
    out["fma_gflops"] = {c: peak.fma_peak(c, reps=60, seconds=0.002) for c in peak.compilers()}
    out["peak_gflops"] = out["fma_gflops"][peak.compilers()[0]]["peak"]
    out["peak_from"] = peak.compilers()[0]
    return out


def _f(v, fmt: str = ".2f", scale: float = 1.0) -> str:
    return "n/a" if v is None else format(v * scale, fmt)


def _kib(v) -> str:
    return "n/a" if v is None else f"{v / 1024:.0f}"


def geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def summary(results: list[dict], batch: int) -> str:
    """One line per batch: geometric means and the worst model of ORT run / infer and of ORT
    iobind / C++ loop (above 1: faster than ONNX Runtime)."""
    parts = []
    for label, key, invert in (("ORT run / infer", f"ort_run_over_infer_b{batch}", False),
                               ("ORT iobind / C++ loop", f"cpp_vs_ort_iobinding_b{batch}", True)):
        vals = {r["model"]: (1 / r[key] if invert else r[key]) for r in results if r.get(key)}
        if vals:
            worst = min(vals, key=vals.get)
            slower = sum(v < 1 for v in vals.values())
            parts.append(f"{label}: geometric mean {geomean(list(vals.values())):.2f}, worst {vals[worst]:.2f} "
                         f"({worst}), {slower} of {len(vals)} slower than ORT")
    return f"Batch {batch}: " + "; ".join(parts) + "."


def tables(results: list[dict], m: dict) -> str:
    """The results as markdown tables."""
    native = any("native_b1_us" in r for r in results)
    out = []
    for batch in BATCHES:
        head = [f"model (batch {batch}, µs/event)", "C++ loop"] + (["native C++ loop"] if native else []) + [
            "infer", "ORT run", "ORT iobind", "C++ / ORT iobind"] + (["native / ORT iobind"] if native else []) + [
            "infer / ORT iobind", "ORT run / infer", "FLOP/event", "C++ % peak", "ORT % peak"]
        out += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in results:
            g = r.get
            row = [r["model"], _f(g(f"cpp_b{batch}_us"))] + ([_f(g(f"native_b{batch}_us"))] if native else []) + [
                _f(g(f"infer_b{batch}_us")), _f(g(f"ort_run_b{batch}_us")), _f(g(f"ort_iobinding_b{batch}_us")),
                _f(g(f"cpp_vs_ort_iobinding_b{batch}"))] + (
                [_f(g(f"native_vs_ort_iobinding_b{batch}"))] if native else []) + [
                _f(g(f"infer_vs_ort_iobinding_b{batch}")), _f(g(f"ort_run_over_infer_b{batch}")),
                f"{r['flop_per_event'] / 1e6:.3f} M",
                _f(g(f"cpp_peak_fraction_b{batch}"), ".1f", 100), _f(g(f"ort_peak_fraction_b{batch}"), ".1f", 100)]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        out.append(summary(results, batch))
        out.append("")
    head = ["model", "compile s", "peak RSS MiB", "peak RSS - baseline MiB", "RSS rise MiB", "weights KiB",
            "arena KiB b1", "intermediates KiB b1", "liveness bound KiB b1", "arena / bound b1",
            "arena KiB b256", "intermediates KiB b256", "liveness bound KiB b256", "arena / bound b256"]
    out += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in results:
        rss, base = r["rss_kb"], m.get("baseline_rss_kb")
        row = [r["model"], _f(r["compile_s"]), _kib(rss), _kib(rss - base if rss and base else None),
               _f(r.get("rss_rise_kb"), ".0f", 1 / 1024),
               _kib(r["weight_bytes"])]
        for batch in BATCHES:
            mem = r.get(f"memory_b{batch}") or {}
            arena, bound = mem.get("arena_bytes"), mem.get("liveness_bound_bytes")
            row += [_kib(arena), _kib(mem.get("intermediate_bytes")), _kib(bound),
                    _f(arena / bound if arena is not None and bound else None)]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    fma = ", ".join(f"{c}: {v['peak']:.0f}" for c, v in m["fma_gflops"].items())
    out.append(f"FP32 FMA peak of one core (GFLOP/s, kernel compiled by {fma}); fractions use "
               f"{m['peak_gflops']:.0f} ({m['peak_from']}).")
    floor = m.get("dense_floor")
    if floor:
        out.append(f"Dense batch-1 weight-streaming floor: {floor['weight_bytes'] / 1024:.0f} KiB of weights at "
                   f"{floor['gb_per_s']:.0f} GB/s = {floor['floor_us']:.2f} µs; C++ loop = "
                   f"{floor['cpp_over_floor']:.2f}x the floor" + (
                       f", native = {floor['native_over_floor']:.2f}x" if "native_over_floor" in floor else "") + ".")
    if m.get("baseline_rss_kb"):
        out.append(f"Baseline: peak RSS of a process that only starts sofie_root and ROOT: "
                   f"{m['baseline_rss_kb'] / 1024:.0f} MiB. RSS rise: how far compiling and running went above "
                   f"the RSS the process had once ROOT was up.")
    else:
        out.append("Compile time and RSS not measured (--quick or --no-fresh: no fresh processes).")
    out.append(f"{m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}, {m['date']}; load average "
               f"{m['loadavg_start'][0]:.2f} at the start, {m['loadavg_end'][0]:.2f} at the end.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(corpus.MODELS), help="comma-separated, from: "
                   + ", ".join(corpus.MODELS))
    p.add_argument("--quick", action="store_true", help=f"3 shorter repetitions instead of {REPS}, no fresh "
                   "processes (as --no-fresh)")
    p.add_argument("--no-fresh", action="store_true", help="skip the compile-time and RSS columns (each needs "
                   "a fresh process per model)")
    p.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the results (default: %(default)s)")
    a = p.parse_args(argv)
    names = [n.strip() for n in a.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in corpus.MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; known: {', '.join(corpus.MODELS)}")
    reps, budget = (3, 0.03) if a.quick else (REPS, BUDGET)
    t_start = time.perf_counter()
    fresh = not (a.quick or a.no_fresh)
    m = machine(fresh)
    loop = CppLoop()
    results = []
    dense_bw: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            path = Path(d) / f"{name}.onnx"  # a copy of the cached export: the file name is the model's
            path.write_bytes(corpus.onnx_path(name).read_bytes())
            results.append(bench_model(name, path, loop, m["peak_gflops"], reps, budget, fresh))
            if name == "dense":
                dense_bw = {c: peak.read_bandwidth(results[-1]["weight_bytes"], c, reps=60, seconds=0.002)
                            for c in peak.compilers()}
            print(f"  {name}: done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr, flush=True)
    dense = next((r for r in results if r["model"] == "dense"), None)
    if dense:
        bw = {c: peak.read_bandwidth(dense["weight_bytes"], c, reps=60, seconds=0.002) for c in peak.compilers()}
        # also measured right after the dense model ran: the better of the two (load only lowers it)
        for c, figures in bw.items():
            figures["best"] = max(figures["best"], dense_bw.get(c, {}).get("best", 0.0))
        gbs = bw[peak.compilers()[0]]["best"]
        floor_us = dense["weight_bytes"] / (gbs * 1e9) * 1e6
        m["dense_floor"] = {"weight_bytes": dense["weight_bytes"], "read_gb_per_s": bw, "gb_per_s": gbs,
                            "floor_us": floor_us, "cpp_over_floor": dense["cpp_b1_us"] / floor_us}
        if "native_b1_us" in dense:
            m["dense_floor"]["native_over_floor"] = dense["native_b1_us"] / floor_us
    m["loadavg_end"] = os.getloadavg()
    m["seconds"] = time.perf_counter() - t_start
    print(tables(results, m), flush=True)
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": m, "models": results}, indent=1))
    print(f"\n(written to {out}; {m['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
