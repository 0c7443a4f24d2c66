"""Control flow: If.

Both branches (IR sub-graphs converted by the frontend, which may read tensors of the enclosing
graphs) are emitted inline in the parent's body, inside ``if (cond[0]) { ... } else { ... }``. The
branch intermediates and the scratch buffers of the branch nodes are workspace buffers of the If
node, so the parent's arena plan covers them and nothing is allocated at run time. A branch node
producing a branch output writes straight into the If node's output; other branch outputs (outer
tensors, constants, a tensor returned twice) are copied. Constants defined inside a branch become
``static const`` arrays in the generated code (their values written with ``NodeEmitter.lit``).

Enclosing-graph tensors read inside a branch count as reads of the If node in the parent's
lifetime analysis (``codegen.emitter.subgraph_reads``).

When the condition is a compile-time constant only the taken branch is emitted and the outputs
take its shapes; otherwise both branches must produce the same dtypes and shapes.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field

import numpy as np

from ..ir.dims import DimLike
from ..ir.dtypes import DType
from ..ir.graph import Graph
from .base import NodeView, Operator, OutInfo, lookup, register

#: largest constant branch output whose values are propagated as compile-time values
_MAX_VALUE_SIZE = 64


@dataclass
class _Branch:
    """How one branch is laid out: its nodes, the buffers it needs, what it writes directly."""

    graph: Graph
    views: list[tuple[NodeView, Operator]]
    #: sub-graph tensors computed into a workspace buffer: (name, dtype, element count)
    buffers: list[tuple[str, DType, DimLike]] = field(default_factory=list)
    #: workspace buffers of the branch nodes: (node index, k, dtype, element count)
    node_ws: list[tuple[int, int, DType, DimLike]] = field(default_factory=list)
    #: sub-graph tensor -> index of the If output it is computed into
    direct: dict[str, int] = field(default_factory=dict)
    #: sub-graph initializers read at run time (or returned), bound as static arrays
    consts: list[str] = field(default_factory=list)
    #: sub-graph compile-time value tensors read at run time (or returned)
    values: list[str] = field(default_factory=list)

    def workspace(self) -> list[tuple[DType, DimLike]]:
        return [(dt, n) for _, dt, n in self.buffers] + [(dt, n) for _, _, dt, n in self.node_ws]


def _sub_views(g: Graph, where: str) -> list[tuple[NodeView, Operator]]:
    out = []
    for node in g.nodes:
        op = lookup(node.domain, node.op_type)
        if op is None:  # the frontend rejects these before; a hand-built Graph may not
            raise ValueError(f"{where}: operator {node.op_type!r} is not supported")
        ins = [g.info(i) if i else None for i in node.inputs]
        consts = [g.initializers.get(i) if i else None for i in node.inputs]
        outs = [g.info(o) if o else None for o in node.outputs]
        out.append((NodeView(node, ins, consts, outs), op))
    return out


def _plan(v: NodeView, g: Graph) -> _Branch:
    from ..ir.graph import subgraph_reads

    b = _Branch(g, _sub_views(g, v.label))
    produced = {o for n in g.nodes for o in n.outputs if o}
    for i, name in enumerate(g.outputs):
        if (name in produced and name not in b.direct and i < len(v.node.outputs) and v.node.outputs[i]):
            b.direct[name] = i
    reads: set[str] = set(g.outputs)
    for k, (view, op) in enumerate(b.views):
        for j, name in enumerate(view.node.inputs):
            if name and j not in op.static_inputs:
                reads.add(name)
        reads |= subgraph_reads(view.node)
        for o in view.node.outputs:
            if o and o not in b.direct:
                info = g.info(o)
                b.buffers.append((o, info.dtype, info.size))
        for j, (dt, n) in enumerate(op.workspace(view)):
            b.node_ws.append((k, j, dt, n))
    b.consts = [n for n in g.initializers if n in reads]
    b.values = [n for n in g.value_tensors() if n in reads]
    return b


class _Scope:
    """What :class:`~sofie_root.codegen.emitter.NodeEmitter` reads from the code generator
    (``var``, ``graph``, ``dim``), for the nodes of a sub-graph: the branch's own names shadow the
    enclosing scope, whose pointer names stay visible (outer-scope reads)."""

    def __init__(self, parent, graph: Graph, local: dict[str, str], prefix: str):
        self._parent = parent
        self.graph = graph
        self.var = ChainMap(local, parent.var)
        self.prefix = prefix
        self.symbols = getattr(parent, "symbols", [])
        self.sym_var = getattr(parent, "sym_var", {})

    def dim(self, d: DimLike) -> str:
        return self._parent.dim(d)


@register
class If(Operator):
    """ONNX If: both branches inlined under a run-time condition (or the taken one if constant)."""

    op_type = "If"

    def _const_cond(self, v: NodeView) -> bool | None:
        c = v.const(0)
        if c is not None and c.size >= 1:
            return bool(np.asarray(c).reshape(-1)[0])
        kv = v.known_value(0)
        if kv is not None and len(kv) >= 1 and isinstance(kv[0], int):
            return bool(kv[0])
        return None

    def _branches(self, v: NodeView) -> list[tuple[str, Graph]]:
        """(C++ guard, graph) of each branch to emit: both, or the taken one for a constant condition."""
        then_g, else_g = v.attr("then_branch"), v.attr("else_branch")
        c = self._const_cond(v)
        if c is None:
            return [("then", then_g), ("else", else_g)]
        return [("only", then_g if c else else_g)]

    def check(self, v: NodeView) -> str | None:
        then_g, else_g = v.attr("then_branch"), v.attr("else_branch")
        if not isinstance(then_g, Graph) or not isinstance(else_g, Graph):
            return "then_branch and else_branch must both be graphs"
        cond = v.input(0)
        if cond.dtype.name != "bool":
            return f"the condition must be bool, got {cond.dtype.name}"
        if not (isinstance(cond.size, int) and cond.size == 1):
            return f"the condition must have exactly one element, got shape {cond}"
        n_out = len(v.node.outputs)
        for name, g in (("then_branch", then_g), ("else_branch", else_g)):
            if g.inputs:
                return f"{name} declares inputs ({', '.join(g.inputs)}); If branches take none"
            if len(g.outputs) != n_out:
                return f"{name} has {len(g.outputs)} outputs but the node has {n_out}"
        if self._const_cond(v) is None:
            for k, (a, b) in enumerate(zip(then_g.outputs, else_g.outputs)):
                ia, ib = then_g.info(a), else_g.info(b)
                if ia.dtype != ib.dtype:
                    return (f"output {k} has element type {ia.dtype.name} in then_branch but "
                            f"{ib.dtype.name} in else_branch")
                if tuple(ia.shape) != tuple(ib.shape):
                    return (f"output {k} has shape {ia} in then_branch but {ib} in else_branch; branches "
                            "producing different shapes are only supported when the condition is a "
                            "compile-time constant")
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        (_, g), *_ = self._branches(v)
        return [OutInfo(g.info(o).dtype, g.info(o).shape) for o in g.outputs]

    def propagate(self, v: NodeView, outs: list[OutInfo]):
        """With a constant condition, small integer outputs of the taken branch known at compile
        time (constants, folded shape computations) are known values of the If outputs."""
        if self._const_cond(v) is None:
            return [None] * len(outs)
        (_, g), = self._branches(v)
        vals: list[tuple[DimLike, ...] | None] = []
        for o in g.outputs:
            arr = g.initializers.get(o)
            if arr is not None and arr.dtype.kind in "iu" and arr.size <= _MAX_VALUE_SIZE:
                vals.append(tuple(int(x) for x in arr.reshape(-1)))
            else:
                vals.append(g.info(o).value)
        return vals

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        out: list[tuple[DType, DimLike]] = []
        for _, g in self._branches(v):
            out += _plan(v, g).workspace()
        return out

    # -- code ----------------------------------------------------------------------------------
    def emit(self, v: NodeView, e) -> str:
        parent = e._m  # the code generator's state (names in scope, dimension expressions)
        base = getattr(parent, "prefix", "") + f"if{e.index}_"
        ws_index = 0
        blocks: dict[str, list[str]] = {}
        for kind, g in self._branches(v):
            plan = _plan(v, g)
            lines, ws_index = self._emit_branch(v, e, parent, plan, f"{base}{kind[0]}_", ws_index)
            blocks[kind] = lines
        if "only" in blocks:
            return "\n".join(["// condition known at compile time: only the taken branch", "{"]
                             + ["   " + ln for ln in blocks["only"]] + ["}"])
        out = [f"if ({e.inp(0)}[0]) {{"]
        out += ["   " + ln for ln in blocks["then"]]
        out.append("} else {")
        out += ["   " + ln for ln in blocks["else"]]
        out.append("}")
        return "\n".join(out)

    def _emit_branch(self, v: NodeView, e, parent, plan: _Branch, prefix: str, ws_index: int):
        from ..codegen.emitter import NodeEmitter, _ws_name
        from ..codegen.names import comment, identifier

        g = plan.graph
        local: dict[str, str] = {}
        lines: list[str] = []
        counter = 0

        def fresh(name: str, kind: str) -> str:
            nonlocal counter
            counter += 1
            return identifier(prefix + kind, counter, name)

        for name, i in plan.direct.items():
            local[name] = e.out(i)
        for name, dt, _ in plan.buffers:
            var = fresh(name, "v")
            local[name] = var
            lines.append(f"{dt.cpp} *const {var} = {e.ws(ws_index)};  // {comment(name)}")
            ws_index += 1
        for k, j, dt, _ in plan.node_ws:
            var = fresh(f"ws{k}_{j}", "w")
            local[_ws_name(k, j)] = var
            lines.append(f"{dt.cpp} *const {var} = {e.ws(ws_index)};")
            ws_index += 1
        for name in plan.consts:
            arr = np.asarray(g.initializers[name])
            info = g.info(name)
            var = fresh(name, "c")
            local[name] = var
            vals = ", ".join(e.lit(x.item(), info.dtype) for x in arr.reshape(-1))
            lines.append(f"static const {info.dtype.cpp} {var}[{max(1, arr.size)}] = {{{vals}}};"
                         f"  // {comment(name)}")
        for name in plan.values:
            info = g.info(name)
            var = fresh(name, "k")
            local[name] = var
            vals = ", ".join(f"{info.dtype.cpp}({e.dim(d)})" for d in info.value)
            lines.append(f"const {info.dtype.cpp} {var}[{max(1, len(info.value))}] = {{{vals}}};"
                         f"  // {comment(name)}")
        scope = _Scope(parent, g, local, prefix)
        for k, (view, op) in enumerate(plan.views):
            sub = NodeEmitter(scope, view, k)
            code = op.emit(view, sub)
            lines.append(f"{{ // {comment(view.label)}")
            lines.extend("   " + ln if ln else "" for ln in code.splitlines())
            lines.append("}")
        # branch outputs not computed in place
        for i, name in enumerate(g.outputs):
            if plan.direct.get(name) == i or i >= len(v.node.outputs) or not v.node.outputs[i]:
                continue
            info = g.info(name)
            src = scope.var[name]
            lines.append(f"std::memcpy({e.out(i)}, {src}, std::size_t({e.dim(info.size)}) * sizeof({info.dtype.cpp}));"
                         f"  // {comment(name)}")
        return lines, ws_index
