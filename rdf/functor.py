"""``sofie_root.functor`` and ``sofie_root.rdf.define``: compiled models as RDataFrame columns.

The functor is a C++ object (a cppyy instance of a generated struct with ``operator()``), so
``df.Define("score", f, f.columns)`` runs it on every thread with no Python in the event loop.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sofie_root.errors import FunctorError, SofieError

from . import codegen
from .plan import Columns, Plan, make_plan, stored_columns

_lock = threading.RLock()
_declared: set[str] = set()
_models: dict[tuple, object] = {}

#: Workspace slots a functor can serve (RDataFrame slots, or threads for the plain form).
MIN_CAPACITY = 256


def split_key(spec: str) -> tuple[str, str | None]:
    """``"models.root:tagger"`` -> ``("models.root", "tagger")``; other paths -> ``(path, None)``."""
    head, sep, key = spec.rpartition(":")
    if sep and head.lower().endswith(".root") and key and "/" not in key:
        return head, key
    return spec, None


def load_model_source(model_or_path) -> tuple[object, Path | None, str | None]:
    """A compiled :class:`~sofie_root.Model`, the file it came from (None if not from a file) and
    the model's name inside that file (``"file.root:name"``; None otherwise).

    Paths (``.onnx``, ``.root``, ``.root:name``) are compiled with :func:`sofie_root.compile` once per
    process and cached by path, size and modification time.
    """
    from sofie_root.model import Model

    if isinstance(model_or_path, Model):
        return model_or_path, None, None
    if isinstance(model_or_path, (str, os.PathLike)):
        import sofie_root

        file, key = split_key(os.fspath(model_or_path))
        path = Path(file).resolve()
        try:
            st = path.stat()
        except OSError as e:
            raise SofieError(f"model file {file!r} cannot be read: {e}") from e
        cache = (str(path), key, st.st_size, st.st_mtime_ns)
        with _lock:
            model = _models.get(cache)
            if model is None:
                model = sofie_root.compile(f"{path}:{key}" if key else path)
                _models[cache] = model
        return model, path, key
    import sofie_root

    return sofie_root.compile(model_or_path), None, None


def load_model(model_or_path) -> tuple[object, Path | None]:
    """A compiled :class:`~sofie_root.Model` and the file it came from (None if not from a file)."""
    model, path, _ = load_model_source(model_or_path)
    return model, path


def root():
    """ROOT, with the sofie_root runtime and the RDataFrame adapter header declared."""
    from sofie_root.jit import cling

    ROOT = cling.root()
    with _lock:
        if "__header__" not in _declared:
            cling._declare(ROOT, cling.optimized(codegen.HEADER_PATH.read_text()), "the sofie_root RDF header")
            _declared.add("__header__")
            _make_sofie_error(ROOT.sofie_rdf.Error)
    return ROOT


def _make_sofie_error(cls) -> None:
    """Give the Python class of the C++ ``sofie_rdf::Error`` FunctorError as a base: cppyy turns
    the C++ exception an event loop rethrows into an instance of that class."""
    if not issubclass(cls, FunctorError):
        cls.__bases__ = (*cls.__bases__, FunctorError)


def declare(plan: Plan, ns: str | None = None) -> str:
    """Declare the functor code of ``plan`` (once per process); returns its C++ namespace
    (``ns`` if given, else one derived from the plan)."""
    from sofie_root.jit import cling

    ns = ns or codegen.namespace(plan)
    ROOT = root()
    with _lock:
        if ns not in _declared:
            if not cling.is_declared(plan.namespace):
                raise SofieError(f"the model code {plan.namespace} is not declared in this process")
            cling._declare(ROOT, cling.optimized(codegen.generate(plan, ns)), f"RDataFrame functor {ns}")
            _declared.add(ns)
    return ns


def fingerprint(model) -> str:
    """A digest of a model's generated code and weights that does not depend on where it was
    loaded from (its C++ namespace does), to check that workers run the very same model."""
    return code_fingerprint(model.source, model.namespace, model._blob)


def code_fingerprint(source: str, namespace: str, weights) -> str:
    """:func:`fingerprint` of generated code (declaring ``namespace``) and its weight blob."""
    import hashlib

    h = hashlib.sha1(source.replace(namespace, "NS").encode())
    h.update(weights.tobytes())
    return h.hexdigest()


def _capacity(ROOT, nslots: int | None) -> int:
    n = MIN_CAPACITY
    try:
        n = max(n, int(ROOT.GetThreadPoolSize()))
    except Exception:
        pass
    return max(n, int(nslots or 0))


def _weights(model):
    """The model's weight blob; the caller keeps it alive while C++ copies from its address
    (``Model._blob`` is rebuilt on each access, so an address alone would dangle)."""
    return model._blob


def _type_lookup(df) -> Callable[[str], str | None]:
    def type_of(col: str) -> str | None:
        try:
            return str(df.GetColumnType(col))
        except Exception:
            return None

    return type_of


def _explicit_types(types, plan_columns: Sequence[str] | None) -> dict[str, str]:
    if types is None:
        return {}
    if isinstance(types, Mapping):
        return {str(k): str(v) for k, v in types.items()}
    types = list(types)
    if plan_columns is None or len(types) != len(plan_columns):
        raise SofieError("types given as a list must match columns one to one; give a dict {column: type} otherwise")
    return dict(zip(plan_columns, map(str, types)))


def functor(model, columns: Sequence[str] | None = None, *, inputs: Mapping | None = None, outputs=None,
            df=None, types=None, pad: float = 0.0, sort_by: str | None = None, descending: bool = True,
            layout: str | None = None, dims: Mapping[str, int] | None = None, slot: bool = False,
            variable: bool = False):
    """A C++ callable running ``model`` on one event, for ``RDataFrame.Define`` / ``DefineSlot``.

    Args:
        model: a :class:`~sofie_root.Model`, or a path to a model file (``.onnx``; ``.root`` files
            are read by :func:`sofie_root.compile`), or anything :func:`sofie_root.compile` takes.
        columns: the columns feeding a single-input model, in the model's feature order. Scalar
            columns of any arithmetic type form a ``[1, F]`` input; ``RVec`` columns (one per
            feature) form a ``[1, P, F]`` or ``[1, F, P]`` input, truncated or padded to P.
            Omitted: the column names stored with the model (``model.column_hints``, kept in .root
            files, or the metadata ``sofie_root.columns``); without those (and without ``df``),
            one argument per feature, in the model's order, for ``df.Define(name, f, columns)``.
        inputs: for several inputs, ``{input_name: columns or Columns(...)}`` (all inputs must be fed).
        outputs: the output(s) returned: a name, an index or a list (concatenated). A single
            value is returned as ``float``, anything else as ``ROOT::RVecF``.
        df: the dataframe the functor will be used on: column types are read from it and
            everything is checked now (column existence, types, counts), before any event runs.
            Without it, scalar columns are taken to have the model's element type (``float``) and
            collections to be ``RVec`` of it; ``types`` overrides ({column: "double", ...}).
        pad, sort_by, descending, layout: options for collection columns (see :class:`Columns`).
        dims: values of symbolic model dimensions other than the batch (e.g. ``{"P": 50}``).
        slot: return the slot-aware form (``operator()(unsigned slot, columns...)``) for
            ``df.DefineSlot(name, f, f.columns)`` or ``df.Define(name, f, ["rdfslot_", *f.columns])``.
        variable: collection columns given as plain lists are not padded: the model's symbolic
            dimension they fill (a graph network's ``nodes`` and ``edges``) takes their length in
            each event (see ``Columns(..., variable=True)``, also per group, and ``index_of`` for
            node-index columns). Inputs may then be ``[n]``, ``[n, F]`` or ``[F, n]`` (graph
            networks) as well as ``[1, n, F]``/``[1, F, n]``. Per event the functor checks that
            the columns giving one dimension have equal lengths and that index columns stay
            within the indexed input, and stops the event loop with an error naming the column
            and the values otherwise. Outputs whose size depends on these dimensions (per-node
            outputs ``[n, K]``) are returned as ``ROOT::RVecF`` of ``n * K`` values (row-major);
            graph-level outputs as ``float`` or ``RVecF`` as usual. Buffers grow only when an
            event is larger than all earlier ones (``f.allocations()`` counts the growths).

    Returns:
        a cppyy object: ``f.columns`` is the column list to give to ``Define``, ``f.plan`` the
        resolved mapping, ``f.sessions()`` the number of Sessions created so far,
        ``f.allocations()`` the buffer growths of variable-size inputs and outputs so far (read
        them between event loops). Copies of it (RDataFrame copies its callables) share the
        weights and the per-slot Sessions.

    Raises:
        SofieError: a column missing or of a non-arithmetic type, a wrong number of columns for
            an input, a model input left unfed, an output that does not exist.

    >>> f = sofie_root.functor("higgs.onnx", ["m_jj", "m_jjj", "m_lv"], df=df)   # doctest: +SKIP
    >>> df = df.Define("score", f, f.columns)                                    # doctest: +SKIP

    A graph network (``sofie_root.GraphNetwork``) over tracks, one graph per event:

    >>> f = sofie_root.functor(gnn, inputs={"nodes": ["trk_pt", "trk_eta", "trk_phi"],     # doctest: +SKIP
    ...                                     "edges": ["edge_dr"], "senders": ["edge_src"],
    ...                                     "receivers": ["edge_dst"], "globals": ["ntrk"]},
    ...                        outputs="nodes_out", variable=True, df=df)
    """
    try:
        return _functor(model, columns, inputs=inputs, outputs=outputs, df=df, types=types, pad=pad,
                        sort_by=sort_by, descending=descending, layout=layout, dims=dims, slot=slot,
                        variable=variable)
    except SofieError:
        raise
    except Exception as e:  # MemoryError, or a bug: never a bare Python error (issue 11)
        raise FunctorError(f"making the RDataFrame functor of {_describe(model)} failed: "
                           f"{type(e).__name__}: {e}") from e


def _describe(model) -> str:
    name = getattr(getattr(model, "graph", None), "name", None)
    return f"model {name!r}" if name is not None else f"model {str(model)[:200]!r}"


def _functor(model, columns, *, inputs, outputs, df, types, pad, sort_by, descending, layout, dims, slot, variable):
    m, _ = load_model(model)
    if getattr(m, "backend", "cling") in ("cuda", "hip", "gpu-emulated"):
        raise SofieError(f"RDataFrame functors run the model's C++ code on the CPU; this model was compiled for "
                         f"the {m.backend} backend: compile it with backend='cling' or 'native' for RDataFrame")
    if columns is None and inputs is None and df is None and stored_columns(m) is None:
        inputs = _placeholder_inputs(m)
    col_list = None if columns is None else ([columns] if isinstance(columns, str) else
                                             (list(columns.names) if isinstance(columns, Columns) else list(columns)))
    plan = make_plan(m, columns, inputs=inputs, outputs=outputs, pad=pad, sort_by=sort_by, descending=descending,
                     layout=layout, dims=dims, column_types=_explicit_types(types, col_list),
                     type_of=_type_lookup(df) if df is not None else None, variable=variable)
    return _instantiate(m, plan, slot=slot, nslots=_nslots(df))


def _placeholder_inputs(model) -> dict[str, list[str]]:
    """Argument names for a functor made without columns (``df.Define(name, functor(m), cols)``):
    F scalars for a [N, F] input, F collections for a [N, P, F] one, in the model's order."""
    from sofie_root.ir.dims import Dim

    inputs = {}
    for info in model.graph.input_infos:
        last = info.shape[-1] if info.shape else None
        if last is None or isinstance(last, Dim) or len(info.shape) not in (2, 3):
            raise SofieError(f"input {info.name!r} (shape {list(map(str, info.shape))}): give the columns, "
                             f"the number of columns cannot be read from the model")
        inputs[info.name] = [f"{info.name}[{i}]" for i in range(int(last))]
    return inputs


def _nslots(df) -> int | None:
    if df is None:
        return None
    try:
        return int(df.GetNSlots())
    except Exception:
        return None


def _instantiate(model, plan: Plan, *, slot: bool, nslots: int | None = None):
    ns = declare(plan)
    ROOT = root()
    cls = getattr(getattr(ROOT, ns), "SlotFunctor" if slot else "Functor")
    blob = _weights(model)
    try:
        obj = cls(int(blob.ctypes.data) if blob.size else 0, int(blob.size), _capacity(ROOT, nslots))
    except Exception as e:
        raise SofieError(f"creating the functor failed: {e}") from e
    obj.columns = list(plan.args)
    obj.plan = plan
    # pickling (the functor class is specific to this plan): the model travels as its IR and
    # weights (sofie_root.serialization.pickling) and the functor is created again around it
    obj._sofie_pickle = (model, plan, slot, nslots)
    if "__reduce__" not in cls.__dict__:
        cls.__reduce__ = _reduce_functor
    return obj


def _reduce_functor(self):
    return (_rebuild_functor, self._sofie_pickle)


def _rebuild_functor(model, plan: Plan, slot: bool, nslots: int | None):
    """The functor of an unpickled model; its namespace is the model's in this process."""
    from dataclasses import replace

    if plan.namespace != getattr(model, "namespace", None):
        plan = replace(plan, namespace=model.namespace)
    return _instantiate(model, plan, slot=slot, nslots=nslots)


def define(df, name: str, model, columns: Sequence[str] | None = None, **options):
    """``df`` with a new column ``name`` holding ``model``'s output, one Session per slot.

    The same arguments as :func:`functor` (``inputs``, ``outputs``, ``pad``, ``sort_by``, ...);
    columns are checked against ``df`` now. On a distributed dataframe
    (``ROOT.RDataFrame(..., executor=client)``) the model file is shipped to the workers and
    the code is declared there (see :mod:`sofie_root.rdf.distributed`).

    >>> df = sofie_root.rdf.define(df, "score", "higgs.onnx", ["m_jj", "m_jjj", "m_lv"])  # doctest: +SKIP
    """
    from .distributed import is_distributed

    if is_distributed(df):
        from .distributed import define as ddefine

        return ddefine(df, name, model, columns, **options)
    slot = options.pop("slot", True) is not False
    f = functor(model, columns, df=df, slot=slot, **options)
    try:
        return (df.DefineSlot if slot else df.Define)(name, f, list(f.columns))
    except Exception as e:  # RDataFrame refuses the column (a name already defined, ...)
        raise FunctorError(f"defining column {name!r} from {_describe(model)} failed: {e}") from e
