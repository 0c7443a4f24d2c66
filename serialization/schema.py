"""The on-disk schema: the IR graph <-> a JSON document plus one byte blob (see SCHEMA.md).

Encoding never loses information: dimensions are JSON ints or the ``str()`` of a symbolic
:class:`~sofie_root.ir.Dim` (read back with ``parse_dim``), floats are JSON numbers (``repr``
round-trips every double) or the strings ``"nan"``, ``"inf"``, ``"-inf"``, and every array
(initializers, tensor attributes, at every sub-graph depth) is a slice of the blob, stored
little-endian, so it comes back bit for bit.

Decoding trusts nothing: every field is type-checked, sizes are bounded and checked against the
bytes actually present, names and dims are re-parsed, and every error is an
:class:`~sofie_root.serialization.errors.InvalidModelFileError` naming the file and the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from sofie_root.errors import SofieError
from sofie_root.ir.dims import Dim, DimLike, parse_dim
from sofie_root.ir.dtypes import BY_NAME, DType
from sofie_root.ir.graph import Graph, Node, TensorInfo

from .errors import InvalidModelFileError

#: the version written by this sofie_root
FORMAT_VERSION = 2
#: the versions it reads (older ones are upgraded on reading, see ``upgrade``)
READABLE_VERSIONS = (1, 2)

#: weight blob chunk size: one TTree entry each
CHUNK_BYTES = 1 << 20
ALIGN = 64

# bounds that keep hostile files harmless (no overflow in size arithmetic, no absurd allocation)
MAX_DIM = 1 << 36
MAX_TENSOR_BYTES = 1 << 36
MAX_COEF = 1 << 31
MAX_TERMS = 16
MAX_VALUE_LEN = 1 << 16
MAX_DEPTH = 16
MAX_RANK = 64
MAX_NAME_LEN = 4096
#: string attribute values: the step list of a fused element-wise chain is about 80 characters
#: per operator (a 20,000-node chain: 1.6 MB)
MAX_STRING_ATTR_LEN = 1 << 26
MAX_BLOB_BYTES = 1 << 38

#: names of models inside a file (the TDirectory name): safe for ROOT paths, shells and C++ strings
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")


# ---------------------------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------------------------
class BlobBuilder:
    """Lays out arrays in one byte blob, each at a 64-byte aligned offset."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, arr: np.ndarray) -> dict[str, Any]:
        a = np.require(arr, requirements="C")
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        data = a.tobytes()
        offset = self.size
        self.parts.append(data)
        pad = (-len(data)) % ALIGN
        if pad:
            self.parts.append(b"\0" * pad)
        self.size += len(data) + pad
        return {"dtype": a.dtype.name, "shape": [int(d) for d in a.shape], "offset": offset, "nbytes": len(data)}

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def encode_dim(d: DimLike) -> int | str:
    return str(d) if isinstance(d, Dim) else int(d)


def encode_float(x: float) -> float | str:
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def encode_info(info: TensorInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"name": info.name, "dtype": info.dtype.name, "shape": [encode_dim(d) for d in info.shape]}
    if info.value is not None:
        out["value"] = [encode_dim(v) for v in info.value]
    if info.elements is not None:
        out["elements"] = [[encode_dim(d) for d in shape] for shape in info.elements]
    if info.optional is not None:
        out["optional"] = bool(info.optional)
    return out


