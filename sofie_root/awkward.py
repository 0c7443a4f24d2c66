"""Compiled models on awkward arrays, eagerly or lazily on dask-awkward collections (uproot, coffea).

:func:`apply` takes the argument vocabulary of :func:`sofie_root.rdf.define` (``columns`` or
``inputs={input: columns or Columns(...)}``, ``outputs``, ``pad``, ``sort_by``, ``layout``,
``dims``, ``variable``) and maps columns to model inputs with the same code
(:func:`sofie_root.rdf.plan.make_plan` and :func:`sofie_root.rdf.evaluate`), so its results are
the RDataFrame functor's on the same events.

What is new here is the event structure. Column names may be field paths into nested records
(``"Jet.pt"``), and the model may run below the event level: when the columns are lists deeper
than the model's input takes (a ``[N, F]`` model fed ``var * float`` jet fields, or a
``[N, P, F]`` model fed ``var * var * float`` particles of each jet), the outer list levels are
flattened, the model runs once on all their elements, and the result is put back in those lists:
a score per jet, in a jagged array with the jets' structure. The depth is the smallest one at
which the columns fit the model (``depth=`` fixes it: 0 is one row per event, as in
RDataFrame, 1 one row per element of each event's lists, ...).

On a dask-awkward collection (``uproot.dask(...)``, coffea's NanoEvents in dask mode) the result
is a lazy collection built with ``map_partitions``: the compiled model travels pickled (its IR
and weights, see :mod:`sofie_root.serialization.pickling`) and each worker process compiles it
once; the output type (``meta``) is known without running anything, and only the columns the
model reads are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError, SofieError

_CPP = {"float32": "float", "float64": "double", "int8": "signed char", "uint8": "unsigned char",
        "int16": "short", "uint16": "unsigned short", "int32": "int", "uint32": "unsigned int",
        "int64": "long long", "uint64": "unsigned long long", "bool": "bool"}

#: the options of :func:`apply` that describe the column mapping (passed on to ``make_plan``)
_PLAN_OPTIONS = ("columns", "inputs", "outputs", "pad", "sort_by", "descending", "layout", "dims", "variable")


def _ak():
    import awkward as ak

    return ak


def field(events, name: str):
    """The array of column ``name`` in ``events``: a field, or a dotted path into nested records
    (``"Jet.pt"``); None if there is none."""
    ak = _ak()
    fields = ak.fields(events)
    if name in fields:
        return events[name]
    if "." not in name:
        return None
    arr = events
    for part in name.split("."):
        if part not in ak.fields(arr):
            return None
        arr = arr[part]
    return arr


def _leaf_dtype(arr) -> str | None:
    ak = _ak()
    try:
        form = arr.layout.form
        while hasattr(form, "content"):
            form = form.content
        if hasattr(form, "contents"):  # a record or a union: not one number per element
            return None
        return np.dtype(form.primitive).name if hasattr(form, "primitive") else None
    except Exception:
        return ak.to_numpy(ak.flatten(arr, axis=None)[:0]).dtype.name


def _type_at_depth(events, depth: int):
    """``type_of`` for ``make_plan``: a column's C++ type with ``depth`` outer list levels removed."""
    def type_of(col: str) -> str | None:
        arr = field(events, col)
        if arr is None:
            return None
        leaf = _leaf_dtype(arr)
        t = _CPP.get(leaf or "")
        if t is None:
            return f"unsupported<{leaf or arr.type}>"
        inner = arr.ndim - depth
        if inner == 1:
            return t
        if inner == 2:
            return f"ROOT::VecOps::RVec<{t}>"
        return f"unsupported<{inner - 1} list levels below depth {depth}>"

    return type_of


def _plan(model, events, depth: int | None, options: Mapping[str, Any]):
    """(plan, depth): the plan at the given depth, or at the smallest depth where the columns fit."""
    from sofie_root.rdf.plan import make_plan

    kw = {k: v for k, v in options.items() if k != "columns"}
    if depth is not None:
        return make_plan(model, options.get("columns"), type_of=_type_at_depth(events, depth), **kw), depth
    first_error = None
    for d in range(0, 4):
        try:
            return make_plan(model, options.get("columns"), type_of=_type_at_depth(events, d), **kw), d
        except SofieError as e:
            first_error = first_error or e
    raise first_error


def _used_columns(plan) -> list[str]:
    cols: list[str] = []
    for p in plan.inputs:
        for c in (*p.columns, p.sort_by):
            if c and c not in cols:
                cols.append(c)
    return cols


def _flat_events(events, plan, depth: int):
    """(flat record array of the used columns with ``depth`` list levels flattened, [counts per level])."""
    ak = _ak()
    cols = _used_columns(plan)
    arrays = {c: field(events, c) for c in cols}
    counts: list[np.ndarray] = []
    for level in range(depth):
        ref_name, ref = cols[0], arrays[cols[0]]
        n = np.asarray(ak.to_numpy(ak.num(ref, axis=1)), dtype=np.int64)
        for c in cols[1:]:
            other = np.asarray(ak.to_numpy(ak.num(arrays[c], axis=1)), dtype=np.int64)
            if other.shape != n.shape or np.any(other != n):
                raise InputError(f"columns {ref_name!r} and {c!r} have lists of different lengths at depth {level + 1}: "
                                 f"they cannot be read as one row per element")
        counts.append(n)
        arrays = {c: ak.flatten(a, axis=1) for c, a in arrays.items()}
    return ak.Array(arrays), counts


