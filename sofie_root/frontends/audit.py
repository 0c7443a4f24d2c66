"""Attribute audit of ONNX nodes, run by the ONNX frontend before an operator sees a node.

Models met in the wild carry attributes their opset no longer has (an exporter upgraded the
opset number but left ``axes`` on a ReduceSum), attributes of the wrong type, or values that
make no sense (an RNN ``clip`` of 0). Each operator reading only the attributes it knows would
ignore such an attribute without a word and compute something else; this module is the one
place that looks at every attribute of every default-domain node (and of the training domain's
optimizers) against the operator's schema at the model's opset (``onnx.defs``) and decides, naming the node and the attribute:

* an attribute that a newer opset turned into an input (:data:`BECAME_INPUTS`) is honoured: it
  becomes a constant input, with a :class:`~sofie_root.errors.SofieWarning`; given both as
  attribute and as input it is refused (:class:`~sofie_root.errors.InvalidGraphError`);
* an attribute whose old meaning differs from what the operator now does is refused
  (:data:`REFUSED`);
* any other attribute unknown to the schema is ignored with a warning (it has no meaning at
  this opset; it stays on the node, so files written from the graph keep it);
* an attribute of the wrong type, or a required attribute that is missing, is refused;
* degenerate values (:func:`_degenerate`): an RNN/LSTM/GRU ``clip`` <= 0 can only zero the
  layer, so it is read as "no clipping" (ROOT SOFIE's reading) with a warning; a non-positive
  ``hidden_size`` is refused.

Other degenerate values (strides, dilations, kernel sizes, groups, block sizes, pads) are
checked by the operators themselves, where the shapes they depend on are known.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import onnx
import onnx.defs
from onnx import helper

from ..errors import InvalidGraphError, SofieWarning

_REDUCE_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")

#: op_type -> (opset from which the attribute is an input, {attribute: (input index, kind)}),
#: kind "ints" (int64 vector), "int1" (int64 [1]), "like0" (scalar of input 0's type),
#: "float" (float32 scalar), "floats" (float32 vector)
BECAME_INPUTS: dict[str, tuple[int, dict[str, tuple[int, str]]]] = {
    "ReduceSum": (13, {"axes": (1, "ints")}),
    **{op: (18, {"axes": (1, "ints")}) for op in _REDUCE_18},
    "Squeeze": (13, {"axes": (1, "ints")}),
    "Unsqueeze": (13, {"axes": (1, "ints")}),
    "Split": (13, {"split": (1, "ints")}),
    "Pad": (11, {"pads": (1, "ints"), "paddings": (1, "ints"), "value": (2, "like0")}),
    "Clip": (11, {"min": (1, "like0"), "max": (2, "like0")}),
    "Slice": (10, {"starts": (1, "ints"), "ends": (2, "ints"), "axes": (3, "ints")}),
    "TopK": (10, {"k": (1, "int1")}),
    "Dropout": (12, {"ratio": (1, "float")}),
    "Upsample": (9, {"scales": (1, "floats")}),
    "Reshape": (5, {"shape": (1, "ints")}),
}

#: attributes of old opsets whose meaning the current operator does not have -> why they are
#: refused (unless they hold the value that means what the operator does now)
REFUSED: dict[str, str] = {
    "broadcast": "legacy (opset < 7) broadcasting along 'axis' is not ONNX broadcasting any more",
    "spatial": "BatchNormalization spatial=0 (per-activation statistics, opset < 9) is not supported",
    "is_test": "training-mode behaviour selected by the opset < 7 attribute is_test is not supported",
}

_ATTR_TYPES = {
    "FLOAT": onnx.AttributeProto.FLOAT, "INT": onnx.AttributeProto.INT, "STRING": onnx.AttributeProto.STRING,
    "TENSOR": onnx.AttributeProto.TENSOR, "GRAPH": onnx.AttributeProto.GRAPH,
    "FLOATS": onnx.AttributeProto.FLOATS, "INTS": onnx.AttributeProto.INTS, "STRINGS": onnx.AttributeProto.STRINGS,
    "TENSORS": onnx.AttributeProto.TENSORS, "GRAPHS": onnx.AttributeProto.GRAPHS,
    "SPARSE_TENSOR": onnx.AttributeProto.SPARSE_TENSOR, "TYPE_PROTO": onnx.AttributeProto.TYPE_PROTO,
}


#: the domains audited here: the default domain and the training domain (optimizers), whose
#: operators have onnx.defs schemas (ai.onnx.ml nodes get the attribute-kind check of
#: ``ops/attrs.py`` only)
AUDITED_DOMAINS = ("", "ai.onnx.preview.training")


def _schema(op_type: str, opset: int, domain: str = ""):
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None


def _warn(msg: str) -> None:
    warnings.warn(msg, SofieWarning, stacklevel=4)


def _as_array(a: onnx.AttributeProto, kind: str, dtype_of_input0: Callable[[], np.dtype]) -> np.ndarray:
    value = helper.get_attribute_value(a)
    if kind == "ints":
        return np.asarray(list(value), dtype=np.int64).reshape(-1)
    if kind == "int1":
        return np.asarray([value], dtype=np.int64)
    if kind == "float":
        return np.asarray(value, dtype=np.float32)
    if kind == "floats":
        return np.asarray(list(value), dtype=np.float32).reshape(-1)
    return np.asarray(value, dtype=dtype_of_input0())


def audit_node(proto: onnx.NodeProto, opset: int, where: str,
               fresh_name: Callable[[str], str],
               dtype_of: Callable[[str], np.dtype]) -> tuple[onnx.NodeProto, dict[str, np.ndarray]]:
    """Check the attributes of a node of an audited domain (:data:`AUDITED_DOMAINS`) against
    its schema at ``opset`` (the opset of the node's domain); return the node to convert
    (possibly with attributes moved to new constant inputs) and those constants by name.

    ``where`` names the node in messages, ``fresh_name(hint)`` gives an unused tensor name and
    ``dtype_of(tensor)`` the numpy dtype of an input tensor.
    """
    domain = "" if proto.domain == "ai.onnx" else proto.domain
    if domain not in AUDITED_DOMAINS:
        return proto, {}
    schema = _schema(proto.op_type, opset, domain)
    if schema is None:
        return proto, {}  # not an operator of this opset: reported by the operator registry
    known = schema.attributes
    # (the legacy attributes below are those of default-domain operators)
    moved = BECAME_INPUTS.get(proto.op_type) if not domain else None
    keep: list[onnx.AttributeProto] = []
    new_inputs = list(proto.input)
    consts: dict[str, np.ndarray] = {}
    for a in proto.attribute:
        if a.name in REFUSED and a.name not in known and not domain:
            value = helper.get_attribute_value(a)
            harmless = {"spatial": 1, "broadcast": 0, "is_test": 1}[a.name]
            if value != harmless:
                raise InvalidGraphError(f"{where}: attribute {a.name}={value!r}: {REFUSED[a.name]}")
    for a in proto.attribute:
        if a.name in known:
            want = _ATTR_TYPES.get(known[a.name].type.name)
            if want is not None and a.type != want and not a.ref_attr_name:
                got = onnx.AttributeProto.AttributeType.Name(a.type)
                raise InvalidGraphError(f"{where}: attribute {a.name!r} has type {got}, the operator "
                                        f"(opset {opset}) takes {known[a.name].type.name}")
            keep.append(a)
            continue
        if moved is not None and opset >= moved[0] and a.name in moved[1]:
            idx, kind = moved[1][a.name]
            if idx < len(new_inputs) and new_inputs[idx]:
                raise InvalidGraphError(
                    f"{where}: attribute {a.name!r} became input {idx} at opset {moved[0]} and the node "
                    f"(opset {opset}) gives both; the model is invalid")
            arr = _as_array(a, kind, lambda: dtype_of(proto.input[0]))
            name = fresh_name(f"{proto.output[0] if proto.output else proto.op_type}__{a.name}")
            consts[name] = arr
            while len(new_inputs) <= idx:
                new_inputs.append("")
            new_inputs[idx] = name
            _warn(f"{where}: attribute {a.name}={arr.tolist()} is not an attribute of {proto.op_type} at opset "
                  f"{opset} (it became input {idx} at opset {moved[0]}); honoured as that input")
            continue
        _warn(f"{where}: attribute {a.name!r} is not an attribute of {proto.op_type} at opset {opset}; ignored")
        keep.append(a)  # kept on the node (files written from it keep it); no operator reads it
    for name, attr in known.items():
        if attr.required and not any(a.name == name for a in keep):
            raise InvalidGraphError(f"{where}: the required attribute {name!r} of {proto.op_type} is missing")
    keep = _degenerate(proto.op_type, keep, where)
    if len(keep) == len(proto.attribute) and not consts:
        return proto, {}
    node = onnx.NodeProto()
    node.CopyFrom(proto)
    del node.input[:]
    node.input.extend(new_inputs)
    del node.attribute[:]
    node.attribute.extend(keep)
    return node, consts


def _degenerate(op_type: str, attrs: list[onnx.AttributeProto], where: str) -> list[onnx.AttributeProto]:
    """Degenerate attribute values: normalised with a warning, or refused."""
    if op_type in ("RNN", "LSTM", "GRU"):
        out = []
        for a in attrs:
            if a.name == "clip" and np.isnan(a.f):
                raise InvalidGraphError(f"{where}: clip is NaN")
            if a.name == "clip" and a.f <= 0:
                _warn(f"{where}: clip={a.f:g} <= 0 would clamp every gate input to zero; read as "
                      "'no clipping' (as ROOT SOFIE does)")
                continue
            if a.name == "hidden_size" and a.i < 1:
                raise InvalidGraphError(f"{where}: hidden_size={a.i} must be positive")
            out.append(a)
        return out
    return attrs
