"""Bad or hostile models fail with a SofieError naming the node, never with a bare Python
exception, an exhausted memory or a C++ overflow; resource limits and how to raise them.

Each case of issue 11 ("Exceptions that are not SofieError") has a regression test here. The
models are tiny files that ask for huge sizes; every test runs in well under a second because
nothing is allocated before the size is checked.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import helper

import sofie_root
from sofie_root import ResourceLimitError, SofieError
from tests.sofie_root.ort_check import make_model, run_reference, value_info


def _node_model(node, x_shape=(2,), x_type=np.float32, inits=None, out_type=np.float32):
    return make_model([node], [value_info("x", x_type, list(x_shape))], [value_info("y", out_type, None)], inits)


@pytest.fixture
def limits():
    old = sofie_root.get_limits()
    yield
    sofie_root.set_limits(**old)


def test_constant_with_no_outputs() -> None:
    node = helper.make_node("Constant", [], [], value=onnx.numpy_helper.from_array(np.ones(1, np.float32)))
    model = make_model([node, helper.make_node("Relu", ["x"], ["y"])], [value_info("x", np.float32, [1])],
                       [value_info("y", np.float32, [1])])
    with pytest.raises(sofie_root.InvalidGraphError, match="Constant node must have exactly one output"):
        sofie_root.compile(model)


def test_attribute_of_the_wrong_kind() -> None:
    model = _node_model(helper.make_node("Gemm", ["x", "w"], ["y"], alpha="abc"), (2, 2),
                        inits={"w": np.eye(2, dtype=np.float32)})
    with pytest.raises(sofie_root.InvalidGraphError, match=r"attribute 'alpha' (must be of kind float.*'abc'|has type STRING, the operator .* takes FLOAT)"):
        sofie_root.compile(model)
    # the right kinds still compile and agree with the reference
    good = _node_model(helper.make_node("Gemm", ["x", "w"], ["y"], alpha=2.0), (2, 2),
                       inits={"w": np.eye(2, dtype=np.float32)})
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    np.testing.assert_array_equal(sofie_root.compile(good)(x), run_reference(good, x)[0])


def test_attribute_name_not_utf8() -> None:
    node = helper.make_node("Relu", ["x"], ["y"], zzzz=1)
    data = make_model([node], [value_info("x", np.float32, [2])],
                      [value_info("y", np.float32, [2])]).SerializeToString()
    data = data.replace(b"zzzz", b"z\xff\xfez")
    with pytest.raises(sofie_root.ModelLoadError, match=r"attribute name .* is not valid UTF-8"):
        sofie_root.compile(data)


HUGE = {
    # Range(0, 1e12, 1): 10^12 elements, from a 3-scalar model
    "range": lambda: _node_model(helper.make_node("Range", ["s", "l", "d"], ["y"]), inits={
        "s": np.array(0, np.float32), "l": np.array(1e12, np.float32), "d": np.array(1, np.float32)}),
    "tile": lambda: _node_model(helper.make_node("Tile", ["x", "r"], ["y"]), inits={"r": np.array([2 ** 33])}),
    "pad": lambda: _node_model(helper.make_node("Pad", ["x", "p"], ["y"]), inits={"p": np.array([0, 2 ** 40])}),
    "onehot": lambda: _node_model(helper.make_node("OneHot", ["x", "d", "v"], ["y"]), x_type=np.int64,
                                  inits={"d": np.array(2 ** 40), "v": np.array([0, 1], np.float32)}),
    "resize": lambda: _node_model(helper.make_node("Resize", ["x", "", "s"], ["y"]), (1, 1, 2, 2),
                                  inits={"s": np.array([1, 1, 1e9, 1e9], np.float32)}),
    # 3.6 GB asked for by a 300-byte file
    "constantofshape": lambda: make_model(
        [helper.make_node("ConstantOfShape", ["s"], ["c"]), helper.make_node("Add", ["x", "c"], ["y"])],
        [value_info("x", np.float32, [1])], [value_info("y", np.float32, None)],
        {"s": np.array([30000, 30000])}),
    # 2^62 elements: would overflow 64-bit sizes in the generated C++
    "expand": lambda: _node_model(helper.make_node("Expand", ["x", "s"], ["y"]), (1, 1),
                                  inits={"s": np.array([2 ** 31, 2 ** 31])}),
    # a symbolic batch times a huge static size: refused per event
    "symbolic": lambda: make_model([helper.make_node("Tile", ["x", "r"], ["y"])],
                                   [value_info("x", np.float32, ["N", 2])],
                                   [value_info("y", np.float32, None)], {"r": np.array([1, 2 ** 31])}),
}


@pytest.mark.parametrize("case", sorted(HUGE))
def test_huge_sizes_are_refused_before_allocation(case) -> None:
    model = HUGE[case]()
    assert len(model.SerializeToString()) < 400
    t0 = time.perf_counter()
    with pytest.raises(ResourceLimitError, match=r"(node|output).*needs .* above the limit.*set_limits"):
        sofie_root.compile(model)
    assert time.perf_counter() - t0 < 30  # nothing of the requested size was built (3.6 GB took 11 s)


def test_compile_limit_can_be_raised(limits) -> None:
    # 64 MiB asked by ConstantOfShape: refused under a 16 MiB limit, compiled under the default
    model = make_model([helper.make_node("ConstantOfShape", ["s"], ["c"]), helper.make_node("Add", ["x", "c"], ["y"])],
                       [value_info("x", np.float32, [1])], [value_info("y", np.float32, None)],
                       {"s": np.array([4096, 4096])})
    sofie_root.set_limits(compile_bytes=16 << 20)
    with pytest.raises(ResourceLimitError, match="ConstantOfShape node"):
        sofie_root.compile(model)
    sofie_root.set_limits(compile_bytes=1 << 31)
    out = sofie_root.compile(model)(np.array([2.0], np.float32))
    assert out.shape == (4096, 4096) and np.all(out == 2.0)


def test_run_limit_names_the_call_and_can_be_raised(limits) -> None:
    model = make_model([helper.make_node("Tile", ["x", "r"], ["y"])], [value_info("x", np.float32, ["N", 4])],
                       [value_info("y", np.float32, None)], {"r": np.array([1, 1024])})
    m = sofie_root.compile(model)
    x = np.ones((64, 4), np.float32)
    assert m(x).shape == (64, 4096)
    sofie_root.set_limits(run_bytes=1 << 20)  # 64 x 4096 floats = 1 MiB of output
    with pytest.raises(ResourceLimitError, match=r"N=65 .*run-time limit"):
        m(np.ones((65, 4), np.float32))
    assert m(x).shape == (64, 4096)  # the limit is read at every call
    sofie_root.set_limits(run_bytes=1 << 30)
    np.testing.assert_array_equal(m(np.ones((65, 4), np.float32)), np.ones((65, 4096), np.float32))


def test_run_limit_holds_on_repeated_calls_and_after_it_changes(limits) -> None:
    # the quick path remembers the checks of an input shape: a shape refused once stays refused,
    # and lowering the limit reaches shapes already remembered (one input and two inputs)
    for two in (False, True):
        nodes = [helper.make_node("Tile", ["x", "r"], ["t"])]
        inputs = [value_info("x", np.float32, ["N", 4])]
        if two:
            nodes.append(helper.make_node("Add", ["t", "z"], ["y"]))
            inputs.append(value_info("z", np.float32, [1]))
        model = make_model(nodes, inputs, [value_info("y" if two else "t", np.float32, None)], {"r": np.array([1, 1024])})
        m = sofie_root.compile(model)
        extra = [np.zeros(1, np.float32)] if two else []
        x, big = np.ones((64, 4), np.float32), np.ones((65, 4), np.float32)
        per_64 = (2 if two else 1) << 20  # the output, and the Tile's intermediate before the Add
        sofie_root.set_limits(run_bytes=per_64)
        for _ in range(3):
            with pytest.raises(ResourceLimitError, match="N=65"):
                m.infer(big, *extra)
        for _ in range(3):
            assert m.infer(x, *extra)[0].shape == (64, 4096)
        sofie_root.set_limits(run_bytes=per_64 // 2)
        for _ in range(3):
            with pytest.raises(ResourceLimitError, match="N=64"):
                m.infer(x, *extra)
        sofie_root.set_limits(run_bytes=1 << 30)
        assert m.infer(big, *extra)[0].shape == (65, 4096)


def test_set_limits_checks_its_arguments(limits) -> None:
    for bad in (0, -1, 1.5, "1G", True, 1 << 63):
        with pytest.raises(SofieError, match="set_limits"):
            sofie_root.set_limits(compile_bytes=bad)
    assert sofie_root.get_limits() == sofie_root.set_limits()


def test_emit_errors_name_the_node() -> None:
    # a graph that bypasses the ONNX frontend (as a .root file does) with an attribute of the
    # wrong kind still fails as a SofieError naming the node
    from sofie_root.ir.dtypes import FLOAT32
    from sofie_root.ir.graph import Graph, Node, TensorInfo

    g = Graph([Node("Gemm", ["x", "w"], ["y"], {"alpha": "abc"}, name="g0", opset=17)], ["x"], ["y"],
              {"x": TensorInfo("x", FLOAT32, (2, 2)), "w": TensorInfo("w", FLOAT32, (2, 2)),
               "y": TensorInfo("y", FLOAT32, (2, 2))}, {"w": np.eye(2, dtype=np.float32)}, {"": 17})
    with pytest.raises(SofieError, match="Gemm node 'g0'"):
        sofie_root.compile(g, passes=[])


def test_limits_from_the_environment(monkeypatch) -> None:
    from sofie_root import limits

    monkeypatch.setenv("SOFIE_ROOT_MAX_COMPILE_BYTES", str(8 << 30))
    assert limits._from_env("SOFIE_ROOT_MAX_COMPILE_BYTES", 1) == 8 << 30
    monkeypatch.setenv("SOFIE_ROOT_MAX_COMPILE_BYTES", "")
    assert limits._from_env("SOFIE_ROOT_MAX_COMPILE_BYTES", 123) == 123
    for bad in ("8G", "0", "-5"):
        monkeypatch.setenv("SOFIE_ROOT_MAX_COMPILE_BYTES", bad)
        with pytest.raises(SofieError, match="SOFIE_ROOT_MAX_COMPILE_BYTES"):
            limits._from_env("SOFIE_ROOT_MAX_COMPILE_BYTES", 1)
