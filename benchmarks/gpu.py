"""GPU benchmark: the models of benchmarks/hep_models.py on one GPU, against PyTorch (the models'
own framework, on the same GPU) and ONNX Runtime (its CUDA provider where installed, else CPU).

    python benchmarks/gpu.py [--backend cuda] [--models dense,jet] [--batches 1,256,4096]
                             [--out benchmarks/results/gpu.md] [--quick]

Per model and batch, interleaved (A, B, C, A, B, C, ...) so load hits every variant alike, median
time per call of: sofie_root with device inputs (PyTorch CUDA tensors in place, outputs left on
the device, synchronised), sofie_root with numpy inputs (copies both ways), PyTorch (``no_grad``,
synchronised), ONNX Runtime; and the ratios against ONNX Runtime and PyTorch. Also the build
time (nvcc) per model. ``--backend gpu-emulated`` runs the same script on a machine without a
GPU (the emulation's timings mean nothing; it checks the script). No network access is needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

import sofie_root  # noqa: E402
from benchmarks import hep_models  # noqa: E402


def _timer(fn, sync, budget: float) -> float:
    """Median seconds per call of ``fn`` over a few calls filling ``budget`` seconds."""
    fn()
    sync()
    times = []
    t_end = time.perf_counter() + budget
    while time.perf_counter() < t_end or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="cuda", choices=("cuda", "hip", "gpu-emulated"))
    p.add_argument("--models", default=",".join(sorted(hep_models.MODELS)))
    p.add_argument("--batches", default="1,256,4096")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    p.add_argument("--out", default=str(ROOT_DIR / "benchmarks" / "results" / "gpu.md"))
    args = p.parse_args(argv)
    status = sofie_root.gpu_available(args.backend)
    if not status:
        print(f"gpu benchmark: the {args.backend} backend cannot run here: {status.reason}", file=sys.stderr)
        return 3
    import onnxruntime as ort
    import torch

    on_gpu = args.backend != "gpu-emulated" and torch.cuda.is_available()
    dev = torch.device("cuda" if on_gpu else "cpu")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    budget = 0.05 if args.quick else 0.2
    reps = 2 if args.quick else args.reps
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    header = (f"GPU benchmark ({args.backend}: {status.reason}; PyTorch {torch.__version__} on {dev}; "
              f"ONNX Runtime {ort.__version__} with {providers[0]}), median seconds per call, {reps} interleaved "
              f"repetitions")
    print(header)
    with tempfile.TemporaryDirectory() as d:
        for name in args.models.split(","):
            path = Path(d) / f"{name}.onnx"
            module = hep_models.export(name, path)
            t0 = time.perf_counter()
            model = sofie_root.compile(path, backend=args.backend)
            compile_s = time.perf_counter() - t0
            build_s = getattr(model, "build_seconds", 0.0)
            tmod = module.to(dev)
            sess = ort.InferenceSession(str(path), providers=providers)
            for batch in batches:
                xs = hep_models.inputs(name, batch, np.random.default_rng(batch))
                txs = [torch.from_numpy(x).to(dev) for x in xs]
                feed = {i.name: x for i, x in zip(sess.get_inputs(), xs)}
                ref = sess.run(None, feed)[0]
                dev_in = txs if on_gpu else None
                got = model.infer(*xs)[0]
                err = float(np.max(np.abs(got - ref)))
                variants = {
                    "sofie (device)": (lambda m=model, a=dev_in: m.infer(*a)) if dev_in is not None else None,
                    "sofie (numpy)": lambda m=model, a=xs: m.infer(*a),
                    "pytorch": lambda m=tmod, a=txs: _torch_call(m, a),
                    "onnxruntime": lambda s=sess, f=feed: s.run(None, f),
                }
                times: dict[str, list[float]] = {k: [] for k, fn in variants.items() if fn is not None}
                for _ in range(reps):
                    for k in times:
                        times[k].append(_timer(variants[k], sync, budget))
                med = {k: statistics.median(v) for k, v in times.items()}
                best = med.get("sofie (device)", med["sofie (numpy)"])
                row = (name, batch, med, best / med["onnxruntime"], best / med["pytorch"], err, compile_s, build_s)
                rows.append(row)
                print(f"{name:12s} batch {batch:5d}: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in med.items())
                      + f"; sofie/ort {row[3]:.2f}, sofie/torch {row[4]:.2f}; max |diff| {err:.1e}")
    lines = [header, "", "| model | batch | sofie device (ms) | sofie numpy (ms) | PyTorch (ms) | ONNX Runtime (ms) "
             "| sofie/ORT | sofie/PyTorch | max abs diff | compile (s) | nvcc build (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, batch, med, r_ort, r_torch, err, cs, bs in rows:
        devt = f"{med['sofie (device)'] * 1e3:.3f}" if "sofie (device)" in med else "n/a"
        lines.append(f"| {name} | {batch} | {devt} | {med['sofie (numpy)'] * 1e3:.3f} | {med['pytorch'] * 1e3:.3f} "
                     f"| {med['onnxruntime'] * 1e3:.3f} | {r_ort:.2f} | {r_torch:.2f} | {err:.1e} | {cs:.1f} | {bs:.1f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"table written to {out}")
    return 0


def _torch_call(module, xs):
    import torch

    with torch.no_grad():
        return module(*xs)


if __name__ == "__main__":
    sys.exit(main())
