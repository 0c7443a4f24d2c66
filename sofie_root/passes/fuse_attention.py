"""Pass ``fuse_attention``: the attention block of exported transformers becomes one
``sofie.FusedAttention`` node.

Matched (float32, rank 4, [B, H] batch dimensions equal on Q, B and V, no broadcasting)::

    S = MatMul(Q, B)            B = Transpose(K, perm=[0, 1, 3, 2]) or any [B, H, D, St] tensor
    S = Mul(S, c)               optional, c a positive constant scalar
    S = Add(S, bias)            optional, bias broadcasting to S with S's last dimension
    P = Softmax(S, axis=-1)
    Y = MatMul(P, V)

which is what ``nn.MultiheadAttention`` (its key padding mask is the bias) and hand-written
``softmax(q @ k.transpose(-2, -1) * scale + bias) @ v`` export to. Q, K or V taken from one
[B, S, 3, H, D] projection by Transpose(perm [2, 0, 3, 1, 4]) + Slice + Squeeze (``qkv(x).view(b,
t, 3, h, d).permute(2, 0, 3, 1, 4)``) is read in place from the projection, and a Transpose(perm
[0, 2, 1, 3]) of Y (back to [B, S, H, Dv]) is written by the node: the copies go (the shared
Transpose is left to dead-code elimination once no Slice reads it). Every intermediate must be read
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


def _ints(graph: Graph, node: Node, k: int) -> list[int] | None:
    if len(node.inputs) <= k or not node.inputs[k]:
        return None
    c = graph.initializers.get(node.inputs[k])
    return None if c is None or c.dtype.kind not in "iu" else [int(x) for x in c.reshape(-1)]


def _packed(graph: Graph, prod: dict[str, Node], uses: dict[str, int], name: str):
    """(base, index, nodes) if ``name`` [B, H, S, D] is Squeeze(Slice(Transpose(base, perm
    [2, 0, 3, 1, 4]), index:index+1 on axis 0), axis 0) of a base [B, S, G, H, D] (the fused
    q/k/v projection of exported attention layers), else None."""
    sq = prod.get(name)
    if sq is None or sq.op_type != "Squeeze" or sq.domain or sq.opset < 13 or _ints(graph, sq, 1) != [0] \
            or not private(name, uses) or not private(sq.inputs[0], uses):
        return None
    sl = prod.get(sq.inputs[0])
    if sl is None or sl.op_type != "Slice" or sl.domain or sl.opset < 10:
        return None
    starts, ends, axes = _ints(graph, sl, 1), _ints(graph, sl, 2), _ints(graph, sl, 3)
    steps = _ints(graph, sl, 4) if len(sl.inputs) > 4 and sl.inputs[4] else [1]
    tr = prod.get(sl.inputs[0])
    if tr is None or tr.op_type != "Transpose" or tr.domain or list(tr.attrs.get("perm", [])) != [2, 0, 3, 1, 4] \
            or axes not in ([0], [-5]) or steps != [1] or starts is None or ends is None or len(starts) != 1:
        return None
    base = graph.tensors[tr.inputs[0]]
    groups = base.shape[2] if base.rank == 5 else None
    i = starts[0]
    if not isinstance(groups, int) or not 0 <= i < groups or ends[0] != i + 1 \
            or base.dtype.name != "float32":
        return None
    return tr.inputs[0], i, [sq, sl]


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
        # a graph output counts as a use: P private but read by no node is the graph's output
        if xi.rank != 4 or xi.dtype.name != "float32" or not private(x, uses) or not private(p, uses) \
                or len(cons.get(p, [])) != 1:
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
        # Q, K and V sliced out of one [B, S, 3, H, D] projection: read in place
        ins, packed = [q, k_in, v], [-1, -1, -1]
        for k in (0, 1, 2):
            if k == 1 and k_t:
                continue
            hit = _packed(graph, prod, uses, ins[k])
            if hit is not None:
                ins[k], packed[k] = hit[0], hit[1]
                chain.extend(hit[2])
        outs, y_t = list(pv.outputs), 0
        after = cons.get(pv.outputs[0], [])
        if private(pv.outputs[0], uses) and len(after) == 1 and plain(after[0], "Transpose") \
                and list(after[0].attrs.get("perm", [])) == [0, 2, 1, 3]:
            outs, y_t = list(after[0].outputs), 1  # Y written as [B, Sq, H, Dv]
            chain.append(after[0])
        attrs = {"scale": scale, "k_transposed": k_t, "y_transposed": y_t}
        if packed != [-1, -1, -1]:
            attrs["packed"] = packed
        drop.update(id(n) for n in chain)
        replaced[id(pv)] = Node("FusedAttention", [*ins, bias], outs, attrs, pv.name, "sofie", pv.opset)
    if not replaced:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    return graph.replace(nodes=nodes)
