"""Control flow: If, Loop and Scan, their sub-graphs emitted inline in the parent's code.

Sub-graphs (IR graphs converted by the frontend, which may read tensors of the enclosing graphs)
are laid out by :func:`_plan` and emitted by :func:`_emit_body`: their intermediates and the
scratch buffers of their nodes are workspace buffers of the control-flow node, so the parent's
arena plan covers them and nothing is allocated at run time, whatever the number of iterations.
Constants defined inside a sub-graph become ``static const`` arrays (values written with
``NodeEmitter.lit``). Enclosing-graph tensors read inside a sub-graph count as reads of the node in
the parent's lifetime analysis (``codegen.emitter.subgraph_reads``).

* **If**: both branches inside ``if (cond[0]) { ... } else { ... }``; with a compile-time constant
  condition only the taken branch. A branch node producing a branch output writes straight into
  the If output; other branch outputs (outer tensors, constants, a name returned twice) are copied.
  Branches of a run-time If may disagree on dimensions (not rank): each such dimension is a
  data-dependent size set by the taken branch, memory planned for the larger. One-element
  outputs of different ranks (scalar against ``[1]``, the exporters' ``and``/``or``) take the
  larger rank. Other rank mismatches are refused.
* **Loop**: a C++ ``for`` with the run-time trip count and condition. Loop-carried values must
  keep their shape; they live in the node's outputs (or the arena) and each iteration copies the
  body's new values into them (through a temporary when one state becomes another: a swap).
  Scan outputs are written in place at ``iteration * slice``; their length is the trip count when
  the loop cannot stop early, else a data-dependent size bounded by the trip count (so the trip
  count must be known at compile time, possibly symbolically; a graph input is specialised on;
  a loop with scan outputs and no bound is refused with that reason).
* **Scan**: a C++ ``for`` over the scan axis (either direction); slices along the leading axis are
  read and written in place, others gathered into (scattered from) workspace buffers.
"""

from __future__ import annotations

import re
from collections import ChainMap
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..codegen.names import comment
from ..errors import ShapeInferenceError
from ..ir.dims import Dim, DimLike, Shape
from ..ir.dtypes import BOOL, INT64, DType
from ..ir.graph import Graph
from .base import NodeView, Operator, OutInfo, lookup, register

#: largest constant branch output whose values are propagated as compile-time values
_MAX_VALUE_SIZE = 64


@dataclass
class _Branch:
    """How one sub-graph is laid out: its nodes, the buffers it needs, what it writes directly."""

    graph: Graph
    views: list[tuple[NodeView, Operator]]
    #: sub-graph tensors computed into a workspace buffer: (name, dtype, element count)
    buffers: list[tuple[str, DType, DimLike]] = field(default_factory=list)
    #: workspace buffers of the sub-graph nodes: (node index, k, dtype, element count)
    node_ws: list[tuple[int, int, DType, DimLike]] = field(default_factory=list)
    #: sub-graph tensors the caller gives a pointer to write into (If outputs, Loop scan slices)
    direct: set[str] = field(default_factory=set)
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
        view = NodeView(node, ins, consts, outs)
        if op.data_dependent(view):
            raise ShapeInferenceError(f"{where}: {node.label} inside a sub-graph has an output whose size is "
                                      "only known at run time (not supported inside If, Loop or Scan bodies)")
        out.append((view, op))
    return out


