"""Convolution and pooling: Conv, ConvTranspose, MaxPool, AveragePool, LpPool and the global
pools, for 1-D, 2-D and 3-D (any number of) spatial dimensions; DeformConv (2-D).

The batch dimension may be symbolic; the channel and spatial dimensions are numbers when code is
generated (the padding, output size and loop bounds are derived from them): a model whose
inputs leave them symbolic is compiled at each call for the input's shape (``SymbolicDimensionError``,
see ``SpecializingModel``). Conv lowers to im2col + GEMM per
(image, group), with the im2col matrix in a workspace buffer (skipped for 1x1 convolutions
without stride or padding) built by row copies from a zero-padded copy of the input; depthwise
and other convolutions of at most 9 terms per output (3x3 over one input channel) with few output
channels per group are computed directly instead (``_direct_conv``; stride-2 rows from a copy
split into even and odd positions); float 1x1 convolutions run a register-blocked product with
bias and activation before one store (``_pointwise_tiled``) instead of sgemm, and float
convolutions with stride 1 along the rows a register-blocked direct product reading the padded
input in place (``_direct_tiled``) instead of im2col + sgemm. Their tiles hold 12 accumulators
of the 16 AVX2 vector registers. ConvTranspose is the same register-blocked product (or a GEMM) + col2im over
compile-time ranges (``_col2im_add``). Pools loop over the output and over the part of each
window that lies inside the input, so padding never needs a buffer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SymbolicDimensionError
from ..ir.dims import Dim, DimLike, numel
from ..ir.dtypes import FLOAT32, FLOAT64, INT32, INT64, DType
from .base import NodeView, Operator, OutInfo, register
from .elementwise import pow_expr

FLOATS = ("float32", "float64")
AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


@dataclass(frozen=True)
class _Geom:
    """Per spatial dimension: input size, kernel, stride, dilation, pads and output size."""

    inp: tuple[int, ...]
    k: tuple[int, ...]
    s: tuple[int, ...]
    d: tuple[int, ...]
    pb: tuple[int, ...]
    pe: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.inp)


# -- attribute helpers --------------------------------------------------------------------------

def _ints_attr(v: NodeView, name: str, n: int, default: int) -> list[int]:
    val = v.attr(name)
    if val is None:
        return [default] * n
    val = [int(x) for x in val]
    if len(val) != n:
        raise v.fail(f"attribute {name}={val} must have {n} values (one per spatial dimension)")
    return val


def _pads_attr(v: NodeView, n: int) -> tuple[list[int], list[int]]:
    val = v.attr("pads")
    if val is None:
        return [0] * n, [0] * n
    val = [int(x) for x in val]
    if len(val) != 2 * n:
        raise v.fail(f"attribute pads={val} must have {2 * n} values (begins then ends)")
    if any(p < 0 for p in val):
        raise v.fail(f"attribute pads={val} has negative values")
    return val[:n], val[n:]


def _auto_pad(v: NodeView) -> str:
    ap = v.attr("auto_pad", "NOTSET") or "NOTSET"
    return ap


def _check_common(v: NodeView, min_rank: int = 3) -> str | None:
    """Shared checks: auto_pad value, rank, static spatial dimensions, static channel count."""
    ap = _auto_pad(v)
    if ap not in AUTO_PADS:
        return f"auto_pad={ap!r} is not one of {', '.join(AUTO_PADS)}"
    if not v.has_input(0):
        return None
    x = v.input(0)
    if x.rank < min_rank:
        return None  # reported by infer as a shape error
    if any(isinstance(dim, Dim) for dim in x.shape[1:]):
        # the geometry (pads, output size, loop bounds) is generated for numbers: compile() binds
        # such dimensions at run time, one compiled variant per input shape
        raise SymbolicDimensionError(f"{v.label}: input shape {x} has symbolic channel or spatial dimensions, "
                                     "which are bound to the input's at each call")
    return None


def _spatial(v: NodeView, x_shape, min_rank: int = 3) -> tuple[int, ...]:
    if len(x_shape) < min_rank:
        raise v.fail(f"input must have rank >= {min_rank} ([N, C, spatial...]), got {len(x_shape)}")
    sp = tuple(x_shape[2:])
    if any(isinstance(dim, Dim) for dim in sp) or isinstance(x_shape[1], Dim):
        raise v.fail("channel and spatial dimensions must be known at compile time")
    return tuple(int(dim) for dim in sp)


def _window(k: int, d: int) -> int:
    return (k - 1) * d + 1


def _same_pads(ap: str, total: int) -> tuple[int, int]:
    if ap == "SAME_UPPER":
        return total // 2, total - total // 2
    return total - total // 2, total // 2


def _conv_geom(v: NodeView, inp: tuple[int, ...], k: list[int], ceil_mode: bool = False) -> _Geom:
    """Output size and pads of Conv and the pools (auto_pad, explicit pads, ceil_mode)."""
    n = len(inp)
    if any(kk < 1 for kk in k):
        raise v.fail(f"kernel_shape {k} must be positive")
    s = _ints_attr(v, "strides", n, 1)
    d = _ints_attr(v, "dilations", n, 1)
    if any(x < 1 for x in s) or any(x < 1 for x in d):
        raise v.fail(f"strides {s} and dilations {d} must be positive")
    ap = _auto_pad(v)
    if ap in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // st) for i, st in zip(inp, s)]
        pb, pe = [], []
        for j in range(n):
            total = max(0, (out[j] - 1) * s[j] + _window(k[j], d[j]) - inp[j])
            b, e = _same_pads(ap, total)
            pb.append(b)
            pe.append(e)
    else:
        if ap == "VALID":
            pb, pe = [0] * n, [0] * n
        else:
            pb, pe = _pads_attr(v, n)
        out = []
        for j in range(n):
            num = inp[j] + pb[j] + pe[j] - _window(k[j], d[j])
            if num < 0:
                raise v.fail(f"the window ({_window(k[j], d[j])} with dilation) is larger than the padded "
                             f"input ({inp[j] + pb[j] + pe[j]}) along spatial axis {j}")
            if ceil_mode:
                o = -(-num // s[j]) + 1
                if (o - 1) * s[j] >= inp[j] + pb[j]:
                    o -= 1  # the last window must start inside the input or the begin padding
            else:
                o = num // s[j] + 1
            out.append(o)
    if any(o < 1 for o in out):
        raise v.fail(f"the output would be empty (spatial output {out})")
    return _Geom(tuple(inp), tuple(k), tuple(s), tuple(d), tuple(pb), tuple(pe), tuple(out))


def _kernel(v: NodeView, w_shape=None, n: int | None = None) -> list[int]:
    ks = v.attr("kernel_shape")
    if ks is not None:
        ks = [int(x) for x in ks]
        if n is not None and len(ks) != n:
            raise v.fail(f"kernel_shape {ks} must have {n} values")
        if w_shape is not None and tuple(ks) != tuple(w_shape):
            raise v.fail(f"kernel_shape {ks} differs from the weight's spatial shape {list(w_shape)}")
        return ks
    if w_shape is None:
        raise v.fail("kernel_shape is required")
    return [int(x) for x in w_shape]


def _flat(idx: list[str], dims: tuple[int, ...] | list[int]) -> str:
    """Row-major flat index expression of ``idx`` over ``dims``."""
    expr = idx[0]
    for j in range(1, len(idx)):
        expr = f"({expr}) * {dims[j]} + {idx[j]}"
    return expr


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def _check_conv(v: NodeView) -> str | None:
    dts = {i.dtype for i in v.inputs if i is not None}
    if len(dts) > 1:
        return "inputs have different element types"
    if v.has_input(1) and any(isinstance(dim, Dim) for dim in v.input(1).shape):
        return f"the weight shape {v.input(1)} must be known at compile time"
    return _check_common(v)


# -- Conv -------------------------------------------------------------------------------------

@register
class Conv(Operator):
    """ONNX Conv: N-D, groups (depthwise included), strides, dilations, pads, auto_pad, bias."""

    op_type = "Conv"
    dtypes = FLOATS

    def check(self, v: NodeView) -> str | None:
        return super().check(v) or _check_conv(v)

    def _geom(self, v: NodeView) -> tuple[_Geom, int]:
        x, w = v.input(0), v.input(1)
        inp = _spatial(v, x.shape)
        n = len(inp)
        if w.rank != x.rank:
            raise v.fail(f"weight {w} must have the input's rank {x.rank} ([M, C/group, kernel...])")
        group = int(v.attr("group", 1))
        c, m, cg = int(x.shape[1]), int(w.shape[0]), int(w.shape[1])
        if group < 1 or c % group or m % group:
            raise v.fail(f"group={group} must divide the input channels ({c}) and the output channels ({m})")
        if cg * group != c:
            raise v.fail(f"the input has {c} channels but the weight {w} expects {cg} x group {group}")
        k = _kernel(v, w.shape[2:], n)
        if v.has_input(2):
            b = v.input(2)
            if b.rank != 1 or b.shape[0] != m:
                raise v.fail(f"bias {b} must be a vector of the {m} output channels")
        return _conv_geom(v, inp, k), group

    def infer(self, v: NodeView) -> list[OutInfo]:
        g, _ = self._geom(v)
        x, w = v.input(0), v.input(1)
        return [OutInfo(x.dtype, (x.shape[0], w.shape[0], *g.out))]

    @staticmethod
    def _pointwise(g: _Geom) -> bool:
        return all(k == 1 for k in g.k) and all(s == 1 for s in g.s) and not any(g.pb) and not any(g.pe)

    @staticmethod
    def _padded(g: _Geom) -> tuple[int, ...]:
        return tuple(i + b + e_ for i, b, e_ in zip(g.inp, g.pb, g.pe))

    @staticmethod
    def _direct(g: _Geom, cg: int, mg: int, dt: DType) -> bool:
        """Direct convolution (a stencil per output row) instead of im2col + GEMM: for depthwise
        and other small reductions (``cg * kernel`` terms per output), where the GEMM per image
        and group is too small for BLAS to pay for its call and the im2col copy (measurements in
        docs/performance.md, "Convolutions and dense layers"); but from ``DIRECT_TILED_MIN_M``
        output channels per group on, the register-blocked direct product where it applies (it
        loads each input vector once for several output channels: 3x3 1 -> 8 channels 32x32
        2.4 -> 1.9 us)."""
        kk = _prod(g.k)
        return (kk <= DIRECT_MAX_TAPS and cg * kk <= DIRECT_MAX_TERMS and not Conv._pointwise(g)
                and not (mg >= DIRECT_TILED_MIN_M and _direct_tiled_ok(g, cg, mg, dt)))

    @classmethod
    def _copy_dims(cls, g: _Geom) -> tuple[int, ...] | None:
        """Spatial shape per channel of the zero-padded input copy (None without pads)."""
        return cls._padded(g) if any(g.pb) or any(g.pe) else None

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        g, group = self._geom(v)
        if self._pointwise(g):
            return []
        cg = int(v.input(1).shape[1])
        dt = v.input(0).dtype
        direct = self._direct(g, cg, int(v.input(1).shape[0]) // group, dt)
        # the im2col matrix (a one-element stand-in for the direct kernel, so the copy stays ws(1))
        ws: list[tuple[DType, DimLike]] = [(dt, 1 if direct else cg * _prod(g.k) * _prod(g.out))]
        dims = self._copy_dims(g)
        if dims is not None:
            # the zero-padded copy of the input (its rows split in two phases for stride 2)
            ws.append((dt, cg * _prod(_split_dims(dims) if _split_rows(g, dt) else dims)))
        return ws

    def emit(self, v: NodeView, e, act: Callable[[str], str] | None = None,
             act_vec: Callable[[str], str] | None = None, act_vec_regs: bool = True) -> str:
        """``act(x)``, if given, is the C++ expression of an activation of ``x`` (FusedConv): it
        runs with the bias in one pass over each image's (and group's) output block right after
        its GEMM, while the block is still in cache. ``act_vec(v)``, if given, is the same
        activation of a ``sofie_rt::rows::f8`` vector (float only), which the register-blocked
        convolutions apply to their accumulators before the store (``act_vec_regs``: cheap ones,
        ReLU) or to each block of output channels they have finished (costly ones, tanh: its
        temporaries for 12 accumulators at once did not fit in the registers; 1x1 16 -> 32 with
        tanh 6.7 -> 6.4 us, 3x3 1 -> 16 with tanh 2.95 -> 2.5 us)."""
        g, group = self._geom(v)
        x, w = v.input(0), v.input(1)
        t = x.dtype.cpp
        c, m, cg = int(x.shape[1]), int(w.shape[0]), int(w.shape[1])
        mg = m // group
        kk = _prod(g.k)
        p = _prod(g.out)
        isz = _prod(g.inp)
        n, gi = e.tmp("n"), e.tmp("g")
        xg, yg, col = e.tmp("xg"), e.tmp("yg"), e.tmp("col")
        lines = []
        direct = self._direct(g, cg, mg, x.dtype)
        copy = None if self._pointwise(g) else self._copy_dims(g)
        split = copy is not None and _split_rows(g, x.dtype)
        if copy is not None:
            # the borders stay zero: every image only rewrites the interior
            lines.append(f"std::fill({e.ws(1)}, {e.ws(1)} + {cg * _prod(_split_dims(copy) if split else copy)}, "
                         f"{t}(0));")
        lines += [f"for (std::int64_t {n} = 0; {n} < {e.dim(x.shape[0])}; ++{n}) {{",
                  f"for (std::int64_t {gi} = 0; {gi} < {group}; ++{gi}) {{",
                  f"const {t} *{xg} = {e.inp(0)} + ({n} * {c} + {gi} * {cg}) * std::int64_t({isz});",
                  f"{t} *{yg} = {e.out()} + ({n} * {m} + {gi} * {mg}) * std::int64_t({p});"]
        if direct:
            src, dims = xg, g.inp
            if copy is not None:
                src, dims = e.ws(1), copy
                lines.extend(_split_copy(e, xg, src, cg, g, dims, t) if split else _pad_copy(e, xg, src, cg, g, dims, t))
            bias = f"{e.inp(2)}[{gi} * {mg} + " + "{m}]" if v.has_input(2) else None
            lines.extend(_direct_conv(e, src, dims, e.inp(1), bias, yg, gi, cg, mg, g, t, act, split=split))
            lines.append("}}")
            return "\n".join(lines)
        if _direct_tiled_ok(g, cg, mg, x.dtype) and not self._pointwise(g):
            # register-blocked direct convolution (the vector types exist under GCC and clang:
            # cling, the native build); elsewhere im2col + GEMM below
            lines.append("#ifdef SOFIE_RT_ROWS_VEC")
            src, dims = xg, g.inp
            if copy is not None:
                src, dims = e.ws(1), copy
                lines.extend(_pad_copy(e, xg, src, cg, g, dims, t))
            bias = f"({e.inp(2)} + {gi} * {mg})" if v.has_input(2) else None
            lines.extend(_direct_tiled(e, src, dims, f"({e.inp(1)} + {gi} * std::int64_t({mg * cg * kk}))", bias,
                                       yg, mg, cg, g, t, act, act_vec, act_vec_regs))
            lines.append("#else")
        tiled = self._pointwise(g) and _tiled_ok(mg, p, x.dtype)
        if tiled:
            # the vector types exist under GCC and clang (cling, the native build); elsewhere sgemm
            bias = f"({e.inp(2)} + {gi} * {mg})" if v.has_input(2) else None
            lines.append("#ifdef SOFIE_RT_ROWS_VEC")
            lines.extend(_pointwise_tiled(e, xg, f"({e.inp(1)} + {gi} * std::int64_t({mg * cg}))", bias, yg,
                                          mg, p, cg, t, act, act_vec, act_vec_regs=act_vec_regs))
            lines.append("#else")
        if self._pointwise(g):
            lines.append(f"const {t} *{col} = {xg};")
        else:
            lines.append(f"{t} *{col} = {e.ws(0)};")
            src, dims = xg, g.inp
            if copy is not None:
                src, dims = e.ws(1), copy
                lines.extend(_split_copy(e, xg, src, cg, g, dims, t) if split else _pad_copy(e, xg, src, cg, g, dims, t))
            lines.extend(_im2col_rows(e, src, col, cg, g, dims, t, split=split))
        if x.dtype == FLOAT32:
            # the register tiles of the dense layers (BLAS beyond a 128 KiB im2col matrix, as there)
            lines.append(f"sofie_rt::dense::gemm_bias<float>({mg}, {p}, {cg * kk}, "
                         f"{e.inp(1)} + {gi} * std::int64_t({mg * cg * kk}), {cg * kk}, {col}, {p}, nullptr, {yg}, {p});")
        else:
            lines.append(f"sofie_rt::gemm<{t}>(false, false, {mg}, {p}, {cg * kk}, {e.lit(1, x.dtype)}, "
                         f"{e.inp(1)} + {gi} * std::int64_t({mg * cg * kk}), {cg * kk}, {col}, {p}, "
                         f"{e.lit(0, x.dtype)}, {yg}, {p});")
        if v.has_input(2) or act is not None:
            # bias and activation in one pass (before: the bias broadcast into the output, a GEMM
            # reading it back with beta = 1 and a pass for the activation)
            mm, i, xv = e.tmp("m"), e.tmp("i"), e.tmp("x")
            load = f"{yg}[{mm} * {p} + {i}]"
            if v.has_input(2):
                load += f" + {e.inp(2)}[{gi} * {mg} + {mm}]"
            lines += [f"for (std::int64_t {mm} = 0; {mm} < {mg}; ++{mm})",
                      f"   for (std::int64_t {i} = 0; {i} < {p}; ++{i}) "
                      f"{{ const {t} {xv} = {load}; {yg}[{mm} * {p} + {i}] = {act(xv) if act else xv}; }}"]
        if tiled or (_direct_tiled_ok(g, cg, mg, x.dtype) and not self._pointwise(g)):
            lines.append("#endif")
        lines.append("}}")
        return "\n".join(lines)


#: output channels x position vectors (of 8) of a tile of the register-blocked 1x1 convolution
#: (``_pointwise_tiled``), and the output channels of its one-vector tiles (the positions past the
#: whole tiles)
TILE_M, TILE_V, TILE_M1 = 4, 3, 12
#: the tile (output channels, position vectors) of the 1x1 kernel when one group's input is more
#: than ``POINTWISE_WIDE_BYTES``
TILE_WIDE, POINTWISE_WIDE_BYTES = (6, 2), 256 * 1024


def _tiled_ok(mg: int, p: int, dt) -> bool:
    return dt.cpp == "float" and p >= 8


def _pointwise_tiled(e, xg: str, w: str, bias: str | None, yg: str, mg: int, p: int, cg: int, t: str,
                     act: Callable[[str], str] | None, act_vec: Callable[[str], str] | None,
                     w_strides: tuple[int, int] | None = None, act_vec_regs: bool = True) -> list[str]:
    """1x1 convolution of one image and group as a register-blocked product: a tile of
    ``TILE_M`` output channels x ``TILE_V`` vectors of 8 positions is summed over the input
    channels in named 8-float vectors (the GCC/clang vector extension of ``sofie_rt::rows``, so
    that cling keeps them in registers: a local array of accumulators stayed in memory, 7x
    slower), stored once with the bias, and the activation runs on the tile while it is in L1;
    instead of an sgemm writing the output and a second pass reading it back for bias and
    activation. Positions past the last whole tile take tiles of one vector, the last one ending
    at the last position (overlapping the one before; a [N, 16, 25] Conv1d ran sgemm at 0.88x
    onnxruntime); output channels past the last whole tile, a tile of fewer channels. The
    weight of (output channel r, input channel k) is ``w[r * w_strides[0] + k * w_strides[1]]``
    (default ``(cg, 1)``: Conv's [M, C]; ConvTranspose passes its [C, M * kernel] transposed)."""
    wsr, wsk = w_strides or (cg, 1)
    k = e.tmp("k")
    xr, wr = e.tmp("xr"), e.tmp("wr")
    ns = "sofie_rt::rows::"
    # an input too large to stay near the core is read once per block of output channels: fewer,
    # larger blocks (particlenet's 1x1 64 -> 64 over 1600 positions, 410 KB: b256 267 -> 244 us)
    tm_main, nv_main = TILE_WIDE if cg * p * 4 > POINTWISE_WIDE_BYTES else (TILE_M, TILE_V)
    span = 8 * nv_main
    pw = p - p % span
    # the activation: on the accumulators (act_vec_regs), or in a pass over each finished block
    pass_act = act if act_vec is None or not act_vec_regs else None
    pass_vec = None if act_vec_regs else act_vec
    act_vec = act_vec if act_vec_regs else None

    def tile(mm: str, tm: int, nv: int, start: str) -> list[str]:
        acc = [[e.tmp("a") for _ in range(nv)] for _ in range(tm)]
        xs = [e.tmp("xv") for _ in range(nv)]
        out = []
        for rr in range(tm):
            init = f"{ns}splat({bias}[{mm} + {rr}])" if bias else f"{ns}splat(0.0f)"
            out.append(f"{ns}f8 " + ", ".join(f"{a} = {init}" for a in acc[rr]) + ";")
        out += [f"for (std::int64_t {k} = 0; {k} < {cg}; ++{k}) {{",
                f"const {t} *{xr} = {xg} + {k} * std::int64_t({p}) + {start};",
                f"const {t} *{wr} = {w} + {mm} * std::int64_t({wsr}) + {k} * std::int64_t({wsk});"]
        out += [f"const {ns}f8 {xs[q]} = {ns}load({xr} + {8 * q});" for q in range(nv)]
        for rr in range(tm):
            wv = f"{ns}splat({wr}[{rr * wsr}])"
            out += [f"{acc[rr][q]} += {wv} * {xs[q]};" for q in range(nv)]
        out.append("}")
        if act_vec is not None:
            for rr in range(tm):
                out += [f"{acc[rr][q]} = {act_vec(acc[rr][q])};" for q in range(nv)]
        for rr in range(tm):
            out += [f"{ns}store({yg} + ({mm} + {rr}) * std::int64_t({p}) + {start} + {8 * q}, {acc[rr][q]});"
                    for q in range(nv)]
        return out

    def channels(tm: int, nv: int, starts: list[str], lo: int) -> list[str]:
        """Tiles of ``nv`` vectors at ``starts`` (a loop variable or numbers) for every output
        channel, in blocks of at most ``tm``; an activation without a vector form then runs over
        the block's positions from ``lo`` to ``hi``."""
        hi = pw if starts == [i] else p

        def at(mm: str, tm: int) -> list[str]:
            out = []
            for start in starts:
                if start == i:
                    out += [f"for (std::int64_t {i} = 0; {i} < {pw}; {i} += {span}) {{", *tile(mm, tm, nv, i), "}"]
                else:
                    out += ["{", *tile(mm, tm, nv, start), "}"]
            return out + _act_pass(e, f"{yg} + {mm} * std::int64_t({p})", tm, p, lo, hi, t, pass_act, pass_vec)

        return _channel_blocks(e, mg, tm, at)

    i = e.tmp("i")
    lines = channels(tm_main, nv_main, [i], 0) if pw else []
    # positions past the whole tiles: one-vector tiles of more channels, the last one ending at p
    # (overlapping the one before: its positions are computed again and stored with the same
    # values, before the activation of a pass, which then runs from the first of them)
    rest = [str(pw + 8 * q) for q in range((p - pw) // 8)] + ([str(p - 8)] if p % 8 else [])
    if rest:
        lines += channels(TILE_M1, 1, rest, min(int(r) for r in rest))
    return lines


def _channel_blocks(e, mg: int, tm: int, body: Callable[[str, int], list[str]]) -> list[str]:
    """Loops over ``mg`` output channels in blocks of at most ``tm``, as even as they can be
    (32 channels in blocks of 6: 6, 6, 5, 5, 5, 5; a last block of 2 kept 4 FMA chains in flight,
    half the units' throughput); ``body(first channel, block size)`` is one block's code."""
    nb = -(-mg // tm)
    q, r = divmod(mg, nb)
    lines: list[str] = []
    first = 0
    for size, count in ((q + 1, r), (q, nb - r)):
        if not count:
            continue
        mm = e.tmp("m")
        if count == 1:
            lines += ["{", f"const std::int64_t {mm} = {first};", *body(mm, size), "}"]
        else:
            lines += [f"for (std::int64_t {mm} = {first}; {mm} < {first + size * count}; {mm} += {size}) {{",
                      *body(mm, size), "}"]
        first += size * count
    return lines


def _act_pass(e, y: str, rows: int, stride: int, lo: int, hi: int, t: str,
              act: Callable[[str], str] | None, act_vec: Callable[[str], str] | None = None) -> list[str]:
    """An activation over positions ``lo`` to ``hi`` of ``rows`` output channels from ``y``
    (``stride`` apart), once a block of output channels of a register-blocked kernel is complete:
    loops the compiler vectorises, over values still in L1 (per tile, scalar reads of what the
    tile had just stored as vectors cost a Sigmoid 1x1 16 -> 32 convolution 1.3x its time; one
    pass over the whole output, 64 KiB, read it back from L2). With ``act_vec``, whole vectors
    through it and the last values through ``act``."""
    if act is None or hi <= lo:
        return []
    r, i, xv, yr = e.tmp("r"), e.tmp("i"), e.tmp("x"), e.tmp("ya")
    lines = [f"for (std::int64_t {r} = 0; {r} < {rows}; ++{r}) {{",
             f"{t} *__restrict {yr} = {y} + {r} * std::int64_t({stride});"]
    start = lo
    if act_vec is not None:
        ns = "sofie_rt::rows::"
        start = lo + (hi - lo) // 8 * 8
        lines.append(f"for (std::int64_t {i} = {lo}; {i} < {start}; {i} += 8) "
                     f"{ns}store({yr} + {i}, {act_vec(f'{ns}load({yr} + {i})')});")
    if start < hi:
        lines.append(f"for (std::int64_t {i} = {start}; {i} < {hi}; ++{i}) "
                     f"{{ const {t} {xv} = {yr}[{i}]; {yr}[{i}] = {act(xv)}; }}")
    return lines + ["}"]


#: the register-blocked direct convolution (``_direct_tiled``) is used while one group's (padded)
#: input is at most this many bytes (it reads the input in place, without the packing of a GEMM)
DIRECT_TILED_MAX_BYTES = 256 * 1024


def _direct_tiled_ok(g: _Geom, cg: int, mg: int, dt) -> bool:
    padded = _prod(i + b + e_ for i, b, e_ in zip(g.inp, g.pb, g.pe))
    ow = g.out[-1]
    # positions computed per row: whole 16- and 8-wide tiles, plus one overlapping 8-wide tile;
    # rows that waste more than a fifth of them (10 wide: 16 computed) stay with im2col + GEMM
    # (a 3x3x3 8 -> 16 convolution on rows of 10 was 1.3x slower, calorimeter CNN)
    computed = ow - ow % 8 + (8 if ow % 8 else 0)
    return (dt.cpp == "float" and g.s[-1] == 1 and ow >= 8 and ow >= 0.8 * computed
            and cg * padded * 4 <= DIRECT_TILED_MAX_BYTES)


#: the tile of the register-blocked direct convolution (``_direct_tiled``): output channels, and
#: output rows for tiles of 16 and of 8 positions per row. 6 x 1 x 16 positions = 12 accumulators
#: (AVX2 has 16 vector registers: 12 + the two input vectors + a broadcast weight), 6 x 2 x 8
#: positions as many; the 4 x 1 x 16 tile before kept only 8 FMA chains in flight, barely the
#: 2 FMA units x 4 cycles of latency (3x3 16 -> 32 on 16x16: 28.8 -> 24.6 us, docs/performance.md)
DIRECT_TILE = (6, 1, 2)


def _direct_tiled(e, src: str, dims: tuple[int, ...], w: str, bias: str | None, yg: str, mg: int, cg: int,
                  g: _Geom, t: str, act: Callable[[str], str] | None,
                  act_vec: Callable[[str], str] | None, act_vec_regs: bool = True) -> list[str]:
    """Convolution of one image and group as a register-blocked product read straight from the
    (zero-padded) input ``src`` of spatial shape ``dims``: a tile of output channels x output rows
    x 16 (or 8) positions of a row (``DIRECT_TILE_16``, ``DIRECT_TILE_8``) is summed over the
    input channels and the kernel taps (unrolled; each tap's input row is a shifted vector load,
    stride 1 along the row; an input vector that several (tap, output row) pairs of the tile read
    is loaded once) in named 8-float vectors, stored once with the bias and the activation: no
    im2col matrix (written and read back: with sgemm, the 3x3 16 -> 32 convolution on 16x16 ran
    at 0.84x onnxruntime at batch 1). Positions past the last whole vector of a row: one more
    vector ending at the row's end, overlapping the one before; the last rows and output channels
    that do not fill a tile: smaller tiles."""
    n = g.rank
    kk = _prod(g.k)
    p = _prod(g.out)
    ow = g.out[-1]
    ps = _prod(dims)
    dstr = [_prod(dims[j + 1:]) for j in range(n)]
    taps = list(itertools.product(*[range(k) for k in g.k]))
    toff = [sum(tp[j] * g.d[j] * dstr[j] for j in range(n)) for tp in taps]
    ns = "sofie_rt::rows::"
    # the activation: on the accumulators (act_vec_regs), or in a pass over each finished block
    pass_act = act if act_vec is None or not act_vec_regs else None
    pass_vec = None if act_vec_regs else act_vec
    act_vec = act_vec if act_vec_regs else None
    wst = cg * kk  # weight stride between output channels
    xstep = g.s[-2] * dstr[-2] if n >= 2 else 0  # input stride between the windows of two output rows
    lead = [e.tmp("o") for _ in range(n - 1)]
    xoff = " + ".join([f"{lead[j]} * std::int64_t({g.s[j] * dstr[j]})" for j in range(n - 1)] + ["0"])
    yoff = " + ".join([f"{lead[j]} * std::int64_t({_prod(g.out[j + 1:])})" for j in range(n - 1)] + ["0"])

    def tile(mm: str, tm: int, nrows: int, nv: int, start: str) -> list[str]:
        """``tm`` output channels from ``mm`` x ``nrows`` rows x ``nv`` vectors from ``start``."""
        c, xc, wc, yr = e.tmp("c"), e.tmp("xc"), e.tmp("wc"), e.tmp("yr")
        acc = [[[e.tmp("a") for _ in range(nv)] for _ in range(nrows)] for _ in range(tm)]
        body = [f"{t} *{yr} = {yg} + {mm} * std::int64_t({p}) + {yoff};"]
        for rr in range(tm):
            init = f"{ns}splat({bias}[{mm} + {rr}])" if bias else f"{ns}splat(0.0f)"
            body.append(f"{ns}f8 " + ", ".join(f"{a} = {init}" for ar in acc[rr] for a in ar) + ";")
        body += [f"for (std::int64_t {c} = 0; {c} < {cg}; ++{c}) {{",
                 f"const {t} *{xc} = {src} + {c} * std::int64_t({ps}) + {xoff} + {start};",
                 f"const {t} *{wc} = {w} + {mm} * std::int64_t({wst}) + {c} * std::int64_t({kk});"]
        # the (output row, tap) pairs of the tile grouped by the input offset they read
        reads: dict[int, list[tuple[int, int]]] = {}
        for ti, off in enumerate(toff):
            for ro in range(nrows):
                reads.setdefault(off + ro * xstep, []).append((ro, ti))
        for off in sorted(reads):
            xs = [e.tmp("xv") for _ in range(nv)]
            body.append("{")
            body += [f"const {ns}f8 {xs[q]} = {ns}load({xc} + {off + 8 * q});" for q in range(nv)]
            for ro, ti in reads[off]:
                for rr in range(tm):
                    body += [f"{acc[rr][ro][q]} += {ns}splat({wc}[{rr * wst + ti}]) * {xs[q]};" for q in range(nv)]
            body.append("}")
        body.append("}")
        if act_vec is not None:
            body += [f"{a} = {act_vec(a)};" for am in acc for ar in am for a in ar]
        for rr in range(tm):
            for ro in range(nrows):
                body += [f"{ns}store({yr} + {rr * p + ro * ow} + {start} + {8 * q}, {acc[rr][ro][q]});"
                         for q in range(nv)]
        return body

    def row(mm: str, tm: int, nrows: int, nv: int) -> list[str]:
        """One row block of ``nrows`` output rows: every ``nv``-vector tile along the row."""
        span = 8 * nv
        whole = ow - ow % span
        out = []
        if whole > span:
            i = e.tmp("i")
            out += [f"for (std::int64_t {i} = 0; {i} < {whole}; {i} += {span}) {{", *tile(mm, tm, nrows, nv, i), "}"]
        elif whole:
            out += ["{", *tile(mm, tm, nrows, nv, "0"), "}"]
        return out

    def rows_of(mm: str, tm: int) -> list[str]:
        """Every output row for the channels from ``mm``: rows of 16-position tiles, then the
        8-position tile and the overlapping last vector of each row."""
        out = []
        ow16 = ow - ow % 16
        parts: list[tuple[int, int, str | None]] = []
        if ow16:
            parts.append((r16, 2, None))
        if ow % 16 >= 8:
            parts.append((r8, 1, str(ow16)))
        if ow % 8:
            # the last ow % 8 positions: a one-vector tile ending at the row's end, overlapping the
            # previous one (a scalar tail of a 20-wide row made a 3x3x3 convolution 2x slower)
            parts.append((r8, 1, str(ow - 8)))
        for nrows, nv, start in parts:
            nrows = nrows if n >= 2 and g.out[-2] >= nrows else 1
            blocks = [(nrows, g.out[-2] - g.out[-2] % nrows)] if n >= 2 else [(1, 1)]
            if n >= 2 and g.out[-2] % nrows:
                blocks.append((1, g.out[-2] % nrows))
            first = 0
            for nr, count in blocks:
                body = row(mm, tm, nr, nv) if start is None else ["{", *tile(mm, tm, nr, nv, start), "}"]
                loops = []
                for j in range(n - 2):
                    loops.append(f"for (std::int64_t {lead[j]} = 0; {lead[j]} < {g.out[j]}; ++{lead[j]}) {{")
                if n >= 2:
                    loops.append(f"for (std::int64_t {lead[-1]} = {first}; {lead[-1]} < {first + count}; "
                                 f"{lead[-1]} += {nr}) {{")
                out += loops + body + ["}" * len(loops)]
                first += count
        return out

    tm, r16, r8 = DIRECT_TILE
    lines = _channel_blocks(e, mg, tm, lambda mm, tm: rows_of(mm, tm) + _act_pass(
        e, f"{yg} + {mm} * std::int64_t({p})", 1, 0, 0, tm * p, t, pass_act, pass_vec))
    return lines


#: the direct convolution is used up to this many kernel taps and input-channel x tap terms per
#: output (``Conv._direct``). Measured under cling against im2col + OpenBLAS (thread CPU time):
#: depthwise 3x3 16 channels 16x16 4.3 -> 2.6 us, stride 2 32 channels 9.8 -> 6.2 us, 3x3 1 -> 8
#: channels 32x32 5.5 -> 4.2 us; but 8 -> 16 channels 3x3 (72 terms) 12 -> 19 us and 3x3x3
#: 1 -> 8 channels (27 terms) 36 -> 98 us: cling keeps few values in registers across loop
#: iterations, so long tap sums lose to OpenBLAS.
DIRECT_MAX_TAPS = 9
DIRECT_MAX_TERMS = 9
#: output channels per group from which a convolution of at most ``DIRECT_MAX_TERMS`` terms runs
#: the register-blocked ``_direct_tiled`` rather than ``_direct_conv`` (measured under cling, thread
#: CPU time minima: 3x3 1 -> 4 channels 32x32 1.25 -> 0.96 us, 1 -> 16 16x16 1.10 -> 0.77 us)
DIRECT_TILED_MIN_M = 4


def _split_rows(g: _Geom, dt) -> bool:
    """Stride-2 float rows: the padded copy of ``_direct_conv``'s input stores each row as its two
    phases (even, then odd padded positions; ``_split_copy``), so that every kernel tap reads
    contiguous values and the row loop vectorises like a stride-1 one (before: two loads and a
    shuffle per tap and output vector, ``rows::even8``; the depthwise 3x3 stride-2 convolution of
    the pixel CNN, 32 channels 16x16, 2.5 -> 1.1 us per image)."""
    return dt.cpp == "float" and g.s[-1] == 2


def _split_dims(dims: tuple[int, ...]) -> tuple[int, ...]:
    """Spatial shape of the phase-split copy: each row holds two phases of ``ceil(width / 2)``."""
    return (*dims[:-1], 2 * ((dims[-1] + 1) // 2))


def _split_copy(e, src: str, dst: str, cg: int, g: _Geom, dims: tuple[int, ...], t: str) -> list[str]:
    """Interior of the zero-padded, phase-split input copy (``_split_rows``): padded position j of
    a row goes to phase j % 2 at j / 2; 16 input values at a time as two vectors (``rows::even8``,
    ``rows::odd8``), the rest one by one."""
    n = g.rank
    sd = _split_dims(dims)
    half, width, pb = sd[-1] // 2, g.inp[-1], g.pb[-1]
    c, i, v, xr, dr = e.tmp("c"), e.tmp("i"), e.tmp("v"), e.tmp("xr"), e.tmp("dr")
    idx = [e.tmp("i") for _ in range(n - 1)]
    lines = [f"for (std::int64_t {c} = 0; {c} < {cg}; ++{c}) {{"]
    for j in range(n - 1):
        lines.append(f"for (std::int64_t {idx[j]} = 0; {idx[j]} < {g.inp[j]}; ++{idx[j]}) {{")
    lines += [f"const {t} *{xr} = {src} + {_flat([c] + idx + ['0'], (cg,) + g.inp)};",
              f"{t} *{dr} = {dst} + {_flat([c] + [f'{ii} + {g.pb[j]}' for j, ii in enumerate(idx)] + ['0'], (cg,) + sd)};"]
    scalar = f"{dr}[(({i} + {pb}) % 2) * {half} + ({i} + {pb}) / 2] = {xr}[{i}];"
    vec = width // 16
    # the even input positions land in phase pb % 2 from pb / 2, the odd ones in the other phase
    even0, odd0 = (pb % 2) * half + pb // 2, ((pb + 1) % 2) * half + (pb + 1) // 2
    if vec:
        ns = "sofie_rt::rows::"
        lines += ["#ifdef SOFIE_RT_ROWS_VEC",
                  f"for (std::int64_t {v} = 0; {v} < {vec}; ++{v}) {{",
                  f"{ns}store({dr} + {even0} + 8 * {v}, {ns}even8({xr} + 16 * {v}));",
                  f"{ns}store({dr} + {odd0} + 8 * {v}, {ns}odd8({xr} + 16 * {v}));",
                  "}",
                  f"for (std::int64_t {i} = {16 * vec}; {i} < {width}; ++{i}) {scalar}",
                  "#else",
                  f"for (std::int64_t {i} = 0; {i} < {width}; ++{i}) {scalar}",
                  "#endif"]
    else:
        lines.append(f"for (std::int64_t {i} = 0; {i} < {width}; ++{i}) {scalar}")
    lines.append("}" * n)
    return lines


#: the direct convolution sums each kernel row's taps apart and then adds the rows (three chains of
#: dependent multiply-adds for a 3x3 kernel instead of one of nine: the FMA latency bounds a row
#: of one or two vectors)
DIRECT_SUM_GROUPS = True


def _sum_groups(terms: list[str], k_last: int) -> list[str]:
    """The terms of a window sum as one parenthesised sum per kernel row (``k_last`` taps)."""
    if not DIRECT_SUM_GROUPS or k_last < 2 or len(terms) <= k_last:
        return terms
    return [f"({' + '.join(terms[i:i + k_last])})" for i in range(0, len(terms), k_last)]


def _direct_conv(e, src: str, dims: tuple[int, ...], w: str, bias: str | None, yg: str, gi: str, cg: int, mg: int,
                 g: _Geom, t: str, act: Callable[[str], str] | None, split: bool = False) -> list[str]:
    """Direct convolution of one image and group: for each output channel and input channel, every
    output row is one loop over the last spatial dimension whose body sums all kernel taps (the
    weights held in scalars, the taps unrolled), so the loop vectorises and keeps its partial sum
    in a register; input channels after the first add to the row. ``src`` (spatial ``dims``) is
    already padded: every window lies inside it. The bias starts the first channel's sum; the
    activation ``act`` runs on each output channel's plane while it is in cache."""
    n = g.rank
    kk = _prod(g.k)
    p = _prod(g.out)
    # the input's row length: the two phases of a split row (``_split_rows``) or the padded row
    dims = _split_dims(dims) if split else dims
    half = dims[-1] // 2
    mm, c, o, first = e.tmp("m"), e.tmp("c"), e.tmp("o"), e.tmp("first")
    yc, wc, xc, yr, b0 = e.tmp("yc"), e.tmp("wc"), e.tmp("xc"), e.tmp("yr"), e.tmp("b")
    wv = [e.tmp("w") for _ in range(kk)]
    lead = [e.tmp("o") for _ in range(n - 1)]
    lines = [f"for (std::int64_t {mm} = 0; {mm} < {mg}; ++{mm}) {{",
             f"{t} *{yc} = {yg} + {mm} * std::int64_t({p});",
             f"const {t} *{wc} = {w} + ({gi} * {mg} + {mm}) * std::int64_t({cg * kk});",
             f"const {t} {b0} = {bias.format(m=mm) if bias else f'{t}(0)'};",
             f"for (std::int64_t {c} = 0; {c} < {cg}; ++{c}) {{",
             f"const {t} *{xc} = {src} + {c} * std::int64_t({_prod(dims)});",
             # the first input channel starts the row from the bias (a loop-invariant select,
             # unswitched by the compiler)
             f"const bool {first} = {c} == 0;"]
    lines += [f"const {t} {wv[i]} = {wc}[{c} * {kk} + {i}];" for i in range(kk)]
    for j in range(n - 1):
        lines.append(f"for (std::int64_t {lead[j]} = 0; {lead[j]} < {g.out[j]}; ++{lead[j]}) {{")
    rows: dict[tuple[int, ...], str] = {}  # a row pointer per combination of leading kernel offsets
    for ks in itertools.product(*[range(k) for k in g.k[:-1]]):
        rows[ks] = e.tmp("r")
        idx = [f"{lead[j]} * {g.s[j]} + {ks[j] * g.d[j]}" for j in range(n - 1)] + ["0"]
        lines.append(f"const {t} *{rows[ks]} = {xc} + {_flat(idx, dims)};")
    # restrict: the output row never overlaps the input rows (the vectoriser would otherwise add
    # run-time overlap checks to a loop of often one or two vectors)
    lines.append(f"{t} *__restrict {yr} = {yc} + {_flat(lead + ['0'], g.out)};")

    def tap(kx: int) -> str:
        """Where the tap at kernel offset ``kx`` of the row reads for output position ``o``."""
        off = kx * g.d[-1]
        if split:  # padded position 2 o + off: phase off % 2, index o + off / 2
            return f"{o} + {(off % 2) * half + off // 2}"
        return f"{o} * {g.s[-1]} + {off}"

    terms = [f"{wv[i]} * {rows[ks[:-1]]}[{tap(ks[-1])}]"
             for i, ks in enumerate(itertools.product(*[range(k) for k in g.k]))]
    terms = _sum_groups(terms, g.k[-1])
    start = b0 if cg == 1 else f"({first} ? {b0} : {yr}[{o}])"
    vec = g.out[-1] - g.out[-1] % 8 if split else 0
    if vec:
        # whole vectors of a split row as named 8-float vectors (left to the vectoriser, the loop
        # of one or two vectors ran 2.4x slower; stride-1 rows vectorise as well either way)
        ns = "sofie_rt::rows::"
        vterms = _sum_groups([f"{ns}splat({wv[i]}) * {ns}load({rows[ks[:-1]]} + {tap(ks[-1])})"
                              for i, ks in enumerate(itertools.product(*[range(k) for k in g.k]))], g.k[-1])
        vstart = f"{ns}splat({b0})" if cg == 1 else f"({first} ? {ns}splat({b0}) : {ns}load({yr} + {o}))"
        lines += ["#ifdef SOFIE_RT_ROWS_VEC",
                  f"for (std::int64_t {o} = 0; {o} < {vec}; {o} += 8)",
                  f"   {ns}store({yr} + {o}, {vstart} + ({' + '.join(vterms)}));",
                  f"for (std::int64_t {o} = {vec}; {o} < {g.out[-1]}; ++{o})",
                  f"   {yr}[{o}] = {start} + ({' + '.join(terms)});",
                  "#else"]
    lines.append(f"for (std::int64_t {o} = 0; {o} < {g.out[-1]}; ++{o})")
    lines.append(f"   {yr}[{o}] = {start} + ({' + '.join(terms)});")
    if vec:
        lines.append("#endif")
    lines.append("}" * (n - 1))
    lines.append("}")  # input channels
    if act is not None:
        i, xv = e.tmp("i"), e.tmp("x")
        lines.append(f"for (std::int64_t {i} = 0; {i} < {p}; ++{i}) "
                     f"{{ const {t} {xv} = {yc}[{i}]; {yc}[{i}] = {act(xv)}; }}")
    lines.append("}")  # output channels
    return lines


def _im2col(e, src: str, dst: str, cg: int, g: _Geom, t: str) -> list[str]:
    """Rows (channel, kernel offset) x columns (output position) of the input, zero where padded
    (a bounds test per element; the quantized convolutions use it, Conv uses ``_im2col_rows``)."""
    n = g.rank
    c, dp, xc = e.tmp("c"), e.tmp("dp"), e.tmp("xc")
    ks = [e.tmp("k") for _ in range(n)]
    os_ = [e.tmp("o") for _ in range(n)]
    is_ = [e.tmp("i") for _ in range(n)]
    lines = [f"{t} *{dp} = {dst};",
             f"for (std::int64_t {c} = 0; {c} < {cg}; ++{c}) {{",
             f"const {t} *{xc} = {src} + {c} * std::int64_t({_prod(g.inp)});"]
    for j in range(n):
        lines.append(f"for (std::int64_t {ks[j]} = 0; {ks[j]} < {g.k[j]}; ++{ks[j]}) {{")
    for j in range(n):
        lines.append(f"for (std::int64_t {os_[j]} = 0; {os_[j]} < {g.out[j]}; ++{os_[j]}) {{")
        lines.append(f"const std::int64_t {is_[j]} = {os_[j]} * {g.s[j]} + {ks[j]} * {g.d[j]} - {g.pb[j]};")
    cond = " && ".join(f"static_cast<std::uint64_t>({is_[j]}) < {g.inp[j]}u" for j in range(n))
    lines.append(f"*{dp}++ = ({cond}) ? {xc}[{_flat(is_, g.inp)}] : {t}(0);")
    lines.append("}" * (2 * n + 1))
    return lines


def _pad_copy(e, src: str, dst: str, cg: int, g: _Geom, dims: tuple[int, ...], t: str) -> list[str]:
    """Interior of the zero-padded input copy: one row (last spatial dimension) per memcpy."""
    n = g.rank
    c = e.tmp("c")
    idx = [e.tmp("i") for _ in range(n - 1)]
    lines = [f"for (std::int64_t {c} = 0; {c} < {cg}; ++{c}) {{"]
    for j in range(n - 1):
        lines.append(f"for (std::int64_t {idx[j]} = 0; {idx[j]} < {g.inp[j]}; ++{idx[j]}) {{")
    dst_idx = _flat([c] + [f"{i} + {g.pb[j]}" for j, i in enumerate(idx)] + [str(g.pb[-1])], (cg,) + dims)
    src_idx = _flat([c] + idx + ["0"], (cg,) + g.inp)
    lines.append(f"std::memcpy({dst} + {dst_idx}, {src} + {src_idx}, {g.inp[-1]} * sizeof({t}));")
    lines.append("}" * n)
    return lines


def _im2col_rows(e, src: str, dst: str, cg: int, g: _Geom, dims: tuple[int, ...], t: str,
                 split: bool = False) -> list[str]:
    """Rows (channel, kernel offset) x columns (output position) of the input ``src`` of spatial
    shape ``dims``, already padded (every window lies inside it).

    Measured under cling (CNN layers 1->8 and 8->16 channels, 3x3, pad 1): the former
    per-element bounds test cost more than the GEMM; a zero-padded copy and one memcpy per output
    row (a strided copy loop of compile-time length when the last stride is > 1) is 5-15x faster.
    ``split``: ``src`` is the phase-split copy of stride-2 rows (``_split_copy``), where the
    positions an output row reads are contiguous in one phase: one memcpy per row there too (the
    strided loop: Conv 5x5 stride 2 1 -> 16 at 0.94x onnxruntime, benchmarks/breadth.py).
    """
    n = g.rank
    c, dp = e.tmp("c"), e.tmp("dp")
    ks = [e.tmp("k") for _ in range(n)]
    os_ = [e.tmp("o") for _ in range(n - 1)]
    lines = [f"{t} *{dp} = {dst};",
             f"for (std::int64_t {c} = 0; {c} < {cg}; ++{c}) {{"]
    for j in range(n):
        lines.append(f"for (std::int64_t {ks[j]} = 0; {ks[j]} < {g.k[j]}; ++{ks[j]}) {{")
    for j in range(n - 1):
        lines.append(f"for (std::int64_t {os_[j]} = 0; {os_[j]} < {g.out[j]}; ++{os_[j]}) {{")
    pos = [f"{os_[j]} * {g.s[j]} + {ks[j]} * {g.d[j]}" for j in range(n - 1)] + [f"{ks[-1]} * {g.d[-1]}"]
    row, w = e.tmp("row"), g.out[-1]
    if split:
        # padded position o * 2 + kd of the row is phase kd % 2 at o + kd / 2
        half, kd = _split_dims(dims)[-1] // 2, f"{ks[-1]} * {g.d[-1]}"
        base = _flat([c] + pos[:-1] + ["0"], (cg,) + _split_dims(dims))
        lines.append(f"const {t} *{row} = {src} + {base} + (({kd}) % 2) * {half} + ({kd}) / 2;")
        lines.append(f"std::memcpy({dp}, {row}, {w} * sizeof({t}));")
        lines.append(f"{dp} += {w};")
        lines.append("}" * (2 * n))
        return lines
    lines.append(f"const {t} *{row} = {src} + {_flat([c] + pos, (cg,) + tuple(dims))};")
    if g.s[-1] == 1:
        lines.append(f"std::memcpy({dp}, {row}, {w} * sizeof({t}));")
    else:
        o = e.tmp("o")
        lines.append(f"for (std::int64_t {o} = 0; {o} < {w}; ++{o}) {dp}[{o}] = {row}[{o} * {g.s[-1]}];")
    lines.append(f"{dp} += {w};")
    lines.append("}" * (2 * n))
    return lines


# -- ConvTranspose ----------------------------------------------------------------------------

@register
class ConvTranspose(Operator):
    """ONNX ConvTranspose: N-D, groups, strides, dilations, pads, output_padding, output_shape, auto_pad."""

    op_type = "ConvTranspose"
    dtypes = FLOATS

    def check(self, v: NodeView) -> str | None:
        return super().check(v) or _check_conv(v)

    def _geom(self, v: NodeView) -> tuple[_Geom, int]:
        x, w = v.input(0), v.input(1)
        inp = _spatial(v, x.shape)
        n = len(inp)
        if w.rank != x.rank:
            raise v.fail(f"weight {w} must have the input's rank {x.rank} ([C, M/group, kernel...])")
        group = int(v.attr("group", 1))
        c, mg = int(x.shape[1]), int(w.shape[1])
        if group < 1 or c % group:
            raise v.fail(f"group={group} must divide the input channels ({c})")
        if int(w.shape[0]) != c:
            raise v.fail(f"the input has {c} channels but the weight {w} has {w.shape[0]}")
        k = _kernel(v, w.shape[2:], n)
        if any(kk < 1 for kk in k):
            raise v.fail(f"kernel_shape {k} must be positive")
        if v.has_input(2):
            b = v.input(2)
            if b.rank != 1 or b.shape[0] != mg * group:
                raise v.fail(f"bias {b} must be a vector of the {mg * group} output channels")
        s = _ints_attr(v, "strides", n, 1)
        d = _ints_attr(v, "dilations", n, 1)
        if any(x < 1 for x in s) or any(x < 1 for x in d):
            raise v.fail(f"strides {s} and dilations {d} must be positive")
        op = _ints_attr(v, "output_padding", n, 0)
        ap = _auto_pad(v)
        full = [s[j] * (inp[j] - 1) + op[j] + _window(k[j], d[j]) for j in range(n)]
        os_attr = v.attr("output_shape")
        if os_attr is not None or ap in ("SAME_UPPER", "SAME_LOWER"):
            if os_attr is not None:
                out = [int(x) for x in os_attr]
                if len(out) == n + 2:
                    out = out[2:]
                if len(out) != n:
                    raise v.fail(f"output_shape {list(os_attr)} must have {n} values")
            else:
                out = [inp[j] * s[j] for j in range(n)]
            pb, pe = [], []
            for j in range(n):
                total = full[j] - out[j]
                if ap not in ("SAME_UPPER", "SAME_LOWER"):
                    # an output_shape beyond the full output only adds (bias-only) positions at the end
                    total = max(total, 0)
                b_, e_ = _same_pads("SAME_UPPER" if ap == "SAME_UPPER" else "SAME_LOWER", total)
                pb.append(b_)
                pe.append(e_)
        else:
            pb, pe = _pads_attr(v, n) if ap == "NOTSET" else ([0] * n, [0] * n)
            out = [full[j] - pb[j] - pe[j] for j in range(n)]
        if any(o < 1 for o in out):
            raise v.fail(f"the output would be empty (spatial output {out})")
        return _Geom(inp, tuple(k), tuple(s), tuple(d), tuple(pb), tuple(pe), tuple(out)), group

    def infer(self, v: NodeView) -> list[OutInfo]:
        g, group = self._geom(v)
        x, w = v.input(0), v.input(1)
        return [OutInfo(x.dtype, (x.shape[0], int(w.shape[1]) * group, *g.out))]

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        g, _ = self._geom(v)
        return [(v.input(0).dtype, int(v.input(1).shape[1]) * _prod(g.k) * _prod(g.inp))]

    def emit(self, v: NodeView, e) -> str:
        g, group = self._geom(v)
        x, w = v.input(0), v.input(1)
        t = x.dtype.cpp
        c, mg = int(x.shape[1]), int(w.shape[1])
        cg, m = c // group, mg * group
        kk = _prod(g.k)
        isz = _prod(g.inp)
        osz = _prod(g.out)
        n, gi = e.tmp("n"), e.tmp("g")
        xg, yg, col = e.tmp("xg"), e.tmp("yg"), e.ws(0)
        lines = [f"for (std::int64_t {n} = 0; {n} < {e.dim(x.shape[0])}; ++{n}) {{",
                 f"for (std::int64_t {gi} = 0; {gi} < {group}; ++{gi}) {{",
                 f"const {t} *{xg} = {e.inp(0)} + ({n} * {c} + {gi} * {cg}) * std::int64_t({isz});",
                 f"{t} *{yg} = {e.out()} + ({n} * {m} + {gi} * {mg}) * std::int64_t({osz});"]
        # col[(mg * K), in] = W_g^T [(mg * K), cg] x X_g [cg, in]
        wg = f"({e.inp(1)} + {gi} * std::int64_t({cg * mg * kk}))"
        gemm = (f"sofie_rt::gemm<{t}>(true, false, {mg * kk}, {isz}, {cg}, {e.lit(1, x.dtype)}, {wg}, {mg * kk}, "
                f"{xg}, {isz}, {e.lit(0, x.dtype)}, {col}, {isz});")
        if _tiled_ok(mg * kk, isz, x.dtype):
            # the register-blocked kernel of the 1x1 convolution, reading W_g transposed (an sgemm
            # per image of this size cost more than the product)
            lines.append("#ifdef SOFIE_RT_ROWS_VEC")
            lines.extend(_pointwise_tiled(e, xg, wg, None, col, mg * kk, isz, cg, t, None, None,
                                          w_strides=(1, mg * kk)))
            lines += ["#else", gemm, "#endif"]
        else:
            lines.append(gemm)
        mm = e.tmp("m")
        lines.append(f"for (std::int64_t {mm} = 0; {mm} < {mg}; ++{mm}) {{")
        yc = e.tmp("yc")
        lines.append(f"{t} *{yc} = {yg} + {mm} * std::int64_t({osz});")
        init = f"{t}({e.inp(2)}[{gi} * {mg} + {mm}])" if v.has_input(2) else f"{t}(0)"
        lines.append(f"std::fill({yc}, {yc} + {osz}, {init});")
        lines.extend(_col2im_add(e, g, col, mm, yc, t))
        lines.append("}}}")
        return "\n".join(lines)


#: ConvTranspose writes the sum of each kernel offset out separately up to this many offsets
CONVT_UNROLL = 32


def _col2im_add(e, g: _Geom, col: str, mm: str, yc: str, t: str) -> list[str]:
    """Adds the columns of output channel ``mm`` (``col``: [channel x kernel offset, input
    position]) into its output plane ``yc``: for every kernel offset, the input positions that land
    inside the output form a range known at compile time (no bounds test per element); up to
    CONVT_UNROLL offsets are written out one by one (loops of known length), the last dimension's
    offset outermost (rows shifted by a few values, read right after being stored, stall on the
    store forwarding); stride-1 rows are added by ``sofie_rt::add_row`` (8-float vectors)."""
    nd = g.rank
    kk, isz = _prod(g.k), _prod(g.inp)
    ranges = []
    for j in range(nd):
        rj = []
        for kj in range(g.k[j]):
            # input i lands at i * s + kj * d - pb, inside [0, out) for i in [lo, hi)
            a = kj * g.d[j] - g.pb[j]
            lo = min(g.inp[j], max(0, -(a // g.s[j])))
            rj.append((lo, max(lo, min(g.inp[j], (g.out[j] - 1 - a) // g.s[j] + 1))))
        ranges.append(rj)
    ostr = [_prod(g.out[j + 1:]) for j in range(nd)]
    istr = [_prod(g.inp[j + 1:]) for j in range(nd)]
    is_ = [e.tmp("i") for _ in range(nd)]
    cr, yr, sr = e.tmp("cr"), e.tmp("yr"), e.tmp("sr")
    lines: list[str] = []

    def body(ks: list[str], bounds: list[tuple[str, str]], kb: list[str] | None = None) -> list[str]:
        """The sum of kernel offset ``ks``; with ``kb`` (the offset one column right), both."""
        out = [f"const {t} *{cr} = {col} + ({mm} * {kk} + {_flat(ks, g.k)}) * std::int64_t({isz});"]
        if kb is not None:
            out.append(f"const {t} *{cr}b = {col} + ({mm} * {kk} + {_flat(kb, g.k)}) * std::int64_t({isz});")
        for j in range(nd - 1):
            out.append(f"for (std::int64_t {is_[j]} = {bounds[j][0]}; {is_[j]} < {bounds[j][1]}; ++{is_[j]}) {{")
        ybase = " + ".join([f"({is_[j]} * {g.s[j]} + {ks[j]} * {g.d[j]} - {g.pb[j]}) * std::int64_t({ostr[j]})"
                            for j in range(nd - 1)] + [f"{ks[-1]} * {g.d[-1]} - {g.pb[-1]}"])
        sbase = " + ".join([f"{is_[j]} * std::int64_t({istr[j]})" for j in range(nd - 1)] + ["0"])
        out += [f"{t} *__restrict {yr} = {yc} + {ybase};",
                f"const {t} *__restrict {sr} = {cr} + {sbase};"]
        lo, hi = bounds[-1]
        if kb is not None:
            out += [f"const {t} *__restrict {sr}b = {cr}b + {sbase};",
                    f"sofie_rt::add_row_interleave2<{t}>({yr}, {sr}, {sr}b, {g.inp[-1]});"]
        elif g.s[-1] == 1:
            out.append(f"sofie_rt::add_row<{t}>({yr} + {lo}, {sr} + {lo}, {hi} - {lo});")
        else:
            i = is_[-1]
            out.append(f"for (std::int64_t {i} = {lo}; {i} < {hi}; ++{i}) {yr}[{i} * {g.s[-1]}] += {sr}[{i}];")
        out.append("}" * (nd - 1))
        return out

    # a 2-wide kernel at stride 2 whose two columns cover the whole output rows: each row is
    # the interleave of the two columns' rows (sofie_rt::add_row_interleave2), not two passes of
    # stride-2 scalar stores
    full = (0, g.inp[-1])
    if (kk <= CONVT_UNROLL and g.k[-1] == 2 and g.s[-1] == 2 and g.d[-1] == 1 and g.pb[-1] == 0
            and ranges[-1][0] == full and ranges[-1][1] == full):
        for kr in itertools.product(*[range(k) for k in g.k[:-1]]):
            if any(ranges[j][kr[j]][0] == ranges[j][kr[j]][1] for j in range(nd - 1)):
                continue
            lines.append("{")
            lines += body([str(z) for z in (*kr, 0)], [ranges[j][kr[j]] for j in range(nd - 1)] + [full],
                          kb=[str(z) for z in (*kr, 1)])
            lines.append("}")
        return lines
    if kk <= CONVT_UNROLL:
        for kl, *kr in itertools.product(range(g.k[-1]), *[range(k) for k in g.k[:-1]]):
            ks = (*kr, kl)
            if any(ranges[j][ks[j]][0] == ranges[j][ks[j]][1] for j in range(nd)):
                continue  # no input position of this offset lands inside the output
            lines.append("{")
            lines += body([str(z) for z in ks], [ranges[j][ks[j]] for j in range(nd)])
            lines.append("}")
        return lines
    tabs = []
    for j in range(nd):
        lo_t, hi_t = e.tmp("lo"), e.tmp("hi")
        lines.append(f"static const std::int64_t {lo_t}[{g.k[j]}] = {{{', '.join(str(lo) for lo, _ in ranges[j])}}};")
        lines.append(f"static const std::int64_t {hi_t}[{g.k[j]}] = {{{', '.join(str(hi) for _, hi in ranges[j])}}};")
        tabs.append((lo_t, hi_t))
    ks = [e.tmp("k") for _ in range(nd)]
    for j in [nd - 1, *range(nd - 1)]:
        lines.append(f"for (std::int64_t {ks[j]} = 0; {ks[j]} < {g.k[j]}; ++{ks[j]}) {{")
    lines += body(ks, [(f"{tabs[j][0]}[{ks[j]}]", f"{tabs[j][1]}[{ks[j]}]") for j in range(nd)])
    lines.append("}" * nd)
    return lines


# -- DeformConv -------------------------------------------------------------------------------

@register
class DeformConv(Operator):
    """ONNX DeformConv (opset 19/22), 2-D: each kernel tap samples the input bilinearly at its
    position plus a learned offset (zero outside the input), optionally scaled by a mask; groups,
    offset groups, strides, dilations, pads and bias.

    Lowered like Conv: a deformable im2col (the sampled, masked values of each (channel, tap) row
    over the output positions, in a workspace) then one GEMM per (image, group). Where each tap
    samples is computed once per offset group and shared by its channels; each channel is copied
    into a zero frame, so the four corners are read without a bounds check. The sampling
    follows onnx.reference's (GridSample, bilinear, zero padding, align_corners): interpolated
    along the width in each of the two rows, then between the rows; a NaN position gives NaN, a
    position farther than one pixel outside the input gives 0."""

    op_type = "DeformConv"
    dtypes = FLOATS

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v) or _check_conv(v)
        if reason:
            return reason
        if v.has_input(0) and v.input(0).rank != 4:
            return f"only 2-D DeformConv (input [N, C, H, W]) is supported, got rank {v.input(0).rank}"
        return None

    def _geom(self, v: NodeView) -> tuple[_Geom, int, int]:
        x, w, off = v.input(0), v.input(1), v.input(2)
        inp = _spatial(v, x.shape)
        if w.rank != 4:
            raise v.fail(f"weight {w} must be [M, C/group, kH, kW]")
        group, og = int(v.attr("group", 1)), int(v.attr("offset_group", 1))
        c, m, cg = int(x.shape[1]), int(w.shape[0]), int(w.shape[1])
        if group < 1 or m % group or cg * group != c:
            raise v.fail(f"group={group}: the input's {c} channels must be the weight's {cg} x group and the "
                         f"{m} output channels a multiple of group")
        if og < 1 or c % og:
            raise v.fail(f"offset_group={og} must divide the {c} input channels")
        k = _kernel(v, w.shape[2:], 2)
        g = _conv_geom(v, inp, k)
        kk = _prod(k)
        n = x.shape[0]
        want = (n, og * kk * 2, *g.out)
        if off.rank != 4 or tuple(off.shape[1:]) != want[1:] or off.shape[0] != n:
            raise v.fail(f"offset {off} must be [N, offset_group * kH * kW * 2, outH, outW] = "
                         f"{[str(d) for d in want]}")
        if v.has_input(3):
            b = v.input(3)
            if b.rank != 1 or b.shape[0] != m:
                raise v.fail(f"bias {b} must be a vector of the {m} output channels")
        if v.has_input(4):
            mk = v.input(4)
            if mk.rank != 4 or tuple(mk.shape[1:]) != (og * kk, *g.out) or mk.shape[0] != n:
                raise v.fail(f"mask {mk} must be [N, offset_group * kH * kW, outH, outW] = "
                             f"{[str(d) for d in (n, og * kk, *g.out)]}")
        return g, group, og

    def infer(self, v: NodeView) -> list[OutInfo]:
        g, _, _ = self._geom(v)
        x, w = v.input(0), v.input(1)
        return [OutInfo(x.dtype, (x.shape[0], w.shape[0], *g.out))]

    @staticmethod
    def _padded(g: _Geom) -> tuple[int, int]:
        """A channel in a zero frame: 1 row/column before, 2 after (a position up to one pixel
        outside the input reads its four corners there; rows ih + 1 and ih + 2 are the all-zero
        corners of positions farther out)."""
        return g.inp[0] + 3, g.inp[1] + 3

    def workspace(self, v: NodeView) -> list[tuple[DType, DimLike]]:
        g, _, _ = self._geom(v)
        p, kk = _prod(g.out), _prod(g.k)
        ph, pw = self._padded(g)
        if ph * pw >= 2**31:
            raise v.fail(f"the input's spatial size {list(g.inp)} is too large for DeformConv")
        t = v.input(0).dtype
        # the im2col matrix; per offset group, for every (tap, output position): where its top-left
        # corner is in the framed channel and its two fractions; the framed channel
        return [(t, int(v.input(0).shape[1]) * kk * p), (INT32, kk * p), (t, 2 * kk * p), (t, ph * pw)]

    def emit(self, v: NodeView, e) -> str:
        g, group, og = self._geom(v)
        x, w = v.input(0), v.input(1)
        t = x.dtype.cpp
        c, m, cg = int(x.shape[1]), int(w.shape[0]), int(w.shape[1])
        mg, kk, p = m // group, _prod(g.k), _prod(g.out)
        ih, iw = g.inp
        ph, pw = self._padded(g)
        kw, ow = g.k[1], g.out[1]
        cpo = c // og  # input channels per offset group
        n, o, k, q, ch = e.tmp("n"), e.tmp("og"), e.tmp("k"), e.tmp("q"), e.tmp("c")
        off, msk, dst, xc = e.tmp("off"), e.tmp("msk"), e.tmp("dst"), e.tmp("xc")
        col, base, frac, frame = e.ws(0), e.ws(1), e.ws(2), e.ws(3)
        far = (ih + 1) * pw  # the top-left corner of an all-zero 2x2 block
        lines = [
            f"std::fill({frame}, {frame} + {ph * pw}, {t}(0));  // the frame stays zero",
            f"for (std::int64_t {n} = 0; {n} < {e.dim(x.shape[0])}; ++{n}) {{",
            f"for (std::int64_t {o} = 0; {o} < {og}; ++{o}) {{",
            f"const {t} *{off} = {e.inp(2)} + ({n} * {og} + {o}) * std::int64_t({kk * 2 * p});",
        ]
        if v.has_input(4):
            lines.append(f"const {t} *{msk} = {e.inp(4)} + ({n} * {og} + {o}) * std::int64_t({kk * p});")
        lines += [
            # where every (tap, output position) samples: shared by the offset group's channels
            f"for (std::int64_t {k} = 0; {k} < {kk}; ++{k}) {{",
            f"const std::int64_t kh_ = ({k} / {kw}) * {g.d[0]} - {g.pb[0]}, kw_ = ({k} % {kw}) * {g.d[1]} - {g.pb[1]};",
            f"for (std::int64_t {q} = 0; {q} < {p}; ++{q}) {{",
            f"   const std::int64_t j_ = {k} * {p} + {q};",
            f"   const double h_ = double({q} / {ow} * {g.s[0]} + kh_) + double({off}[(2 * {k}) * {p} + {q}]);",
            f"   const double w_ = double({q} % {ow} * {g.s[1]} + kw_) + double({off}[(2 * {k} + 1) * {p} + {q}]);",
            f"   std::int32_t b_ = {far};",
            f"   {t} fh_ = 0, fw_ = 0;",
            "   if (h_ != h_ || w_ != w_) {",
            f"      fh_ = std::numeric_limits<{t}>::quiet_NaN();  // a NaN position samples NaN",
            f"   }} else if (h_ >= -1.0 && h_ <= {ih}.0 && w_ >= -1.0 && w_ <= {iw}.0) {{",
            "      const double h0 = std::floor(h_), w0 = std::floor(w_);",
            f"      fh_ = {t}(h_ - h0); fw_ = {t}(w_ - w0);",
            f"      b_ = std::int32_t((std::int64_t(h0) + 1) * {pw} + std::int64_t(w0) + 1);",
            "   }  // (farther than a pixel outside: the four corners are zero)",
            f"   {base}[j_] = b_; {frac}[2 * j_] = fh_; {frac}[2 * j_ + 1] = fw_;",
            "}",
            "}",
            f"for (std::int64_t {ch} = {o} * {cpo}; {ch} < ({o} + 1) * {cpo}; ++{ch}) {{",
            f"const {t} *{xc} = {e.inp(0)} + ({n} * {c} + {ch}) * std::int64_t({ih * iw});",
            f"for (std::int64_t r_ = 0; r_ < {ih}; ++r_)",
            f"   std::copy({xc} + r_ * {iw}, {xc} + (r_ + 1) * {iw}, {frame} + (r_ + 1) * {pw} + 1);",
            f"{t} *{dst} = {col} + {ch} * std::int64_t({kk * p});",
            f"for (std::int64_t j_ = 0; j_ < {kk * p}; ++j_) {{",
            f"   const {t} *a_ = {frame} + {base}[j_];",
            f"   const {t} fh_ = {frac}[2 * j_], fw_ = {frac}[2 * j_ + 1];",
            # along the width in both rows, then between the rows (the reference's order)
            f"   const {t} r0_ = ({t}(1) - fw_) * a_[0] + fw_ * a_[1];",
            f"   const {t} r1_ = ({t}(1) - fw_) * a_[{pw}] + fw_ * a_[{pw + 1}];",
            f"   {dst}[j_] = (({t}(1) - fh_) * r0_ + fh_ * r1_)"
            + (f" * {msk}[j_];" if v.has_input(4) else ";"),
            "}",
            "}",
            "}",
        ]
        # Y[n, group] = W[group] [mg, cg * kk] x col[group] [cg * kk, P] (+ bias)
        gi, yg, mm = e.tmp("g"), e.tmp("yg"), e.tmp("m")
        beta = e.lit(0, x.dtype)
        lines += [f"for (std::int64_t {gi} = 0; {gi} < {group}; ++{gi}) {{",
                  f"{t} *{yg} = {e.out()} + ({n} * {m} + {gi} * {mg}) * std::int64_t({p});"]
        if v.has_input(3):
            lines += [f"for (std::int64_t {mm} = 0; {mm} < {mg}; ++{mm})",
                      f"   std::fill({yg} + {mm} * {p}, {yg} + ({mm} + 1) * {p}, {t}({e.inp(3)}[{gi} * {mg} + {mm}]));"]
            beta = e.lit(1, x.dtype)
        lines += [f"sofie_rt::gemm<{t}>(false, false, {mg}, {p}, {cg * kk}, {e.lit(1, x.dtype)}, "
                  f"{e.inp(1)} + {gi} * std::int64_t({mg * cg * kk}), {cg * kk}, "
                  f"{col} + {gi} * std::int64_t({cg * kk * p}), {p}, {beta}, {yg}, {p});",
                  "}", "}"]
        return "\n".join(lines)


# -- pools ------------------------------------------------------------------------------------

def _inside_outputs(g: _Geom, j: int) -> tuple[int, int]:
    """The outputs [first, last) of dimension j whose window lies inside the input."""
    first = min(g.out[j], -(-g.pb[j] // g.s[j]))
    return first, max(first, min(g.out[j], (g.inp[j] - 1 - (g.k[j] - 1) * g.d[j] + g.pb[j]) // g.s[j] + 1))


class _Pool(Operator):
    """Windowed pools: max, average and Lp."""

    kind = "max"
    dtypes = FLOATS

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if v.attr("kernel_shape") is None:
            return "kernel_shape is required"
        return _check_common(v)

    def _geom(self, v: NodeView) -> _Geom:
        x = v.input(0)
        inp = _spatial(v, x.shape)
        k = _kernel(v, None, len(inp))
        ceil_mode = bool(v.attr("ceil_mode", 0))
        return _conv_geom(v, inp, k, ceil_mode=ceil_mode)

    def _p(self, v: NodeView) -> float:
        p = float(v.attr("p", 2))
        return p

    def infer(self, v: NodeView) -> list[OutInfo]:
        g = self._geom(v)
        x = v.input(0)
        shape = (x.shape[0], x.shape[1], *g.out)
        outs = [OutInfo(x.dtype, shape)]
        if self.kind == "max":
            outs.append(OutInfo(INT64, shape))
        return outs

    def emit(self, v: NodeView, e) -> str:
        g = self._geom(v)
        x = v.input(0)
        dt = x.dtype
        t = dt.cpp
        nd = g.rank
        isz, osz = _prod(g.inp), _prod(g.out)
        want_idx = self.kind == "max" and len(v.node.outputs) > 1 and bool(v.node.outputs[1])
        if (self.kind == "max" and dt == FLOAT32 and not want_idx and nd == 2
                and all(isinstance(n, int) for n in (*g.inp, *g.out)) and list(g.k) == [2, 2]
                and list(g.s) == [2, 2] and list(g.d) == [1, 1] and not any(g.pb) and
                list(g.out) == [g.inp[0] // 2, g.inp[1] // 2]):
            return (f"sofie_rt::rows::maxpool2x2({e.inp(0)}, {e.out()}, {e.dim(numel(x.shape[:2]))}, "
                    f"{g.inp[0]}, {g.inp[1]});")
        count_pad = bool(v.attr("count_include_pad", 0))
        p = self._p(v) if self.kind == "lp" else 0.0
        pl, xp, yp, oi = e.tmp("pl"), e.tmp("xp"), e.tmp("yp"), e.tmp("oi")
        planes = numel(x.shape[:2])
        lines = [f"for (std::int64_t {pl} = 0; {pl} < {e.dim(planes)}; ++{pl}) {{",
                 f"const {t} *{xp} = {e.inp(0)} + {pl} * std::int64_t({isz});",
                 f"{t} *{yp} = {e.out()} + {pl} * std::int64_t({osz});",
                 f"std::int64_t {oi} = 0;"]
        os_ = [e.tmp("o") for _ in range(nd)]
        bs = [e.tmp("b") for _ in range(nd)]
        lo = [e.tmp("lo") for _ in range(nd)]
        hi = [e.tmp("hi") for _ in range(nd)]
        ks = [e.tmp("k") for _ in range(nd)]
        is_ = [e.tmp("i") for _ in range(nd)]
        cnt = []
        # the outputs of the last dimension whose window lies inside the input, [first, last):
        # looped apart with a window of constant bounds (unrolled, the output loop vectorised;
        # a 1-D MaxPool k3 s1 pad 1 ran at 0.85x onnxruntime with per-output bounds everywhere)
        jl = nd - 1
        first, last = _inside_outputs(g, jl)
        # every window of every dimension inside the input (no padding reached): the window
        # bounds are constants everywhere, so the window loops unroll
        inside = all(_inside_outputs(g, j) == (0, g.out[j]) for j in range(nd))
        split = last - first >= 8 and not inside
        tail_start = len(lines)
        for j in range(nd):
            d = g.d[j]
            if j == jl:
                tail_start = len(lines)
            lines.append(f"for (std::int64_t {os_[j]} = 0; {os_[j]} < {g.out[j]}; ++{os_[j]}) {{")
            lines.append(f"const std::int64_t {bs[j]} = {os_[j]} * {g.s[j]} - {g.pb[j]};")
            if inside:
                lines.append(f"constexpr std::int64_t {lo[j]} = 0;")
                lines.append(f"constexpr std::int64_t {hi[j]} = {g.k[j]};")
            else:
                lines.append(f"const std::int64_t {lo[j]} = {bs[j]} < 0 ? (-{bs[j]} + {d - 1}) / {d} : 0;")
                lines.append(f"const std::int64_t {hi[j]} = std::min<std::int64_t>({g.k[j]}, "
                             f"std::max<std::int64_t>(0, {g.inp[j]} - {bs[j]} + {d - 1}) / {d});")
            if self.kind == "avg" and count_pad:
                c = e.tmp("cp")
                lines.append(f"const std::int64_t {c} = std::min<std::int64_t>({g.k[j]}, "
                             f"std::max<std::int64_t>(0, {g.inp[j] + g.pe[j]} - {bs[j]} + {d - 1}) / {d});")
                cnt.append(c)
            else:
                cnt.append(f"std::max<std::int64_t>(0, {hi[j]} - {lo[j]})")
        acc, best = e.tmp("acc"), e.tmp("best")
        if self.kind == "max":
            # from -inf, so that a window of -inf gives -inf (from the lowest float it gave -FLT_MAX)
            init = f"{t}(-std::numeric_limits<float>::infinity())" if dt.is_float else \
                f"std::numeric_limits<{t}>::lowest()"
            lines.append(f"{t} {acc} = {init};")
            if want_idx:
                lines.append(f"std::int64_t {best} = -1;")
        else:
            lines.append(f"{t} {acc} = {t}(0);")
        for j in range(nd):
            lines.append(f"for (std::int64_t {ks[j]} = {lo[j]}; {ks[j]} < {hi[j]}; ++{ks[j]}) {{")
            lines.append(f"const std::int64_t {is_[j]} = {bs[j]} + {ks[j]} * {g.d[j]};")
        val = f"{xp}[{_flat(is_, g.inp)}]"
        if self.kind == "max":
            xv = e.tmp("xv")
            lines.append(f"const {t} {xv} = {val};")
            if want_idx:
                if int(v.attr("storage_order", 0)):
                    # column-major: the first spatial index varies fastest
                    idx = is_[nd - 1]
                    for j in reversed(range(nd - 1)):
                        idx = f"({idx}) * {g.inp[j]} + {is_[j]}"
                else:
                    idx = _flat(is_, g.inp)
                # NaN is skipped as in the path without indices (onnxruntime's MaxPool does the same)
                lines.append(f"if ({xv} > {acc} || ({best} < 0 && {xv} == {xv})) {{ {acc} = {xv}; {best} = {idx}; }}")
            else:
                lines.append(f"{acc} = {xv} > {acc} ? {xv} : {acc};")
        elif self.kind == "avg":
            lines.append(f"{acc} += {val};")
        else:
            if p == 1:
                lines.append(f"{acc} += std::abs({val});")
            elif p == 2:
                lines.append(f"{acc} += {val} * {val};")
            else:
                lines.append(f"{acc} += {pow_expr(f'std::abs({val})', '', dt, float(p))};")
        lines.append("}" * nd)
        if self.kind == "max":
            lines.append(f"{yp}[{oi}] = {acc};")
            if want_idx:
                lines.append(f"{e.out(1)}[{pl} * std::int64_t({osz}) + {oi}] = "
                             f"{pl} * std::int64_t({isz}) + ({best} < 0 ? 0 : {best});")
        elif self.kind == "avg":
            div = " * ".join(cnt)
            lines.append(f"{yp}[{oi}] = {acc} / {t}({div});")
        else:
            if p == 1:
                lines.append(f"{yp}[{oi}] = {acc};")
            elif p == 2:
                lines.append(f"{yp}[{oi}] = std::sqrt({acc});")
            else:
                lines.append(f"{yp}[{oi}] = {pow_expr(acc, '', dt, 1.0 / p)};")
        lines.append(f"++{oi};")
        if split:
            # the last dimension's loop three times: [0, first) and [last, out) as above, and
            # [first, last) with lo = 0 and hi = k known to the compiler
            hlen = 5 if self.kind == "avg" and count_pad else 4  # the loop, b, lo, hi (and cp)
            body = lines[tail_start + hlen:]
            head = lines[tail_start:tail_start + hlen]
            loop = head[0]
            border = [loop.replace(f"= 0; {os_[jl]} < {g.out[jl]};", f"= 0; {os_[jl]} < {first};"), *head[1:],
                      *body, "}",
                      loop.replace(f"= 0; {os_[jl]} < {g.out[jl]};", f"= {last}; {os_[jl]} < {g.out[jl]};"),
                      *head[1:], *body, "}"]
            inner = [loop.replace(f"= 0; {os_[jl]} < {g.out[jl]};", f"= {first}; {os_[jl]} < {last};"), head[1],
                     f"constexpr std::int64_t {lo[jl]} = 0;", f"constexpr std::int64_t {hi[jl]} = {g.k[jl]};",
                     *head[4:], *body, "}"]
            lines = lines[:tail_start] + border[:len(head) + len(body) + 1] + inner + \
                border[len(head) + len(body) + 1:]
            lines.append("}" * (nd - 1))
        else:
            lines.append("}" * nd)
        lines.append("}")
        return "\n".join(lines)


@register
class MaxPool(_Pool):
    """ONNX MaxPool: N-D, pads, auto_pad, strides, dilations, ceil_mode, Indices (storage_order)."""

    op_type = "MaxPool"
    kind = "max"
    dtypes = (*FLOATS, "int8", "uint8")


@register
class AveragePool(_Pool):
    """ONNX AveragePool: N-D, pads, auto_pad, strides, dilations, ceil_mode, count_include_pad."""

    op_type = "AveragePool"
    kind = "avg"


@register
class LpPool(_Pool):
    """ONNX LpPool: (sum |x|^p over the window)^(1/p); pads, auto_pad, strides, dilations, ceil_mode."""

    op_type = "LpPool"
    kind = "lp"

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if self._p(v) <= 0:
            return f"p={v.attr('p')} must be positive"
        return None


# -- global pools -----------------------------------------------------------------------------

class _GlobalPool(Operator):
    kind = "avg"
    dtypes = FLOATS

    def _p(self, v: NodeView) -> float:
        return float(v.attr("p", 2))

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if self.kind == "lp" and self._p(v) <= 0:
            return f"p={v.attr('p')} must be positive"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        if x.rank < 3:
            raise v.fail(f"input must have rank >= 3 ([N, C, spatial...]), got {x}")
        return [OutInfo(x.dtype, (x.shape[0], x.shape[1]) + (1,) * (x.rank - 2))]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        dt = x.dtype
        t = dt.cpp
        planes = numel(x.shape[:2])
        sp = e.dim(numel(x.shape[2:]))
        if dt in (FLOAT32, FLOAT64) and self.kind in ("avg", "max"):
            # the row kernel of ReduceMean/ReduceMax over the plane: vectorised, several rows at a
            # time when they are short, and NaN anywhere in a plane gives NaN (numpy's max)
            kind = 0 if self.kind == "avg" else 1
            div = f"{t}({sp})" if self.kind == "avg" else f"{t}(1)"
            return f"sofie_rt::rows::reduce<{t}>({e.inp(0)}, {e.out()}, {e.dim(planes)}, {sp}, {kind}, {div});"
        pl, xp, acc, i = e.tmp("pl"), e.tmp("xp"), e.tmp("acc"), e.tmp("i")
        lines = [f"for (std::int64_t {pl} = 0; {pl} < {e.dim(planes)}; ++{pl}) {{",
                 f"const {t} *{xp} = {e.inp(0)} + {pl} * {sp};"]
        p = self._p(v) if self.kind == "lp" else 0.0
        if self.kind == "max":
            init = f"std::numeric_limits<{t}>::lowest()"

            def body(a: str, k: str) -> str:
                return f"{a} = {xp}[{k}] > {a} ? {xp}[{k}] : {a};"
        else:
            init = f"{t}(0)"
            term = {"avg": "{x}", 1.0: "std::abs({x})", 2.0: "{x} * {x}"}.get(
                "avg" if self.kind == "avg" else p, pow_expr("std::abs({x})", "", dt, float(p)))

            def body(a: str, k: str) -> str:
                return f"{a} += {term.format(x=f'{xp}[{k}]')};"
        # 8 partial accumulators: a loop carrying one does not vectorise (the compiler may not
        # reorder float operations); the max is the same select either way
        part, lane = e.tmp("part"), e.tmp("l")
        merge = (f"{acc} = {part}[{lane}] > {acc} ? {part}[{lane}] : {acc};" if self.kind == "max"
                 else f"{acc} += {part}[{lane}];")
        lines += [f"{t} {acc} = {init};",
                  "{",
                  f"   {t} {part}[8];",
                  f"   for (int {lane} = 0; {lane} < 8; ++{lane}) {part}[{lane}] = {init};",
                  f"   std::int64_t {i} = 0;",
                  f"   for (; {i} + 8 <= {sp}; {i} += 8)",
                  f"      for (int {lane} = 0; {lane} < 8; ++{lane}) {body(f'{part}[{lane}]', f'{i} + {lane}')}",
                  f"   for (int {lane} = 0; {lane} < 8; ++{lane}) {merge}",
                  f"   for (; {i} < {sp}; ++{i}) {body(acc, i)}",
                  "}"]
        if self.kind == "avg":
            res = f"{acc} / {t}({sp})"
        elif self.kind == "lp" and p == 2:
            res = f"std::sqrt({acc})"
        elif self.kind == "lp" and p != 1:
            res = pow_expr(acc, "", dt, 1.0 / p)
        else:
            res = acc
        lines.append(f"{e.out()}[{pl}] = {res};")
        lines.append("}")
        return "\n".join(lines)


@register
class GlobalAveragePool(_GlobalPool):
    """ONNX GlobalAveragePool: the mean over all spatial positions of each channel."""

    op_type = "GlobalAveragePool"
    kind = "avg"


@register
class GlobalMaxPool(_GlobalPool):
    """ONNX GlobalMaxPool: the maximum over all spatial positions of each channel."""

    op_type = "GlobalMaxPool"
    kind = "max"


@register
class GlobalLpPool(_GlobalPool):
    """ONNX GlobalLpPool: (sum |x|^p)^(1/p) over all spatial positions of each channel."""

    op_type = "GlobalLpPool"
    kind = "lp"
