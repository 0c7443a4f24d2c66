"""Jagged particle lists (awkward arrays) to fixed-size model inputs, in numpy.

This is the Python twin of the C++ column adapters in ``sofie_rdf.hxx``: the same truncation to
P, the same pad value, the same stable ordering by a key column (ties keep their stored order),
the same element conversion. ``model.infer`` uses it for awkward inputs, and :func:`evaluate` runs
a model on awkward events with exactly the mapping a functor would use, so columnar
(coffea-style) and RDataFrame results agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sofie_root.errors import InputError, SofieError


def _ak():
    import awkward as ak

    return ak


def _jagged_parts(col, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(counts, flat values) of a one-level jagged array."""
    ak = _ak()
    arr = ak.Array(col) if not isinstance(col, ak.Array) else col
    if arr.ndim != 2:
        raise InputError(f"{what}: expected a jagged list per event (N * var * number), got type {arr.type}")
    counts = np.asarray(ak.to_numpy(ak.num(arr, axis=1)), dtype=np.int64)
    flat = ak.to_numpy(ak.flatten(arr, axis=1))
    return counts, np.asarray(flat)


def pad_jagged(columns: Sequence, length: int, *, pad: float = 0.0, sort_by=None, descending: bool = True,
               layout: str = "PF", dtype="float32", names: Sequence[str] | None = None) -> np.ndarray:
    """Pad or truncate per-event lists to ``length`` and stack them as features.

    Args:
        columns: F jagged arrays (``N * var * number``), one per feature, of equal list lengths.
        length: P, the number of elements kept per event.
        pad: value of the positions beyond an event's list.
        sort_by: a jagged array (one of ``columns`` or another) whose values order each event's
            elements before truncation; ties keep their stored order.
        descending: order by decreasing key (the default).
        layout: ``"PF"`` gives ``[N, P, F]``, ``"FP"`` gives ``[N, F, P]``, ``"P"`` (one column) ``[N, P]``.
        dtype: element type of the result.

    >>> pad_jagged([pt, eta], 3, sort_by=pt)   # doctest: +SKIP
    """
    if not columns:
        raise SofieError("pad_jagged needs at least one column")
    names = list(names) if names is not None else [f"column {i}" for i in range(len(columns))]
    parts = [_jagged_parts(c, n) for c, n in zip(columns, names)]
    counts = parts[0][0]
    for (c, _), n in zip(parts[1:], names[1:]):
        if c.shape != counts.shape or np.any(c != counts):
            raise InputError(f"{n} has lists of other lengths than {names[0]}")
    N, P, F = len(counts), int(length), len(parts)
    offsets = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    evt = np.repeat(np.arange(N, dtype=np.int64), counts)
    if sort_by is not None:
        kc, key = _jagged_parts(sort_by, "sort_by")
        if kc.shape != counts.shape or np.any(kc != counts):
            raise InputError("the sort_by column has lists of other lengths than the features")
        if key.dtype.kind in "iub":
            k = key.astype(np.int64) if key.dtype != np.uint64 else key.astype(np.float64)
        else:
            k = key.astype(np.float64)
        order = np.lexsort((-k if descending else k, evt))  # by event, then key; stable for ties
    else:
        order = np.arange(len(evt), dtype=np.int64)
    pos = np.arange(len(evt), dtype=np.int64) - offsets[evt]  # position within the (ordered) event
    keep = pos < P
    src = order[keep]
    e, p = evt[keep], pos[keep]
    out_dtype = np.dtype(dtype)
    if layout == "P":
        if F != 1:
            raise SofieError("layout 'P' takes a single column")
        out = np.full((N, P), pad, dtype=out_dtype)
        out[e, p] = parts[0][1][src].astype(out_dtype)
        return out
    if layout not in ("PF", "FP"):
        raise SofieError(f"layout must be 'PF', 'FP' or 'P', got {layout!r}")
    out = np.full((N, P, F) if layout == "PF" else (N, F, P), pad, dtype=out_dtype)
    for f, (_, flat) in enumerate(parts):
        vals = flat[src].astype(out_dtype)
        if layout == "PF":
            out[e, p, f] = vals
        else:
            out[e, f, p] = vals
    return out


