"""User-defined operators: :func:`register_operator` gives an op type (typically a node of a
custom ONNX domain) its shape inference and its C++ body, from Python, at run time.

The IR stores such a node like any other (op type, domain, attributes), so a model using it is
saved to and loaded from a .root file by name. The C++ body lives only in the registering
process: it is never read from a model file, and loading a model that needs an operator nobody
registered fails with :class:`~sofie_root.UnsupportedOperatorError` naming it.

>>> sofie_root.register_operator(                                  # doctest: +SKIP
...     "LeakyClip", domain="my.ops", attributes={"alpha": 0.1, "limit": 6.0},
...     elementwise="std::min(x > 0 ? x : alpha * x, limit)")
>>> sofie_root.register_operator(                                  # doctest: +SKIP
...     "RowSum", domain="my.ops",
...     infer=lambda ins, attrs: [(ins[0].dtype, ins[0].shape[:-1])],
...     cpp='''
...         const std::int64_t cols = x0_shape[x0_rank - 1];
...         for (std::int64_t r = 0; r < y0_size; ++r) {
...            float s = 0; for (std::int64_t c = 0; c < cols; ++c) s += x0[r * cols + c]; y0[r] = s; }
...     ''')
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import SofieError
from ..ir.dims import Dim
from ..ir.dtypes import DType, dtype_by_name, dtype_from_numpy
from ..ir.graph import Graph, TensorInfo
from .base import REGISTRY, NodeView, Operator, OutInfo

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOMAIN = re.compile(r"^[A-Za-z0-9_.\-]*$")

#: C++ names reserved for the generated block (a user attribute may not shadow them)
_RESERVED = {"x", "y", "i", "n"}

#: what a custom operator's C++ may call: the block sits inside the model namespace, with
#: <cmath>, <algorithm>, <cstdint>, <limits> and <stdexcept> available
CPP_CONTEXT = """\
In the C++ body (``cpp=``), for input k and output k:
  const T* xk; std::int64_t xk_rank, xk_size; const std::int64_t xk_shape[]   (inputs)
  T* yk;       std::int64_t yk_rank, yk_size; const std::int64_t yk_shape[]   (outputs)
  const double <attribute name>                                             (declared attributes)
  (x0 .. are also visible as x, and y0 as y, when there is one input/output)
