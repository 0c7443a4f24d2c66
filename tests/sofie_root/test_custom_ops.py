"""User-defined operators: sofie_root.register_operator."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from sofie_root.frontends.onnx import from_onnx
from sofie_root.ir.graph import Graph

from .ort_check import make_model, value_info

DOMAIN = "test.ops"


@pytest.fixture
def ops():
    """Register operators for one test and remove them afterwards (the registry is global)."""
    names: list[str] = []

    def reg(op_type: str, **kw):
        kw.setdefault("domain", DOMAIN)
        cls = sofie_root.register_operator(op_type, **kw)
        names.append((op_type, kw["domain"]))
        return cls

    yield reg
    for op_type, dom in names:
        sofie_root.unregister_operator(op_type, dom)


def _model(nodes, inputs, outputs, inits=None):
    m = make_model(nodes, inputs, outputs, inits)
    m.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return m


def test_elementwise_custom_op_with_attributes(ops) -> None:
    ops("LeakyClip", attributes={"alpha": 0.1, "limit": 6.0},
        elementwise="std::min(x > 0 ? x : alpha * x, limit)")
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Neg", ["r"], ["nr"]),
             helper.make_node("Add", ["nr", "x"], ["a"]),
             helper.make_node("LeakyClip", ["a"], ["y"], domain=DOMAIN, alpha=0.2)]
    m = _model(nodes, [value_info("x", np.float32, ["N", 5])], [value_info("y", np.float32, None)])
    model = sofie_root.compile(m)
    assert model.inputs[0].shape == ("N", 5)
    for n in (1, 7):
        x = (np.random.default_rng(n).standard_normal((n, 5)) * 10).astype(np.float32)
        a = x - np.maximum(x, 0)
        ref = np.minimum(np.where(a > 0, a, 0.2 * a), 6.0)
        np.testing.assert_allclose(model(x), ref, rtol=1e-6)
    assert "LeakyClip" in sofie_root.registered_operators()[0]
    assert "test.ops::LeakyClip" not in sofie_root.supported_ops()


def test_binary_elementwise_broadcasts(ops) -> None:
    ops("Hypot", elementwise="std::sqrt(x0 * x0 + x1 * x1)", num_inputs=2)
    nodes = [helper.make_node("Hypot", ["a", "b"], ["y"], domain=DOMAIN)]
    m = _model(nodes, [value_info("a", np.float32, ["N", 3]), value_info("b", np.float32, [3])],
               [value_info("y", np.float32, None)])
    model = sofie_root.compile(m)
    a = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    b = np.array([1, 2, 3], np.float32)
    np.testing.assert_allclose(model(a, b), np.hypot(a, b), rtol=1e-6)


def test_custom_op_with_shape_inference_and_cpp_body(ops) -> None:
    body = """
        const std::int64_t cols = x0_shape[x0_rank - 1];
        for (std::int64_t r = 0; r < y0_size; ++r) {
            float s = 0, m = x0[r * cols];
            for (std::int64_t c = 0; c < cols; ++c) { s += x0[r * cols + c]; m = std::max(m, x0[r * cols + c]); }
            y0[r] = s * scale;
            y1[r] = m;
        }
    """
    ops("RowSumMax", infer=lambda ins, attrs: [(ins[0].dtype, ins[0].shape[:-1])] * 2, cpp=body,
        attributes={"scale": 1.0}, dtypes=("float32",), num_inputs=1)
    nodes = [helper.make_node("RowSumMax", ["x"], ["s", "m"], domain=DOMAIN, scale=0.5),
             helper.make_node("Mul", ["s", "m"], ["y"])]
    m = _model(nodes, [value_info("x", np.float32, ["N", 4, 6])], [value_info("y", np.float32, None),
                                                                   value_info("m", np.float32, None)])
    model = sofie_root.compile(m)
    assert model.outputs[0].shape == ("N", 4)
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 4, 6)).astype(np.float32)
        y, mx = model.infer(x)
        np.testing.assert_allclose(mx, x.max(-1), rtol=1e-6)
        np.testing.assert_allclose(y, 0.5 * x.sum(-1) * x.max(-1), rtol=1e-5, atol=1e-6)


def test_unregistered_custom_op_is_a_clear_error(ops) -> None:
    nodes = [helper.make_node("Mystery", ["x"], ["y"], domain=DOMAIN, name="m1")]
    m = _model(nodes, [value_info("x", np.float32, [3])], [value_info("y", np.float32, None)])
    with pytest.raises(sofie_root.UnsupportedOperatorError, match=r"test\.ops::Mystery.*register_operator"):
        sofie_root.compile(m)
    # a graph (as loaded from a .root file: op type and domain only) whose operator is not registered
    ops("Mystery", elementwise="x * 2")
    graph = from_onnx(m)
    assert [(n.op_type, n.domain) for n in graph.nodes] == [("Mystery", DOMAIN)]
    sofie_root.unregister_operator("Mystery", DOMAIN)
    stored = Graph(graph.nodes, graph.inputs, graph.outputs, graph.tensors, graph.initializers, graph.opsets)
    with pytest.raises(sofie_root.UnsupportedOperatorError, match="register_operator"):
        sofie_root.Model(stored)
    # registered again (with a different body): the same stored graph compiles, to the new code
    ops("Mystery", elementwise="x * 3")
    np.testing.assert_allclose(sofie_root.Model(stored)(np.ones(3, np.float32)), [3, 3, 3])


def test_reregistering_gives_new_code(ops) -> None:
    ops("Twice", elementwise="x * 2")
    nodes = [helper.make_node("Twice", ["x"], ["y"], domain=DOMAIN)]
    m = _model(nodes, [value_info("x", np.float32, [2])], [value_info("y", np.float32, None)])
    assert sofie_root.compile(m)(np.ones(2, np.float32)).tolist() == [2, 2]
    with pytest.raises(sofie_root.SofieError, match="already registered"):
        sofie_root.register_operator("Twice", domain=DOMAIN, elementwise="x * 5")
    sofie_root.register_operator("Twice", domain=DOMAIN, elementwise="x * 5", replace=True)
    assert sofie_root.compile(m)(np.ones(2, np.float32)).tolist() == [5, 5]


def test_registration_errors() -> None:
    with pytest.raises(sofie_root.SofieError, match="built-in"):
        sofie_root.register_operator("Relu", domain="", elementwise="x")
    with pytest.raises(sofie_root.SofieError, match="identifier"):
        sofie_root.register_operator("bad name", elementwise="x")
    with pytest.raises(sofie_root.SofieError, match="exactly one"):
        sofie_root.register_operator("Foo")
    with pytest.raises(sofie_root.SofieError, match="C\\+\\+ name"):
        sofie_root.register_operator("Foo", elementwise="x", attributes={"a b": 1.0})
    assert "custom::Foo" not in sofie_root.registered_operators()


def test_custom_op_checks_input_count_and_dtype(ops) -> None:
    ops("Unary", elementwise="x + 1", num_inputs=1, dtypes=("float32",))
    nodes = [helper.make_node("Unary", ["x", "x"], ["y"], domain=DOMAIN)]
    m = _model(nodes, [value_info("x", np.float32, [2])], [value_info("y", np.float32, None)])
    with pytest.raises(sofie_root.UnsupportedOperatorError, match="takes 1 inputs"):
        sofie_root.compile(m)
    nodes = [helper.make_node("Unary", ["x"], ["y"], domain=DOMAIN)]
    m = _model(nodes, [value_info("x", np.int32, [2])], [value_info("y", np.int32, None)])
    with pytest.raises(sofie_root.UnsupportedOperatorError, match="int32"):
        sofie_root.compile(m)


def test_bad_shape_inference_is_reported(ops) -> None:
    ops("Broken", infer=lambda ins, attrs: [("float32", ("oops",))], cpp="")
    nodes = [helper.make_node("Broken", ["x"], ["y"], domain=DOMAIN)]
    m = _model(nodes, [value_info("x", np.float32, [2])], [value_info("y", np.float32, None)])
    with pytest.raises(sofie_root.ShapeInferenceError, match="dtype, shape"):
        sofie_root.compile(m)


def test_saved_by_name_and_loaded_only_when_registered(ops, tmp_path) -> None:
    ops("Twice", elementwise="x * 2")
    nodes = [helper.make_node("Twice", ["x"], ["y"], domain=DOMAIN)]
    m = _model(nodes, [value_info("x", np.float32, ["N", 2])], [value_info("y", np.float32, None)])
    path = tmp_path / "custom.root"
    sofie_root.compile(m).save(path, "twice")
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(sofie_root.load(path)(x), 2 * x)
    sofie_root.unregister_operator("Twice", DOMAIN)
    with pytest.raises(sofie_root.UnsupportedOperatorError, match=r"test\.ops::Twice.*register_operator"):
        sofie_root.load(path)


@pytest.mark.parametrize("with_numpy", [False, True])
def test_custom_op_on_constants_is_folded(ops, with_numpy) -> None:
    kw = {"compute": lambda x, scale: np.sqrt(x) * scale} if with_numpy else {}
    ops("ScaledSqrt", elementwise="std::sqrt(x) * scale", attributes={"scale": 1.0}, **kw)
    nodes = [helper.make_node("ScaledSqrt", ["w"], ["w2"], domain=DOMAIN, scale=3.0),
             helper.make_node("Add", ["x", "w2"], ["y"])]
    w = np.array([1, 4, 9], np.float32)
    m = _model(nodes, [value_info("x", np.float32, ["N", 3])], [value_info("y", np.float32, None)], {"w": w})
    model = sofie_root.compile(m)
    assert [n.op_type for n in model.graph.nodes] == ["Add"]
    np.testing.assert_allclose(model(np.zeros((2, 3), np.float32)), [[3, 6, 9]] * 2)
