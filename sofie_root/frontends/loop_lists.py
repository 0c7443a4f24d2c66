"""Lists appended to in a loop become Loop scan outputs (an ONNX-to-ONNX rewrite before conversion).

TorchScript exports ``outs = []; for ...: outs.append(t)`` followed by ``torch.stack(outs)`` or
``torch.cat(outs, d)`` as a Loop carrying a sequence that starts as ``SequenceEmpty`` and grows by
one ``SequenceInsert`` (at the end) per iteration, read afterwards by ``ConcatFromSequence``. A
sequence whose length is only known at run time is not something the IR types (sequences have a
compile-time length, see ``ops/sequence.py``), but this one is exactly a scan output: the tensors
of every iteration stacked along a new leading axis, whose length is bounded by the trip count
(``ops/control.py``). The rewrite makes it one, and replaces the readers of the final sequence:

* ``ConcatFromSequence``: ``sofie.StackedConcat`` (``ops/sequence.py``), the same concatenation
  (or stacking) read from the stacked tensor;
* ``SequenceLength``: the stacked tensor's leading dimension; ``SequenceAt``: a Gather on it.

Anything else reading the sequence (or a position given to the SequenceInsert, another use of
the carried sequence in the body, the sequence as a graph output) leaves the model unchanged, and
the conversion then refuses the sequence loop state with its usual message.
"""

from __future__ import annotations

import onnx
from onnx import helper

_READERS = {"ConcatFromSequence", "SequenceLength", "SequenceAt"}


def _uses(nodes, name: str) -> int:
    """How many times ``name`` is read by ``nodes`` (and, as an outer-scope name, their sub-graphs)."""
    count = 0
    for n in nodes:
        count += sum(1 for i in n.input if i == name)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                count += _uses(a.g.node, name) + sum(1 for o in a.g.output if o.name == name)
            elif a.type == onnx.AttributeProto.GRAPHS:
                count += sum(_uses(g.node, name) for g in a.graphs)
    return count


def _fresh(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def lower_loop_lists(g: onnx.GraphProto) -> onnx.GraphProto:
    """``g`` with every list-append Loop state turned into a scan output (a copy if anything
    changes; ``g`` itself is never modified)."""
    out = None
    while True:
        found = _find(out or g)
        if found is None:
            return out or g
        if out is None:
            out = onnx.GraphProto()
            out.CopyFrom(g)
            found = _find(out)
        _rewrite(out, *found)


def _find(g: onnx.GraphProto):
    producers = {o: n for n in g.node for o in n.output if o}
    outputs = {o.name for o in g.output}
    for li, loop in enumerate(g.node):
        if loop.op_type != "Loop" or loop.domain not in ("", "ai.onnx"):
            continue
        body = next((a.g for a in loop.attribute if a.name == "body"), None)
        if body is None:
            continue
        n_carried = len(loop.input) - 2
        for k in range(n_carried):
            init = loop.input[2 + k]
            if init not in producers or producers[init].op_type != "SequenceEmpty":
                continue
            if k >= len(loop.output) or 2 + k >= len(body.input) or 1 + k >= len(body.output):
                continue
            seq_in, seq_out = body.input[2 + k].name, body.output[1 + k].name
            ins = [n for n in body.node if seq_out in n.output]
            if len(ins) != 1 or ins[0].op_type != "SequenceInsert" or len(ins[0].input) > 2 or \
                    ins[0].input[0] != seq_in:
                continue
            if _uses(body.node, seq_in) != 1 or _uses(body.node, seq_out) != 0 or \
                    sum(1 for o in body.output if o.name == seq_out) != 1:
                continue
            final = loop.output[k]
            readers = [n for n in g.node if final in n.input]
            if not final or final in outputs or not readers or _uses(g.node, final) != len(readers) or \
                    any(n.op_type not in _READERS or n.input[0] != final or list(n.input).count(final) != 1
                        for n in readers):
                continue
            return li, k, ins[0]
    return None


def _rewrite(g: onnx.GraphProto, li: int, k: int, insert: onnx.NodeProto) -> None:
    loop = g.node[li]
    body = next(a.g for a in loop.attribute if a.name == "body")
    taken = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
    final = loop.output[k]
    stacked = _fresh(final + "_stacked", taken)
    appended = insert.input[1]
    # the body: no sequence input/output; the appended tensor becomes the last scan output
    del body.input[2 + k]
    body.node.remove(insert)
    del body.output[1 + k]
    body.output.append(helper.make_value_info(appended, onnx.TypeProto()))
    # the Loop: one carried value less, one scan output more
    new_loop = helper.make_node("Loop", [*loop.input[:2 + k], *loop.input[3 + k:]],
                                [*loop.output[:k], *loop.output[k + 1:], stacked], name=loop.name)
    new_loop.attribute.extend(loop.attribute)
    nodes = list(g.node)
    nodes[li] = new_loop
    # the readers of the final sequence, on the stacked tensor
    result: list[onnx.NodeProto] = []
    for n in nodes:
        if final not in n.input or n is new_loop:
            result.append(n)
            continue
        result.extend(_reader(n, stacked, taken))
    del g.node[:]
    g.node.extend(result)


def _reader(n: onnx.NodeProto, stacked: str, taken: set[str]) -> list[onnx.NodeProto]:
    out = n.output[0]
    if n.op_type == "SequenceLength":
        shape = _fresh(out + "_shape", taken)
        return [helper.make_node("Shape", [stacked], [shape], name=n.name, start=0, end=1),
                helper.make_node("Squeeze", [shape], [out], name=n.name)]
    if n.op_type == "SequenceAt":
        return [helper.make_node("Gather", [stacked, n.input[1]], [out], name=n.name, axis=0)]
    # ConcatFromSequence: the element rank (needed for a Transpose/Reshape) is not known before
    # conversion, so an internal operator does it on the stacked tensor (ops/sequence.py)
    return [helper.make_node("StackedConcat", [stacked], [out], name=n.name, axis=_attr(n, "axis", 0),
                             new_axis=_attr(n, "new_axis", 0), domain="sofie")]
