"""Passes ``fuse_gemm_activation`` and ``fuse_conv_activation``.

* MatMul(x, W) with a constant 2-D W and a 2-D x, followed by Add of a constant bias along the
  last axis, becomes Gemm(x, W, b); with a batched x (rank > 2) it becomes ``sofie.FusedMatMul``
  (bias and activation applied after the product), also when only an activation follows;
* Gemm (+ a bias Add when it has no C yet) + an activation becomes one ``sofie.FusedGemm``;
* Conv + Add of a per-channel constant ([C, 1, ...]) folds the Add into the Conv bias, and Conv +
  an activation becomes one ``sofie.FusedConv``.

Each rewrite needs the intermediate to be read by the next node alone and not be a graph output.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..ir.dtypes import dtype_from_numpy
from ..ir.graph import Graph, Node, TensorInfo
from ..ops.fused import ACT_PREFIX, activation_check
from .rewrite import all_names, fresh, private, use_counts


def _activation(node: Node, graph: Graph) -> tuple[str, dict[str, Any]] | None:
    """(op type, attributes) if ``node`` is an activation FusedGemm/FusedConv can absorb."""
    if node.domain:
        return None
    attrs = dict(node.attrs)
    if node.op_type == "Clip":
        if node.opset >= 11 or not attrs:
            attrs = {}
            for k, key in ((1, "min"), (2, "max")):
                if len(node.inputs) > k and node.inputs[k]:
                    c = graph.initializers.get(node.inputs[k])
                    if c is None or c.size != 1:
                        return None
                    attrs[key] = float(c.reshape(-1)[0])
        elif len(node.inputs) > 1:
            return None
    elif len([i for i in node.inputs if i]) != 1:
        return None
    dt = graph.tensors[node.inputs[0]].dtype
    if activation_check(node.op_type, attrs, dt) is not None:
        return None
    return node.op_type, attrs


def _bias_vector(graph: Graph, add: Node, y: str, n: int) -> np.ndarray | None:
    """The constant other operand of ``add`` as a length-n vector, if it broadcasts along the last axis."""
    other = [i for i in add.inputs if i != y]
    if len(other) != 1 or add.inputs.count(y) != 1:
        return None
    c = graph.initializers.get(other[0])
    if c is None or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or c.shape[-1:] not in ((n,), (1,), ()):
        return None
    return np.ascontiguousarray(np.broadcast_to(c.reshape(-1), (n,)))


def _run(graph: Graph, kind: str) -> Graph:
    uses = use_counts(graph)
    cons = graph.consumers()
    inits = dict(graph.initializers)
    tensors = dict(graph.tensors)
    taken = all_names(graph)
    removed: set[int] = set()
    replaced: dict[int, Node] = {}
    changed = False

    def next_of(node: Node) -> Node | None:
        y = node.outputs[0]
        if not private(y, uses) or len(cons.get(y, [])) != 1:
            return None
        nxt = cons[y][0]
        return None if id(nxt) in removed else nxt

    def new_const(base: str, arr: np.ndarray) -> str:
        name = fresh(base, taken)
        inits[name] = arr
        tensors[name] = TensorInfo(name, dtype_from_numpy(arr.dtype), tuple(arr.shape))
        return name

    for node in graph.nodes:
        if id(node) in removed or node.domain:
            continue
        cur = node
        if kind == "gemm" and node.op_type == "MatMul":
            a = graph.tensors[node.inputs[0]]
            w = inits.get(node.inputs[1])
            out = graph.tensors[node.outputs[0]]
            if w is None or w.ndim != 2 or not isinstance(out.shape[-1], int):
                continue
            nxt = next_of(node)
            b = None
            if nxt is not None and nxt.op_type == "Add" and not nxt.domain:
                b = _bias_vector(graph, nxt, node.outputs[0], w.shape[1])
                if b is not None and b.dtype != w.dtype:
                    b = None
            if b is not None:
                bias = new_const(f"{node.outputs[0]}_bias", b)
                if a.rank == 2:
                    cur = Node("Gemm", [node.inputs[0], node.inputs[1], bias], list(nxt.outputs), {}, node.name, "",
                               node.opset)
                else:  # batched x @ W + b: Gemm takes matrices only
                    cur = Node("FusedMatMul", [node.inputs[0], node.inputs[1], bias], list(nxt.outputs), {},
                               node.name, "sofie", node.opset)
                removed.add(id(nxt))
                changed = True
            elif a.rank > 2:
                cur = Node("FusedMatMul", list(node.inputs), list(node.outputs), {}, node.name, "sofie", node.opset)
        elif kind == "gemm" and node.op_type == "Gemm":
            nxt = next_of(node)
            has_c = len(node.inputs) > 2 and bool(node.inputs[2])
            if nxt is not None and nxt.op_type == "Add" and not nxt.domain and not has_c:
                w = graph.tensors[node.inputs[1]]
                n = w.shape[0] if node.attrs.get("transB", 0) else w.shape[1]
                b = _bias_vector(graph, nxt, node.outputs[0], n) if isinstance(n, int) else None
                if b is not None and b.dtype == graph.tensors[node.outputs[0]].dtype:
                    attrs = dict(node.attrs)
                    attrs["beta"] = 1.0
                    cur = replace(node, inputs=[*node.inputs[:2], new_const(f"{node.outputs[0]}_bias", b)],
                                  outputs=list(nxt.outputs), attrs=attrs)
                    removed.add(id(nxt))
                    changed = True
        elif kind == "conv" and node.op_type == "Conv":
            nxt = next_of(node)
            w = graph.tensors[node.inputs[1]]
            if nxt is not None and nxt.op_type == "Add" and not nxt.domain:
                m = int(w.shape[0])
                other = [i for i in nxt.inputs if i != node.outputs[0]]
                c = inits.get(other[0]) if len(other) == 1 and nxt.inputs.count(node.outputs[0]) == 1 else None
                out_rank = graph.tensors[node.outputs[0]].rank
                if c is not None and c.ndim == out_rank and c.shape[0] == 1:
                    c = c.reshape(c.shape[1:])
                ok = (c is not None and c.dtype == w.dtype.numpy and c.ndim <= out_rank - 1 and c.size in (1, m)
                      and (c.size == 1 or (c.ndim == out_rank - 1 and c.shape[0] == m)))
                old_b = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else ""
                if ok and (not old_b or old_b in inits):
                    b = np.broadcast_to(c.reshape(-1), (m,)).astype(w.dtype.numpy)
                    if old_b:
                        b = (inits[old_b] + b).astype(w.dtype.numpy)
                    cur = replace(node, inputs=[*node.inputs[:2], new_const(f"{node.outputs[0]}_bias", b)],
                                  outputs=list(nxt.outputs))
                    removed.add(id(nxt))
                    changed = True
        else:
            continue
        # cur is a Gemm/Conv producing nxt's output (or node itself): look for an activation
        base = "Gemm" if kind == "gemm" else "Conv"
        if cur.op_type in (base, "FusedMatMul"):
            act_node = None
            y = cur.outputs[0]
            if private(y, uses) and len(cons.get(y, [])) == 1 and id(cons[y][0]) not in removed:
                act_node = cons[y][0]
            if act_node is not None and (act_node.inputs[0] != y or act_node.inputs.count(y) != 1):
                act_node = None
            act = _activation(act_node, graph) if act_node is not None else None
            if act is not None:
                attrs = dict(cur.attrs)
                attrs["activation"] = act[0]
                attrs.update({ACT_PREFIX + k: v for k, v in act[1].items()})
                fused_type = cur.op_type if cur.op_type == "FusedMatMul" else "Fused" + base
                cur = Node(fused_type, list(cur.inputs), list(act_node.outputs), attrs, cur.name, "sofie",
                           cur.opset)
                removed.add(id(act_node))
                changed = True
            elif cur.op_type == "FusedMatMul" and len(cur.inputs) == 2:
                cur = node  # a MatMul with neither bias nor activation stays as it is
        if cur is not node:
            replaced[id(node)] = cur
    if not changed:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed]
    return graph.replace(nodes=nodes, initializers=inits, tensors=tensors)


def fuse_gemm_activation(graph: Graph) -> Graph:
    """MatMul + bias Add -> Gemm; Gemm (+ bias Add) + activation -> sofie.FusedGemm."""
    return _run(graph, "gemm")


def fuse_conv_activation(graph: Graph) -> Graph:
    """Conv + per-channel bias Add -> Conv with bias; Conv + activation -> sofie.FusedConv."""
    return _run(graph, "conv")