An elementwise= expression is evaluated per element with ``x`` (or x0, x1, ...) the input value(s),
inputs broadcast against each other as in ONNX."""


class CustomOperator(Operator):
    """A user-registered operator (see :func:`register_operator`)."""

    user_defined = True
    arity: tuple[int, int | None] = (1, None)
    attributes: Mapping[str, float] = {}
    infer_fn: Callable[..., Any] | None = None
    cpp_body: str | Callable[..., str] | None = None
    elementwise: str | None = None
    compute_fn: Callable[..., Any] | None = None

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        lo, hi = self.arity
        n = len([i for i in v.node.inputs if i])
        if n < lo or (hi is not None and n > hi):
            return f"takes {lo}{'' if hi == lo else ' or more' if hi is None else f' to {hi}'} inputs, got {n}"
        for name, value in v.node.attrs.items():
            if name in self.attributes and not isinstance(value, (int, float)):
                return f"attribute {name!r} must be a number, got {type(value).__name__}"
        return None

    def _attrs(self, v: NodeView) -> dict[str, float]:
        return {k: v.attr(k, default) for k, default in self.attributes.items()}

    def infer(self, v: NodeView) -> list[OutInfo]:
        ins = [i for i in v.inputs if i is not None]
        n_out = max(1, len(v.node.outputs))
        if self.elementwise is not None:
            from ..ir.dims import broadcast_shapes

            shape = ins[0].shape
            for other in ins[1:]:
                shape = broadcast_shapes(shape, other.shape)
            return [OutInfo(ins[0].dtype, tuple(shape))] * n_out
        if self.infer_fn is None:
            return [OutInfo(ins[0].dtype, ins[0].shape)] * n_out
        try:
            result = self.infer_fn(ins, self._attrs(v))
        except SofieError:
            raise
        except Exception as e:
            raise v.fail(f"the shape inference of the user-defined operator raised {type(e).__name__}: {e}") from e
        outs = []
        for k, item in enumerate(result):
            try:
                dtype, shape = item
                dt = dtype if isinstance(dtype, DType) else (
                    dtype_by_name(dtype) if isinstance(dtype, str) else dtype_from_numpy(np.dtype(dtype)))
                shape = tuple(d if isinstance(d, Dim) else int(d) for d in shape)
            except Exception as e:
                raise v.fail(f"the shape inference of the user-defined operator must return (dtype, shape) "
                             f"pairs; output {k} is {item!r} ({e})") from e
            outs.append(OutInfo(dt, shape))
        return outs

    def evaluate(self, v: NodeView, inputs: list) -> list:
        """Constant folding (every input known at compile time): the user's numpy ``compute`` if
        given, else the operator's own C++ run once on those inputs."""
        attrs = self._attrs(v)
        if self.compute_fn is not None:
            res = self.compute_fn(*[x for x in inputs if x is not None], **attrs)
            res = list(res) if isinstance(res, (list, tuple)) else [res]
            outs = self.infer(v)
            return [np.require(np.asarray(r, dtype=o.dtype.numpy), requirements="C") for r, o in zip(res, outs)]
        from ..ir.graph import Graph, Node
        from ..model import Model

        names = [f"i{k}" if name else "" for k, name in enumerate(v.node.inputs)]
        outs = self.infer(v)
        out_names = [f"o{k}" if name else "" for k, name in enumerate(v.node.outputs)]
        tensors = {n: TensorInfo(n, dtype_from_numpy(x.dtype), tuple(x.shape)) for n, x in zip(names, inputs) if n}
        for n, o in zip(out_names, outs):
            if n:
                tensors[n] = TensorInfo(n, o.dtype, tuple(o.shape))
        node = Node(v.node.op_type, names, out_names, dict(v.node.attrs), v.node.name, v.node.domain, v.node.opset)
        graph = Graph([node], [n for n in names if n], [n for n in out_names if n], tensors,
                      opsets={"": 1, v.node.domain: v.node.opset}, name="fold")
        results = iter(Model(graph, passes=[]).infer(*[x for n, x in zip(names, inputs) if n]))
        return [next(results) if n else None for n in out_names]

    def emit(self, v: NodeView, e) -> str:
        attrs = self._attrs(v)
        if self.elementwise is not None:
            dt = v.input(0).dtype
            ins = [k for k, i in enumerate(v.node.inputs) if i]
            names = ["x"] if len(ins) == 1 else [f"x{k}" for k in range(len(ins))]

            def expr(a: list[str]) -> str:
                decl = "".join(f"const {v.input(k).dtype.cpp} {nm} = {val}; " for k, nm, val in zip(ins, names, a))
                consts = "".join(f"const double {k} = {e.lit(float(val), _F64)}; " for k, val in attrs.items())
                return f"[&]() -> {dt.cpp} {{ {consts}{decl}return {dt.cpp}({self.elementwise}); }}()"

            return e.broadcast(0, ins, expr)
        body = self.cpp_body(v.inputs, attrs) if callable(self.cpp_body) else str(self.cpp_body)
        lines = ["{"]
        for name, value in attrs.items():
            lines.append(f"const double {name} = {e.lit(float(value), _F64)}; (void){name};")
        ins = [(k, i) for k, i in enumerate(v.inputs) if i is not None]
        outs = [(k, o) for k, o in enumerate(v.node.outputs) if o]
        for pos, (k, info) in enumerate(ins):
            lines += _bind(f"x{pos}", f"const {info.dtype.cpp}*", e.inp(k), info, e)
        for pos, (k, _) in enumerate(outs):
            info = e.out_info(k)
            lines += _bind(f"y{pos}", f"{info.dtype.cpp}*", e.out(k), info, e)
        if len(ins) == 1:
            lines.append("const auto* x = x0; (void)x;")
        if len(outs) == 1:
            lines.append("auto* y = y0; (void)y;")
        lines.append("{")
        lines.append(body)
        lines.append("}")
        lines.append("}")
        return "\n".join(lines)


