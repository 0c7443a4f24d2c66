"""The user-facing :class:`Model`: a compiled network callable on numpy arrays."""

from __future__ import annotations

import ctypes
import json
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import limits
from .codegen.emitter import Generated, content_hash, generate
from .errors import InputError, ResourceLimitError, SofieError
from .ir.dims import Dim, DimLike
from .ir.graph import Graph
from .jit import cling, native, pycall
from .passes import run_passes


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of a model input or output. Symbolic dims are strings (``"N"``)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str, ...]

    def __repr__(self) -> str:
        return f"TensorSpec({self.name!r}, {self.dtype.name}, {self.shape})"

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype.name}[{', '.join(map(str, self.shape))}]"


_UNSEEN = object()  # a signature the quick path of Model.infer has not met yet

IO_TYPES_KEY = "sofie:io_types"  # graph metadata: inputs/outputs that are float16/bfloat16 in the model


def half_dtype(kind: str) -> np.dtype:
    """numpy dtype of a half-precision type name ("float16", or "bfloat16" from ml_dtypes)."""
    if kind == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(kind)


def io_types(graph: Graph) -> dict[str, str]:
    """Inputs and outputs declared float16/bfloat16 (computed in float32 inside)."""
    return json.loads(graph.metadata.get(IO_TYPES_KEY, "{}"))


def _spec(graph: Graph, name: str) -> TensorSpec:
    info = graph.info(name)
    kind = io_types(graph).get(name)
    dtype = half_dtype(kind) if kind else info.dtype.numpy
    return TensorSpec(name, dtype, tuple(str(d) if isinstance(d, Dim) else int(d) for d in info.shape))


