"""Sequences whose elements are known tensors: read the tensors, not the packed sequence.

A sequence built by SequenceConstruct, SequenceEmpty, SequenceInsert and SequenceErase at
compile-time positions holds tensors of the graph, in an order known here (what exporters emit
for a Python list that is concatenated or indexed: ``torch.cat([a, b, c])``). Each of those
operators copies the whole packed sequence (``ops/sequence.py``); a ConcatFromSequence
(``new_axis=0``) of such a sequence becomes a Concat of the tensors, a SequenceAt at a
compile-time position an Identity of the tensor, and the sequence operators nothing reads any
more are removed by the dead-code pass that follows. Likewise OptionalGetElement of
``Optional(x)``: its readers read ``x`` (the two copies go).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir.graph import Graph, Node


def _position(graph: Graph, node: Node, k: int) -> int | None:
    """The compile-time position at input ``k`` (None: not a constant)."""
    if len(node.inputs) <= k or not node.inputs[k]:
        return None
    arr = graph.initializers.get(node.inputs[k])
    if arr is None or np.asarray(arr).size != 1:
        return None
    return int(np.asarray(arr).reshape(()))


def resolve_sequences(graph: Graph) -> Graph:
    """Replace ConcatFromSequence / SequenceAt of sequences of known tensors (see the module)."""
    known: dict[str, list[str]] = {}
    nodes, changed = [], False
    for node in graph.nodes:
        op = node.op_type if node.domain in ("", "ai.onnx") else ""
        ins = node.inputs
        out = node.outputs[0] if node.outputs else ""
        new = node
        if op == "SequenceConstruct" and all(ins):
            known[out] = list(ins)
        elif op == "SequenceEmpty":
            known[out] = []
        elif op == "SequenceInsert" and ins[0] in known and len(ins) > 1 and ins[1]:
            items = list(known[ins[0]])
            pos = len(items) if len(ins) < 3 or not ins[2] else _position(graph, node, 2)
            if pos is not None and -len(items) <= pos <= len(items):
                items.insert(pos + len(items) if pos < 0 else pos, ins[1])
                known[out] = items
        elif op == "SequenceErase" and ins[0] in known and known[ins[0]]:
            items = list(known[ins[0]])
            pos = -1 if len(ins) < 2 or not ins[1] else _position(graph, node, 1)
            if pos is not None and -len(items) <= pos < len(items):
                del items[pos]
                known[out] = items
        elif op == "ConcatFromSequence" and ins[0] in known and known[ins[0]] \
                and not int(node.attrs.get("new_axis", 0)):
            new = replace(node, op_type="Concat", inputs=list(known[ins[0]]), attrs={"axis": node.attrs["axis"]})
        elif op == "SequenceAt" and ins[0] in known:
            items = known[ins[0]]
            pos = _position(graph, node, 1)
            if pos is not None and -len(items) <= pos < len(items):
                new = replace(node, op_type="Identity", inputs=[items[pos]], attrs={})
        changed = changed or new is not node
        nodes.append(new)
    graph = graph.replace(nodes=nodes) if changed else graph
    return _read_optional_values(graph)


def _read_optional_values(graph: Graph) -> Graph:
    """Readers of OptionalGetElement(Optional(x)) read x; an Identity where the value is a graph
    output or read inside a sub-graph."""
    from ..ir.graph import subgraph_reads

    prod = graph.producers()
    rename: dict[str, str] = {}
    nodes, changed = [], False
    for node in graph.nodes:
        src = prod.get(node.inputs[0]) if node.op_type == "OptionalGetElement" and node.inputs else None
        if (src is not None and src.op_type == "Optional" and src.inputs and src.inputs[0]
                and not node.domain and not src.domain):
            x, g = rename.get(src.inputs[0], src.inputs[0]), node.outputs[0]
            if g in graph.outputs or any(g in subgraph_reads(n) for n in graph.nodes):
                nodes.append(replace(node, op_type="Identity", inputs=[x], attrs={}))
            else:
                rename[g] = x
            changed = True
            continue
        if rename and any(i in rename for i in node.inputs):
            node = replace(node, inputs=[rename.get(i, i) for i in node.inputs])
        nodes.append(node)
    if not changed:
        return graph
    return graph.replace(nodes=nodes, tensors={k: v for k, v in graph.tensors.items() if k not in rename})
