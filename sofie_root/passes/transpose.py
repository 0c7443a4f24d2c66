"""Pass ``eliminate_transposes``: fewer data movements.

* Transpose∘Transpose becomes one Transpose (none when the permutations cancel);
* a Transpose or Reshape that changes nothing is removed, a Reshape of a Reshape reads the source;
* a Transpose of a constant is folded into the constant;
* a 2-D Transpose feeding a Gemm becomes its transA/transB; a 2-D MatMul reading one becomes a Gemm;
* Transpose -> element-wise chain (other operands constant) -> Transpose: the chain runs in the
  original layout (constants permuted once at compile time) and the two Transposes compose or
  cancel (Keras channels-last permutes around activations, attention head shuffles); a Transpose
  before a single element-wise node moves below it;
* a 1x1 Conv reading channels-last data through a Transpose (torch's ``Conv1d`` over particles
  stored [N, P, C]) becomes MatMul (+ bias Add) on the channels-last data, then the Transpose,
  which then moves on and cancels with the next one.

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
            g = _sink(graph, node, perm, uses, cons) or _sink_one(graph, node, perm, uses, cons)
            if g is not None:
                return g
        elif node.op_type == "Conv":
            g = _pointwise_conv(graph, node, prod, uses)
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
            elif i and i in graph.initializers:
                name = _permuted_const(graph, i, rank, inv, inits, tensors, taken)
                if name is None:
                    return None
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


def _permuted_const(graph: Graph, name: str, rank: int, inv: list[int], inits: dict, tensors: dict,
                    taken: set[str]) -> str | None:
    """``name`` (a constant broadcast in the permuted layout) as a constant of the original layout."""
    c = graph.initializers[name]
    if c.size == 1:
        return name
    if c.ndim > rank:
        return None
    full = c.reshape((1,) * (rank - c.ndim) + c.shape)
    new = fresh(f"{name}_perm", taken)
    inits[new] = np.ascontiguousarray(full.transpose(inv))
    tensors[new] = TensorInfo(new, tensors[name].dtype, tuple(inits[new].shape))
    return new


def _sink_one(graph: Graph, t: Node, perm: list[int], uses, cons) -> Graph | None:
    """Transpose -> element-wise node (other operands constant): the node runs first, in the
    original layout, and the Transpose follows it, one step closer to one it may cancel with
    (or to a product it may be folded into)."""
    y = t.outputs[0]
    if not private(y, uses) or len(cons.get(y, [])) != 1:
        return None
    e = cons[y][0]
    if not fusable_elementwise(e.op_type, e.domain) or len(e.outputs) != 1 or e.inputs.count(y) != 1:
        return None
    if tuple(graph.tensors[e.outputs[0]].shape) != tuple(graph.tensors[y].shape):
        return None
    others = [i for i in e.inputs if i and i != y]
    if any(i not in graph.initializers for i in others):
        return None
    inv = list(np.argsort(perm))
    inits = dict(graph.initializers)
    tensors = dict(graph.tensors)
    taken = all_names(graph)
    ins = []
    for i in e.inputs:
        if i == y:
            ins.append(t.inputs[0])
        elif i:
            c = _permuted_const(graph, i, len(perm), inv, inits, tensors, taken)
            if c is None:
                return None
            ins.append(c)
        else:
            ins.append(i)
    mid = fresh(f"{e.outputs[0]}_untransposed", taken)
    new_e = replace(e, inputs=ins, outputs=[mid])
    for info in infer_outputs(new_e, tensors, inits):
        tensors[info.name] = info
    new_t = replace(t, inputs=[mid], outputs=list(e.outputs))
    nodes = []
    for n in graph.nodes:
        if n is t:
            continue
        nodes.extend([new_e, new_t] if n is e else [n])
    return graph.replace(nodes=nodes, initializers=inits, tensors=tensors)


def _pointwise_conv(graph: Graph, conv: Node, prod, uses) -> Graph | None:
    """A 1x1 Conv (stride 1, no padding, one group) reading a channels-last tensor through a
    Transpose is a MatMul over the channels-last data (+ bias), followed by that Transpose.
    Only when the Conv is the Transpose's only reader: the Transpose then moves rather than
    being duplicated."""
    t = prod.get(conv.inputs[0])
    w = graph.initializers.get(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if not _is_transpose(t) or w is None or len(conv.outputs) != 1 or not private(conv.inputs[0], uses) \
            or conv.inputs.count(conv.inputs[0]) != 1:
        return None
    rank = graph.tensors[conv.inputs[0]].rank
    if rank < 3 or _perm(t, rank) != [0, rank - 1, *range(1, rank - 1)]:
        return None
    a = conv.attrs
    n_sp = rank - 2
    if (w.ndim != rank or any(k != 1 for k in w.shape[2:]) or int(a.get("group", 1)) != 1
            or any(int(x) != 1 for x in a.get("strides", [1] * n_sp))
            or any(int(x) != 1 for x in a.get("dilations", [1] * n_sp))
            or any(int(x) != 0 for x in a.get("pads", [0] * 2 * n_sp))
            or a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", "")):
        return None
    bias = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else ""
    if bias and bias not in graph.initializers:
        return None
    inits = dict(graph.initializers)
    tensors = dict(graph.tensors)
    taken = all_names(graph)
    w2 = fresh(f"{conv.inputs[1]}_matmul", taken)
    inits[w2] = np.ascontiguousarray(w.reshape(w.shape[0], w.shape[1]).T)
    tensors[w2] = TensorInfo(w2, tensors[conv.inputs[1]].dtype, tuple(inits[w2].shape))
    out = conv.outputs[0]
    mm = Node("MatMul", [t.inputs[0], w2], [fresh(f"{out}_cl", taken)], {}, conv.name, "", conv.opset)
    new = [mm]
    if bias:
        add = Node("Add", [mm.outputs[0], bias], [fresh(f"{out}_cl_bias", taken)], {}, conv.name, "", conv.opset)
        new.append(add)
    for n in new:
        for info in infer_outputs(n, tensors, inits):
            tensors[info.name] = info
    new.append(Node("Transpose", [new[-1].outputs[0]], [out], {"perm": _perm(t, rank)}, conv.name, "", t.opset))
    nodes = []
    for n in graph.nodes:
        nodes.extend(new if n is conv else [n])
    return graph.replace(nodes=nodes, initializers=inits, tensors=tensors)
