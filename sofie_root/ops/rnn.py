"""Recurrent layers: LSTM, GRU and RNN (float32/float64).

Every variant of the ONNX operators is supported: forward, reverse and bidirectional directions,
optional bias, ``sequence_lens`` (per-batch lengths; outputs past a sequence's end are zero and
the final states are taken at its last valid step), initial states, LSTM peepholes and
``input_forget``, GRU ``linear_before_reset``, every activation function of the specification with
``activation_alpha``/``activation_beta``, ``clip`` and ``layout`` 0/1 (opset 14).

Per direction, the input projection ``X @ W^T + Wb + Rb`` for all time steps is one GEMM before
the recurrence; each step is then one GEMM ``H @ R^T`` over the batch (two for a GRU with
``linear_before_reset=0``) and an element-wise gate loop (on 8-float vectors, ``_gate_loop``,
for float32 with the default activations, no clip and a hidden size that is a multiple of 8). The ``gemm_pretranspose`` pass may
store a constant R as ``[num_directions, hidden, gates * hidden]`` (marked by the attribute
``R_TRANSPOSED``): at batch 1 the step is then a gemv over contiguous rows, which OpenBLAS runs
about twice as fast as the transposed product; W likewise (``W_TRANSPOSED``). Scratch memory (projection, gates,
states) is a set of workspace buffers planned in the arena, so nothing is allocated per call.
"""

from __future__ import annotations

from ..errors import InvalidGraphError
from ..ir.dims import DimLike
from ..ir.dtypes import DType
from .base import NodeView, Operator, OutInfo, register

FLOATS = ("float32", "float64")

#: activation name (lower case) -> (uses alpha, uses beta, default alpha, default beta)
_ACTIVATIONS: dict[str, tuple[bool, bool, float, float]] = {
    "sigmoid": (False, False, 0.0, 0.0),
    "tanh": (False, False, 0.0, 0.0),
    "relu": (False, False, 0.0, 0.0),
    "hardsigmoid": (True, True, 0.2, 0.5),
    "affine": (True, True, 1.0, 0.0),
    "leakyrelu": (True, False, 0.01, 0.0),
    "thresholdedrelu": (True, False, 1.0, 0.0),
    "scaledtanh": (True, True, 1.0, 1.0),
    "elu": (True, False, 1.0, 0.0),
    "softsign": (False, False, 0.0, 0.0),
    "softplus": (False, False, 0.0, 0.0),
}

_DIRECTIONS = ("forward", "reverse", "bidirectional")

#: node attributes set by passes/layout.py when R / W are stored transposed per direction
#: ([H, G] / [input_size, G])
R_TRANSPOSED = "sofie_R_transposed"
W_TRANSPOSED = "sofie_W_transposed"


def _activation_expr(name: str, alpha: float, beta: float, x: str, dt: DType, lit) -> str:
    one, zero = lit(1, dt), lit(0, dt)
    a, b = lit(alpha, dt), lit(beta, dt)
    if name == "sigmoid":
        return f"sofie_rt::gate_sigmoid({x})"
    if name == "tanh":
        return f"sofie_rt::gate_tanh({x})"
    if name == "relu":
        return f"std::max({zero}, {x})"
    if name == "hardsigmoid":
        return f"std::max({zero}, std::min({one}, {a} * ({x}) + {b}))"
    if name == "affine":
        return f"({a} * ({x}) + {b})"
    if name == "leakyrelu":
        return f"(({x}) >= {zero} ? ({x}) : {a} * ({x}))"
    if name == "thresholdedrelu":
        return f"(({x}) > {a} ? ({x}) : {zero})"
    if name == "scaledtanh":
        return f"({a} * sofie_rt::vm::tanh({b} * ({x})))"
    if name == "elu":
        return f"(({x}) >= {zero} ? ({x}) : {a} * sofie_rt::vm::expm1({x}))"
    if name == "softsign":
        return f"(({x}) / ({one} + std::abs({x})))"
    if name == "softplus":
        return f"sofie_rt::vm::softplus({dt.cpp}({x}))"
    raise AssertionError(name)