def encode_attr(value: Any, blob: BlobBuilder, arrays: dict[int, dict]) -> dict[str, Any]:
    def arr(a: np.ndarray) -> dict[str, Any]:
        key = id(a)
        if key not in arrays:
            arrays[key] = blob.add(a)
        return dict(arrays[key])

    if isinstance(value, Graph):
        return {"kind": "graph", "value": encode_graph(value, blob, arrays)}
    if isinstance(value, np.ndarray):
        return {"kind": "tensor", "value": arr(value)}
    if isinstance(value, bool):
        return {"kind": "int", "value": int(value)}
    if isinstance(value, (int, np.integer)):
        return {"kind": "int", "value": int(value)}
    if isinstance(value, (float, np.floating)):
        return {"kind": "float", "value": encode_float(value)}
    if isinstance(value, str):
        return {"kind": "string", "value": value}
    if isinstance(value, (list, tuple)):
        items = list(value)
        if items and all(isinstance(v, Graph) for v in items):
            return {"kind": "graphs", "value": [encode_graph(v, blob, arrays) for v in items]}
        if items and all(isinstance(v, np.ndarray) for v in items):
            return {"kind": "tensors", "value": [arr(v) for v in items]}
        if all(isinstance(v, str) for v in items) and items:
            return {"kind": "strings", "value": items}
        if any(isinstance(v, (float, np.floating)) for v in items) and \
                all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in items):
            return {"kind": "floats", "value": [encode_float(v) for v in items]}
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
            return {"kind": "ints", "value": [int(v) for v in items]}
    raise SofieError(f"cannot store an attribute value of type {type(value).__name__}: {value!r}")


def encode_graph(g: Graph, blob: BlobBuilder, arrays: dict[int, dict] | None = None,
                 placed: Mapping[str, dict] | None = None) -> dict[str, Any]:
    """The JSON form of ``g``; its arrays are appended to ``blob`` (``placed``: already laid out)."""
    arrays = {} if arrays is None else arrays
    placed = placed or {}
    inits = []
    for name, a in g.initializers.items():
        ref = dict(placed[name]) if name in placed else blob.add(a)
        inits.append({"name": name, **ref})
    nodes = []
    for n in g.nodes:
        nodes.append({
            "op_type": n.op_type, "domain": n.domain, "name": n.name, "opset": int(n.opset),
            "inputs": list(n.inputs), "outputs": list(n.outputs),
            "attrs": {k: encode_attr(v, blob, arrays) for k, v in n.attrs.items()},
        })
    return {
        "name": g.name,
        "opsets": {k: int(v) for k, v in g.opsets.items()},
        "inputs": list(g.inputs),
        "outputs": list(g.outputs),
        "tensors": [encode_info(t) for t in g.tensors.values()],
        "initializers": inits,
        "outer_scope": [encode_info(t) for t in g.outer_scope.values()],
        "metadata": {str(k): str(v) for k, v in g.metadata.items()},
        "nodes": nodes,
    }