class Model:
    """A model compiled to C++ and JIT-compiled by cling (or, with ``backend="native"``, built
    into a shared library by the system C++ compiler; see :mod:`sofie_root.jit.native`).

    Create it with :func:`sofie_root.compile`. Calling :meth:`infer` runs the generated code on
    numpy arrays; the first dimension may be any size when the model's batch dimension is symbolic.

    >>> model = sofie_root.compile("model.onnx")            # doctest: +SKIP
    >>> scores = model(np.random.rand(64, 7).astype("f4"))  # doctest: +SKIP
    """

    #: RDataFrame column names suggested for each input (stored in, and read from, .root files)
    column_hints: dict[str, list[str]] | None = None
    #: the quick caller (jit/pycall.py) set by _prepare_calls; None: no quick path (GPU models,
    #: models specialised per call, missing CPython headers)
    _quick = None

    def __new__(cls, *args: object, **kwargs: object):
        # a GPU backend makes a GpuModel (sofie_root.gpu), whichever path (compile, load, a
        # specialising model) creates the model
        if cls is Model and native.resolve_backend(kwargs.get("backend")) in ("cuda", "hip", "gpu-emulated"):
            from .gpu.model import GpuModel

            return super().__new__(GpuModel)
        return super().__new__(cls)

    def __init__(self, graph: Graph, passes: Iterable[str] | None = None, *, backend: str | None = None,
                 _profile: bool = False):
        t0 = time.perf_counter()
        self._backend = native.resolve_backend(backend)
        self.graph = run_passes(graph, passes)
        g = self.graph
        blob_probe = b"".join(np.require(a, requirements="C").tobytes() for a in g.initializers.values())
        from .ops.custom import graph_fingerprint

        # where the model was read from is not part of its content: the same model loaded from two
        # paths (a copy on a Dask worker) must get the same namespace
        meta = sorted((k, v) for k, v in g.metadata.items() if k != "source")
        self.hash = content_hash(str(g) + repr(meta) + graph_fingerprint(g), blob_probe)
        # a native model's proxy Session must not clash with a cling-declared one of the same content
        suffix = ("_nat" if self._backend == "native" else "") + ("_prof" if _profile else "")
        self._generated: Generated = generate(g, f"sofie_{self.hash}{suffix}", profile=_profile)
        blob = self._generated.weight_blob(g)
        load = native.load_model if self._backend == "native" else cling.declare_model
        self._entry = load(self._generated.namespace, self._generated.source)
        self._err = ctypes.create_string_buffer(1024)
        # the Session copies the blob: it is not kept here (see _blob)
        ptr = self._entry.create(blob.ctypes.data if blob.size else None, blob.size, self._err, len(self._err))
        del blob
        if not ptr:
            raise SofieError(f"creating the session failed: {self._err.value.decode(errors='replace')}")
        self._session = ptr
        self._lock = threading.Lock()
        self._symbols = self._generated.symbols
        self._in_infos = g.input_infos
        self._out_infos = g.output_infos
        self._io_types = io_types(g)
        self._checked_syms: dict[str, int] | None = None
        self._prepare_calls()
        self.compile_seconds = time.perf_counter() - t0

    @property
    def _blob(self) -> np.ndarray:
        """The weight blob the Session was created from, rebuilt from the graph when asked for
        (RDataFrame functors and workers create their own Sessions from it): keeping it would hold
        a third copy of the weights next to the graph's arrays and the Session's buffer."""
        return self._generated.weight_blob(self.graph)

    # -- description ---------------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorSpec]:
        return [_spec(self.graph, n) for n in self.graph.inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [_spec(self.graph, n) for n in self.graph.outputs]

    @property
    def source(self) -> str:
        """The generated C++ of this model (the runtime header it includes is ``runtime_source``)."""
        return self._generated.source

    @property
    def runtime_source(self) -> str:
        return cling.runtime_text()

    @property
    def namespace(self) -> str:
        return self._generated.namespace

    @property
    def backend(self) -> str:
        """``"cling"`` or ``"native"``: what compiled the generated code."""
        return self._backend

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"<sofie_root.Model {self.graph.name!r} ({ins}) -> ({outs})>"

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path, name: str | None = None, *, compression: str | None = None, overwrite: bool = False,
             columns=None) -> str:
        """Store the model's IR (graph and weights, compressed) in the ROOT file ``path``.

        Several models share a file, one directory each, named ``name`` (default: the ONNX file's
        stem); an existing model of that name is only replaced with ``overwrite=True``.
        ``compression`` is ``"ALG:LEVEL"`` with ALG one of ZSTD (default), LZMA, LZ4, ZLIB, NONE.
        ``columns`` records RDataFrame column hints: ``{input: [columns]}`` (or a list for a
        single-input model). Read it back with :func:`sofie_root.load`. Returns the name used.
        """
        from .serialization.writer import save

        return save(self, path, name, compression=compression, overwrite=overwrite,
                    columns=columns if columns is not None else self.column_hints)

    def __reduce__(self):
        """Pickle as the model's IR and weights (its .root payload); unpickling compiles it again
        with the same backend, once per process (see :mod:`sofie_root.serialization.pickling`)."""
        from .serialization.pickling import model_payload, restore

        return (restore, (model_payload(self),))

    # -- memory --------------------------------------------------------------------------------
    def memory_stats(self, **symbols: int) -> dict[str, int]:
        """Memory figures for the given values of the model's symbols (``memory_stats(N=256)``):
        ``arena_bytes`` (the arena as planned), ``intermediate_bytes`` (one buffer per tensor),
        ``liveness_bound_bytes`` (the most bytes live at any one step: no plan does better),
        ``workspace_bytes``, ``weight_bytes``, ``inplace_tensors`` and ``buffers``."""
        return self._generated.memory_stats(symbols)

    # -- profiling -----------------------------------------------------------------------------
    def profile(self, *arrays: object, repeat: int = 100) -> list[tuple[str, str, float]]:
        """Time per operator: runs a copy of the model compiled with timing code around every
        node ``repeat`` times on ``arrays``; returns ``(node, op type, seconds per call)``,
        slowest first. The model itself carries no timing code.
        """
        timed = Model(self.graph, passes=[], backend=self._backend, _profile=True)
        timed.infer(*arrays)  # warm-up (first-touch of the arena)
        base = list(timed._entry.profile(timed._session)[:len(self.graph.nodes)])
        for _ in range(repeat):
            timed.infer(*arrays)
        total = timed._entry.profile(timed._session)
        rows = [(n.name or n.outputs[0], n.op_type, (total[k] - base[k]) / repeat)
                for k, n in enumerate(self.graph.nodes)]
        return sorted(rows, key=lambda r: -r[2])

    # -- inference -----------------------------------------------------------------------------
    def _prepare_calls(self) -> None:
        """Precompute what every call needs (input checks, output shapes, ctypes argument arrays),
        so that a batch-1 call from Python costs little more than the generated code."""
        plans = []
        for info in self._in_infos:
            checks, simple = [], True
            for axis, d in enumerate(info.shape):
                if not isinstance(d, Dim):
                    checks.append((axis, None, int(d)))
                elif len(d.terms) == 1 and next(iter(d.terms.items()))[1] == 1 and len(d.symbols) == 1 \
                        and next(iter(d.terms))[0] in d.symbols and len(next(iter(d.terms))) == 1:
                    checks.append((axis, next(iter(d.symbols)), None))
                else:
                    simple = False
            plans.append((info.dtype.numpy, info.rank, tuple(checks), simple))
        self._in_plans = plans
        out_plans = []
        for info in self._out_infos:
            dims = []
            for d in info.shape:
                if not isinstance(d, Dim):
                    dims.append(int(d))
                elif len(d.terms) == 1 and next(iter(d.terms.values())) == 1 and len(next(iter(d.terms))) == 1:
                    dims.append(next(iter(d.terms))[0])
                else:
                    dims.append(d)
            out_plans.append((tuple(dims), info.dtype.numpy))
        self._out_plans = out_plans
        n_sym = len(self._symbols) + len(self._generated.data_symbols)
        self._call_arrays = ((ctypes.c_int64 * max(1, n_sym))(), (ctypes.c_void_p * max(1, len(self._in_infos)))(),
                             (ctypes.c_void_p * max(1, len(self._out_infos)))())
        self._sym_np = np.zeros(max(1, n_sym), dtype=np.int64)
        self._run_addr = ctypes.cast(self._entry.run, ctypes.c_void_p).value
        self._err_addr = ctypes.addressof(self._err)
        self._err_len = len(self._err)
        data_syms = self._generated.data_symbols
        simple_io = not self._io_types
        # the quick way in: a CPython builtin doing the whole quick path in C++ (jit/pycall.py);
        # without the headers it needs, typed arrays through cppyy (cling.fast_caller). The
        # general path calls run through ctypes (under the builtin's mutex when there is one).
        # Outputs sized by the data are cut by the builtin, which is given their dims as
        # polynomials over the symbols run fills (input symbols, then data-dependent ones).
        self._pyplan = None
        # the dims of outputs sized by the data, (output, axis, Dim): the general path cuts them too
        self._data_dims = [(j, axis, d) for j, info in enumerate(self._out_infos) for axis, d in enumerate(info.shape)
                           if isinstance(d, Dim) and d.symbols & set(data_syms)]
        if self._backend in ("cling", "native") and simple_io and len(data_syms) <= pycall.MAX_DATA_SYMBOLS:
            index = {name: k for k, name in enumerate([*self._symbols, *data_syms])}
            dyn = tuple((j, axis, tuple((c, *(index[name] for name in mono)) for mono, c in d.terms.items()))
                        for j, axis, d in self._data_dims)
            self._pyplan = pycall.make_plan(self._run_addr, self._session,
                                            [i.dtype.numpy.num for i in self._in_infos],
                                            [i.dtype.numpy.num for i in self._out_infos], len(index), dyn)
        self._quick = self._pyplan.quick if self._pyplan is not None else None
        self._run, self._run_target = ((self._pyplan.run, self._pyplan.target) if self._pyplan is not None
                                       else (self._entry.run, self._session))
        self._fast = (cling.fast_caller([i.dtype.cpp for i in self._in_infos], [i.dtype.cpp for i in self._out_infos])
                      if self._backend in ("cling", "native") and self._pyplan is None else None)
        # the signature cache of the quick path (see _signature): input shapes -> what a call with
        # arrays of those shapes needs; None where that path is off (no quick caller for these
        # dtypes, half-precision I/O, outputs sized by the data without the builtin)
        quick = (self._pyplan is not None or (self._fast is not None and not data_syms)) and simple_io
        self._signatures: dict[tuple, tuple | None] | None = {} if quick else None
        # a remembered signature skips the run-time limit: forget them all when the limit changes
        limits.on_run_limit_change(self._forget_checked_sizes)
        self._in_dtypes = tuple(info.dtype.numpy for info in self._in_infos)
        self._n_in = len(self._in_infos)

    #: how many input signatures (shape combinations) the quick path remembers before starting over
    MAX_SIGNATURES = 64

    def _signature(self, shapes: tuple) -> tuple | None:
        """What a call with C-contiguous inputs of the right dtypes and of shapes ``shapes`` needs
        (the first input's dtype, symbol values as the int64 array handed to ``run``, output
        shapes and dtypes), after the
        full checks of those shapes; None when such a call must take the general path (an empty
        array, which cppyy cannot pass). Raises InputError for shapes the model does not accept."""
        syms: dict[str, int] = {}
        for info, shape in zip(self._in_infos, shapes):
            self._bind(info, shape, syms)
        # outputs sized by the data are allocated at their upper bound (the builtin cuts them)
        syms.update({k: (b.evaluate(syms) if isinstance(b, Dim) else int(b))
                     for k, b in self._generated.data_symbols.items()})
        out_shapes = [tuple(d if type(d) is int else (syms[d] if type(d) is str else d.evaluate(syms))
                            for d in shape) for shape, _ in self._out_plans]
        # the quick path skips the run-time limit: a call above it is never remembered (it raises)
        self._check_run_bytes(syms)
        if any(0 in s for s in shapes) or any(0 in s for s in out_shapes):
            plan = None
        else:
            sym = np.zeros(max(1, len(self._symbols)), dtype=np.int64)
            sym[:len(self._symbols)] = [syms[name] for name in self._symbols]
            plan = (self._in_dtypes[0] if self._in_dtypes else None, sym,
                    tuple((s, dtype) for s, (_, dtype) in zip(out_shapes, self._out_plans)))
        if len(self._signatures) >= self.MAX_SIGNATURES:
            self._signatures.clear()
            if self._pyplan is not None:
                self._pyplan.clear()
        self._signatures[shapes] = plan
        if plan is not None and self._pyplan is not None:
            self._pyplan.add(shapes, tuple(int(v) for v in sym[:max(1, len(self._symbols))]),
                             tuple(s for s, _ in plan[2]))
        return plan

    def _try_signature(self, shapes: tuple) -> tuple | None:
        try:
            return self._signature(shapes)
        except (InputError, ResourceLimitError):  # the general path explains what is wrong
            return None

    def _forget_checked_sizes(self) -> None:
        """The run-time limit changed: sizes checked against the old one are checked again."""
        self._checked_syms = None
        if self._signatures:
            self._signatures.clear()
        if self._pyplan is not None:
            self._pyplan.clear()

    def _quick_outputs(self, specs: tuple, out: Sequence[np.ndarray], inputs: Sequence[np.ndarray]) -> list:
        """Check preallocated outputs against the output specs of a call; the list to write into."""
        if len(out) != len(specs):
            raise InputError(f"out: the model has {len(specs)} output(s), {len(out)} array(s) given")
        for j, (o, (shape, dtype), info) in enumerate(zip(out, specs, self._out_infos)):
            if type(o) is not np.ndarray or o.dtype != dtype or o.shape != shape:
                got = f"{type(o).__name__} {getattr(o, 'dtype', '')}{list(getattr(o, 'shape', []))}"
                raise InputError(f"out[{j}] (output {info.name!r}) must be a numpy array of {np.dtype(dtype).name} "
                                 f"and shape {list(shape)}, got {got}")
            if not (o.flags.c_contiguous and o.flags.writeable):
                raise InputError(f"out[{j}] (output {info.name!r}) must be C-contiguous and writeable")
            # arrays that own their memory (no base) are separate allocations: the costly check only for views
            if any(o is a or ((o.base is not None or a.base is not None) and np.may_share_memory(o, a))
                   for a in (*inputs, *out[:j])):
                raise InputError(f"out[{j}] (output {info.name!r}) overlaps an input or another output")
        return list(out)

    def infer(self, *arrays: object, out: Sequence[np.ndarray] | None = None, **named: object) -> list[np.ndarray]:
        """Run the model; returns one numpy array per graph output.

        Inputs are given positionally in the order of :attr:`inputs`, or by name. Arrays of a
        different float precision are cast (float64 -> float32); integer and bool arrays for a
        float input, a wrong rank, a wrong fixed dimension, or an incompatible dtype raise
        :class:`~sofie_root.InputError`. ``out``: preallocated output arrays (C-contiguous, of
        the outputs' dtypes and shapes, not overlapping the inputs), written and returned.

        Calls with C-contiguous numpy arrays of the exact dtypes take a quick path: the checks
        of a combination of input shapes are made once and remembered.
        """
        quick = self._quick
        if quick is not None and not named:  # all checks in C++; None: the paths below
            outs = quick(arrays, out)
            if outs is not None:
                return outs
        if out is not None and not isinstance(out, (list, tuple)):
            if "out" in self.graph.inputs and not named:  # a model input called "out", given by name
                named, out = {"out": out}, None
            else:
                raise InputError(f"out= takes a list of arrays, one per output, not a {type(out).__name__}")
        sigs = self._signatures
        if sigs is not None and not named and len(arrays) == self._n_in:
            if self._n_in == 1:  # the common case, without loops
                a = arrays[0]
                plan = sigs.get((a.shape,), _UNSEEN) if type(a) is np.ndarray else None
                if plan is _UNSEEN:  # remembered; this first call takes the general path (run-time limit)
                    self._try_signature((a.shape,))
                    plan = None
                if plan is not None and not ((a.dtype is plan[0] or a.dtype == plan[0]) and a.flags.c_contiguous):
                    plan = None
            else:
                shapes = tuple([a.shape for a in arrays if type(a) is np.ndarray])
                plan = sigs.get(shapes, _UNSEEN) if len(shapes) == self._n_in else None
                if plan is _UNSEEN:
                    # remembered for the next calls; this first one takes the general path, which
                    # holds the sizes to the run-time memory limit
                    self._try_signature(shapes)
                    plan = None
                if plan is not None:
                    for a, dtype in zip(arrays, self._in_dtypes):
                        if not ((a.dtype is dtype or a.dtype == dtype) and a.flags.c_contiguous):
                            plan = None
                            break
            if plan is not None and self._fast is not None:  # the cppyy way (no pycall builtin)
                _, sym, specs = plan
                if out is not None:
                    o = out[0] if len(out) == len(specs) == 1 else None
                    # one output array that owns its memory (so cannot overlap an input that is not
                    # itself) and fits: no further checks
                    if type(o) is np.ndarray and o.base is None and o.shape == specs[0][0] \
                            and o.dtype == specs[0][1] and o.flags.c_contiguous and o.flags.writeable \
                            and (arrays[0] is not o if self._n_in == 1 else all(a is not o for a in arrays)):
                        outs = [o]
                    else:
                        outs = self._quick_outputs(specs, out, arrays)
                elif len(specs) == 1:
                    outs = [np.empty(specs[0][0], specs[0][1])]
                else:
                    outs = [np.empty(shape, dtype) for shape, dtype in specs]
                with self._lock:
                    try:
                        rc = self._fast(self._run_addr, self._session, sym, *arrays, *outs, self._err_addr,
                                        self._err_len)
                    except TypeError:  # an array cppyy cannot convert: the general path
                        rc = None
                    if rc:
                        raise SofieError(f"inference failed: {self._err.value.decode(errors='replace')}")
                if rc is not None:
                    return outs
        args = arrays if (not named and len(arrays) == len(self._in_infos)) else self._collect(arrays, named)
        syms: dict[str, int] = {}
        prepared = []
        for plan, info, arr in zip(self._in_plans, self._in_infos, args):
            dtype, rank, checks, simple = plan
            a = arr
            if not (type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous):
                if info.name in self._io_types:  # a half-precision input, computed in float32
                    a = np.asarray(a).astype(np.float32)
                a = self._convert(info, a)
            shape = a.shape
            ok = simple and len(shape) == rank
            if ok:
                for axis, sym, value in checks:
                    got = shape[axis]
                    if sym is None:
                        if got != value:
                            ok = False
                            break
                    elif syms.setdefault(sym, got) != got:
                        ok = False
                        break
            if not ok:  # the full check, which also explains what is wrong
                again: dict[str, int] = {}
                for prev_info, prev in zip(self._in_infos, prepared):
                    self._bind(prev_info, prev.shape, again)
                self._bind(info, shape, again)
                syms.update(again)
            prepared.append(a)
        data_syms = self._generated.data_symbols
        # outputs sized by data-dependent symbols (NonZero) are allocated at their upper bound
        if data_syms:
            syms.update({k: (b.evaluate(syms) if isinstance(b, Dim) else int(b)) for k, b in data_syms.items()})
        if syms != self._checked_syms:  # a new batch size: bounded before anything is allocated
            self._check_run_bytes(syms)
        shapes = [tuple(d if type(d) is int else (syms[d] if type(d) is str else d.evaluate(syms)) for d in shape)
                  for shape, _ in self._out_plans]
        if out is not None:
            if data_syms or self._io_types:
                raise InputError("out= is not available for models with half-precision outputs or outputs "
                                 "sized by the data")
            outs = self._quick_outputs(tuple(zip(shapes, (d for _, d in self._out_plans))), out, prepared)
        else:
            try:
                outs = [np.empty(s, dtype=dtype) for s, (_, dtype) in zip(shapes, self._out_plans)]
            except MemoryError as e:  # under the run-time limit but above what this machine has
                raise ResourceLimitError(f"the outputs of this call do not fit in memory ({e}); use smaller "
                                         "batches") from None
        with self._lock:
            rc = None
            # cppyy cannot pass empty arrays (a batch of 0, a zero-size input): those take ctypes
            if self._fast is not None and all(a.size for a in prepared) and all(o.size for o in outs):
                sym_arr = self._sym_np
                for j, name in enumerate(self._symbols):
                    sym_arr[j] = syms[name]
                try:
                    rc = self._fast(self._run_addr, self._session, sym_arr, *prepared, *outs, self._err_addr,
                                    len(self._err))
                except TypeError:  # an array cppyy cannot convert: the ctypes way
                    rc = None
            if rc is None:
                sym_arr, in_ptrs, out_ptrs = self._call_arrays
                for j, name in enumerate(self._symbols):
                    sym_arr[j] = syms[name]
                for j, a in enumerate(prepared):
                    in_ptrs[j] = a.ctypes.data
                for j, o in enumerate(outs):
                    out_ptrs[j] = o.ctypes.data
                rc = self._run(self._run_target, sym_arr, in_ptrs, out_ptrs, self._err, len(self._err))
            if rc:
                raise SofieError(f"inference failed: {self._err.value.decode(errors='replace')}")
            data_values = [int(sym_arr[len(self._symbols) + j]) for j in range(len(data_syms))]
        if data_syms:
            actual = dict(syms)
            actual.update(zip(data_syms, data_values))
            shapes = {}
            for j, axis, d in self._data_dims:
                shapes.setdefault(j, list(outs[j].shape))[axis] = d.evaluate(actual)
            for j, shape in shapes.items():
                shape = tuple(shape)
                if shape != outs[j].shape:  # as the quick builtin (pycall.hxx) does: a view, or a
                    # copy of a part smaller than half the bound, which frees the bound
                    n = math.prod(shape)
                    cut = outs[j].reshape(-1)[:n].reshape(shape)
                    outs[j] = cut if 2 * n >= outs[j].size else cut.copy()
        if self._io_types:
            outs = [o.astype(half_dtype(self._io_types[i.name])) if i.name in self._io_types else o
                    for i, o in zip(self._out_infos, outs)]
        return outs

    def _check_run_bytes(self, syms: dict[str, int]) -> None:
        """Refuse a call whose outputs and arena would exceed the run-time memory limit
        (``sofie_root.set_limits(run_bytes=...)``), naming what needs the memory."""
        # syms holds the input symbols and the upper bounds of data-dependent sizes (NonZero)
        outputs = limits.run_bytes([(info.shape, info.dtype.itemsize) for info in self._out_infos], syms)
        arena = self._generated.arena
        arena_bytes = arena.arena_bytes({s: syms[s] for s in self._symbols}) if arena and arena.buffers else 0
        sizes = ", ".join(f"{k}={v}" for k, v in syms.items() if k in self._symbols)
        limits.check_run_bytes(outputs + arena_bytes,
                               f"a call with {sizes or 'these inputs'} (outputs {outputs} bytes, "
                               f"intermediates {arena_bytes} bytes)")
        self._checked_syms = dict(syms)

    def __call__(self, *arrays: object, **named: object) -> np.ndarray | list[np.ndarray]:
        """Like :meth:`infer`, but returns the array itself when the model has one output."""
        quick = self._quick
        outs = None
        if quick is not None and not named:
            outs = quick(arrays, None)
        if outs is None:
            outs = self.infer(*arrays, **named)
        return outs[0] if len(outs) == 1 else outs

    def _collect(self, arrays: Sequence[object], named: Mapping[str, object]) -> list[object]:
        names = self.graph.inputs
        if named:
            if arrays:
                raise InputError("give the inputs either all by position or all by name")
            unknown = sorted(set(named) - set(names))
            if unknown:
                raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {names}")
            missing = [n for n in names if n not in named]
            if missing:
                raise InputError(f"missing input(s) {missing}")
            return [named[n] for n in names]
        if len(arrays) != len(names):
            raise InputError(f"the model takes {len(names)} input(s) {names}, {len(arrays)} given")
        return list(arrays)

    @staticmethod
    def _convert(info, arr: object) -> np.ndarray:
        want = info.dtype.numpy
        if type(arr).__module__.partition(".")[0] == "awkward":
            from .rdf.padding import awkward_input  # jagged particle lists, padded as the RDF functor does

            arr = awkward_input(arr, info)
        try:
            a = np.asarray(arr)
        except Exception as e:
            raise InputError(f"input {info.name!r}: cannot be converted to an array ({e})") from e
        if a.dtype != want:
            ok = (a.dtype.kind == "f" and want.kind == "f") or \
                 (a.dtype.name == "bfloat16" and want.kind == "f") or \
                 (a.dtype.kind in "iu" and want.kind in "iu" and np.can_cast(a.dtype, want, "same_kind"))
            if not ok:
                hint = (" (integer and bool arrays are not cast to float: convert them explicitly, "
                        "e.g. x.astype(np.float32))" if a.dtype.kind in "iub" and want.kind == "f" else "")
                raise InputError(f"input {info.name!r} expects {want.name}, got an array of {a.dtype.name}{hint}")
            a = a.astype(want)
        if not info.shape and a.shape == (1,):
            a = a.reshape(())  # a one-element array where a scalar is expected
        return np.require(a, requirements="C")

    @staticmethod
    def _bind(info, shape: tuple[int, ...], syms: dict[str, int]) -> None:
        expected = info.shape
        pretty = "[" + ", ".join(str(d) for d in expected) + "]"
        if len(shape) != len(expected):
            raise InputError(f"input {info.name!r} expects shape {pretty} (rank {len(expected)}), "
                             f"got an array of shape {list(shape)}")
        deferred: list[tuple[int, DimLike]] = []
        for axis, (got, d) in enumerate(zip(shape, expected)):
            if isinstance(d, Dim):
                if len(d.terms) == 1 and next(iter(d.terms.items())) in (((s,), 1) for s in d.symbols):
                    (sym,) = d.symbols
                    if sym in syms and syms[sym] != got:
                        raise InputError(
                            f"input {info.name!r}: dimension {axis} ({sym}) is {got}, but {sym} is "
                            f"{syms[sym]} from another input")
                    syms[sym] = got
                else:
                    deferred.append((axis, d))
            elif got != d:
                raise InputError(f"input {info.name!r} expects shape {pretty}, got {list(shape)} "
                                 f"(dimension {axis} must be {d})")
        for axis, d in deferred:
            try:
                value = d.evaluate(syms)
            except KeyError:
                raise InputError(f"input {info.name!r}: dimension {axis} ({d}) cannot be matched") from None
            if value != shape[axis]:
                raise InputError(f"input {info.name!r}: dimension {axis} must be {d} = {value}, got {shape[axis]}")

    def __del__(self) -> None:
        session = getattr(self, "_session", None)
        if session:
            self._entry.destroy(session)
            self._session = None


