"""The IR: symbolic dimensions, broadcasting, graph validation and printing."""

from __future__ import annotations

import numpy as np
import pytest

from sofie_root.errors import InvalidGraphError, ShapeInferenceError
from sofie_root.ir import Dim, Graph, Node, TensorInfo, broadcast_shapes, numel, parse_dim
from sofie_root.ir.dtypes import FLOAT32, INT64

N = Dim.symbol("N")
L = Dim.symbol("L")


def test_dim_arithmetic() -> None:
    assert N * 3 * 4 == 12 * N
    assert (N * 12) // 4 == 3 * N
    assert (N * L * 6) // (L * 2) == 3 * N
    assert N + 0 == N and N * 1 == N and (N - N) == 0 and isinstance(N - N, int)
    assert numel([N, 3, L]) == 3 * N * L
    assert str(2 * N * L + 3) == "2*L*N + 3"
    with pytest.raises(ShapeInferenceError):
        _ = (N * 3) // 2
    with pytest.raises(ShapeInferenceError):
        int(N)
    assert (N * 5 + 2).evaluate({"N": 4}) == 22


@pytest.mark.parametrize("d", [N, 3 * N + 1, N * L * 2 - 7, -N, 5, 0])
def test_dim_parse_roundtrip(d) -> None:
    assert parse_dim(str(d)) == d


@pytest.mark.parametrize("text", ["", "N +", "* 3", "3 N", "N)"])
def test_dim_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(ShapeInferenceError):
        parse_dim(text)


def test_dim_symbol_names_must_be_identifiers() -> None:
    with pytest.raises(ShapeInferenceError):
        Dim.symbol("a b")


def test_broadcast_shapes() -> None:
    assert broadcast_shapes((N, 1, 5), (4, 1)) == (N, 4, 5)
    assert broadcast_shapes((N, 3), (1, 3)) == (N, 3)
    assert broadcast_shapes((), (2, 3)) == (2, 3)
    with pytest.raises(ShapeInferenceError, match="cannot be broadcast"):
        broadcast_shapes((2, 3), (4, 3))


def _info(name: str, shape=(N, 3), dtype=FLOAT32) -> TensorInfo:
    return TensorInfo(name, dtype, tuple(shape))


def test_graph_validation_and_print() -> None:
    w = np.ones(3, np.float32)
    g = Graph([Node("Add", ["x", "w"], ["y"], name="add")], ["x"], ["y"],
              {"x": _info("x"), "w": _info("w", (3,)), "y": _info("y")}, {"w": w}, {"": 17}, name="g")
    text = str(g)
    assert "input  x: float32[N, 3]" in text and "y = Add(x, w)" in text and "output y" in text
    assert g.symbols == ["N"]


@pytest.mark.parametrize("case", ["undefined", "twice", "no_info", "bad_init", "unsorted", "no_output"])
def test_graph_validation_errors(case: str) -> None:
    infos = {"x": _info("x"), "a": _info("a"), "y": _info("y")}
    nodes = [Node("Relu", ["x"], ["a"]), Node("Relu", ["a"], ["y"])]
    inits: dict[str, np.ndarray] = {}
    outputs = ["y"]
    if case == "undefined":
        nodes[1].inputs = ["zzz"]
    elif case == "twice":
        nodes[1].outputs = ["a"]
    elif case == "no_info":
        del infos["a"]
    elif case == "bad_init":
        inits = {"c": np.zeros(4, np.float32)}
        infos["c"] = _info("c", (5,))
    elif case == "unsorted":
        nodes.reverse()
    elif case == "no_output":
        outputs = ["nope"]
    with pytest.raises(InvalidGraphError):
        Graph(nodes, ["x"], outputs, infos, inits)


def test_value_tensors_are_defined_by_their_value() -> None:
    infos = {"x": _info("x"), "s": TensorInfo("s", INT64, (2,), (N, 3)), "y": _info("y")}
    g = Graph([Node("Reshape", ["x", "s"], ["y"])], ["x"], ["y"], infos)
    assert g.value_tensors() == ["s"]
