"""The attention family.

Attention (ONNX opsets 23-25): scaled dot-product attention with multi-head, grouped-query and
multi-query heads, 3-D or 4-D layouts, boolean or additive masks, causal and sliding-window
masking, a key/value cache (past/present), per-batch valid lengths and soft-capping.
The kernel is ``sofie_rt::attention`` in the runtime header; this module does the shape
inference and lays out the arguments. K and V are first gathered with the past cache into the
``present`` layout ``[B, Hkv, S_total, D]`` (the present outputs themselves, or workspace).

LinearAttention (ONNX opset 27): the recurrent linear attention of the spec (linear, gated,
delta and gated-delta update rules, grouped-query heads, a recurrent state carried in and out),
computed by ``sofie_rt::linear_attention``.

FlexAttention (domain ai.onnx.preview): without modifier sub-graphs, ``sofie_rt::attention`` on
the 4-D inputs; with ``score_mod``/``prob_mod`` (which ``onnx.defs`` inlines into the function
body), ``softmax_precision`` or half-precision inputs, the frontend compiles its function body.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..ir.dims import Dim
from ..ir.dtypes import BOOL
from .base import NodeView, Operator, OutInfo, register

if TYPE_CHECKING:
    import onnx

FLOATS = ("float32", "float64")


def _mask_fields(e, a: str, mask: str, mask_shape, is_bool: bool) -> str:
    """The kernel's mask fields: the mask broadcast to [B, H, Sq, St] from its own shape (a
    stride of 0 along a dimension of 1)."""
    shape = [1] * (4 - len(mask_shape)) + list(mask_shape)
    strides = []
    acc = shape[3]
    for ax in (2, 1, 0):
        strides.insert(0, 0 if isinstance(shape[ax], int) and shape[ax] == 1 else acc)
        acc = acc * shape[ax]
    return (f"{a}.mask = {mask}; {a}.mask_bool = {'true' if is_bool else 'false'}; "
            f"{a}.mb = {e.dim(strides[0])}; {a}.mh = {e.dim(strides[1])}; {a}.mi = {e.dim(strides[2])}; "
            f"{a}.mlen = {e.dim(shape[3])};")


def attention_scratch(sq, total, d, dv):
    """Elements of ``AttentionArgs::scores`` that ``sofie_rt::attention`` needs (one batch and head
    at a time). The float kernel: Q scaled [Sq, D], K scaled and transposed [D, St8], the scores and
    the probabilities [Sq, St8] each and V padded [St, Dv8] (St8, Dv8: rounded up to 8, bounded
    here by + 8); the reference form (double, the qk output) needs less: [Sq, St] scores plus Q and
    K scaled. Every node that calls the kernel sizes its workspace here, so the two cannot drift
    apart."""
    return sq * d + d * (total + 8) + 2 * sq * (total + 8) + total * (dv + 8)


@register
class Attention(Operator):
    """ONNX Attention: Y = softmax(Q K^T * scale + bias) V, with every masking option."""

    op_type = "Attention"

    def check(self, v: NodeView) -> str | None:
        for k in (0, 1, 2, 4, 5):
            if v.has_input(k) and v.input(k).dtype.name not in FLOATS:
                return f"element type {v.input(k).dtype.name} is not supported (float32, float64)"
        if v.has_input(3) and v.input(3).dtype not in (BOOL, v.input(0).dtype):
            return "attn_mask must be bool or of the query's element type"
        if v.has_input(4) != v.has_input(5):
            return "past_key and past_value must be given together"
        if v.has_input(6) and v.has_input(4):
            return "nonpad_kv_seqlen cannot be combined with a past cache"
        if v.input(0).rank not in (3, 4):
            return "Q, K and V must be 3-D or 4-D"
        return None

    def _dims(self, v: NodeView):
        q, k, val = v.input(0), v.input(1), v.input(2)
        if not q.rank == k.rank == val.rank:
            raise v.fail(f"Q, K and V must have the same rank, got {q} {k} {val}")
        if q.rank == 4:
            b, hq, sq, d = q.shape
            _, hkv, skv, dk = k.shape
            dv = val.shape[3]
        else:
            hq, hkv = v.attr("q_num_heads"), v.attr("kv_num_heads")
            if not hq or not hkv:
                raise v.fail("3-D inputs need the q_num_heads and kv_num_heads attributes")
            b, sq, hid = q.shape
            skv = k.shape[1]
            d, dk, dv = hid // hq, k.shape[2] // hkv, val.shape[2] // hkv
        if isinstance(hq, int) and isinstance(hkv, int) and hq % hkv:
            raise v.fail(f"q_num_heads {hq} is not a multiple of kv_num_heads {hkv}")
        if d != dk and not isinstance(d, Dim) and not isinstance(dk, Dim):
            raise v.fail(f"query head size {d} differs from key head size {dk}")
        past = v.input(4).shape[2] if v.has_input(4) else 0
        return b, hq, hkv, sq, skv, past, d, dv

    def infer(self, v: NodeView) -> list[OutInfo]:
        b, hq, hkv, sq, skv, past, d, dv = self._dims(v)
        dt = v.input(0).dtype
        total = past + skv
        y = (b, hq, sq, dv) if v.input(0).rank == 4 else (b, sq, hq * dv)
        return [OutInfo(dt, y), OutInfo(dt, (b, hkv, total, d)), OutInfo(dt, (b, hkv, total, dv)),
                OutInfo(dt, (b, hq, sq, total))]

    def _has_out(self, v: NodeView, k: int) -> bool:
        return len(v.node.outputs) > k and bool(v.node.outputs[k])

    def workspace(self, v: NodeView):
        b, _, hkv, sq, skv, past, d, dv = self._dims(v)
        dt = v.input(0).dtype
        total = past + skv
        ws = [(dt, attention_scratch(sq, total, d, dv))]
        if v.has_input(4) and not self._has_out(v, 1):
            ws.append((dt, b * hkv * total * d))
        if v.has_input(4) and not self._has_out(v, 2):
            ws.append((dt, b * hkv * total * dv))
        return ws

    def emit(self, v: NodeView, e) -> str:
        b, hq, hkv, sq, skv, past, d, dv = self._dims(v)
        dt = v.input(0).dtype
        T = dt.cpp
        total = past + skv
        four = v.input(0).rank == 4
        # K and V: read in place (no past cache, no present output), or gathered with the past
        # cache into the present layout [B, Hkv, S_total, D] (the present outputs or workspace)
        kv = []
        ws = 1
        for new in (1, 2):
            if self._has_out(v, new):
                kv.append((e.out(new), True))
            elif v.has_input(4):
                kv.append((e.ws(ws), True))
                ws += 1
            else:
                kv.append((e.inp(new), False))
        lines = []
        for (dst, gather), new, past_in, dd in zip(kv, (1, 2), (4, 5), (d, dv)):
            if not gather:
                continue
            sb, sh, ss = ((hkv * skv * dd, skv * dd, dd) if four else (skv * hkv * dd, dd, hkv * dd))
            lines.append(
                f"for (std::int64_t b_ = 0; b_ < {e.dim(b)}; ++b_)\n"
                f"   for (std::int64_t h_ = 0; h_ < {e.dim(hkv)}; ++h_) {{\n"
                f"      {T} *dst_ = {dst} + (b_ * {e.dim(hkv)} + h_) * {e.dim(total * dd)};")
            if v.has_input(past_in):
                lines.append(
                    f"      std::memcpy(dst_, {e.inp(past_in)} + (b_ * {e.dim(hkv)} + h_) * {e.dim(past * dd)}, "
                    f"sizeof({T}) * std::size_t({e.dim(past * dd)}));")
            lines.append(
                f"      for (std::int64_t s_ = 0; s_ < {e.dim(skv)}; ++s_)\n"
                f"         std::memcpy(dst_ + ({e.dim(past)} + s_) * {e.dim(dd)}, {e.inp(new)} + b_ * {e.dim(sb)} + "
                f"h_ * {e.dim(sh)} + s_ * {e.dim(ss)}, sizeof({T}) * std::size_t({e.dim(dd)}));\n"
                f"   }}")
        scale = v.attr("scale")
        if scale is None:
            if isinstance(d, Dim):
                raise v.fail("the head size must be static when no scale is given")
            scale = 1.0 / math.sqrt(d)
        a = e.tmp("attn")
        q_strides = (hq * sq * d, sq * d, d) if four else (sq * hq * d, d, hq * d)
        y_strides = (hq * sq * dv, sq * dv, dv) if four else (sq * hq * dv, dv, hq * dv)
        lines.append(f"sofie_rt::AttentionArgs<{T}> {a}{{}};")
        k_strides, v_strides = (
            (hkv * total * dd, total * dd, dd) if gather else
            ((hkv * skv * dd, skv * dd, dd) if four else (skv * hkv * dd, dd, hkv * dd))
            for (_, gather), dd in zip(kv, (d, dv)))
        fields = {
            "B": b, "Hq": hq, "Hkv": hkv, "Sq": sq, "St": total, "D": d, "Dv": dv,
            "qb": q_strides[0], "qh": q_strides[1], "qi": q_strides[2],
            "kb": k_strides[0], "kh": k_strides[1], "ki": k_strides[2], "kd": 1,
            "vb": v_strides[0], "vh": v_strides[1], "vi": v_strides[2],
            "yb": y_strides[0], "yh": y_strides[1], "yi": y_strides[2], "past": past,
        }
        for name, val in fields.items():
            lines.append(f"{a}.{name} = {e.dim(val)};")
        lines.append(f"{a}.Q = {e.inp(0)}; {a}.K = {kv[0][0]}; {a}.V = {kv[1][0]}; {a}.Y = {e.out(0)};")
        lines.append(f"{a}.scale_q = {a}.scale_k = {e.lit(math.sqrt(scale), dt)};")
        lines.append(f"{a}.softcap = {e.lit(v.attr('softcap', 0.0), dt)};")
        lines.append(f"{a}.causal = {'true' if v.attr('is_causal', 0) else 'false'};")
        lines.append(f"{a}.left = {int(v.attr('left_window_size', -1))}; {a}.right = {int(v.attr('right_window_size', -1))};")
        lines.append(f"{a}.nonpad = {e.inp(6) if v.has_input(6) else 'nullptr'};")
        if v.has_input(3):
            m = v.input(3)
            lines.append(_mask_fields(e, a, e.inp(3), m.shape, m.dtype == BOOL))
        if self._has_out(v, 3):
            lines.append(f"{a}.qk_mode = {int(v.attr('qk_matmul_output_mode', 0))}; {a}.qk = {e.out(3)};")
        lines.append(f"{a}.scores = {e.ws(0)};")
        lines.append(f"sofie_rt::attention<{T}>({a});")
        return "\n".join(lines)


_UPDATE_RULES = ("linear", "gated", "delta", "gated_delta")


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


@register
class LinearAttention(Operator):
    """ONNX LinearAttention: the linear, gated, delta and gated_delta recurrences over a
    [B, Hkv, dk, dv] state, with grouped-query heads; per-head or per-key-dimension decay, per-head
    or shared beta. float16/bfloat16 are computed in float32 and rounded at the outputs, as the
    reference does."""

    op_type = "LinearAttention"
    dtypes = ("float32",)  # float16/bfloat16 models reach it as float32 (see frontends/onnx.py)

    def check(self, v: NodeView) -> str | None:
        for k in range(6):
            if v.has_input(k) and v.input(k).dtype.name != "float32":
                return f"element type {v.input(k).dtype.name} is not supported (float32, float16, bfloat16)"
        rule = _text(v.attr("update_rule", "gated_delta"))
        if rule not in _UPDATE_RULES:
            return f"update_rule {rule!r} is not one of {', '.join(_UPDATE_RULES)}"
        return None

    def _dims(self, v: NodeView):
        hq, hkv = v.attr("q_num_heads"), v.attr("kv_num_heads")
        if not isinstance(hq, int) or not isinstance(hkv, int) or hq <= 0 or hkv <= 0 or hq % hkv:
            raise v.fail(f"q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hkv})")
        q, k, val = v.input(0), v.input(1), v.input(2)
        for name, t in (("query", q), ("key", k), ("value", val)):
            if t.rank != 3:
                raise v.fail(f"{name} must be 3-D (B, T, H*D), got shape {t.shape}")
        for name, t, h in (("query", q, hq), ("key", k, hkv), ("value", val, hkv)):
            last = t.shape[2]
            if isinstance(last, Dim):
                raise v.fail(f"the last dimension of {name} must be known at compile time")
            if last % h:
                raise v.fail(f"the last dimension of {name} ({last}) is not a multiple of its {h} heads")
        b, t = q.shape[0], q.shape[1]
        dk, dv = q.shape[2] // hq, val.shape[2] // hkv
        if k.shape[2] != hkv * dk:
            raise v.fail(f"key's last dimension {k.shape[2]} is not kv_num_heads * d_k = {hkv * dk}")
        rule = _text(v.attr("update_rule", "gated_delta"))
        gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
        if gated != v.has_input(4):
            raise v.fail(f"update_rule {rule!r} {'requires' if gated else 'forbids'} the decay input")
        if delta != v.has_input(5):
            raise v.fail(f"update_rule {rule!r} {'requires' if delta else 'forbids'} the beta input")
        decay_w = beta_w = 0
        if gated:
            dec = v.input(4)
            decay_w = dec.shape[-1] if dec.rank == 3 else None
            if decay_w not in (hkv, hkv * dk):
                raise v.fail(f"decay must be (B, T, {hkv}) or (B, T, {hkv * dk}), got {dec.shape}")
        if delta:
            bet = v.input(5)
            beta_w = bet.shape[-1] if bet.rank == 3 else None
            if beta_w not in (hkv, 1):
                raise v.fail(f"beta must be (B, T, {hkv}) or (B, T, 1), got {bet.shape}")
        if v.has_input(3) and v.input(3).rank != 4:
            raise v.fail(f"past_state must be 4-D (B, {hkv}, {dk}, {dv}), got {v.input(3).shape}")
        if v.has_input(3) and tuple(v.input(3).shape[1:]) != (hkv, dk, dv):
            raise v.fail(f"past_state shape {v.input(3).shape} does not match (B, {hkv}, {dk}, {dv})")
        return b, t, hq, hkv, dk, dv, decay_w, beta_w

    def infer(self, v: NodeView) -> list[OutInfo]:
        b, t, hq, hkv, dk, dv, _, _ = self._dims(v)
        dt = v.input(0).dtype
        return [OutInfo(dt, (b, t, hq * dv)), OutInfo(dt, (b, hkv, dk, dv))]

    def _has_present(self, v: NodeView) -> bool:
        return len(v.node.outputs) > 1 and bool(v.node.outputs[1])

    def workspace(self, v: NodeView):
        _, _, _, _, dk, dv, _, _ = self._dims(v)
        dt = v.input(0).dtype
        return [(dt, dv)] + ([] if self._has_present(v) else [(dt, dk * dv)])

    def emit(self, v: NodeView, e) -> str:
        b, t, hq, hkv, dk, dv, decay_w, beta_w = self._dims(v)
        dt = v.input(0).dtype
        scale = v.attr("scale", 0.0) or 1.0 / math.sqrt(dk)
        a = e.tmp("la")
        lines = [f"sofie_rt::LinearAttentionArgs<{dt.cpp}> {a}{{}};"]
        for name, val in {"B": b, "T_": t, "Hq": hq, "Hkv": hkv, "dk": dk, "dv": dv,
                          "decay_w": decay_w, "beta_w": beta_w}.items():
            lines.append(f"{a}.{name} = {e.dim(val)};")
        lines.append(f"{a}.Q = {e.inp(0)}; {a}.K = {e.inp(1)}; {a}.V = {e.inp(2)};")
        for field, k in (("past", 3), ("decay", 4), ("beta", 5)):
            lines.append(f"{a}.{field} = {e.inp(k) if v.has_input(k) else 'nullptr'};")
        lines.append(f"{a}.scale = {e.lit(scale, dt)};")
        lines.append(f"{a}.Y = {e.out(0)}; {a}.present = {e.out(1) if self._has_present(v) else 'nullptr'};")
        lines.append(f"{a}.u = {e.ws(0)}; {a}.state = {'nullptr' if self._has_present(v) else e.ws(1)};")
        lines.append(f"sofie_rt::linear_attention<{dt.cpp}>({a});")
        return "\n".join(lines)


@register
class FlexAttention(Operator):
    """ONNX FlexAttention (ai.onnx.preview): softmax(Q K^T * scale) V over rank-4 inputs with
    grouped-query heads; score_mod/prob_mod sub-graphs, softmax_precision and float16/bfloat16
    through the spec's function body."""

    op_type = "FlexAttention"
    domain = "ai.onnx.preview"
    dtypes = FLOATS

    def expands(self, proto: onnx.NodeProto, half: bool) -> bool:
        return half or any(a.name in ("score_mod", "prob_mod", "softmax_precision") for a in proto.attribute)

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if not v.input(0).dtype == v.input(1).dtype == v.input(2).dtype:
            return "Q, K and V must have one element type"
        return None

    def _dims(self, v: NodeView):
        q, k, val = v.input(0), v.input(1), v.input(2)
        if not q.rank == k.rank == val.rank == 4:
            raise v.fail(f"Q, K and V must be 4-D, got {q} {k} {val}")
        b, hq, sq, d = q.shape
        hkv, skv, dk = k.shape[1], k.shape[2], k.shape[3]
        dv = val.shape[3]
        if isinstance(hq, Dim) or isinstance(hkv, Dim):
            raise v.fail("the numbers of heads must be known at compile time")
        if hq % hkv:
            raise v.fail(f"the {hq} query heads are not a multiple of the {hkv} key/value heads")
        for what, x, y in (("key and value heads", hkv, val.shape[1]), ("key and value lengths", skv, val.shape[2]),
                           ("query and key head sizes", d, dk)):
            if isinstance(x, int) and isinstance(y, int) and x != y:
                raise v.fail(f"{what} differ: {x} and {y}")
        return b, hq, hkv, sq, skv, d, dv

    def infer(self, v: NodeView) -> list[OutInfo]:
        b, hq, _, sq, _, _, dv = self._dims(v)
        return [OutInfo(v.input(0).dtype, (b, hq, sq, dv))]

    def workspace(self, v: NodeView):
        _, _, _, sq, skv, d, dv = self._dims(v)
        return [(v.input(0).dtype, attention_scratch(sq, skv, d, dv))]

    def emit(self, v: NodeView, e) -> str:
        b, hq, hkv, sq, skv, d, dv = self._dims(v)
        dt = v.input(0).dtype
        scale = v.attr("scale")
        if scale is None:
            if isinstance(d, Dim):
                raise v.fail("the head size must be static when no scale is given")
            scale = 1.0 / math.sqrt(d)
        # the reference scales q and k by sqrt(scale) taken in float32
        sqrt_scale = float(np.sqrt(np.float32(scale)))
        a = e.tmp("flex")
        lines = [f"sofie_rt::AttentionArgs<{dt.cpp}> {a}{{}};"]
        fields = {"B": b, "Hq": hq, "Hkv": hkv, "Sq": sq, "St": skv, "D": d, "Dv": dv,
                  "qb": hq * sq * d, "qh": sq * d, "qi": d, "kb": hkv * skv * d, "kh": skv * d, "ki": d, "kd": 1,
                  "vb": hkv * skv * dv, "vh": skv * dv, "vi": dv,
                  "yb": hq * sq * dv, "yh": sq * dv, "yi": dv, "past": 0}
        for name, val in fields.items():
            lines.append(f"{a}.{name} = {e.dim(val)};")
        lines.append(f"{a}.Q = {e.inp(0)}; {a}.K = {e.inp(1)}; {a}.V = {e.inp(2)}; {a}.Y = {e.out(0)};")
        lines.append(f"{a}.scale_q = {a}.scale_k = {e.lit(sqrt_scale, dt)}; {a}.softcap = {e.lit(0.0, dt)};")
        lines.append(f"{a}.causal = false; {a}.left = -1; {a}.right = -1; {a}.nonpad = nullptr;")
        lines.append(f"{a}.scores = {e.ws(0)};")
        lines.append(f"sofie_rt::attention<{dt.cpp}>({a});")
        return "\n".join(lines)