def awkward_input(arr, info) -> np.ndarray:
    """An awkward array as a numpy array for model input ``info`` (a TensorInfo).

    Regular arrays convert directly; records of scalars (``N * {a, b, ...}``) become ``[N, F]``
    with the fields in order. Jagged particle lists (``N * var * F`` numbers, ``N * var *
    {fields}`` records, or a record of ``N * var`` fields) are padded with 0 or truncated to the
    input's P, in stored order, placed as [N, P, F] or [N, F, P] as the input's shape says (the
    functor's defaults). For other pad values or an ordering use :func:`pad_jagged` or :func:`evaluate`.
    """
    from sofie_root.ir.dims import Dim

    ak = _ak()
    name = info.name
    fields = ak.fields(arr)
    if fields and all(arr[f].ndim == 1 for f in fields):  # N * {a, b, ...}: one feature per field
        return np.stack([np.asarray(ak.to_numpy(arr[f])) for f in fields], axis=1)
    if not fields:
        try:
            return np.asarray(ak.to_numpy(arr, allow_missing=False))
        except Exception:
            pass
    if arr.ndim < 2:
        raise InputError(f"input {name!r}: cannot convert awkward type {arr.type} to an array")
    if fields:
        columns = [arr[f] for f in fields]
        names = list(fields)
    elif arr.ndim == 2:
        columns, names = [arr], ["the list"]
    elif arr.ndim == 3:
        try:
            F = int(ak.to_numpy(ak.num(ak.flatten(arr, axis=1), axis=1)).max(initial=0))
            inner = ak.to_regular(ak.flatten(arr, axis=1), axis=1)
        except Exception as e:
            raise InputError(f"input {name!r}: particles must have a fixed number of features ({e})") from None
        counts = ak.num(arr, axis=1)
        columns = [ak.unflatten(inner[:, f], counts) for f in range(F)]
        names = [f"feature {f}" for f in range(F)]
    else:
        raise InputError(f"input {name!r}: cannot pad awkward type {arr.type}")
    shape = list(info.shape)
    F = len(columns)
    body = shape[1:]
    fixed = [None if isinstance(d, Dim) else int(d) for d in body]
    if len(body) == 1:
        if F != 1:
            raise InputError(f"input {name!r} of shape {shape} cannot take {F} features per particle")
        layout, P = "P", fixed[0]
    elif len(body) == 2:
        if fixed[1] == F:
            layout, P = "PF", fixed[0]
        elif fixed[0] == F:
            layout, P = "FP", fixed[1]
        else:
            raise InputError(f"input {name!r} of shape {shape}: {F} features per particle fit neither [N, P, F] "
                             f"nor [N, F, P]")
    else:
        raise InputError(f"input {name!r} of shape {shape} cannot take jagged particle lists")
    if P is None:
        raise InputError(f"input {name!r}: the particle dimension of {shape} is symbolic; pad the lists yourself "
                         f"with sofie_root.rdf.pad_jagged(..., length=P)")
    return pad_jagged(columns, P, layout=layout, dtype=info.dtype.numpy, names=names)


def _awkward_type_of(events) -> callable:
    ak = _ak()
    cpp = {"float32": "float", "float64": "double", "int8": "signed char", "uint8": "unsigned char",
           "int16": "short", "uint16": "unsigned short", "int32": "int", "uint32": "unsigned int",
           "int64": "long long", "uint64": "unsigned long long", "bool": "bool"}

    def type_of(col: str) -> str | None:
        try:
            a = events[col]
        except Exception:
            return None
        a = ak.Array(a) if not isinstance(a, ak.Array) else a
        leaf = ak.to_numpy(ak.flatten(a, axis=None)[:0]).dtype.name if a.ndim > 1 else ak.to_numpy(a[:0]).dtype.name
        t = cpp.get(leaf)
        if t is None:
            return f"unsupported<{leaf}>"
        return t if a.ndim == 1 else f"ROOT::VecOps::RVec<{t}>"

    return type_of


def inputs_for(plan, events) -> list[np.ndarray]:
    """The model inputs for all ``events`` (batch = number of events) under ``plan``."""
    arrays = []
    for p in plan.inputs:
        dtype = np.dtype(p.dtype)
        if p.kind == "scalar":
            cols = [np.asarray(_ak().to_numpy(events[c])).astype(dtype) for c in p.columns]
            x = np.stack(cols, axis=-1) if cols else np.zeros((0, 0), dtype)
            arrays.append(x.reshape((len(x), *p.shape[1:])) if len(p.shape) >= 2 else x)
        else:
            x = pad_jagged([events[c] for c in p.columns], p.P, pad=p.pad,
                           sort_by=events[p.sort_by] if p.sort_by else None, descending=p.descending,
                           layout=p.layout, dtype=dtype, names=list(p.columns))
            arrays.append(x)
    return arrays


