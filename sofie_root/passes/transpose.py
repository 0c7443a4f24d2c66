"""Pass ``eliminate_transposes``: fewer data movements.

* Transpose∘Transpose becomes one Transpose (none when the permutations cancel);
* a Transpose or Reshape that changes nothing is removed, a Reshape of a Reshape reads the source;
* a Transpose of a constant is folded into the constant;
* a 2-D Transpose feeding a Gemm becomes its transA/transB; a 2-D MatMul reading one becomes a Gemm;
* Transpose -> element-wise chain (other operands constant) -> Transpose: the chain runs in the
  original layout (constants permuted once at compile time) and the two Transposes compose or
  cancel (Keras channels-last permutes around activations, attention head shuffles).

Rewrites are applied one at a time until none applies, each on a validated graph.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir.graph import Graph, Node, TensorInfo
from ..ops.fused import fusable_elementwise
from .dce import eliminate_dead_code
from .rewrite import all_names, fresh, infer_outputs, private, use_counts


def _perm(node: Node, rank: int) -> list[int]:
    p = node.attrs.get("perm")
    return list(range(rank))[::-1] if p is None else [int(x) % rank if rank else int(x) for x in p]


def _is_transpose(node: Node | None) -> bool:
    return node is not None and node.op_type == "Transpose" and not node.domain


def _drop_forward(graph: Graph, node: Node, src: str) -> Graph | None:
    """Remove ``node`` (output == its input ``src`` in value and shape): the producer of ``src``
    takes over the output name if ``src`` is read by nothing else, else readers are rewired."""
    out = node.outputs[0]
    uses = use_counts(graph)
    prod = graph.producers()
    p = prod.get(src)
    if p is not None and private(src, uses) and len(p.outputs) == 1:
        nodes = [replace(n, outputs=[out]) if n is p else n for n in graph.nodes if n is not node]
        return graph.replace(nodes=nodes)
    if out in graph.outputs:
        return None
    nodes = [replace(n, inputs=[src if i == out else i for i in n.inputs]) for n in graph.nodes if n is not node]
    if any(out in _sub_reads(n) for n in nodes):
        return None
    return graph.replace(nodes=nodes)


def _sub_reads(node: Node) -> set[str]:
    from ..ir.graph import subgraph_reads

    return subgraph_reads(node)


def _step(graph: Graph) -> Graph | None:
    """Apply the first rewrite found; None if none applies."""
    uses = use_counts(graph)
    prod = graph.producers()
    cons = graph.consumers()
    inits = graph.initializers
    for node in graph.nodes:
        if node.domain:
            continue
        if node.op_type == "Transpose":
            x = node.inputs[0]
            info = graph.tensors[x]
            perm = _perm(node, info.rank)
            if perm == list(range(info.rank)):
                g = _drop_forward(graph, node, x)
                if g is not None:
                    return g
            if x in inits:
                arr = np.ascontiguousarray(inits[x].transpose(perm))
                new_inits = dict(graph.initializers)
                new_inits[node.outputs[0]] = arr
                return graph.replace(nodes=[n for n in graph.nodes if n is not node], initializers=new_inits)
            inner = prod.get(x)
            if _is_transpose(inner):
                p1 = _perm(inner, graph.tensors[inner.inputs[0]].rank)
                attrs = dict(node.attrs)
                attrs["perm"] = [p1[i] for i in perm]
                new = replace(node, inputs=[inner.inputs[0]], attrs=attrs)
                # the inner Transpose goes too when only this one read it (its input may then be renamed)
                gone = inner if private(x, uses) else None
                return graph.replace(nodes=[new if n is node else n for n in graph.nodes if n is not gone])
            g = _sink(graph, node, perm, uses, cons)
            if g is not None:
                return g
        elif node.op_type == "Reshape":
            x = node.inputs[0]
            if tuple(graph.tensors[x].shape) == tuple(graph.tensors[node.outputs[0]].shape):
                g = _drop_forward(graph, node, x)
                if g is not None:
                    return g
            inner = prod.get(x)
            target = inits.get(node.inputs[1]) if len(node.inputs) > 1 else None
            if inner is not None and inner.op_type == "Reshape" and not inner.domain and target is not None \
                    and not (target == 0).any():
                # a reshape of a reshape only depends on the element order, which neither changes
                new = replace(node, inputs=[inner.inputs[0], *node.inputs[1:]])
                return graph.replace(nodes=[new if n is node else n for n in graph.nodes])
        elif node.op_type in ("Gemm", "MatMul"):
            for k in (0, 1):
                t = prod.get(node.inputs[k])
                if not _is_transpose(t) or graph.tensors[t.inputs[0]].rank != 2:
                    continue
                if node.op_type == "MatMul" and (graph.tensors[node.inputs[0]].rank != 2
                                                 or graph.tensors[node.inputs[1]].rank != 2):
                    continue
                if _perm(t, 2) != [1, 0]:
                    continue
                key = "transA" if k == 0 else "transB"
                attrs = dict(node.attrs) if node.op_type == "Gemm" else {}
                attrs[key] = 1 - int(attrs.get(key, 0))
                ins = list(node.inputs)
                ins[k] = t.inputs[0]
                new = replace(node, op_type="Gemm", inputs=ins, attrs=attrs)
                return graph.replace(nodes=[new if n is node else n for n in graph.nodes])
    return None


def _sink(graph: Graph, t1: Node, perm: list[int], uses, cons) -> Graph | None:
    """Transpose t1 -> element-wise chain -> Transpose t2: run the chain before t1's permutation."""
    cur = t1.outputs[0]
    rank = len(perm)
    chain: list[Node] = []
    while private(cur, uses) and len(cons.get(cur, [])) == 1:
        n = cons[cur][0]
        if _is_transpose(n):
            break
        if not fusable_elementwise(n.op_type, n.domain) or len(n.outputs) != 1 or n.inputs.count(cur) != 1:
            return None
        others = [i for i in n.inputs if i and i != cur]
        if any(i not in graph.initializers for i in others):
            return None
        if tuple(graph.tensors[n.outputs[0]].shape) != tuple(graph.tensors[cur].shape):
            return None
        chain.append(n)
        cur = n.outputs[0]
    else:
        return None
    t2 = cons[cur][0]
    if not chain or not private(cur, uses):
        return None
    inv = list(np.argsort(perm))
    inits = dict(graph.initializers)
    tensors = dict(graph.tensors)
    taken = all_names(graph)
    src = t1.inputs[0]
    new_chain = []
    for n in chain:
        ins = []
        for i in n.inputs:
            if i == (chain[len(new_chain) - 1].outputs[0] if new_chain else t1.outputs[0]):
                ins.append(src)
            elif i and i in graph.initializers and graph.initializers[i].size > 1:
                c = graph.initializers[i]
                if c.ndim > rank:
                    return None
                full = c.reshape((1,) * (rank - c.ndim) + c.shape)
                name = fresh(f"{i}_perm", taken)
                inits[name] = np.ascontiguousarray(full.transpose(inv))
                tensors[name] = TensorInfo(name, tensors[i].dtype, tuple(inits[name].shape))
                ins.append(name)
            else:
                ins.append(i)
        new = replace(n, inputs=ins)
        for info in infer_outputs(new, tensors, inits):
            tensors[info.name] = info
        new_chain.append(new)
        src = n.outputs[0]
    p2 = _perm(t2, rank)
    attrs = dict(t2.attrs)
    attrs["perm"] = [perm[i] for i in p2]
    new_t2 = replace(t2, inputs=[src], attrs=attrs)
    repl = {id(a): b for a, b in zip(chain, new_chain)}
    repl[id(t2)] = new_t2
    nodes = [repl.get(id(n), n) for n in graph.nodes if n is not t1]
    return graph.replace(nodes=nodes, initializers=inits, tensors=tensors)


def eliminate_transposes(graph: Graph) -> Graph:
    """Apply the Transpose/Reshape rewrites until none applies."""
    changed = False
    for _ in range(4 * len(graph.nodes) + 4):
        g = _step(graph)
        if g is None:
            break
        graph, changed = g, True
    # the rewrites leave the Transposes they bypassed unread
    return eliminate_dead_code(graph) if changed else graph
