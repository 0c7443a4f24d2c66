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
    floats = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9, -3e9, 9.3e18, -9.3e18, 2.0**63, 2.0**64,
                       65536.5, -129.5, 255.5, 0.0, -0.0, 1e-40], F32)
    for dt in INT_TYPES:
        to = helper.np_dtype_to_tensor_dtype(np.dtype(dt))
        run(f"Cast float->{np.dtype(dt).name}", model([helper.make_node("Cast", ["x"], ["y"], to=to)],
                                                      [("x", F32, [len(floats)])], [("y", dt, [len(floats)])]), floats)
        run(f"Cast double->{np.dtype(dt).name}", model([helper.make_node("Cast", ["x"], ["y"], to=to)],
                                                       [("x", np.float64, [len(floats)])], [("y", dt, [len(floats)])]),
            floats.astype(np.float64))
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        bits = 8 * np.dtype(dt).itemsize
        a = np.array([1, 3, np.iinfo(dt).max, 0, 5, 7], dt)
        b = np.array([0, bits - 1, bits, bits + 1, 200 % (np.iinfo(dt).max + 1), np.iinfo(dt).max], dt)
        for d in ("LEFT", "RIGHT"):
            run(f"BitShift {d} {np.dtype(dt).name}",
                model([helper.make_node("BitShift", ["a", "b"], ["y"], direction=d)],
                      [("a", dt, [6]), ("b", dt, [6])], [("y", dt, [6])]), a, b)
    for dt in (np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        a = np.array([info.min, info.max, info.min, -7, 7, info.min], dt)
        b = np.array([-1, -1, 0, 2, -2, info.max], dt)
        for op in ("Div", "Mod", "Add", "Sub", "Mul"):
            attrs = {"fmod": 0} if op == "Mod" else {}
            run(f"{op} {np.dtype(dt).name}", model([helper.make_node(op, ["a", "b"], ["y"], **attrs)],
                                                   [("a", dt, [6]), ("b", dt, [6])], [("y", dt, [6])]), a, b)
        for op in ("Neg", "Abs"):
            run(f"{op} {np.dtype(dt).name}", model([helper.make_node(op, ["a"], ["y"])], [("a", dt, [6])],
                                                   [("y", dt, [6])]), a)
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        top = np.iinfo(dt).max
        a, b = np.array([top, top, 0, 7], dt), np.array([top, 0, 1, 2], dt)
        for op in ("Div", "Mod", "Add", "Sub", "Mul"):
            run(f"{op} {np.dtype(dt).name}", model([helper.make_node(op, ["a", "b"], ["y"])],
                                                   [("a", dt, [4]), ("b", dt, [4])], [("y", dt, [4])]), a, b)
    data = np.arange(12, dtype=F32).reshape(3, 4)
    for dt in (np.int32, np.int64):
        idx = np.array([-1, -3, 0, 2], dt)
        run(f"Gather negative {np.dtype(dt).name}",
            model([helper.make_node("Gather", ["d", "i"], ["y"], axis=0)], [("d", F32, [3, 4]), ("i", dt, [4])],
                  [("y", F32, [4, 4])]), data, idx)
        run(f"GatherElements negative {np.dtype(dt).name}",
            model([helper.make_node("GatherElements", ["d", "i"], ["y"], axis=1)],
                  [("d", F32, [3, 4]), ("i", dt, [3, 4])], [("y", F32, [3, 4])]), data, np.tile(idx, (3, 1)))
    print("UBSAN-CHILD-DONE", flush=True)


if __name__ == "__main__":
    sys.exit(main())
