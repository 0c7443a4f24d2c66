"""Sequences whose elements are known tensors: read the tensors, not the packed sequence.

A sequence built by SequenceConstruct, SequenceEmpty, SequenceInsert and SequenceErase at
compile-time positions holds tensors of the graph, in an order known here (what exporters emit
for a Python list that is concatenated or indexed: ``torch.cat([a, b, c])``). Each of those
operators copies the whole packed sequence (``ops/sequence.py``); a ConcatFromSequence
(``new_axis=0``) of such a sequence becomes a Concat of the tensors, a SequenceAt at a
compile-time position an Identity of the tensor, and the sequence operators nothing reads any
more are removed by the dead-code pass that follows. Pieces of given sizes (SplitToSequence
with ``split``) are made tensors by a Split, when then nothing reads the sequence itself. A
stack (ConcatFromSequence with ``new_axis=1``) of all the slices of a tensor (SplitToSequence
without ``split``, ``keepdims=0``: torch's ``unbind``) moves one axis: a Transpose, one pass
instead of a copy per slice and a strided stack. Likewise OptionalGetElement of ``Optional(x)``:
its readers read ``x`` (the two copies go).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir.dtypes import INT64
from ..ir.graph import Graph, Node, TensorInfo, subgraph_reads
from .rewrite import all_names, fresh, infer_outputs


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
    # a SplitToSequence becomes a Split only when then nothing reads its sequence any more (it
    # is dropped, so a second run finds nothing to do); otherwise it is left as it is
    no_split: set[str] = set()
    while True:
        nodes, tensors, inits, split = _resolve(graph, no_split)
        kept = split & _live_reads(nodes, graph.outputs)
        if not kept:
            break
        no_split |= kept
    # the replaced SplitToSequence nodes go, with the (dead) sequence nodes reading their output
    live = _live_reads(nodes, graph.outputs)
    gone, kept_nodes = set(split), []
    for n in nodes:
        if (n.op_type == "SplitToSequence" and n.outputs[0] in split) or (
                any(i in gone for i in n.inputs) and not any(o in live for o in n.outputs if o)):
            gone.update(o for o in n.outputs if o)
            continue
        kept_nodes.append(n)
    nodes = kept_nodes
    if len(nodes) != len(graph.nodes) or any(a is not b for a, b in zip(nodes, graph.nodes)):
        graph = graph.replace(nodes=nodes, tensors=tensors, initializers=inits)
    return _read_optional_values(graph)


def _live_reads(nodes: list[Node], outputs) -> set[str]:
    """The tensors read by the nodes the outputs need (sub-graph reads included)."""
    needed = set(outputs)
    for node in reversed(nodes):
        if any(o in needed for o in node.outputs if o):
            needed.update(i for i in node.inputs if i)
            needed.update(subgraph_reads(node))
    return needed


def _resolve(graph: Graph, no_split: set[str]) -> tuple[list[Node], dict, dict, set[str]]:
    """The rewritten nodes, tensors and initializers, and the sequences made by a new Split."""
    known: dict[str, list[str]] = {}
    unbound: dict[str, tuple[str, int]] = {}  # sequence -> (tensor, axis) of SplitToSequence's single slices
    nodes: list[Node] = []
    split_seqs: set[str] = set()
    tensors, inits, taken = dict(graph.tensors), dict(graph.initializers), all_names(graph)
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
        elif op == "SplitToSequence" and len(ins) > 1 and ins[1] and out not in no_split:
            # pieces of given sizes: a Split beside it makes them tensors
            split = _split_node(graph, node, tensors, inits, taken)
            if split is not None:
                nodes.append(split)
                known[out] = list(split.outputs)
                split_seqs.add(out)
        elif op == "SplitToSequence" and (len(ins) < 2 or not ins[1]) and not int(node.attrs.get("keepdims", 1)):
            rank = graph.tensors[ins[0]].rank
            unbound[out] = (ins[0], int(node.attrs.get("axis", 0)) % max(rank, 1))
        elif op == "ConcatFromSequence" and ins[0] in unbound and int(node.attrs.get("new_axis", 0)):
            x, a = unbound[ins[0]]
            rank = graph.tensors[x].rank
            perm = [d for d in range(rank) if d != a]
            perm.insert(int(node.attrs["axis"]) % rank, a)
            new = replace(node, op_type="Transpose", inputs=[x], attrs={"perm": perm})
        elif op == "ConcatFromSequence" and ins[0] in known and known[ins[0]] \
                and not int(node.attrs.get("new_axis", 0)):
            new = replace(node, op_type="Concat", inputs=list(known[ins[0]]), attrs={"axis": node.attrs["axis"]})
        elif op == "SequenceAt" and ins[0] in known:
            items = known[ins[0]]
            pos = _position(graph, node, 1)
            if pos is not None and -len(items) <= pos < len(items):
                new = replace(node, op_type="Identity", inputs=[items[pos]], attrs={})
        nodes.append(new)
    return nodes, tensors, inits, split_seqs


def _split_node(graph: Graph, node: Node, tensors: dict, inits: dict, taken: set[str]) -> Node | None:
    """A Split (opset 13: sizes as an input) giving SplitToSequence's pieces as tensors, when the
    sizes and the axis length are known and no piece is empty; None otherwise."""
    x = tensors[node.inputs[0]]
    split = graph.initializers.get(node.inputs[1])
    if split is None or x.rank == 0:
        return None
    axis = int(node.attrs.get("axis", 0)) % x.rank
    length = x.shape[axis]
    if not isinstance(length, (int, np.integer)):
        return None
    split = np.asarray(split).astype(np.int64)
    if split.ndim == 0:
        s = int(split)
        if s <= 0:
            return None
        sizes = [s] * (int(length) // s) + ([int(length) % s] if int(length) % s else [])
    else:
        sizes = [int(v) for v in split]
    if not sizes or min(sizes) <= 0 or sum(sizes) != length:
        return None
    name = fresh(f"{node.outputs[0]}_sizes", taken)
    inits[name] = np.array(sizes, np.int64)
    tensors[name] = TensorInfo(name, INT64, (len(sizes),))
    outs = [fresh(f"{node.outputs[0]}_piece{k}", taken) for k in range(len(sizes))]
    new = Node("Split", [node.inputs[0], name], outs, {"axis": axis}, name=node.name, opset=13)
    for info in infer_outputs(new, tensors, inits):
        tensors[info.name] = info
    return new


def _read_optional_values(graph: Graph) -> Graph:
    """Readers of OptionalGetElement(Optional(x)) read x; an Identity where the value is a graph
    output or read inside a sub-graph."""
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
