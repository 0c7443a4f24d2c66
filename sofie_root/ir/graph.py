"""The IR graph: named typed tensors, initializers (numpy arrays) and nodes in topological order.

The IR is plain data. It carries no C++ and no ONNX objects, so it can be stored losslessly
(``serialization/``) and transformed by passes that are pure functions ``Graph -> Graph``.
A :class:`Graph` validates itself on construction: every input of every node is produced before
it is used, every name is defined once, and every tensor has a dtype and a shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidGraphError
from .dims import Dim, DimLike, Shape, numel
from .dtypes import DType, dtype_from_numpy


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's name, element type and shape (ints and symbolic :class:`Dim`).

    ``value`` holds the element values of small integer tensors whose values are known at
    compile time but may be symbolic (the output of ``Shape`` on a tensor with a batch dimension,
    for example). Operators that take shapes as inputs (Reshape, Expand, ...) read it.

    ``elements`` makes this an ONNX *sequence*: ``len(elements)`` tensors of element type
    ``dtype``, element ``k`` of shape ``elements[k]`` (length and shapes known at compile time,
    dimensions possibly symbolic). Its storage is the elements packed one after the other, so
    ``shape`` is ``(total number of elements,)`` and memory planning treats it as any tensor.
    ``optional`` makes this an ONNX *optional*: True holds a value (this tensor), False is empty
    (``shape`` is then ``(0,)``); whether it holds a value is known at compile time.
    """

    name: str
    dtype: DType
    shape: Shape
    value: tuple[DimLike, ...] | None = None
    elements: tuple[Shape, ...] | None = None
    optional: bool | None = None

    @property
    def is_sequence(self) -> bool:
        return self.elements is not None

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> DimLike:
        return numel(self.shape)

    @property
    def is_static(self) -> bool:
        return not any(isinstance(d, Dim) for d in self.shape)

    def __str__(self) -> str:
        if self.elements is not None:
            shapes = ", ".join("[" + ", ".join(str(d) for d in s) + "]" for s in self.elements)
            return f"sequence<{self.dtype.name}>({shapes})"
        dims = ", ".join(str(d) for d in self.shape)
        if self.optional is False:
            return f"optional<{self.dtype.name}>(empty)"
        return f"{'optional ' if self.optional else ''}{self.dtype.name}[{dims}]"