_F64 = dtype_by_name("float64")


def _bind(name: str, ptr_type: str, ptr: str, info: TensorInfo, e) -> list[str]:
    dims = [e.dim(d) for d in info.shape]
    shape = ", ".join(dims) if dims else "1"
    return [f"{ptr_type} {name} = {ptr}; (void){name};",
            f"const std::int64_t {name}_rank = {len(dims)}; (void){name}_rank;",
            f"const std::int64_t {name}_size = {e.dim(info.size)}; (void){name}_size;",
            f"const std::int64_t {name}_shape[] = {{{shape}}}; (void){name}_shape;"]


def register_operator(
    op_type: str,
    *,
    domain: str = "custom",
    infer: Callable[[list[TensorInfo], dict[str, float]], Sequence[tuple[Any, Sequence[Any]]]] | None = None,
    cpp: str | Callable[[list[TensorInfo], dict[str, float]], str] | None = None,
    elementwise: str | None = None,
    attributes: Mapping[str, float] | None = None,
    dtypes: Sequence[str] | None = ("float32", "float64"),
    num_inputs: int | tuple[int, int | None] = (1, None),
    compute: Callable[..., Any] | None = None,
    replace: bool = False,
) -> type[CustomOperator]:
    """Teach sofie_root a new operator: its shape inference and its C++.

    Args:
        op_type: the node's op type (``"MyOp"``).
        domain: the node's ONNX domain (``"my.ops"``); the default ONNX domain (``""``) is
            reserved for the built-in operators.
        infer: ``infer(inputs, attrs) -> [(dtype, shape), ...]`` one pair per output; ``inputs``
            are :class:`~sofie_root.ir.TensorInfo` (``.dtype``, ``.shape`` whose entries may be
            symbolic and support ``+ - * //``). Default: every output like input 0.
        cpp: the C++ statements computing the outputs (see ``CPP_CONTEXT``), or a function
            ``cpp(inputs, attrs) -> str``. The code runs inside the model's ``infer``; it must not
            allocate or read out of bounds.
        elementwise: instead of ``cpp``, a C++ expression computing one output element from the
            input element(s) ``x`` (or ``x0, x1, ...``) and the attributes.
        attributes: the numeric attributes the C++ may use, with their defaults (the node's own
            values override them); their names become ``const double`` locals.
        dtypes: accepted input element types (``None``: any).
        num_inputs: the number of inputs, or a ``(min, max)`` range (``max=None``: no limit).
        compute: optionally ``compute(*arrays, **attrs) -> array(s)`` in numpy, used to fold nodes
            whose inputs are all constant; without it such nodes are folded by running the C++.
        replace: allow replacing an operator registered earlier with this function.

    Returns the operator class. The operator is used by every model compiled or loaded afterwards.
    """
    if not isinstance(op_type, str) or not _IDENT.match(op_type):
        raise SofieError(f"register_operator: op_type {op_type!r} must be an identifier")
    if not isinstance(domain, str) or not _DOMAIN.match(domain):
        raise SofieError(f"register_operator: domain {domain!r} may contain letters, digits, '_', '.', '-'")
    dom = "" if domain == "ai.onnx" else domain
    key = (dom, op_type)
    old = REGISTRY.get(key)
    if old is not None and not getattr(old, "user_defined", False):
        raise SofieError(f"register_operator: {_qual(dom, op_type)} is a built-in operator and cannot be replaced")
    if old is not None and not replace:
        raise SofieError(f"register_operator: {_qual(dom, op_type)} is already registered (pass replace=True)")
    if (cpp is None) == (elementwise is None):
        raise SofieError("register_operator: give exactly one of cpp= (statements) or elementwise= (an expression)")
    if cpp is not None and not (isinstance(cpp, str) or callable(cpp)):
        raise SofieError("register_operator: cpp= must be a string of C++ or a function returning one")
    if elementwise is not None and infer is not None:
        raise SofieError("register_operator: an elementwise operator's shape is the broadcast of its inputs; "
                         "drop infer=")
    attrs = dict(attributes or {})
    for name, value in attrs.items():
        if not isinstance(name, str) or not _IDENT.match(name) or name in _RESERVED or re.match(r"^[xy]\d+", name):
            raise SofieError(f"register_operator: attribute name {name!r} is not usable as a C++ name")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SofieError(f"register_operator: attribute {name!r} needs a numeric default, got {value!r}")
    if dtypes is not None:
        for d in dtypes:
            dtype_by_name(d)
    arity = (num_inputs, num_inputs) if isinstance(num_inputs, int) else tuple(num_inputs)
    body_text = cpp if isinstance(cpp, str) else (elementwise or "")
    ns = {
        "op_type": op_type, "domain": dom, "dtypes": tuple(dtypes) if dtypes is not None else None,
        "arity": arity, "attributes": attrs, "infer_fn": staticmethod(infer) if infer else None,
        "cpp_body": staticmethod(cpp) if callable(cpp) else cpp, "elementwise": elementwise,
        "compute_fn": staticmethod(compute) if compute else None,
        "fingerprint": hashlib.sha256(f"{body_text}|{id(cpp) if callable(cpp) else ''}|{id(infer)}|"
                                      f"{sorted(attrs.items())}".encode()).hexdigest()[:16],
        "__doc__": f"User-defined operator {_qual(dom, op_type)}.",
        "__module__": __name__,
    }
    cls = type(f"Custom_{op_type}", (CustomOperator,), ns)
    REGISTRY[key] = cls()
    return cls


