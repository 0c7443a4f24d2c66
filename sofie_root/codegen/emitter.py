"""C++ generation: turns a validated, optimised IR graph into the source of one namespace.

:class:`NodeEmitter` is the toolbox operators use in ``emit`` (pointers of inputs and outputs,
dimension expressions, literals, broadcast loops). :func:`generate` walks the graph, plans the
arena, lays out the weight blob and fills the skeleton in :mod:`sofie_root.codegen.template`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import __version__, limits
from ..errors import InputError, InvalidGraphError, ShapeInferenceError, SofieError, UnsupportedOperatorError
from ..ir.dims import Dim, DimLike, numel
from ..ir.dtypes import DType
from ..ir.graph import Graph, TensorInfo, subgraph_reads
from ..ops.base import NodeView, Operator, lookup
from . import memory
from .names import comment, identifier
from .template import MODEL

RUNTIME_HEADER = "runtime.hxx"

#: nodes per member function of the generated Session when a graph is longer (see generate)
PART_NODES = 64

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class WeightSlot:
    name: str
    offset: int
    nbytes: int


@dataclass
class Generated:
    """The result of code generation."""

    namespace: str
    source: str
    weights: list[WeightSlot]
    weight_bytes: int
    symbols: list[str]
    #: the arena layout (offsets of intermediates and workspaces, see sofie_root.codegen.memory)
    arena: memory.Plan | None = None
    #: data-dependent symbols (values returned by run after the input symbols) and their bounds
    data_symbols: dict[str, DimLike] = field(default_factory=dict)
    #: C++ pointer variable of every tensor and workspace in the arena
    arena_vars: dict[str, str] = field(default_factory=dict)

    def memory_stats(self, symbols: Mapping[str, int]) -> dict[str, int]:
        """Arena, intermediate and liveness-bound bytes (and weight bytes) for the given values
        of the input symbols (``{"N": 256}``); see :meth:`sofie_root.Model.memory_stats`."""
        unknown = sorted(set(symbols) - set(self.symbols))
        if unknown:
            raise InputError(f"memory_stats: unknown symbols {unknown}; the model's symbols are {self.symbols}")
        missing = [s for s in self.symbols if s not in symbols]
        if missing:
            raise InputError(f"memory_stats: give a value for each of the model's symbols {missing}, "
                             "e.g. memory_stats(N=1)")
        values = {}
        for s, v in symbols.items():
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise InputError(f"memory_stats: symbol {s} must be a non-negative integer, got {v!r}")
            values[s] = int(v)
        stats = self.arena.stats(values, workspace=_is_ws) if self.arena else {}
        stats["weight_bytes"] = self.weight_bytes
        return stats

    def weight_blob(self, graph: Graph) -> np.ndarray:
        blob = np.zeros(self.weight_bytes, dtype=np.uint8)
        for slot in self.weights:
            arr = np.require(graph.initializers[slot.name], requirements="C")
            blob[slot.offset:slot.offset + slot.nbytes] = arr.reshape(-1).view(np.uint8)
        return blob


def cpp_literal(value: float | int | bool, dtype: DType) -> str:
    """A C++ literal of ``dtype`` for a Python scalar (inf and nan included)."""
    if dtype.name == "bool":
        return "true" if value else "false"
    if dtype.is_float:
        v = float(value)
        t = dtype.cpp
        if math.isnan(v):
            return f"std::numeric_limits<{t}>::quiet_NaN()"
        if math.isinf(v):
            return f"{'-' if v < 0 else ''}std::numeric_limits<{t}>::infinity()"
        if dtype.name == "float32":
            v = float(np.float32(v))
            return f"{v!r}f" if ("e" in repr(v) or "." in repr(v)) else f"{v!r}.f"
        return repr(v)
    v = int(value)
    if dtype.name == "int64":
        if v == -(2**63):
            return "std::numeric_limits<std::int64_t>::min()"
        return f"std::int64_t({v}LL)"
    if dtype.name == "uint64":
        return f"std::uint64_t({v}ULL)"
    return f"{dtype.cpp}({v})"


class NodeEmitter:
    """Helpers given to ``Operator.emit`` for one node."""

    def __init__(self, model: _ModelState, view: NodeView, index: int):
        self._m = model
        self.view = view
        self.index = index
        self._tmp = 0

    # -- names ---------------------------------------------------------------------------------
    def inp(self, i: int) -> str:
        """C++ pointer of input ``i`` (``const T*`` for graph inputs and weights)."""
        return self._m.var[self.view.node.inputs[i]]

    def out(self, i: int = 0) -> str:
        return self._m.var[self.view.node.outputs[i]]

    def ws(self, k: int = 0) -> str:
        """Pointer to workspace buffer ``k`` declared by ``Operator.workspace``."""
        return self._m.var[_ws_name(self.index, k)]

    def tmp(self, prefix: str = "v") -> str:
        self._tmp += 1
        return f"{prefix}{self._tmp}_"

    def dim(self, d: DimLike) -> str:
        return self._m.dim(d)

    def size_in(self, i: int) -> str:
        return self.dim(self.view.input(i).size)

    def size_out(self, i: int = 0) -> str:
        return self.dim(self._out_info(i).size)

    def _out_info(self, i: int) -> TensorInfo:
        return self._m.graph.info(self.view.node.outputs[i])

    def out_info(self, i: int = 0) -> TensorInfo:
        return self._out_info(i)

    @staticmethod
    def ctype(dtype: DType) -> str:
        return dtype.cpp

    @staticmethod
    def lit(value: float | int | bool, dtype: DType) -> str:
        return cpp_literal(value, dtype)

    def fail(self, what: str) -> str:
        """A C++ statement throwing a runtime error that names this node."""
        msg = comment(f"{self.view.label}: {what}", 200).replace('"', "'")
        return f'throw std::runtime_error("{msg}");'

    # -- loops ---------------------------------------------------------------------------------
    def broadcast(self, out: int, ins: Sequence[int], expr: Callable[[list[str]], str],
                  out_expr: Callable[[str], str] | None = None) -> str:
        """Element-wise loop over output ``out`` reading inputs ``ins`` with ONNX broadcasting.

        ``expr`` receives the C++ element expressions of the inputs (``a[ia]``) and returns the
        value to store. Dimensions that broadcast the same way are merged, so the common cases
        (same shape, scalar, bias along the last axis) become one or two flat loops.
        """
        out_info = self._out_info(out)
        shapes = [self.view.input(i).shape for i in ins]
        ptrs = [self.inp(i) for i in ins]
        return self.broadcast_raw(self.out(out), out_info.shape, ptrs, shapes, expr)

    def broadcast_raw(self, out_ptr: str, out_shape: Sequence[DimLike], ptrs: Sequence[str],
                      shapes: Sequence[Sequence[DimLike]], expr: Callable[[list[str]], str]) -> str:
        rank = len(out_shape)
        aligned = [[1] * (rank - len(s)) + list(s) for s in shapes]
        # per input and axis: 0 = broadcast (size 1), 1 = follows the output, and for a symbolic
        # input dimension that differs from the output's ("N" against 3), a marker: it must be
        # 1 or equal at run time, which is checked, and its stride is chosen at run time
        pre: list[str] = []
        marks: list[list[object]] = []
        for k, a in enumerate(aligned):
            row: list[object] = []
            for ax, d in enumerate(a):
                if isinstance(d, int) and d == 1:
                    row.append(0)
                elif isinstance(d, Dim) and d != out_shape[ax]:
                    row.append(("runtime", k, ax))
                    od = self.dim(out_shape[ax])
                    pre.append(f"if (!({self.dim(d)} == 1 || {self.dim(d)} == {od})) "
                               + self.fail(f"input {k} cannot be broadcast along axis {ax}"))
                else:
                    row.append(1)
            marks.append(row)
        # merge adjacent axes with the same pattern (never axes decided at run time)
        groups: list[list[int]] = []
        pats: list[tuple[object, ...]] = []
        for ax in range(rank):
            d = out_shape[ax]
            if isinstance(d, int) and d == 1:
                continue
            pat = tuple(m[ax] for m in marks)
            if pats and pats[-1] == pat and not any(isinstance(x, tuple) for x in pat):
                groups[-1].append(ax)
            else:
                groups.append([ax])
                pats.append(pat)
        if not groups:
            return "\n".join([*pre, f"{out_ptr}[0] = {expr([f'{p}[0]' for p in ptrs])};"])
        dims = [numel([out_shape[ax] for ax in g]) for g in groups]
        n = len(groups)
        idx = [self.tmp("i") for _ in range(n)]
        # stride of each input along each merged axis (a C++ expression, or None if broadcast)
        strides: list[list[str | None]] = []
        for k, a in enumerate(aligned):
            st: list[str | None] = [None] * n
            acc: DimLike = 1
            for j in reversed(range(n)):
                mark = pats[j][k]
                if mark == 1:
                    st[j] = self.dim(acc)
                    acc = acc * dims[j]
                elif isinstance(mark, tuple):
                    var = self.tmp("st")
                    d = a[groups[j][0]]
                    pre.append(f"const std::int64_t {var} = {self.dim(d)} == 1 ? 0 : {self.dim(acc)};")
                    st[j] = var
                    acc = acc * d
            strides.append(st)
        def pats_of(k: int) -> list[object]:
            return [pats[j][k] for j in range(n)]

        if n == 1:
            i = idx[0]
            args = [f"{p}[{i}]" if strides[k][0] == "1" else
                    (f"{p}[{i} * {strides[k][0]}]" if strides[k][0] else f"{p}[0]") for k, p in enumerate(ptrs)]
            return "\n".join([*pre, f"for (std::int64_t {i} = 0; {i} < {self.dim(dims[0])}; ++{i})\n"
                               f"   {out_ptr}[{i}] = {expr(args)};"])
        lines = list(pre)
        o = self.tmp("o")
        lines.append(f"std::int64_t {o} = 0;")
        for j in range(n):
            lines.append("   " * j + f"for (std::int64_t {idx[j]} = 0; {idx[j]} < {self.dim(dims[j])}; ++{idx[j]}) {{")
        args = []
        for k, p in enumerate(ptrs):
            if all(m == 1 for m in pats_of(k)):
                # an input of the output's shape is read at the output's own index: with the same
                # index expression the vectoriser sees a distance of 0 when the op runs in place
                # (the output overwrites this input), instead of falling back to scalar code
                args.append(f"{p}[{o}]")
                continue
            terms = [idx[j] if strides[k][j] == "1" else f"{idx[j]} * {strides[k][j]}"
                     for j in range(n) if strides[k][j] is not None]
            args.append(f"{p}[{' + '.join(terms) if terms else '0'}]")
        lines.append("   " * n + f"{out_ptr}[{o}] = {expr(args)};")
        lines.append("   " * n + f"++{o};")
        lines.append("}" * n)
        return "\n".join(lines)


# Hook for control-flow operators (ops/control.py): tensors of the enclosing graph read inside
# a node's sub-graphs (If branches) count as run-time reads of that node, so that weights used only
# inside a branch are bound and intermediates stay alive (in the arena plan) until the node runs.
def _ws_name(node_index: int, k: int) -> str:
    return f"\x00ws{node_index}_{k}"


def _is_ws(name: str) -> bool:
    return name.startswith("\x00ws")


#: graph metadata switching in-place element-wise ops off ("off") for a model; the argument
#: ``inplace`` of :func:`generate` overrides it
INPLACE_KEY = "sofie:inplace"


def inplace_aliases(graph: Graph, views: Sequence[tuple[NodeView, Operator]], runtime_reads: Mapping[str, int],
                    arena: set[str]) -> dict[str, str]:
    """Outputs computed in place: ``{output: input whose bytes it takes over}``.

    Only output 0 of an operator with ``inplace_ok``, only over an input in the arena (never a
    graph input, weight or graph output) with the output's shape and dtype (never a broadcast
    one), whose last run-time read is this node (sub-graph reads included), passed once unless
    the operator reads every input at the output element's own index (``inplace_repeated_ok``).
    """
    alias: dict[str, str] = {}
    for step, (view, op) in enumerate(views):
        outs = view.node.outputs
        if op.view_of_input and outs and outs[0] in arena:
            # a reshaping copy of an input nothing reads afterwards: the same bytes, one buffer
            src = view.node.inputs[0] if view.node.inputs else ""
            if (src and src in arena and runtime_reads.get(src) == step and src not in subgraph_reads(view.node)
                    and graph.info(src).dtype == graph.info(outs[0]).dtype
                    and graph.info(src).size == graph.info(outs[0]).size):
                alias[outs[0]] = src
            continue
        if not op.inplace_ok or not outs or outs[0] not in arena:
            continue
        oi = graph.info(outs[0])
        inner = subgraph_reads(view.node)
        ins = view.node.inputs
        for k, name in enumerate(ins):
            if not name or k in op.static_inputs or name not in arena or name in inner:
                continue
            if runtime_reads.get(name) != step:
                continue
            ii = graph.info(name)
            if ii.dtype != oi.dtype or tuple(ii.shape) != tuple(oi.shape):
                continue
            if sum(1 for n in ins if n == name) > 1 and not op.inplace_repeated_ok:
                continue
            alias[outs[0]] = name
            break
    return alias


class _ModelState:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.var: dict[str, str] = {}
        self.symbols = graph.symbols
        self.sym_var = {s: identifier("s", i, s) for i, s in enumerate(self.symbols)}

    def dim(self, d: DimLike) -> str:
        if isinstance(d, Dim):
            missing = d.symbols - set(self.sym_var)
            if missing:
                raise ShapeInferenceError(
                    f"dimension {d} depends on {sorted(missing)}, which no graph input determines"
                )
            return d.to_cpp(lambda s: self.sym_var[s])
        return str(int(d))


def arena_layout(arena: memory.Plan, dim: Callable[[DimLike], str], round_up: str) -> list[str]:
    """The C++ lines that lay the arena out for the symbol values of a call: ``a<k>_size`` and
    ``a<k>_off`` of each buffer (its offset is the largest end of the buffers below it, see
    memory.py) and ``arena_bytes``, the largest end. ``dim`` writes a size expression, ``round_up``
    names the C++ function rounding a byte count up to the alignment (CPU and GPU runtimes')."""
    layout = []
    tops = set(range(len(arena.buffers)))
    for k in arena.order:
        b = arena.buffers[k]
        if all(not isinstance(d, Dim) for d in b.sizes):
            size = str(arena.buffer_size(k, {}))
        else:
            terms = []
            for d in b.sizes:
                nonneg = isinstance(d, Dim) and all(c >= 0 for c in d.terms.values())
                terms.append(f"std::size_t({dim(d)})" if nonneg
                             else f"std::size_t(std::max<std::int64_t>(0, {dim(d)}))")
            size = terms[0]
            for t in terms[1:]:
                size = f"std::max({size}, {t})"
            size = f"std::max<std::size_t>({memory.ALIGN}, {round_up}({size}))"
        layout.append(f"      const std::size_t a{k}_size = {size};")
        ends = [f"a{j}_off + a{j}_size" for j in b.below]
        tops.difference_update(b.below)
        # one flat std::max({...}): nested std::max calls were 1,026 deep in a 5,000-node
        # transformer, and cling crashed (SIGSEGV) compiling them
        off = ends[0] if len(ends) == 1 else (f"std::max({{{', '.join(ends)}}})" if ends else "0")
        layout.append(f"      const std::size_t a{k}_off = {off};")
    for k in sorted(tops):
        layout.append(f"      arena_bytes = std::max(arena_bytes, a{k}_off + a{k}_size);")
    return layout


def _views(graph: Graph) -> list[tuple[NodeView, Operator]]:
    out = []
    unsupported = []
    for node in graph.nodes:
        op = lookup(node.domain, node.op_type)
        ins = [graph.info(i) if i else None for i in node.inputs]
        consts = [graph.initializers.get(i) if i else None for i in node.inputs]
        outs = [graph.info(o) if o else None for o in node.outputs]
        view = NodeView(node, ins, consts, outs)
        if op is None:
            from ..ops.custom import missing_reason

            unsupported.append((node.op_type, node.name, node.domain, node.opset, missing_reason(node.domain)))
            continue
        out.append((view, op))
    if unsupported:
        raise UnsupportedOperatorError(unsupported)
    return out


def content_hash(graph_text: str, blob: bytes) -> str:
    h = hashlib.sha256()
    h.update(__version__.encode())
    h.update(graph_text.encode())
    h.update(blob)
    return h.hexdigest()[:16]


#: ONNX metadata property (``onnx.helper.set_model_props``) that turns flush-to-zero off with "0"
FLUSH_DENORMALS_KEY = "sofie_root.flush_denormals"


def flush_denormals(graph: Graph) -> bool:
    """Whether the model's run() sets flush-to-zero / denormals-are-zero (the default); the
    property may come straight from ONNX metadata (stored as ``onnx:<key>``) or from the graph."""
    value = graph.metadata.get(FLUSH_DENORMALS_KEY, graph.metadata.get(f"onnx:{FLUSH_DENORMALS_KEY}", "1"))
    return str(value).strip().lower() not in ("0", "false", "no", "off")


def generate(graph: Graph, namespace: str, extra_members: str = "", profile: bool = False,
             inplace: bool | None = None) -> Generated:
    """Generate the C++ of ``graph`` in ``namespace`` (which must be a safe identifier).

    ``extra_members`` is C++ added to the Session class (``sofie-root emit`` uses it for a
    constructor reading the weights from a .root file); it must not come from a model file.
    ``inplace`` lets element-wise ops overwrite an input that is not read afterwards (default:
    on, unless the graph's metadata ``sofie:inplace`` is ``"off"``)."""
    if inplace is None:
        inplace = graph.metadata.get(INPLACE_KEY, "on") != "off"
    # every size is bounded before it reaches C++ (a graph from a .root file or a pass did not
    # necessarily go through the ONNX frontend's checks)
    for name, info in graph.tensors.items():
        limits.check_shape(info.shape, info.dtype.itemsize, f"tensor {name!r}")
    limits.check_compile_bytes(sum(int(a.nbytes) for a in graph.initializers.values()), "the weights")
    st = _ModelState(graph)
    views = _views(graph)
    g_outputs = list(graph.outputs)
    # sizes only known at run time (NonZero): memory is planned with their upper bounds
    data_syms: dict[str, DimLike] = {}

    def bounded(d: DimLike) -> DimLike:
        return d.substitute(data_syms) if isinstance(d, Dim) and d.symbols & set(data_syms) else d

    for view, op in views:
        # a bound may depend on an earlier data-dependent size (NonZero of NonZero's output, an
        # If whose branch returns one): bounds are kept in terms of the input symbols only
        data_syms.update({sym: bounded(b) for sym, b in op.data_dependent(view).items()})
    for k, sym in enumerate(data_syms):
        st.sym_var[sym] = identifier("d", k, sym)

    # which tensors are read at run time (static inputs are compile-time only)
    runtime_reads: dict[str, int] = {}
    for step, (view, op) in enumerate(views):
        for k, name in enumerate(view.node.inputs):
            if name and k not in op.static_inputs:
                runtime_reads[name] = step
        for name in subgraph_reads(view.node):  # hook for control flow (If), see subgraph_reads
            runtime_reads[name] = step

    # weights: initializers read at run time or returned as outputs
    weights: list[WeightSlot] = []
    offset = 0
    for name, arr in graph.initializers.items():
        if name in runtime_reads or name in g_outputs:
            nbytes = int(arr.nbytes)
            weights.append(WeightSlot(name, offset, nbytes))
            offset += _round(nbytes)
    weight_bytes = offset

    # variable names
    counter = 0
    def name_var(t: str, prefix: str) -> str:
        nonlocal counter
        counter += 1
        v = identifier(prefix, counter, t)
        st.var[t] = v
        return v

    for t in graph.inputs:
        name_var(t, "in")
    for w in weights:
        name_var(w.name, "w")
    value_tensors = [t for t in graph.value_tensors() if t in runtime_reads or t in g_outputs]
    for t in value_tensors:
        name_var(t, "k")
    produced_outputs: set[str] = set()
    for view, _ in views:
        for o in view.node.outputs:
            if o:
                name_var(o, "out" if o in g_outputs else "t")
                if o in g_outputs:
                    produced_outputs.add(o)

    # arena requests: intermediates (node outputs that are not graph outputs) and workspaces
    requests: list[memory.Request] = []
    first: dict[str, int] = {}
    ws_types = {}
    for step, (view, op) in enumerate(views):
        for o in view.node.outputs:
            if o and o not in g_outputs:
                first[o] = step
        for k, (dt, count) in enumerate(op.workspace(view)):
            wn = _ws_name(step, k)
            st.var[wn] = f"ws{step}_{k}"
            ws_types[wn] = dt
            requests.append(memory.Request(wn, bounded(numel([count]) * dt.itemsize), step, step))
    alias = inplace_aliases(graph, views, runtime_reads, set(first)) if inplace else {}
    for t, step in first.items():
        info = graph.info(t)
        last = runtime_reads.get(t, step)
        requests.append(memory.Request(t, bounded(info.size * info.dtype.itemsize), step, max(step, last),
                                       alias.get(t)))
    arena = memory.plan(requests)
    limits.check_compile_bytes(arena.arena_bytes(dict.fromkeys(st.symbols, 1)) if arena.buffers else 0,
                               "the arena of intermediate tensors", bool(st.symbols))

    layout = arena_layout(arena, st.dim, "sofie_rt::round_up")
    # a long graph is run by several member functions of at most PART_NODES nodes each (one huge
    # function costs the C++ compiler super-linear time: 1,000 unfused nodes did not compile in
    # 300 s); they find the arena offsets in an array filled by run()
    split = len(views) > PART_NODES and not data_syms
    if split:
        offsets = {name: f"off[{k}]" for name, k in arena.buffer_of.items()}
        layout.append(f"      std::size_t off[{max(1, len(arena.buffers))}] = {{"
                      + ", ".join(f"a{k}_off" for k in range(len(arena.buffers))) + "};")
        layout.append("      (void)off;")
    else:
        offsets = {name: f"a{k}_off" for name, k in arena.buffer_of.items()}

    # bindings: the C++ variable of every tensor, in declaration order
    bind: dict[str, str] = {}
    for i, t in enumerate(graph.inputs):
        info = graph.info(t)
        bind[st.var[t]] = (f"      const {info.dtype.cpp} *const {st.var[t]} = static_cast<const {info.dtype.cpp} *>(in[{i}]);"
                           f"  // {comment(t)}")
    for w in weights:
        info = graph.info(w.name)
        bind[st.var[w.name]] = (f"      const {info.dtype.cpp} *const {st.var[w.name]} = reinterpret_cast<const {info.dtype.cpp} *>(weights + {w.offset});"
                                f"  // {comment(w.name)}")
    for t in value_tensors:
        info = graph.info(t)
        vals = ", ".join(f"{info.dtype.cpp}({st.dim(d)})" for d in info.value)
        bind[st.var[t]] = (f"      const {info.dtype.cpp} {st.var[t]}[{max(1, len(info.value))}] = {{{vals}}};"
                           f"  // {comment(t)}")
    for i, t in enumerate(g_outputs):
        if t in produced_outputs and st.var[t] not in bind:
            info = graph.info(t)
            bind[st.var[t]] = (f"      {info.dtype.cpp} *const {st.var[t]} = static_cast<{info.dtype.cpp} *>(out[{i}]);"
                               f"  // {comment(t)}")
    for t in first:
        info = graph.info(t)
        bind[st.var[t]] = (f"      {info.dtype.cpp} *const {st.var[t]} = reinterpret_cast<{info.dtype.cpp} *>(arena + {offsets[t]});"
                           f"  // {comment(t)}")
    for wn, dt in ws_types.items():
        bind[st.var[wn]] = f"      {dt.cpp} *const {st.var[wn]} = reinterpret_cast<{dt.cpp} *>(arena + {offsets[wn]});"

    # node bodies
    blocks: list[list[str]] = []
    for step, (view, op) in enumerate(views):
        body: list[str] = []
        blocks.append(body)
        em = NodeEmitter(st, view, step)
        try:
            code = op.emit(view, em)
        except SofieError:
            raise
        except (ValueError, TypeError, IndexError, KeyError, ArithmeticError, AttributeError) as e:
            # an attribute value the operator cannot turn into C++ (a checked kind, a bad value)
            raise InvalidGraphError(f"{view.label}: cannot be compiled ({type(e).__name__}: {e})") from e
        body.append(f"      {{ // {comment(view.label)}")
        if profile:  # time per node, read back through profile()
            body.append("         const auto prof_t0_ = std::chrono::steady_clock::now();")
        body.extend("         " + line if line else "" for line in code.splitlines())
        if profile:
            body.append(f"         fProfile[{step}] += std::chrono::duration<double>("
                        "std::chrono::steady_clock::now() - prof_t0_).count();")
        body.append("      }")

    # graph outputs not written by a node (a graph input, a weight, or listed twice)
    body = []
    blocks.append(body)
    written: set[str] = set()
    for i, t in enumerate(g_outputs):
        info = graph.info(t)
        if t in produced_outputs and t not in written:
            written.add(t)
            continue
        src = st.var[t]
        body.append(f"      std::memcpy(out[{i}], {src}, std::size_t({st.dim(info.size)}) * sizeof({info.dtype.cpp}));")

    sym_lines = [f"      const std::int64_t {st.sym_var[s]} = sym[{i}];" for i, s in enumerate(st.symbols)]
    sym_lines += [f"      std::int64_t {st.sym_var[s]} = 0;" for s in data_syms]
    for s in [*st.symbols, *data_syms]:
        sym_lines.append(f"      (void){st.sym_var[s]};")
    data_out = [f"      sym[{len(st.symbols) + k}] = {st.sym_var[s]};" for k, s in enumerate(data_syms)]
    if split:
        parts = [blocks[k:k + PART_NODES] for k in range(0, len(blocks), PART_NODES)]
        calls, members = [], []
        for j, part in enumerate(parts):
            lines = [line for block in part for line in block]
            used = set(_IDENT.findall("\n".join(lines)))
            members.append(f"   void part{j}(std::int64_t *sym, const void *const *in, void *const *out, "
                           "char *const arena, const char *const weights, const std::size_t *off)\n   {\n"
                           "      (void)sym; (void)in; (void)out; (void)arena; (void)weights; (void)off;\n"
                           + "\n".join([line for line in sym_lines if "= sym[" in line or "(void)" in line]
                                       + [b for var, b in bind.items() if var in used] + lines)
                           + "\n   }\n")
            calls.append(f"      part{j}(sym, in, out, arena, weights, off);")
        bindings, body_text = "", "\n".join(calls)
        extra_members = extra_members + "\n".join(members)
    else:
        bindings = "\n".join(bind.values())
        body_text = "\n".join(line for block in blocks for line in block)
    typed_params = [f"std::int64_t {st.sym_var[s]}" for s in st.symbols]
    typed_params += [f"const {graph.info(t).dtype.cpp} *x{i}" for i, t in enumerate(graph.inputs)]
    typed_params += [f"{graph.info(t).dtype.cpp} *y{i}" for i, t in enumerate(g_outputs)]

    source = MODEL.substitute(
        version=__version__,
        model_comment=comment(graph.name),
        inputs_comment=comment(", ".join(f"{t} {graph.info(t)}" for t in graph.inputs), 400),
        outputs_comment=comment(", ".join(f"{t} {graph.info(t)}" for t in g_outputs), 400),
        ns=namespace,
        weight_bytes=weight_bytes,
        num_symbols=len(st.symbols),
        num_data_symbols=len(data_syms),
        data_symbols_out="\n".join(data_out),
        num_inputs=len(graph.inputs),
        num_outputs=len(g_outputs),
        flush_denormals="true" if flush_denormals(graph) else "false",
        extra_members=extra_members + (
            f"   double fProfile[{max(1, len(views))}] = {{}};  // seconds per node, summed over calls\n"
            if profile else ""),
        profile_fn=("inline const double *profile(void *s) { return static_cast<Session *>(s)->fProfile; }"
                    if profile else ""),
        typed_params=", ".join(typed_params),
        typed_sym_values="".join(f"{st.sym_var[s]}, " for s in st.symbols),
        typed_in_values="".join(f"x{i}, " for i in range(len(graph.inputs))),
        typed_out_values="".join(f"y{i}, " for i in range(len(g_outputs))),
        symbols="\n".join(sym_lines),
        arena_layout="\n".join(layout),
        bindings=bindings,
        body=body_text,
    )
    return Generated(namespace, source, weights, weight_bytes, list(st.symbols), arena, data_syms,
                     {name: st.var[name] for name in arena.buffer_of})


def _round(n: int) -> int:
    return (n + memory.ALIGN - 1) // memory.ALIGN * memory.ALIGN
