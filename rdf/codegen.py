"""C++ of an RDataFrame functor: turns a :class:`~sofie_root.rdf.plan.Plan` into one namespace
``sofie_rdf_<key>`` holding

- ``Workspace``: a Session plus input/output buffers (one per slot or per thread): fixed-size
  arrays, or grow-only buffers for inputs and outputs whose size comes from the columns' lengths
  in each event (``variable`` groups, e.g. a graph's nodes and edges);
- ``compute(ws, columns...)``: fills the inputs from the columns, runs the Session, returns
  ``float`` or ``ROOT::RVecF``;
- ``Functor`` (for ``Define``; a workspace per thread) and ``SlotFunctor`` (for ``DefineSlot`` or
  ``Define`` with ``rdfslot_`` first; a workspace per slot);
- ``init(...)`` and ``eval(rdfslot_, columns...)``: a process-wide instance for string expressions
  (the route distributed RDataFrame uses, where no C++ object can travel).

Column names never reach the code except inside sanitised string literals of error messages.
"""

from __future__ import annotations

import math
from pathlib import Path

from .plan import Plan

HEADER_PATH = Path(__file__).resolve().parent / "sofie_rdf.hxx"


def _cstr(text: str) -> str:
    """A C++ string literal whose content is ``text`` restricted to harmless printable ASCII."""
    safe = "".join(c if (c.isascii() and c.isprintable() and c not in '\\"?') else "_" for c in text)
    return '"' + safe[:200] + '"'


def _literal(value: float, ctype: str) -> str:
    if ctype in ("float", "double"):
        if math.isnan(value):
            return f"std::numeric_limits<{ctype}>::quiet_NaN()"
        if math.isinf(value):
            return f"{'-' if value < 0 else ''}std::numeric_limits<{ctype}>::infinity()"
        return f"{ctype}({float(value)!r})"
    if ctype == "bool":
        return "true" if value else "false"
    return f"static_cast<{ctype}>({int(value)}LL)"


def _variable_lengths(plan: Plan, arg_var: dict[str, str]) -> list[str]:
    """This event's value ``n<k>`` of every variable symbol (the length of the first column that
    gives it), every variable column checked against it, then the index columns checked against
    the counts they index."""
    body, owner = [], {}
    for p in plan.inputs:
        if p.kind == "variable" and p.var not in owner:
            owner[p.var] = (p.name, p.columns[0])
            body.append(f"   const std::size_t n{p.var} = sofie_rdf::length({arg_var[p.columns[0]]});")
    for p in plan.inputs:
        if p.kind != "variable":
            continue
        sym = plan.var_symbols[p.var][0]
        for c in p.columns:
            if (p.name, c) == owner[p.var]:
                continue
            og, oc = owner[p.var]
            body.append(f"   if (sofie_rdf::length({arg_var[c]}) != n{p.var})")
            body.append(f"      sofie_rdf::count_mismatch({_cstr(p.name)}, {_cstr(c)}, sofie_rdf::length({arg_var[c]}), "
                        f"{_cstr(sym)}, {_cstr(og)}, {_cstr(oc)}, n{p.var});")
    for p in plan.inputs:
        if p.kind == "variable" and p.index_of >= 0:
            tg, tc = owner[p.index_of]  # the input that binds the indexed dimension
            for c in p.columns:
                body.append(f"   sofie_rdf::check_indices<{p.ctype}>({arg_var[c]}, n{p.var}, n{p.index_of}, "
                            f"{_cstr(p.name)}, {_cstr(c)}, {_cstr(tg)}, {_cstr(tc)});")
    return body


def _variable_fill(i: int, p, arg_var: dict[str, str]) -> list[str]:
    """Point input ``i`` at its columns' data (one column of the model's type) or fill it."""
    n = f"n{p.var}"
    if len(p.columns) == 1:
        return [f"   ws.in[{i}] = sofie_rdf::variable_input<{p.ctype}>({arg_var[p.columns[0]]}, {n}, ws.vin{i});"]
    F = len(p.columns)
    lines = ["   {", f"      {p.ctype} *dst = ws.vin{i}.get({n} ? {F} * {n} : 1);"]
    for f, c in enumerate(p.columns):
        if p.layout == "PF":
            lines.append(f"      sofie_rdf::fill_variable<{p.ctype}>(dst + {f}, {F}, {arg_var[c]}, {n});")
        else:  # FP: feature rows of n elements
            lines.append(f"      sofie_rdf::fill_variable<{p.ctype}>(dst + {f} * {n}, 1, {arg_var[c]}, {n});")
    lines += [f"      ws.in[{i}] = dst;", "   }"]
    return lines


def namespace(plan: Plan) -> str:
    return f"sofie_rdf_{plan.key()}"


