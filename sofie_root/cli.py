"""The ``sofie-root`` command line: a thin layer over the public API.

Exit codes: 0 success, 1 an error reported on stderr (the model cannot be compiled or does not
match the reference; a file is missing, corrupt or holds no such model; a name clash on save),
2 usage errors (argparse).
"""

from __future__ import annotations

import argparse
import sys
import time

EPILOG = """examples:
  sofie-root ops                          list the supported ONNX operators
  sofie-root check model.onnx             compile, run on random inputs, compare with onnxruntime
  sofie-root source model.onnx -o m.cxx   write the generated C++
  sofie-root compile model.onnx -o model.root [--name N] [--compression ZSTD:1]
                                          store the model (IR + weights) in a ROOT file
  sofie-root inspect model.root[:name]    models in the file, inputs/outputs, operators, sizes
  sofie-root emit model.root[:name] -o outdir/
                                          a standalone C++ header reading its weights with TFile
  sofie-root bench model.onnx --profile   time per call at batch 1 and 256, and per operator
  sofie-root bench model.onnx --backend native
                                          the same with the code built by the system C++ compiler
"""


def _random_inputs(model, batch: int):
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = []
    for spec in model.inputs:
        shape = tuple(batch if isinstance(d, str) else d for d in spec.shape)
        if spec.dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(spec.dtype))
        elif spec.dtype.kind == "b":
            arrays.append(rng.integers(0, 2, shape).astype(bool))
        else:
            arrays.append(rng.integers(0, 4, shape).astype(spec.dtype))
    return arrays


def cmd_ops(args: argparse.Namespace) -> int:
    from . import supported_ops

    for op in supported_ops():
        print(op)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import numpy as np

    from . import compile as sofie_compile

    t0 = time.perf_counter()
    model = sofie_compile(args.model, backend=args.backend)
    print(f"compiled {args.model} ({model.backend}) in {time.perf_counter() - t0:.2f} s: {model}")
    arrays = _random_inputs(model, args.batch)
    ours = model.infer(*arrays)
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed: outputs not compared")
        return 0
    sess = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})
    worst = 0.0
    for spec, a, r in zip(model.outputs, ours, ref):
        d = float(np.max(np.abs(a.astype(np.float64) - r.astype(np.float64)))) if a.size else 0.0
        worst = max(worst, d)
        print(f"  {spec}: max |difference| vs onnxruntime = {d:.3g}")
    ok = all(np.allclose(a, r, rtol=args.rtol, atol=args.atol, equal_nan=True) for a, r in zip(ours, ref))
    print("OK" if ok else f"MISMATCH (rtol={args.rtol}, atol={args.atol})")
    return 0 if ok else 1


def cmd_source(args: argparse.Namespace) -> int:
    from . import compile as sofie_compile

    model = sofie_compile(args.model)
    text = model.source
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from . import compile as sofie_compile

    t0 = time.perf_counter()
    model = sofie_compile(args.model, backend=args.backend)
    name = model.save(args.output, args.name, compression=args.compression, overwrite=args.overwrite)
    print(f"{args.model} -> {args.output}:{name} ({time.perf_counter() - t0:.2f} s)")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .serialization.inspect import report

    print(report(args.file, args.onnx))
    return 0


