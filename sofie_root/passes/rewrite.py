"""Helpers shared by the rewriting passes: use counts, constants, and re-inferring a new node."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import ShapeInferenceError
from ..ir.graph import Graph, Node, TensorInfo, subgraph_reads


def use_counts(graph: Graph) -> dict[str, int]:
    """How many nodes read each tensor (sub-graph reads count; graph outputs count as a use)."""
    uses: dict[str, int] = {}
    for node in graph.nodes:
        for name in {i for i in node.inputs if i} | subgraph_reads(node):
            uses[name] = uses.get(name, 0) + 1
    for name in graph.outputs:
        uses[name] = uses.get(name, 0) + 1
    return uses


def private(name: str, uses: Mapping[str, int]) -> bool:
    """True if ``name`` has exactly one use: one node reads it and it is not a graph output, or
    it is a graph output no node reads (callers looking for the reading node check that it exists)."""
    return uses.get(name, 0) == 1


def const(graph: Graph, name: str, inits: Mapping[str, np.ndarray] | None = None) -> np.ndarray | None:
    if not name:
        return None
    return (graph.initializers if inits is None else inits).get(name)


def infer_outputs(node: Node, tensors: Mapping[str, TensorInfo], inits: Mapping[str, np.ndarray]) -> list[TensorInfo]:
    """TensorInfos of a new node's outputs, from its operator's check and infer."""
    from ..ops.base import NodeView, lookup

    op = lookup(node.domain, node.op_type)
    if op is None:
        raise ShapeInferenceError(f"{node.label}: no operator {node.domain}.{node.op_type}")
    view = NodeView(node, [tensors[i] if i else None for i in node.inputs],
                    [inits.get(i) if i else None for i in node.inputs])
    reason = op.check(view)
    if reason:
        raise ShapeInferenceError(f"{node.label}: {reason}")
    outs = op.infer(view)
    return [TensorInfo(name, o.dtype, tuple(o.shape)) for name, o in zip(node.outputs, outs) if name]


def fresh(base: str, taken: set[str]) -> str:
    """A tensor name derived from ``base`` that is not in ``taken`` (and is then taken)."""
    k = 0
    name = base
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def all_names(graph: Graph) -> set[str]:
    names = set(graph.tensors) | set(graph.initializers) | set(graph.inputs)
    for n in graph.nodes:
        names.update(o for o in n.outputs if o)
    return names