def unregister_operator(op_type: str, domain: str = "custom") -> None:
    """Remove a user-defined operator (built-in operators cannot be removed)."""
    dom = "" if domain == "ai.onnx" else domain
    op = REGISTRY.get((dom, op_type))
    if op is None:
        return
    if not getattr(op, "user_defined", False):
        raise SofieError(f"unregister_operator: {_qual(dom, op_type)} is a built-in operator")
    del REGISTRY[(dom, op_type)]


def registered_operators() -> list[str]:
    """The user-defined operators currently registered, as ``domain::Op``."""
    return sorted(_qual(d, o) for (d, o), op in REGISTRY.items() if getattr(op, "user_defined", False))


def graph_fingerprint(graph: Graph) -> str:
    """A text identifying the user-defined operators a graph uses (empty when it uses none), so
    that a model compiled after an operator was re-registered gets its own C++ namespace."""
    parts = []
    for node in graph.walk():
        op = REGISTRY.get((node.domain, node.op_type))
        if op is not None and getattr(op, "user_defined", False):
            parts.append(f"{_qual(node.domain, node.op_type)}={op.fingerprint}")
    return ";".join(sorted(set(parts)))


def missing_reason(domain: str) -> str:
    """What an unsupported-operator error says about a node of a non-ONNX domain."""
    if domain in ("", "ai.onnx"):
        return ""
    return ("a user-defined operator that is not registered in this process; call "
            "sofie_root.register_operator(...) for it before compiling or loading the model "
            "(its C++ is never read from a model file)")


def _qual(domain: str, op_type: str) -> str:
    return f"{domain}::{op_type}" if domain else op_type


__all__ = ["CPP_CONTEXT", "CustomOperator", "graph_fingerprint", "missing_reason", "register_operator",
           "registered_operators", "unregister_operator"]
