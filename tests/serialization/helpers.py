"""Comparison helpers: two IR graphs identical, arrays bit-identical."""

from __future__ import annotations

import numpy as np

from sofie_root.ir.graph import Graph


def assert_bits_equal(a: np.ndarray, b: np.ndarray, what: str = "") -> None:
    assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), what
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert np.require(a, requirements="C").tobytes() == np.require(b, requirements="C").tobytes(), what


def assert_values_equal(a, b, what: str) -> None:
    if isinstance(a, Graph):
        assert isinstance(b, Graph), what
        assert_graphs_equal(a, b, what)
    elif isinstance(a, np.ndarray):
        assert_bits_equal(a, b, what)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), what
        for k, (x, y) in enumerate(zip(a, b)):
            assert_values_equal(x, y, f"{what}[{k}]")
    elif isinstance(a, float):
        assert isinstance(b, float) and ((np.isnan(a) and np.isnan(b)) or
                                         np.float64(a).tobytes() == np.float64(b).tobytes()), f"{what}: {a} vs {b}"
    else:
        assert type(a) is type(b) and a == b, f"{what}: {a!r} vs {b!r}"


def assert_graphs_equal(a: Graph, b: Graph, what: str = "graph") -> None:
    assert a.name == b.name, what
    assert a.inputs == b.inputs and a.outputs == b.outputs, what
    assert a.opsets == b.opsets, what
    assert a.metadata == b.metadata, what
    assert list(a.tensors.items()) == list(b.tensors.items()), what
    assert list(a.outer_scope.items()) == list(b.outer_scope.items()), what
    assert list(a.initializers) == list(b.initializers), what
    for name in a.initializers:
        assert_bits_equal(a.initializers[name], b.initializers[name], f"{what}: initializer {name!r}")
    assert len(a.nodes) == len(b.nodes), what
    for k, (n, m) in enumerate(zip(a.nodes, b.nodes)):
        w = f"{what}: node {k} ({n.op_type})"
        assert (n.op_type, n.domain, n.name, n.opset, n.inputs, n.outputs) == \
               (m.op_type, m.domain, m.name, m.opset, m.inputs, m.outputs), w
        assert list(n.attrs) == list(m.attrs), w
        for key in n.attrs:
            assert_values_equal(n.attrs[key], m.attrs[key], f"{w}: attribute {key!r}")
    assert str(a) == str(b), what