def generate(plan: Plan, ns: str | None = None) -> str:
    """The C++ source of the functor namespace for ``plan`` (the model's namespace must exist);
    ``ns`` overrides the functor's namespace name (default :func:`namespace`)."""
    ns = ns or namespace(plan)
    arg_var = {c: f"a{i}" for i, c in enumerate(plan.args)}
    params = ", ".join(f"const {t} &{arg_var[c]}" for c, t in zip(plan.args, plan.arg_types))
    call_args = ", ".join(arg_var[c] for c in plan.args)

    members, ctor, grown = [], [], []
    for i, p in enumerate(plan.inputs):
        if p.kind == "variable":
            members.append(f"   sofie_rdf::GrowBuffer<{p.ctype}> vin{i};")
            grown.append(f"vin{i}")
            continue
        members.append(f"   alignas(64) {p.ctype} in{i}[{max(1, p.numel)}];")
        if p.sort_by:
            members.append(f"   int idx{i}[{max(1, p.P)}];")
        ctor.append(f"      in[{i}] = in{i};")
    for j, (ct, n) in enumerate(zip(plan.output_ctypes, plan.output_numels)):
        if plan.output_variable(j):
            members.append(f"   sofie_rdf::GrowBuffer<{ct}> vout{j};")
            grown.append(f"vout{j}")
            continue
        members.append(f"   alignas(64) {ct} out{j}[{max(1, n)}];")
        ctor.append(f"      out[{j}] = out{j};")
    allocations = " + ".join(f"{b}.allocations()" for b in grown) or "0"
    members.append(f"   std::size_t allocations() const {{ return {allocations}; }}")

    body = _variable_lengths(plan, arg_var) if plan.variable else []
    for i, p in enumerate(plan.inputs):
        if p.kind == "variable":
            body.extend(_variable_fill(i, p, arg_var))
            continue
        if p.kind == "scalar":
            for f, c in enumerate(p.columns):
                body.append(f"   ws.in{i}[{f}] = static_cast<{p.ctype}>({arg_var[c]});")
            continue
        first = arg_var[p.columns[0]]
        body.append("   {")
        body.append(f"      const std::size_t n = sofie_rdf::length({first});")
        for c in (*p.columns[1:], *((p.sort_by,) if p.sort_by and p.sort_by not in p.columns else ())):
            body.append(f"      if (sofie_rdf::length({arg_var[c]}) != n)")
            body.append(f"         sofie_rdf::length_mismatch({_cstr(p.name)}, {_cstr(c)}, "
                        f"sofie_rdf::length({arg_var[c]}), n);")
        if p.sort_by:
            body.append(f"      const std::size_t m = sofie_rdf::select_order({arg_var[p.sort_by]}, n, {p.P}, "
                        f"ws.idx{i}, {'true' if p.descending else 'false'});")
            body.append(f"      const int *idx = ws.idx{i};")
        else:
            body.append(f"      const std::size_t m = n < {p.P} ? n : {p.P};")
            body.append("      const int *idx = nullptr;")
        body.append(f"      const {p.ctype} pad = {_literal(p.pad, p.ctype)};")
        F = len(p.columns)
        for f, c in enumerate(p.columns):
            if p.layout == "PF":
                base, stride = f, F
            elif p.layout == "FP":
                base, stride = f * p.P, 1
            else:  # "P": a single feature, [1, P]
                base, stride = 0, 1
            body.append(f"      sofie_rdf::fill_feature<{p.ctype}>(ws.in{i} + {base}, {stride}, {arg_var[c]}, "
                        f"idx, m, {p.P}, pad);")
        body.append("   }")
    body.append("   std::copy(std::begin(kSymbols), std::end(kSymbols), ws.sym);")
    for k, (_, idx) in enumerate(plan.var_symbols):
        if idx >= 0:
            body.append(f"   ws.sym[{idx}] = static_cast<std::int64_t>(n{k});")
    size = {}
    for j, expr in enumerate(plan.output_exprs):
        if expr:
            body.append(f"   const std::size_t m{j} = static_cast<std::size_t>({expr});")
            body.append(f"   ws.out[{j}] = ws.vout{j}.get(m{j} ? m{j} : 1);")
            size[j] = f"m{j}"
    body.append("   ws.session.run(ws.sym, ws.in, ws.out);")
    sel = plan.selected
    if plan.variable and plan.returns_vector:
        def buf(j):
            return f"static_cast<const {plan.output_ctypes[j]} *>(ws.out[{j}])"

        if len(sel) == 1:
            j = sel[0]
            n = size.get(j, str(plan.output_numels[j]))
            body.append(f"   return ROOT::RVecF({buf(j)}, {buf(j)} + {n});")
        else:
            total = " + ".join(size.get(j, str(plan.output_numels[j])) for j in sel)
            body.append(f"   ROOT::RVecF r({total});")
            body.append("   std::size_t off = 0;")
            for j in sel:
                n = size.get(j, str(plan.output_numels[j]))
                body.append(f"   for (std::size_t k = 0; k < {n}; ++k) r[off + k] = static_cast<float>({buf(j)}[k]);")
                body.append(f"   off += {n};")
            body.append("   return r;")
    elif not plan.returns_vector:
        body.append(f"   return static_cast<float>(ws.out{sel[0]}[0]);")
    elif len(sel) == 1:
        j = sel[0]
        body.append(f"   return ROOT::RVecF(ws.out{j}, ws.out{j} + {plan.output_numels[j]});")
    else:
        total = sum(plan.output_numels[j] for j in sel)
        body.append(f"   ROOT::RVecF r({total});")
        off = 0
        for j in sel:
            n = plan.output_numels[j]
            body.append(f"   for (std::size_t k = 0; k < {n}; ++k) r[{off} + k] = static_cast<float>(ws.out{j}[k]);")
            off += n
        body.append("   return r;")

    ret = plan.return_type
    syms = ", ".join(str(v) for v in plan.symbols)
    sep = ", " if params else ""
    comma_args = ", " + call_args if call_args else ""
    return f"""// sofie_root RDataFrame functor for model {plan.namespace}; columns: {_cstr(', '.join(plan.args))[1:-1]}
namespace {ns} {{

using Session = ::{plan.namespace}::Session;
inline const char *const kModel = {_cstr(repr(plan.model_name or plan.namespace))};
inline const std::int64_t kSymbols[] = {{{syms}{', ' if syms else ''}0}};

struct Workspace {{
   Session session;
{chr(10).join(members)}
   std::int64_t sym[sizeof(kSymbols) / sizeof(kSymbols[0]) + sofie_rdf::data_symbols<Session>::value];
   const void *in[{max(1, len(plan.inputs))}];
   void *out[{max(1, len(plan.output_numels))}];
   explicit Workspace(const std::vector<char> &w) : session(w.data(), w.size())
   {{
{chr(10).join(ctor)}
   }}
}};

struct State {{
   std::vector<char> weights;
   sofie_rdf::SlotTable<Workspace> slots;
   sofie_rdf::ThreadTable<Workspace> threads;
   State(std::uintptr_t w, std::size_t n, std::size_t capacity)
      : weights(reinterpret_cast<const char *>(w), reinterpret_cast<const char *>(w) + n), slots(capacity),
        threads(capacity)
   {{
      if (n != {plan.weight_bytes}u)
         throw sofie_rdf::Error("{ns}: weight blob of " + std::to_string(n) + " bytes, expected {plan.weight_bytes}");
      Workspace probe(weights); // fail here, not in the event loop, if the Session cannot be made
   }}
   std::unique_ptr<Workspace> make() const {{ return std::make_unique<Workspace>(weights); }}
   // buffer (re)allocations of the variable-size inputs and outputs so far, all workspaces
   std::size_t allocations() const
   {{
      std::size_t n = 0;
      auto add = [&n](const Workspace &w) {{ n += w.allocations(); }};
      slots.for_each(add);
      threads.for_each(add);
      return n;
   }}
}};

inline {ret} compute(Workspace &ws{sep}{params})
{{
{chr(10).join(body)}
}}

// For Define(name, functor, columns): one workspace per thread.
struct Functor {{
   std::shared_ptr<State> fState;
   Functor(std::uintptr_t w, std::size_t n, std::size_t capacity) : fState(std::make_shared<State>(w, n, capacity)) {{}}
   {ret} operator()({params}) const
   {{
      State &s = *fState;
      return sofie_rdf::guarded(kModel, [&]() -> {ret} {{ return compute(s.threads.get([&s] {{ return s.make(); }}){comma_args}); }});
   }}
   std::size_t sessions() const {{ return fState->threads.created(); }}
   std::size_t allocations() const {{ return fState->allocations(); }}
}};

// For DefineSlot(name, functor, columns) or Define(name, functor, {{"rdfslot_", columns...}}).
struct SlotFunctor {{
   std::shared_ptr<State> fState;
   SlotFunctor(std::uintptr_t w, std::size_t n, std::size_t capacity) : fState(std::make_shared<State>(w, n, capacity)) {{}}
   {ret} operator()(unsigned int slot{sep}{params}) const
   {{
      State &s = *fState;
      return sofie_rdf::guarded(kModel, [&]() -> {ret} {{ return compute(s.slots.get(slot, [&s] {{ return s.make(); }}){comma_args}); }});
   }}
   std::size_t sessions() const {{ return fState->slots.created(); }}
   std::size_t allocations() const {{ return fState->allocations(); }}
}};

// For string expressions ("{ns}::eval(rdfslot_, ...)"), e.g. in distributed RDataFrame.
inline std::shared_ptr<State> gState;
inline void init(std::uintptr_t w, std::size_t n, std::size_t capacity)
{{
   if (!gState)
      gState = std::make_shared<State>(w, n, capacity);
}}
inline {ret} eval(unsigned int slot{sep}{params})
{{
   if (!gState)
      throw sofie_rdf::Error("{ns}: not initialised on this process (sofie_root.rdf.distributed setup missing)");
   State &s = *gState;
   return sofie_rdf::guarded(kModel, [&]() -> {ret} {{ return compute(s.slots.get(slot, [&s] {{ return s.make(); }}){comma_args}); }});
}}

}} // namespace {ns}
"""
