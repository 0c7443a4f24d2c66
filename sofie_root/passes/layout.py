"""Weight layout: constant GEMM operands stored the way the kernels read them fastest.

PyTorch exports ``Linear`` as ``Gemm(x, W, b, transB=1)`` with ``W`` of shape ``[N, K]``. Stored
transposed (``[K, N]``, ``transB=0``), a batch-1 product is a BLAS gemv over contiguous rows of
``W`` (measured under cling at M=1, OpenBLAS: sgemv on ``[K, N]`` 0.85-0.96x of sgemm on the
same layout; sgemv/sgemm on ``[N, K]`` 1.0-2.8x, sgemm with transB up to 9x for 7x300).

The recurrent weights ``R`` of LSTM/GRU/RNN (``[dirs, gates*H, H]``, read as ``H @ R^T`` every
time step) are stored as ``[dirs, H, gates*H]`` for the same reason, with the node attribute
``ops.rnn.R_TRANSPOSED`` telling the operator; the input weights ``W`` likewise
(``W_TRANSPOSED``; one GEMM over all time steps, [S*B, I] x [I, gates*H]). The transpositions happen once, here, at compile
time.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir.graph import Graph, Node
from ..ops.rnn import R_TRANSPOSED, W_TRANSPOSED

_RECURRENT = ("LSTM", "GRU", "RNN")


def pretranspose_gemm_weights(graph: Graph) -> Graph:
    """Gemm nodes with ``transB=1`` and a constant B read by nothing else get B transposed; so do
    the constant R of recurrent nodes."""
    uses: dict[str, int] = {}
    for node in graph.nodes:
        for i in node.inputs:
            if i:
                uses[i] = uses.get(i, 0) + 1
    inits = dict(graph.initializers)
    tensors = dict(graph.tensors)
    nodes: list[Node] = []
    changed = False

    def private_const(name: str, rank: int) -> bool:
        return (bool(name) and name in inits and inits[name].ndim == rank and uses.get(name) == 1
                and name not in graph.outputs)

    for node in graph.nodes:
        if node.domain:
            nodes.append(node)
            continue
        b = node.inputs[1] if node.op_type == "Gemm" and len(node.inputs) > 1 else ""
        r = node.inputs[2] if node.op_type in _RECURRENT and len(node.inputs) > 2 else ""
        if b and node.attrs.get("transB", 0) and private_const(b, 2):
            inits[b] = np.require(inits[b].T, requirements="C")
            tensors[b] = replace(tensors[b], shape=tuple(inits[b].shape))
            attrs = dict(node.attrs)
            attrs["transB"] = 0
            node = replace(node, attrs=attrs)
            changed = True
        elif r and not node.attrs.get(R_TRANSPOSED, 0) and private_const(r, 3):
            hidden = int(inits[r].shape[2])
            if node.attrs.get("hidden_size", hidden) == hidden and inits[r].shape[1] % max(hidden, 1) == 0:
                inits[r] = np.require(inits[r].transpose(0, 2, 1), requirements="C")
                tensors[r] = replace(tensors[r], shape=tuple(inits[r].shape))
                attrs = dict(node.attrs)
                attrs["hidden_size"] = hidden
                attrs[R_TRANSPOSED] = 1
                w = node.inputs[1]
                if (not attrs.get(W_TRANSPOSED, 0) and private_const(w, 3)
                        and inits[w].shape[1] == inits[r].shape[2]):
                    inits[w] = np.require(inits[w].transpose(0, 2, 1), requirements="C")
                    tensors[w] = replace(tensors[w], shape=tuple(inits[w].shape))
                    attrs[W_TRANSPOSED] = 1
                node = replace(node, attrs=attrs)
                changed = True
        nodes.append(node)
    if not changed:
        return graph
    return graph.replace(nodes=nodes, initializers=inits, tensors=tensors)
