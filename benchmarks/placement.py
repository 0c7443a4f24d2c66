"""Times several JIT copies of one case of the per-operator table: tells code-placement effects
from code effects.

    python benchmarks/placement.py [--no-flush] COPIES 'Reciprocal' ['IsNaN' ...]

Each copy is the same single-node model under another graph name, so cling compiles the same code
into another place in memory. For each copy: the minimum time per call of the generated ``run``
from a C++ loop at the batch-1 shape, and the low bits of the entry point's address. A spread
between copies of identical code is placement (branch prediction, call targets), not the kernel:
before ``Buffer::reserve``'s check was inlined into ``run``, about one copy in four of a small
element-wise model took 45 ns more per call (Reciprocal [1, 128]: 19 or 67 ns). ``--no-flush``
compiles the copies without the flush-to-zero guard (metadata ``sofie_root.flush_denormals=0``),
which shows what the guard costs a small model's call.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sofie_root  # before ROOT: it sets EXTRA_CLING_ARGS
from benchmarks import ops
from benchmarks.bench import CppLoop


def copies(loop: CppLoop, case: ops.Case, n: int, flush: bool = True) -> list[tuple[float, int]]:
    """(seconds per call, entry address) of ``n`` copies of ``case`` at its first batch size."""
    arrays = case.arrays(case.batches[0], np.random.default_rng(0))
    out = []
    for k in range(n):
        proto = case.model()
        proto.graph.name = f"{proto.graph.name}_copy{k}"
        if not flush:
            onnx.helper.set_model_props(proto, {"sofie_root.flush_denormals": "0"})
        model = sofie_root.compile(proto)
        rep = loop.prepare(model, tuple(arrays), 0.002)
        out.append((min(rep() for _ in range(5)), ctypes.cast(model._entry.run, ctypes.c_void_p).value))
    return out


def main(argv: list[str]) -> int:
    flush = "--no-flush" not in argv
    argv = [a for a in argv if a != "--no-flush"]
    n, labels = int(argv[0]), argv[1:]
    by_label = {c.label: c for c in ops.cases()}
    loop = CppLoop()
    print(f"load {os.getloadavg()[0]:.2f}, flush-to-zero guard {'on' if flush else 'off'}")
    for label in labels:
        times = copies(loop, by_label[label], n, flush)
        ns = [t * 1e9 for t, _ in times]
        print(f"{label:30s} min {min(ns):7.1f} ns  max {max(ns):7.1f} ns  | "
              + " ".join(f"{t:.0f}@{a & 0xffffff:06x}" for t, a in zip(ns, (a for _, a in times))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