#: activations with an 8-lane form (``sofie_rt::rows::f8``), the same operations as the scalar one
_VEC_ACTIVATIONS = {"sigmoid": "sofie_rt::gate_sigmoid8", "tanh": "sofie_rt::rows::tanh8"}

#: the vector gate loops' names: 8 floats at p, stored at p, a broadcast value
_LD, _ST, _SPLAT, _F8 = "sofie_rt::rows::load", "sofie_rt::rows::store", "sofie_rt::rows::splat", "sofie_rt::rows::f8"


class _Recurrent(Operator):
    """Shared shape logic and code generation of LSTM, GRU and RNN."""

    dtypes = FLOATS
    gates: int = 1                      # gate blocks in W and R (LSTM 4, GRU 3, RNN 1)
    default_acts: tuple[str, ...] = ()  # activations of one direction

    # inputs: X W R B sequence_lens initial_h [initial_c P]
    def check(self, v: NodeView) -> str | None:
        x = v.input(0).dtype
        if x.name not in FLOATS:
            return f"element type {x.name} is not supported (supported: {', '.join(FLOATS)})"
        dts = {v.input(i).dtype for i in (0, 1, 2, 3, 5, 6, 7) if v.has_input(i)}
        if len(dts) > 1:
            return "X, W, R, B and the initial states must have the same element type"
        if v.has_input(4) and v.input(4).dtype.name not in ("int32", "int64"):
            raise InvalidGraphError(
                f"{v.label}: sequence_lens is {v.input(4).dtype.name}, but ONNX defines it as int32: the model "
                "is invalid (onnx.checker and onnxruntime refuse it too); store the lengths as int32")
        if v.attr("direction", "forward") not in _DIRECTIONS:
            return f"direction={v.attr('direction')!r} is not one of {', '.join(_DIRECTIONS)}"
        if v.attr("layout", 0) not in (0, 1):
            return f"layout={v.attr('layout')} is not 0 or 1"
        try:
            self._activations(v)
        except ValueError as exc:
            return str(exc)
        return None

    # -- attributes ----------------------------------------------------------------------------
    def _num_dirs(self, v: NodeView) -> int:
        return 2 if v.attr("direction", "forward") == "bidirectional" else 1

    def _activations(self, v: NodeView) -> list[list[tuple[str, float, float]]]:
        """Per direction, the (name, alpha, beta) of each activation function."""
        nd = self._num_dirs(v)
        per = len(self.default_acts)
        names = v.attr("activations", None)
        if not names:
            names = list(self.default_acts) * nd
        names = [str(n).lower() for n in names]
        if len(names) == per and nd == 2:
            names = names * 2
        if len(names) != per * nd:
            raise ValueError(f"expected {per * nd} activations for {nd} direction(s), got {len(names)}")
        alphas = list(v.attr("activation_alpha", []) or [])
        betas = list(v.attr("activation_beta", []) or [])
        out: list[tuple[str, float, float]] = []
        for n in names:
            if n not in _ACTIVATIONS:
                raise ValueError(f"activation {n!r} is not supported (supported: {', '.join(sorted(_ACTIVATIONS))})")
            ua, ub, da, db = _ACTIVATIONS[n]
            a = alphas.pop(0) if ua and alphas else da
            b = betas.pop(0) if ub and betas else db
            out.append((n, float(a), float(b)))
        return [out[d * per:(d + 1) * per] for d in range(nd)]

    def _dims(self, v: NodeView) -> tuple[DimLike, DimLike, DimLike, DimLike, int]:
        """(seq_length, batch, input_size, hidden_size, num_directions), checking every shape."""
        x, w, r = v.input(0), v.input(1), v.input(2)
        if x.rank != 3 or w.rank != 3 or r.rank != 3:
            raise v.fail(f"X, W and R must have rank 3, got {x}, {w} and {r}")
        layout = v.attr("layout", 0)
        seq, batch = (x.shape[0], x.shape[1]) if layout == 0 else (x.shape[1], x.shape[0])
        isz = x.shape[2]
        nd = self._num_dirs(v)
        r_t = bool(v.attr(R_TRANSPOSED, 0))
        hidden = v.attr("hidden_size", None)
        if hidden is None:
            hidden = r.shape[1] if r_t else r.shape[2]
        g = self.gates

        def need(what: str, got, want) -> None:
            got, want = tuple(got), tuple(want)
            if len(got) != len(want) or any(isinstance(a, int) and isinstance(b, int) and a != b
                                            for a, b in zip(got, want)):
                raise v.fail(f"{what} has shape {list(got)}, expected {[str(d) for d in want]}")

        w_t = bool(v.attr(W_TRANSPOSED, 0))
        need("W", w.shape, (nd, isz, g * hidden) if w_t else (nd, g * hidden, isz))
        need("R", r.shape, (nd, hidden, g * hidden) if r_t else (nd, g * hidden, hidden))
        if v.has_input(3):
            need("B", v.input(3).shape, (nd, 2 * g * hidden))
        if v.has_input(4):
            need("sequence_lens", v.input(4).shape, (batch,))
        state = (nd, batch, hidden) if layout == 0 else (batch, nd, hidden)
        if v.has_input(5):
            need("initial_h", v.input(5).shape, state)
        if self.op_type == "LSTM":
            if v.has_input(6):
                need("initial_c", v.input(6).shape, state)
            if v.has_input(7):
                need("P", v.input(7).shape, (nd, 3 * hidden))
        return seq, batch, isz, hidden, nd

    def infer(self, v: NodeView) -> list[OutInfo]:
        seq, batch, _, hidden, nd = self._dims(v)
        dt = v.input(0).dtype
        if v.attr("layout", 0) == 0:
            y, state = (seq, nd, batch, hidden), (nd, batch, hidden)
        else:
            y, state = (batch, seq, nd, hidden), (batch, nd, hidden)
        outs = [OutInfo(dt, y), OutInfo(dt, state)]
        if self.op_type == "LSTM":
            outs.append(OutInfo(dt, state))
        return outs

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        seq, batch, _, hidden, _ = self._dims(v)
        dt = v.input(0).dtype
        g = self.gates * hidden
        # 0: input projection, 1: per-step gates, 2: hidden state, 3: cell state / reset product
        return [(dt, seq * batch * g), (dt, batch * g), (dt, batch * hidden), (dt, batch * hidden)]

    # -- code ----------------------------------------------------------------------------------
    def _r_gemm(self, v: NodeView, e, dt: DType, first: int, count: str, a: str, out: str) -> str:
        """out[B, count*H] (row stride G) = a[B, H] @ R^T restricted to gate blocks first..first+count."""
        T = dt.cpp
        one, zero = e.lit(1, dt), e.lit(0, dt)
        if v.attr(R_TRANSPOSED, 0):
            return (f"sofie_rt::gemm<{T}>(false, false, B, {count} * H, H, {one}, {a}, H, Rd + {first} * H, G, "
                    f"{zero}, {out}, G);")
        return (f"sofie_rt::gemm<{T}>(false, true, B, {count} * H, H, {one}, {a}, H, Rd + {first} * H * H, H, "
                f"{zero}, {out}, G);")

    def _has_out(self, v: NodeView, i: int) -> bool:
        return i < len(v.node.outputs) and bool(v.node.outputs[i])

    def emit(self, v: NodeView, e) -> str:
        seq, batch, isz, hidden, nd = self._dims(v)
        dt = v.input(0).dtype
        T = dt.cpp
        layout = v.attr("layout", 0)
        acts = self._activations(v)
        clip = v.attr("clip", None)
        if clip is not None and not float(clip) > 0:
            clip = None  # <= 0 can only zero the layer: "no clipping" (the ONNX frontend warns)
        S, B, I, H = e.dim(seq), e.dim(batch), e.dim(isz), e.dim(hidden)
        G = e.dim(self.gates * hidden)
        xw, hs, cs = e.ws(0), e.ws(2), e.ws(3)
        one, zero = e.lit(1, dt), e.lit(0, dt)
        lines: list[str] = []

        lines.append(f"const std::int64_t S = {S}, B = {B}, nI = {I}, H = {H}, G = {G};")
        lines.append("(void)S; (void)B; (void)nI; (void)H; (void)G;")
        if v.has_input(4):
            lines.append(f"for (std::int64_t b = 0; b < B; ++b) if ({e.inp(4)}[b] < 0 || {e.inp(4)}[b] > S) "
                         f"{e.fail('sequence_lens has a value outside [0, seq_length]')}")
        if self._has_out(v, 0) and v.has_input(4):
            lines.append(f"std::fill({e.out(0)}, {e.out(0)} + {e.size_out(0)}, {zero});")

        def act(d: int, k: int, x: str, clipped: bool = True) -> str:
            name, a, b = acts[d][k]
            if clip is not None and clipped:
                c = e.lit(float(clip), dt)
                x = f"std::max(-{c}, std::min({c}, {x}))"
            return _activation_expr(name, a, b, x, dt, e.lit)

        # The gate loops over j < H run on 8-float vectors when every activation has a vector form
        # (float32, no clip, H a multiple of 8): cling left the scalar GRU loops unvectorised
        # (0.78x onnxruntime at batch 256, where g++ ran the same code 2.2x faster).
        vec = (dt.name == "float32" and clip is None and isinstance(hidden, int) and hidden % 8 == 0
               and all(name in _VEC_ACTIVATIONS and (a, b) == _ACTIVATIONS[name][2:]
                       for per in acts for name, a, b in per))

        def vact(d: int, k: int, x: str) -> str:
            return f"{_VEC_ACTIVATIONS[acts[d][k][0]]}({x})"

        for d in range(nd):
            reverse = v.attr("direction", "forward") == "reverse" or d == 1
            lines.append(f"{{ // direction {d}{' (reverse)' if reverse else ''}")
            body: list[str] = []
            body.append(f"const {T} *const Wd = {e.inp(1)} + {d} * G * nI;")
            body.append(f"const {T} *const Rd = {e.inp(2)} + {d} * G * H;")
            body.append("(void)Rd;")
            # input projection for every time step: xw[row] = X[row] @ W^T + Wb + Rb
            if v.has_input(3):
                body.append(f"const {T} *const Wb = {e.inp(3)} + {d} * 2 * G;")
                body.append(f"const {T} *const Rb = {e.inp(3)} + {d} * 2 * G + G;")
                body.append("(void)Rb;")
                rb_cols = self._bias_folded_cols(v)  # columns whose Rb goes into the projection
                body.append("for (std::int64_t r = 0; r < S * B; ++r)")
                body.append("   for (std::int64_t j = 0; j < G; ++j)")
                body.append(f"      {xw}[r * G + j] = Wb[j] + (j < {rb_cols} * H ? Rb[j] : {zero});")
                beta = one
            else:
                beta = zero
            if v.attr(W_TRANSPOSED, 0):
                body.append(f"sofie_rt::gemm<{T}>(false, false, S * B, G, nI, {one}, {e.inp(0)}, nI, Wd, G, {beta}, "
                            f"{xw}, G);")
            else:
                body.append(f"sofie_rt::gemm<{T}>(false, true, S * B, G, nI, {one}, {e.inp(0)}, nI, Wd, nI, {beta}, "
                            f"{xw}, G);")
            # initial states
            st_idx = f"({d} * B + b) * H + j" if layout == 0 else f"(b * {nd} + {d}) * H + j"
            body.append("for (std::int64_t b = 0; b < B; ++b)")
            body.append("   for (std::int64_t j = 0; j < H; ++j) {")
            body.append(f"      {hs}[b * H + j] = {e.inp(5) + '[' + st_idx + ']' if v.has_input(5) else zero};")
            if self.op_type == "LSTM":
                body.append(f"      {cs}[b * H + j] = {e.inp(6) + '[' + st_idx + ']' if v.has_input(6) else zero};")
            body.append("   }")
            # the recurrence
            body.append("for (std::int64_t s = 0; s < S; ++s) {")
            step = self._step(v, e, d, act, reverse, dt, vact if vec else None)
            body.extend("   " + ln for ln in step)
            body.append("}")
            # final states
            for k, src in ((1, hs), (2, cs)):
                if self._has_out(v, k):
                    body.append("for (std::int64_t b = 0; b < B; ++b)")
                    body.append("   for (std::int64_t j = 0; j < H; ++j)")
                    # a sequence of length 0 has zero final states (as onnxruntime)
                    val = (f"({e.inp(4)}[b] == 0 ? {zero} : {src}[b * H + j])" if v.has_input(4)
                           else f"{src}[b * H + j]")
                    body.append(f"      {e.out(k)}[{st_idx}] = {val};")
            lines.extend("   " + ln for ln in body)
            lines.append("}")
        return "\n".join(lines)

    def _bias_folded_cols(self, v: NodeView) -> int:
        """Number of gate blocks whose recurrence bias Rb is added in the input projection."""
        return self.gates

    def _batch_loop_head(self, v: NodeView, e, reverse: bool) -> list[str]:
        """Opening of the per-batch loop of one step: skips finished sequences, finds the row."""
        layout = v.attr("layout", 0)
        out = ["for (std::int64_t b = 0; b < B; ++b) {"]
        if v.has_input(4):
            out.append(f"   const std::int64_t len = {e.inp(4)}[b];")
            out.append("   if (s >= len) continue;")
        else:
            out.append("   const std::int64_t len = S;")
        out.append(f"   const std::int64_t t = {'len - 1 - s' if reverse else 's'};")
        row = "t * B + b" if layout == 0 else "b * S + t"
        # restrict: four distinct workspace buffers (without it, the gate loops stay scalar)
        t = v.input(0).dtype.cpp
        out.append(f"   const {t} *__restrict const xr = {e.ws(0)} + ({row}) * G;")
        out.append(f"   {t} *__restrict const gr = {e.ws(1)} + b * G;")
        out.append(f"   {t} *__restrict const hb = {e.ws(2)} + b * H;")
        out.append(f"   {t} *__restrict const cb = {e.ws(3)} + b * H;")
        out.append("   (void)xr; (void)gr; (void)hb; (void)cb; (void)len;")
        return out

    def _y_store(self, v: NodeView, e, d: int) -> list[str]:
        if not self._has_out(v, 0):
            return []
        nd = self._num_dirs(v)
        layout = v.attr("layout", 0)
        base = f"((t * {nd} + {d}) * B + b) * H" if layout == 0 else f"((b * S + t) * {nd} + {d}) * H"
        return [f"   std::memcpy({e.out(0)} + {base}, hb, H * sizeof(*hb));"]

    def _step(self, v: NodeView, e, d: int, act, reverse: bool, dt: DType, vact=None) -> list[str]:
        """The code of one time step; ``act(d, k, x)`` is activation k of direction d of a scalar
        expression, ``vact`` (None: scalar loops only) the same of a ``rows::f8`` expression."""
        raise NotImplementedError

    @staticmethod
    def _gate_loop(scalar: list[str], vector: list[str] | None) -> list[str]:
        """A loop over j < H: the vector body (j a multiple of 8) where the vector types exist."""
        if vector is None:
            return ["   for (std::int64_t j = 0; j < H; ++j) {", *scalar, "   }"]
        return ["#ifdef SOFIE_RT_ROWS_VEC", "   for (std::int64_t j = 0; j < H; j += 8) {", *vector, "   }",
                "#else", "   for (std::int64_t j = 0; j < H; ++j) {", *scalar, "   }", "#endif"]


