"""Attribute kinds checked against the ONNX operator schemas.

Operators read their attributes with ``v.attr(name, default)`` and trust the kind the
specification gives them (``Gemm.alpha`` is a float). A model, or a crafted .root file, may carry
any kind under any name (``Gemm(alpha="abc")``); this module refuses such a node up front, naming
the node and the attribute, so no operator code ever sees an attribute of the wrong kind.
Operators of other domains (custom operators, sofie-internal fused nodes) have no ONNX schema and
are not checked here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from ..ir.graph import Graph, Node

#: the domains whose operators have schemas in onnx.defs (checked here)
SCHEMA_DOMAINS = ("", "ai.onnx.ml", "ai.onnx.preview.training")

_KINDS = {
    "FLOAT": "float", "INT": "int", "STRING": "string", "TENSOR": "tensor", "GRAPH": "graph",
    "FLOATS": "floats", "INTS": "ints", "STRINGS": "strings", "TENSORS": "tensors", "GRAPHS": "graphs",
}


@lru_cache(maxsize=4096)
def _schema_kinds(domain: str, op_type: str, opset: int) -> dict[str, str] | None:
    import onnx.defs

    try:
        schema = onnx.defs.get_schema(op_type, max(int(opset), 1), domain)
    except Exception:  # no schema for this op/opset (custom operators, internal fused nodes)
        return None
    return {name: _KINDS.get(a.type.name, "") for name, a in schema.attributes.items()}


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_float(x: Any) -> bool:
    return _is_int(x) or (isinstance(x, (float, np.floating)))


_CHECK = {
    "int": _is_int,
    "float": _is_float,
    "string": lambda x: isinstance(x, str),
    "tensor": lambda x: isinstance(x, np.ndarray),
    "graph": lambda x: isinstance(x, Graph),
}


def _matches(kind: str, value: Any) -> bool:
    if kind in _CHECK:
        return _CHECK[kind](value)
    if kind.endswith("s") and kind[:-1] in _CHECK:
        return isinstance(value, (list, tuple)) and all(_CHECK[kind[:-1]](x) for x in value)
    return True  # kinds the IR does not carry (sparse tensors, type protos) are refused elsewhere


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "a tensor"
    if isinstance(value, Graph):
        return "a graph"
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(x).__name__ for x in value})
        return f"a list of {'/'.join(kinds)}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def attribute_problem(node: Node) -> str | None:
    """Why an attribute of ``node`` has the wrong kind for its ONNX schema, or None."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    if domain not in SCHEMA_DOMAINS:
        return None
    kinds = _schema_kinds(domain, node.op_type, node.opset)
    if not kinds:
        return None
    for name, value in node.attrs.items():
        kind = kinds.get(name)
        if kind and not _matches(kind, value):
            return f"attribute {name!r} must be of kind {kind} (ONNX {node.op_type}), got {_describe(value)}"
    return None
