"""GPU code generation: the driver that walks an optimised IR graph and asks the GPU emitters
(``emit_<family>.py``, collected in :mod:`sofie_root.gpu.emitters`) for each node.

The generated source is one translation unit for ``gpu_runtime.cuh``: the node kernels (written
in the CUDA/HIP common subset) and a ``Session`` that owns a stream and BLAS handle
(``sofie_gpu::Context``), the weights (uploaded once, at construction) and one device arena for
intermediates, planned from tensor lifetimes by :mod:`sofie_root.codegen.memory` exactly as on
the CPU (offsets computed at run time from the symbol values, so the batch size stays symbolic).
The same source is built for CUDA, HIP or the host emulation (see :mod:`sofie_root.gpu.build`).

Entry points (``extern "C"`` in the built library): ``create``/``destroy`` and ``run`` with the
signature of the CPU models, plus ``run_device`` taking device pointers (no copies). Errors --
no device, out of device memory, a failed launch, an index out of range found by a kernel --
come back as return codes with a message naming the node, never as a crash.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..codegen import memory
from ..codegen.emitter import (
    _ModelState,
    _round,
    _views,
    _ws_name,
    arena_layout,
    content_hash,
    cpp_literal,
    inplace_aliases,
)
from ..codegen.names import comment, identifier
from ..errors import UnsupportedOperatorError
from ..ir.dims import Dim, DimLike, numel
from ..ir.dtypes import DType
from ..ir.graph import Graph
from ..ops.base import NodeView

__all__ = ["GpuEmitter", "GpuGenerated", "check_supported", "content_hash", "generate_gpu"]

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class GpuGenerated:
    namespace: str
    source: str
    weights: list  # WeightSlot as on the CPU
    weight_bytes: int
    symbols: list[str]
    arena: memory.Plan | None = None
    kernels: int = 0
    nodes: dict[str, int] = field(default_factory=dict)  # op type -> count

    def weight_blob(self, graph: Graph):
        import numpy as np

        blob = np.zeros(self.weight_bytes, dtype=np.uint8)
        for slot in self.weights:
            arr = np.require(graph.initializers[slot.name], requirements="C")
            blob[slot.offset:slot.offset + slot.nbytes] = arr.reshape(-1).view(np.uint8)
        return blob


class GpuEmitter:
    """Helpers given to a GPU emitter for one node: tensor pointers (device pointers), dimension
    expressions (valid in host code and in kernels, which receive the symbols as parameters),
    literals, and :meth:`kernel`, which defines a kernel and returns the host code launching it."""

    def __init__(self, state: _GpuState, view: NodeView, index: int):
        self._s = state
        self.view = view
        self.index = index
        self._tmp = 0
        self._kernels = 0

    # -- names ---------------------------------------------------------------------------------
    def inp(self, i: int) -> str:
        return self._s.m.var[self.view.node.inputs[i]]

    def out(self, i: int = 0) -> str:
        return self._s.m.var[self.view.node.outputs[i]]

    def ws(self, k: int = 0) -> str:
        return self._s.m.var[_ws_name(self.index, k)]

    def has_out(self, i: int) -> bool:
        outs = self.view.node.outputs
        return i < len(outs) and bool(outs[i])

    def tmp(self, prefix: str = "v") -> str:
        self._tmp += 1
        return f"{prefix}{self._tmp}_"

    def dim(self, d: DimLike) -> str:
        return self._s.m.dim(d)

    def out_info(self, i: int = 0):
        return self._s.m.graph.info(self.view.node.outputs[i])

    @staticmethod
    def lit(value, dtype: DType) -> str:
        return cpp_literal(value, dtype)

    @property
    def label(self) -> str:
        return comment(self.view.label, 200).replace('"', "'")

    def fail(self, what: str) -> str:
        """A host statement throwing an error that names this node."""
        return f'throw std::runtime_error("{self.label}: {comment(what, 200)}");'

    def device_fail(self, what: str) -> str:
        """A kernel statement recording an error (reported after the run, naming this node); the
        kernel then goes on with a harmless value, as a kernel cannot stop the launch."""
        code = self._s.error_code(f"{self.label}: {comment(what, 200)}")
        return f"sofie_status_[0] = {code};"

    # -- kernels -------------------------------------------------------------------------------
    def kernel(self, count: str, body: str, index: str = "i", params: dict[str, str] | None = None) -> str:
        """Define a kernel running ``body`` for every ``index`` in ``[0, count)`` (a grid-stride
        loop: every work item independent) and return the host code launching it on the
        Session's stream. Pointers, workspaces and symbols named in ``body`` become parameters,
        as do the host variables in ``params`` (name -> C++ parameter type)."""
        self._kernels += 1
        name = f"k{self.index}_{self._kernels}"
        params, args = self._params(body, params or {})
        n = f"n{self.index}_{self._kernels}_"
        self._s.kernels.append(
            f"// {self.label}\n"
            f"__global__ void {name}({', '.join(['const std::int64_t ' + n, *params])})\n{{\n"
            f"   for (std::int64_t {index} = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; {index} < {n}; "
            f"{index} += std::int64_t(gridDim.x) * blockDim.x) {{\n"
            + "\n".join("      " + line for line in body.splitlines())
            + "\n   }\n}\n")
        call_args = ", ".join([n, *args])
        return (f"{{ const std::int64_t {n} = {count};\n"
                f"  if ({n} > 0) {{ SOFIE_LAUNCH({name}, sofie_gpu::grid_for({n}), sofie_gpu::block_for({n}), "
                f"fCtx.stream, {call_args}); sofie_gpu::check_launch(\"{self.label}\"); }} }}")

    def block_kernel(self, rows: str, body: str, index: str = "row") -> str:
        """Define a block-cooperative kernel: one block of ``SOFIE_BLOCK`` threads per ``index`` in
        ``[0, rows)`` (grid-stride over rows); ``body`` is written in phases (``SOFIE_FOR_THREADS``,
        ``SOFIE_BARRIER``, ``__shared__``, see gpu_runtime.cuh) so that the emulation can run it."""
        self._kernels += 1
        name = f"k{self.index}_{self._kernels}"
        params, args = self._params(body, {})
        n = f"n{self.index}_{self._kernels}_"
        self._s.kernels.append(
            f"// {self.label} (block-cooperative)\n"
            f"__global__ void {name}({', '.join(['const std::int64_t ' + n, *params])})\n{{\n"
            f"   for (std::int64_t {index} = blockIdx.x; {index} < {n}; {index} += gridDim.x) {{\n"
            + "\n".join("      " + line for line in body.splitlines())
            + "\n      SOFIE_BARRIER();  // the next row reuses the shared arrays\n   }\n}\n")
        call_args = ", ".join([n, *args])
        return (f"{{ const std::int64_t {n} = {rows};\n"
                f"  if ({n} > 0) {{ SOFIE_LAUNCH_BLOCKS({name}, unsigned(std::min<std::int64_t>({n}, 65535)), "
                f"SOFIE_BLOCK, fCtx.stream, {call_args}); sofie_gpu::check_launch(\"{self.label}\"); }} }}")

    def _params(self, body: str, extra: dict[str, str]) -> tuple[list[str], list[str]]:
        params, args = [], []
        seen: set[str] = set()
        for tok in _TOKEN.findall(body):
            if tok in seen:
                continue
            seen.add(tok)
            if tok in self._s.var_types:
                params.append(f"{self._s.var_types[tok]}{tok}")
                args.append(tok)
            elif tok in self._s.sym_names:
                params.append(f"const std::int64_t {tok}")
                args.append(tok)
            elif tok in extra:
                params.append(f"{extra[tok]} {tok}")
                args.append(tok)
            elif tok == "sofie_status_":
                params.append("int *sofie_status_")
                args.append("sofie_status_")
        return params, args

    def gemm(self, dt: DType, ta: bool, tb: bool, m: str, n: str, k: str, alpha: str, a: str, lda: str, b: str,
             ldb: str, beta: str, c: str, ldc: str, batch: str = "1", sa: str = "0", sb: str = "0",
             sc: str = "0") -> str:
        """Host code of a (strided batched) row-major GEMM through cuBLAS / hipBLAS / OpenBLAS."""
        if dt.name not in ("float32", "float64"):
            raise self.view.fail(f"the GPU backend computes GEMMs in float32/float64, not {dt.name}")
        return (f"sofie_gpu::gemm_batched<{dt.cpp}>(fCtx, {'true' if ta else 'false'}, {'true' if tb else 'false'}, "
                f"{m}, {n}, {k}, {alpha}, {a}, {lda}, {sa}, {b}, {ldb}, {sb}, {beta}, {c}, {ldc}, {sc}, {batch}, "
                f"\"{self.label}\");")

    def copy(self, dst: str, src: str, nbytes: str) -> str:
        """Host code copying device bytes (nothing when the planner gave both one buffer)."""
        return (f"sofie_gpu::copy_async({dst}, {src}, {nbytes}, sofie_gpu::Copy::DeviceToDevice, fCtx.stream, "
                f"\"{self.label}\");")

    # -- element-wise loops (the CPU emitter's interface, so element-wise operators' own ``emit``
    #    runs unchanged: their loops become kernels) ----------------------------------------------
    def size_in(self, i: int) -> str:
        return self.dim(self.view.input(i).size)

    def size_out(self, i: int = 0) -> str:
        return self.dim(self.out_info(i).size)

    def broadcast(self, out: int, ins, expr, out_expr=None) -> str:
        shapes = [self.view.input(i).shape for i in ins]
        return self.broadcast_raw(self.out(out), self.out_info(out).shape, [self.inp(i) for i in ins], shapes, expr)

    def broadcast_raw(self, out_ptr: str, out_shape, ptrs, shapes, expr) -> str:
        """A kernel computing ``out_ptr[i] = expr(inputs at i)`` with ONNX broadcasting."""
        out_shape = list(out_shape)
        checks = self.broadcast_checks(out_shape, [list(s) for s in shapes])
        offs, code = self.broadcast_index("i", out_shape, [list(s) for s in shapes])
        body = (code + "\n" if code else "") + f"{out_ptr}[i] = {expr([f'{p}[{o}]' for p, o in zip(ptrs, offs)])};"
        return "\n".join([*checks, self.kernel(self.dim(numel(out_shape)), body)])

    def strided_copy(self, dims, dst: str, dst_off: DimLike, dst_st, src: str, src_off: DimLike, src_st) -> str:
        """A kernel copying ``dims`` elements between two strided views (movement operators)."""
        dims = list(dims)
        coords, code = self.unravel("i", dims)
        d_off = " + ".join(x for x in [self.dim(dst_off) if dst_off != 0 else "", self.offset(coords, dst_st)] if x)
        s_off = " + ".join(x for x in [self.dim(src_off) if src_off != 0 else "", self.offset(coords, src_st)] if x)
        if list(dst_st) == self.strides(dims) and dst_off == 0:
            d_off = "i"
        body = f"{code}\n{dst}[{d_off}] = {src}[{s_off}];"
        return self.kernel(self.dim(numel(dims)), body)

    # -- index helpers -------------------------------------------------------------------------
    def unravel(self, i: str, dims: list[DimLike], prefix: str = "c") -> tuple[list[str], str]:
        """Kernel code splitting linear index ``i`` over ``dims`` (row major) into coordinates."""
        names = [self.tmp(prefix) for _ in dims]
        r = self.tmp("r")
        lines = [f"std::int64_t {r} = {i};"]
        for ax in reversed(range(len(dims))):
            d = self.dim(dims[ax])
            if ax == 0:
                lines.append(f"const std::int64_t {names[ax]} = {r};")
            else:
                lines.append(f"const std::int64_t {names[ax]} = {r} % {d}; {r} /= {d};")
        lines.append(f"(void){r};")
        return names, "\n".join(lines)

    def strides(self, shape: list[DimLike]) -> list[DimLike]:
        out: list[DimLike] = []
        acc: DimLike = 1
        for d in reversed(shape):
            out.append(acc)
            acc = acc * d
        return out[::-1]

    def offset(self, coords: list[str], strides: list[DimLike]) -> str:
        terms = [c if (isinstance(s, int) and s == 1) else f"{c} * {self.dim(s)}"
                 for c, s in zip(coords, strides) if not (isinstance(s, int) and s == 0)]
        return " + ".join(terms) if terms else "0"

    def broadcast_index(self, i: str, out_shape: list[DimLike], shapes: list[list[DimLike]]) -> tuple[list[str], str]:
        """Kernel code computing, for output element ``i``, the offset into each input broadcast
        to ``out_shape`` (ONNX/numpy broadcasting; a symbolic input dimension that is not the
        output's is 1 or equal at run time, checked on the host by the emitter)."""
        rank = len(out_shape)
        aligned = [[1] * (rank - len(s)) + list(s) for s in shapes]
        if all(len(s) == rank and list(s) == list(out_shape) for s in aligned):
            return [i] * len(shapes), ""
        if rank == 0:
            return ["0"] * len(shapes), ""
        coords, code = self.unravel(i, list(out_shape))
        offs = []
        for a in aligned:
            if all(isinstance(d, int) and d == 1 for d in a):
                offs.append("0")
                continue
            if list(a) == list(out_shape):
                offs.append(i)
                continue
            st = self.strides(a)
            terms = []
            for ax, d in enumerate(a):
                if isinstance(d, int) and d == 1:
                    continue
                c = coords[ax]
                if isinstance(d, Dim) and d != out_shape[ax]:
                    c = f"({self.dim(d)} == 1 ? 0 : {c})"
                s = st[ax]
                terms.append(c if (isinstance(s, int) and s == 1) else f"{c} * {self.dim(s)}")
            offs.append(" + ".join(terms) if terms else "0")
        return offs, code

    def broadcast_checks(self, out_shape: list[DimLike], shapes: list[list[DimLike]]) -> list[str]:
        rank = len(out_shape)
        lines = []
        for k, s in enumerate(shapes):
            a = [1] * (rank - len(s)) + list(s)
            for ax, d in enumerate(a):
                if isinstance(d, Dim) and d != out_shape[ax]:
                    od = self.dim(out_shape[ax])
                    lines.append(f"if (!({self.dim(d)} == 1 || {self.dim(d)} == {od})) "
                                 + self.fail(f"input {k} cannot be broadcast along axis {ax}"))
        return lines


class _GpuState:
    def __init__(self, graph: Graph):
        self.m = _ModelState(graph)
        self.var_types: dict[str, str] = {}
        self.sym_names = set(self.m.sym_var.values())
        self.kernels: list[str] = []
        self.errors: list[str] = []

    def error_code(self, message: str) -> int:
        self.errors.append(message)
        return len(self.errors)


def _gpu_ops():
    from .emitters import GPU_EMITTERS

    return GPU_EMITTERS


def check_supported(graph: Graph, backend: str) -> None:
    """Refuse, before anything is built, a graph with nodes the GPU backend cannot run: every such
    node is listed (op type, name, why), as for operators the project does not support at all."""
    gpu = _gpu_ops()
    views = _views(graph)  # raises for operators no backend has
    missing = []
    for view, op in views:
        key = (view.node.domain if view.node.domain not in ("", "ai.onnx") else "", view.node.op_type)
        impl = gpu.get(key)
        if impl is None:
            reason = f"not implemented by the GPU backend ({backend}); the CPU backends run it"
        else:
            reason = impl.check(view) if hasattr(impl, "check") else None
            if reason:
                reason = f"GPU backend ({backend}): {reason}"
        if op.data_dependent(view) and not reason:
            reason = f"GPU backend ({backend}): output sizes known only at run time are not supported"
        if reason:
            missing.append((view.node.op_type, view.node.name, view.node.domain, view.node.opset, reason))
    if missing:
        raise UnsupportedOperatorError(missing)


def generate_gpu(graph: Graph, namespace: str, backend: str = "gpu-emulated") -> GpuGenerated:
    """The GPU source of ``graph`` in ``namespace`` (a safe identifier)."""
    from .. import __version__
    from .emitters import GPU_EMITTERS
    from .template import GPU_MODEL

    check_supported(graph, backend)
    st = _GpuState(graph)
    m = st.m
    views = _views(graph)
    impls = [GPU_EMITTERS[(v.node.domain if v.node.domain not in ("", "ai.onnx") else "", v.node.op_type)]
             for v, _ in views]
    g_outputs = list(graph.outputs)

    runtime_reads: dict[str, int] = {}
    for step, (view, op) in enumerate(views):
        for k, name in enumerate(view.node.inputs):
            if name and k not in op.static_inputs:
                runtime_reads[name] = step

    from ..codegen.emitter import WeightSlot

    weights: list[WeightSlot] = []
    offset = 0
    for name, arr in graph.initializers.items():
        if name in runtime_reads or name in g_outputs:
            weights.append(WeightSlot(name, offset, int(arr.nbytes)))
            offset += _round(int(arr.nbytes))
    weight_bytes = offset

    counter = 0

    def name_var(t: str, prefix: str, const: bool) -> str:
        nonlocal counter
        counter += 1
        v = identifier(prefix, counter, t)
        m.var[t] = v
        cpp = graph.info(t).dtype.cpp
        st.var_types[v] = f"const {cpp} *" if const else f"{cpp} *"
        return v

    for t in graph.inputs:
        name_var(t, "in", True)
    for w in weights:
        name_var(w.name, "w", True)
    value_tensors = [t for t in graph.value_tensors() if t in runtime_reads or t in g_outputs]
    for t in value_tensors:
        name_var(t, "k", True)
    produced_outputs: set[str] = set()
    for view, _ in views:
        for o in view.node.outputs:
            if o:
                name_var(o, "out" if o in g_outputs else "t", False)
                if o in g_outputs:
                    produced_outputs.add(o)

    requests: list[memory.Request] = []
    first: dict[str, int] = {}
    ws_types = {}
    for step, ((view, _op), impl) in enumerate(zip(views, impls)):
        for o in view.node.outputs:
            if o and o not in g_outputs:
                first[o] = step
        ws = impl.workspace(view) if hasattr(impl, "workspace") else []
        for k, (dt, count) in enumerate(ws):
            wn = _ws_name(step, k)
            m.var[wn] = f"ws{step}_{k}"
            st.var_types[f"ws{step}_{k}"] = f"{dt.cpp} *"
            ws_types[wn] = dt
            requests.append(memory.Request(wn, numel([count]) * dt.itemsize, step, step))
    # in place only where the GPU kernel reads and writes element i in the same work item
    alias = inplace_aliases(graph, views, runtime_reads, set(first))
    alias = {o: src for o, src in alias.items()
             if getattr(impls[first[o]], "inplace_safe", False) or views[first[o]][1].view_of_input}
    for t, step in first.items():
        info = graph.info(t)
        last = runtime_reads.get(t, step)
        requests.append(memory.Request(t, info.size * info.dtype.itemsize, step, max(step, last), alias.get(t)))
    arena = memory.plan(requests)

    layout = arena_layout(arena, m.dim, "sofie_gpu_round_up")
    offsets = {name: f"a{k}_off" for name, k in arena.buffer_of.items()}

    # the I/O staging area (inputs and outputs of host calls), small value tensors and the status word
    io = ["      std::size_t io_bytes = 64;  // [0, 64): the status word kernels set on errors"]
    for i, t in enumerate(graph.inputs):
        info = graph.info(t)
        io.append(f"      const std::size_t in{i}_bytes = std::size_t({m.dim(info.size)}) * sizeof({info.dtype.cpp});")
        io.append(f"      const std::size_t io_in{i} = io_bytes; io_bytes += sofie_gpu_round_up(in{i}_bytes);")
    for i, t in enumerate(g_outputs):
        info = graph.info(t)
        io.append(f"      const std::size_t out{i}_bytes = std::size_t({m.dim(info.size)}) * sizeof({info.dtype.cpp});")
        io.append(f"      const std::size_t io_out{i} = io_bytes; io_bytes += sofie_gpu_round_up(out{i}_bytes);")
    consts = []
    for j, t in enumerate(value_tensors):
        info = graph.info(t)
        vals = ", ".join(f"{info.dtype.cpp}({m.dim(d)})" for d in info.value)
        n = max(1, len(info.value))
        consts.append(f"      const {info.dtype.cpp} host_k{j}[{n}] = {{{vals}}};  // {comment(t)}")
        consts.append(f"      const std::size_t io_k{j} = io_bytes; io_bytes += sofie_gpu_round_up(sizeof(host_k{j}));")

    bind = []
    for i, t in enumerate(graph.inputs):
        info = graph.info(t)
        bind.append(f"      const {info.dtype.cpp} *const {m.var[t]} = static_cast<const {info.dtype.cpp} *>(in[{i}]);"
                    f"  // {comment(t)}")
    for w in weights:
        info = graph.info(w.name)
        bind.append(f"      const {info.dtype.cpp} *const {m.var[w.name]} = "
                    f"reinterpret_cast<const {info.dtype.cpp} *>(weights + {w.offset});  // {comment(w.name)}")
    for j, t in enumerate(value_tensors):
        info = graph.info(t)
        bind.append(f"      sofie_gpu::copy_async(io + io_k{j}, host_k{j}, sizeof(host_k{j}), "
                    "sofie_gpu::Copy::HostToDevice, fCtx.stream, \"a shape tensor\");")
        bind.append(f"      const {info.dtype.cpp} *const {m.var[t]} = "
                    f"reinterpret_cast<const {info.dtype.cpp} *>(io + io_k{j});")
    for i, t in enumerate(g_outputs):
        if t in produced_outputs and t not in g_outputs[:i]:
            info = graph.info(t)
            bind.append(f"      {info.dtype.cpp} *const {m.var[t]} = static_cast<{info.dtype.cpp} *>(out[{i}]);"
                        f"  // {comment(t)}")
    for t in first:
        info = graph.info(t)
        bind.append(f"      {info.dtype.cpp} *const {m.var[t]} = "
                    f"reinterpret_cast<{info.dtype.cpp} *>(arena + {offsets[t]});  // {comment(t)}")
    for wn, dt in ws_types.items():
        bind.append(f"      {dt.cpp} *const {m.var[wn]} = reinterpret_cast<{dt.cpp} *>(arena + {offsets[wn]});")

    body = []
    counts: dict[str, int] = {}
    for step, ((view, _op), impl) in enumerate(zip(views, impls)):
        em = GpuEmitter(st, view, step)
        code = impl.emit(view, em)
        counts[view.node.op_type] = counts.get(view.node.op_type, 0) + 1
        body.append(f"      {{ // {comment(view.label)}")
        body.extend("         " + line if line else "" for line in code.splitlines())
        body.append("      }")
    written: set[str] = set()
    for i, t in enumerate(g_outputs):
        info = graph.info(t)
        if t in produced_outputs and t not in written:
            written.add(t)
            continue
        body.append(f"      sofie_gpu::copy_async(out[{i}], {m.var[t]}, out{i}_bytes, "
                    "sofie_gpu::Copy::DeviceToDevice, fCtx.stream, \"copying a graph output\");")

    sym_lines = [f"      const std::int64_t {m.sym_var[s]} = sym[{i}];" for i, s in enumerate(m.symbols)]
    sym_lines += [f"      (void){m.sym_var[s]};" for s in m.symbols]
    errors = ",\n".join(f'      "{e}"' for e in st.errors) or '      ""'
    source = GPU_MODEL.substitute(
        version=__version__,
        model_comment=comment(graph.name),
        inputs_comment=comment(", ".join(f"{t} {graph.info(t)}" for t in graph.inputs), 400),
        outputs_comment=comment(", ".join(f"{t} {graph.info(t)}" for t in g_outputs), 400),
        ns=namespace,
        kernels="\n".join(st.kernels),
        weight_bytes=weight_bytes,
        num_symbols=len(m.symbols),
        num_inputs=len(graph.inputs),
        num_outputs=len(g_outputs),
        symbols="\n".join(sym_lines),
        arena_layout="\n".join(layout),
        io_layout="\n".join(io + consts),
        copy_in="\n".join(
            f"      in[{i}] = host ? static_cast<const void *>(io + io_in{i}) : in_[{i}];\n"
            f"      if (host) sofie_gpu::copy_async(io + io_in{i}, in_[{i}], in{i}_bytes, "
            f"sofie_gpu::Copy::HostToDevice, fCtx.stream, \"copying input {i} to the device\");"
            for i in range(len(graph.inputs))),
        set_out="\n".join(f"      out[{i}] = host ? static_cast<void *>(io + io_out{i}) : out_[{i}];"
                          for i in range(len(g_outputs))),
        copy_out="\n".join(
            f"      if (host) sofie_gpu::copy_async(out_[{i}], io + io_out{i}, out{i}_bytes, "
            f"sofie_gpu::Copy::DeviceToHost, fCtx.stream, \"copying output {i} from the device\");"
            for i in range(len(g_outputs))),
        bindings="\n".join(bind),
        body="\n".join(body),
        errors=errors,
    )
    return GpuGenerated(namespace, source, weights, weight_bytes, list(m.symbols), arena, len(st.kernels), counts)


Emit = Callable[[NodeView, GpuEmitter], str]