@register
class RNN(_Recurrent):
    """ONNX RNN: H = f(X W^T + H R^T + Wb + Rb), every direction, layout and activation."""

    op_type = "RNN"
    gates = 1
    default_acts = ("Tanh",)

    def _step(self, v, e, d, act, reverse, dt, vact=None):
        out = [self._r_gemm(v, e, dt, 0, "1", e.ws(2), e.ws(1))]
        out += self._batch_loop_head(v, e, reverse)
        out.append("   for (std::int64_t j = 0; j < H; ++j)")
        out.append(f"      hb[j] = {act(d, 0, 'xr[j] + gr[j]')};")
        out += self._y_store(v, e, d)
        out.append("}")
        return out


@register
class GRU(_Recurrent):
    """ONNX GRU (gates z, r, h), with or without linear_before_reset, every direction and layout."""

    op_type = "GRU"
    gates = 3
    default_acts = ("Sigmoid", "Tanh")

    def _bias_folded_cols(self, v: NodeView) -> int:
        # with linear_before_reset, Rbh stays inside r * (H Rh^T + Rbh)
        return 2 if v.attr("linear_before_reset", 0) else 3

    def _step(self, v, e, d, act, reverse, dt, vact=None):
        T = dt.cpp
        one, zero = e.lit(1, dt), e.lit(0, dt)
        lbr = v.attr("linear_before_reset", 0)
        out: list[str] = []
        if lbr:
            out.append(self._r_gemm(v, e, dt, 0, "3", e.ws(2), e.ws(1)))
            out += self._batch_loop_head(v, e, reverse)
            rbh = "Rb[2 * H + j]" if v.has_input(3) else zero
            vec = None
            if vact:
                vrbh = f"{_LD}(Rb + 2 * H + j)" if v.has_input(3) else f"{_SPLAT}({zero})"
                vec = [f"      const {_F8} z = {vact(d, 0, f'{_LD}(xr + j) + {_LD}(gr + j)')};",
                       f"      const {_F8} r = {vact(d, 0, f'{_LD}(xr + H + j) + {_LD}(gr + H + j)')};",
                       f"      const {_F8} h = "
                       f"{vact(d, 1, f'{_LD}(xr + 2 * H + j) + r * ({_LD}(gr + 2 * H + j) + {vrbh})')};",
                       f"      {_ST}(hb + j, ({_SPLAT}({one}) - z) * h + z * {_LD}(hb + j));"]
            out += self._gate_loop([
                f"      const {T} z = {act(d, 0, 'xr[j] + gr[j]')};",
                f"      const {T} r = {act(d, 0, 'xr[H + j] + gr[H + j]')};",
                f"      const {T} h = {act(d, 1, f'xr[2 * H + j] + r * (gr[2 * H + j] + {rbh})')};",
                f"      hb[j] = ({one} - z) * h + z * hb[j];"], vec)
            out += self._y_store(v, e, d)
            out.append("}")
            return out
        # linear_before_reset = 0: h gate reads (r * H) @ Rh^T, a second GEMM after z and r
        rh = e.ws(3)
        out.append(self._r_gemm(v, e, dt, 0, "2", e.ws(2), e.ws(1)))
        if v.has_input(4):
            # rows of finished sequences are not written below: zero, not stale, in the GEMM
            out.append(f"std::fill({rh}, {rh} + B * H, {zero});")
        out += self._batch_loop_head(v, e, reverse)
        vec = None if not vact else [
            f"      {_ST}(gr + j, {vact(d, 0, f'{_LD}(xr + j) + {_LD}(gr + j)')});",
            f"      {_ST}(cb + j, {vact(d, 0, f'{_LD}(xr + H + j) + {_LD}(gr + H + j)')} * {_LD}(hb + j));"]
        out += self._gate_loop([
            f"      gr[j] = {act(d, 0, 'xr[j] + gr[j]')};",
            f"      cb[j] = {act(d, 0, 'xr[H + j] + gr[H + j]')} * hb[j];"], vec)
        out.append("}")
        out.append(self._r_gemm(v, e, dt, 2, "1", rh, f"{e.ws(1)} + 2 * H"))
        out += self._batch_loop_head(v, e, reverse)
        vec = None if not vact else [
            f"      const {_F8} z = {_LD}(gr + j);",
            f"      const {_F8} h = {vact(d, 1, f'{_LD}(xr + 2 * H + j) + {_LD}(gr + 2 * H + j)')};",
            f"      {_ST}(hb + j, ({_SPLAT}({one}) - z) * h + z * {_LD}(hb + j));"]
        out += self._gate_loop([
            "      const auto z = gr[j];",
            f"      const {T} h = {act(d, 1, 'xr[2 * H + j] + gr[2 * H + j]')};",
            f"      hb[j] = ({one} - z) * h + z * hb[j];"], vec)
        out += self._y_store(v, e, d)
        out.append("}")
        return out


