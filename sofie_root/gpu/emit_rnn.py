"""GPU emission of the recurrent layers LSTM, GRU and RNN (every direction, layout, activation,
sequence_lens, initial states, peepholes, input_forget, clip, linear_before_reset).

As on the CPU (``sofie_root/ops/rnn.py``, which defines shapes, attributes and activation
expressions): per direction one GEMM projects every time step (``X @ W^T + Wb + Rb``), then each
step is one GEMM ``H @ R^T`` over the batch and one kernel for the gates (GRU without
``linear_before_reset``: two of each). The time loop runs on the host, launching on the stream.
"""

from __future__ import annotations

from ..ops import rnn
from ..ops.base import NodeView, lookup

#: the time step, a host loop variable, passed to the step kernels
STEP = {"step_": "const std::int64_t"}


class Recurrent:
    def check(self, v: NodeView) -> str | None:
        return None

    def workspace(self, v: NodeView):
        return lookup("", v.node.op_type).workspace(v)  # type: ignore[union-attr]

    def emit(self, v: NodeView, e) -> str:
        op = lookup("", v.node.op_type)
        kind = v.node.op_type
        seq, batch, isz, hidden, nd = op._dims(v)  # type: ignore[union-attr]
        dt = v.input(0).dtype
        T = dt.cpp
        layout = v.attr("layout", 0)
        acts = op._activations(v)  # type: ignore[union-attr]
        clip = v.attr("clip", None)
        gates = op.gates  # type: ignore[union-attr]
        S, B, I, H = e.dim(seq), e.dim(batch), e.dim(isz), e.dim(hidden)
        G = e.dim(gates * hidden)
        xw, gr, hs, cs = e.ws(0), e.ws(1), e.ws(2), e.ws(3)
        one, zero = e.lit(1, dt), e.lit(0, dt)
        lens = e.inp(4) if v.has_input(4) else None
        has_out = [len(v.node.outputs) > k and bool(v.node.outputs[k]) for k in range(3)]
        lines = []
        if lens and has_out[0]:
            lines.append(e.kernel(e.size_out(0), f"{e.out(0)}[i] = {zero};"))
        if lens:
            lines.append(e.kernel(B, f"if ({lens}[i] < 0 || {lens}[i] > {S}) {{ "
                                     f"{e.device_fail('sequence_lens has a value outside [0, seq_length]')} }}"))

        def act(d: int, k: int, x: str, clipped: bool = True) -> str:
            name, a, b = acts[d][k]
            if clip is not None and clipped:
                c = e.lit(float(clip), dt)
                x = f"std::max(-{c}, std::min({c}, {x}))"
            return rnn._activation_expr(name, a, b, x, dt, e.lit)

        r_t, w_t = bool(v.attr(rnn.R_TRANSPOSED, 0)), bool(v.attr(rnn.W_TRANSPOSED, 0))

        def r_gemm(d: int, first: int, count: int, a: str, out: str) -> str:
            rd = f"{e.inp(2)} + {d} * {G} * {H}"
            if r_t:
                return e.gemm(dt, False, False, B, f"{count} * {H}", H, one, a, H, f"{rd} + {first} * {H}", G, zero,
                              out, G)
            return e.gemm(dt, False, True, B, f"{count} * {H}", H, one, a, H, f"{rd} + {first} * {H} * {H}", H, zero,
                          out, G)

        # per (batch entry b, hidden unit j) work item of one step: t, rows of xw / gr / states
        row = "t_ * B_ + b_" if layout == 0 else "b_ * S_ + t_"

        def head(reverse: bool) -> str:
            len_ = f"{lens}[b_]" if lens else S
            return (f"const std::int64_t b_ = i / {H}, j_ = i % {H}, B_ = {B}, S_ = {S};\n"
                    f"const std::int64_t len_ = {len_};\n"
                    "if (step_ >= len_) continue;\n"
                    f"const std::int64_t t_ = {'len_ - 1 - step_' if reverse else 'step_'};\n"
                    f"const {T} *const xr = {xw} + ({row}) * {G};\n"
                    f"{T} *const grr = {gr} + b_ * {G};\n"
                    f"{T} *const hb = {hs} + b_ * {H};\n"
                    f"{T} *const cb = {cs} + b_ * {H};\n"
                    "(void)B_; (void)S_; (void)xr; (void)grr; (void)hb; (void)cb;")

        def y_store(d: int) -> str:
            if not has_out[0]:
                return ""
            base = f"((t_ * {nd} + {d}) * B_ + b_) * {H}" if layout == 0 else f"((b_ * S_ + t_) * {nd} + {d}) * {H}"
            return f"\n{e.out(0)}[{base} + j_] = hb[j_];"

        for d in range(nd):
            reverse = v.attr("direction", "forward") == "reverse" or d == 1
            lines.append(f"// direction {d}{' (reverse)' if reverse else ''}")
            cols = gates
            if kind == "GRU" and v.attr("linear_before_reset", 0):
                cols = 2
            if v.has_input(3):
                wb = f"{e.inp(3)}[{d} * 2 * {G} + i % {G}]"
                rb = f"{e.inp(3)}[{d} * 2 * {G} + {G} + i % {G}]"
                lines.append(e.kernel(f"{S} * {B} * {G}", f"{xw}[i] = {wb} + (i % {G} < {cols} * {H} ? {rb} : {zero});"))
                beta = one
            else:
                beta = zero
            wd = f"{e.inp(1)} + {d} * {G} * {I}"
            if w_t:
                lines.append(e.gemm(dt, False, False, f"{S} * {B}", G, I, one, e.inp(0), I, wd, G, beta, xw, G))
            else:
                lines.append(e.gemm(dt, False, True, f"{S} * {B}", G, I, one, e.inp(0), I, wd, I, beta, xw, G))
            st_idx = f"({d} * {B} + b_) * {H} + j_" if layout == 0 else f"(b_ * {nd} + {d}) * {H} + j_"
            init = [f"const std::int64_t b_ = i / {H}, j_ = i % {H};",
                    f"{hs}[i] = {e.inp(5) + '[' + st_idx + ']' if v.has_input(5) else zero};"]
            if kind == "LSTM":
                init.append(f"{cs}[i] = {e.inp(6) + '[' + st_idx + ']' if v.has_input(6) else zero};")
            lines.append(e.kernel(f"{B} * {H}", "\n".join(init)))
            lines.append(f"for (std::int64_t step_ = 0; step_ < {S}; ++step_) {{")
            step = self._step(v, e, kind, d, act, reverse, dt, r_gemm, head, y_store, one, zero, gr, cs, hs, B, H)
            lines.extend("   " + ln for ln in step.splitlines())
            lines.append("}")
            for k, src in ((1, hs), (2, cs)):
                if has_out[k]:
                    val = f"({lens}[b_] == 0 ? {zero} : {src}[i])" if lens else f"{src}[i]"
                    lines.append(e.kernel(f"{B} * {H}", f"const std::int64_t b_ = i / {H}, j_ = i % {H};\n"
                                                       f"{e.out(k)}[{st_idx}] = {val};"))
        return "\n".join(lines)

    def _step(self, v, e, kind, d, act, reverse, dt, r_gemm, head, y_store, one, zero, gr, cs, hs, B, H) -> str:
        T = dt.cpp
        out = []
        if kind == "LSTM":
            out.append(r_gemm(d, 0, 4, hs, gr))
            if v.has_input(7):
                p = f"{e.inp(7)} + {d} * 3 * {H}"
                pi, po, pf = (f" + ({p})[j_] * cb[j_]", f" + ({p})[{H} + j_] * c", f" + ({p})[2 * {H} + j_] * cb[j_]")
            else:
                pi = po = pf = ""
            body = [head(reverse),
                    f"const {T} ig = {act(d, 0, f'xr[j_] + grr[j_]{pi}')};",
                    (f"const {T} fg = {one} - ig;" if v.attr("input_forget", 0)
                     else f"const {T} fg = {act(d, 0, f'xr[2 * {H} + j_] + grr[2 * {H} + j_]{pf}')};"),
                    f"const {T} gg = {act(d, 1, f'xr[3 * {H} + j_] + grr[3 * {H} + j_]')};",
                    f"const {T} c = fg * cb[j_] + ig * gg;",
                    f"const {T} og = {act(d, 0, f'xr[{H} + j_] + grr[{H} + j_]{po}')};",
                    "cb[j_] = c;",
                    f"hb[j_] = og * {act(d, 2, 'c', clipped=False)};" + y_store(d)]
            out.append(e.kernel(f"{B} * {H}", "\n".join(body), params=STEP))
        elif kind == "RNN":
            out.append(r_gemm(d, 0, 1, hs, gr))
            out.append(e.kernel(f"{B} * {H}", head(reverse) + f"\nhb[j_] = {act(d, 0, 'xr[j_] + grr[j_]')};"
                                + y_store(d), params=STEP))
        elif v.attr("linear_before_reset", 0):
            out.append(r_gemm(d, 0, 3, hs, gr))
            rbh = f"{e.inp(3)}[{d} * 2 * 3 * {H} + 3 * {H} + 2 * {H} + j_]" if v.has_input(3) else zero
            body = [head(reverse),
                    f"const {T} z = {act(d, 0, 'xr[j_] + grr[j_]')};",
                    f"const {T} r = {act(d, 0, f'xr[{H} + j_] + grr[{H} + j_]')};",
                    f"const {T} h = {act(d, 1, f'xr[2 * {H} + j_] + r * (grr[2 * {H} + j_] + {rbh})')};",
                    f"hb[j_] = ({one} - z) * h + z * hb[j_];" + y_store(d)]
            out.append(e.kernel(f"{B} * {H}", "\n".join(body), params=STEP))
        else:
            # z and r first; r * H goes to the cell buffer, then (r * H) @ Rh^T for the h gate
            out.append(r_gemm(d, 0, 2, hs, gr))
            out.append(e.kernel(f"{B} * {H}", f"{cs}[i] = {zero};"))
            out.append(e.kernel(f"{B} * {H}", head(reverse) + "\n"
                                f"grr[j_] = {act(d, 0, 'xr[j_] + grr[j_]')};\n"
                                f"cb[j_] = {act(d, 0, f'xr[{H} + j_] + grr[{H} + j_]')} * hb[j_];", params=STEP))
            out.append(r_gemm(d, 2, 1, cs, f"{gr} + 2 * {H}"))
            out.append(e.kernel(f"{B} * {H}", head(reverse) + "\n"
                                f"const {T} z = grr[j_];\n"
                                f"const {T} h = {act(d, 1, f'xr[2 * {H} + j_] + grr[2 * {H} + j_]')};\n"
                                f"hb[j_] = ({one} - z) * h + z * hb[j_];" + y_store(d), params=STEP))
        return "\n".join(out)


def emitters() -> dict:
    return {("", "LSTM"): Recurrent(), ("", "GRU"): Recurrent(), ("", "RNN"): Recurrent()}