def _apply_eager(model, events, depth: int | None, options: Mapping[str, Any], batch_size: int):
    from sofie_root.rdf.padding import evaluate

    ak = _ak()
    plan, depth = _plan(model, events, depth, options)
    flat, counts = _flat_events(events, plan, depth)
    result = evaluate(model, flat, options.get("columns"), batch_size=batch_size,
                      **{k: v for k, v in options.items() if k != "columns"})
    if plan.variable:
        out = ak.Array([np.asarray(r, dtype=np.float32) for r in result]) if len(result) else \
            ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(np.zeros(1, np.int64)),
                                                 ak.contents.NumpyArray(np.zeros(0, np.float32))))
    else:
        out = ak.Array(np.asarray(result))
        if out.ndim == 2:
            out = ak.to_regular(out, axis=1)
    for n in reversed(counts):
        out = ak.unflatten(out, n)
    return out


def _partition(events, model, depth: int | None, options: Mapping[str, Any], batch_size: int):
    """One dask-awkward partition (or the typetracer pass that finds the columns and the type)."""
    ak = _ak()
    if ak.backend(events) == "typetracer":
        plan, depth = _plan(model, ak.Array(events.layout.form.length_zero_array()), depth, options)
        for c in _used_columns(plan):
            ak.typetracer.touch_data(field(events, c))
        return _typetracer_output(model, events, depth, options)
    return _apply_eager(model, events, depth, options, batch_size)


def _typetracer_output(model, events, depth, options):
    ak = _ak()
    empty = ak.Array(events.layout.form.length_zero_array())
    out = _apply_eager(model, empty, depth, options, 1)
    return ak.Array(out.layout.to_typetracer(forget_length=True))


def apply(model, events, columns: Sequence[str] | None = None, *, inputs: Mapping | None = None, outputs=None,
          pad: float = 0.0, sort_by: str | None = None, descending: bool = True, layout: str | None = None,
          dims: Mapping[str, int] | None = None, variable: bool = False, depth: int | None = None,
          batch_size: int = 4096):
    """Run ``model`` on awkward ``events`` (or lazily on a dask-awkward collection).

    Args:
        model: a :class:`~sofie_root.Model` or anything :func:`sofie_root.compile` takes.
        events: an ``ak.Array`` of records (``uproot``'s ``tree.arrays()``, coffea NanoEvents) or a
            ``dask_awkward.Array`` (``uproot.dask(...)``).
        columns, inputs, outputs, pad, sort_by, descending, layout, dims, variable: as for
            :func:`sofie_root.rdf.functor`; column names may be dotted field paths (``"Jet.pt"``).
        depth: the list level the model runs at (0: one row per event; 1: one per element of the
            events' lists, e.g. per jet; None: the smallest depth at which the columns fit).
        batch_size: events per ``infer`` call.

    Returns:
        an ``ak.Array`` (``dask_awkward.Array`` for a lazy input) with one entry per event:
        a number for a single-valued output, a list of K numbers for K values (the selected
        outputs concatenated, as the functor's ``RVecF``), per-event lists for ``variable``
        graphs; nested in the events' lists when ``depth`` > 0 (a score per jet).

    Raises:
        SofieError: as :func:`sofie_root.rdf.functor` (missing column, wrong count, ...), and
            :class:`~sofie_root.InputError` when columns read per element have lists of
            different lengths.

    >>> scores = sofie_root.awkward.apply(model, events, ["Jet.pt", "Jet.eta", "Jet.btag"])   # doctest: +SKIP
    """
    from sofie_root.rdf.functor import load_model

    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 0):
        raise SofieError(f"depth must be a non-negative integer, got {depth!r}")
    m, _ = load_model(model)
    options = {"columns": columns, "inputs": inputs, "outputs": outputs, "pad": pad, "sort_by": sort_by,
               "descending": descending, "layout": layout, "dims": dict(dims) if dims else None,
               "variable": variable}
    if type(events).__module__.startswith("dask_awkward"):
        return _apply_lazy(m, events, depth, options, batch_size)
    ak = _ak()
    if isinstance(events, Mapping):
        events = ak.Array(dict(events))
    elif not isinstance(events, ak.Array):
        raise SofieError(f"events must be an awkward or dask-awkward array, got {type(events).__name__}")
    return _apply_eager(m, events, depth, options, batch_size)


def _apply_lazy(model, events, depth, options, batch_size):
    import dask_awkward as dak
    from dask.base import tokenize

    meta = _typetracer_output(model, events._meta, _plan(model, _zero(events), depth, options)[1], options)
    token = tokenize(model.hash, model.backend, events.name, depth, repr(sorted(options.items(), key=str)),
                     batch_size)
    return dak.map_partitions(_partition, events, model, depth, options, batch_size, label="sofie-apply",
                              token=token, meta=meta)


def _zero(events):
    ak = _ak()
    return ak.Array(events._meta.layout.form.length_zero_array())