@register
class LSTM(_Recurrent):
    """ONNX LSTM (gates i, o, f, c) with peepholes, input_forget, every direction and layout."""

    op_type = "LSTM"
    gates = 4
    default_acts = ("Sigmoid", "Tanh", "Tanh")

    def _step(self, v, e, d, act, reverse, dt, vact=None):
        T = dt.cpp
        one = e.lit(1, dt)
        out = [self._r_gemm(v, e, dt, 0, "4", e.ws(2), e.ws(1))]
        out += self._batch_loop_head(v, e, reverse)
        peep = v.has_input(7)
        if peep:
            out.append(f"   const {T} *const P = {e.inp(7)} + {d} * 3 * H;")
            pi, po, pf = " + P[j] * cb[j]", " + P[H + j] * c", " + P[2 * H + j] * cb[j]"
        else:
            pi = po = pf = ""
        scalar = [f"      const {T} i = {act(d, 0, f'xr[j] + gr[j]{pi}')};"]
        if v.attr("input_forget", 0):
            scalar.append(f"      const {T} f = {one} - i;")
        else:
            scalar.append(f"      const {T} f = {act(d, 0, f'xr[2 * H + j] + gr[2 * H + j]{pf}')};")
        scalar += [f"      const {T} g = {act(d, 1, 'xr[3 * H + j] + gr[3 * H + j]')};",
                   f"      const {T} c = f * cb[j] + i * g;",
                   f"      const {T} o = {act(d, 0, f'xr[H + j] + gr[H + j]{po}')};",
                   "      cb[j] = c;",
                   f"      hb[j] = o * {act(d, 2, 'c', clipped=False)};"]
        vec = None
        if vact:
            def ld(p: str) -> str:
                return f"{_LD}({p})"
            vpi = f" + {ld('P + j')} * {ld('cb + j')}" if peep else ""
            vpo = f" + {ld('P + H + j')} * c" if peep else ""
            vpf = f" + {ld('P + 2 * H + j')} * {ld('cb + j')}" if peep else ""
            def pre(k: int) -> str:  # the pre-activation of gate block k: xr + gr
                off = f"{k} * H + j" if k else "j"
                return f"{ld('xr + ' + off)} + {ld('gr + ' + off)}"
            vec = [f"      const {_F8} i = {vact(d, 0, pre(0) + vpi)};"]
            if v.attr("input_forget", 0):
                vec.append(f"      const {_F8} f = {_SPLAT}({one}) - i;")
            else:
                vec.append(f"      const {_F8} f = {vact(d, 0, pre(2) + vpf)};")
            vec += [f"      const {_F8} g = {vact(d, 1, pre(3))};",
                    f"      const {_F8} c = f * {ld('cb + j')} + i * g;",
                    f"      const {_F8} o = {vact(d, 0, pre(1) + vpo)};",
                    f"      {_ST}(cb + j, c);",
                    f"      {_ST}(hb + j, o * {vact(d, 2, 'c')});"]
        out += self._gate_loop(scalar, vec)
        out += self._y_store(v, e, d)
        out.append("}")
        return out
