"""Weight layout: constant GEMM operands stored the way the kernels read them fastest.

PyTorch exports ``Linear`` as ``Gemm(x, W, b, transB=1)`` with ``W`` of shape ``[N, K]``. Stored
transposed (``[K, N]``, ``transB=0``), the product is an axpy-form loop over contiguous rows,
which vectorises and, at batch 1, avoids a BLAS call per layer. The transposition happens once,
here, at compile time.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir.graph import Graph, Node


def pretranspose_gemm_weights(graph: Graph) -> Graph:
    """Gemm nodes with ``transB=1`` and a constant B read by nothing else get B transposed."""
    uses: dict[str, int] = {}
    for node in graph.nodes:
        for i in node.inputs:
            if i:
                uses[i] = uses.get(i, 0) + 1
    inits = dict(graph.initializers)
    tensors = dict(graph.tensors)
    nodes: list[Node] = []
    changed = False
    for node in graph.nodes:
        b = node.inputs[1] if node.op_type == "Gemm" and not node.domain and len(node.inputs) > 1 else ""
        if (b and node.attrs.get("transB", 0) and b in inits and inits[b].ndim == 2 and uses.get(b) == 1
                and b not in graph.outputs):
            inits[b] = np.require(inits[b].T, requirements="C")
            tensors[b] = replace(tensors[b], shape=tuple(inits[b].shape))
            attrs = dict(node.attrs)
            attrs["transB"] = 0
            node = replace(node, attrs=attrs)
            changed = True
        nodes.append(node)
    if not changed:
        return graph
    return graph.replace(nodes=nodes, initializers=inits, tensors=tensors)
