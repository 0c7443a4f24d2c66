"""FLOP count of a compiled model's IR graph (``model.graph``), for the benchmark's fraction-of-peak.

Only the products are counted, 2 FLOP per multiply-add, as in the performance anchors: Gemm,
MatMul, Conv, ConvTranspose, RNN/GRU/LSTM (input and recurrent projections), Attention (QK^T
and the weighted sum of V) and Einsum, plus the fused forms the passes create (domain ``sofie``: FusedGemm,
FusedConv, FusedMatMul, FusedAttention, any fused operator with a ``base``). Biases, activations,
normalisations, softmax and pooling are left
out: in the benchmark models they are a few percent of the products. Nodes inside If/Loop/Scan
bodies are not counted (their trip count is not known from the graph).

Symbolic dimensions are evaluated with the values given (``{"N": 256}``); a dimension that
cannot be evaluated raises ValueError naming the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import prod

import numpy as np

from sofie_root.ir.dims import Dim
from sofie_root.ir.graph import Graph, Node

#: op type -> the op whose product it computes
_PRODUCTS = {"Gemm": "Gemm", "MatMul": "MatMul", "Conv": "Conv", "ConvTranspose": "ConvTranspose",
             "RNN": "RNN", "GRU": "GRU", "LSTM": "LSTM", "Attention": "Attention", "Einsum": "Einsum",
             "FusedGemm": "Gemm", "FusedConv": "Conv", "FusedMatMul": "MatMul",
             "FusedAttention": "FusedAttention"}
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _dims(graph: Graph, name: str, symbols: Mapping[str, int], node: Node) -> list[int]:
    out = []
    for d in graph.info(name).shape:
        if isinstance(d, Dim):
            missing = d.symbols - set(symbols)
            if missing:
                raise ValueError(f"{node.label} (output {node.outputs[0]!r}): dimension {d} of tensor "
                                 f"{name!r} needs values for {sorted(missing)}")
            d = d.evaluate(symbols)
        out.append(int(d))
    return out


def _kind(node: Node) -> str | None:
    """The product a node computes: its own op type, or for the passes' fused operators (domain
    ``sofie``, e.g. FusedMatMul) the ``base`` operator whose attributes they keep."""
    if node.domain in ("", "ai.onnx"):
        return _PRODUCTS.get(node.op_type)
    if node.domain == "sofie":
        from sofie_root.ops.base import lookup

        base = getattr(lookup("sofie", node.op_type), "base", None)
        return _PRODUCTS.get(base or node.op_type)
    return None


def node_macs(graph: Graph, node: Node, symbols: Mapping[str, int]) -> int:
    """Multiply-adds of one node (0 for nodes whose work is not a product)."""
    kind = _kind(node)
    if kind is None:
        return 0

    def shape(k: int) -> list[int]:
        return _dims(graph, node.inputs[k], symbols, node)

    def has(k: int) -> bool:
        return len(node.inputs) > k and bool(node.inputs[k])

    if kind == "Gemm":
        a = shape(0)
        m, k = (a[1], a[0]) if node.attrs.get("transA", 0) else (a[0], a[1])
        b = shape(1)
        n = b[0] if node.attrs.get("transB", 0) else b[1]
        return m * k * n
    if kind == "MatMul":
        a = shape(0)
        y = _dims(graph, node.outputs[0], symbols, node)
        return prod(y) * a[-1]
    # weights by their size only (C_out * C_in / group * kernel), not their layout, which passes may change
    if kind == "Conv":
        y = _dims(graph, node.outputs[0], symbols, node)  # every output: C_in / group * kernel products
        return prod(y) * prod(shape(1)) // y[1]
    if kind == "ConvTranspose":
        x = shape(0)  # every input element meets C_out / group * kernel weights
        return prod(x) * prod(shape(1)) // x[1]
    if kind in _GATES:
        # from X and the attributes: the passes may store W and R in another layout
        x = shape(0)
        seq, batch = (x[1], x[0]) if node.attrs.get("layout", 0) else (x[0], x[1])
        dirs = 2 if node.attrs.get("direction", "forward") == "bidirectional" else 1
        hidden = int(node.attrs.get("hidden_size") or shape(2)[2])
        return seq * batch * dirs * _GATES[kind] * hidden * (x[2] + hidden)
    if kind == "Attention":
        q, k, v = shape(0), shape(1), shape(2)
        if len(q) == 4:  # [B, H, S, D]
            b, hq, sq, d = q
            skv, dv = k[2], v[3]
            past = shape(4)[2] if has(4) else 0
        else:  # [B, S, H*D] with the head counts as attributes
            hq, hkv = int(node.attrs["q_num_heads"]), int(node.attrs["kv_num_heads"])
            b, sq, d = q[0], q[1], q[2] // hq
            skv, dv = k[1], v[2] // hkv
            past = shape(4)[2] if has(4) else 0
        return b * hq * sq * (skv + past) * (d + dv)
    if kind == "FusedAttention":  # Q [B, H, Sq, D], V [B, H, St, Dv]: Q K^T and P V
        packed = list(node.attrs.get("packed", [-1, -1, -1]))

        def view(k: int) -> list[int]:  # a packed input is [B, S, G, H, D]
            s = shape(k)
            return [s[0], s[3], s[1], s[4]] if packed[k] >= 0 else s

        q, v = view(0), view(2)
        return q[0] * q[1] * q[2] * v[2] * (q[3] + v[3])
    # Einsum: a naive evaluation does (operands - 1) multiplies for every combination of labels
    from sofie_root.ops.einsum import parse_equation

    ranks = [len(shape(k)) for k in range(len(node.inputs))]
    ins, _ = parse_equation(str(node.attrs.get("equation", "")), ranks)
    sizes: dict[str, int] = {}
    for k, labels in enumerate(ins):
        for lab, d in zip(labels, shape(k)):
            sizes[lab] = max(sizes.get(lab, 1), d)
    return (len(ins) - 1) * prod(sizes.values()) if len(ins) > 1 else 0


def count(graph: Graph, symbols: Mapping[str, int] | None = None) -> dict[str, int]:
    """FLOP (2 per multiply-add) of every node that computes a product, by node label."""
    symbols = dict(symbols or {})
    out: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        macs = node_macs(graph, node, symbols)
        if macs:
            out[f"{i}:{node.op_type}:{node.name or node.outputs[0]}"] = 2 * macs
    return out


def total(graph: Graph, symbols: Mapping[str, int] | None = None) -> int:
    """FLOP (2 per multiply-add) of one call of the graph with these symbol values."""
    return sum(count(graph, symbols).values())


def weight_bytes(graph: Graph) -> int:
    """Bytes of the floating-point constants (what a batch-1 call streams from cache)."""
    return sum(a.nbytes for a in graph.initializers.values() if np.issubdtype(a.dtype, np.floating))