class SpecializingModel(Model):
    """A model some of whose shapes depend on the values of graph inputs.

    Some models take a shape, an axis list or a count as a graph input (a Reshape target, Slice
    bounds, TopK's K). Code with those values unknown cannot be generated, so the model is
    compiled at the first call, with those inputs bound to the values given, and compiled again
    (and cached) when they change. Everything else about the model is as for :class:`Model`.
    """

    MAX_VARIANTS = 16

    def __init__(self, onnx_model, label: str, input_shapes, bound: list[str],
                 passes: Iterable[str] | None = None, *, backend: str | None = None, bind_shapes: bool = False):
        from .frontends.onnx import input_specs

        self._backend = native.resolve_backend(backend)
        self._onnx = onnx_model
        self._label = label
        self._input_shapes = input_shapes
        self._bound = list(bound)
        self._passes = passes
        self._specs = input_specs(onnx_model, label, input_shapes)
        # symbolic dimensions an operator needs as numbers (a Conv's input length): each call binds
        # every symbolic input dimension but the first (the batch) to the array's, and the
        # batch too if that is not enough (``_bind_batch``)
        self._bind_shapes = bind_shapes
        self._bind_batch = False
        self._variants: dict[tuple, Model] = {}
        self._last: Model | None = None
        # (number of bound inputs, (name, position, dtype, scalar) sorted by name, positions of
        # the other inputs): how _known_variant builds a variant's key without conversions
        self._key_plan: tuple | None = None
        self.compile_seconds = 0.0

    @property
    def bound_inputs(self) -> list[str]:
        """Graph inputs the model is specialised on (their values select the compiled variant)."""
        return list(self._bound)

    @property
    def graph(self) -> Graph:  # type: ignore[override]
        if self._last is None:
            raise SofieError(f"{self._label}: the model is compiled at its first call "
                             f"(it is specialised on the values of {self._bound})")
        return self._last.graph

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(i.name, i.dtype.numpy, tuple(str(d) if isinstance(d, Dim) else int(d) for d in i.shape))
                for i in self._specs]

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.graph and self._last.outputs  # type: ignore[union-attr]

    @property
    def source(self) -> str:
        return self.graph and self._last.source  # type: ignore[union-attr]

    @property
    def namespace(self) -> str:
        return self.graph and self._last.namespace  # type: ignore[union-attr]

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        return f"<sofie_root.Model {self._label!r} ({ins}), specialised on {self._bound}>"

    def infer(self, *arrays: object, out: Sequence[np.ndarray] | None = None, **named: object) -> list[np.ndarray]:
        if not named and not self._bind_shapes:  # a variant already compiled for these values: no conversions
            outs = self._known_variant(arrays, out)
            if outs is not None:
                return outs
        # imported here, after the quick way: a function-level import costs microseconds per call
        from .errors import DataDependentShapeError, SymbolicDimensionError
        from .frontends.onnx import convert_model, graph_input_ancestors

        names = [s.name for s in self._specs]
        if named:
            if arrays:
                raise InputError("give the inputs either all by position or all by name")
            missing = [n for n in names if n not in named]
            if missing or set(named) - set(names):
                raise InputError(f"the model's inputs are {names}; got {sorted(named)}")
            arrays = tuple(named[n] for n in names)
        if len(arrays) != len(names):
            raise InputError(f"the model takes {len(names)} input(s) {names}, {len(arrays)} given")
        by_name = {s.name: (s, a) for s, a in zip(self._specs, arrays)}
        while True:
            values = {n: Model._convert(by_name[n][0], by_name[n][1]) for n in self._bound}
            key = tuple((n, v.dtype.str, v.shape, v.tobytes()) for n, v in sorted(values.items()))
            shapes = self._input_shapes
            if self._bind_shapes:
                shapes = self._bound_shapes(arrays)
                key += tuple(sorted(shapes.items()))
            variant = self._variants.get(key)
            if variant is not None:
                break
            try:
                graph = convert_model(self._onnx, self._label, shapes, values)
            except SymbolicDimensionError:
                if not self._bind_shapes or self._bind_batch:
                    raise
                self._bind_batch = True
                continue
            except DataDependentShapeError as e:
                more = [n for n in graph_input_ancestors(self._onnx, e.tensor) if n not in self._bound]
                if not more:
                    raise
                self._bound.extend(more)
                continue
            variant = Model(graph, self._passes, backend=self._backend)
            self.compile_seconds += variant.compile_seconds
            if len(self._variants) >= self.MAX_VARIANTS:
                self._variants.pop(next(iter(self._variants)))
            self._variants[key] = variant
            break
        self._last = variant
        rest = [a for s, a in zip(self._specs, arrays) if s.name not in self._bound]
        return variant.infer(*rest, out=out)

    def _known_variant(self, arrays: tuple, out: Sequence[np.ndarray] | None) -> list[np.ndarray] | None:
        """The outputs of a call whose bound inputs are C-contiguous arrays of their exact dtypes
        (so the key is what ``infer`` would build after its conversions) and select a variant
        already compiled; None: ``infer``'s way (conversions, compilation, errors)."""
        plan = self._key_plan
        if plan is None or plan[0] != len(self._bound):
            by_name = {s.name: k for k, s in enumerate(self._specs)}
            keyed = tuple((n, by_name[n], self._specs[by_name[n]].dtype.numpy, self._specs[by_name[n]].dtype.numpy.str,
                           not self._specs[by_name[n]].shape) for n in sorted(self._bound))
            rest = tuple(k for k, s in enumerate(self._specs) if s.name not in self._bound)
            plan = self._key_plan = (len(self._bound), keyed, rest)
        _, keyed, rest = plan
        if len(arrays) != len(self._specs):
            return None
        key = []
        for name, k, dtype, dtype_str, scalar in keyed:
            a = arrays[k]
            if type(a) is not np.ndarray or a.dtype != dtype or not a.flags.c_contiguous or \
                    (scalar and a.shape == (1,)):
                return None
            key.append((name, dtype_str, a.shape, a.tobytes()))
        variant = self._variants.get(tuple(key))
        if variant is None:
            return None
        self._last = variant
        args = tuple([arrays[k] for k in rest])
        quick = variant._quick
        outs = quick(args, out) if quick is not None else None
        return outs if outs is not None else variant.infer(*args, out=out)

    def _bound_shapes(self, arrays: Sequence[object]) -> dict[str, tuple[int | str, ...]]:
        """Input shapes with the symbolic dimensions bound to those of ``arrays`` (the batch
        dimension kept symbolic unless ``_bind_batch``), checked against the declared shapes."""
        syms: dict[str, int] = {}
        out: dict[str, tuple[int | str, ...]] = {}
        for spec, arr in zip(self._specs, arrays):
            shape = Model._convert(spec, arr).shape
            Model._bind(spec, shape, syms)
            out[spec.name] = tuple(
                str(d) if axis == 0 and not self._bind_batch and isinstance(d, Dim) and str(d) in d.symbols
                else int(n) for axis, (d, n) in enumerate(zip(spec.shape, shape)))
        return out

    def __reduce__(self):
        """Pickle as the ONNX model and options; the receiving side compiles variants at first call."""
        from .serialization.pickling import restore, specializing_payload

        return (restore, (specializing_payload(self),))

    def save(self, path, name: str | None = None, **kwargs) -> str:  # type: ignore[override]
        raise SofieError(f"{self._label}: a model specialised on the values of {self._bound} cannot be "
                         "saved: its graph depends on those values (save the ONNX file instead)")

    def __del__(self) -> None:
        pass