# ---------------------------------------------------------------------------------------------
# decoding (untrusted input)
# ---------------------------------------------------------------------------------------------
class Decoder:
    """Decodes a JSON document against the blob, raising InvalidModelFileError on anything odd."""

    def __init__(self, where: str, blob: memoryview | bytes):
        self.where = where
        self.blob = blob

    def fail(self, path: str, msg: str) -> InvalidModelFileError:
        return InvalidModelFileError(f"{self.where}: invalid stored model at {path}: {msg}")

    # -- primitives ----------------------------------------------------------------------------
    def obj(self, v: Any, path: str, keys: tuple[str, ...] = ()) -> dict:
        if not isinstance(v, dict):
            raise self.fail(path, f"expected an object, got {type(v).__name__}")
        missing = [k for k in keys if k not in v]
        if missing:
            raise self.fail(path, f"missing field(s) {missing}")
        return v

    def lst(self, v: Any, path: str, max_len: int = 1 << 24) -> list:
        if not isinstance(v, list):
            raise self.fail(path, f"expected a list, got {type(v).__name__}")
        if len(v) > max_len:
            raise self.fail(path, f"list of {len(v)} items is too long")
        return v

    def string(self, v: Any, path: str, empty: bool = True, limit: int = MAX_NAME_LEN) -> str:
        if not isinstance(v, str) or len(v) > limit or (not empty and not v):
            raise self.fail(path, f"expected a{' non-empty' if not empty else ''} string of at most "
                                  f"{limit} characters, got {_short(v)}")
        return v

    def integer(self, v: Any, path: str, lo: int = -(1 << 63), hi: int = (1 << 63) - 1) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.fail(path, f"expected an integer in [{lo}, {hi}], got {_short(v)}")
        return v

    def real(self, v: Any, path: str) -> float:
        if isinstance(v, str) and v in ("nan", "inf", "-inf"):
            return float(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(path, f"expected a number, got {_short(v)}")
        return float(v)

    def dtype(self, v: Any, path: str) -> DType:
        if not isinstance(v, str) or v not in BY_NAME:
            raise self.fail(path, f"unknown element type {_short(v)}")
        return BY_NAME[v]

    def dim(self, v: Any, path: str) -> DimLike:
        if isinstance(v, int) and not isinstance(v, bool):
            return self.integer(v, path, 0, MAX_DIM)
        if not isinstance(v, str) or len(v) > 512:
            raise self.fail(path, f"expected a dimension (an integer or a symbolic expression), got {_short(v)}")
        try:
            d = parse_dim(v)
        except SofieError as e:
            raise self.fail(path, str(e)) from None
        if isinstance(d, int):
            return self.integer(d, path, 0, MAX_DIM)
        if len(d.terms) > MAX_TERMS or any(abs(c) > MAX_COEF or len(m) > 8 for m, c in d.terms.items()):
            raise self.fail(path, f"symbolic dimension {v!r} is too large")
        return d

    def value_item(self, v: Any, path: str) -> DimLike:
        if isinstance(v, int) and not isinstance(v, bool):
            return self.integer(v, path)
        return self.dim(v, path)

    def info(self, v: Any, path: str) -> TensorInfo:
        o = self.obj(v, path, ("name", "dtype", "shape"))
        name = self.string(o["name"], f"{path}.name", empty=False)
        dtype = self.dtype(o["dtype"], f"{path}.dtype")
        shape = tuple(self.dim(d, f"{path}.shape[{k}]")
                      for k, d in enumerate(self.lst(o["shape"], f"{path}.shape", MAX_RANK)))
        self.check_size(shape, dtype, path)
        value = None
        if o.get("value") is not None:
            value = tuple(self.value_item(x, f"{path}.value[{k}]")
                          for k, x in enumerate(self.lst(o["value"], f"{path}.value", MAX_VALUE_LEN)))
            if not dtype.is_int or not all(isinstance(d, int) for d in shape) or len(value) != math.prod(shape):
                raise self.fail(path, f"a compile-time value of {len(value)} items does not fit a "
                                      f"{dtype.name} tensor of shape {[str(d) for d in shape]}")
        elements = None
        if o.get("elements") is not None:  # a sequence (see TensorInfo.elements)
            items = self.lst(o["elements"], f"{path}.elements", MAX_VALUE_LEN)
            elements = tuple(tuple(self.dim(d, f"{path}.elements[{k}][{j}]")
                                   for j, d in enumerate(self.lst(el, f"{path}.elements[{k}]", MAX_RANK)))
                             for k, el in enumerate(items))
            total: DimLike = 0
            for el in elements:
                self.check_size(el, dtype, path)
                total = total + _numel(el)
            if shape != (total,):
                raise self.fail(path, f"a sequence of {len(elements)} elements is stored in shape "
                                      f"{[str(d) for d in shape]}, expected [{total}]")
        optional = o.get("optional")
        if optional is not None and not isinstance(optional, bool):
            raise self.fail(f"{path}.optional", f"expected true or false, got {_short(optional)}")
        return TensorInfo(name, dtype, shape, value, elements, optional)

    def check_size(self, shape: tuple[DimLike, ...], dtype: DType, path: str) -> None:
        static = 1
        for d in shape:
            if isinstance(d, int):
                static *= d
                if static * dtype.itemsize > MAX_TENSOR_BYTES:
                    raise self.fail(path, f"tensor of shape {[str(x) for x in shape]} is too large")

    def array(self, v: Any, path: str) -> np.ndarray:
        o = self.obj(v, path, ("dtype", "shape", "offset", "nbytes"))
        dtype = self.dtype(o["dtype"], f"{path}.dtype")
        shape = tuple(self.integer(d, f"{path}.shape[{k}]", 0, MAX_DIM)
                      for k, d in enumerate(self.lst(o["shape"], f"{path}.shape", MAX_RANK)))
        self.check_size(shape, dtype, path)
        offset = self.integer(o["offset"], f"{path}.offset", 0, MAX_BLOB_BYTES)
        nbytes = self.integer(o["nbytes"], f"{path}.nbytes", 0, MAX_BLOB_BYTES)
        count = math.prod(shape)
        if nbytes != count * dtype.itemsize:
            raise self.fail(path, f"{nbytes} bytes stored for a {dtype.name} array of shape {list(shape)}")
        if offset % ALIGN:
            raise self.fail(f"{path}.offset", f"offset {offset} is not a multiple of {ALIGN} (SCHEMA.md: every "
                                              "array starts at a 64-byte aligned offset)")
        if offset + nbytes > len(self.blob):
            raise self.fail(path, f"bytes [{offset}, {offset + nbytes}) lie beyond the {len(self.blob)}-byte "
                                  "weight blob")
        raw = np.frombuffer(self.blob, dtype=np.dtype(dtype.name).newbyteorder("<"), count=count, offset=offset)
        arr = raw.astype(dtype.numpy, copy=True).reshape(shape)
        if dtype.name == "bool" and count and np.frombuffer(self.blob, np.uint8, count, offset).max() > 1:
            raise self.fail(path, "bool array holds values other than 0 and 1")
        return arr

    # -- structures ----------------------------------------------------------------------------
    def attr(self, v: Any, path: str, depth: int) -> Any:
        o = self.obj(v, path, ("kind", "value"))
        kind, val = o["kind"], o["value"]
        if kind == "int":
            return self.integer(val, path)
        if kind == "float":
            return self.real(val, path)
        if kind == "string":
            return self.string(val, path, limit=MAX_STRING_ATTR_LEN)
        if kind == "ints":
            return [self.integer(x, f"{path}[{k}]") for k, x in enumerate(self.lst(val, path))]
        if kind == "floats":
            return [self.real(x, f"{path}[{k}]") for k, x in enumerate(self.lst(val, path))]
        if kind == "strings":
            return [self.string(x, f"{path}[{k}]") for k, x in enumerate(self.lst(val, path))]
        if kind == "tensor":
            return self.array(val, path)
        if kind == "tensors":
            return [self.array(x, f"{path}[{k}]") for k, x in enumerate(self.lst(val, path))]
        if kind == "graph":
            return self.graph(val, path, depth + 1)
        if kind == "graphs":
            return [self.graph(x, f"{path}[{k}]", depth + 1) for k, x in enumerate(self.lst(val, path))]
        raise self.fail(path, f"unknown attribute kind {_short(kind)}")

    def graph(self, v: Any, path: str, depth: int = 0) -> Graph:
        if depth > MAX_DEPTH:
            raise self.fail(path, f"sub-graphs nested deeper than {MAX_DEPTH}")
        o = self.obj(v, path, ("name", "opsets", "inputs", "outputs", "tensors", "initializers", "nodes"))
        names = lambda key: [self.string(x, f"{path}.{key}[{k}]", empty=False)  # noqa: E731
                             for k, x in enumerate(self.lst(o[key], f"{path}.{key}"))]
        opsets = {self.string(k, f"{path}.opsets"): self.integer(x, f"{path}.opsets[{k!r}]", 0, 1 << 20)
                  for k, x in self.obj(o["opsets"], f"{path}.opsets").items()}
        tensors = {}
        for k, t in enumerate(self.lst(o["tensors"], f"{path}.tensors")):
            info = self.info(t, f"{path}.tensors[{k}]")
            if info.name in tensors:
                raise self.fail(f"{path}.tensors[{k}]", f"tensor {info.name!r} is listed twice")
            tensors[info.name] = info
        outer = {}
        for k, t in enumerate(self.lst(o.get("outer_scope", []), f"{path}.outer_scope")):
            info = self.info(t, f"{path}.outer_scope[{k}]")
            outer[info.name] = info
        inits = {}
        for k, t in enumerate(self.lst(o["initializers"], f"{path}.initializers")):
            p = f"{path}.initializers[{k}]"
            name = self.string(self.obj(t, p, ("name",))["name"], f"{p}.name", empty=False)
            if name in inits:
                raise self.fail(p, f"initializer {name!r} is listed twice")
            inits[name] = self.array(t, p)
        nodes = []
        for k, n in enumerate(self.lst(o["nodes"], f"{path}.nodes")):
            p = f"{path}.nodes[{k}]"
            n = self.obj(n, p, ("op_type", "inputs", "outputs"))
            attrs = {self.string(an, f"{p}.attrs"): self.attr(av, f"{p}.attrs[{an!r}]", depth)
                     for an, av in self.obj(n.get("attrs", {}), f"{p}.attrs").items()}
            nodes.append(Node(
                self.string(n["op_type"], f"{p}.op_type", empty=False),
                [self.string(x, f"{p}.inputs[{j}]") for j, x in enumerate(self.lst(n["inputs"], f"{p}.inputs"))],
                [self.string(x, f"{p}.outputs[{j}]") for j, x in enumerate(self.lst(n["outputs"], f"{p}.outputs"))],
                attrs,
                self.string(n.get("name", ""), f"{p}.name"),
                self.string(n.get("domain", ""), f"{p}.domain"),
                self.integer(n.get("opset", 0), f"{p}.opset", 0, 1 << 20),
            ))
        for k, name in enumerate(o["inputs"] if isinstance(o["inputs"], list) else []):
            if isinstance(name, str) and name in tensors and tensors[name].value is not None:
                raise self.fail(f"{path}.inputs[{k}]", f"graph input {name!r} cannot have a compile-time value")
        for name in inits:
            if name in tensors and tensors[name].value is not None:
                raise self.fail(f"{path}.initializers", f"initializer {name!r} cannot have a compile-time value")
        metadata = {self.string(k, f"{path}.metadata"): self.string(x, f"{path}.metadata[{k!r}]")
                    for k, x in self.obj(o.get("metadata", {}), f"{path}.metadata").items()}
        try:
            return Graph(nodes, names("inputs"), names("outputs"), tensors, inits, opsets,
                         name=self.string(o["name"], f"{path}.name"), metadata=metadata, outer_scope=outer)
        except SofieError as e:
            raise self.fail(path, str(e)) from None


def upgrade(doc: dict, where: str) -> dict:
    """Bring a document of an older format version to the current one."""
    version = doc.get("format_version")
    if version == 1:
        # version 1 wrote every dimension as a string ("7", "N") and had no column hints
        def fix_dims(g: Any) -> None:
            if not isinstance(g, dict):
                return
            for key in ("tensors", "outer_scope"):
                for t in g.get(key, []) if isinstance(g.get(key), list) else []:
                    if isinstance(t, dict) and isinstance(t.get("shape"), list):
                        t["shape"] = [int(d) if isinstance(d, str) and d.isdigit() else d for d in t["shape"]]
            for n in g.get("nodes", []) if isinstance(g.get("nodes"), list) else []:
                attrs = n.get("attrs", {}) if isinstance(n, dict) else {}
                for a in attrs.values() if isinstance(attrs, dict) else []:
                    if isinstance(a, dict) and a.get("kind") == "graph":
                        fix_dims(a.get("value"))
                    elif isinstance(a, dict) and a.get("kind") == "graphs" and isinstance(a.get("value"), list):
                        for sub in a["value"]:
                            fix_dims(sub)

        fix_dims(doc.get("graph"))
        model = doc.get("model")
        if isinstance(model, dict):
            model.setdefault("column_hints", {})
        doc["format_version"] = 2
    return doc


def _numel(shape: tuple[DimLike, ...]) -> DimLike:
    out: DimLike = 1
    for d in shape:
        out = out * d
    return out


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
