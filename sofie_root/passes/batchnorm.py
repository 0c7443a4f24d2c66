"""Pass ``fold_batchnorm``: an inference-mode BatchNormalization after a Conv, Gemm or 2-D MatMul
(optionally + a bias Add) is folded into the product's weights and bias.

BN(y) = s * (y - mean) + beta with s = scale / sqrt(var + eps) per output channel (axis 1), and y
is linear in the weights, so W' = W * s (per output channel) and b' = s * (b - mean) + beta. The
BatchNormalization node disappears. Folding happens only when every BN parameter and the weights
are constants, the intermediate is read by the BN alone and is not a graph output.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir.graph import Graph, Node, TensorInfo
from .rewrite import all_names, fresh, private, use_counts


def _bn_params(bn: Node, inits: dict[str, np.ndarray], channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, t) with BN(y) = s * y + t per channel, in float64, or None if BN cannot be folded."""
    if bn.domain or len(bn.inputs) != 5 or int(bn.attrs.get("training_mode", 0)):
        return None
    if sum(1 for o in bn.outputs if o) != 1 or (bn.opset < 9 and int(bn.attrs.get("spatial", 1)) == 0):
        return None
    params = [inits.get(i) for i in bn.inputs[1:]]
    if any(p is None or p.size != channels or p.dtype.kind != "f" for p in params):
        return None
    scale, b, mean, var = (p.reshape(-1).astype(np.float64) for p in params)
    s = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return s, b - s * mean


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold BatchNormalization into the preceding Conv / Gemm / MatMul(+Add)."""
    uses = use_counts(graph)
    prod = graph.producers()
    inits = dict(graph.initializers)
    tensors = dict(graph.tensors)
    taken = all_names(graph)
    replaced: dict[int, Node | None] = {}  # node id -> replacement (None: removed)
    for bn in graph.nodes:
        if bn.op_type != "BatchNormalization" or bn.domain:
            continue
        y = bn.inputs[0]
        p = prod.get(y)
        if p is None or not private(y, uses) or id(p) in replaced or p.domain:
            continue
        add = None
        if p.op_type == "Add":
            # product + Add(constant bias) + BN
            mm_in = [i for i in p.inputs if prod.get(i) is not None
                     and prod[i].op_type in ("MatMul", "Gemm", "Conv") and not prod[i].domain]
            if len(mm_in) != 1 or p.inputs.count(mm_in[0]) != 1 or not private(mm_in[0], uses) \
                    or id(prod[mm_in[0]]) in replaced:
                continue
            add, p = p, prod[mm_in[0]]
        info = graph.tensors[y]
        if info.rank < 2 or not isinstance(info.shape[1], int):
            continue
        c = int(info.shape[1])
        st = _bn_params(bn, inits, c)
        if st is None:
            continue
        s, t = st
        new = _fold_into(p, add, s, t, graph, inits, tensors, taken, bn)
        if new is None:
            continue
        replaced[id(p)] = new
        if add is not None:
            replaced[id(add)] = None
        replaced[id(bn)] = None
    if not replaced:
        return graph
    nodes = []
    for n in graph.nodes:
        if id(n) in replaced:
            if replaced[id(n)] is not None:
                nodes.append(replaced[id(n)])
        else:
            nodes.append(n)
    return graph.replace(nodes=nodes, initializers=inits, tensors=tensors)


def _new_const(base: str, arr: np.ndarray, inits: dict, tensors: dict, taken: set[str]) -> str:
    from ..ir.dtypes import dtype_from_numpy

    name = fresh(base, taken)
    inits[name] = np.ascontiguousarray(arr)
    tensors[name] = TensorInfo(name, dtype_from_numpy(arr.dtype), tuple(arr.shape))
    return name


def _add_bias(add: Node, y: str, n: int, rank: int, inits: dict, channel_axis_last: bool) -> np.ndarray | None:
    """The constant operand of ``add`` as a per-channel vector of length n (None if it is not one)."""
    other = [i for i in add.inputs if i != y]
    c = inits.get(other[0]) if len(other) == 1 else None
    if c is None or c.dtype.kind != "f" or c.size not in (1, n):
        return None
    c = c.astype(np.float64)
    if c.size == 1:
        return np.full(n, float(c.reshape(-1)[0]))
    if channel_axis_last:  # [N, n] output: bias along the last axis
        return c.reshape(-1) if c.shape[-1] == n and c.ndim <= 2 else None
    # [N, C, spatial...] output: bias shaped [C, 1, ...] or [1, C, 1, ...]
    shape = c.shape[1:] if c.ndim == rank and c.shape[0] == 1 else c.shape
    return c.reshape(-1) if len(shape) == rank - 1 and shape[0] == n else None


def _fold_into(p: Node, add: Node | None, s: np.ndarray, t: np.ndarray, graph: Graph, inits: dict,
               tensors: dict, taken: set[str], bn: Node) -> Node | None:
    out = bn.outputs[0]
    w_name = p.inputs[1] if len(p.inputs) > 1 else ""
    w = inits.get(w_name)
    if w is None or w.dtype.kind != "f":
        return None
    dt = w.dtype
    extra = np.zeros(s.size)
    if add is not None:
        rank = graph.tensors[p.outputs[0]].rank
        e = _add_bias(add, p.outputs[0], s.size, rank, inits, p.op_type != "Conv")
        if e is None:
            return None
        extra = e
    if p.op_type == "Conv":
        if w.shape[0] != s.size:
            return None
        b = inits.get(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2] else np.zeros(s.size, dt)
        if b is None:
            return None
        w2 = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(dt)
        b2 = ((b.astype(np.float64) + extra) * s + t).astype(dt)
        ins = [p.inputs[0], _new_const(f"{w_name}_bn", w2, inits, tensors, taken),
               _new_const(f"{w_name}_bn_bias", b2, inits, tensors, taken)]
        return replace(p, inputs=ins, outputs=[out])
    if p.op_type == "Gemm":
        if w.ndim != 2:
            return None
        trans_b = int(p.attrs.get("transB", 0))
        n = w.shape[0] if trans_b else w.shape[1]
        if n != s.size:
            return None
        beta = float(p.attrs.get("beta", 1.0))
        c = inits.get(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2] else np.zeros(n, dt)
        if c is None or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or c.shape[-1:] not in ((n,), (1,), ()):
            return None
        c_eff = beta * np.broadcast_to(c.astype(np.float64).reshape(-1), (n,))
        w2 = w.astype(np.float64) * (s[:, None] if trans_b else s[None, :])
        attrs = dict(p.attrs)
        attrs["beta"] = 1.0
        ins = [p.inputs[0], _new_const(f"{w_name}_bn", w2.astype(dt), inits, tensors, taken),
               _new_const(f"{w_name}_bn_bias", ((c_eff + extra) * s + t).astype(dt), inits, tensors, taken)]
        return replace(p, inputs=ins, outputs=[out], attrs=attrs)
    if p.op_type == "MatMul":
        a = graph.tensors[p.inputs[0]]
        if w.ndim != 2 or a.rank != 2 or w.shape[1] != s.size:
            return None
        n = w.shape[1]
        bias = extra
        w2 = w.astype(np.float64) * s[None, :]
        ins = [p.inputs[0], _new_const(f"{w_name}_bn", w2.astype(dt), inits, tensors, taken),
               _new_const(f"{w_name}_bn_bias", (bias * s + t).astype(dt), inits, tensors, taken)]
        return Node("Gemm", ins, [out], {}, p.name, "", graph.opsets.get("", p.opset) or p.opset)
    return None
