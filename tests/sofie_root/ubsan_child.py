"""Child process of test_ubsan: compiles models with the native backend (the test sets
SOFIE_ROOT_NATIVE_FLAGS to -fsanitize=undefined -fno-sanitize-recover=all) and runs them on the
inputs where C++ has undefined behaviour unless the generated code avoids it. A UB report aborts
the process; "UBSAN-CHILD-DONE" is printed when every model ran."""

from __future__ import annotations

import sys

import numpy as np
from onnx import helper

import sofie_root

INT_TYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
F32 = np.float32


def model(nodes, inputs, outputs, inits=None, opset=17):
    def vi(name, dt, shape):
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)

    g = helper.make_graph(nodes, "ub", [vi(*i) for i in inputs], [vi(*o) for o in outputs],
                          [helper.make_tensor(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape, v.flatten().tolist())
                           for k, v in (inits or {}).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def run(name, proto, *xs):
    m = sofie_root.compile(proto, backend="native", passes=[])
    m(*xs)
    print("ran", name, flush=True)


def main() -> None:
    # one model per family and type (several nodes, several outputs): each native build with the
    # sanitizer takes seconds
    floats = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9, -3e9, 9.3e18, -9.3e18, 2.0**63, 2.0**64,
                       65536.5, -129.5, 255.5, 0.0, -0.0, 1e-40], F32)
    n = len(floats)
    for src in (F32, np.float64):
        nodes = [helper.make_node("Cast", ["x"], [f"y{k}"], to=helper.np_dtype_to_tensor_dtype(np.dtype(dt)))
                 for k, dt in enumerate(INT_TYPES)]
        run(f"Cast {np.dtype(src).name} -> every integer type",
            model(nodes, [("x", src, [n])], [(f"y{k}", dt, [n]) for k, dt in enumerate(INT_TYPES)]),
            floats.astype(src))
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        bits = 8 * np.dtype(dt).itemsize
        a = np.array([1, 3, np.iinfo(dt).max, 0, 5, 7], dt)
        b = np.array([0, bits - 1, bits, bits + 1, 200 % (np.iinfo(dt).max + 1), np.iinfo(dt).max], dt)
        nodes = [helper.make_node("BitShift", ["a", "b"], [f"y{d}"], direction=d) for d in ("LEFT", "RIGHT")]
        run(f"BitShift {np.dtype(dt).name}",
            model(nodes, [("a", dt, [6]), ("b", dt, [6])], [("yLEFT", dt, [6]), ("yRIGHT", dt, [6])]), a, b)
    for dt in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        info = np.iinfo(dt)
        if info.min < 0:  # min / -1, division by 0, overflow of +, -, *, unary minus and abs
            a = np.array([info.min, info.max, info.min, -7, 7, info.min], dt)
            b = np.array([-1, -1, 0, 2, -2, info.max], dt)
        else:
            a = np.array([info.max, info.max, 0, 7, 1, 0], dt)
            b = np.array([info.max, 0, 1, 2, 0, info.max], dt)
        ops = [("Div", {}), ("Mod", {"fmod": 0}), ("Mod", {"fmod": 1}), ("Add", {}), ("Sub", {}), ("Mul", {})]
        nodes = [helper.make_node(op, ["a", "b"], [f"y{k}"], **attrs) for k, (op, attrs) in enumerate(ops)]
        if info.min < 0:
            nodes += [helper.make_node(op, ["a"], [f"y{len(nodes) + k}"]) for k, op in enumerate(("Neg", "Abs"))]
        run(f"integer arithmetic {np.dtype(dt).name}",
            model(nodes, [("a", dt, [6]), ("b", dt, [6])], [(f"y{k}", dt, [6]) for k in range(len(nodes))]), a, b)
    data = np.arange(12, dtype=F32).reshape(3, 4)
    idx = np.array([-1, -3, 0, 2], np.int64)
    nodes = [helper.make_node("Gather", ["d", "i"], ["g"], axis=0),
             helper.make_node("GatherElements", ["d", "j"], ["e"], axis=1)]
    run("Gather, GatherElements with negative indices",
        model(nodes, [("d", F32, [3, 4]), ("i", np.int64, [4]), ("j", np.int64, [3, 4])],
              [("g", F32, [4, 4]), ("e", F32, [3, 4])]), data, idx, np.tile(idx, (3, 1)))
    # the row kernels (sofie_rt::rows): bit tricks on float lanes (exp's 2^n by a shift, log's
    # exponent), float positions converted to int64, full-width tails next to the buffer's end
    rows = np.resize(floats, (19, 11)).astype(F32)
    nodes = [helper.make_node(op, ["r"], [f"y{k}"], axis=ax)
             for k, (op, ax) in enumerate([("Softmax", -1), ("LogSoftmax", -1), ("Hardmax", -1),
                                           ("Softmax", 0), ("LogSoftmax", 0), ("Hardmax", 0)])]
    nodes += [helper.make_node(op, ["r"], [f"y{len(nodes) + k}"], axis=-1, keepdims=0)
              for k, op in enumerate(("ArgMax", "ArgMin"))]
    nodes += [helper.make_node(op, ["r", "ax"], [f"y{len(nodes) + k}"], keepdims=0)
              for k, op in enumerate(("ReduceMax", "ReduceSum", "ReduceLogSumExp"))]
    outs = [(f"y{k}", np.int64 if nodes[k].op_type.startswith("Arg") else F32, None) for k in range(len(nodes))]
    run("Softmax, LogSoftmax, Hardmax, ArgMax, ArgMin, reductions over special values",
        model(nodes, [("r", F32, [19, 11])], outs, {"ax": np.array([0], np.int64)}, opset=18), rows)
    print("UBSAN-CHILD-DONE", flush=True)


if __name__ == "__main__":
    sys.exit(main())
