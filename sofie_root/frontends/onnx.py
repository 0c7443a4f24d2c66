"""ONNX frontend: an ONNX model (path, bytes or ``ModelProto``) to the IR.

Walks the graph once in topological order. For every node it looks up the operator, checks the
variant, infers output dtypes and shapes (symbolic dims kept), and folds what is known at compile
time: nodes whose inputs are all constant are evaluated with ``onnx.reference``, and small integer
tensors whose values are known but symbolic (shape sub-graphs on a batch dimension) become
compile-time values that Reshape, Expand and friends read. Constant nodes become initializers.
Every unsupported node is reported at once, before any code is generated.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import (
    InvalidGraphError,
    ModelLoadError,
    ResourceLimitError,
    ShapeInferenceError,
    SofieError,
    UnsupportedOperatorError,
)
from ..ir.dims import Dim, DimLike, Shape
from ..ir.dtypes import FLOAT32, DType, dtype_from_numpy, dtype_from_onnx
from ..ir.graph import Graph, Node, TensorInfo
from ..limits import check_shape
from ..ops import base as opbase
from ..ops.attrs import attribute_problem
from ..ops.custom import missing_reason
from ..passes.fold import evaluate_node, should_fold
from .audit import AUDITED_DOMAINS, audit_node
from .functions import function_body
from .loop_lists import lower_loop_lists
from .slice_bounds import fixed_differences, fixed_extents

#: opsets before 7 are accepted where an operator's semantics did not change since; operators
#: whose old versions differ reject the old attributes in ``check``
MIN_OPSET = 1
#: metadata key: JSON {tensor: "float16" | "bfloat16"} for inputs/outputs of half types
IO_TYPES_KEY = "sofie:io_types"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load_model(source: str | os.PathLike | bytes | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Read an ONNX model (with external data) and return it with a label for messages."""
    if isinstance(source, onnx.ModelProto):
        return source, "<ModelProto>"
    if isinstance(source, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(source)), "<bytes>"
        except Exception as e:
            raise ModelLoadError(f"the bytes given are not a valid ONNX model: {e}") from e
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not an ONNX file")
    if not path.is_file():  # a FIFO or a device would block the read or never end
        raise ModelLoadError(f"{path}: is not a regular file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelLoadError(f"{path}: not a valid ONNX file ({type(e).__name__}: {e})") from e
    try:
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as e:
        raise ModelLoadError(f"{path}: cannot read its external weight data ({e})") from e
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{path}: the file holds no ONNX graph")
    return model, str(path)


def from_onnx(source: str | os.PathLike | bytes | onnx.ModelProto,
              input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
              input_values: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Convert an ONNX model to a validated IR graph.

    Args:
        source: path to a .onnx file, its bytes, or an ``onnx.ModelProto``.
        input_shapes: optional shapes overriding (or filling in) those of graph inputs; ``None`` or
            a string in a shape is a symbolic dimension.
        input_values: graph inputs to bind to constant values (specialisation on inputs that
            determine shapes, such as a Reshape target given as a graph input).
    """
    model, label = load_model(source)
    return convert_model(model, label, input_shapes, input_values)


def model_opsets(model: onnx.ModelProto, label: str) -> dict[str, int]:
    opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}
    if "" not in opsets:
        opsets[""] = MIN_OPSET
    newest = onnx.defs.onnx_opset_version()
    if opsets[""] < MIN_OPSET:
        raise ModelLoadError(f"{label}: ONNX opset {opsets['']} is not valid")
    if opsets[""] > newest:
        raise ModelLoadError(
            f"{label}: ONNX opset {opsets['']} is newer than {newest}, the newest the installed onnx knows"
        )
    return opsets


def convert_model(model: onnx.ModelProto, label: str,
                  input_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
                  input_values: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Convert an already loaded ONNX model (see :func:`from_onnx`)."""
    opsets = model_opsets(model, label)
    _check_text(model.graph, label)
    metadata = {"producer_name": model.producer_name, "producer_version": model.producer_version,
                "onnx_opset": str(opsets[""]), "source": label}
    for p in model.metadata_props:
        metadata[f"onnx:{p.key}"] = p.value
    conv = _Converter(opsets, label)
    graph = conv.convert_graph(model.graph, outer={}, input_shapes=input_shapes or {},
                               input_values=input_values or {})
    for name in graph.outputs:
        info = graph.info(name)
        if info.is_sequence or info.optional is False:
            kind = "a sequence" if info.is_sequence else "an empty optional"
            raise ShapeInferenceError(f"{label}: graph output {name!r} is {kind}; sequences and optionals are "
                                      "supported inside the graph only (return a tensor, e.g. "
                                      "ConcatFromSequence or SequenceAt of the sequence)")
    # only tensors computed in float32 stand for float16/bfloat16 ones: IsNaN's bool, ArgMax's
    # int64 or Shape's output of a half tensor keep their own type
    io_types = {n: conv.half[n] for n in [*graph.inputs, *graph.outputs]
                if n in conv.half and graph.info(n).dtype.name == "float32"}
    if io_types:
        metadata[IO_TYPES_KEY] = json.dumps(io_types, sort_keys=True)
    graph.metadata.update(metadata)
    return graph


def input_specs(model: onnx.ModelProto, label: str,
                input_shapes: Mapping[str, Sequence[int | str | None]] | None = None) -> list[TensorInfo]:
    """TensorInfos of the graph inputs (initializers excluded), without converting the graph."""
    conv = _Converter(model_opsets(model, label), label)
    inits = {t.name for t in model.graph.initializer}
    shapes = input_shapes or {}
    return [conv._value_info(vi, shapes.get(vi.name)) for vi in model.graph.input if vi.name not in inits]


def graph_input_ancestors(model: onnx.ModelProto, tensor: str) -> list[str]:
    """Graph inputs (not initializers) whose values flow into ``tensor``, in graph-input order.

    Tensors produced inside sub-graphs (If branches) count too; they also depend on the inputs
    of the node that owns the sub-graph (its condition).
    """
    deps: dict[str, list[str]] = {}

    def visit(nodes, owner_inputs: list[str]) -> None:
        for n in nodes:
            ins = list(n.input) + _implicit_inputs(n) + owner_inputs
            for o in n.output:
                if o:
                    deps[o] = ins
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    visit(a.g.node, ins)

    visit(model.graph.node, [])
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
    found: set[str] = set()
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        if t in seen or not t:
            continue
        seen.add(t)
        if t in inputs:
            found.add(t)
        else:
            stack.extend(deps.get(t, ()))
    return [i for i in inputs if i in found]


def _attr_value(a: onnx.AttributeProto, conv: _Converter, outer: Mapping[str, TensorInfo], where: str,
                body_inputs: Sequence[tuple[DType, Shape]] | None = None) -> Any:
    """The Python value of an attribute; sub-graphs are converted with ``outer`` visible (and,
    for loop bodies, with the input types the operator gives them: ``body_inputs``)."""
    t = a.type
    A = onnx.AttributeProto
    if t == A.FLOAT:
        return float(a.f)
    if t == A.INT:
        return int(a.i)
    if t == A.STRING:
        return a.s.decode("utf-8", errors="replace")
    if t == A.TENSOR:
        return _to_numpy(a.t, f"{where}, attribute {a.name!r}")
    if t == A.GRAPH:
        return conv.convert_graph(a.g, outer=outer, input_shapes={}, input_types=body_inputs, where=where)
    if t == A.FLOATS:
        return [float(x) for x in a.floats]
    if t == A.INTS:
        return [int(x) for x in a.ints]
    if t == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if t == A.TENSORS:
        return [_to_numpy(x, f"{where}, attribute {a.name!r}") for x in a.tensors]
    if t == A.TYPE_PROTO:  # Optional's type: kept as its text, "tensor(float)", "seq(tensor(int64))"
        return _type_text(a.tp)
    raise ShapeInferenceError(f"{where}: attribute {a.name!r} has an unsupported kind {A.AttributeType.Name(t)}")


def _type_text(tp: onnx.TypeProto) -> str:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({tp.tensor_type.elem_type})"
    if kind == "sequence_type":
        return f"seq({_type_text(tp.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({_type_text(tp.optional_type.elem_type)})"
    return str(kind)


#: float16 and bfloat16 are storage types here: tensors of these types are computed in float32
#: (CPUs have no half-precision arithmetic worth using), casts to them round, and the model's
#: inputs and outputs keep their declared type at the Python boundary
HALF_TYPES = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}
#: operators whose float outputs are input values moved, selected or compared (exact in any
#: float type): their half-precision outputs need no rounding
_EXACT_ON_HALF = frozenset({
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice",
    "Gather", "GatherElements", "GatherND", "Expand", "Tile", "Pad", "Where", "Max", "Min", "Relu", "Abs",
    "Neg", "Sign", "DepthToSpace", "SpaceToDepth", "ReduceMax", "ReduceMin", "MaxPool", "GlobalMaxPool",
    "ScatterND", "ScatterElements", "Compress", "ReverseSequence", "TopK", "Dropout", "Floor", "Ceil",
    "Round", "Trilu", "Clip", "ConstantOfShape", "EyeLike", "Cast", "CastLike", "Unique",
    "TensorScatter", "BitCast",
})


#: operators computed through their ONNX function body when their inputs are float16/bfloat16
_HALF_FUNCTION_OPS = frozenset({"Attention"})
#: longest softmax axis whose bfloat16 sum is emitted as a chain of rounded Adds
_SEQUENTIAL_SUM_MAX = 64


def _round_half(arr: np.ndarray, kind: str) -> np.ndarray:
    if kind == "float16":
        return arr.astype(np.float16).astype(np.float32)
    import ml_dtypes

    return arr.astype(ml_dtypes.bfloat16).astype(np.float32)
_DTYPE_ATTRS = ("to", "dtype", "output_dtype", "softmax_precision")


def _to_numpy(tp: onnx.TensorProto, where: str) -> np.ndarray:
    if tp.data_type not in HALF_TYPES:
        dtype_from_onnx(tp.data_type, f"{where}: ")
    try:
        arr = numpy_helper.to_array(tp)
    except Exception as e:
        raise ModelLoadError(f"{where}: tensor data is corrupt ({e})") from e
    if tp.data_type in HALF_TYPES:
        arr = arr.astype(np.float32)
    return np.require(arr, requirements="C")


class _Converter:
    def __init__(self, opsets: dict[str, int], label: str):
        self.opsets = opsets
        self.label = label
        self._symbols: dict[str, str] = {}
        # initializers of the graphs being converted, innermost last: sub-graphs see the
        # constants of their enclosing graphs (for folding and for compile-time values)
        self._inits: list[Mapping[str, np.ndarray]] = []
        # tensors that are float16/bfloat16 in the ONNX model (computed in float32 here)
        self.half: dict[str, str] = {}
        # data-dependent size symbols introduced so far (Operator.data_dependent): never values
        # known at compile time
        self._data_syms: set[str] = set()

    def _const(self, name: str) -> np.ndarray | None:
        for inits in reversed(self._inits):
            if name in inits:
                return inits[name]
        return None

    def _symbol(self, param: str) -> Dim:
        sym = self._symbols.get(param)
        if sym is None:
            sym = param if _IDENT.match(param) else "d_" + re.sub(r"[^A-Za-z0-9_]", "_", param)
            while sym in self._symbols.values():
                sym += "_"
            self._symbols[param] = sym
        return Dim.symbol(sym)

    def _value_info(self, vi: onnx.ValueInfoProto, override: Sequence[int | str | None] | None) -> TensorInfo:
        where = f"{self.label}: graph input {vi.name!r}"
        tt = vi.type
        optional = None
        if tt.HasField("optional_type") and tt.optional_type.elem_type.HasField("tensor_type"):
            # an optional tensor input: given a value at every call (None is not accepted)
            tt, optional = tt.optional_type.elem_type, True
        if not tt.HasField("tensor_type"):
            raise ShapeInferenceError(f"{where} is not a tensor (sequence and map inputs are not supported; "
                                      "sequences are supported inside the graph)")
        if tt.tensor_type.elem_type in HALF_TYPES:
            self.half[vi.name] = HALF_TYPES[tt.tensor_type.elem_type]
            dtype = FLOAT32
        else:
            dtype = dtype_from_onnx(tt.tensor_type.elem_type, f"{where}: ")
        if override is not None:
            dims = [self._symbol(f"{vi.name}_{k}") if d is None else (self._symbol(d) if isinstance(d, str) else int(d))
                    for k, d in enumerate(override)]
            return TensorInfo(vi.name, dtype, tuple(dims), optional=optional)
        if not tt.tensor_type.HasField("shape"):
            raise ShapeInferenceError(
                f"{where} has no shape; pass input_shapes={{{vi.name!r}: (...)}} to compile()"
            )
        dims: list[DimLike] = []
        for k, d in enumerate(tt.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(self._symbol(d.dim_param))
            else:
                dims.append(self._symbol(f"{vi.name}_dim{k}"))
        return TensorInfo(vi.name, dtype, tuple(dims), optional=optional)

    def _body_input(self, vi: onnx.ValueInfoProto, dtype: DType, shape: Shape, where: str) -> TensorInfo:
        """A loop body's input, typed by the operator; a declared element type must agree."""
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if not vi.type.HasField("tensor_type") and vi.type.WhichOneof("value") is not None:
            raise ShapeInferenceError(f"{where}: body input {vi.name!r} is not a tensor (sequence or optional "
                                      "loop state is not supported)")
        if tt is not None and tt.elem_type and tt.elem_type not in HALF_TYPES and tt.elem_type != dtype.onnx:
            raise ShapeInferenceError(f"{where}: body input {vi.name!r} is declared with element type "
                                      f"{tt.elem_type} but receives {dtype.name}")
        if tt is not None and tt.HasField("shape") and len(tt.shape.dim) not in (0, len(shape)) and shape:
            raise ShapeInferenceError(f"{where}: body input {vi.name!r} is declared with rank {len(tt.shape.dim)} "
                                      f"but receives rank {len(shape)}")
        return TensorInfo(vi.name, dtype, tuple(shape))

    def convert_graph(self, g: onnx.GraphProto, outer: Mapping[str, TensorInfo],
                      input_shapes: Mapping[str, Sequence[int | str | None]],
                      input_values: Mapping[str, np.ndarray] | None = None,
                      input_types: Sequence[tuple[DType, Shape]] | None = None, where: str = "") -> Graph:
        """Convert one graph. ``input_types`` (loop bodies) gives each graph input's dtype and
        shape, which the body's own declarations (often shapeless) may only agree with."""
        input_values = input_values or {}
        tensors: dict[str, TensorInfo] = {}
        initializers: dict[str, np.ndarray] = {}
        for tp in list(g.initializer):
            if not tp.name:
                raise ModelLoadError(f"{self.label}: an initializer has no name")
            arr = _to_numpy(tp, f"{self.label}: initializer {tp.name!r}")
            check_shape(arr.shape, arr.itemsize, f"{self.label}: initializer {tp.name!r}")
            initializers[tp.name] = arr
            tensors[tp.name] = TensorInfo(tp.name, dtype_from_numpy(arr.dtype), tuple(arr.shape))
            if tp.data_type in HALF_TYPES:
                self.half[tp.name] = HALF_TYPES[tp.data_type]
        for sp in g.sparse_initializer:
            raise ModelLoadError(f"{self.label}: sparse initializer {sp.values.name!r} is not supported")
        unknown = (set(input_shapes) | set(input_values)) - {vi.name for vi in g.input}
        if unknown:
            raise ShapeInferenceError(f"{sorted(unknown)} are not graph inputs of {self.label}")
        inputs: list[str] = []
        if input_types is not None and len(input_types) != len(g.input):
            raise ShapeInferenceError(f"{where}: the body graph declares {len(g.input)} inputs, "
                                      f"the operator gives it {len(input_types)}")
        for k, vi in enumerate(g.input):
            if input_types is not None:
                info = self._body_input(vi, *input_types[k], where)
                tensors[vi.name] = info
                inputs.append(vi.name)
                continue
            if vi.name in initializers:
                continue  # pre-opset-9 style: initializers listed as inputs keep their value
            info = self._value_info(vi, input_shapes.get(vi.name))
            if vi.name in input_values:
                arr = np.require(np.asarray(input_values[vi.name], dtype=info.dtype.numpy), requirements="C")
                initializers[vi.name] = arr
                tensors[vi.name] = TensorInfo(vi.name, info.dtype, tuple(arr.shape))
                continue
            check_shape(info.shape, info.dtype.itemsize, f"{self.label}: graph input {vi.name!r}")
            tensors[vi.name] = info
            inputs.append(vi.name)

        g = lower_loop_lists(g)  # lists appended to in a Loop become scan outputs
        nodes = _toposort(list(g.node), set(tensors) | set(outer), self.label)
        self._check_registry(nodes)
        scope: dict[str, TensorInfo] = dict(outer)
        scope.update(tensors)
        out_nodes: list[Node] = []
        self._inits.append(initializers)
        try:
            for proto in nodes:
                self._convert_node(proto, scope, initializers, out_nodes, outer)
        finally:
            self._inits.pop()
        outputs = [o.name for o in g.output]
        for o in g.output:
            if o.name not in scope:
                raise InvalidGraphError(f"{self.label}: graph output {o.name!r} is never produced")
            self._check_declared(o, scope[o.name])
        local = {k: v for k, v in scope.items() if k not in outer or k in initializers}
        graph = Graph(out_nodes, inputs, outputs, local, initializers, dict(self.opsets),
                      name=g.name or "model", outer_scope={k: v for k, v in outer.items() if k not in local})
        from ..passes.dce import eliminate_dead_code

        return eliminate_dead_code(graph)

    def _check_declared(self, vi: onnx.ValueInfoProto, info: TensorInfo) -> None:
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is not None and tt.elem_type == info.dtype.onnx:
            return
        if tt is not None and tt.elem_type in HALF_TYPES and info.dtype == FLOAT32:
            return  # half types are computed in float32
        if tt is not None and tt.elem_type:
            try:
                declared = dtype_from_onnx(tt.elem_type).name
            except SofieError:
                declared = str(tt.elem_type)
            raise ShapeInferenceError(
                f"{self.label}: graph output {vi.name!r} is declared {declared} but computes {info.dtype.name}"
            )

    def _check_registry(self, nodes: list[onnx.NodeProto]) -> None:
        missing = []
        for n in _walk_protos(nodes):
            domain = "" if n.domain == "ai.onnx" else n.domain
            if opbase.lookup(domain, n.op_type) is None:
                missing.append((n.op_type, n.name, domain, self.opsets.get(domain, 0), missing_reason(domain)))
        if missing:
            raise UnsupportedOperatorError(missing)

    def _convert_node(self, proto: onnx.NodeProto, scope: dict[str, TensorInfo],
                      initializers: dict[str, np.ndarray], out_nodes: list[Node],
                      outer: Mapping[str, TensorInfo]) -> None:
        domain = "" if proto.domain == "ai.onnx" else proto.domain
        label = f"{proto.op_type} node {proto.name!r}" if proto.name else f"{proto.op_type} node"
        for i in proto.input:
            if i and i not in scope:
                raise InvalidGraphError(f"{self.label}: {label} reads {i!r}, which is not defined")
        if domain in AUDITED_DOMAINS:
            proto = self._audit(proto, label, scope, initializers, domain)
        if proto.op_type == "If" and domain == "" and self._inline_constant_if(proto, scope, initializers,
                                                                                out_nodes, outer):
            return
        if domain == "" and self._rewrite_fixed_slice(proto, scope, initializers, out_nodes, outer):
            return
        if domain == "" and self._rewrite_half_cast(proto, scope, initializers, out_nodes, outer):
            return
        if domain == "" and self._expand_half_softmax(proto, scope, initializers, out_nodes, outer):
            return
        if domain in ("", "ai.onnx.preview") and self._expand_function(proto, scope, initializers, out_nodes,
                                                                        outer, label):
            return
        if proto.op_type == "BitCast" and domain == "" and (
                any(i in self.half for i in proto.input)
                or any(a.name == "to" and a.i in HALF_TYPES for a in proto.attribute)):
            raise UnsupportedOperatorError([(proto.op_type, proto.name, domain, self.opsets.get(domain, 0),
                                             "float16/bfloat16 are computed as float32 here: their bits "
                                             "cannot be reinterpreted")])
        self._tag_half(proto)
        op = opbase.lookup(domain, proto.op_type)
        assert op is not None
        attrs = {a.name: _attr_value(a, self, scope, f"{self.label}: {label}") for a in proto.attribute
                 if a.type != onnx.AttributeProto.GRAPH}
        for a in proto.attribute:  # bodies last: their input types may depend on the other attributes
            if a.type == onnx.AttributeProto.GRAPH:
                pre = opbase.NodeView(Node(proto.op_type, list(proto.input), list(proto.output), attrs, proto.name,
                                           domain, self.opsets.get(domain, 0)),
                                      [scope[i] if i else None for i in proto.input],
                                      [self._const(i) if i else None for i in proto.input])
                attrs[a.name] = _attr_value(a, self, scope, f"{self.label}: {label}",
                                            op.body_inputs(pre, a.name))
        for key in _DTYPE_ATTRS:
            if attrs.get(key) in HALF_TYPES:
                attrs[key] = int(onnx.TensorProto.FLOAT)
        node = Node(proto.op_type, list(proto.input), list(proto.output), attrs, proto.name,
                    domain, self.opsets.get(domain, 0))
        problem = attribute_problem(node)
        if problem:
            raise InvalidGraphError(f"{self.label}: {label}: {problem}")
        if hasattr(op, "lower") and self._const(proto.input[0]) is None:
            # (a constant input instead folds the original node with onnx.reference below)
            self._lower(op, node, proto, scope, initializers, out_nodes, outer)
            return
        if node.op_type == "Constant" and domain == "":
            if len(node.outputs) != 1 or not node.outputs[0]:
                raise InvalidGraphError(f"{self.label}: {label} must have exactly one output, "
                                        f"it has {len(node.outputs)}")
            value = _constant_value(node, f"{self.label}: {label}")
            check_shape(value.shape, value.itemsize, f"{self.label}: {label}")
            initializers[node.outputs[0]] = value
            scope[node.outputs[0]] = TensorInfo(node.outputs[0], dtype_from_numpy(value.dtype), tuple(value.shape))
            return
        ins = [scope[i] if i else None for i in node.inputs]
        consts = [self._const(i) if i else None for i in node.inputs]
        view = opbase.NodeView(node, ins, consts)
        for k, info in enumerate(ins):
            if info is not None and (info.is_sequence or info.optional is not None) and k not in op.sequence_inputs:
                kind = "a sequence" if info.is_sequence else "an optional"
                raise UnsupportedOperatorError([(node.op_type, node.name, domain, node.opset,
                                                 f"input {k} ({info.name!r}) is {kind}, which this operator "
                                                 "does not take here")])
        reason = op.check(view)
        if reason:
            raise UnsupportedOperatorError([(node.op_type, node.name, domain, node.opset, reason)])
        with _node_errors(f"{self.label}: {label}"):
            outs = op.infer(view)
            if len(outs) < len([o for o in node.outputs if o]):
                outs = list(outs) + [None] * (len(node.outputs) - len(outs))
            for name, o in zip(node.outputs, outs):
                if name and o is not None:
                    check_shape(o.shape, o.dtype.itemsize, f"{self.label}: {label}: output {name!r}")
            values = op.propagate(view, outs)
        self._data_syms.update(op.data_dependent(view))
        infos = []
        for k, name in enumerate(node.outputs):
            if not name:
                infos.append(None)
                continue
            o = outs[k]
            if o is None:
                raise ShapeInferenceError(f"{self.label}: {label}: output {k} ({name!r}) is not produced by this variant")
            value = values[k] if k < len(values) else None
            value = value if value is not None else o.value
            if value is not None and any(isinstance(d, Dim) and d.symbols & self._data_syms for d in value):
                value = None  # a size known only once a node has run (Shape of NonZero's output): computed then
            infos.append(TensorInfo(name, o.dtype, tuple(o.shape), value, o.elements, o.optional))
        # constant folding: every input known
        all_const = all(c is not None for i, c in zip(node.inputs, consts) if i)
        if all_const and should_fold(node, infos):
            with _node_errors(f"{self.label}: {label}"):
                if hasattr(op, "evaluate"):
                    results = op.evaluate(view, consts)
                else:
                    results = evaluate_node(node, consts,
                                            [i.dtype if i else None for i in infos], f"{self.label}: {label}")
            for name, info, arr in zip(node.outputs, infos, results):
                if not name:
                    continue
                if tuple(arr.shape) != tuple(info.shape) or dtype_from_numpy(arr.dtype) != info.dtype:
                    raise ShapeInferenceError(
                        f"{self.label}: {label}: shape inference says {info} for output {name!r} but "
                        f"evaluation gives {arr.dtype}{list(arr.shape)}"
                    )
                if name in self.half and arr.dtype == np.float32 and domain == "" \
                        and node.op_type not in _EXACT_ON_HALF:
                    arr = _round_half(arr, self.half[name])
                initializers[name] = arr
                # an initializer's value is its array: a compile-time value next to it would be a
                # second, redundant description (the .root reader rejects it)
                scope[name] = TensorInfo(name, info.dtype, info.shape)
            return
        # compile-time values: all outputs known -> no node needed
        if all(info is None or info.value is not None for info in infos) and any(infos):
            for info in infos:
                if info is None:
                    continue
                if all(isinstance(x, int) for x in info.value):  # type: ignore[union-attr]
                    arr = np.array(info.value, dtype=info.dtype.numpy).reshape(
                        tuple(int(d) for d in info.shape))
                    initializers[info.name] = arr
                    scope[info.name] = TensorInfo(info.name, info.dtype, info.shape)
                else:
                    scope[info.name] = info
            return
        for info in infos:
            if info is not None:
                scope[info.name] = info
        out_nodes.append(node)
        if domain == "" and node.op_type not in _EXACT_ON_HALF and not op.data_dependent(view):
            # (data-dependent sizes are named after the node's outputs, which rounding renames)
            self._round_half_outputs(node, scope, initializers, out_nodes, outer)

    def _round_half_outputs(self, node: Node, scope: dict[str, TensorInfo], initializers: dict[str, np.ndarray],
                            out_nodes: list[Node], outer: Mapping[str, TensorInfo]) -> None:
        """Round each float16/bfloat16 output of ``node`` to its type where it is produced, as the
        reference (and any half-precision runtime) does: the node writes a float32 temporary and
        a sofie.RoundFloat makes the tensor the graph reads."""
        for k, name in enumerate(node.outputs):
            if not name or name not in self.half or scope[name].dtype != FLOAT32:
                continue
            tmp = name + "__sofie_unrounded"
            while tmp in scope or tmp in initializers:
                tmp += "_"
            info = scope.pop(name)
            node.outputs[k] = tmp
            scope[tmp] = TensorInfo(tmp, info.dtype, info.shape, info.value)
            rnd = onnx.helper.make_node("RoundFloat", [tmp], [name], name=node.name, domain="sofie",
                                        dtype=self.half[name])
            self._convert_node(rnd, scope, initializers, out_nodes, outer)


    def _audit(self, proto: onnx.NodeProto, label: str, scope: dict[str, TensorInfo],
               initializers: dict[str, np.ndarray], domain: str = "") -> onnx.NodeProto:
        """The node after the attribute audit (see ``frontends/audit.py``); attributes its opset
        turned into inputs become new initializers."""

        def fresh(hint: str) -> str:
            name = hint
            while name in scope or name in initializers:
                name += "_"
            return name

        opset = self.opsets.get("", MIN_OPSET) if not domain else self.opsets.get(domain, 1)
        node, consts = audit_node(proto, opset, f"{self.label}: {label}", fresh,
                                  lambda t: scope[t].dtype.numpy)
        for name, arr in consts.items():
            initializers[name] = arr
            scope[name] = TensorInfo(name, dtype_from_numpy(arr.dtype), tuple(arr.shape))
        return node

    def _lower(self, op: opbase.Operator, node: Node, proto: onnx.NodeProto, scope: dict[str, TensorInfo],
               initializers: dict[str, np.ndarray], out_nodes: list[Node],
               outer: Mapping[str, TensorInfo]) -> None:
        """Operators with a ``lower`` method (tree ensembles) become an internal node whose big
        attribute arrays are initializers, so they go to the weight blob like any weight."""
        ins = [scope[i] if i else None for i in node.inputs]
        view = opbase.NodeView(node, ins, [self._const(i) if i else None for i in node.inputs])
        reason = op.check(view)
        if reason:
            raise UnsupportedOperatorError([(node.op_type, node.name, node.domain, node.opset, reason)])
        attrs, arrays = op.lower(view)
        names = []
        for key in op.lowered_inputs:
            if key not in arrays:
                names.append("")
                continue
            name = f"{proto.output[0]}__sofie_{key}"
            while name in scope:
                name += "_"
            arr = np.ascontiguousarray(arrays[key])
            initializers[name] = arr
            scope[name] = TensorInfo(name, dtype_from_numpy(arr.dtype), tuple(arr.shape))
            names.append(name)
        while names and not names[-1]:
            names.pop()
        lowered = onnx.helper.make_node(op.lowered_op, [proto.input[0], *names], list(proto.output),
                                        name=proto.name, domain="sofie", **attrs)
        self._convert_node(lowered, scope, initializers, out_nodes, outer)

    def _tag_half(self, proto: onnx.NodeProto) -> None:
        """Float outputs computed from float16/bfloat16 tensors are of that type in the model."""
        kinds = [self.half[i] for i in proto.input if i in self.half]
        if proto.op_type == "Constant":
            t = next((a.t for a in proto.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR),
                     None)
            if t is not None and t.data_type in HALF_TYPES:
                kinds = [HALF_TYPES[t.data_type]]
            else:
                kinds = []
        for a in proto.attribute:
            if a.name in _DTYPE_ATTRS and a.type == onnx.AttributeProto.INT and a.i in HALF_TYPES:
                kinds = [HALF_TYPES[a.i]]
            elif a.name in _DTYPE_ATTRS and a.type == onnx.AttributeProto.INT and proto.op_type != "Attention":
                kinds = []  # an explicit other element type
            elif a.name == "value" and a.type == onnx.AttributeProto.TENSOR and a.t.data_type in HALF_TYPES:
                kinds = [HALF_TYPES[a.t.data_type]]
        if proto.op_type == "LinearAttention" and proto.domain in ("", "ai.onnx"):
            # output is of the query's type T; present_state of past_state's type S (the query's
            # when past_state is absent), as the reference computes it
            past = proto.input[3] if len(proto.input) > 3 and proto.input[3] else proto.input[0]
            for o, src in zip(proto.output, (proto.input[0], past)):
                if o and src in self.half:
                    self.half[o] = self.half[src]
            return
        if kinds:
            for o in proto.output:
                if o:
                    self.half[o] = kinds[0]

    def _rewrite_fixed_slice(self, proto: onnx.NodeProto, scope: dict[str, TensorInfo],
                             initializers: dict[str, np.ndarray], out_nodes: list[Node],
                             outer: Mapping[str, TensorInfo]) -> bool:
        """A Slice inside a sub-graph whose starts and ends are computed at run time, from the same
        sub-graph tensor and a constant apart (``Slice(x, i, i + 1)`` at a Loop's iteration
        number), becomes ``sofie.SliceFixed``: its output shape is then known at compile time
        (see ``frontends/slice_bounds.py``). Elsewhere such bounds specialise the model on the
        graph inputs they come from, or are refused (DataDependentShapeError)."""
        if proto.op_type != "Slice" or len(self._inits) < 2 or self.opsets.get("", MIN_OPSET) < 10 \
                or len(proto.input) < 3 or len(proto.output) != 1:
            return False

        def known(name: str) -> np.ndarray | None:
            c = self._const(name)
            if c is not None:
                return c
            info = scope.get(name)
            if info is not None and info.value is not None and all(isinstance(d, int) for d in info.value):
                return np.array(info.value, dtype=np.int64)
            return None

        x, starts, ends = proto.input[:3]
        if not starts or not ends or all(known(t) is not None or scope[t].value is not None for t in (starts, ends)):
            return False  # known at compile time, possibly symbolic: Slice itself handles them
        params = []
        for k in (3, 4):
            given = len(proto.input) > k and proto.input[k]
            arr = known(proto.input[k]) if given else None
            if given and (arr is None or arr.dtype.kind not in "iu"):
                return False
            params.append(None if arr is None else [int(a) for a in arr.reshape(-1)])
        producers = {o: n for n in out_nodes for o in n.outputs if o}

        def size(name: str) -> int | None:
            info = scope.get(name)
            return info.size if info is not None and isinstance(info.size, int) else None

        diffs = fixed_differences(starts, ends, producers, known, size,
                                  lambda name: name in scope and name not in outer)
        if diffs is None:
            return False
        axes = params[0] if params[0] is not None else list(range(len(diffs)))
        steps = params[1] if params[1] is not None else [1] * len(diffs)
        if not len(axes) == len(steps) == len(diffs) or 0 in steps:
            return False  # the Slice itself reports the inconsistency
        node = onnx.helper.make_node("SliceFixed", [x, starts, ends], list(proto.output), name=proto.name,
                                     domain="sofie", axes=axes, steps=steps,
                                     sizes=list(fixed_extents(diffs, tuple(steps))))
        self._convert_node(node, scope, initializers, out_nodes, outer)
        return True

    def _rewrite_half_cast(self, proto: onnx.NodeProto, scope: dict[str, TensorInfo],
                           initializers: dict[str, np.ndarray], out_nodes: list[Node],
                           outer: Mapping[str, TensorInfo]) -> bool:
        """Cast (or CastLike) to float16/bfloat16 becomes a cast to float32 that rounds to the
        half type's precision (sofie.RoundFloat), since half types are computed in float32."""
        if proto.op_type == "Cast":
            to = next((a.i for a in proto.attribute if a.name == "to"), None)
            kind = HALF_TYPES.get(to)
        elif proto.op_type == "CastLike" and len(proto.input) > 1:
            kind = self.half.get(proto.input[1])
        else:
            return False
        if kind is None:
            return False
        tmp = proto.output[0] + "__sofie_as_float"
        while tmp in scope:
            tmp += "_"
        helper = onnx.helper
        cast = helper.make_node("Cast", [proto.input[0]], [tmp], name=proto.name, to=onnx.TensorProto.FLOAT)
        rnd = helper.make_node("RoundFloat", [tmp], [proto.output[0]], name=proto.name, domain="sofie", dtype=kind)
        self._convert_node(cast, scope, initializers, out_nodes, outer)
        self._convert_node(rnd, scope, initializers, out_nodes, outer)
        self.half[proto.output[0]] = kind
        return True

    def _expand_half_softmax(self, proto: onnx.NodeProto, scope: dict[str, TensorInfo],
                             initializers: dict[str, np.ndarray], out_nodes: list[Node],
                             outer: Mapping[str, TensorInfo]) -> bool:
        """A float16/bfloat16 Softmax (opset >= 13) becomes the steps the reference computes,
        each rounded to the half type: max, x - max, exp, sum, division. numpy (hence the
        reference) sums bfloat16 one element after the other in bfloat16, so for bfloat16 the sum
        is a chain of rounded Adds (axes up to ``_SEQUENTIAL_SUM_MAX`` long; longer ones sum in
        float32 and differ by at most about one bfloat16 unit); float16 sums in float32."""
        if proto.op_type != "Softmax" or len(proto.input) != 1 or proto.input[0] not in self.half:
            return False
        kind = self.half[proto.input[0]]
        opset = self.opsets.get("", MIN_OPSET)
        x = scope[proto.input[0]]
        axis = next((a.i for a in proto.attribute if a.name == "axis"), -1)
        if opset < 13 or x.dtype != FLOAT32 or not -x.rank <= axis < x.rank:
            return False
        axis = axis % x.rank
        length = x.shape[axis]
        if isinstance(length, Dim) or (kind == "bfloat16" and not 1 <= length <= _SEQUENTIAL_SUM_MAX):
            return False
        used = set(scope) | set(initializers)

        def fresh(tag: str) -> str:
            name = f"{proto.output[0]}__sofie_softmax_{tag}"
            while name in used:
                name += "_"
            used.add(name)
            return name

        def const(tag: str, arr: np.ndarray) -> str:
            name = fresh(tag)
            initializers[name] = arr
            scope[name] = TensorInfo(name, dtype_from_numpy(arr.dtype), tuple(arr.shape))
            return name

        mk = onnx.helper.make_node
        axes = np.array([axis], dtype=np.int64)
        mx, sub, ex, total = fresh("max"), fresh("sub"), fresh("exp"), fresh("sum")
        steps = [mk("ReduceMax", [proto.input[0], const("axes", axes)], [mx], keepdims=1) if opset >= 18
                 else mk("ReduceMax", [proto.input[0]], [mx], axes=[axis], keepdims=1),
                 mk("Sub", [proto.input[0], mx], [sub]), mk("Exp", [sub], [ex])]
        if kind == "float16" or length == 1:
            steps.append(mk("ReduceSum", [ex, const("axes", axes)], [total], keepdims=1))
        else:
            parts = [fresh(f"part{k}") for k in range(length)]
            steps.append(mk("Split", [ex, const("split", np.ones(length, np.int64))], parts, axis=axis))
            acc = parts[0]
            for k in range(1, length):
                nxt = total if k == length - 1 else fresh(f"acc{k}")
                steps.append(mk("Add", [acc, parts[k]], [nxt]))
                acc = nxt
        steps.append(mk("Div", [ex, total], [proto.output[0]]))
        for step in steps:
            step.name = proto.name
            self._convert_node(step, scope, initializers, out_nodes, outer)
        return True

    def _expand_function(self, proto: onnx.NodeProto, scope: dict[str, TensorInfo],
                         initializers: dict[str, np.ndarray], out_nodes: list[Node],
                         outer: Mapping[str, TensorInfo], label: str) -> bool:
        """Compile the node through the function body the ONNX spec defines it by (see
        ``frontends/functions.py``), for operators registered as such (``ops/functions.py``) and
        for float16/bfloat16 Attention, whose steps then each round to the half type as the
        reference computes them (the fused float32 kernel would round only the result)."""
        domain = "" if proto.domain == "ai.onnx" else proto.domain
        op = opbase.lookup(domain, proto.op_type)
        half = domain == "" and proto.op_type in _HALF_FUNCTION_OPS and any(i in self.half for i in proto.input)
        if not half and not (op is not None and op.expands(proto, any(i in self.half for i in proto.input))):
            return False
        types = []
        for i in proto.input:
            if not i:
                types.append(None)
                continue
            info = scope[i]
            elem = {"float16": onnx.TensorProto.FLOAT16, "bfloat16": onnx.TensorProto.BFLOAT16}.get(
                self.half.get(i, ""), info.dtype.onnx)
            dims = [str(d) if isinstance(d, Dim) else int(d) for d in info.shape]
            types.append(onnx.helper.make_tensor_type_proto(elem, dims))
        used = set(scope) | set(initializers)

        def fresh(inner: str) -> str:
            name = f"{proto.output[0] if proto.output else proto.op_type}__sofie_{proto.op_type}_{inner}"
            while name in used:
                name += "_"
            used.add(name)
            return name

        where = f"{self.label}: {label}"
        opset = self.opsets.get(domain, MIN_OPSET if domain == "" else 1)
        body = function_body(proto, opset, types, fresh, where)
        if body is None:
            if half:
                return False
            raise UnsupportedOperatorError([(proto.op_type, proto.name, domain, opset,
                                             "no function body of the operator at this opset can be inlined")])
        for step in body:
            self._convert_node(step, scope, initializers, out_nodes, outer)
        return True

    def _inline_constant_if(self, proto: onnx.NodeProto, scope: dict[str, TensorInfo],
                            initializers: dict[str, np.ndarray], out_nodes: list[Node],
                            outer: Mapping[str, TensorInfo]) -> bool:
        """An If whose condition is a compile-time constant becomes its taken branch (the other
        branch may not even make sense for these shapes). Returns False if it cannot be inlined."""
        cond = self._const(proto.input[0]) if proto.input else None
        if cond is None or cond.size != 1:
            return False
        name = "then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"
        branch = next((a.g for a in proto.attribute if a.name == name), None)
        if branch is None or len(branch.output) != len(proto.output):
            return False
        produced = {o for n in branch.node for o in n.output if o} | {t.name for t in branch.initializer}
        if produced & set(scope) or produced & set(proto.output):
            return False  # a name clash with the enclosing graph: keep the If
        for tp in branch.initializer:
            arr = _to_numpy(tp, f"{self.label}: initializer {tp.name!r}")
            check_shape(arr.shape, arr.itemsize, f"{self.label}: initializer {tp.name!r}")
            initializers[tp.name] = arr
            scope[tp.name] = TensorInfo(tp.name, dtype_from_numpy(arr.dtype), tuple(arr.shape))
        for sub in _toposort(list(branch.node), set(scope), self.label):
            self._convert_node(sub, scope, initializers, out_nodes, outer)
        for src, dst in zip(branch.output, proto.output):
            if dst:
                ident = onnx.helper.make_node("Identity", [src.name], [dst], name=proto.name)
                self._convert_node(ident, scope, initializers, out_nodes, outer)
        return True


def _check_text(g: onnx.GraphProto, label: str, depth: int = 0) -> None:
    """Every name in the graph must be text: protobuf hands out a string field that is not
    valid UTF-8 as bytes, which no later step expects."""
    if depth > 64:
        raise InvalidGraphError(f"{label}: sub-graphs are nested more than 64 deep")

    def text(value, what: str) -> None:
        if not isinstance(value, str):
            raise ModelLoadError(f"{label}: {what} {value!r} is not valid UTF-8 text")

    text(g.name, "the graph name")
    for vi in [*g.input, *g.output, *g.value_info]:
        text(vi.name, "a value name")
    for t in g.initializer:
        text(t.name, "an initializer name")
    for n in g.node:
        for what, v in (("an operator type", n.op_type), ("a domain", n.domain), ("a node name", n.name)):
            text(v, what)
        where = f"node {n.name!r}" if isinstance(n.name, str) else "a node"
        for x in [*n.input, *n.output]:
            text(x, f"{where}: a tensor name")
        for a in n.attribute:
            text(a.name, f"{where}: an attribute name")
            if a.type == onnx.AttributeProto.GRAPH:
                _check_text(a.g, label, depth + 1)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    _check_text(sub, label, depth + 1)


@contextmanager
def _node_errors(where: str):
    """Turn what an operator's shape inference or a constant evaluation raises on a malformed
    node (a wrong attribute value, an impossible size) into a SofieError naming the node."""
    try:
        yield
    except SofieError:
        raise
    except MemoryError as e:
        raise ResourceLimitError(f"{where}: needs more memory than is available ({e})") from None
    except RecursionError as e:
        raise InvalidGraphError(f"{where}: nested too deeply ({e})") from None
    except (ValueError, TypeError, IndexError, KeyError, ArithmeticError, AttributeError) as e:
        raise ShapeInferenceError(f"{where}: {type(e).__name__}: {e}") from e


def _constant_value(node: Node, where: str) -> np.ndarray:
    a = node.attrs
    if "value" in a:
        return np.require(a["value"], requirements="C")
    if "value_float" in a:
        return np.array(a["value_float"], dtype=np.float32)
    if "value_floats" in a:
        return np.array(a["value_floats"], dtype=np.float32)
    if "value_int" in a:
        return np.array(a["value_int"], dtype=np.int64)
    if "value_ints" in a:
        return np.array(a["value_ints"], dtype=np.int64)
    raise UnsupportedOperatorError([("Constant", node.name, "", node.opset,
                                     f"only tensor, float(s) and int(s) values are supported, got {sorted(a)}")])


def _walk_protos(nodes: Sequence[onnx.NodeProto]):
    for n in nodes:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _walk_protos(a.g.node)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _walk_protos(g.node)


def _toposort(nodes: list[onnx.NodeProto], available: set[str], label: str) -> list[onnx.NodeProto]:
    """Order nodes so every input is produced first (ONNX requires it; some exporters don't)."""
    produced_by: dict[str, int] = {}
    for k, n in enumerate(nodes):
        for o in n.output:
            if o:
                if o in produced_by or o in available:
                    raise InvalidGraphError(f"{label}: tensor {o!r} is produced twice")
                produced_by[o] = k
    deps: list[set[int]] = []
    for n in nodes:
        d = set()
        for i in list(n.input) + _implicit_inputs(n):
            if i and i in produced_by:
                d.add(produced_by[i])
        deps.append(d)
    # Kahn's algorithm in linear time; a node's round is one more than its latest producer's, and
    # the order is by round, then by position in the file (ready nodes keep their original order)
    users: list[list[int]] = [[] for _ in nodes]
    missing = [len(d) for d in deps]
    for k, d in enumerate(deps):
        for p in d:
            users[p].append(k)
    level = [0] * len(nodes)
    ready = [k for k, m in enumerate(missing) if m == 0]
    for k in ready:  # the list grows while it is walked
        for u in users[k]:
            level[u] = max(level[u], level[k] + 1)
            missing[u] -= 1
            if missing[u] == 0:
                ready.append(u)
    if len(ready) != len(nodes):
        pending = [k for k, m in enumerate(missing) if m]
        names = [nodes[k].name or nodes[k].op_type for k in pending[:5]]
        raise InvalidGraphError(f"{label}: the graph has a cycle (involving nodes {names})")
    return [nodes[k] for k in sorted(range(len(nodes)), key=lambda k: (level[k], k))]


def _implicit_inputs(n: onnx.NodeProto) -> list[str]:
    """Outer-scope names read inside sub-graphs (If branches) count as inputs of the node."""
    names: list[str] = []
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            local = {i.name for i in a.g.input} | {t.name for t in a.g.initializer}
            for sub in a.g.node:
                names.extend(i for i in list(sub.input) + _implicit_inputs(sub) if i and i not in local)
                local.update(sub.output)
    return names


__all__ = ["convert_model", "from_onnx", "graph_input_ancestors", "input_specs", "load_model"]
