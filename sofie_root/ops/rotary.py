"""ONNX RotaryEmbedding (opset 23): rotary position embeddings as one kernel.

The spec defines the operator as a function (Gather of the caches by position, Slices, Muls,
Sub/Add and Concats, each a pass over the tensor); here one loop reads each head row once:
per (batch, position) the cos/sin rows are found once (by ``position_ids``, checked against the
cache length, or the caches' own [batch, sequence] rows), then every head is rotated, the
half-split or the interleaved pairs of the first ``rotary_embedding_dim`` values, the rest
copied. 4-D input [batch, heads, sequence, head_size] or 3-D [batch, sequence, heads x
head_size] with ``num_heads``. Half-precision inputs are compiled through the function body
(each step rounds to the half type, as the reference computes). The GPU backend's version is in
``gpu/emit_movement.py``.
"""

from __future__ import annotations

import onnx

from ..ir.dims import Dim, DimLike
from ..ir.dtypes import INT64
from .base import NodeView, Operator, OutInfo, register

I64 = "std::int64_t"


@register
class RotaryEmbedding(Operator):
    """ONNX RotaryEmbedding: interleaved or half-split rotation, partial rotary_embedding_dim,
    optional position_ids."""

    op_type = "RotaryEmbedding"
    dtypes = ("float32", "float64")  # float16/bfloat16: through the function body

    def expands(self, proto: onnx.NodeProto, half: bool) -> bool:
        return half

    def check(self, v: NodeView) -> str | None:
        if v.input(0).dtype.name not in ("float32", "float64"):
            return f"element type {v.input(0).dtype.name} is not supported (float32, float64)"
        if any(v.input(k).dtype != v.input(0).dtype for k in (1, 2)):
            return "cos_cache and sin_cache must have the input's element type"
        if v.has_input(3) and v.input(3).dtype != INT64:
            return f"position_ids must be int64, got {v.input(3).dtype.name}"
        return None

    def geometry(self, v: NodeView) -> tuple[DimLike, DimLike, DimLike, DimLike, int, bool]:
        """(batch, sequence, heads, head_size, rotary dim, 4-D layout)."""
        x = v.input(0)
        if x.rank == 4:
            b, h, s, d = x.shape
        elif x.rank == 3:
            heads = int(v.attr("num_heads", 0) or 0)
            if heads <= 0:
                raise v.fail("a 3-D input needs the num_heads attribute")
            b, s, hidden = x.shape
            if isinstance(hidden, Dim):
                raise v.fail("the hidden size of a 3-D input must be known at compile time")
            if hidden % heads:
                raise v.fail(f"hidden size {hidden} is not a multiple of num_heads={heads}")
            h, d = heads, hidden // heads
        else:
            raise v.fail(f"the input must be 3-D or 4-D, got {x}")
        if isinstance(d, Dim):
            raise v.fail("the head size must be known at compile time")
        rd = int(v.attr("rotary_embedding_dim", 0) or 0) or int(d)
        if rd % 2 or rd > int(d) or rd < 0:
            raise v.fail(f"rotary_embedding_dim={rd} must be even and at most the head size {d}")
        return b, s, h, int(d), rd, x.rank == 4

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        _, _, _, _, rd, _ = self.geometry(v)
        for k, name in ((1, "cos_cache"), (2, "sin_cache")):
            c = v.input(k)
            want = 2 if v.has_input(3) else 3
            if c.rank != want:
                raise v.fail(f"{name} {c} must have rank {want} ({'with' if want == 2 else 'without'} position_ids)")
            last = c.shape[-1]
            if not isinstance(last, Dim) and last != rd // 2:
                raise v.fail(f"the last dimension of {name} ({last}) is not rotary_embedding_dim / 2 = {rd // 2}")
        if v.has_input(3) and v.input(3).rank != 2:
            raise v.fail(f"position_ids {v.input(3)} must be [batch, sequence]")
        return [OutInfo(x.dtype, x.shape)]

    def emit(self, v: NodeView, e) -> str:
        nb, ns, nh, d, rd, four = self.geometry(v)
        T = v.input(0).dtype.cpp
        X, Y, C, S = e.inp(0), e.out(), e.inp(1), e.inp(2)
        B, Sq, H = e.dim(nb), e.dim(ns), e.dim(nh)
        half = rd // 2
        b, s, h, i, row, off, c, sn, xr, yr = (e.tmp(t) for t in ("b", "s", "h", "i", "row", "off", "c", "sn", "xr",
                                                                  "yr"))
        lines = []
        if v.has_input(3):
            cache = e.dim(v.input(1).shape[0])
            rows = [f"const {I64} {row} = {e.inp(3)}[{b} * {Sq} + {s}];",
                    f"if ({row} < 0 || {row} >= {cache}) {e.fail('a position id is outside the cos/sin caches')}"]
        else:
            rows = [f"const {I64} {row} = {b} * {Sq} + {s};"]
            # the caches are [batch, sequence, rotary dim / 2]: the input's batch and sequence
            cs = v.input(1).shape
            lines.append(f"if ({e.dim(cs[0])} != {B} || {e.dim(cs[1])} != {Sq}) "
                         + e.fail("without position_ids the caches must be [batch, sequence, rotary dim / 2]"))
        offset = f"(({b} * {H} + {h}) * {Sq} + {s}) * {d}" if four else f"(({b} * {Sq} + {s}) * {H} + {h}) * {d}"
        if int(v.attr("interleaved", 0) or 0):
            rotate = [f"for ({I64} {i} = 0; {i} < {half}; ++{i}) {{",
                      f"   const {T} x1 = {xr}[2 * {i}], x2 = {xr}[2 * {i} + 1];",
                      f"   {yr}[2 * {i}] = {c}[{i}] * x1 - {sn}[{i}] * x2;",
                      f"   {yr}[2 * {i} + 1] = {sn}[{i}] * x1 + {c}[{i}] * x2;",
                      "}"]
        else:
            rotate = [f"for ({I64} {i} = 0; {i} < {half}; ++{i}) {{",
                      f"   const {T} x1 = {xr}[{i}], x2 = {xr}[{i} + {half}];",
                      f"   {yr}[{i}] = {c}[{i}] * x1 - {sn}[{i}] * x2;",
                      f"   {yr}[{i} + {half}] = {sn}[{i}] * x1 + {c}[{i}] * x2;",
                      "}"]
        if rd < d:
            rotate.append(f"for ({I64} {i} = {rd}; {i} < {d}; ++{i}) {yr}[{i}] = {xr}[{i}];")
        lines += [
            f"for ({I64} {b} = 0; {b} < {B}; ++{b})",
            f"for ({I64} {s} = 0; {s} < {Sq}; ++{s}) {{",
            *("   " + r for r in rows),
            f"   const {T} *{c} = {C} + {row} * {half};",
            f"   const {T} *{sn} = {S} + {row} * {half};",
            f"   for ({I64} {h} = 0; {h} < {H}; ++{h}) {{",
            f"      const {I64} {off} = {offset};",
            f"      const {T} *{xr} = {X} + {off};",
            f"      {T} *{yr} = {Y} + {off};",
            *("      " + r for r in rotate),
            "   }",
            "}",
        ]
        return "\n".join(lines)