@dataclass
class Node:
    """One operator application. ``inputs`` may contain ``""`` for an omitted optional input."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""
    opset: int = 0

    def __str__(self) -> str:
        attrs = ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.attrs.items()))
        ins = ", ".join(i if i else "<none>" for i in self.inputs)
        qual = f"{self.domain}.{self.op_type}" if self.domain else self.op_type
        return f"{', '.join(self.outputs)} = {qual}({ins}){'  {' + attrs + '}' if attrs else ''}"

    @property
    def label(self) -> str:
        """How error messages refer to the node."""
        return f"{self.op_type} node {self.name!r}" if self.name else f"{self.op_type} node"


def _short(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"tensor{list(v.shape)}"
    if isinstance(v, Graph):
        return f"<graph {v.name!r}: {len(v.nodes)} nodes>"
    if isinstance(v, (list, tuple)) and len(v) > 8:
        return "[" + ", ".join(map(str, v[:8])) + ", ...]"
    return repr(v)


class Graph:
    """A validated dataflow graph.

    Args:
        nodes: nodes in topological order.
        inputs: names of the graph inputs (runtime tensors, not initializers).
        outputs: names of the graph outputs.
        tensors: TensorInfo of every tensor (inputs, initializers, intermediates, outputs).
        initializers: constant tensors as numpy arrays.
        opsets: opset version per domain (``""`` is the default ONNX domain).
        name: graph name. metadata: free-form string pairs (producer, doc, ...).
        outer_scope: names visible from an enclosing graph (for If/Loop bodies).
    """

    def __init__(
        self,
        nodes: Iterable[Node],
        inputs: Iterable[str],
        outputs: Iterable[str],
        tensors: Mapping[str, TensorInfo],
        initializers: Mapping[str, np.ndarray] | None = None,
        opsets: Mapping[str, int] | None = None,
        name: str = "model",
        metadata: Mapping[str, str] | None = None,
        outer_scope: Mapping[str, TensorInfo] | None = None,
    ):
        self.nodes = list(nodes)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.tensors = dict(tensors)
        self.initializers = dict(initializers or {})
        self.opsets = dict(opsets or {"": 0})
        self.name = name
        self.metadata = dict(metadata or {})
        self.outer_scope = dict(outer_scope or {})
        # an initializer's value is its array; a compile-time value carried over from the node it
        # was folded from would be a second description of it (and .root files reject it)
        for name in self.initializers:
            info = self.tensors.get(name)
            if info is not None and info.value is not None:
                self.tensors[name] = TensorInfo(name, info.dtype, info.shape)
        self.validate()

    # -- queries ------------------------------------------------------------------------------
    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            if name in self.outer_scope:
                return self.outer_scope[name]
            raise InvalidGraphError(f"tensor {name!r} is not defined in graph {self.name!r}") from None

    @property
    def input_infos(self) -> list[TensorInfo]:
        return [self.tensors[n] for n in self.inputs]

    @property
    def output_infos(self) -> list[TensorInfo]:
        return [self.tensors[n] for n in self.outputs]

    @property
    def symbols(self) -> list[str]:
        """Symbolic dimension names, in a stable order: first appearance in the inputs."""
        seen: list[str] = []
        for info in self.input_infos:
            for d in info.shape:
                if isinstance(d, Dim):
                    for s in sorted(d.symbols):
                        if s not in seen:
                            seen.append(s)
        return seen

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def walk(self) -> Iterator[Node]:
        """All nodes, including those of sub-graphs (If branches)."""
        for n in self.nodes:
            yield n
            for v in n.attrs.values():
                if isinstance(v, Graph):
                    yield from v.walk()

    def replace(self, **changes: Any) -> Graph:
        """A new validated graph with some fields changed (passes use this; graphs are not mutated)."""
        fields = {
            "nodes": self.nodes, "inputs": self.inputs, "outputs": self.outputs, "tensors": self.tensors,
            "initializers": self.initializers, "opsets": self.opsets, "name": self.name,
            "metadata": self.metadata, "outer_scope": self.outer_scope,
        }
        fields.update(changes)
        return Graph(**fields)

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        where = f"graph {self.name!r}"
        defined: set[str] = set(self.outer_scope)
        for name in self.inputs:
            if name in self.initializers:
                raise InvalidGraphError(f"{where}: input {name!r} is also an initializer")
            self._define(name, defined, "graph input")
        for name, arr in self.initializers.items():
            if not isinstance(arr, np.ndarray):
                raise InvalidGraphError(f"{where}: initializer {name!r} is not a numpy array")
            self._define(name, defined, "initializer")
            info = self.tensors.get(name)
            if info is not None and (tuple(arr.shape) != tuple(info.shape)
                                     or dtype_from_numpy(arr.dtype) != info.dtype):
                raise InvalidGraphError(
                    f"{where}: initializer {name!r} is {arr.dtype}{list(arr.shape)} but its tensor "
                    f"info says {info}"
                )
        produced = {o for n in self.nodes for o in n.outputs if o}
        for name in self.value_tensors(produced):
            self._define(name, defined, "compile-time value")
        for node in self.nodes:
            if not node.op_type:
                raise InvalidGraphError(f"{where}: a node has an empty op_type")
            for i in node.inputs:
                if i and i not in defined:
                    raise InvalidGraphError(
                        f"{where}: {node.label} reads {i!r}, which is not produced before it "
                        "(missing tensor or nodes not in topological order)"
                    )
            for o in node.outputs:
                if o:
                    self._define(o, defined, node.label)
        for name in self.outputs:
            if name not in defined:
                raise InvalidGraphError(f"{where}: graph output {name!r} is never produced")
        for name in defined - set(self.outer_scope):
            info = self.tensors.get(name)
            if info is None:
                raise InvalidGraphError(f"{where}: tensor {name!r} has no type and shape")
            if not isinstance(info.dtype, DType):
                raise InvalidGraphError(f"{where}: tensor {name!r} has no valid dtype")
            for d in info.shape:
                if isinstance(d, bool) or not isinstance(d, (int, Dim)):
                    raise InvalidGraphError(f"{where}: tensor {name!r} has a bad dimension {d!r}")
                if isinstance(d, int) and d < 0:
                    raise InvalidGraphError(f"{where}: tensor {name!r} has a negative dimension {d}")

    def value_tensors(self, produced: set[str] | None = None) -> list[str]:
        """Tensors defined only by their compile-time value (``TensorInfo.value``), such as the
        symbolic shape ``(N, 12)`` computed by a folded Shape sub-graph."""
        if produced is None:
            produced = {o for n in self.nodes for o in n.outputs if o}
        return [n for n, info in self.tensors.items()
                if info.value is not None and n not in produced and n not in self.initializers
                and n not in self.inputs]

    def _define(self, name: str, defined: set[str], what: str) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidGraphError(f"graph {self.name!r}: {what} has an empty tensor name")
        if name in defined:
            raise InvalidGraphError(f"graph {self.name!r}: tensor {name!r} is defined twice ({what})")
        defined.add(name)

    # -- printing -----------------------------------------------------------------------------
    def __str__(self) -> str:
        lines = [f"graph {self.name!r} (opsets {dict(sorted(self.opsets.items()))})"]

        def info(n: str) -> object:  # a sub-graph may return a tensor of an enclosing graph
            return self.tensors[n] if n in self.tensors else f"{self.outer_scope.get(n)} (enclosing graph)"

        for n in self.inputs:
            lines.append(f"  input  {n}: {info(n)}")
        for n in self.initializers:
            lines.append(f"  weight {n}: {info(n)}")
        for node in self.nodes:
            outs = ", ".join(f"{o}: {info(o)}" for o in node.outputs if o)
            lines.append(f"  {node}    -> {outs}")
        for n in self.outputs:
            lines.append(f"  output {n}: {info(n)}")
        return "\n".join(lines)

    __repr__ = __str__


def subgraph_reads(node: Node) -> set[str]:
    """Names read by the sub-graphs of ``node`` (recursively) that those sub-graphs do not define:
    for control flow, these are inputs of the node as far as lifetimes and bindings go."""
    out: set[str] = set()
    for g in node.attrs.values():
        if not isinstance(g, Graph):
            continue
        local = set(g.tensors) | set(g.initializers) | set(g.inputs)
        for n in g.nodes:
            out.update(i for i in n.inputs if i and i not in local)
            out.update(i for i in subgraph_reads(n) if i not in local)
        out.update(o for o in g.outputs if o not in local)
    return out

