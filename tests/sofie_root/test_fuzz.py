"""Fuzz test: seeded mutants of small ONNX models and .root files never crash, hang or raise
anything but a SofieError.

Mutants: byte flips and truncations of the serialized files, and structured edits -- of the
ONNX protobuf (dimensions, attribute kinds and values, missing inputs, cycles, duplicate names,
huge sizes, unknown operators, opsets) and of the .root document, re-written with recomputed
checksums so the edit reaches the checks behind them. Each mutant runs in a forked child with a
timeout: it is compiled (or loaded) and, when that succeeds, run on random inputs. Every outcome
must be a success or a SofieError; a signal, a timeout or another exception fails the test with
the seed that reproduces it.

``make test`` runs ``FUZZ_COUNT`` mutants (about two minutes on a loaded 2-core machine). The long
mode runs many more and prints the counts::

    SOFIE_FUZZ_LONG=3000 python -m pytest tests/sofie_root/test_fuzz.py -q -s
    python -m tests.sofie_root.test_fuzz --count 3000 --seed 1        # the same, as a script
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

FUZZ_COUNT = 40
TIMEOUT = 120.0  # seconds per mutant: a compile under heavy load takes a few seconds


# -- seed models ------------------------------------------------------------------------------
def seed_models() -> dict[str, onnx.ModelProto]:
    rng = np.random.default_rng(0)

    def f32(*shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32))

    def model(nodes, inputs, outputs, inits, opset=17):
        g = helper.make_graph(nodes, "seed", inputs, outputs, inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)

    vi = helper.make_tensor_value_info
    w1, b1, w2 = f32(4, 8), f32(8), f32(8, 2)
    w1.name, b1.name, w2.name = "w1", "b1", "w2"
    mlp = model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], alpha=1.0, transB=0),
                 helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("MatMul", ["r", "w2"], ["s"]),
                 helper.make_node("Softmax", ["s"], ["y"], axis=-1)],
                [vi("x", TensorProto.FLOAT, ["N", 4])], [vi("y", TensorProto.FLOAT, ["N", 2])], [w1, b1, w2])
    k = f32(2, 1, 3, 3)
    k.name = "k"
    cnn = model([helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                 helper.make_node("Shape", ["p"], ["shp"]),
                 helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
                 helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
                 helper.make_node("Concat", ["n1", "minus1"], ["newshape"], axis=0),
                 helper.make_node("Reshape", ["p", "newshape"], ["y"])],
                [vi("x", TensorProto.FLOAT, ["N", 1, 6, 6])], [vi("y", TensorProto.FLOAT, None)],
                [k, numpy_helper.from_array(np.array(0, np.int64), "zero"),
                 numpy_helper.from_array(np.array([0], np.int64), "zero1"),
                 numpy_helper.from_array(np.array([-1], np.int64), "minus1")])
    idx = numpy_helper.from_array(np.array([2, 0, 1], np.int64), "idx")
    misc = model([helper.make_node("Gather", ["x", "idx"], ["g"], axis=1),
                  helper.make_node("Expand", ["g", "eshape"], ["e"]),
                  helper.make_node("Where", ["cond", "e", "x"], ["w"]),
                  helper.make_node("ReduceSum", ["w", "axes"], ["y"], keepdims=1),
                  helper.make_node("Cast", ["y"], ["yi"], to=TensorProto.INT32)],
                 [vi("x", TensorProto.FLOAT, ["N", 3]), vi("cond", TensorProto.BOOL, ["N", 3])],
                 [vi("y", TensorProto.FLOAT, None), vi("yi", TensorProto.INT32, None)],
                 [idx, numpy_helper.from_array(np.array([1, 3], np.int64), "eshape"),
                  numpy_helper.from_array(np.array([1], np.int64), "axes")], opset=18)
    return {"mlp": mlp, "cnn": cnn, "misc": misc}


# -- mutations --------------------------------------------------------------------------------
HUGE = [0, 1, -1, 2 ** 31, 2 ** 33, 2 ** 40, 2 ** 62, -(2 ** 63)]
OPS = ["Relu", "Add", "Gemm", "Reshape", "Concat", "Gather", "Slice", "Conv", "Transpose", "Loop",
       "If", "NoSuchOp", "ConstantOfShape", "Range", "Tile", "Pad", "TopK", "Split", "Einsum"]


def _byte_flips(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        if b:
            b[rnd.randrange(len(b))] = rnd.randrange(256)
    return bytes(b)


def _truncate(data: bytes, rnd: random.Random) -> bytes:
    return data[:rnd.randrange(len(data))]


def _edit_onnx(m: onnx.ModelProto, rnd: random.Random) -> str:
    """One structured edit of ``m`` in place; returns its description."""
    g = m.graph
    kind = rnd.choice(["dim", "attr_value", "attr_kind", "missing_input", "cycle", "duplicate", "init_dims",
                       "op_type", "drop_node", "opset", "rename_io", "const_node", "huge_init"])
    if kind == "dim":
        vi = rnd.choice(list(g.input) + list(g.output))
        dims = vi.type.tensor_type.shape.dim
        if dims:
            d = rnd.choice(dims)
            if rnd.random() < 0.7:
                d.dim_value = rnd.choice(HUGE[:7]) if rnd.random() < 0.6 else rnd.randint(0, 9)
            else:
                d.dim_param = rnd.choice(["N", "M", "", "a b", "1"])
        return f"dim of {vi.name}"
    if kind in ("attr_value", "attr_kind"):
        n = rnd.choice(list(g.node))
        if not n.attribute:
            n.attribute.append(helper.make_attribute(rnd.choice(["axis", "perm", "alpha"]), rnd.choice(HUGE)))
            return f"new attribute on {n.op_type}"
        a = rnd.choice(list(n.attribute))
        value = rnd.choice([rnd.choice(HUGE), float("nan"), 1e300, "abc", [rnd.choice(HUGE)] * rnd.randint(0, 5),
                            [0.5, -1.0], ["x"], numpy_helper.from_array(np.zeros((2, 2), np.float32))])
        if kind == "attr_value" and isinstance(value, (int, float)) and a.type in (1, 2):
            if a.type == 2:
                a.i = int(value) if isinstance(value, int) else 7
            else:
                a.f = float(value)
        else:
            name = a.name
            n.attribute.remove(a)
            n.attribute.append(helper.make_attribute(name, value, attr_type=onnx.AttributeProto.INTS)
                               if isinstance(value, list) and not value else helper.make_attribute(name, value))
        return f"attribute {a.name} of {n.op_type}"
    if kind == "missing_input":
        n = rnd.choice(list(g.node))
        if n.input:
            n.input[rnd.randrange(len(n.input))] = rnd.choice(["", "nowhere"])
        return f"input of {n.op_type}"
    if kind == "cycle" and len(g.node) > 1:
        a, b = sorted(rnd.sample(range(len(g.node)), 2))
        if g.node[a].input and g.node[b].output:
            g.node[a].input[0] = g.node[b].output[0]
        return "cycle"
    if kind == "duplicate" and len(g.node) > 1:
        a, b = rnd.sample(range(len(g.node)), 2)
        g.node[a].output[0] = g.node[b].output[0]
        return "duplicate output"
    if kind == "init_dims" and g.initializer:
        t = rnd.choice(list(g.initializer))
        if t.dims:
            t.dims[rnd.randrange(len(t.dims))] = rnd.choice(HUGE[:6])
        return f"dims of initializer {t.name}"
    if kind == "huge_init":
        big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[2 ** 20, 2 ** 20], raw_data=b"\0" * 16)
        g.initializer.append(big)
        g.node[0].input.append("big")
        return "huge initializer without data"
    if kind == "op_type":
        n = rnd.choice(list(g.node))
        n.op_type = rnd.choice(OPS)
        return f"op_type -> {n.op_type}"
    if kind == "drop_node" and len(g.node) > 1:
        del g.node[rnd.randrange(len(g.node))]
        return "node dropped"
    if kind == "opset":
        m.opset_import[0].version = rnd.choice([0, 1, 6, 11, 13, 19, 21, 99, 10 ** 6])
        return f"opset {m.opset_import[0].version}"
    if kind == "rename_io":
        vi = rnd.choice(list(g.input) + list(g.output))
        vi.name = rnd.choice(["", "x", "h", "w1", "\u00e9\u00e8", "a" * 300, "y"])
        return "renamed graph input/output"
    if kind == "const_node":
        value = numpy_helper.from_array(np.array(rnd.choice([[2 ** 40, 3], [30000, 30000], [-1, 2], [0]]), np.int64))
        g.node.insert(0, helper.make_node("Constant", [], ["cshape"], value=value))
        g.node.insert(1, helper.make_node(rnd.choice(["ConstantOfShape", "Range", "Reshape", "Expand"]),
                                          ["cshape"] if rnd.random() < 0.5 else [g.input[0].name, "cshape"], ["c2"]))
        return "constant-driven size"
    return "no-op"


def _edit_root(doc: dict, rnd: random.Random) -> str:
    """One structured edit of a stored .root document (checksums are recomputed by the caller)."""
    g = doc["graph"]
    kind = rnd.choice(["shape", "dtype", "attr", "node_input", "init_offset", "value", "op_type", "opset"])
    if kind == "shape" and g["tensors"]:
        t = rnd.choice(g["tensors"])
        if t["shape"]:
            t["shape"][rnd.randrange(len(t["shape"]))] = rnd.choice(HUGE + ["N", "N*N", "2*M + 1", "bad name"])
    elif kind == "dtype" and g["tensors"]:
        rnd.choice(g["tensors"])["dtype"] = rnd.choice(["float64", "int64", "bool", "float16", "x"])
    elif kind == "attr" and g["nodes"]:
        n = rnd.choice(g["nodes"])
        n.setdefault("attrs", {})[rnd.choice(["axis", "alpha", "transB", "perm"])] = rnd.choice([
            {"kind": "int", "value": rnd.choice(HUGE)}, {"kind": "float", "value": "nan"},
            {"kind": "string", "value": "abc"}, {"kind": "ints", "value": [5, 5]}, {"kind": "weird", "value": 1}])
    elif kind == "node_input" and g["nodes"]:
        n = rnd.choice(g["nodes"])
        if n["inputs"]:
            n["inputs"][rnd.randrange(len(n["inputs"]))] = rnd.choice(["", "nowhere", g["outputs"][0]])
    elif kind == "init_offset" and g["initializers"]:
        i = rnd.choice(g["initializers"])
        i[rnd.choice(["offset", "nbytes"])] = rnd.choice([0, 64, 7, 2 ** 40, -64])
    elif kind == "value" and g["tensors"]:
        rnd.choice(g["tensors"])["value"] = [rnd.choice(HUGE), "N"]
    elif kind == "op_type" and g["nodes"]:
        rnd.choice(g["nodes"])["op_type"] = rnd.choice(OPS)
    elif kind == "opset" and g["nodes"]:
        rnd.choice(g["nodes"])["opset"] = rnd.choice([0, 1, 99, 10 ** 6])
    return f"root document: {kind}"


def make_mutant(index: int, seed: int, seeds: dict[str, bytes], root_seeds: dict[str, tuple[str, bytes]],
                workdir: Path) -> tuple[str, str]:
    """(kind, path) of mutant ``index``: a file in ``workdir``, deterministic in (seed, index)."""
    rnd = random.Random(seed * 1_000_003 + index)
    name = rnd.choice(sorted(seeds))
    kind = rnd.choice(["onnx_bytes", "onnx_truncate", "onnx_edit", "onnx_edit", "onnx_edit", "root_bytes",
                       "root_edit", "root_edit"])
    if kind.startswith("onnx"):
        data = seeds[name]
        if kind == "onnx_bytes":
            data, what = _byte_flips(data, rnd), "byte flips"
        elif kind == "onnx_truncate":
            data, what = _truncate(data, rnd), "truncated"
        else:
            m = onnx.ModelProto()
            m.ParseFromString(data)
            what = "; ".join(_edit_onnx(m, rnd) for _ in range(rnd.randint(1, 2)))
            data = m.SerializeToString()
        path = workdir / f"m{index}.onnx"
        path.write_bytes(data)
        return f"{name}/{kind}: {what}", str(path)
    text, blob = root_seeds[name]
    path = workdir / f"m{index}.root"
    if kind == "root_bytes":
        raw = Path(root_seeds["_files"][name]).read_bytes()  # type: ignore[index]
        path.write_bytes(_byte_flips(raw, rnd) if rnd.random() < 0.7 else _truncate(raw, rnd))
        return f"{name}/root_bytes", str(path)
    import uproot
    from sofie_root.serialization import writer

    doc = json.loads(text)
    what = _edit_root(doc, rnd)
    if rnd.random() < 0.2:
        blob = _byte_flips(blob, rnd)
        doc["blob"]["sha256"] = hashlib.sha256(blob).hexdigest()
    with uproot.recreate(str(path)) as f:
        writer.write_entry(f, "m", writer.document_text(doc), blob)
    return f"{name}/{what}", str(path)


# -- running ------------------------------------------------------------------------------------
def _run_child(path: str) -> None:
    """In the forked child: compile/load, run on random inputs; exit 0 (ok), 1 (SofieError),
    3 (another exception, described on stderr)."""
    import warnings

    import sofie_root

    os.environ["SOFIE_FUZZ_CHILD"] = "1"
    # a SofieWarning (an attribute the operator does not have, ...) is a clean outcome, not an
    # exception, whatever the test run's -W error setting
    warnings.simplefilter("ignore", sofie_root.SofieWarning)
    try:
        model = sofie_root.load(path) if path.endswith(".root") else sofie_root.compile(path)
        rng = np.random.default_rng(0)
        arrays = []
        for spec in model.inputs:
            shape = tuple(2 if isinstance(d, str) else int(d) for d in spec.shape)
            if int(np.prod(shape, dtype=np.int64)) > 1 << 20:
                os._exit(0)
            arrays.append((rng.standard_normal(shape) * 3).astype(spec.dtype) if spec.dtype.kind == "f"
                          else (rng.integers(0, 2, shape)).astype(spec.dtype))
        model.infer(*arrays)
        os._exit(0)
    except sofie_root.SofieError:
        os._exit(1)
    except BaseException:
        sys.stderr.write(traceback.format_exc(limit=-6))
        sys.stderr.flush()
        os._exit(3)


def run_mutant(path: str, timeout: float = TIMEOUT) -> tuple[str, str]:
    """Outcome of one mutant in a forked child: ("ok" | "sofie" | "other" | "crash" | "hang", detail)."""
    err_path = path + ".stderr"
    pid = os.fork()
    if pid == 0:  # the child: stderr into a file (a pipe could fill up and block it)
        fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 2)
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))  # a bound, not a target
        except (ImportError, ValueError, OSError):
            pass
        _run_child(path)
        os._exit(4)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "hang", f"no result after {timeout:.0f} s"
    err = Path(err_path).read_text(errors="replace") if os.path.exists(err_path) else ""
    if os.path.exists(err_path):
        os.unlink(err_path)
    if os.WIFSIGNALED(status):
        return "crash", f"signal {os.WTERMSIG(status)}: {err[-400:]}"
    code = os.WEXITSTATUS(status)
    return {0: "ok", 1: "sofie"}.get(code, "other"), err[-1500:]


def prepare(workdir: Path) -> tuple[dict[str, bytes], dict]:
    """Seed files: ONNX bytes, and for each model a saved .root file and its stored document."""
    import uproot
    from sofie_root.serialization import reader

    import sofie_root

    seeds = {k: m.SerializeToString() for k, m in seed_models().items()}
    roots: dict = {"_files": {}}
    for name, data in seeds.items():
        path = workdir / f"seed_{name}.root"
        sofie_root.compile(data).save(path, "m")
        stored = reader.read(path)
        with uproot.open({str(path): None}) as f:
            roots[name] = (str(f["m/ir"]), stored.blob)
        roots["_files"][name] = str(path)
    return seeds, roots


def fuzz(count: int, seed: int, timeout: float = TIMEOUT, log=None) -> tuple[Counter, list[tuple[int, str, str, str]]]:
    """Run ``count`` mutants; returns outcome counts and the failures (index, mutant, outcome, detail)."""
    counts: Counter = Counter()
    failures = []
    with tempfile.TemporaryDirectory(prefix="sofie_fuzz_") as tmp:
        workdir = Path(tmp)
        seeds, roots = prepare(workdir)
        for i in range(count):
            what, path = make_mutant(i, seed, seeds, roots, workdir)
            outcome, detail = run_mutant(path, timeout)
            counts[outcome] += 1
            if outcome not in ("ok", "sofie"):
                failures.append((i, what, outcome, detail))
                if log:
                    log(f"[{i}] {what}: {outcome}\n{detail}")
            os.unlink(path)
            if log and (i + 1) % 100 == 0:
                log(f"{i + 1} mutants: {dict(counts)}")
    return counts, failures


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fuzzed_models_fail_cleanly() -> None:
    count = int(os.environ.get("SOFIE_FUZZ_LONG") or FUZZ_COUNT)
    seed = int(os.environ.get("SOFIE_FUZZ_SEED", "11"))
    counts, failures = fuzz(count, seed)
    print(f"\nfuzz: {count} mutants (seed {seed}): {dict(counts)}")
    assert counts["ok"] + counts["sofie"] + len(failures) == count
    assert not failures, "\n\n".join(f"mutant {i} (seed {seed}) {what}: {outcome}\n{detail}"
                                     for i, what, outcome, detail in failures[:5])
    assert counts["ok"] and counts["sofie"]  # the mutants reach both outcomes


def main() -> None:
    ap = argparse.ArgumentParser(description="sofie_root fuzz test, long mode")
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=TIMEOUT)
    args = ap.parse_args()
    t0 = time.time()
    counts, failures = fuzz(args.count, args.seed, args.timeout, log=lambda s: print(s, flush=True))
    print(f"{args.count} mutants (seed {args.seed}) in {time.time() - t0:.0f} s: ok {counts['ok']}, "
          f"SofieError {counts['sofie']}, other exceptions {counts['other']}, crashes {counts['crash']}, "
          f"hangs {counts['hang']}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
