"""Random generators: RandomUniform, RandomNormal, their ``*Like`` forms and Bernoulli.

The numbers come from a counter-based generator (SplitMix64 of the stream key plus the element
index; normals by Box-Muller on two such uniforms), so the code keeps no state and any element
can be computed independently. float32 outputs are made by pairs in a vectorised loop (two
23-bit uniforms per draw; Box-Muller's cosine and sine values from two draws, the radius from 46
bits); float64 ones one draw per uniform, the cosine value of Box-Muller only. With a ``seed`` the stream key is the seed: every call gives the
same values. Without one, each call draws a fresh key (a process-wide counter mixed with the
clock at first use), so calls differ. The values are **not** bit-identical to onnxruntime's or
numpy's generators (the ONNX spec leaves the generator to the runtime); their distribution is
what the spec asks for.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ..ir.dtypes import FLOAT32, FLOAT64, DType, dtype_from_onnx
from .base import NodeView, Operator, OutInfo, register

FLOATS = ("float32", "float64")

_MIX = ("[](std::uint64_t z) {{ z += 0x9E3779B97F4A7C15ULL; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL; "
        "z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL; return z ^ (z >> 31); }}")


class _Random(Operator):
    """Shared attribute handling and code of the four generators."""

    normal: bool = False
    like: bool = False
    bernoulli: bool = False

    def _dtype(self, v: NodeView) -> DType:
        to = v.attr("dtype")
        if to is None:
            return v.input(0).dtype if self.like else FLOAT32
        return dtype_from_onnx(int(to), f"{v.label}: dtype: ")

    def check(self, v: NodeView) -> str | None:
        dt = self._dtype(v)
        if dt.name not in FLOATS and not self.bernoulli:
            return f"output element type {dt.name} is not supported ({', '.join(FLOATS)})"
        if self.bernoulli and v.input(0).dtype.name not in FLOATS:
            return f"the probabilities must be float32 or float64, got {v.input(0).dtype.name}"
        if not self.like and any(int(d) < 0 for d in v.attr("shape", []) or []):
            return f"shape {v.attr('shape')} has negative values"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        if self.like:
            return [OutInfo(self._dtype(v), v.input(0).shape)]
        shape = v.attr("shape")
        if shape is None:
            raise v.fail("the attribute 'shape' is required")
        return [OutInfo(self._dtype(v), tuple(int(d) for d in shape))]

    def emit(self, v: NodeView, e) -> str:
        dt = self._dtype(v)
        T = dt.cpp
        seed = v.attr("seed")
        key, i, u1, u2 = e.tmp("key"), e.tmp("i"), e.tmp("u1"), e.tmp("u2")
        mix = e.tmp("mix")
        # a per-node constant keeps the streams of several unseeded nodes apart within one call
        salt = zlib.crc32((v.node.outputs[0] or v.node.op_type).encode()) | 1
        lines = [f"auto {mix} = {_MIX.format()};"]
        if seed is not None:
            bits = struct.unpack("<Q", struct.pack("<d", float(seed)))[0]
            lines.append(f"const std::uint64_t {key} = {mix}({bits}ULL);")
        else:
            base, counter = e.tmp("base"), e.tmp("calls")
            lines += [
                f"static const std::uint64_t {base} = "
                "std::uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());",
                f"static std::uint64_t {counter} = 0;",
                f"const std::uint64_t {key} = {mix}({base} ^ {mix}(__atomic_fetch_add(&{counter}, 1, "
                f"__ATOMIC_RELAXED) * {salt}ULL));",
            ]
        if dt == FLOAT32 and not self.bernoulli:
            return "\n".join(lines + [self._float32(v, e, mix, key)])
        unit = f"(double({mix}({key} + 2 * std::uint64_t({i}) * 0x9E3779B97F4A7C15ULL) >> 11) * 0x1.0p-53)"
        unit2 = f"(double({mix}({key} + (2 * std::uint64_t({i}) + 1) * 0x9E3779B97F4A7C15ULL) >> 11) * 0x1.0p-53)"
        if self.bernoulli:
            # 1 with probability p: u < p for u uniform in [0, 1) (the function body in the ONNX
            # spec, Greater(u, p), gives 1 - p; the reference and onnxruntime draw with p)
            value = f"{T}({u1} < double({e.inp(0)}[{i}]) ? 1 : 0)"
        elif self.normal:
            mean, scale = e.lit(float(v.attr("mean", 0.0)), FLOAT64), e.lit(float(v.attr("scale", 1.0)), FLOAT64)
            value = (f"{T}({mean} + {scale} * std::sqrt(-2.0 * std::log(1.0 - {u1})) "
                     f"* std::cos(6.283185307179586 * {u2}))")
        else:
            low, high = e.lit(float(v.attr("low", 0.0)), FLOAT64), e.lit(float(v.attr("high", 1.0)), FLOAT64)
            value = f"{T}({low} + ({high} - {low}) * {u1})"
        lines += [
            f"for (std::int64_t {i} = 0; {i} < {e.size_out(0)}; ++{i}) {{",
            f"   const double {u1} = {unit};",
            f"   const double {u2} = {unit2}; (void){u2};",
            f"   {e.out()}[{i}] = {value};",
            "}",
        ]
        return "\n".join(lines)

    def _float32(self, v: NodeView, e, mix: str, key: str) -> str:
        """float32 outputs by pairs, in a loop the compiler vectorises (bit operations, no
        conversion of 64-bit integers, the vm:: log, sqrt, sin and cos): uniform, two values
        of 23 bits from one draw; normal, Box-Muller's two values (cos and sin) from two draws,
        the radius from 46 bits (tails to 8 standard deviations), the angle from 23."""
        j, r1, r2, n, a, b, u1, rad, ang = (e.tmp(t) for t in ("j", "r1", "r2", "n", "a", "b", "u1", "rad", "ang"))
        golden = "0x9E3779B97F4A7C15ULL"

        def unit23(r: str, shift: int) -> str:  # [0, 1) from 23 bits of r: 1.m - 1, exact
            return f"(sofie_rt::vm::from_bits(0x3F800000u | (std::uint32_t({r} >> {shift}) & 0x7FFFFFu)) - 1.0f)"

        if self.normal:
            m, sc = e.lit(float(v.attr("mean", 0.0)), FLOAT32), e.lit(float(v.attr("scale", 1.0)), FLOAT32)
            body = [
                f"const std::uint64_t {r1} = {mix}({key} + 2 * std::uint64_t({j}) * {golden});",
                f"const std::uint64_t {r2} = {mix}({key} + (2 * std::uint64_t({j}) + 1) * {golden});",
                # (0, 1): 23 bits plus 23 more below them, never 0 (the log's argument)
                f"const float {u1} = {unit23(r1, 41)} + ({unit23(r1, 18)} + 0x1.0p-23f) * 0x1.0p-23f;",
                f"const float {rad} = {sc} * sofie_rt::vm::sqrt(-2.0f * sofie_rt::vm::log({u1}));",
                f"const float {ang} = 6.28318530717958648f * {unit23(r2, 41)};",
            ]
            first = f"{m} + {rad} * sofie_rt::vm::cos_reduced({ang})"
            second = f"{m} + {rad} * sofie_rt::vm::sin_reduced({ang})"
        else:
            low, high = float(v.attr("low", 0.0)), float(v.attr("high", 1.0))
            lo, hi = e.lit(low, FLOAT32), e.lit(high, FLOAT32)
            span = e.lit(float(np.float32(high) - np.float32(low)), FLOAT32)
            below = e.lit(float(np.nextafter(np.float32(high), np.float32(-np.inf))), FLOAT32)
            body = [
                f"const std::uint64_t {r1} = {mix}({key} + std::uint64_t({j}) * {golden});",
                f"const float {a} = {lo} + {span} * {unit23(r1, 41)};",
                f"const float {b} = {lo} + {span} * {unit23(r1, 9)};",
            ]
            # rounding can reach high itself: the range is [low, high)
            first, second = f"{a} < {hi} ? {a} : {below}", f"{b} < {hi} ? {b} : {below}"
        out = e.out()
        loop = "\n".join(f"   {line}" for line in body)
        return "\n".join([
            f"const std::int64_t {n} = {e.size_out(0)};",
            f"for (std::int64_t {j} = 0; {j} < {n} / 2; ++{j}) {{",
            loop,
            f"   {out}[2 * {j}] = {first};",
            f"   {out}[2 * {j} + 1] = {second};",
            "}",
            f"if ({n} % 2) {{",
            f"   const std::int64_t {j} = {n} / 2;",
            loop,
            f"   {out}[{n} - 1] = {first};",
            "}",
        ])


@register
class RandomUniform(_Random):
    """ONNX RandomUniform: uniform values in [low, high) of a given shape (seeded: same values
    every call; not bit-identical to other runtimes)."""

    op_type = "RandomUniform"


@register
class RandomNormal(_Random):
    """ONNX RandomNormal: normal values (mean, scale) of a given shape (seeded: same values every
    call; not bit-identical to other runtimes)."""

    op_type = "RandomNormal"
    normal = True


@register
class RandomUniformLike(_Random):
    """ONNX RandomUniformLike: RandomUniform with the input's shape (and dtype unless given)."""

    op_type = "RandomUniformLike"
    like = True


@register
class RandomNormalLike(_Random):
    """ONNX RandomNormalLike: RandomNormal with the input's shape (and dtype unless given)."""

    op_type = "RandomNormalLike"
    normal = True
    like = True


@register
class Bernoulli(_Random):
    """ONNX Bernoulli: 1 with the input's probability, else 0 (seeded: same values every call;
    not bit-identical to other runtimes)."""

    op_type = "Bernoulli"
    like = True
    bernoulli = True