@register
class FusedAttention(Operator):
    """Internal (``sofie.FusedAttention``, made by the ``fuse_attention`` pass): the exported
    attention block ``Softmax(scale * (Q @ B) + bias, axis=-1) @ V`` in one node, with the
    semantics of those nodes (the bias is added as is; a row of -inf scores gives NaN). Inputs Q
    [B, H, Sq, D]; K as [B, H, St, D] (attribute ``k_transposed`` 0, the input of the Transpose
    that made B) or B itself [B, H, D, St] (1); V [B, H, St, Dv]; optional float bias
    broadcasting to [B, H, Sq, St] with St as its last dimension. ``packed`` [iq, ik, iv]: an
    input with index >= 0 is a [B, S, G, H, D] projection read in place at that index of axis 2
    (-1: a plain 4-D input); ``y_transposed`` 1: Y is [B, Sq, H, Dv]. Computed by
    ``sofie_rt::attention``: scores, softmax and P V per (batch, head) while they are in cache,
    instead of three [B, H, Sq, St] tensors written and read back."""

    op_type = "FusedAttention"
    domain = "sofie"
    internal = True
    dtypes = ("float32",)

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        try:
            self._dims(v)
        except Exception as exc:
            return str(exc)
        return None

    def _views(self, v: NodeView):
        """Per input Q, K, V: (its [B, H, S, D] shape, (offset, b, h, s, d strides))."""
        packed = list(v.attr("packed", [-1, -1, -1]))
        kt = int(v.attr("k_transposed", 0))
        if len(packed) != 3 or kt not in (0, 1) or (kt and packed[1] >= 0):
            raise v.fail(f"bad packed {packed} / k_transposed {kt}")
        out = []
        for k in range(3):
            x = v.input(k)
            if packed[k] >= 0:
                if x.rank != 5 or not isinstance(x.shape[2], int) or packed[k] >= x.shape[2]:
                    raise v.fail(f"input {k} {x} must be [B, S, G, H, D] with G > {packed[k]}")
                b, s, g, h, d = x.shape
                out.append(((b, h, s, d), (packed[k] * h * d, s * g * h * d, d, g * h * d, 1)))
            elif x.rank != 4:
                raise v.fail(f"input {k} must be 4-D, got {x}")
            elif k == 1 and kt:
                b, h, d, s = x.shape
                out.append(((b, h, s, d), (0, h * d * s, d * s, 1, s)))
            else:
                b, h, s, d = x.shape
                out.append(((b, h, s, d), (0, h * s * d, s * d, d, 1)))
        return out

    def _dims(self, v: NodeView):
        (b, h, sq, d), (kb_, kh_, st, dk), (vb_, vh_, st_v, dv) = (s for s, _ in self._views(v))
        kt = int(v.attr("k_transposed", 0))
        for what, x, y in (("batch", b, kb_), ("batch", b, vb_), ("heads", h, kh_),
                           ("heads", h, vh_), ("head sizes", d, dk), ("key lengths", st, st_v)):
            if isinstance(x, int) and isinstance(y, int) and x != y:
                raise v.fail(f"Q, K and V {what} differ: {x} and {y}")
        if v.has_input(3):
            m = v.input(3)
            full = (b, h, sq, st)
            shape = [1] * (4 - m.rank) + list(m.shape)
            if m.rank > 4 or m.dtype != v.input(0).dtype or shape[3] != st or any(
                    not (x == 1 or x == y) for x, y in zip(shape[:3], full[:3])):
                raise v.fail(f"the bias {m} must broadcast to [B, H, Sq, St] with St = {st} as its last dimension")
        scale = v.attr("scale", 1.0)
        if not (isinstance(scale, float) and math.isfinite(scale) and scale > 0):
            raise v.fail(f"scale must be a positive finite number, got {scale!r}")
        return b, h, sq, st, d, dv, kt

    def infer(self, v: NodeView) -> list[OutInfo]:
        b, h, sq, _, _, dv, _ = self._dims(v)
        y = (b, sq, h, dv) if v.attr("y_transposed", 0) else (b, h, sq, dv)
        return [OutInfo(v.input(0).dtype, y)]

    def workspace(self, v: NodeView):
        _, _, sq, st, d, dv, _ = self._dims(v)
        return [(v.input(0).dtype, attention_scratch(sq, st, d, dv))]

    def emit(self, v: NodeView, e) -> str:
        b, h, sq, st, d, dv, _ = self._dims(v)
        dt = v.input(0).dtype
        a = e.tmp("fatt")
        (_, q), (_, k), (_, val) = self._views(v)
        y = (sq * h * dv, dv, h * dv) if v.attr("y_transposed", 0) else (h * sq * dv, sq * dv, dv)
        fields = {"B": b, "Hq": h, "Hkv": h, "Sq": sq, "St": st, "D": d, "Dv": dv,
                  "qb": q[1], "qh": q[2], "qi": q[3], "kb": k[1], "kh": k[2], "ki": k[3], "kd": k[4],
                  "vb": val[1], "vh": val[2], "vi": val[3], "yb": y[0], "yh": y[1], "yi": y[2], "past": 0}
        lines = [f"sofie_rt::AttentionArgs<{dt.cpp}> {a}{{}};"]
        for name, x in fields.items():
            lines.append(f"{a}.{name} = {e.dim(x)};")
        lines.append(f"{a}.Q = {e.inp(0)} + {e.dim(q[0])}; {a}.K = {e.inp(1)} + {e.dim(k[0])}; "
                     f"{a}.V = {e.inp(2)} + {e.dim(val[0])}; {a}.Y = {e.out(0)};")
        # (Q K^T) * scale as (Q)(scale K)^T: Q is read in place
        lines.append(f"{a}.scale_q = {e.lit(1.0, dt)}; {a}.scale_k = {e.lit(float(v.attr('scale', 1.0)), dt)}; "
                     f"{a}.softcap = {e.lit(0.0, dt)};")
        lines.append(f"{a}.causal = false; {a}.left = -1; {a}.right = -1; {a}.nonpad = nullptr;")
        lines.append(f"{a}.softmax_plain = true;")
        if v.has_input(3):
            lines.append(_mask_fields(e, a, e.inp(3), v.input(3).shape, False))
        lines.append(f"{a}.scores = {e.ws(0)};")
        lines.append(f"sofie_rt::attention<{dt.cpp}>({a});")
        return "\n".join(lines)
