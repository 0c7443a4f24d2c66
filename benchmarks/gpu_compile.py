"""Compile times of the GPU backend's generated sources, per corpus model: a table.

    python benchmarks/gpu_compile.py                       # every corpus model, every compiler found
    python benchmarks/gpu_compile.py --models dense,jet --out /tmp/t.md
    make gpu-compile-times                                 # the same, table in benchmarks/results/gpu-compile.md

For each model the source is generated once (it is the same for every GPU backend) and compiled,
uncached, by each compiler found here:

* ``g++ emulated``: the host emulation's object file (what ``make test`` runs);
* ``nvcc sm_90``: the CUDA object for one architecture (the compile check of ``make test``);
* ``nvcc library``: the build of ``compile(backend="cuda")``: a shared library with sm_80 and
  sm_90 code and compute_90 PTX, cuBLAS linked (the default ``SOFIE_ROOT_CUDA_ARCHS``);
* ``hipcc gfx90a``: the HIP object for AMD MI200 (kernels only where hipBLAS is absent).

Each cell is the compiler's CPU seconds (user + system of the child processes, which is about
the wall time on an idle core) and the wall time in brackets; the load average is printed with
the table, since on a shared machine the wall time can be many times the CPU time. A last row
compiles every model in one translation unit, as the tests do. A compiler that is missing
gives an empty column, with the reason below the table.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR))
os.environ.setdefault("SOFIE_ROOT_LAZY", "1")  # no ROOT start: nothing here uses it

# (column title, backend, architectures or None for the build's defaults, link as the real build)
COLUMNS = (
    ("g++ emulated object", "gpu-emulated", None, False),
    ("nvcc sm_90 object", "cuda", ["90"], False),
    ("nvcc library sm_80+sm_90+PTX, cuBLAS", "cuda", None, True),
    ("hipcc gfx90a object", "hip", ["gfx90a"], False),
)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(fn, *args, **kwargs) -> tuple[float, float]:
    """(CPU seconds of the child processes, wall seconds) of fn(*args, **kwargs)."""
    c0, t0 = _children_cpu(), time.perf_counter()
    fn(*args, **kwargs)
    return _children_cpu() - c0, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    import sofie_root
    from benchmarks import corpus
    from sofie_root.errors import SofieError
    from sofie_root.gpu import build

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(sorted(corpus.MODELS)), help="comma-separated corpus models")
    p.add_argument("--out", default=str(ROOT_DIR / "benchmarks" / "results" / "gpu-compile.md"))
    a = p.parse_args(argv)
    names = [n for n in a.models.split(",") if n]
    unknown = [n for n in names if n not in corpus.MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; the corpus has {sorted(corpus.MODELS)}")

    columns, missing = [], []
    for title, backend, archs, link in COLUMNS:
        try:
            build._command(backend, compile_only=not link, archs=archs)
            columns.append((title, backend, archs, link))
        except SofieError as e:
            missing.append(f"{title}: not measured, {e}")

    sources = []
    for name in names:
        model = sofie_root.compile(corpus.onnx_path(name), backend="gpu-emulated")
        sources.append((name, model.namespace, model.source, model._generated.kernels))

    head = "| model | kernels | " + " | ".join(c[0] for c in columns) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(columns)]
    print(lines[0], "\n" + lines[1], flush=True)
    totals = [0.0] * len(columns)
    for name, ns, src, kernels in sources:
        cells = []
        for k, (_, backend, archs, link) in enumerate(columns):
            cpu, wall = _timed(build.compile_check, src, ns, backend, archs=archs, link=link)
            totals[k] += cpu
            cells.append(f"{cpu:.1f} s ({wall:.0f} s)")
        lines.append(f"| {name} | {kernels} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    lines.append(f"| sum of the {len(sources)} | | " + " | ".join(f"{t:.1f} s" for t in totals) + " |")
    together = []
    for _, backend, archs, link in columns:
        if link:  # one library per model: a joint build means nothing to a user
            together.append("")
            continue
        cpu, wall = _timed(build.compile_check, [(ns, src) for _, ns, src, _ in sources], backend=backend,
                           archs=archs)
        together.append(f"{cpu:.1f} s ({wall:.0f} s)")
    lines.append(f"| all {len(sources)} in one translation unit | | " + " | ".join(together) + " |")
    print("\n".join(lines[-2:]))
    load = os.getloadavg()
    tools = {"nvcc": build.nvcc(), "hipcc": build.hipcc()}
    notes = [f"CPU seconds of the compiler (wall seconds in brackets); load average {load[0]:.1f} "
             f"{load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores; command: python benchmarks/gpu_compile.py"]
    for k, v in tools.items():  # the version lines ("release 13.0", "HIP version: 5.2", "clang version 15")
        lines_v = [ln for ln in v[1].splitlines() if "version" in ln.lower() or "release" in ln] if v else []
        notes.append(f"{k}: {'; '.join(lines_v) or (v[1].splitlines()[-1] if v else 'not found')}")
    notes += missing
    print("\n".join(notes))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    print(f"table in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
