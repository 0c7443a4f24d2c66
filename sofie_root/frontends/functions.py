"""Expansion of an ONNX node into the function body the ONNX spec defines it by.

Some operators are specified as functions of other operators (SwiGLU is Swish then Mul,
RotaryEmbedding a few Slices, Muls and Concats); ``onnx.defs`` holds these bodies, some of them
built for the node's attributes and input types ("context dependent"). The ONNX frontend
compiles such operators (``ops/functions.py``) through their body, and computes float16/bfloat16
Attention and RotaryEmbedding (float32/float64 have a kernel, ``ops/rotary.py``) through it so
that each step rounds as the reference does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx
import onnx.defs

from ..errors import InvalidGraphError


def function_body(proto: onnx.NodeProto, opset: int, input_types: Sequence[onnx.TypeProto | None],
                  fresh_name: Callable[[str], str], where: str) -> list[onnx.NodeProto] | None:
    """The nodes of ``proto``'s function body at ``opset``, wired to the node's inputs and outputs
    (the body's own tensors renamed with ``fresh_name``, attribute references resolved), or None
    if the operator has no function body there (or one this expansion cannot inline: sub-graphs)."""
    try:
        schema = onnx.defs.get_schema(proto.op_type, opset, proto.domain)
    except onnx.defs.SchemaError:
        return None
    fn = onnx.FunctionProto()
    ctx = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    plain = [v for v in schema.function_opset_versions if v <= opset]
    if ctx:
        types = [(t if t is not None else onnx.TypeProto()).SerializeToString() for t in input_types]
        fn.ParseFromString(schema.get_context_dependent_function_with_opset_version(
            max(ctx), proto.SerializeToString(), types))
    elif plain:
        fn.ParseFromString(schema.get_function_with_opset_version(max(plain)))
    else:
        return None
    given = {a.name: a for a in proto.attribute}
    defaults = {a.name: a for a in fn.attribute_proto}
    rename = dict(zip(fn.input, proto.input))
    rename.update(dict.fromkeys(list(fn.input)[len(proto.input):], ""))  # optional inputs not given
    rename.update(zip(fn.output, proto.output))
    for n in fn.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            return None  # a body with sub-graphs would need their names renamed too
        for o in n.output:
            if o and o not in rename:
                rename[o] = fresh_name(o)
    out = []
    for n in fn.node:
        step = onnx.NodeProto()
        step.CopyFrom(n)
        step.name = proto.name
        step.input[:] = [rename.get(i, i) if i else "" for i in n.input]
        step.output[:] = [rename.get(o, o) if o else "" for o in n.output]
        attrs = []
        for a in n.attribute:
            if a.ref_attr_name:
                src = given.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
                if src is None:
                    continue  # not given and no default: the inner operator's default applies
                if a.type and src.type != a.type:
                    raise InvalidGraphError(f"{where}: attribute {a.ref_attr_name!r} has the wrong type")
                b = onnx.AttributeProto()
                b.CopyFrom(src)
                b.name = a.name
                attrs.append(b)
            else:
                attrs.append(a)
        del step.attribute[:]
        step.attribute.extend(attrs)
        out.append(step)
    return out
