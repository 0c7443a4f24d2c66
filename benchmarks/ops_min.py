"""Minimum-based timing of selected cases of the per-operator table, for a loaded machine.

    python benchmarks/ops_min.py REPS 'Softmax*' 'LayerNormalization [N,300]' ...

Same cases as :mod:`benchmarks.ops` (a label, or a label prefix ending in ``*``), the generated
``run`` from a C++ loop and ONNX Runtime's I/O binding interleaved REPS times, one thread; prints
the **minimum** times and ORT net / C++ = (min ORT iobind - min ORT floor) / min C++. Medians
(``benchmarks/ops.py``) move with the other jobs on a shared machine; minima move less, and the
C++ loop's minimum is the figure to compare between two versions of the code run back to back.
No correctness check (``benchmarks/ops.py`` does it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sofie_root  # before ROOT: it sets EXTRA_CLING_ARGS
from benchmarks import ops
from benchmarks.bench import CppLoop, interleaved, ort_iobinding, python_rep


def main(argv: list[str]) -> int:
    import onnxruntime as ort

    reps, pats = int(argv[0]), argv[1:]
    sel = [c for c in ops.cases()
           if any(p == c.label or (p.endswith("*") and c.label.startswith(p[:-1])) for p in pats)]
    loop, floor = CppLoop(), ops.ort_floor()
    print(f"load {os.getloadavg()[0]:.2f}", flush=True)
    for c in sel:
        proto = c.model()
        model = sofie_root.compile(proto)
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        out = f"{c.label:40s}"
        for b in c.batches:
            arrays = c.arrays(b, rng)
            t = interleaved({"cpp": loop.prepare(model, tuple(arrays), 0.01),
                             "iob": python_rep(ort_iobinding(sess, arrays), 0.01),
                             "floor": python_rep(floor, 0.01)}, reps)
            cpp = min(t["cpp"])
            net = max(min(t["iob"]) - min(t["floor"]), 0.01 * min(t["iob"]))
            out += f" | b{b}: {cpp * 1e6:9.2f} us ORT {net * 1e6:9.2f} ratio {net / cpp:5.2f}"
        print(out, flush=True)
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