def _plan(where: str, g: Graph, direct: Iterable[str] = ()) -> _Branch:
    """The layout of sub-graph ``g``; the names in ``direct`` (produced by its nodes) are written
    into pointers the caller binds, every other node output gets a workspace buffer."""
    from ..ir.graph import subgraph_reads

    b = _Branch(g, _sub_views(g, where))
    produced = {o for n in g.nodes for o in n.outputs if o}
    b.direct = {name for name in direct if name in produced}
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
    (``var``, ``graph``, ``dim``), for the nodes of a sub-graph: the sub-graph's own names shadow
    the enclosing scope, whose pointer names stay visible (outer-scope reads)."""

    def __init__(self, parent, graph: Graph, local: dict[str, str], prefix: str):
        self._parent = parent
        self.graph = graph
        self.var = ChainMap(local, parent.var)
        self.prefix = prefix
        self.symbols = getattr(parent, "symbols", [])
        self.sym_var = getattr(parent, "sym_var", {})

    def dim(self, d: DimLike) -> str:
        return self._parent.dim(d)


def _emit_body(e, plan: _Branch, prefix: str, ws_index: int, bind: dict[str, str]) -> tuple[list[str], int, _Scope]:
    """C++ statements running the nodes of ``plan.graph``.

    ``bind`` gives the pointer expression of each sub-graph input and of each name in
    ``plan.direct``; workspace buffers are taken from the node's workspace starting at
    ``ws_index`` (in the order of :meth:`_Branch.workspace`). Returns the statements, the next
    workspace index and the scope (``scope.var[name]``: the pointer holding each sub-graph tensor).
    """
    from ..codegen.emitter import NodeEmitter, _ws_name
    from ..codegen.names import comment, identifier

    parent = e._m  # the code generator's state (names in scope, dimension expressions)
    g = plan.graph
    local: dict[str, str] = dict(bind)
    lines: list[str] = []
    counter = 0

    def fresh(name: str, kind: str) -> str:
        nonlocal counter
        counter += 1
        return identifier(prefix + kind, counter, name)

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
    return lines, ws_index, scope


def _copy(e, dst: str, src: str, info) -> str:
    return f"std::memcpy({dst}, {src}, std::size_t({e.dim(info.size)}) * sizeof({info.dtype.cpp}));"


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
                if (ia.is_sequence or ib.is_sequence or ia.optional is not None or ib.optional is not None) and (
                        ia.elements != ib.elements or ia.optional != ib.optional or ia.shape != ib.shape):
                    return (f"output {k} is {ia} in then_branch but {ib} in else_branch; sequences and "
                            "optionals returned by a run-time If must agree in length, element shapes and presence")
                if ia.rank != ib.rank and not (ia.size == 1 and ib.size == 1):
                    return (f"output {k} has shape {ia} in then_branch but {ib} in else_branch; with a "
                            "run-time condition the branches must agree in rank (or both give one element)")
        return None

    @staticmethod
    def _symbol(v: NodeView, k: int, axis: int) -> str:
        return f"if_{re.sub(r'[^A-Za-z0-9_]', '_', v.node.outputs[k] or 'out')}_{k}_{axis}"

    def _merged(self, v: NodeView) -> list[tuple[DType, Shape, dict[str, tuple[DimLike, DimLike]]]]:
        """With a run-time condition: per output, the dtype, the shape (a dimension on which the
        branches disagree becomes a data-dependent symbol the taken branch sets) and those symbols
        with the then- and else-branch values. One-element outputs of different ranks (scalar
        against [1], exporters' ``and``/``or``) take the larger rank, all ones."""
        then_g, else_g = v.attr("then_branch"), v.attr("else_branch")
        out = []
        for k, (a, b) in enumerate(zip(then_g.outputs, else_g.outputs)):
            ia, ib = then_g.info(a), else_g.info(b)
            if ia.rank != ib.rank:
                out.append((ia.dtype, (1,) * max(ia.rank, ib.rank), {}))
                continue
            shape: list[DimLike] = []
            syms: dict[str, tuple[DimLike, DimLike]] = {}
            for axis, (da, db) in enumerate(zip(ia.shape, ib.shape)):
                if da == db:
                    shape.append(da)
                else:
                    sym = self._symbol(v, k, axis)
                    syms[sym] = (da, db)
                    shape.append(Dim.symbol(sym))
            out.append((ia.dtype, tuple(shape), syms))
        return out
    def infer(self, v: NodeView) -> list[OutInfo]:
        (_, g), *_ = self._branches(v)
        # sequences and optionals keep their type (check: the same in both branches)
        kinds = [(g.info(o).elements, g.info(o).optional) for o in g.outputs]
        if self._const_cond(v) is None:
            return [OutInfo(dt, shape, elements=el, optional=opt)
                    for (dt, shape, _), (el, opt) in zip(self._merged(v), kinds)]
        return [OutInfo(g.info(o).dtype, g.info(o).shape, elements=el, optional=opt)
                for o, (el, opt) in zip(g.outputs, kinds)]

    def data_dependent(self, v: NodeView) -> dict[str, DimLike]:
        """Dimensions on which the branches disagree: bounded by the larger (for symbolic
        dimensions, their sum, which is never smaller)."""
        if self._const_cond(v) is None:
            out: dict[str, DimLike] = {}
            for k, (_, _, syms) in enumerate(self._merged(v)):
                if k < len(v.node.outputs) and v.node.outputs[k]:
                    for sym, (da, db) in syms.items():
                        out[sym] = max(da, db) if isinstance(da, int) and isinstance(db, int) else da + db
            return out
        return {}

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
            out += self._plan(v, g).workspace()
        return out

    @staticmethod
    def _plan(v: NodeView, g: Graph) -> _Branch:
        """Branch outputs computed by a branch node are written straight into the If outputs."""
        return _plan(v.label, g, [name for i, name in enumerate(g.outputs)
                                  if i < len(v.node.outputs) and v.node.outputs[i]])

    # -- code ----------------------------------------------------------------------------------
    def emit(self, v: NodeView, e) -> str:
        base = getattr(e._m, "prefix", "") + f"if{e.index}_"
        ws_index = 0
        blocks: dict[str, list[str]] = {}
        for kind, g in self._branches(v):
            plan = self._plan(v, g)
            bind: dict[str, str] = {}
            for i, name in enumerate(g.outputs):
                if name in plan.direct and name not in bind:
                    bind[name] = e.out(i)
            lines, ws_index, scope = _emit_body(e, plan, f"{base}{kind[0]}_", ws_index, bind)
            if kind != "only":  # the taken branch sets the dimensions the branches disagree on
                for k, (_, _, syms) in enumerate(self._merged(v)):
                    if k < len(v.node.outputs) and v.node.outputs[k]:
                        for sym, dims in syms.items():
                            lines.append(f"{e.dim(Dim.symbol(sym))} = {e.dim(dims[0 if kind == 'then' else 1])};")
            # branch outputs not computed in place (outer tensors, constants, repeated names)
            for i, name in enumerate(g.outputs):
                if i >= len(v.node.outputs) or not v.node.outputs[i] or bind.get(name) == e.out(i):
                    continue
                lines.append(_copy(e, e.out(i), scope.var[name], g.info(name)) + f"  // {comment(name)}")
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


# -- Loop ------------------------------------------------------------------------------------------

#: a trip count this large is no bound at all (exporters write INT64_MAX for while loops)
_NO_BOUND = 2**31


def _source(g: Graph, name: str) -> str:
    """The tensor ``name`` is a copy of, following Identity nodes inside ``g``."""
    prod = g.producers()
    while name in prod and prod[name].op_type == "Identity" and prod[name].inputs:
        name = prod[name].inputs[0]
    return name


def _true_const(g: Graph, name: str) -> bool:
    arr = g.initializers.get(name)
    return arr is not None and arr.size == 1 and bool(arr.reshape(-1)[0])


@register
class Loop(Operator):
    """ONNX Loop: the body runs in place in a C++ ``for`` loop, with a run-time trip count and
    condition. Loop-carried values keep their shape (the state lives in the node's outputs or in
    the arena; each iteration copies the body's results into it). Scan outputs are written
    straight into the node's outputs; their length is the trip count when the loop cannot stop
    early, otherwise a data-dependent size bounded by the trip count (memory is planned for the
    bound, the actual length is returned after the run)."""

    op_type = "Loop"

    @staticmethod
    def _counts(v: NodeView) -> tuple[Graph, int, int]:
        body = v.attr("body")
        n_carried = max(0, len(v.node.inputs) - 2)
        return body, n_carried, len(body.outputs) - 1 - n_carried

    @staticmethod
    def _symbol(v: NodeView) -> str:
        first = next((o for o in v.node.outputs if o), v.node.name or "loop")
        return "iters_" + re.sub(r"[^A-Za-z0-9_]", "_", first)

    def body_inputs(self, v: NodeView, attr: str) -> list[tuple[DType, Shape]] | None:
        if attr != "body":
            return None
        out: list[tuple[DType, Shape]] = [(INT64, ()), (BOOL, ())]
        for i in range(2, len(v.node.inputs)):
            if not v.has_input(i):
                raise v.fail(f"loop-carried input {i - 2} is missing")
            info = v.input(i)
            out.append((info.dtype, info.shape))
        return out

    def _trip(self, v: NodeView) -> DimLike | None:
        """The trip count if known at compile time (None: run-time or absent)."""
        if not v.has_input(0):
            return None
        kv = v.known_value(0)
        if kv is None or len(kv) != 1:
            return None
        return kv[0]

    def _exact(self, v: NodeView) -> bool:
        """The loop always runs the full trip count: it cannot stop early."""
        body, _, _ = self._counts(v)
        if self._trip(v) is None:
            return False
        if not v.has_input(1):  # ONNX: without a condition input the body's condition is ignored
            return True
        c = v.const(1)
        if c is None or not bool(np.asarray(c).reshape(-1)[0]):
            return False
        src = _source(body, body.outputs[0])
        return src == body.inputs[1] or _true_const(body, src)

    def check(self, v: NodeView) -> str | None:
        body = v.attr("body")
        if not isinstance(body, Graph):
            return "the body must be a graph"
        if len(v.node.inputs) < 2:
            return "Loop takes at least two inputs (M and cond, each possibly empty)"
        _, n, k = self._counts(v)
        if len(body.inputs) != 2 + n:
            return f"the body has {len(body.inputs)} inputs, expected {2 + n} (iteration, condition, {n} carried)"
        if k < 0:
            return f"the body has {len(body.outputs)} outputs, expected at least {1 + n}"
        if len(v.node.outputs) > n + k:
            return f"the node has {len(v.node.outputs)} outputs but the body produces only {n + k}"
        if not v.has_input(0) and not v.has_input(1):
            return "neither a trip count nor a condition is given: the loop would never end"
        if v.has_input(0):
            m = v.input(0)
            if m.dtype != INT64 or m.size != 1:
                return f"the trip count must be one int64, got {m}"
        if v.has_input(1):
            c = v.input(1)
            if c.dtype != BOOL or c.size != 1:
                return f"the condition must be one bool, got {c}"
        co = body.info(body.outputs[0])
        if co.dtype != BOOL or co.size != 1:
            return f"the body's condition output must be one bool, got {co}"
        for j in range(n):
            a, b = v.input(2 + j), body.info(body.outputs[1 + j])
            if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
                return (f"loop-carried value {j} enters as {a} but the body returns {b}; only loop-carried "
                        "values of fixed shape are supported")
        if k and not self._exact(v):
            trip = self._trip(v)
            if not v.has_input(0) or (isinstance(trip, int) and trip >= _NO_BOUND):
                return ("scan outputs need a bound on the number of iterations, and this loop has none "
                        "(no trip count, or one too large to size memory); give the loop a trip count")
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        body, n, k = self._counts(v)
        if k and self._trip(v) is None:
            v.require_value(0, "the trip count (it bounds the length of the scan outputs)")
        outs = [OutInfo(v.input(2 + j).dtype, v.input(2 + j).shape) for j in range(n)]
        if k:
            trip = self._trip(v)
            count: DimLike
            if self._exact(v):
                count = max(0, trip) if isinstance(trip, int) else trip
            else:
                count = Dim.symbol(self._symbol(v))
            for j in range(k):
                info = body.info(body.outputs[1 + n + j])
                outs.append(OutInfo(info.dtype, (count, *info.shape)))
        return outs[:len(v.node.outputs)] if len(v.node.outputs) < len(outs) else outs

    def data_dependent(self, v: NodeView) -> dict[str, DimLike]:
        _, _, k = self._counts(v)
        if not k or self._exact(v):
            return {}
        trip = self._trip(v)
        return {self._symbol(v): max(0, trip) if isinstance(trip, int) else trip}

    def _layout(self, v: NodeView):
        """The body plan and the extra buffers: states without a node output, and temporaries for
        carried values that are another carried input of the body (a swap needs one)."""
        body, n, k = self._counts(v)
        direct = []
        for j in range(k):
            name = body.outputs[1 + n + j]
            if n + j < len(v.node.outputs) and v.node.outputs[n + j] and name not in direct:
                direct.append(name)
        plan = _plan(v.label, body, direct)
        extra: list[tuple[str, int, DType, DimLike]] = []
        for j in range(n):
            info = v.input(2 + j)
            if not (j < len(v.node.outputs) and v.node.outputs[j]):
                extra.append(("state", j, info.dtype, info.size))
            src = body.outputs[1 + j]
            if src in body.inputs[2:] and body.inputs.index(src) != 2 + j:
                extra.append(("swap", j, info.dtype, info.size))
        return plan, extra

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        plan, extra = self._layout(v)
        return plan.workspace() + [(dt, size) for _, _, dt, size in extra]

    def emit(self, v: NodeView, e) -> str:
        body, n, k = self._counts(v)
        plan, extra = self._layout(v)
        base = getattr(e._m, "prefix", "") + f"loop{e.index}_"
        trip, cond, it = f"{base}trip", f"{base}cond", f"{base}it"
        lines = [f"const std::int64_t {trip} = "
                 + (f"{e.inp(0)}[0];" if v.has_input(0) else "std::numeric_limits<std::int64_t>::max();"),
                 f"bool {cond} = " + (f"{e.inp(1)}[0];" if v.has_input(1) else "true;")]
        ws_extra = len(plan.workspace())
        slots = {(kind, j): ws_extra + i for i, (kind, j, _, _) in enumerate(extra)}
        states = []
        for j in range(n):
            info = v.input(2 + j)
            st = f"{base}s{j}"
            ptr = e.out(j) if ("state", j) not in slots else e.ws(slots[("state", j)])
            lines.append(f"{info.dtype.cpp} *const {st} = {ptr};")
            lines.append(_copy(e, st, e.inp(2 + j), info))
            states.append(st)
        lines.append(f"std::int64_t {it} = 0;")
        lines.append(f"for (; {it} < {trip} && {cond}; ++{it}) {{")
        inner = [f"const std::int64_t {base}iv[1] = {{{it}}};", f"const bool {base}cv[1] = {{{cond}}};"]
        bind = {body.inputs[0]: f"{base}iv", body.inputs[1]: f"{base}cv"}
        for j in range(n):
            bind[body.inputs[2 + j]] = states[j]
        scan_ptr = {}
        for j in range(k):
            if not (n + j < len(v.node.outputs) and v.node.outputs[n + j]):
                continue
            info = body.info(body.outputs[1 + n + j])
            p = f"{base}o{j}"
            inner.append(f"{info.dtype.cpp} *const {p} = {e.out(n + j)} + {it} * {e.dim(info.size)};")
            scan_ptr[j] = p
            name = body.outputs[1 + n + j]
            if name in plan.direct and name not in bind:
                bind[name] = p
        code, _, scope = _emit_body(e, plan, base + "b_", 0, bind)
        inner += code
        inner.append(f"const bool {base}next = {scope.var[body.outputs[0]]}[0];")
        # scan slices not written in place, before the state changes (a slice may be a state)
        for j, p in scan_ptr.items():
            name = body.outputs[1 + n + j]
            if bind.get(name) != p:
                inner.append(_copy(e, p, scope.var[name], body.info(name)))
        srcs = []
        for j in range(n):
            name = body.outputs[1 + j]
            src = scope.var[name]
            if ("swap", j) in slots:
                tmp = e.ws(slots[("swap", j)])
                inner.append(_copy(e, tmp, src, v.input(2 + j)))
                src = tmp
            srcs.append(src)
        for j in range(n):
            if srcs[j] != states[j]:
                inner.append(_copy(e, states[j], srcs[j], v.input(2 + j)))
        if v.has_input(1):
            inner.append(f"{cond} = {base}next;")
        else:
            inner.append(f"(void){base}next;")
        lines += ["   " + ln if ln else "" for ln in inner]
        lines.append("}")
        if self.data_dependent(v):
            lines.append(f"{e.dim(Dim.symbol(self._symbol(v)))} = {it};")
        return "\n".join(lines)


# -- Scan ------------------------------------------------------------------------------------------

def _prod(dims) -> DimLike:
    out: DimLike = 1
    for d in dims:
        out = out * d
    return out


@register
class Scan(Operator):
    """ONNX Scan: the body runs in a C++ ``for`` loop over the scan axis of the scan inputs (in
    either direction), carrying state of fixed shape; scan outputs are stacked along their axis.
    Slices along the leading axis are read and written in place; slices along another axis are
    gathered into (scattered from) a workspace buffer. Opset 8 (a batch axis in front of every
    state and scan input) runs the body once per batch entry; its ``sequence_lens`` input is
    supported only when every length is the full sequence."""

    op_type = "Scan"

    @staticmethod
    def _v8(v: NodeView) -> bool:
        return v.opset < 9

    def _split(self, v: NodeView) -> tuple[Graph, int, int, int, int]:
        """(body, first state input, number of states, number of scan inputs, number of scan outputs)."""
        body = v.attr("body")
        m = int(v.attr("num_scan_inputs", 0))
        first = 1 if self._v8(v) else 0
        n = len(v.node.inputs) - first - m
        # before the body is converted (body_inputs) it is not there yet
        return body, first, n, m, (len(body.outputs) - n if isinstance(body, Graph) else 0)

    def _axes(self, v: NodeView, name: str, count: int, rank_of) -> list[int]:
        vals = v.attr(name)
        if vals is None:
            return [0] * count
        if len(vals) != count:
            raise v.fail(f"{name} has {len(vals)} entries, expected {count}")
        out = []
        for k, a in enumerate(vals):
            r = rank_of(k)
            if not -r <= int(a) < r:
                raise v.fail(f"{name}[{k}] = {a} is out of range for rank {r}")
            out.append(int(a) % r)
        return out

    def _dirs(self, v: NodeView, name: str, count: int) -> list[int]:
        vals = v.attr(name)
        if vals is None:
            return [0] * count
        if len(vals) != count or any(int(d) not in (0, 1) for d in vals):
            raise v.fail(f"{name} must hold {count} values, each 0 (forward) or 1 (reverse), got {list(vals)}")
        return [int(d) for d in vals]

    def _in_axes(self, v: NodeView) -> list[int]:
        _, first, n, m, _ = self._split(v)
        if self._v8(v):
            return [1] * m
        return self._axes(v, "scan_input_axes", m, lambda k: v.input(first + n + k).rank)

    def _out_axes(self, v: NodeView) -> list[int]:
        body, _, n, _, k = self._split(v)
        if self._v8(v):
            return [1] * k
        return self._axes(v, "scan_output_axes", k, lambda j: body.info(body.outputs[n + j]).rank + 1)

    def _length(self, v: NodeView) -> DimLike:
        _, first, n, _, _ = self._split(v)
        axes = self._in_axes(v)
        return v.input(first + n).shape[axes[0]]

    def body_inputs(self, v: NodeView, attr: str) -> list[tuple[DType, Shape]] | None:
        if attr != "body":
            return None
        _, first, n, m, _ = self._split(v)
        if m < 1 or n < 0:
            raise v.fail(f"num_scan_inputs = {m} does not fit the {len(v.node.inputs)} inputs")
        lead = 1 if self._v8(v) else 0
        out: list[tuple[DType, Shape]] = []
        for j in range(n):
            info = v.input(first + j)
            if lead and info.rank < 1:
                raise v.fail(f"state {j} has no batch axis")
            out.append((info.dtype, tuple(info.shape[lead:])))
        axes = self._in_axes(v)
        for j in range(m):
            info = v.input(first + n + j)
            if info.rank < 1 + lead:
                raise v.fail(f"scan input {j} has rank {info.rank}, too small to scan")
            shape = list(info.shape)
            del shape[axes[j]]
            out.append((info.dtype, tuple(shape[lead:])))
        return out

    def check(self, v: NodeView) -> str | None:
        body = v.attr("body")
        if not isinstance(body, Graph):
            return "the body must be a graph"
        _, first, n, m, k = self._split(v)
        if len(body.inputs) != n + m:
            return f"the body has {len(body.inputs)} inputs, expected {n + m} ({n} states, {m} scan inputs)"
        if k < 0:
            return f"the body has {len(body.outputs)} outputs, expected at least {n}"
        if len(v.node.outputs) > n + k:
            return f"the node has {len(v.node.outputs)} outputs but the body produces only {n + k}"
        lead = 1 if self._v8(v) else 0
        for j in range(n):
            a, b = v.input(first + j), body.info(body.outputs[j])
            if a.dtype != b.dtype or tuple(a.shape[lead:]) != tuple(b.shape):
                return f"state {j} enters as {a} but the body returns {b}; states must keep their shape"
        axes = self._in_axes(v)
        length = self._length(v)
        for j in range(m):
            d = v.input(first + n + j).shape[axes[j]]
            if d != length:
                return f"scan input {j} has {d} steps along its axis, scan input 0 has {length}"
        if lead:
            batch = v.input(first + n).shape[0]
            for j in range(n + m):
                if v.input(first + j).shape[0] != batch:
                    return f"input {first + j} has batch {v.input(first + j).shape[0]}, expected {batch}"
            if v.has_input(0):
                c = v.const(0)
                if c is None or not all(isinstance(length, int) and int(x) == length for x in c.reshape(-1)):
                    return "sequence_lens shorter than the sequence are not supported"
        self._dirs(v, "directions" if lead else "scan_input_directions", m)
        if not lead:
            self._dirs(v, "scan_output_directions", k)
        self._out_axes(v)
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        body, first, n, _, k = self._split(v)
        outs = [OutInfo(v.input(first + j).dtype, v.input(first + j).shape) for j in range(n)]
        length = self._length(v)
        out_axes = self._out_axes(v)
        for j in range(k):
            info = body.info(body.outputs[n + j])
            shape = list(info.shape)
            if self._v8(v):
                shape = [v.input(first + n).shape[0], length, *shape]
            else:
                shape.insert(out_axes[j], length)
            outs.append(OutInfo(info.dtype, tuple(shape)))
        return outs[:len(v.node.outputs)]

    def _layout(self, v: NodeView):
        body, first, n, m, k = self._split(v)
        lead = 1 if self._v8(v) else 0
        out_axes = self._out_axes(v)
        direct = []
        for j in range(k):
            name = body.outputs[n + j]
            outer = 1 if lead else _prod(body.info(name).shape[:out_axes[j]])
            if (n + j < len(v.node.outputs) and v.node.outputs[n + j] and outer == 1 and name not in direct):
                direct.append(name)
        plan = _plan(v.label, body, direct)
        extra: list[tuple[str, int, DType, DimLike]] = []
        for j in range(n):
            info = v.input(first + j)
            size = body.info(body.inputs[j]).size
            if not (j < len(v.node.outputs) and v.node.outputs[j]):
                extra.append(("state", j, info.dtype, info.size))
            src = body.outputs[j]
            if src in body.inputs[:n] and body.inputs.index(src) != j:
                extra.append(("swap", j, info.dtype, size))
        in_axes = self._in_axes(v)
        for j in range(m):
            info = v.input(first + n + j)
            if not lead and _prod(info.shape[:in_axes[j]]) != 1:
                extra.append(("gather", j, info.dtype, body.info(body.inputs[n + j]).size))
        return plan, extra

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        plan, extra = self._layout(v)
        return plan.workspace() + [(dt, size) for _, _, dt, size in extra]

    def emit(self, v: NodeView, e) -> str:
        body, first, n, m, k = self._split(v)
        lead = self._v8(v)
        plan, extra = self._layout(v)
        base = getattr(e._m, "prefix", "") + f"scan{e.index}_"
        ws_extra = len(plan.workspace())
        slots = {(kind, j): ws_extra + i for i, (kind, j, _, _) in enumerate(extra)}
        in_dirs = self._dirs(v, "directions" if lead else "scan_input_directions", m)
        out_dirs = [0] * k if lead else self._dirs(v, "scan_output_directions", k)
        in_axes, out_axes = self._in_axes(v), self._out_axes(v)
        length = e.dim(self._length(v))
        b, t = f"{base}b", f"{base}t"
        lines = []
        states = []
        for j in range(n):
            info = v.input(first + j)
            st = f"{base}s{j}"
            ptr = e.out(j) if ("state", j) not in slots else e.ws(slots[("state", j)])
            lines.append(f"{info.dtype.cpp} *const {st} = {ptr};")
            lines.append(_copy(e, st, e.inp(first + j), info))
            states.append(st)
        batch = e.dim(v.input(first + n).shape[0]) if lead else "1"
        lines.append(f"for (std::int64_t {b} = 0; {b} < {batch}; ++{b}) {{")
        lines.append(f"for (std::int64_t {t} = 0; {t} < {length}; ++{t}) {{")
        inner: list[str] = []
        bind: dict[str, str] = {}
        cur = []
        for j in range(n):
            size = e.dim(body.info(body.inputs[j]).size)
            p = f"{base}c{j}"
            inner.append(f"{v.input(first + j).dtype.cpp} *const {p} = {states[j]} + {b} * {size};")
            bind[body.inputs[j]] = p
            cur.append(p)
        for j in range(m):
            info = v.input(first + n + j)
            slice_info = body.info(body.inputs[n + j])
            idx = f"({length} - 1 - {t})" if in_dirs[j] else t
            inner_n = e.dim(slice_info.size)
            p = f"{base}x{j}"
            if lead:
                inner.append(f"const {info.dtype.cpp} *const {p} = {e.inp(first + n + j)} + ({b} * {length} + {idx}) * {inner_n};")
            elif ("gather", j) not in slots:
                inner.append(f"const {info.dtype.cpp} *const {p} = {e.inp(first + n + j)} + {idx} * {inner_n};")
            else:
                outer = e.dim(_prod(info.shape[:in_axes[j]]))
                rest = e.dim(_prod(info.shape[in_axes[j] + 1:]))
                o = f"{base}g{j}"
                inner.append(f"{info.dtype.cpp} *const {p} = {e.ws(slots[('gather', j)])};")
                inner.append(f"for (std::int64_t {o} = 0; {o} < {outer}; ++{o})")
                inner.append(f"   std::memcpy({p} + {o} * {rest}, {e.inp(first + n + j)} + ({o} * {length} + {idx}) * {rest}, "
                             f"std::size_t({rest}) * sizeof({info.dtype.cpp}));")
            bind[body.inputs[n + j]] = p
        scatter: list[tuple[int, str, str]] = []
        for j in range(k):
            if not (n + j < len(v.node.outputs) and v.node.outputs[n + j]):
                continue
            name = body.outputs[n + j]
            info = body.info(name)
            idx = f"({length} - 1 - {t})" if out_dirs[j] else t
            outer_d = 1 if lead else _prod(info.shape[:out_axes[j]])
            if outer_d == 1:
                p = f"{base}o{j}"
                off = f"({b} * {length} + {idx})" if lead else idx
                inner.append(f"{info.dtype.cpp} *const {p} = {e.out(n + j)} + {off} * {e.dim(info.size)};")
                if name in plan.direct and name not in bind:
                    bind[name] = p
                else:
                    scatter.append((j, p, ""))
            else:
                scatter.append((j, "", idx))
        code, _, scope = _emit_body(e, plan, base + "b_", 0, bind)
        inner += code
        for j, p, idx in scatter:  # before the states change: a scan output may be a state
            name = body.outputs[n + j]
            info = body.info(name)
            if p:
                inner.append(_copy(e, p, scope.var[name], info))
                continue
            outer = e.dim(_prod(info.shape[:out_axes[j]]))
            rest = e.dim(_prod(info.shape[out_axes[j]:]))
            o = f"{base}q{j}"
            inner.append(f"for (std::int64_t {o} = 0; {o} < {outer}; ++{o})")
            inner.append(f"   std::memcpy({e.out(n + j)} + ({o} * {length} + {idx}) * {rest}, {scope.var[name]} + {o} * {rest}, "
                         f"std::size_t({rest}) * sizeof({info.dtype.cpp}));")
        srcs = []
        for j in range(n):
            src = scope.var[body.outputs[j]]
            if ("swap", j) in slots:
                tmp = e.ws(slots[("swap", j)])
                inner.append(_copy(e, tmp, src, body.info(body.inputs[j])))
                src = tmp
            srcs.append(src)
        for j in range(n):
            if srcs[j] != cur[j]:
                inner.append(_copy(e, cur[j], srcs[j], body.info(body.inputs[j])))
        lines += ["   " + ln if ln else "" for ln in inner]
        lines += ["}", "}"]
        return "\n".join(lines)
