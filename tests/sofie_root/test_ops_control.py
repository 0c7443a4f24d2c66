"""If against onnxruntime: both branches, outer-scope reads, run-time and constant conditions."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from sofie_root.errors import UnsupportedOperatorError

from .ort_check import assert_matches_ort, make_model, value_info

F = np.float32


def _graph(nodes, outputs, name, inits=None):
    from onnx import numpy_helper

    return helper.make_graph(nodes, name, [], outputs,
                             [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(F)


def _check_both(model, *rest, cond_shape=()):
    """Run with cond true and false (cond is the first input)."""
    m = sofie_root.compile(model)
    for c in (True, False):
        assert_matches_ort(model, np.full(cond_shape, c), *rest, compiled=m)
    return m


def test_runtime_condition_multi_node_branches_and_outer_reads():
    """Branches with several nodes, reading a graph input, a weight and an intermediate of the parent."""
    then_g = _graph([helper.make_node("Add", ["x", "w"], ["a"]),
                     helper.make_node("Mul", ["a", "t"], ["b"]),
                     helper.make_node("Relu", ["b"], ["then_out"])],
                    [value_info("then_out", F, None)], "then")
    else_g = _graph([helper.make_node("Sub", ["t", "x"], ["c"]),
                     helper.make_node("Tanh", ["c"], ["else_out"])],
                    [value_info("else_out", F, None)], "else")
    nodes = [helper.make_node("Sigmoid", ["x"], ["t"]),
             # intermediates the arena could place over t if the If's read of t were not seen
             helper.make_node("Exp", ["x"], ["u1"]),
             helper.make_node("Neg", ["u1"], ["u2"]),
             helper.make_node("Abs", ["u2"], ["u3"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Add", ["y", "u3"], ["z"])]
    model = make_model(nodes, [value_info("cond", bool, []), value_info("x", F, (2, 3))],
                       [value_info("z", F, None)], {"w": _rand(2, 3, seed=1)}, opset=17)
    _check_both(model, _rand(2, 3))


def test_condition_computed_from_data():
    then_g = _graph([helper.make_node("Mul", ["x", "x"], ["o"])], [value_info("o", F, None)], "then")
    else_g = _graph([helper.make_node("Neg", ["x"], ["o2"])], [value_info("o2", F, None)], "else")
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)]
    model = make_model(nodes, [value_info("x", F, (4,))], [value_info("y", F, None)],
                       {"zero": np.array(0, dtype=F)}, opset=13)
    m = sofie_root.compile(model)
    assert_matches_ort(model, np.array([1, 2, 3, -1], dtype=F), compiled=m)
    assert_matches_ort(model, np.array([1, -2, 3, -5], dtype=F), compiled=m)


def test_outputs_that_are_outer_tensors_constants_or_repeated():
    """Branch outputs that are not computed by a branch node are copied. onnxruntime rejects
    outer-scope values returned directly (ONNX allows them): compare with numpy."""
    k1, k2 = np.arange(6, dtype=F).reshape(2, 3), np.full((2, 3), -1.5, F)
    then_g = _graph([helper.make_node("Relu", ["x"], ["r"])],
                    [value_info("r", F, None), value_info("x", F, None), value_info("r", F, None)], "then")
    else_g = _graph([], [value_info("k1", F, None), value_info("k2", F, None), value_info("x", F, None)], "else",
                    inits={"k1": k1, "k2": k2})
    nodes = [helper.make_node("If", ["cond"], ["a", "b", "c"], then_branch=then_g, else_branch=else_g)]
    model = make_model(nodes, [value_info("cond", bool, [1]), value_info("x", F, (2, 3))],
                       [value_info(n, F, None) for n in "abc"])
    m = sofie_root.compile(model)
    x = _rand(2, 3)
    a, b, c = m.infer(np.array([True]), x)
    np.testing.assert_array_equal(a, np.maximum(x, 0))
    np.testing.assert_array_equal(b, x)
    np.testing.assert_array_equal(c, np.maximum(x, 0))
    a, b, c = m.infer(np.array([False]), x)
    np.testing.assert_array_equal(a, k1)
    np.testing.assert_array_equal(b, k2)
    np.testing.assert_array_equal(c, x)


def test_constant_branch_outputs_with_constant_nodes():
    """The node-test pattern: each branch returns a Constant."""
    then_g = _graph([helper.make_node("Constant", [], ["tc"], value=helper.make_tensor(
        "v", 1, [5], [1, 2, 3, 4, 5]))], [value_info("tc", F, [5])], "then")
    else_g = _graph([helper.make_node("Constant", [], ["ec"], value=helper.make_tensor(
        "v", 1, [5], [5, 4, 3, 2, 1]))], [value_info("ec", F, [5])], "else")
    model = make_model([helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
                       [value_info("cond", bool, [])], [value_info("y", F, None)])
    _check_both(model)


@pytest.mark.parametrize("cond", [True, False])
def test_constant_condition_takes_one_branch(cond):
    """With a constant condition the branches may even differ in shape."""
    then_g = _graph([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=1)], [value_info("s", F, None)], "then")
    else_g = _graph([helper.make_node("Exp", ["x"], ["ex"])], [value_info("ex", F, None)], "else")
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    model = make_model(nodes, [value_info("x", F, (2, 3))], [value_info("y", F, None)],
                       {"c": np.array(cond)}, opset=13)
    got = assert_matches_ort(model, _rand(2, 3))
    assert got[0].shape == ((1, 1) if cond else (2, 3))


def test_different_branch_shapes_are_rejected_with_a_reason():
    then_g = _graph([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=1)], [value_info("s", F, None)], "then")
    else_g = _graph([helper.make_node("Exp", ["x"], ["ex"])], [value_info("ex", F, None)], "else")
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    model = make_model(nodes, [value_info("c", bool, []), value_info("x", F, (2, 3))],
                       [value_info("y", F, None)], opset=13)
    with pytest.raises(UnsupportedOperatorError, match="different shapes"):
        sofie_root.compile(model)


def test_nested_if_and_branch_node_with_workspace():
    """A nested If reading the outer branch's intermediate, and an LSTM (workspace buffers) in a branch."""
    hidden = 4
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((1, 4 * hidden, 3)) * 0.5).astype(F)
    r = (rng.standard_normal((1, 4 * hidden, hidden)) * 0.5).astype(F)
    inner_then = _graph([helper.make_node("Add", ["m", "x"], ["it"])], [value_info("it", F, None)], "inner_then")
    inner_else = _graph([helper.make_node("Sub", ["m", "x"], ["ie"])], [value_info("ie", F, None)], "inner_else")
    then_g = _graph([helper.make_node("Mul", ["x", "x"], ["m"]),
                     helper.make_node("If", ["c2"], ["n"], then_branch=inner_then, else_branch=inner_else),
                     helper.make_node("Abs", ["n"], ["to"])],
                    [value_info("to", F, None)], "then")
    else_g = _graph([helper.make_node("Reshape", ["x", "shp"], ["x3"]),
                     helper.make_node("LSTM", ["x3", "W", "R"], ["", "hh"], hidden_size=hidden),
                     helper.make_node("Reshape", ["hh", "shp2"], ["h2"]),
                     helper.make_node("Slice", ["h2", "st", "en", "ax"], ["eo"])],
                    [value_info("eo", F, None)], "else",
                    inits={"shp": np.array([1, 4, 3]), "shp2": np.array([4, 4]), "st": np.array([0]),
                           "en": np.array([3]), "ax": np.array([1])})
    nodes = [helper.make_node("If", ["c1"], ["y"], then_branch=then_g, else_branch=else_g)]
    model = make_model(nodes, [value_info("c1", bool, []), value_info("c2", bool, []), value_info("x", F, (4, 3))],
                       [value_info("y", F, None)], {"W": w, "R": r}, opset=17)
    m = sofie_root.compile(model)
    x = _rand(4, 3)
    for c1 in (True, False):
        for c2 in (True, False):
            assert_matches_ort(model, np.array(c1), np.array(c2), x, compiled=m, rtol=1e-5, atol=1e-6)


