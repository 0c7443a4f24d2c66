"""C++ of an RDataFrame functor: turns a :class:`~sofie_root.rdf.plan.Plan` into one namespace
``sofie_rdf_<key>`` holding

- ``Workspace``: a Session plus fixed-size input/output buffers (one per slot or per thread);
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


def namespace(plan: Plan) -> str:
    return f"sofie_rdf_{plan.key()}"


def generate(plan: Plan, ns: str | None = None) -> str:
    """The C++ source of the functor namespace for ``plan`` (the model's namespace must exist);
    ``ns`` overrides the functor's namespace name (default :func:`namespace`)."""
    ns = ns or namespace(plan)
    arg_var = {c: f"a{i}" for i, c in enumerate(plan.args)}
    params = ", ".join(f"const {t} &{arg_var[c]}" for c, t in zip(plan.args, plan.arg_types))
    call_args = ", ".join(arg_var[c] for c in plan.args)

    members, ctor = [], []
    for i, p in enumerate(plan.inputs):
        members.append(f"   alignas(64) {p.ctype} in{i}[{max(1, p.numel)}];")
        if p.sort_by:
            members.append(f"   int idx{i}[{max(1, p.P)}];")
        ctor.append(f"      in[{i}] = in{i};")
    for j, (ct, n) in enumerate(zip(plan.output_ctypes, plan.output_numels)):
        members.append(f"   alignas(64) {ct} out{j}[{max(1, n)}];")
        ctor.append(f"      out[{j}] = out{j};")

    body = []
    for i, p in enumerate(plan.inputs):
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
    body.append("   ws.session.run(ws.sym, ws.in, ws.out);")
    sel = plan.selected
    if not plan.returns_vector:
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
         throw std::runtime_error("{ns}: weight blob of " + std::to_string(n) + " bytes, expected {plan.weight_bytes}");
      Workspace probe(weights); // fail here, not in the event loop, if the Session cannot be made
   }}
   std::unique_ptr<Workspace> make() const {{ return std::make_unique<Workspace>(weights); }}
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
      return compute(s.threads.get([&s] {{ return s.make(); }}){comma_args});
   }}
   std::size_t sessions() const {{ return fState->threads.created(); }}
}};

// For DefineSlot(name, functor, columns) or Define(name, functor, {{"rdfslot_", columns...}}).
struct SlotFunctor {{
   std::shared_ptr<State> fState;
   SlotFunctor(std::uintptr_t w, std::size_t n, std::size_t capacity) : fState(std::make_shared<State>(w, n, capacity)) {{}}
   {ret} operator()(unsigned int slot{sep}{params}) const
   {{
      State &s = *fState;
      return compute(s.slots.get(slot, [&s] {{ return s.make(); }}){comma_args});
   }}
   std::size_t sessions() const {{ return fState->slots.created(); }}
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
      throw std::runtime_error("{ns}: not initialised on this process (sofie_root.rdf.distributed setup missing)");
   State &s = *gState;
   return compute(s.slots.get(slot, [&s] {{ return s.make(); }}){comma_args});
}}

}} // namespace {ns}
"""