def evaluate(model, events, columns: Sequence[str] | None = None, *, inputs: Mapping | None = None, outputs=None,
             pad: float = 0.0, sort_by: str | None = None, descending: bool = True, layout: str | None = None,
             dims: Mapping[str, int] | None = None, batch_size: int = 4096,
             variable: bool = False) -> np.ndarray | list[np.ndarray]:
    """Run ``model`` on awkward ``events`` (e.g. ``tree.arrays()`` from uproot) exactly as
    :func:`functor` would in an event loop: the same column mapping, padding and ordering.

    Returns a numpy array with one row per event: ``[N]`` for a single-valued output, ``[N, K]``
    otherwise (selected outputs concatenated, as the functor's ``RVecF``). With ``variable``
    groups (graphs; see :class:`~sofie_root.rdf.Columns`) each event runs on its own, unpadded,
    and the result is a list with one float32 array per event, as the functor's ``RVecF``.

    >>> scores = sofie_root.rdf.evaluate(model, events, inputs={...}, sort_by="pf_pt")  # doctest: +SKIP
    """
    from sofie_root.ir.dims import Dim

    from .functor import load_model
    from .plan import make_plan

    m, _ = load_model(model)
    if isinstance(events, Mapping):
        events = _ak().Array(dict(events))
    plan = make_plan(m, columns, inputs=inputs, outputs=outputs, pad=pad, sort_by=sort_by, descending=descending,
                     layout=layout, dims=dims, type_of=_awkward_type_of(events), variable=variable)
    if plan.variable:
        return _evaluate_variable(m, plan, events)
    first = plan.inputs[0].columns[0]
    n = len(events[first])
    batched = all(len(i.shape) >= 1 and isinstance(i.shape[0], Dim) for i in m.graph.input_infos)
    step = max(1, batch_size) if batched else 1
    rows = []
    for start in range(0, n, step):
        chunk = events[start:start + step]
        outs = m.infer(*inputs_for(plan, chunk))
        k = len(chunk)
        parts = [np.asarray(outs[j]).reshape(k, -1).astype(np.float32) for j in plan.selected]
        rows.append(np.concatenate(parts, axis=1))
    out = np.concatenate(rows, axis=0) if rows else np.zeros((0, sum(plan.output_numels[j] for j in plan.selected)),
                                                              np.float32)
    return out if plan.returns_vector else out[:, 0]


def _event_inputs(plan, events, i: int) -> list[np.ndarray]:
    """Model inputs for event ``i`` under a plan with variable groups (no batch dimension added
    where the model has none)."""
    ak = _ak()
    arrays = []
    for p in plan.inputs:
        dtype = np.dtype(p.dtype)
        if p.kind == "variable":
            cols = [np.asarray(ak.to_numpy(events[c][i])).astype(dtype) for c in p.columns]
            n = len(cols[0])
            for c, col in zip(p.columns[1:], cols[1:]):
                if len(col) != n:
                    raise InputError(f"event {i}: column {c!r} of input {p.name!r} has {len(col)} elements where "
                                     f"{p.columns[0]!r} has {n}")
            x = np.stack(cols, axis=1 if p.layout == "PF" else 0) if p.layout != "P" else cols[0]
            arrays.append(x.reshape(tuple(d if d != 0 else -1 for d in p.shape)) if n else
                          np.zeros(tuple(0 if d == 0 else d for d in p.shape), dtype))
        elif p.kind == "scalar":
            x = np.array([events[c][i] for c in p.columns], dtype=dtype)
            arrays.append(x.reshape(p.shape))
        else:
            x = pad_jagged([events[c][i:i + 1] for c in p.columns], p.P, pad=p.pad,
                           sort_by=events[p.sort_by][i:i + 1] if p.sort_by else None, descending=p.descending,
                           layout=p.layout, dtype=dtype, names=list(p.columns))
            arrays.append(x)
    return arrays


def _evaluate_variable(model, plan, events) -> list[np.ndarray]:
    first = plan.inputs[0].columns[0]
    out = []
    for i in range(len(events[first])):
        outs = model.infer(*_event_inputs(plan, events, i))
        out.append(np.concatenate([np.asarray(outs[j], dtype=np.float32).reshape(-1) for j in plan.selected]))
    return out