def test_symbolic_batch():
    then_g = _graph([helper.make_node("MatMul", ["x", "w"], ["mm"]),
                     helper.make_node("Relu", ["mm"], ["o1"])], [value_info("o1", F, None)], "then")
    else_g = _graph([helper.make_node("MatMul", ["x", "w"], ["mm2"]),
                     helper.make_node("Sigmoid", ["mm2"], ["o2"])], [value_info("o2", F, None)], "else")
    model = make_model([helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
                       [value_info("cond", bool, []), value_info("x", F, ("N", 3))], [value_info("y", F, None)],
                       {"w": _rand(3, 5, seed=2)})
    m = sofie_root.compile(model)
    for n in (2, 7):
        for c in (True, False):
            assert_matches_ort(model, np.array(c), _rand(n, 3, seed=n), compiled=m)


def test_int_and_bool_outputs():
    then_g = _graph([helper.make_node("Greater", ["x", "zero"], ["gt"]),
                     helper.make_node("Cast", ["gt"], ["gi"], to=7)],
                    [value_info("gt", bool, None), value_info("gi", np.int64, None)], "then")
    else_g = _graph([helper.make_node("Less", ["x", "zero"], ["lt"]),
                     helper.make_node("Cast", ["lt"], ["li"], to=7)],
                    [value_info("lt", bool, None), value_info("li", np.int64, None)], "else")
    model = make_model([helper.make_node("If", ["cond"], ["b", "i"], then_branch=then_g, else_branch=else_g)],
                       [value_info("cond", bool, []), value_info("x", F, (5,))],
                       [value_info("b", bool, None), value_info("i", np.int64, None)],
                       {"zero": np.array(0, dtype=F)})
    _check_both(model, _rand(5))


def test_constant_condition_propagates_shape_values():
    """A constant-condition If returning an integer constant feeds a Reshape target at compile time."""
    then_g = _graph([], [value_info("s1", np.int64, None)], "then", inits={"s1": np.array([3, 2], dtype=np.int64)})
    else_g = _graph([], [value_info("s2", np.int64, None)], "else", inits={"s2": np.array([6], dtype=np.int64)})
    nodes = [helper.make_node("If", ["c"], ["shape"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    model = make_model(nodes, [value_info("x", F, (2, 3))], [value_info("y", F, None)], {"c": np.array(True)})
    got = assert_matches_ort(model, _rand(2, 3))
    assert got[0].shape == (3, 2)
