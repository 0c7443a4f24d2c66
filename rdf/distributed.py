"""Models in distributed RDataFrame (``ROOT.RDataFrame(..., executor=dask_client)``).

No C++ object can travel to the workers (cppyy objects do not pickle), so a distributed
``define`` works in three steps:

1. the model *file* is shipped with ``ROOT.RDF.Distributed.DistributeFiles`` (the ``.onnx`` or
   ``.root`` file the model came from; for a model built in memory, an ``.npz`` holding its
   generated C++ and its weights);
2. an initialisation function registered with ``ROOT.RDF.Distributed.initialize`` runs on every
   worker process before its tasks (and once locally): it compiles the shipped model, checks it
   is the very same model (same content hash), declares the functor code and creates one
   process-wide instance of it (:func:`setup`); a process does this once;
3. the column is defined with a string expression, ``sofie_rdf_<key>::eval(rdfslot_, cols...)``,
   which each task JIT-compiles against the declared code: one Session per slot on each worker.

``ROOT.RDF.Distributed.initialize`` keeps a single function; :func:`define` wraps whatever
function was registered before it, so a user's own initialisation keeps running (register
yours *before* calling :func:`define`, or call it from yours).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from sofie_root.errors import SofieError

from .plan import Columns, Plan, make_plan

_lock = threading.Lock()
_ready: set[str] = set()  # functor namespaces initialised in this process
_setups: dict[str, tuple] = {}  # namespace -> arguments of setup(), registered in this (client) process


def is_distributed(df) -> bool:
    """True for a distributed RDataFrame (a node of ``ROOT.RDataFrame(..., executor=...)``)."""
    return type(df).__module__.startswith("ROOT._distrdf")


def _export(model, digest: str) -> Path:
    """An .npz with the model's generated C++ and weights, for a model that has no file.

    Named by ``digest`` (:func:`~.functor.fingerprint`: code and weights), not only by the model's
    namespace, which hashes the graph and weights but not the C++ generated for them: an export
    left in the shared temporary directory by another sofie_root version would otherwise be reused
    and the workers would run that version's code.
    """
    d = Path(tempfile.gettempdir()) / f"sofie_root_rdf_{os.getuid() if hasattr(os, 'getuid') else 'u'}"
    d.mkdir(exist_ok=True)
    path = d / f"{model.namespace}_{digest[:20]}.npz"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, source=np.array(model.source), weights=model._blob)
        os.replace(tmp, path)
    return path


def _companion_files(path: Path) -> list[Path] | None:
    """Files a model file needs beside it: an ONNX model's external weight data. None if they
    cannot be shipped flat next to it (locations in sub-directories)."""
    if path.suffix.lower() != ".onnx":
        return []
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    locations: set[str] = set()

    def scan(graph) -> None:
        for t in graph.initializer:
            for entry in t.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
        for node in graph.node:
            for a in node.attribute:
                if a.g is not None and a.HasField("g"):
                    scan(a.g)
                for g in a.graphs:
                    scan(g)

    scan(proto.graph)
    if any(Path(loc).name != loc for loc in locations):
        return None
    return [path.parent / loc for loc in sorted(locations)]


def _local_copy(basename: str, original: str) -> Path:
    """Where a shipped file is in this process: the Dask worker's directory, else the original path."""
    try:
        from distributed import get_worker

        p = Path(get_worker().local_directory) / basename
        if p.exists():
            return p
    except (ImportError, ValueError):
        pass
    return Path(original)


def setup(basename: str, original: str, kind: str, plan: Plan, digest: str, key: str | None = None) -> None:
    """Declare ``plan``'s functor in this process and create its shared instance (idempotent).

    Runs on every distributed worker (through ``ROOT.RDF.Distributed.initialize``) and locally.
    """
    from sofie_root.jit import cling

    from . import codegen
    from .functor import _capacity, code_fingerprint, declare, fingerprint, load_model, root

    ns = codegen.namespace(plan)
    with _lock:
        if ns in _ready:
            return
        path = _local_copy(basename, original)
        if kind == "model":
            model, _ = load_model(f"{path}:{key}" if key else path)
            if fingerprint(model) != digest:
                raise SofieError(f"{path}: the model compiled on this worker differs from the one the column "
                                 f"was defined with (another sofie_root version or another file?)")
            weights = model._blob
            local_plan = replace(plan, namespace=model.namespace)
        else:
            with np.load(path) as z:
                source, weights = str(z["source"]), np.array(z["weights"])
            if code_fingerprint(source, plan.namespace, weights) != digest:
                raise SofieError(f"{path}: the model code shipped to this worker differs from the one the column "
                                 f"was defined with (a stale or foreign export?)")
            cling.declare_model(plan.namespace, source)
            local_plan = plan
        declare(local_plan, ns)
        ROOT = root()
        getattr(ROOT, ns).init(int(weights.ctypes.data) if weights.size else 0, int(weights.size),
                               _capacity(ROOT, None))
        _ready.add(ns)


def _run_setups(setups: dict[str, tuple], previous: Callable | None = None) -> None:
    if previous is not None:
        previous()
    for args in setups.values():
        setup(*args)


def _register(ns: str, args: tuple) -> None:
    import ROOT
    from ROOT._distrdf.Backends import Base

    current = Base.BaseBackend.initialization
    previous = None
    func = getattr(current, "func", None)
    if func is _run_setups:
        previous = current.keywords.get("previous")
    elif not (func is None and getattr(current, "__name__", "") == "<lambda>"):
        previous = current
    _setups[ns] = args
    ROOT.RDF.Distributed.initialize(partial(_run_setups, dict(_setups), previous=previous))


def define(df, name: str, model, columns: Sequence[str] | None = None, **options):
    """Distributed counterpart of :func:`sofie_root.rdf.define` (called by it for distributed dataframes).

    Columns are checked here, against the dataframe's schema, before anything is sent.
    """
    import ROOT

    from . import codegen
    from .functor import _explicit_types, _type_lookup, fingerprint, load_model_source

    options.pop("slot", None)
    types = options.pop("types", None)
    m, path, key = load_model_source(model)
    col_list = None if columns is None else ([columns] if isinstance(columns, str) else
                                             (list(columns.names) if isinstance(columns, Columns) else list(columns)))
    plan = make_plan(m, columns, column_types=_explicit_types(types, col_list), type_of=_type_lookup(df), **options)
    kind, files = "model", []
    if path is not None:
        companions = _companion_files(Path(path))
        if companions is None:
            path = None  # external data in sub-directories: ship the compiled form instead
        else:
            files = companions
    digest = fingerprint(m)
    if path is None:
        path, kind = _export(m, digest), "npz"
    ROOT.RDF.Distributed.DistributeFiles([str(path), *map(str, files)])
    ns = codegen.namespace(plan)
    _register(ns, (path.name, str(path), kind, plan, digest, key if kind == "model" else None))
    args = ", ".join(["rdfslot_", *plan.args])
    return df.Define(name, f"{ns}::eval({args})")
