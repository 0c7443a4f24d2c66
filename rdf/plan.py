"""How RDataFrame columns feed a model: :class:`Columns` (what the user asks for) and :class:`Plan`
(the resolved, validated mapping the C++ functor and the numpy padding are both generated from).

A plan is plain data (picklable), made once when a functor is created, so that every error (a
wrong column count or type, a model input left unfed, a dimension that cannot be fixed) is a
:class:`~sofie_root.SofieError` raised before any event is read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sofie_root.errors import SofieError

#: Metadata key under which the column names a model was trained on may be stored (in the
#: model's IR metadata, or as an ONNX ``metadata_props`` entry, which arrives as ``onnx:<key>``).
COLUMNS_METADATA_KEY = "sofie_root.columns"

# Arithmetic C++ types a column may have (ROOT typedefs included), spelled as RDataFrame does.
_ARITHMETIC = {
    "bool", "char", "signed char", "unsigned char", "short", "unsigned short", "int", "unsigned int",
    "unsigned", "long", "unsigned long", "long long", "unsigned long long", "float", "double",
    "Bool_t", "Char_t", "UChar_t", "Short_t", "UShort_t", "Int_t", "UInt_t", "Long_t", "ULong_t",
    "Long64_t", "ULong64_t", "Float_t", "Double_t", "Float16_t", "Double32_t", "Byte_t",
    "std::int8_t", "std::uint8_t", "std::int16_t", "std::uint16_t", "std::int32_t", "std::uint32_t",
    "std::int64_t", "std::uint64_t", "int8_t", "uint8_t", "int16_t", "uint16_t", "int32_t", "uint32_t",
    "int64_t", "uint64_t", "std::size_t", "size_t",
}
_RVEC_ALIASES = {"RVecF": "float", "RVecD": "double", "RVecI": "int", "RVecU": "unsigned int",
                 "RVecL": "long", "RVecUL": "unsigned long", "RVecLL": "long long",
                 "RVecULL": "unsigned long long", "RVecB": "bool", "RVecC": "char", "RVecUC": "unsigned char"}
_COLLECTION = re.compile(r"^(?:ROOT::VecOps::RVec|ROOT::RVec|RVec|std::vector|vector)<(.+)>$")
_SAFE_TYPE = re.compile(r"^[A-Za-z0-9_:<>, ]+$")


def parse_column_type(type_name: str) -> tuple[str, str] | None:
    """``("scalar", T)`` or ``("collection", T)`` for an arithmetic column type, else None."""
    t = " ".join(type_name.replace("&", " ").split())
    t = re.sub(r"^const ", "", t).strip()
    if not _SAFE_TYPE.match(t):
        return None
    if t in _ARITHMETIC:
        return ("scalar", t)
    alias = t.removeprefix("ROOT::VecOps::").removeprefix("ROOT::")
    if alias in _RVEC_ALIASES:
        return ("collection", _RVEC_ALIASES[alias])
    m = _COLLECTION.match(t)
    if m:
        inner = m.group(1).strip()
        # std::vector<T, allocator> or RVec<T> with ROOT's own spelling
        inner = inner.split(",")[0].strip() if inner.count("<") == 0 else inner
        if inner in _ARITHMETIC:
            return ("collection", inner)
    return None


@dataclass(frozen=True)
class Columns:
    """The columns feeding one model input, with the options for particle-like (``RVec``) columns.

    Args:
        names: column names. Scalar columns form a ``[1, F]`` input (F = number of columns);
            ``RVec`` columns, one per feature, form ``[1, P, F]`` (layout ``"PF"``) or ``[1, F, P]``
            (``"FP"``) inputs, or ``[1, P]`` for a single column.
        pad: value for the positions beyond a collection's length.
        sort_by: a collection column (one of ``names`` or another) whose values order the
            elements before truncation to P; ``None`` keeps the stored order.
        descending: order by decreasing key (highest pT first), the default.
        layout: ``"PF"`` or ``"FP"``; by default deduced from where F sits in the input shape.
        length: P, when the model's particle dimension is symbolic.
        variable: no padding: the model's particle dimension (a symbol, e.g. a graph network's
            ``nodes`` or ``edges``) is bound per event to the columns' length. The input may be
            ``[n]``, ``[n, F]``, ``[F, n]`` (no batch dimension, as graph networks take them) or
            ``[1, n]``, ``[1, n, F]``, ``[1, F, n]``. Groups whose inputs share the symbol must
            have equal lengths in every event (checked per event). Outputs whose size depends on
            the symbol are returned as ``RVecF`` of that event's size (row-major).
        index_of: the model input (fed by a ``variable`` group) whose elements these columns'
            values index, e.g. a graph's ``senders``/``receivers`` into ``nodes``: every value
            must be in ``[0, n)`` of that event, else the event loop stops with an error naming
            the column, the value and n. Implies ``variable=True``. Graph networks from
            :class:`~sofie_root.GraphNetwork` record this for their senders and receivers.

    >>> sofie_root.rdf.Columns(["pf_pt", "pf_eta", "pf_phi"], sort_by="pf_pt", pad=0.0)  # doctest: +SKIP
    >>> sofie_root.rdf.Columns(["trk_pt", "trk_eta"], variable=True)                      # doctest: +SKIP
    >>> sofie_root.rdf.Columns(["edge_src", "edge_dst"], index_of="x")                    # doctest: +SKIP
    """

    names: tuple[str, ...]
    pad: float = 0.0
    sort_by: str | None = None
    descending: bool = True
    layout: str | None = None
    length: int | None = None
    variable: bool = False
    index_of: str | None = None

    def __init__(self, names: Sequence[str] | str, *, pad: float = 0.0, sort_by: str | None = None,
                 descending: bool = True, layout: str | None = None, length: int | None = None,
                 variable: bool = False, index_of: str | None = None):
        names = (names,) if isinstance(names, str) else tuple(names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise SofieError(f"columns must be a non-empty list of column names, got {names!r}")
        if layout not in (None, "PF", "FP"):
            raise SofieError(f"layout must be 'PF' ([1, P, F]) or 'FP' ([1, F, P]), got {layout!r}")
        if length is not None and (not isinstance(length, int) or length < 1):
            raise SofieError(f"length must be a positive integer, got {length!r}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "pad", float(pad))
        object.__setattr__(self, "sort_by", sort_by)
        object.__setattr__(self, "descending", bool(descending))
        object.__setattr__(self, "layout", layout)
        if index_of is not None and (not isinstance(index_of, str) or not index_of):
            raise SofieError(f"index_of must name a model input, got {index_of!r}")
        variable = bool(variable) or index_of is not None
        if variable and length is not None:
            raise SofieError(f"columns {list(names)}: variable=True binds the length per event; "
                             f"it cannot also be fixed with length={length}")
        if variable and sort_by is not None:
            raise SofieError(f"columns {list(names)}: variable=True keeps every element in stored order "
                             f"(indices such as a graph's senders refer to it); sort_by cannot be used")
        object.__setattr__(self, "length", length)
        object.__setattr__(self, "variable", variable)
        object.__setattr__(self, "index_of", index_of)


@dataclass(frozen=True)
class InputPlan:
    """How one model input is filled: ``kind`` is ``"scalar"`` ([1, F] from F scalar columns),
    ``"jagged"`` (P x F or F x P from F collection columns; F = 1 gives [1, P]) or ``"variable"``
    (n x F, F x n or n, with n the columns' length in each event: ``Plan.var_symbols[var]``)."""

    name: str
    ctype: str  # C++ element type of the model input
    dtype: str  # numpy dtype name of the model input
    shape: tuple[int, ...]  # the input's shape at batch 1
    kind: str
    columns: tuple[str, ...]
    layout: str = "PF"
    P: int = 1
    pad: float = 0.0
    sort_by: str | None = None
    descending: bool = True
    var: int = -1  # variable inputs: index of their length symbol in Plan.var_symbols
    index_of: int = -1  # index columns: Plan.var_symbols index of the count their values must stay below
    index_target: str = ""  # the input those values index (for error messages)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Plan:
    """The resolved mapping from columns to a model's inputs and from its outputs to the result."""

    namespace: str  # the model's C++ namespace (its content hash)
    weight_bytes: int
    symbols: tuple[int, ...]  # values of the model's symbolic dims, in the generated code's order
    inputs: tuple[InputPlan, ...]
    args: tuple[str, ...]  # functor arguments (column names), in order
    arg_types: tuple[str, ...]  # their C++ types
    output_ctypes: tuple[str, ...]
    output_numels: tuple[int, ...]
    selected: tuple[int, ...]  # indices of the outputs returned
    output_names: tuple[str, ...] = field(default=())
    # symbols bound per event from column lengths: (name, index in ``symbols`` or -1 if the
    # generated code does not use it)
    var_symbols: tuple[tuple[str, int], ...] = field(default=())
    # per output: "" if its size is fixed (``output_numels``), else its element count as a C++
    # expression of ``n0, n1, ...`` (the values of ``var_symbols``)
    output_exprs: tuple[str, ...] = field(default=())
    model_name: str = ""  # the graph's name, for error messages of the event loop

    @property
    def variable(self) -> bool:
        """Whether input and output sizes change from event to event."""
        return bool(self.var_symbols)

    def output_variable(self, j: int) -> bool:
        return bool(self.output_exprs) and bool(self.output_exprs[j])

    @property
    def returns_vector(self) -> bool:
        if any(self.output_variable(i) for i in self.selected):
            return True
        return sum(self.output_numels[i] for i in self.selected) != 1

    @property
    def return_type(self) -> str:
        return "ROOT::RVecF" if self.returns_vector else "float"

    def key(self) -> str:
        import hashlib

        return hashlib.sha1(repr(self).encode()).hexdigest()[:16]


def stored_columns(model) -> dict[str, list[str]] | list[str] | None:
    """The column names stored with the model, if any: ``model.column_hints`` (kept in .root
    files by ``model.save(..., columns=...)``) or the metadata ``sofie_root.columns`` (JSON; an
    ONNX ``metadata_props`` entry of that key arrives as ``onnx:sofie_root.columns``)."""
    hints = getattr(model, "column_hints", None)
    if hints:
        return hints
    meta = getattr(model.graph, "metadata", {}) or {}
    raw = meta.get(COLUMNS_METADATA_KEY) or meta.get(f"onnx:{COLUMNS_METADATA_KEY}")
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise SofieError(f"the model's {COLUMNS_METADATA_KEY!r} metadata is not JSON: {raw[:200]!r}") from e
    return value


def make_plan(model, columns=None, *, inputs: Mapping | None = None, outputs=None, pad: float = 0.0,
              sort_by: str | None = None, descending: bool = True, layout: str | None = None,
              dims: Mapping[str, int] | None = None, column_types: Mapping[str, str] | None = None,
              type_of: Callable[[str], str | None] | None = None, variable: bool = False) -> Plan:
    """Resolve and validate how ``columns`` (or ``inputs``) feed ``model``; see :func:`sofie_root.functor`.

    ``column_types`` gives C++ types of columns explicitly; ``type_of(column)`` looks one up in a
    dataframe (None if the column does not exist). Columns with neither take the model input's
    element type (``RVec`` of it for collections). ``variable`` is the default of
    :attr:`Columns.variable` for groups given as plain lists.
    """
    from sofie_root.ir.dims import Dim

    if not hasattr(model, "_generated"):
        raise SofieError("this model compiles itself at its first call (its shapes depend on input values); "
                         "it cannot be used in an RDataFrame functor")
    graph = model.graph
    in_infos = list(graph.input_infos)
    in_names = [i.name for i in in_infos]

    # 1. which columns feed which input
    if columns is not None and inputs is not None:
        raise SofieError("give either columns (for a single-input model) or inputs={input: columns}, not both")
    if columns is None and inputs is None:
        stored = stored_columns(model)
        if stored is None:
            raise SofieError(f"no columns given and none stored with the model; give columns=[...] "
                             f"or inputs={{name: [...]}} for the model's inputs {in_names}")
        if isinstance(stored, Mapping):
            inputs = stored
        else:
            columns = stored
    if inputs is None:
        if len(in_infos) != 1:
            raise SofieError(f"the model has {len(in_infos)} inputs {in_names}: give inputs={{name: columns}} "
                             f"with a group of columns for each")
        inputs = {in_names[0]: columns}
    if not isinstance(inputs, Mapping):
        raise SofieError(f"inputs must map model input names to columns, got {type(inputs).__name__}")
    unknown = [k for k in inputs if k not in in_names]
    if unknown:
        raise SofieError(f"inputs {unknown} are not inputs of the model; its inputs are {in_names}")
    unfed = [n for n in in_names if n not in inputs]
    if unfed:
        raise SofieError(f"model input(s) {unfed} are fed by no columns; give inputs={{...}} for all of {in_names}")

    groups: dict[str, Columns] = {}
    for name, spec in inputs.items():
        if isinstance(spec, Columns):
            groups[name] = spec
        elif isinstance(spec, str):
            groups[name] = _default_group([spec], name, pad, sort_by, descending, layout, variable)
        else:
            try:
                names = list(spec)
            except TypeError:
                raise SofieError(f"input {name!r}: columns must be a list of names or a Columns(...), "
                                 f"got {type(spec).__name__}") from None
            groups[name] = _default_group(names, name, pad, sort_by, descending, layout, variable)
    explicit_variable = {n for n, spec in inputs.items() if isinstance(spec, Columns) and spec.variable}
    # graph networks record which inputs hold node indices (senders/receivers -> nodes)
    index_hints = _index_hints(model)
    for name, g in list(groups.items()):
        target = index_hints.get(name)
        if g.variable and g.index_of is None and target in groups and groups[target].variable:
            groups[name] = replace(g, index_of=target)

    types = dict(column_types or {})

    def col_kind(col: str, default_kind: str, default_elem: str, group: str) -> tuple[str, str]:
        if col not in types and type_of is not None:
            t = type_of(col)
            if t is None:
                raise SofieError(f"input {group!r}: column {col!r} is not in the dataframe")
            types[col] = t
        t = types.get(col)
        if t is None:
            types[col] = default_elem if default_kind == "scalar" else f"ROOT::VecOps::RVec<{default_elem}>"
            return default_kind, default_elem
        parsed = parse_column_type(t)
        if parsed is None:
            raise SofieError(f"input {group!r}: column {col!r} has type {t!r}; only arithmetic scalars and "
                             f"RVec/std::vector of arithmetic types can feed a model")
        return parsed

    # 2. bind symbolic dimensions
    syms: dict[str, int] = dict(dims or {})
    for k, v in syms.items():
        if not isinstance(v, int) or v < 1:
            raise SofieError(f"dims[{k!r}] must be a positive integer, got {v!r}")

    def simple_symbol(d) -> str | None:
        if isinstance(d, Dim) and len(d.symbols) == 1 and str(d) == next(iter(d.symbols)):
            return next(iter(d.symbols))
        return None

    def bind(d, value: int, what: str) -> None:
        s = simple_symbol(d)
        if s is not None:
            if s in syms and syms[s] != value:
                raise SofieError(f"{what}: dimension {s} would be {value}, but it is {syms[s]} elsewhere")
            syms.setdefault(s, value)
        elif isinstance(d, Dim):
            pass  # composite dims are checked once everything is bound
        elif int(d) != value:
            raise SofieError(f"{what}: the model's dimension is {int(d)}, the columns give {value}")

    prelim = []
    var_owner: dict[str, tuple[str, str]] = {}  # variable symbol -> (input, first column) binding it
    for info in in_infos:
        g = groups[info.name]
        shape = list(info.shape)
        rank = len(shape)
        what = f"input {info.name!r} (shape [{', '.join(str(d) for d in shape)}])"
        if rank == 0:
            raise SofieError(f"{what}: a scalar input cannot be fed from columns")
        elem = info.dtype.cpp
        F = len(g.names)
        implicit = g.variable and info.name not in explicit_variable
        if implicit:
            # functor(variable=True) concerns collections only: scalars (a graph's globals) stay [1, F]
            symbolic = any(isinstance(d, Dim) for d in shape)
            kinds = [col_kind(c, "collection" if symbolic else "scalar", elem, info.name) for c in g.names]
            if all(k == "scalar" for k, _ in kinds) or not _has_variable_dim(shape, F, g.layout):
                g = groups[info.name] = replace(g, variable=False)  # a fixed P: padded as usual
        if g.variable:
            kinds = [col_kind(c, "collection", elem, info.name) for c in g.names]
            scal = [c for c, (k, _) in zip(g.names, kinds) if k == "scalar"]
            if scal:
                raise SofieError(f"{what}: variable=True takes collection (RVec) columns; {scal} are scalars")
            has_batch, lay, v_dim, f_dim = _variable_layout(shape, F, g.layout, what)
            if has_batch:
                bind(shape[0], 1, what + " batch dimension")
            if f_dim is not None:
                bind(f_dim, F, what + f" (layout {lay}, {F} feature columns)")
            sym = simple_symbol(v_dim)
            if sym is None:
                raise SofieError(f"{what}: variable=True needs a symbolic dimension for the column length; "
                                 f"the model's is {v_dim}")
            var_owner.setdefault(sym, (info.name, g.names[0]))
            prelim.append((info, g, "variable", lay, v_dim))
            continue
        if rank >= 2:
            bind(shape[0], 1, what + " batch dimension")
        body = shape[1:] if rank >= 2 else shape
        first_scalar = rank <= 2 and not (rank == 2 and F == 1 and _fixed(body[0]) not in (None, 1))
        kinds = [col_kind(c, "scalar" if first_scalar else "collection", elem, info.name) for c in g.names]
        kset = {k for k, _ in kinds}
        if len(kset) > 1:
            scal = [c for c, (k, _) in zip(g.names, kinds) if k == "scalar"]
            raise SofieError(f"{what}: mixes scalar columns {scal} with collection columns; "
                             f"each input is fed either by scalars or by collections")
        kind = "scalar" if kset == {"scalar"} else "jagged"
        if kind == "scalar":
            if len(body) != 1:
                raise SofieError(f"{what}: scalar columns fill a [1, F] input; this input has rank {rank}")
            bind(body[0], F, what)
            prelim.append((info, g, kind, "F", 1))
            continue
        if g.sort_by is not None:
            if g.sort_by not in g.names:
                k, _ = col_kind(g.sort_by, "collection", elem, info.name)
                if k != "collection":
                    raise SofieError(f"input {info.name!r}: sort_by column {g.sort_by!r} is a scalar, "
                                     f"it must be a collection like the features")
        if len(body) == 1:
            if F != 1:
                raise SofieError(f"{what}: {F} collection columns need a [1, P, F] or [1, F, P] input"
                                 + _variable_hint(shape))
            lay = "P"
            p_dim = body[0]
        elif len(body) == 2:
            a, b = body
            lay = g.layout
            if lay is None:
                fa, fb = _fixed(a), _fixed(b)
                if fb == F:
                    lay = "PF"
                elif fa == F:
                    lay = "FP"
                elif fb is None and (fa is None or fa != F):
                    lay = "PF"
                elif fa is None:
                    lay = "FP"
                else:
                    raise SofieError(f"{what}: {F} feature columns {list(g.names)} match neither the last "
                                     f"(P x F) nor the middle (F x P) dimension")
            f_dim, p_dim = (b, a) if lay == "PF" else (a, b)
            bind(f_dim, F, what + f" (layout {lay}, {F} feature columns)")
        else:
            raise SofieError(f"{what}: collection columns fill [1, P], [1, P, F] or [1, F, P] inputs; "
                             f"this input has rank {rank}" + _variable_hint(shape))
        if g.length is not None:
            bind(p_dim, g.length, what + " particle dimension")
        prelim.append((info, g, kind, lay, p_dim))

    for sym, (owner, _) in var_owner.items():
        if sym in syms:
            raise SofieError(f"input {owner!r}: dimension {sym} is bound per event by its variable columns, "
                             f"but it is also fixed to {syms[sym]} (by dims= or by another input)")
    var_names = list(var_owner)
    var_index = {s: k for k, s in enumerate(var_names)}

    def resolve(d, what: str, placeholder: bool = False) -> int:
        if isinstance(d, Dim):
            values = {**syms, **dict.fromkeys(var_names, 0)} if placeholder else syms
            try:
                return int(d.evaluate(values))
            except KeyError:
                missing = sorted(s for s in d.symbols if s not in values)
                raise SofieError(f"{what}: the model's dimension {d} is symbolic; fix {missing} with "
                                 f"dims={{{missing[0]!r}: ...}} or Columns(..., length=...), or bind it per "
                                 f"event from the columns' length with variable=True") from None
        return int(d)

    plans = []
    for info, g, kind, lay, p_dim in prelim:
        shape = tuple(resolve(d, f"input {info.name!r}", placeholder=kind == "variable") for d in info.shape)
        if len(shape) >= 2 and shape[0] != 1 and kind != "variable":
            raise SofieError(f"input {info.name!r} has a fixed batch dimension of {shape[0]}; an event loop "
                             f"feeds one event at a time (batch 1)")
        if kind == "variable":
            var = var_index[simple_symbol(p_dim)]
            idx, target = -1, ""
            if g.index_of is not None:
                tg = groups.get(g.index_of)
                if tg is None or not tg.variable:
                    raise SofieError(f"input {info.name!r}: index_of={g.index_of!r} must name a model input fed by "
                                     f"variable=True columns; those are "
                                     f"{[n for n, x in groups.items() if x.variable]}")
                if info.dtype.numpy.kind not in "iu":
                    raise SofieError(f"input {info.name!r} is {info.dtype.numpy.name}; index_of needs an "
                                     f"integer input")
                t_info = next(i for i in in_infos if i.name == g.index_of)
                t_dim = next(p for i, _, _, _, p in prelim if i is t_info)
                idx, target = var_index[simple_symbol(t_dim)], g.index_of
            plans.append(InputPlan(info.name, info.dtype.cpp, info.dtype.numpy.name, shape, kind, g.names,
                                   lay, 0, g.pad, None, g.descending, var, idx, target))
            continue
        P = 1 if kind == "scalar" else resolve(p_dim, f"input {info.name!r}")
        plans.append(InputPlan(info.name, info.dtype.cpp, info.dtype.numpy.name, shape, kind, g.names,
                               lay, P, g.pad, g.sort_by if kind == "jagged" else None, g.descending))

    gen_symbols = list(model._generated.symbols)
    missing = [s for s in gen_symbols if s not in syms and s not in var_index]
    if missing:
        raise SofieError(f"the model's symbolic dimension(s) {missing} cannot be fixed from the columns; "
                         f"give dims={{...}}, or variable=True for columns whose length gives them")
    sym_values = tuple(syms.get(s, 0) for s in gen_symbols)
    var_symbols = tuple((s, gen_symbols.index(s) if s in gen_symbols else -1) for s in var_names)

    # 3. outputs
    out_infos = list(graph.output_infos)
    out_names = [o.name for o in out_infos]
    numels, exprs = [], []
    for o in out_infos:
        total = 1
        for d in o.shape:
            total = total * d
        if isinstance(total, Dim) and total.symbols & set(var_index):
            fixed = total.substitute({k: v for k, v in syms.items() if k not in var_index})
            unknown = sorted(fixed.symbols - set(var_index)) if isinstance(fixed, Dim) else []
            if unknown:
                raise SofieError(f"output {o.name!r}: its size {total} depends on {unknown}, which the columns "
                                 f"do not give; give dims={{...}}")
            numels.append(-1)
            exprs.append(fixed.to_cpp(lambda s: f"n{var_index[s]}") if isinstance(fixed, Dim) else str(int(fixed)))
            continue
        numels.append(resolve(total, f"output {o.name!r}"))
        exprs.append("")
    if outputs is None:
        selected = [0] if len(out_infos) == 1 else None
        if selected is None:
            raise SofieError(f"the model has {len(out_infos)} outputs {out_names}; choose with outputs=... "
                             f"(a name, an index, or a list of them; several are concatenated)")
    else:
        wanted = [outputs] if isinstance(outputs, (str, int)) else list(outputs)
        selected = []
        for w in wanted:
            if isinstance(w, int) and not isinstance(w, bool):
                if not -len(out_infos) <= w < len(out_infos):
                    raise SofieError(f"output index {w} out of range; the model has outputs {out_names}")
                selected.append(w % len(out_infos))
            elif isinstance(w, str) and w in out_names:
                selected.append(out_names.index(w))
            else:
                raise SofieError(f"unknown output {w!r}; the model's outputs are {out_names}")
        if not selected:
            raise SofieError("outputs=[] selects nothing")
    for i in selected:
        if numels[i] == 0 and not exprs[i]:
            raise SofieError(f"output {out_names[i]!r} is empty at batch 1")

    # 4. functor arguments: feature columns of each input in model order, then sort keys
    args: list[str] = []
    for p in plans:
        for c in (*p.columns, *((p.sort_by,) if p.sort_by else ())):
            if c not in args:
                args.append(c)
    arg_types = []
    for c in args:
        t = " ".join(types[c].replace("&", " ").split())
        t = re.sub(r"^const ", "", t)
        if not _SAFE_TYPE.match(t):
            raise SofieError(f"column {c!r}: type {t!r} cannot be used")
        arg_types.append(t)
    return Plan(model.namespace, int(model._generated.weight_bytes), sym_values, tuple(plans), tuple(args),
                tuple(arg_types), tuple(o.dtype.cpp for o in out_infos), tuple(numels), tuple(selected),
                tuple(out_names), var_symbols, tuple(exprs) if var_symbols else (), model.graph.name)


#: Graph metadata key (an ONNX ``metadata_props`` entry arrives as ``onnx:<key>``): JSON
#: ``{input: input}`` saying which integer inputs hold indices into which other input's elements
#: (a graph network's senders and receivers into its nodes); a variable functor checks them.
INDICES_METADATA_KEY = "sofie_root.indices"


def _index_hints(model) -> dict[str, str]:
    meta = getattr(model.graph, "metadata", {}) or {}
    raw = meta.get(INDICES_METADATA_KEY) or meta.get(f"onnx:{INDICES_METADATA_KEY}")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _default_group(names, input_name: str, pad, sort_by, descending, layout, variable: bool) -> Columns:
    """A plain column list with the functor-level options; ``variable`` drops a sort key (with
    variable lengths nothing is truncated, and node indices refer to the stored order)."""
    if variable and sort_by is not None:
        raise SofieError(f"input {input_name!r}: sort_by cannot be combined with variable=True (every element "
                         f"is kept, in stored order)")
    return Columns(names, pad=pad, sort_by=sort_by, descending=descending, layout=layout, variable=variable)


def _has_variable_dim(shape, F: int, layout: str | None) -> bool:
    """Whether F variable columns could fill this input with a symbolic length dimension."""
    from sofie_root.ir.dims import Dim

    try:
        _, _, v_dim, _ = _variable_layout(shape, F, layout, "")
    except SofieError:
        return False
    return isinstance(v_dim, Dim)


def _variable_hint(shape) -> str:
    from sofie_root.ir.dims import Dim

    if any(isinstance(d, Dim) for d in shape):
        return ("; if its symbolic dimension is a count that varies per event (a graph's nodes or edges), "
                "give variable=True to bind it from the columns' length")
    return ""


def _variable_layout(shape, F: int, layout: str | None, what: str):
    """(has a batch dimension, layout "PF"/"FP"/"P", the variable dimension, the feature dimension or
    None) for an input fed by F variable-length columns."""
    rank = len(shape)
    if rank == 1:
        if F != 1:
            raise SofieError(f"{what}: {F} variable columns need an [n, F] or [F, n] input, not [n]")
        return False, "P", shape[0], None
    if rank == 2:
        a, b = shape
        fa, fb = _fixed(a), _fixed(b)
        if layout == "PF" or (layout is None and fb == F and fa is None):
            return False, "PF", a, b
        if layout == "FP" or (layout is None and fa == F and fb is None):
            return False, "FP", b, a
        if layout is None and F == 1 and fa is None and fb is None:
            return True, "P", b, None  # [N, n]: a symbolic batch dimension and the variable one
        raise SofieError(f"{what}: {F} variable columns fill [n, {F}] or [{F}, n] (or [1, n] for one column); "
                         f"give layout='PF' or 'FP' if the model's dimensions are all symbolic")
    if rank == 3:
        a, b = shape[1:]
        fa, fb = _fixed(a), _fixed(b)
        lay = layout
        if lay is None:
            if fb == F and fa is None:
                lay = "PF"
            elif fa == F and fb is None:
                lay = "FP"
            elif fa is None and fb is None:
                lay = "PF"
            else:
                raise SofieError(f"{what}: {F} variable columns match neither [1, n, {F}] nor [1, {F}, n]")
        return (True, "PF", a, b) if lay == "PF" else (True, "FP", b, a)
    raise SofieError(f"{what}: variable columns fill inputs of rank 1 to 3 ([n], [n, F], [1, n, F], ...); "
                     f"this one has rank {rank}")


def _fixed(d) -> int | None:
    from sofie_root.ir.dims import Dim

    if isinstance(d, Dim):
        return None
    return int(d)
