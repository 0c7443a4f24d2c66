"""Dead-code elimination: drops nodes, initializers and tensor infos nothing needs."""

from __future__ import annotations

from ..ir.graph import Graph, subgraph_reads


def eliminate_dead_code(graph: Graph) -> Graph:
    """Remove nodes whose outputs are neither graph outputs nor read by a live node."""
    needed = set(graph.outputs)
    keep = []
    for node in reversed(graph.nodes):
        if not any(o in needed for o in node.outputs if o):
            continue
        keep.append(node)
        needed.update(i for i in node.inputs if i)
        needed.update(subgraph_reads(node))
    keep.reverse()
    used = set(needed)
    inits = {k: v for k, v in graph.initializers.items() if k in used}
    tensors = {k: v for k, v in graph.tensors.items()
               if k in used or k in graph.inputs or any(k in n.outputs for n in keep)}
    return graph.replace(nodes=keep, initializers=inits, tensors=tensors)
