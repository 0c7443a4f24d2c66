"""Pass ``fuse_elementwise``: chains and small trees of element-wise operators become one
``sofie.FusedElementwise`` node computed in a single loop.

An element-wise node joins the group of the element-wise node producing one of its inputs when
that intermediate is read by it alone, is not a graph output, and has the same shape as its
output (so every member runs over the same index space; the group's external inputs broadcast
to it as in ONNX). Only the group's final value is written to memory. A group holds at most :data:`MAX_GROUP`
nodes: a longer chain is cut into several fused nodes, because the C++ compiler's time on one loop
body grows faster than linearly with its length.
"""

from __future__ import annotations

from typing import Any

from ..ir.graph import Graph, Node
from ..ops.fused import encode_steps, fusable_elementwise
from .rewrite import private, use_counts

#: nodes per fused group. One loop of n steps costs the JIT super-linear time (measured under
#: cling, load 11: a 1,000-step chain with inlined vm::tanh took 13.5 s, 5,000 steps 160 s);
#: at this size a step costs about as much as in a short loop, and writing the intermediate
#: once every MAX_GROUP steps is negligible next to the steps themselves.
MAX_GROUP = 64


def fuse_elementwise(graph: Graph) -> Graph:
    """Fuse element-wise groups of two or more nodes."""
    uses = use_counts(graph)
    group_of: dict[str, list[Node]] = {}  # output tensor of a group's last node -> its members
    finals: dict[int, list[Node]] = {}    # id(last node) -> members
    absorbed: set[int] = set()
    for node in graph.nodes:
        if not fusable_elementwise(node.op_type, node.domain) or len(node.outputs) != 1 \
                or not node.outputs[0] or not any(node.inputs):
            continue
        out = graph.tensors[node.outputs[0]]
        members: list[Node] = []
        for i in dict.fromkeys(x for x in node.inputs if x):
            g = group_of.get(i)
            if g is None or not private(i, uses) or tuple(graph.tensors[i].shape) != tuple(out.shape) \
                    or len(members) + len(g) + 1 > MAX_GROUP:
                continue
            members.extend(g)
            absorbed.add(id(g[-1]))
            finals.pop(id(g[-1]), None)
            del group_of[i]
        members.append(node)
        group_of[node.outputs[0]] = members
        finals[id(node)] = members
    pos = {id(n): k for k, n in enumerate(graph.nodes)}
    fused: dict[int, Node] = {}
    drop: set[int] = set()
    for members in finals.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda n: pos[id(n)])
        fused[id(members[-1])] = _fuse(graph, members)
        drop.update(id(n) for n in members[:-1])
    if not fused:
        return graph
    nodes = [fused.get(id(n), n) for n in graph.nodes if id(n) not in drop]
    return graph.replace(nodes=nodes)


def _fuse(graph: Graph, members: list[Node]) -> Node:
    step_of = {n.outputs[0]: k for k, n in enumerate(members)}
    ext: list[str] = []
    steps: list[dict[str, Any]] = []
    for n in members:
        refs: list[list[Any] | None] = []
        for i in n.inputs:
            if not i:
                refs.append(None)
            elif i in step_of and step_of[i] < len(steps):
                refs.append(["s", step_of[i]])
            else:
                if i not in ext:
                    ext.append(i)
                refs.append(["x", ext.index(i)])
        while refs and refs[-1] is None:
            refs.pop()
        attrs = {k: v for k, v in n.attrs.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        if n.op_type == "Pow" and len(n.inputs) > 1:
            # a constant scalar exponent becomes a node input of the fused loop; recording its
            # value keeps the multiplications / sqrt Pow emits for it (see ops.elementwise.pow_expr)
            c = graph.initializers.get(n.inputs[1])
            if c is not None and c.size == 1 and c.dtype.kind in "fiu":
                attrs["exponent"] = float(c.reshape(-1)[0])
        steps.append({"op": n.op_type, "in": refs, "attrs": attrs,
                      "dtype": graph.tensors[n.outputs[0]].dtype.name, "opset": int(n.opset)})
    last = members[-1]
    return Node("FusedElementwise", ext, [last.outputs[0]], {"steps": encode_steps(steps)}, last.name, "sofie",
                last.opset)