def cmd_emit(args: argparse.Namespace) -> int:
    from .serialization.emit import emit

    path = emit(args.file, args.output, namespace=args.namespace)
    print(f"wrote {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import statistics

    from . import compile as sofie_compile

    t0 = time.perf_counter()
    model = sofie_compile(args.model, backend=args.backend)
    print(f"compiled {args.model} ({model.backend}) in {time.perf_counter() - t0:.2f} s: {model}")
    for batch in args.batch:
        arrays = _random_inputs(model, batch)
        model.infer(*arrays)
        calls = max(1, int(0.1 / max(_time_once(model, arrays), 1e-7)))
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(calls):
                model.infer(*arrays)
            times.append((time.perf_counter() - t) / calls)
        per_call = statistics.median(times)
        print(f"  batch {batch:5d}: {per_call * 1e6:10.1f} us per call, {per_call / batch * 1e6:8.2f} us per event "
              "(model.infer from Python, median of 5)")
    if args.profile:
        arrays = _random_inputs(model, args.batch[0])
        rows = model.profile(*arrays, repeat=args.repeat)
        total = sum(r[2] for r in rows) or 1.0
        print(f"\n  time per operator at batch {args.batch[0]} (generated code, {args.repeat} calls):")
        print(f"  {'op type':20s} {'node':32s} {'us/call':>10s} {'share':>7s}")
        for name, op, sec in rows:
            print(f"  {op:20s} {name[:32]:32s} {sec * 1e6:10.2f} {100 * sec / total:6.1f}%")
    return 0


def _time_once(model, arrays) -> float:
    t = time.perf_counter()
    model.infer(*arrays)
    return time.perf_counter() - t


def _backend_option(p: argparse.ArgumentParser, note: str = "") -> None:
    p.add_argument("--backend", choices=("cling", "native", "cuda", "hip", "gpu-emulated"), default=None,
                   help="what compiles the generated C++: cling (ROOT's JIT), native (the system C++ "
                        "compiler, $CXX or c++), or a GPU backend: cuda (nvcc + cuBLAS), hip (hipcc), "
                        "gpu-emulated (the GPU kernels run on the CPU); default $SOFIE_ROOT_BACKEND or cling "
                        f"{note}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sofie-root", description="Compile neural networks to C++ for ROOT analyses.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ops", help="list the supported operators")
    p.set_defaults(fn=cmd_ops)
    p = sub.add_parser("check", help="compile a model and compare it with onnxruntime on random inputs")
    p.add_argument("model", help="an .onnx file")
    p.add_argument("--batch", type=int, default=4, help="value of symbolic dimensions (default 4)")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=1e-5)
    _backend_option(p)
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("source", help="print (or write) the generated C++")
    p.add_argument("model", help="an .onnx file")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(fn=cmd_source)
    p = sub.add_parser("compile", help="compile a model and store it (IR and weights) in a .root file",
                       description="Compile an ONNX model and store its IR, compressed, in a ROOT file "
                                   "(several models per file, one directory each).")
    p.add_argument("model", help="an .onnx file")
    p.add_argument("-o", "--output", required=True, help="the .root file to write (created or updated)")
    p.add_argument("--name", help="the model's name in the file (default: the ONNX file's stem)")
    p.add_argument("--compression", default=None, metavar="ALG[:LEVEL]",
                   help="ZSTD, LZMA, LZ4, ZLIB or NONE, with an optional level (default ZSTD:1)")
    p.add_argument("--overwrite", action="store_true", help="replace a model of the same name")
    _backend_option(p, "(checks that it compiles; the file holds the IR either way)")
    p.set_defaults(fn=cmd_compile)
    p = sub.add_parser("inspect", help="describe the models in a .root file",
                       description="List the models in a .root file with their inputs, outputs, "
                                   "operators, parameter count and size on disk.")
    p.add_argument("file", help="a .root file, or file.root:name for one model")
    p.add_argument("--onnx", help="an ONNX file to compare the size on disk with")
    p.set_defaults(fn=cmd_inspect)
    p = sub.add_parser("emit", help="write a standalone C++ header for a model in a .root file",
                       description="Write <outdir>/<name>.hxx: the runtime, a TFile weight reader and the "
                                   "model; in C++: NS::Session s(\"model.root\"); s.infer(...).")
    p.add_argument("file", help="a .root file, or file.root:name")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--namespace", help="C++ namespace of the model (default: sofie_<name>)")
    p.set_defaults(fn=cmd_emit)
    p = sub.add_parser("bench", help="time a model (batch 1 and 256) and, with --profile, each operator")
    p.add_argument("model", help="an .onnx file, a .root file or file.root:name")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 256],
                   help="batch sizes (values of symbolic dimensions), default 1 256")
    p.add_argument("--profile", action="store_true", help="also print the time per operator")
    p.add_argument("--repeat", type=int, default=200, help="calls for the profile (default 200)")
    _backend_option(p)
    p.set_defaults(fn=cmd_bench)
    args = parser.parse_args(argv)
    from .errors import SofieError

    try:
        return args.fn(args)
    except SofieError as e:
        print(f"sofie-root: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
