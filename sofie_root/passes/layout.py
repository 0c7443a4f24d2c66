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

A constant float weight ``[K, N]`` of a dense product above ``DENSE_MAX_WEIGHT`` floats (K up to
512, N at least 16) is also stored
in the runtime kernel's panel layout (``ops.linalg.panels``), as an extra last input flagged by
``ops.linalg.B_PANELS`` (``pack_dense_weights``): from 32 rows the tiles read it, one aligned
cache line per step with constant offsets, instead of B's rows in place (or, for a B above 128
KiB, a copy packed on every call); the ``[K, N]`` original stays for fewer rows (batch 1's BLAS
gemv). The weight's memory doubles for these layers. Smaller weights are not packed: packed,
batch 1 (which does not read the panels) ran 20 ns slower per layer (Gemm [1,7]x[7,300] 0.24 ->
0.26 us), more than the 2-5% the panels gained at batch 256.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir.graph import Graph, Node
from ..ops.linalg import B_PANELS, DENSE_MAX_WEIGHT, PANELS_MAX_K, PANELS_MIN_N, panels
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


def _dense_weight(graph: Graph, node: Node) -> str:
    """The constant float32 B [K, N] of a product the dense kernel runs with a packable weight
    (conditions of ``Gemm.emit``'s and ``MatMul``'s ``dense_call`` paths), or ""."""
    if node.attrs.get(B_PANELS, 0) or len(node.inputs) < 2:
        return ""
    if not ((node.domain == "" and node.op_type in ("Gemm", "MatMul"))
            or (node.domain == "sofie" and node.op_type in ("FusedGemm", "FusedMatMul"))):
        return ""
    a, b = node.inputs[0], node.inputs[1]
    w = graph.initializers.get(b)
    if w is None or w.dtype != np.float32 or w.ndim != 2 or a not in graph.tensors:
        return ""
    k, n = w.shape
    if not (k * n > DENSE_MAX_WEIGHT and 0 < k <= PANELS_MAX_K and n >= PANELS_MIN_N):
        return ""
    if node.op_type in ("Gemm", "FusedGemm"):
        at = node.attrs
        if at.get("transA", 0) or at.get("transB", 0) or float(at.get("alpha", 1.0)) != 1.0:
            return ""
        if len(node.inputs) > 2 and node.inputs[2] and float(at.get("beta", 1.0)) != 0:
            c = graph.tensors.get(node.inputs[2])
            if c is None or tuple(c.shape) not in ((n,), (1, n)) or float(at.get("beta", 1.0)) != 1.0:
                return ""
    elif graph.tensors[a].rank < 2:
        return ""
    return b


def derived_weights(graph: Graph) -> set[str]:
    """Initializers that hold another initializer again in another layout (the panels of
    ``pack_dense_weights``): stored and loaded with the model, not parameters of it."""
    return {n.inputs[-1] for n in graph.nodes if n.attrs.get(B_PANELS, 0) and n.inputs}


def pack_dense_weights(graph: Graph) -> Graph:
    """Dense products with a large constant float weight get it a second time in panel layout,
    as a new initializer appended to their inputs (index 3 for Gemm and FusedMatMul, whose input
    2 is C or the bias, 2 for MatMul) and ``B_PANELS`` set. A weight shared by several nodes is
    packed once."""
    inits = dict(graph.initializers)
    tensors = dict(graph.tensors)
    packed: dict[str, str] = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        b = _dense_weight(graph, node)
        if not b:
            nodes.append(node)
            continue
        if b not in packed:
            name = f"{b}__panels"
            while name in tensors:
                name += "_"
            inits[name] = panels(inits[b])
            tensors[name] = replace(tensors[b], name=name, shape=(int(inits[name].size),), value=None)
            packed[b] = name
        inputs = list(node.inputs)
        if node.op_type != "MatMul":
            inputs += [""] * (3 - len(inputs))
        nodes.append(replace(node, inputs=inputs + [packed[b]], attrs={**node.attrs, B_PANELS: 1}))
    if not packed:
        return graph
    return graph.replace(nodes=nodes, initializers=inits, tensors=tensors)
