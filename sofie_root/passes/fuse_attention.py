"""Pass ``fuse_attention``: the attention block of exported transformers becomes one
``sofie.FusedAttention`` node.

Matched (float32, rank 4, [B, H] batch dimensions equal on Q, B and V, no broadcasting)::

    S = MatMul(Q, B)            B = Transpose(K, perm=[0, 1, 3, 2]) or any [B, H, D, St] tensor
    S = Mul(S, c)               optional, c a positive constant scalar
    S = Add(S, bias)            optional, bias broadcasting to S with S's last dimension
    P = Softmax(S, axis=-1)
    Y = MatMul(P, V)

which is what ``nn.MultiheadAttention`` (its key padding mask is the bias) and hand-written
``softmax(q @ k.transpose(-2, -1) * scale + bias) @ v`` export to. Every intermediate must be read
by the next node alone and not be a graph output; the Transpose is absorbed when it has no other
reader (K is then read in place). The fused node keeps the nodes' semantics (see
ops/attention.py, FusedAttention). The GPU backend does not run it (``CPU_ONLY`` in passes).
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from .rewrite import private, use_counts


def _scalar(graph: Graph, name: str) -> float | None:
    c = graph.initializers.get(name)
    if c is None or c.size != 1 or c.ndim > 4 or c.dtype.kind != "f":
        return None
    return float(c.reshape(-1)[0])


def fuse_attention(graph: Graph) -> Graph:
    """Fuse every matched attention block."""
    uses = use_counts(graph)
    prod = graph.producers()
    cons = graph.consumers()
    replaced: dict[int, Node] = {}
    drop: set[int] = set()

    def plain(node: Node | None, op: str) -> bool:
        return node is not None and node.op_type == op and not node.domain and id(node) not in drop

    for sm in graph.nodes:
        if not plain(sm, "Softmax") or sm.opset < 13 or sm.attrs.get("axis", -1) not in (-1, 3):
            continue
        x, p = sm.inputs[0], sm.outputs[0]
        xi = graph.tensors[x]
        if xi.rank != 4 or xi.dtype.name != "float32" or not private(x, uses) or not private(p, uses):
            continue
        pv = cons[p][0]
        if not plain(pv, "MatMul") or pv.inputs[0] != p or pv.inputs[1] == p:
            continue
        chain = [sm]
        cur, node = x, prod.get(x)
        bias = ""
        scale = 1.0
        if plain(node, "Add"):
            for k in (0, 1):
                other = node.inputs[1 - k]
                src = prod.get(node.inputs[k])
                if other != node.inputs[k] and (plain(src, "Mul") or plain(src, "MatMul")) \
                        and private(node.inputs[k], uses):
                    bias, cur = other, node.inputs[k]
                    break
            else:
                continue
            chain.append(node)
            node = prod.get(cur)
        if plain(node, "Mul"):
            c = [_scalar(graph, i) for i in node.inputs]
            k = 1 if c[1] is not None else 0 if c[0] is not None else -1
            if k < 0 or not private(cur, uses) or not (c[k] > 0 and c[k] < float("inf")):
                continue
            scale, cur = c[k], node.inputs[1 - k]
            chain.append(node)
            node = prod.get(cur)
        if not plain(node, "MatMul") or not private(cur, uses):
            continue
        chain.append(node)
        q, b = node.inputs
        v = pv.inputs[1]
        qi, bi, vi = graph.tensors[q], graph.tensors[b], graph.tensors[v]
        if not qi.rank == bi.rank == vi.rank == 4 or tuple(qi.shape[:2]) != tuple(bi.shape[:2]) \
                or tuple(qi.shape[:2]) != tuple(vi.shape[:2]) \
                or any(t.dtype.name != "float32" for t in (qi, bi, vi)):
            continue
        if bias:
            bt = graph.tensors[bias]
            bshape = [1] * (4 - bt.rank) + list(bt.shape) if bt.rank <= 4 else None
            full = graph.tensors[x].shape
            if bt.dtype.name != "float32" or bshape is None or bshape[3] != full[3] \
                    or any(not (d == 1 or d == f) for d, f in zip(bshape[:3], full[:3])):
                continue
        k_in, k_t = b, 1
        tr = prod.get(b)
        if plain(tr, "Transpose") and list(tr.attrs.get("perm", [])) == [0, 1, 3, 2] and private(b, uses):
            k_in, k_t = tr.inputs[0], 0
            chain.append(tr)
        drop.update(id(n) for n in chain)
        replaced[id(pv)] = Node("FusedAttention", [q, k_in, v, bias], list(pv.outputs),
                                {"scale": scale, "k_transposed": k_t}, pv.name, "sofie", pv.opset)
    if not replaced:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    return graph.replace(nodes=nodes)
