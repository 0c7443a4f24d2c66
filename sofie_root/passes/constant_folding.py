"""Pass ``fold_constants``: nodes whose inputs are all constant become initializers.

The ONNX frontend already folds while it converts; this pass folds again after other passes have
made new constant sub-graphs (a Transpose of a weight, BatchNorm parameters combined into a
scale). Evaluation and size limits are those of :mod:`sofie_root.passes.fold`.
"""

from __future__ import annotations

from ..ir.dtypes import dtype_from_numpy
from ..ir.graph import Graph, TensorInfo, subgraph_reads
from .fold import evaluate_node, should_fold


def fold_constants(graph: Graph) -> Graph:
    """Replace every foldable node whose inputs are all initializers by its computed outputs."""
    from ..ops.base import NodeView, lookup

    inits = dict(graph.initializers)
    tensors = dict(graph.tensors)
    nodes = []
    changed = False
    for node in graph.nodes:
        op = lookup(node.domain, node.op_type)
        ins = [i for i in node.inputs if i]
        foldable = (op is not None and ins and all(i in inits for i in ins) and not subgraph_reads(node)
                    and (not node.domain or hasattr(op, "evaluate")) and not getattr(op, "user_defined", False))
        infos = [graph.tensors.get(o) if o else None for o in node.outputs]
        if not foldable or any(o and info is None for o, info in zip(node.outputs, infos)) \
                or not should_fold(node, infos):
            nodes.append(node)
            continue
        consts = [inits[i] if i else None for i in node.inputs]
        if hasattr(op, "evaluate"):
            view = NodeView(node, [graph.tensors[i] if i else None for i in node.inputs], consts)
            results = op.evaluate(view, consts)
        else:
            results = evaluate_node(node, consts, [i.dtype if i else None for i in infos], node.label)
        k = 0
        for name, info in zip(node.outputs, infos):
            if not name:
                continue
            arr = results[k]
            k += 1
            if tuple(arr.shape) != tuple(info.shape) or dtype_from_numpy(arr.dtype) != info.dtype:
                # shapes were inferred differently (should not happen): keep the node rather than guess
                break
            inits[name] = arr
            # the array is now the value: drop the compile-time value the node's output carried
            tensors[name] = TensorInfo(name, info.dtype, info.shape)
        else:
            changed = True
            continue
        for name in node.outputs:
            if name:
                inits.pop(name, None)
                tensors[name] = graph.tensors[name]
        nodes.append(node)
    if not changed:
        return graph
    return graph.replace(nodes=nodes, initializers=inits, tensors=tensors)
