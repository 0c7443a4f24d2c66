"""Times one compiled single-node model of the per-operator table with its input and output at
chosen offsets from a page: tells what the buffers' alignment costs a kernel.

    python benchmarks/alignment.py [--calls 2000] 'Tile [N,64] x 4' ['Relu' ...]

For each case of ``benchmarks/ops.py`` named, at its batch-1 and batch-256 shapes: the generated
``run`` from the C++ loop (``bench.CppLoop``), minimum over 9 repetitions, with every input at byte
offset ``i`` and every output at offset ``o`` from a 4 KiB page, for (i, o) in (0, 0), (16, 16),
(0, 16), (16, 0), (32, 32), (48, 48) and (16, 2064). Offset 0 is what onnxruntime's allocator and
``bench.aligned_empty`` give (64-byte aligned); 16 is what ``np.empty`` usually gives (malloc, or a
page plus 16 bytes for large arrays from mmap), at which a 64-byte vector store straddles two cache
lines; (16, 2064) puts input and output 2 KiB apart within their pages. docs/performance.md,
"Output alignment, and the stalls it hid", quotes this table.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sofie_root  # before ROOT: it sets EXTRA_CLING_ARGS
from benchmarks import ops
from benchmarks.bench import CppLoop

OFFSETS = [(0, 0), (16, 16), (0, 16), (16, 0), (32, 32), (48, 48), (16, 2064)]


def at_offset(nbytes: int, offset: int) -> np.ndarray:
    """``nbytes`` uint8 starting ``offset`` bytes after a 4 KiB boundary."""
    raw = np.empty(nbytes + offset + 4096, np.uint8)
    start = (-raw.ctypes.data) % 4096 + offset
    return raw[start:start + nbytes]


def times(loop: CppLoop, model, arrays: tuple[np.ndarray, ...], calls: int) -> list[float]:
    """Seconds per call of ``model`` on ``arrays`` at each of OFFSETS."""
    syms: dict[str, int] = {}
    for info, a in zip(model.graph.input_infos, arrays):
        model._bind(info, a.shape, syms)
    sym = (ctypes.c_int64 * max(1, len(model._symbols)))(*[syms[s] for s in model._symbols])
    fn = ctypes.cast(model._entry.run, ctypes.c_void_p).value
    out = []
    for ioff, ooff in OFFSETS:
        ins = []
        for a in arrays:
            b = at_offset(a.nbytes, ioff).view(a.dtype).reshape(a.shape)
            b[...] = a
            ins.append(b)
        outs = []
        for info in model.graph.output_infos:
            shape = tuple(d.evaluate(syms) if hasattr(d, "evaluate") else d for d in info.shape)
            outs.append(at_offset(int(np.prod(shape, dtype=np.int64)) * np.dtype(info.dtype.numpy).itemsize, ooff))
        inp = (ctypes.c_void_p * len(ins))(*[b.ctypes.data for b in ins])
        outp = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
        out.append(min(loop.loop(fn, model._session, sym, inp, outp, calls) / calls for _ in range(9)))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", nargs="+", help="case labels of benchmarks/ops.py")
    parser.add_argument("--calls", type=int, default=2000, help="calls per repetition at batch 1 (/200 at 256)")
    args = parser.parse_args(argv)
    by_label = {c.label: c for c in ops.cases()}
    unknown = [lab for lab in args.labels if lab not in by_label]
    if unknown:
        parser.error(f"no such case in benchmarks/ops.py: {', '.join(unknown)}")
    loop = CppLoop()
    print("| case | batch | " + " | ".join(f"in {i} / out {o}" for i, o in OFFSETS) + " |")
    print("|---|---|" + "---|" * len(OFFSETS))
    for label in args.labels:
        case = by_label[label]
        model = sofie_root.compile(case.model())
        for k, batch in enumerate(case.batches[:2]):
            arrays = case.arrays(batch, np.random.default_rng(0))
            t = times(loop, model, arrays, args.calls if k == 0 else max(5, args.calls // 200))
            print(f"| {label} | {batch} | " + " | ".join(f"{x * 1e6:.3f} µs" for x in t) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
