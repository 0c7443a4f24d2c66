"""The operator interface and the registry.

Every supported operator is one :class:`Operator` subclass, registered with :func:`register`,
declaring side by side:

* ``check``: which variants (attributes, dtypes) are supported, as a reason string if not;
* ``infer``: output dtypes and shapes (symbolic dims flow through ordinary arithmetic);
* ``emit``: the C++ statements computing the outputs, given a :class:`~sofie_root.codegen.emitter.NodeEmitter`;
* optionally ``propagate``: the (possibly symbolic) values of small integer outputs, which is how
  shape sub-graphs (Shape -> Gather -> Concat -> Reshape) fold at compile time;
* ``static_inputs``: inputs read at compile time only (a Reshape's target shape), never at run time;
* ``inplace_ok``: whether output 0 may overwrite an input that is not read afterwards.

Constant folding does not need per-operator code: nodes whose inputs are all constant are
evaluated with ``onnx.reference`` (see ``passes/fold.py``).

The registry is the single list of supported operators: ``supported_ops()``, the operator table (docs/operators.md) and
``UnsupportedOperatorError`` all come from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import DataDependentShapeError, ShapeInferenceError
from ..ir.dims import DimLike, Shape
from ..ir.dtypes import DType
from ..ir.graph import Node, TensorInfo

if TYPE_CHECKING:
    import onnx

    from ..codegen.emitter import NodeEmitter


@dataclass(frozen=True)
class OutInfo:
    """What ``infer`` returns per output: dtype, shape and optionally a known value."""

    dtype: DType
    shape: Shape
    value: tuple[DimLike, ...] | None = None
    #: a sequence output: the element shapes (``shape`` is then the packed size, see TensorInfo)
    elements: tuple[Shape, ...] | None = None
    #: an optional output: whether it holds a value (see TensorInfo)
    optional: bool | None = None


class NodeView:
    """An operator's view of one node: its attributes with defaults, its inputs' infos and constants."""

    def __init__(self, node: Node, inputs: Sequence[TensorInfo | None],
                 consts: Sequence[np.ndarray | None], outputs: Sequence[TensorInfo | None] = ()):
        self.node = node
        self.inputs = list(inputs)
        self.consts = list(consts)
        self.outputs = list(outputs)

    @property
    def opset(self) -> int:
        return self.node.opset

    @property
    def label(self) -> str:
        return self.node.label

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    def has_input(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def input(self, i: int) -> TensorInfo:
        if not self.has_input(i):
            raise ShapeInferenceError(f"{self.label}: input {i} is required but missing")
        return self.inputs[i]  # type: ignore[return-value]

    def const(self, i: int) -> np.ndarray | None:
        """The value of input ``i`` if it is a compile-time constant (initializer)."""
        return self.consts[i] if i < len(self.consts) else None

    def known_value(self, i: int) -> tuple[DimLike, ...] | None:
        """Values of input ``i`` known at compile time, possibly symbolic (``(N, 12)``)."""
        if not self.has_input(i):
            return None
        c = self.const(i)
        if c is not None and c.dtype.kind in "iub":
            return tuple(int(x) for x in c.reshape(-1))
        return self.inputs[i].value  # type: ignore[union-attr]

    def require_value(self, i: int, what: str) -> tuple[DimLike, ...]:
        v = self.known_value(i)
        if v is None:
            name = self.input(i).name
            raise DataDependentShapeError(
                f"{self.label}: {what} (input {i}, {name!r}) is computed at run time "
                "from data; only values known at compile time are supported here", name
            )
        return v

    def fail(self, msg: str) -> ShapeInferenceError:
        return ShapeInferenceError(f"{self.label}: {msg}")


class Operator:
    """Base class of every operator. Subclasses set ``op_type`` and override what they need."""

    op_type: ClassVar[str] = ""
    domain: ClassVar[str] = ""
    #: inputs only read at compile time (their values must be known then)
    static_inputs: ClassVar[tuple[int, ...]] = ()
    #: dtypes accepted for the "main" data inputs; None means any supported dtype
    dtypes: ClassVar[tuple[str, ...] | None] = None
    #: output 0 may share the buffer of an input of the same shape and dtype whose last read is
    #: this node (the arena planner then gives both one block): set it only when the emitted code
    #: reads element i of every such input before it writes element i of the output, and never
    #: reads another element of that input after writing one (element-wise loops, BatchNorm; not
    #: Softmax, Gemm or anything reading a row again after writing into it)
    inplace_ok: ClassVar[bool] = False
    #: with ``inplace_ok``: every run-time input is read at the output element's own (broadcast)
    #: index only, so the shared input may also be passed at other positions (``Mul(x, x)``);
    #: without it, an input passed twice is never overwritten
    inplace_repeated_ok: ClassVar[bool] = False
    #: inputs that may be sequences or optionals (ONNX sequence and optional types); any other
    #: input receiving one is refused by the frontend
    sequence_inputs: ClassVar[tuple[int, ...]] = ()
    #: output 0 holds input 0's bytes unchanged, only the shape differs (Reshape, Squeeze,
    #: Identity): when input 0 is not read afterwards the output takes over its buffer and the
    #: emitted copy must then do nothing (see ``shape.copy_code``, which skips equal pointers)
    view_of_input: ClassVar[bool] = False
    #: compiled through its ONNX function body by the frontend, never emitted (ops/functions.py)
    expand_function: ClassVar[bool] = False

    def expands(self, proto: onnx.NodeProto, half: bool) -> bool:
        """Whether the frontend compiles this node through its ONNX function body (``half``: it
        reads float16/bfloat16 tensors). Default: ``expand_function``."""
        return self.expand_function

    def check(self, v: NodeView) -> str | None:
        """Return why this node cannot be compiled, or None if it can."""
        if self.dtypes is not None:
            for info in v.inputs:
                if info is not None and info.dtype.name not in self.dtypes and not self._is_static(v, info):
                    return f"element type {info.dtype.name} is not supported (supported: {', '.join(self.dtypes)})"
        return None

    def _is_static(self, v: NodeView, info: TensorInfo) -> bool:
        return any(v.inputs[i] is info for i in self.static_inputs if i < len(v.inputs))

    def infer(self, v: NodeView) -> list[OutInfo]:
        raise NotImplementedError

    def propagate(self, v: NodeView, outs: list[OutInfo]) -> list[tuple[DimLike, ...] | None]:
        """Known values of the outputs, computed from known input values. Default: none."""
        return [None] * len(outs)

    def emit(self, v: NodeView, e: NodeEmitter) -> str:
        raise NotImplementedError

    def data_dependent(self, v: NodeView) -> dict[str, DimLike]:
        """Symbols this node's outputs introduce whose values are only known once it has run
        (NonZero's count), each with an upper bound used to size memory. Default: none."""
        return {}

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        """Scratch buffers the emitted code needs while the node runs (dtype, element count)."""
        return []

    def body_inputs(self, v: NodeView, attr: str) -> list[tuple[DType, Shape]] | None:
        """The (dtype, shape) of each input of the sub-graph in attribute ``attr`` (loop bodies,
        whose inputs the node feeds), read by the frontend before the sub-graph is converted;
        ``v`` has the node's inputs and its non-graph attributes. None: the sub-graph's own
        declarations (If branches take no inputs)."""
        return None


REGISTRY: dict[tuple[str, str], Operator] = {}


def register(cls: type[Operator]) -> type[Operator]:
    """Class decorator adding an operator to the registry (one instance per op type)."""
    key = (cls.domain, cls.op_type)
    if not cls.op_type:
        raise TypeError(f"{cls.__name__} has no op_type")
    if key in REGISTRY:
        raise TypeError(f"operator {cls.op_type!r} registered twice")
    REGISTRY[key] = cls()
    return cls


def lookup(domain: str, op_type: str) -> Operator | None:
    if domain == "ai.onnx":
        domain = ""
    return REGISTRY.get((domain, op_type))


def normalize_axis(axis: int, rank: int, v: NodeView | None = None) -> int:
    if not -rank <= axis < max(rank, 1):
        msg = f"axis {axis} is out of range for rank {rank}"
        raise v.fail(msg) if v is not None else ShapeInferenceError(msg)
    return axis + rank if axis < 0 else axis
