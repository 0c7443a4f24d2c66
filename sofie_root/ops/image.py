"""Image operators: Resize (and the deprecated Upsample), CenterCropPad, Col2Im, GridSample,
AffineGrid, RoiAlign, MaxUnpool and LRN.

Resize is separable: for every resized axis the source indices and weights of each output
position (nearest, linear, cubic, antialiased, every coordinate transformation mode) are computed
in Python at compile time, following ``onnx.reference``, and emitted as small ``static const``
tables; the generated loop nest walks the output and sums over the taps of the resized axes (in
double precision). Nearest resizing (one tap of weight 1) writes whole output rows instead
(``_nearest_copy``): a memcpy, ``sofie_rt::repeat_row`` for an integer upsampling of the last
axis, or a gather, and a memcpy of the previous block where a resized outer axis repeats it. Axes that are not resized may be symbolic; a resized axis must have a size
known at compile time, as must the scales/sizes/roi inputs (the core specialises the model on
them when they are graph inputs).

GridSample and RoiAlign read their coordinates from data at run time; every index derived from
data is clamped or checked (an out-of-range RoiAlign batch index or MaxUnpool index throws).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..ir.dims import Dim, DimLike, Shape, numel, strides
from ..ir.dtypes import FLOAT64, INT64, DType
from ..limits import check_shape
from .base import NodeView, Operator, OutInfo, normalize_axis, register
from .elementwise import pow_expr

FLOATS = ("float32", "float64")
INTS = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
I64 = "std::int64_t"

COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
               "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


# -- helpers ------------------------------------------------------------------------------------

def _s(x) -> str:
    """An attribute value as a str (bytes from some frontends)."""
    return x.decode() if isinstance(x, bytes) else str(x)


def _static_array(v: NodeView, i: int, what: str) -> np.ndarray | list | None:
    """The compile-time value of input ``i`` (None if absent or empty).

    Integer values may contain symbolic dimensions (a list is returned then)."""
    if not v.has_input(i):
        return None
    c = v.const(i)
    if c is not None:
        c = np.asarray(c)
        return None if c.size == 0 else c.reshape(-1)
    val = v.require_value(i, what)
    if not val:
        return None
    if any(isinstance(d, Dim) for d in val):
        return list(val)
    return np.array([int(d) for d in val], dtype=np.int64)


def _ints(v: NodeView, i: int, what: str) -> list[int]:
    arr = _static_array(v, i, what)
    if arr is None:
        raise v.fail(f"{what} (input {i}) is required")
    if any(isinstance(d, Dim) for d in arr):
        raise v.fail(f"{what} {list(map(str, arr))} must be known numbers at compile time")
    return [int(d) for d in arr]


def _table(e, ctype: str, values: Sequence[str]) -> tuple[str, str]:
    """A static const C++ array (at least one element) of the given literal strings."""
    name = e.tmp("tab")
    vals = list(values) or ["0"]
    rows = [", ".join(vals[k:k + 16]) for k in range(0, len(vals), 16)]
    body = ",\n   ".join(rows)
    return name, f"static const {ctype} {name}[{len(vals)}] = {{\n   {body}}};"


def _check_float_inputs(v: NodeView, idx: Sequence[int], allowed: Sequence[str] = FLOATS) -> str | None:
    for i in idx:
        if v.has_input(i) and v.input(i).dtype.name not in allowed:
            return (f"element type {v.input(i).dtype.name} of input {i} is not supported "
                    f"(supported: {', '.join(allowed)})")
    return None


# -- Resize / Upsample --------------------------------------------------------------------------

@dataclass
class _AxisTaps:
    """Per output position of one resized axis: source indices and weights (``[out, n]``)."""

    idx: np.ndarray
    w: np.ndarray
    ext: np.ndarray | None  # tf_crop_and_resize: output positions taking the extrapolation value

    @property
    def n(self) -> int:
        return self.idx.shape[1]

    @property
    def copy(self) -> bool:
        return self.n == 1 and bool(np.all(self.w == 1.0)) and self.ext is None


def _cubic_coeffs(ratio: np.ndarray, a: float) -> np.ndarray:
    r = ratio
    s = 1 - r
    return np.stack([
        ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
        ((a + 2) * r - (a + 3)) * r * r + 1,
        ((a + 2) * s - (a + 3)) * s * s + 1,
        ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a,
    ], axis=1)


def _cubic_aa(ratio: float, scale: float, a: float) -> np.ndarray:
    scale = min(scale, 1.0)

    def coeff(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x ** 3 - (a + 3) * x * x + 1
        if x < 2:
            return a * x ** 3 - 5 * a * x * x + 8 * a * x - 4 * a
        return 0.0

    i_start = int(np.floor(-2 / scale) + 1)
    c = np.array([coeff(scale * (i - ratio)) for i in range(i_start, 2 - i_start)])
    return c / c.sum()


def _linear_aa(ratio: float, scale: float) -> np.ndarray:
    scale = min(scale, 1.0)
    start = int(np.floor(-1 / scale) + 1)
    footprint = 2 - 2 * start
    args = (np.arange(start, start + footprint) - ratio) * scale
    c = np.clip(1 - np.abs(args), 0, 1)
    return c / c.sum()


def _nearest_coeffs(ratio: np.ndarray, mode: str) -> np.ndarray:
    integer = ratio == 1.0
    if mode == "round_prefer_floor":
        hi = ratio > 0.5
    elif mode == "round_prefer_ceil":
        hi = ratio >= 0.5
    elif mode == "floor":
        hi = np.zeros_like(integer)
    else:
        hi = np.ones_like(integer)
    hi = hi | integer
    return np.stack([~hi, hi], axis=1).astype(np.float64)


def _x_original(mode: str, y: np.ndarray, scale: float, in_w: int, out_int: int,
                roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Source coordinates of the output positions ``y`` (onnx.reference semantics), computed in
    float32 as onnxruntime does (so that nearest-neighbour ties round the same way)."""
    f = np.float32
    y = y.astype(f)
    out_w = f(scale) * f(in_w)
    scale, in_w = f(scale), f(in_w)
    if roi is not None:
        roi = (f(roi[0]), f(roi[1]))
    ext = None
    if mode == "align_corners":
        x = np.zeros(out_int, f) if out_w == 1 else y * (in_w - 1) / (out_w - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        r0, r1 = roi if roi is not None else (0.0, 1.0)
        if out_w == 1:
            x = np.full(out_int, (r1 - r0) * (in_w - 1) / 2, f)
        else:
            x = y * (r1 - r0) * (in_w - 1) / (out_w - 1)
        x = x + r0 * (in_w - 1)
        ext = (x < 0) | (x > in_w - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(out_int, -0.5, f) if out_w == 1 else (y + f(0.5)) / scale - f(0.5)
    elif mode == "half_pixel":
        x = (y + f(0.5)) / scale - f(0.5)
    elif mode == "half_pixel_symmetric":
        adjustment = f(out_int) / out_w
        offset = in_w / f(2) * (f(1) - adjustment)
        x = offset + (y + f(0.5)) / scale - f(0.5)
    elif mode == "tf_half_pixel_for_nn":
        x = (y + f(0.5)) / scale
    else:
        raise ValueError(mode)
    return np.asarray(x, np.float32).astype(np.float64), ext


def _axis_taps(in_w: int, out_int: int, scale: float, roi, attrs: dict) -> _AxisTaps:
    """Indices and weights along one axis, as ``onnx.reference`` (separable) computes them."""
    mode = attrs["mode"]
    y = np.arange(out_int, dtype=np.float64)
    if attrs["legacy"]:
        # Upsample and Resize-10: asymmetric coordinates; nearest rounds down when upsampling and
        # up when downsampling (onnxruntime's "simple" mode), computed in float32 as onnxruntime.
        xf = (y.astype(np.float32) / np.float32(scale)).astype(np.float64)
        if mode == "nearest":
            i = np.floor(xf) if scale >= 1 else np.ceil(xf)
            i = np.clip(i, 0, in_w - 1).astype(np.int64)
            return _AxisTaps(i[:, None], np.ones((out_int, 1)), None)
        x, ext = xf, None
    else:
        x, ext = _x_original(attrs["ctm"], y, scale, in_w, out_int, roi)
    xi = np.floor(x)
    ratio = np.where(x == xi, 1.0, x - xi)
    if out_int == 0:
        return _AxisTaps(np.zeros((0, 1), np.int64), np.zeros((0, 1)), None)
    if mode == "nearest":
        coeffs = _nearest_coeffs(ratio, attrs["nearest_mode"])
    elif mode == "linear":
        if attrs["antialias"]:
            coeffs = np.stack([_linear_aa(float(r), scale) for r in ratio])
        else:
            coeffs = np.stack([1 - ratio, ratio], axis=1)
    else:
        a = attrs["cubic_a"]
        if attrs["antialias"]:
            coeffs = np.stack([_cubic_aa(float(r), scale, a) for r in ratio])
        else:
            coeffs = _cubic_coeffs(ratio, a)
    n = coeffs.shape[1]
    pad = math.ceil(n / 2)
    xp = x + pad
    pp = np.floor(xp).astype(np.int64)
    frac = xp - pp
    if n % 2 == 0:
        off = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        base = -((n - 1) // 2)
        off = np.where(frac <= 0.5, base, base + 1)
    idx = (pp + off)[:, None] + np.arange(n)[None, :] - pad
    if attrs["exclude_outside"]:
        coeffs = np.where((idx < 0) | (idx >= in_w), 0.0, coeffs)
        tot = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(tot == 0, 1.0, tot)
    idx = np.clip(idx, 0, in_w - 1)
    # drop zero weights (merging taps reading the same index) to shorten the inner loops
    rows_i, rows_w = [], []
    for k in range(out_int):
        acc: dict[int, float] = {}
        for j in range(n):
            if coeffs[k, j] != 0:
                acc[int(idx[k, j])] = acc.get(int(idx[k, j]), 0.0) + float(coeffs[k, j])
        rows_i.append(list(acc))
        rows_w.append(list(acc.values()))
    m = max(1, max(len(r) for r in rows_i))
    I = np.zeros((out_int, m), np.int64)
    W = np.zeros((out_int, m))
    for k in range(out_int):
        I[k, :len(rows_i[k])] = rows_i[k]
        W[k, :len(rows_w[k])] = rows_w[k]
    if ext is not None and not ext.any():
        ext = None
    return _AxisTaps(I, W, ext)


class _ResizeBase(Operator):
    static_inputs = (1, 2, 3)

    def _legacy(self, v: NodeView) -> bool:
        return True

    def _attrs(self, v: NodeView) -> dict:
        legacy = self._legacy(v)
        return {
            "legacy": legacy,
            "mode": _s(v.attr("mode", "nearest")),
            "ctm": _s(v.attr("coordinate_transformation_mode", "half_pixel")),
            "nearest_mode": _s(v.attr("nearest_mode", "round_prefer_floor")),
            "cubic_a": float(v.attr("cubic_coeff_a", -0.75)),
            "exclude_outside": bool(v.attr("exclude_outside", 0)),
            "extrapolation_value": float(v.attr("extrapolation_value", 0.0)),
            "antialias": bool(v.attr("antialias", 0)) and not legacy,
            "policy": _s(v.attr("keep_aspect_ratio_policy", "stretch")),
        }

    def check(self, v: NodeView) -> str | None:
        a = self._attrs(v)
        allowed = FLOATS + INTS if a["mode"] == "nearest" else FLOATS
        if v.has_input(0) and v.input(0).dtype.name not in allowed:
            return (f"element type {v.input(0).dtype.name} is not supported for mode={a['mode']!r} "
                    f"(supported: {', '.join(allowed)})")
        modes = ("nearest", "linear") if a["legacy"] else ("nearest", "linear", "cubic")
        if a["mode"] not in modes:
            return f"mode={a['mode']!r} is not one of {', '.join(modes)}"
        if not a["legacy"]:
            if a["ctm"] not in COORD_MODES:
                return f"coordinate_transformation_mode={a['ctm']!r} is not supported"
            if a["nearest_mode"] not in NEAREST_MODES:
                return f"nearest_mode={a['nearest_mode']!r} is not supported"
            if a["policy"] not in ("stretch", "not_larger", "not_smaller"):
                return f"keep_aspect_ratio_policy={a['policy']!r} is not supported"
        return None

    # (scales, sizes, roi, axes) in terms of every axis of the input
    def _params(self, v: NodeView):
        raise NotImplementedError

    def _plan(self, v: NodeView) -> tuple[Shape, dict[int, _AxisTaps], dict]:
        x = v.input(0)
        r = x.rank
        attrs = self._attrs(v)
        scales, sizes, roi, axes = self._params(v)
        in_shape = list(x.shape)
        if scales is not None:
            if len(scales) != len(axes):
                raise v.fail(f"scales has {len(scales)} values for {len(axes)} axes")
            sc = [1.0] * r
            for k, a in enumerate(axes):
                sc[a] = float(scales[k])
            if any(s <= 0 for s in sc):
                raise v.fail(f"scales {list(map(float, scales))} must be positive")
            out: list[DimLike] = []
            for a in range(r):
                d = in_shape[a]
                if sc[a] == 1.0:
                    out.append(d)
                elif isinstance(d, Dim):
                    raise v.fail(f"axis {a} (size {d}) is resized but its size is symbolic; a "
                                 "resized axis must have a size known at compile time")
                else:
                    # the product in float32, as onnxruntime computes it (floor(5 * 1.4f) = 7)
                    out.append(math.floor(float(np.float32(sc[a]) * np.float32(d))))
        elif sizes is not None:
            if len(sizes) != len(axes):
                raise v.fail(f"sizes has {len(sizes)} values for {len(axes)} axes")
            out = list(in_shape)
            for k, a in enumerate(axes):
                out[a] = sizes[k] if isinstance(sizes[k], Dim) else int(sizes[k])
            sc = [1.0] * r
            for a in axes:
                if out[a] == in_shape[a]:
                    continue
                if isinstance(out[a], Dim) or isinstance(in_shape[a], Dim):
                    raise v.fail(f"axis {a} is resized from {in_shape[a]} to {out[a]}; a resized axis "
                                 "must have sizes known at compile time")
                if in_shape[a] == 0:
                    raise v.fail(f"axis {a} of size 0 cannot be resized to {out[a]}")
                sc[a] = out[a] / in_shape[a]
            if attrs["policy"] != "stretch" and not attrs["legacy"]:
                for a in axes:
                    if isinstance(in_shape[a], Dim):
                        raise v.fail(f"keep_aspect_ratio_policy needs static sizes on axis {a}")
                ratios = [int(out[a]) / int(in_shape[a]) for a in axes]
                s = min(ratios) if attrs["policy"] == "not_larger" else max(ratios)
                for a in axes:
                    sc[a] = s
                    out[a] = int(s * int(in_shape[a]) + 0.5)
        else:
            raise v.fail("one of scales and sizes must be given")
        if any(isinstance(d, int) and d < 0 for d in out):
            raise v.fail(f"negative output shape {out}")
        # before the per-axis index tables below, which are as long as the output axes
        check_shape(out, x.dtype.itemsize, f"{v.label}: output")
        full_roi = None
        if roi is not None and attrs["ctm"] == "tf_crop_and_resize" and not attrs["legacy"]:
            if len(roi) != 2 * len(axes):
                raise v.fail(f"roi has {len(roi)} values; {2 * len(axes)} expected")
            full_roi = [(0.0, 1.0)] * r
            for k, a in enumerate(axes):
                full_roi[a] = (float(roi[k]), float(roi[len(axes) + k]))
        taps: dict[int, _AxisTaps] = {}
        for a in range(r):
            rr = None if full_roi is None else full_roi[a]
            ident = (math.isclose(sc[a], 1.0) and out[a] == in_shape[a]
                     and (rr is None or (math.isclose(rr[0], 0.0) and math.isclose(rr[1], 1.0))))
            if ident:
                continue
            if isinstance(in_shape[a], Dim) or isinstance(out[a], Dim):
                raise v.fail(f"axis {a} (size {in_shape[a]}) is resized but its size is symbolic; a "
                             "resized axis must have a size known at compile time")
            if in_shape[a] == 0:
                raise v.fail(f"axis {a} of size 0 cannot be resized")
            if attrs["ctm"] == "tf_crop_and_resize" and not attrs["legacy"] and rr is None:
                raise v.fail("coordinate_transformation_mode tf_crop_and_resize needs the roi input")
            taps[a] = _axis_taps(int(in_shape[a]), int(out[a]), sc[a], rr or (0.0, 1.0), attrs)
        return tuple(out), taps, attrs

    def infer(self, v: NodeView) -> list[OutInfo]:
        out, _, _ = self._plan(v)
        return [OutInfo(v.input(0).dtype, out)]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        out, taps, attrs = self._plan(v)
        dt = x.dtype
        t = dt.cpp
        if numel(out) == 0:
            return ""
        if not taps:
            return (f"std::copy({e.inp(0)}, {e.inp(0)} + {e.size_in(0)}, {e.out()});")
        in_st = strides(x.shape)
        if all(tp.copy for tp in taps.values()):
            return _nearest_copy(e, x, out, taps, in_st)
        lines: list[str] = []
        # loop groups: runs of adjacent non-resized axes merge into one loop
        groups = _loop_groups(out, taps, in_st)
        tabs: dict[int, tuple[str, str, str | None]] = {}
        for a, tp in taps.items():
            st = in_st[a]
            if isinstance(st, int):
                offs = [str(int(i) * st) for i in tp.idx.reshape(-1)]
            else:
                offs = [str(int(i)) for i in tp.idx.reshape(-1)]
            on, ol = _table(e, I64, offs)
            lines.append(ol)
            wn = None
            if not tp.copy:
                wn, wl = _table(e, "double", [e.lit(float(w), FLOAT64) for w in tp.w.reshape(-1)])
                lines.append(wl)
            en = None
            if tp.ext is not None:
                en, el = _table(e, "bool", ["true" if b else "false" for b in tp.ext])
                lines.append(el)
            tabs[a] = (on, wn, en)
        oi = e.tmp("oi")
        lines.append(f"{I64} {oi} = 0;")
        base = "0"
        loopvars: dict[int, str] = {}
        depth = 0
        for kind, extent, st, a in groups:
            i = e.tmp("i")
            lines.append(f"for ({I64} {i} = 0; {i} < {e.dim(extent)}; ++{i}) {{")
            depth += 1
            if kind == "k":
                b = e.tmp("b")
                lines.append(f"const {I64} {b} = {base} + {i} * {e.dim(st)};")
                base = b
            else:
                loopvars[a] = i
        exts = [f"{tabs[a][2]}[{loopvars[a]}]" for a in taps if tabs[a][2] is not None]
        if exts:
            lines.append(f"if ({' || '.join(exts)}) {{ {e.out()}[{oi}++] = "
                         f"{e.lit(attrs['extrapolation_value'], dt)}; continue; }}")

        def off(a: int, j: str) -> str:
            st = in_st[a]
            o = f"{tabs[a][0]}[{j}]"
            return o if isinstance(st, int) else f"{o} * {e.dim(st)}"

        acc = e.tmp("acc")
        lines.append(f"double {acc} = 0.0;")
        q, w = base, "1.0"
        closing = 0
        for a, tp in taps.items():
            i = loopvars[a]
            if tp.n == 1:
                j = i
            else:
                j = e.tmp("j")
                tj = e.tmp("t")
                lines.append(f"for ({I64} {tj} = 0; {tj} < {tp.n}; ++{tj}) {{")
                lines.append(f"const {I64} {j} = {i} * {tp.n} + {tj};")
                closing += 1
            q2, w2 = e.tmp("q"), e.tmp("w")
            lines.append(f"const {I64} {q2} = {q} + {off(a, j)};")
            if tabs[a][1] is not None:
                lines.append(f"const double {w2} = {w} * {tabs[a][1]}[{j}];")
                w = w2
            q = q2
        lines.append(f"{acc} += {w} * double({e.inp(0)}[{q}]);")
        lines.append("}" * closing)
        lines.append(f"{e.out()}[{oi}++] = static_cast<{t}>({acc});")
        lines.append("}" * depth)
        return "\n".join(lines)


def _loop_groups(out: Shape, taps: dict, in_st) -> list[tuple[str, DimLike, DimLike, int | None]]:
    """The output's loop nest: (kind, extent, input stride, axis) per loop, "r" for a resized
    axis, "k" for a run of adjacent kept axes merged into one loop (axes of size 1 dropped)."""
    groups: list[tuple[str, DimLike, DimLike, int | None]] = []
    for a in range(len(out)):
        if a in taps:
            groups.append(("r", out[a], in_st[a], a))
        elif isinstance(out[a], int) and out[a] == 1:
            continue
        elif groups and groups[-1][0] == "k":
            _, ext_, _, _ = groups[-1]
            groups[-1] = ("k", ext_ * out[a], in_st[a], None)
        else:
            groups.append(("k", out[a], in_st[a], None))
    return groups


def _repeat_factor(tp: _AxisTaps, in_w: int, out_w: int) -> int | None:
    """s if the axis maps output j to input j // s (an integer upsampling, nearest), else None."""
    if in_w < 1 or out_w % in_w:
        return None
    s = out_w // in_w
    return s if np.array_equal(tp.idx[:, 0], np.arange(out_w) // s) else None


def _nearest_copy(e, x, out: Shape, taps: dict, in_st) -> str:
    """Resize where every output value is one input value (nearest): a loop nest over whole
    output rows. The innermost row is a memcpy (kept last axis), ``sofie_rt::repeat_row`` (an
    integer upsampling of the last axis: vector stores, the column duplication a shuffle) or a
    gather through the index table; at a resized outer axis, an output block of several rows whose
    source index equals the previous one's is a memcpy of the block just written (half the planes
    of a x2 upsampling of the last three axes), instead of one gathered scalar store per output
    value; a single row is rebuilt from the input (see the comment in the loop)."""
    t = x.dtype.cpp
    groups = _loop_groups(out, taps, in_st)
    # output elements per iteration of each loop
    osz: list[DimLike] = []
    acc: DimLike = 1
    for _, ext, _, _ in reversed(groups):
        osz.insert(0, acc)
        acc = acc * ext
    tabs: dict[int, str] = {}
    lines: list[str] = []
    for a, tp in taps.items():
        st = in_st[a]
        offs = [str(int(i) * st) if isinstance(st, int) else str(int(i)) for i in tp.idx[:, 0]]
        tabs[a], tl = _table(e, I64, offs)
        lines.append(tl)

    def off(a: int, j: str) -> str:
        st = in_st[a]
        return f"{tabs[a]}[{j}]" if isinstance(st, int) else f"{tabs[a]}[{j}] * {e.dim(st)}"

    src, dst = e.inp(0), e.out()
    b, o = "0", "0"
    depth = 0
    for kind, ext, st, a in groups[:-1]:
        i, b2, o2 = e.tmp("i"), e.tmp("b"), e.tmp("o")
        lines.append(f"for ({I64} {i} = 0; {i} < {e.dim(ext)}; ++{i}) {{")
        depth += 1
        if kind == "r":
            # the same source block as the previous iteration: copy the block just written. Not
            # for a block of one innermost run: the copy would read back stores still in flight,
            # and a load the store buffer cannot forward (the run's vector stores at an address
            # that is not 64-byte aligned, numpy's usual 16) waits for them to reach the cache:
            # Upsample x2 [N,16,8,8] took 5x longer at such addresses. That run is rebuilt from
            # the input instead, which costs what the copy did
            if depth < len(groups) - 1:
                lines.append(f"if ({i} > 0 && {tabs[a]}[{i}] == {tabs[a]}[{i} - 1]) {{ std::memcpy({dst} + {o} + "
                             f"{i} * {e.dim(osz[depth - 1])}, {dst} + {o} + ({i} - 1) * {e.dim(osz[depth - 1])}, "
                             f"{e.dim(osz[depth - 1])} * sizeof({t})); continue; }}")
            lines.append(f"const {I64} {b2} = {b} + {off(a, i)};")
        else:
            lines.append(f"const {I64} {b2} = {b} + {i} * {e.dim(st)};")
        lines.append(f"const {I64} {o2} = {o} + {i} * {e.dim(osz[depth - 1])};")
        b, o = b2, o2
    kind, ext, st, a = groups[-1]
    if kind == "k":
        # a kept innermost run: input stride 1 (any later axis has size 1)
        lines.append(f"std::memcpy({dst} + {o}, {src} + {b}, {e.dim(ext)} * sizeof({t}));")
    else:
        rep = _repeat_factor(taps[a], int(x.shape[a]), int(out[a])) if in_st[a] == 1 else None
        if rep is not None:
            lines.append(f"sofie_rt::repeat_row<{t}>({src} + {b}, {int(x.shape[a])}, {rep}, {dst} + {o});")
        else:
            j = e.tmp("j")
            lines.append(f"for ({I64} {j} = 0; {j} < {e.dim(ext)}; ++{j}) "
                         f"{dst}[{o} + {j}] = {src}[{b} + {off(a, j)}];")
    lines.append("}" * depth)
    return "\n".join(lines)


@register
class Resize(_ResizeBase):
    """ONNX Resize (opsets 10-19): nearest/linear/cubic, every coordinate transformation mode,
    nearest modes, cubic_coeff_a, exclude_outside, antialias, axes, keep_aspect_ratio_policy,
    scales or sizes; integer element types in nearest mode."""

    op_type = "Resize"

    def _legacy(self, v: NodeView) -> bool:
        return v.opset < 11

    def _params(self, v: NodeView):
        x = v.input(0)
        r = x.rank
        if v.opset < 11:
            scales = _static_array(v, 1, "the scales")
            if scales is None:
                raise v.fail("scales (input 1) is required")
            return np.asarray(scales, np.float64), None, None, list(range(r))
        roi = _static_array(v, 1, "the roi") if _s(v.attr("coordinate_transformation_mode", "")) \
            == "tf_crop_and_resize" else None
        scales = _static_array(v, 2, "the scales")
        sizes = _static_array(v, 3, "the sizes")
        if scales is not None and sizes is not None:
            raise v.fail("only one of scales and sizes may be given")
        axes_attr = v.attr("axes") if v.opset >= 18 else None
        if axes_attr is not None:
            axes = [normalize_axis(int(a), r, v) for a in axes_attr]
            if len(set(axes)) != len(axes):
                raise v.fail(f"repeated axes {list(axes_attr)}")
        else:
            axes = list(range(r))
        if scales is not None:
            scales = np.asarray(scales, np.float64)
        if sizes is not None and not isinstance(sizes, list):
            sizes = [int(s) for s in sizes]
        if roi is not None:
            roi = [float(z) for z in np.asarray(roi, np.float64)]
        return scales, sizes, roi, axes


@register
class Upsample(_ResizeBase):
    """ONNX Upsample (deprecated; opsets 7 and 9): nearest or linear with asymmetric coordinates."""

    op_type = "Upsample"
    static_inputs = (1,)

    def _params(self, v: NodeView):
        r = v.input(0).rank
        if v.has_input(1):
            scales = _static_array(v, 1, "the scales")
        else:
            scales = v.attr("scales")
        if scales is None:
            raise v.fail("scales are required")
        scales = np.asarray([float(s) for s in scales], np.float64)
        if any(s < 1 for s in scales):
            raise v.fail(f"Upsample scales {list(scales)} must be >= 1")
        return scales, None, None, list(range(r))

    def _attrs(self, v: NodeView) -> dict:
        a = super()._attrs(v)
        if a["mode"] == "bilinear":
            a["mode"] = "linear"
        return a


# -- CenterCropPad ------------------------------------------------------------------------------

@register
class CenterCropPad(Operator):
    """ONNX CenterCropPad: center crop or zero-pad each listed axis to the target shape."""

    op_type = "CenterCropPad"
    static_inputs = (1,)

    def _plan(self, v: NodeView):
        x = v.input(0)
        r = x.rank
        shape = _static_array(v, 1, "the target shape")
        shape = [] if shape is None else list(shape)
        axes_attr = v.attr("axes")
        axes = list(range(r)) if axes_attr is None else [normalize_axis(int(a), r, v) for a in axes_attr]
        if len(shape) != len(axes):
            raise v.fail(f"shape has {len(shape)} values for {len(axes)} axes")
        out = list(x.shape)
        crop = [0] * r  # input start
        pad = [0] * r   # output start
        ext = list(x.shape)  # copied extent
        for a, sh in zip(axes, shape):
            d = x.shape[a]
            if not isinstance(sh, Dim):
                sh = int(sh)
            if sh == d:
                continue
            if isinstance(sh, Dim) or isinstance(d, Dim):
                raise v.fail(f"axis {a} of size {d} is cropped/padded to {sh}; both must be known "
                             "at compile time")
            if sh < 0:
                raise v.fail(f"negative target size {sh}")
            out[a] = sh
            if sh < d:
                crop[a] = (d - sh) // 2
                ext[a] = sh
            else:
                pad[a] = (sh - d) // 2
                ext[a] = d
        return tuple(out), crop, pad, ext

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(v.input(0).dtype, self._plan(v)[0])]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        out, crop, pad, ext = self._plan(v)
        if numel(out) == 0:
            return ""
        lines = []
        if any(a != b for a, b in zip(ext, out)):
            lines.append(f"std::fill({e.out()}, {e.out()} + {e.size_out()}, {x.dtype.cpp}(0));")
        if numel(ext) == 0:
            return "\n".join(lines)
        ist, ost = strides(x.shape), strides(out)
        ib = str(sum(c * s for c, s in zip(crop, ist)))
        ob = str(sum(p * s for p, s in zip(pad, ost)))
        depth = 0
        for a in range(x.rank):
            i = e.tmp("i")
            lines.append(f"for ({I64} {i} = 0; {i} < {e.dim(ext[a])}; ++{i}) {{")
            depth += 1
            ib = f"{ib} + {i} * {e.dim(ist[a])}"
            ob = f"{ob} + {i} * {e.dim(ost[a])}"
        lines.append(f"{e.out()}[{ob}] = {e.inp(0)}[{ib}];")
        lines.append("}" * depth)
        return "\n".join(lines)


# -- Col2Im -------------------------------------------------------------------------------------

@register
class Col2Im(Operator):
    """ONNX Col2Im: N-D, strides, dilations, pads (sums overlapping blocks)."""

    op_type = "Col2Im"
    static_inputs = (1, 2)
    dtypes = FLOATS

    def _plan(self, v: NodeView):
        x = v.input(0)
        img = _ints(v, 1, "the image shape")
        blk = _ints(v, 2, "the block shape")
        n = len(img)
        if len(blk) != n:
            raise v.fail(f"image_shape {img} and block_shape {blk} differ in length")
        if x.rank != 3:
            raise v.fail(f"input must be 3-D [N, C*prod(block), L], got {x}")
        d = [int(z) for z in (v.attr("dilations") or [1] * n)]
        s = [int(z) for z in (v.attr("strides") or [1] * n)]
        p = [int(z) for z in (v.attr("pads") or [0] * (2 * n))]
        if len(d) != n or len(s) != n or len(p) != 2 * n:
            raise v.fail("dilations, strides and pads must have one value per image dimension")
        if any(z < 1 for z in d + s + blk) or any(z < 0 for z in p):
            raise v.fail("block_shape, dilations and strides must be positive, pads non-negative")
        k = int(np.prod(blk))
        cin = x.shape[1]
        if isinstance(cin, Dim):
            raise v.fail(f"the channel dimension {cin} must be known at compile time")
        if cin % k:
            raise v.fail(f"input dimension 1 ({cin}) is not a multiple of prod(block_shape) = {k}")
        nb = [(img[j] + p[j] + p[n + j] - (d[j] * (blk[j] - 1) + 1)) // s[j] + 1 for j in range(n)]
        if any(b < 1 for b in nb):
            raise v.fail(f"no complete block fits (blocks per dimension {nb})")
        L = x.shape[2]
        if isinstance(L, Dim) or int(L) != int(np.prod(nb)):
            raise v.fail(f"input dimension 2 ({L}) must equal the number of blocks {nb} = {int(np.prod(nb))}")
        return img, blk, d, s, p[:n], nb, cin // k

    def infer(self, v: NodeView) -> list[OutInfo]:
        img, _, _, _, _, _, c = self._plan(v)
        x = v.input(0)
        return [OutInfo(x.dtype, (x.shape[0], c, *img))]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        img, blk, d, s, pb, nb, c = self._plan(v)
        n = len(img)
        t = x.dtype.cpp
        isz, k, L = int(np.prod(img)), int(np.prod(blk)), int(np.prod(nb))
        pl, yc, xc = e.tmp("pl"), e.tmp("yc"), e.tmp("xc")
        # Each plane is cleared and summed while it is in cache. For every kernel offset, the
        # blocks whose position falls inside the image form a range known at compile time: the
        # innermost loop has no bounds test, and with stride 1 it adds a contiguous row. Up to
        # COL2IM_UNROLL offsets are written out one by one, so that every row has a length known
        # to the compiler (vectorised whole; a loop over offsets with bounds from a table left
        # rows of 8 scalar, and the test per element ran at 0.76x onnxruntime).
        ranges = []  # per dimension and offset: (lo, hi) blocks inside the image
        for j in range(n):
            rj = []
            for kj in range(blk[j]):
                # block b lands at b * s - pb + kj * d, inside [0, img) for b in [lo, hi)
                a = kj * d[j] - pb[j]
                lo = min(nb[j], max(0, -(a // s[j])))  # ceil(-a / s)
                rj.append((lo, max(lo, min(nb[j], (img[j] - 1 - a) // s[j] + 1))))
            ranges.append(rj)
        ystr = [int(np.prod(img[j + 1:])) for j in range(n)]
        bstr = [int(np.prod(nb[j + 1:])) for j in range(n)]
        lines: list[str] = []
        unroll = k <= COL2IM_UNROLL
        if not unroll:
            tabs = []
            for j in range(n):
                ln, ll = _table(e, I64, [str(lo) for lo, _ in ranges[j]])
                hn, hl = _table(e, I64, [str(hi) for _, hi in ranges[j]])
                lines += [ll, hl]
                tabs.append((ln, hn))
        lines += [f"for ({I64} {pl} = 0; {pl} < {e.dim(x.shape[0] * c)}; ++{pl}) {{",
                  f"{t} *{yc} = {e.out()} + {pl} * {I64}({isz});",
                  f"const {t} *{xc} = {e.inp(0)} + {pl} * {I64}({k * L});",
                  f"std::fill({yc}, {yc} + {isz}, {t}(0));"]
        bs = [e.tmp("b") for _ in range(n)]
        yr, sr = e.tmp("yr"), e.tmp("sr")

        def body(kk: list[str], bounds: list[tuple[str, str]]) -> list[str]:
            """The sum of one kernel offset (``kk``: its index per dimension) into the plane."""
            kflat = kk[0]
            for j in range(1, n):
                kflat = f"({kflat}) * {blk[j]} + {kk[j]}"
            out = [f"const {t} *{sr}0 = {xc} + ({kflat}) * {I64}({L});"]
            for j in range(n - 1):
                out.append(f"for ({I64} {bs[j]} = {bounds[j][0]}; {bs[j]} < {bounds[j][1]}; ++{bs[j]}) {{")
            ybase = " + ".join([f"({bs[j]} * {s[j]} - {pb[j]} + {kk[j]} * {d[j]}) * {I64}({ystr[j]})"
                                for j in range(n - 1)] + [f"{kk[-1]} * {d[-1]} - {pb[-1]}"])
            sbase = " + ".join([f"{bs[j]} * {I64}({bstr[j]})" for j in range(n - 1)] + ["0"])
            b = bs[-1]
            out += [f"{t} *__restrict {yr} = {yc} + {ybase};",
                    f"const {t} *__restrict {sr} = {sr}0 + {sbase};"]
            if s[-1] == 1:
                lo, hi = bounds[-1]
                out.append(f"sofie_rt::add_row<{t}>({yr} + {lo}, {sr} + {lo}, {hi} - {lo});")
            else:
                out.append(f"for ({I64} {b} = {bounds[-1][0]}; {b} < {bounds[-1][1]}; ++{b}) "
                           f"{yr}[{b} * {s[-1]}] += {sr}[{b}];")
            out.append("}" * (n - 1))
            return out

        # Offsets along the last dimension outermost: the rows of two offsets that differ only
        # there overlap shifted by a few values, and reading such a row right after storing the
        # other stalls on the failed store-to-load forwarding (1.7x slower on 2x2 blocks)
        if unroll:
            for kl, *kr in itertools.product(range(blk[-1]), *[range(b) for b in blk[:-1]]):
                kk = (*kr, kl)
                if any(ranges[j][kk[j]][0] == ranges[j][kk[j]][1] for j in range(n)):
                    continue  # no block of this offset lands inside the image
                lines.append("{")
                lines += body([str(z) for z in kk], [ranges[j][kk[j]] for j in range(n)])
                lines.append("}")
        else:
            ks = [e.tmp("k") for _ in range(n)]
            for j in [n - 1, *range(n - 1)]:
                lines.append(f"for ({I64} {ks[j]} = 0; {ks[j]} < {blk[j]}; ++{ks[j]}) {{")
            lines += body(ks, [(f"{tabs[j][0]}[{ks[j]}]", f"{tabs[j][1]}[{ks[j]}]") for j in range(n)])
            lines.append("}" * n)
        lines.append("}")
        return "\n".join(lines)


#: Col2Im writes the sum of each kernel offset out separately up to this many offsets (``Col2Im.emit``)
COL2IM_UNROLL = 32


# -- GridSample ---------------------------------------------------------------------------------

def _reflect_lambda(name: str, t: str) -> str:
    """A C++ lambda reflecting a coordinate into [lo, hi] (as onnx.reference / PyTorch)."""
    return (f"auto {name} = []({t} x, {t} lo, {t} hi) -> {t} {{\n"
            f"   const {t} rng = hi - lo;\n"
            f"   if (!(rng > {t}(0))) return lo;\n"
            f"   if (x < lo) {{\n"
            f"      const {t} dx = lo - x;\n"
            f"      const {I64} n = sofie_rt::float_to_int<{I64}>(dx / rng);\n"
            f"      const {t} r = dx - {t}(n) * rng;\n"
            f"      return n % 2 == 0 ? lo + r : hi - r;\n"
            f"   }}\n"
            f"   if (x > hi) {{\n"
            f"      const {t} dx = x - hi;\n"
            f"      const {I64} n = sofie_rt::float_to_int<{I64}>(dx / rng);\n"
            f"      const {t} r = dx - {t}(n) * rng;\n"
            f"      return n % 2 == 0 ? hi - r : lo + r;\n"
            f"   }}\n"
            f"   return x;\n"
            f"}};")


@register
class GridSample(Operator):
    """ONNX GridSample (opsets 16-22): nearest/linear/cubic (bilinear/bicubic), zeros/border/
    reflection padding, align_corners, any number of spatial dimensions."""

    op_type = "GridSample"
    dtypes = FLOATS

    def _mode(self, v: NodeView) -> str:
        m = _s(v.attr("mode", "bilinear" if v.opset < 20 else "linear"))
        return {"bilinear": "linear", "bicubic": "cubic"}.get(m, m)

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if self._mode(v) not in ("nearest", "linear", "cubic"):
            return f"mode={v.attr('mode')!r} is not supported"
        pm = _s(v.attr("padding_mode", "zeros"))
        if pm not in ("zeros", "border", "reflection"):
            return f"padding_mode={pm!r} is not supported"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x, g = v.input(0), v.input(1)
        r = x.rank - 2
        if r < 1 or g.rank != x.rank or g.shape[-1] != r:
            raise v.fail(f"input {x} and grid {g} must be [N, C, D1..Dr] and [N, O1..Or, {max(r, 1)}]")
        if x.dtype != g.dtype:
            raise v.fail("input and grid must have the same element type")
        return [OutInfo(x.dtype, (x.shape[0], x.shape[1], *g.shape[1:-1]))]

    def emit(self, v: NodeView, e) -> str:
        x, g = v.input(0), v.input(1)
        dt = x.dtype
        t = dt.cpp
        r = x.rank - 2
        mode = self._mode(v)
        pm = _s(v.attr("padding_mode", "zeros"))
        ac = bool(v.attr("align_corners", 0))
        dims = [e.dim(d) for d in x.shape[2:]]
        P = e.dim(numel(g.shape[1:-1]))
        S = e.dim(numel(x.shape[2:]))
        C = e.dim(x.shape[1])
        ntap = {"nearest": 1, "linear": 2, "cubic": 4}[mode]
        refl = e.tmp("refl")
        n, p, gp, c = e.tmp("n"), e.tmp("p"), e.tmp("gp"), e.tmp("c")
        lines = [_reflect_lambda(refl, t),
                 f"for ({I64} {n} = 0; {n} < {e.dim(x.shape[0])}; ++{n}) {{",
                 f"for ({I64} {p} = 0; {p} < {P}; ++{p}) {{",
                 f"const {t} *{gp} = {e.inp(1)} + ({n} * {P} + {p}) * {r};"]
        ix = [e.tmp("ix") for _ in range(r)]
        wx = [e.tmp("wx") for _ in range(r)]
        ok = [e.tmp("ok") for _ in range(r)]
        one = f"{t}(1)"
        for j in range(r):
            dj = f"{t}({dims[j]})"
            lo = f"{t}(0)" if ac else f"{t}(-0.5)"
            hi = f"({dj} - {t}(1))" if ac else f"({dj} - {t}(0.5))"
            xj = e.tmp("x")
            nv = f"{gp}[{r - 1 - j}]"
            if ac:
                lines.append(f"{t} {xj} = ({nv} + {one}) / {t}(2) * ({dj} - {one});")
            else:
                lines.append(f"{t} {xj} = (({nv} + {one}) * {dj} - {one}) / {t}(2);")
            if mode == "nearest":
                lines.append(f"{xj} = std::nearbyint({xj});")
            if pm == "border" and mode != "cubic":
                # (bicubic clamps each tap instead, as PyTorch and onnxruntime do)
                lines.append(f"if ({xj} < {lo} || {xj} > {hi}) {xj} = std::min(std::max({xj}, {t}(0)), "
                             f"{dj} - {one});")
            elif pm == "reflection":
                lines.append(f"if ({xj} < {lo} || {xj} > {hi}) {xj} = {refl}({xj}, {lo}, {hi});")
            lines.append(f"{I64} {ix[j]}[{ntap}]; {t} {wx[j]}[{ntap}]; bool {ok[j]}[{ntap}];")
            if mode == "nearest":
                lines.append(f"{ix[j]}[0] = sofie_rt::float_to_int<{I64}>({xj}); {wx[j]}[0] = {one};")
            else:
                x0, f = e.tmp("x0"), e.tmp("f")
                lines.append(f"const {t} {x0} = std::floor({xj});")
                lines.append(f"const {t} {f} = {xj} - {x0};")
                first = f"sofie_rt::float_to_int<{I64}>({x0})"
                if mode == "linear":
                    lines.append(f"{ix[j]}[0] = {first}; {ix[j]}[1] = {ix[j]}[0] + 1;")
                    lines.append(f"{wx[j]}[0] = {one} - {f}; {wx[j]}[1] = {f};")
                else:
                    A = f"{t}(-0.75)"
                    lines.append(f"{ix[j]}[0] = {first} - 1;")
                    lines.append(f"for (int q = 1; q < 4; ++q) {ix[j]}[q] = {ix[j]}[0] + q;")
                    s = f"({one} - {f})"
                    lines.append(
                        f"{wx[j]}[0] = (({A} * ({f} + {one}) - {t}(5) * {A}) * ({f} + {one}) + {t}(8) * {A}) "
                        f"* ({f} + {one}) - {t}(4) * {A};")
                    lines.append(f"{wx[j]}[1] = (({A} + {t}(2)) * {f} - ({A} + {t}(3))) * {f} * {f} + {one};")
                    lines.append(f"{wx[j]}[2] = (({A} + {t}(2)) * {s} - ({A} + {t}(3))) * {s} * {s} + {one};")
                    lines.append(
                        f"{wx[j]}[3] = (({A} * ({t}(2) - {f}) - {t}(5) * {A}) * ({t}(2) - {f}) + {t}(8) * {A}) "
                        f"* ({t}(2) - {f}) - {t}(4) * {A};")
            q = e.tmp("q")
            lines.append(f"for (int {q} = 0; {q} < {ntap}; ++{q}) {{")
            iq = f"{ix[j]}[{q}]"
            if pm == "zeros":
                lines.append(f"{ok[j]}[{q}] = {iq} >= 0 && {iq} < {dims[j]};")
            else:
                if pm == "reflection":
                    lines.append(f"{iq} = sofie_rt::float_to_int<{I64}>({refl}({t}({iq}), {lo}, {hi}));")
                lines.append(f"{iq} = std::min<{I64}>(std::max<{I64}>({iq}, 0), {dims[j]} - 1);")
                lines.append(f"{ok[j]}[{q}] = true;")
            lines.append("}")
        # gather per channel
        xc, yp = e.tmp("xc"), e.tmp("yp")
        lines.append(f"{t} *{yp} = {e.out()} + {n} * {C} * {P} + {p};")
        lines.append(f"for ({I64} {c} = 0; {c} < {C}; ++{c}) {{")
        lines.append(f"const {t} *{xc} = {e.inp(0)} + ({n} * {C} + {c}) * {S};")
        if mode == "nearest":
            conds = " && ".join(f"{ok[j]}[0]" for j in range(r))
            flat = f"{ix[0]}[0]"
            for j in range(1, r):
                flat = f"({flat}) * {dims[j]} + {ix[j]}[0]"
            lines.append(f"{yp}[{c} * {P}] = ({conds}) ? {xc}[{flat}] : {t}(0);")
        else:
            # interpolate the innermost dimension first, as onnx.reference does (nested 1-D passes)
            qs = [e.tmp("u") for _ in range(r)]
            accs = [e.tmp("a") for _ in range(r)]
            lines.append(f"{t} {accs[0]} = {t}(0);")
            for j in range(r):
                lines.append(f"for (int {qs[j]} = 0; {qs[j]} < {ntap}; ++{qs[j]}) {{")
                if j + 1 < r:
                    lines.append(f"{t} {accs[j + 1]} = {t}(0);")
            flat = f"{ix[0]}[{qs[0]}]"
            for j in range(1, r):
                flat = f"({flat}) * {dims[j]} + {ix[j]}[{qs[j]}]"
            conds = " && ".join(f"{ok[j]}[{qs[j]}]" for j in range(r))
            lines.append(f"if ({conds}) {accs[r - 1]} += {wx[r - 1]}[{qs[r - 1]}] * {xc}[{flat}];")
            for j in reversed(range(r)):
                lines.append("}")
                if j > 0:
                    lines.append(f"{accs[j - 1]} += {wx[j - 1]}[{qs[j - 1]}] * {accs[j]};")
            lines.append(f"{yp}[{c} * {P}] = {accs[0]};")
        lines.append("}")
        lines.append("}}")
        return "\n".join(lines)


# -- AffineGrid ---------------------------------------------------------------------------------

@register
class AffineGrid(Operator):
    """ONNX AffineGrid: 2-D ([N,2,3] theta) and 3-D ([N,3,4] theta) sampling grids, align_corners."""

    op_type = "AffineGrid"
    static_inputs = (1,)
    dtypes = FLOATS

    def _size(self, v: NodeView) -> list[DimLike]:
        size = _static_array(v, 1, "the output size")
        if size is None or len(size) not in (4, 5):
            raise v.fail("size must be [N, C, H, W] or [N, C, D, H, W]")
        size = [d if isinstance(d, Dim) else int(d) for d in size]
        if any(isinstance(d, Dim) for d in size[2:]):
            raise v.fail(f"the spatial sizes {size[2:]} must be known at compile time")
        return size

    def infer(self, v: NodeView) -> list[OutInfo]:
        size = self._size(v)
        th = v.input(0)
        r = len(size) - 2
        if th.rank != 3 or th.shape[1:] != (r, r + 1):
            raise v.fail(f"theta {th} must be [N, {r}, {r + 1}] for a {r}-D size")
        return [OutInfo(th.dtype, (th.shape[0], *size[2:], r))]

    def emit(self, v: NodeView, e) -> str:
        size = self._size(v)
        th = v.input(0)
        t = th.dtype.cpp
        sp = [int(d) for d in size[2:]]
        r = len(sp)
        ac = bool(v.attr("align_corners", 0))
        lines = []
        tabs = []
        for d in sp:
            if ac:
                step = 2.0 / (d - 1) if d > 1 else 0.0
                vals = [-1.0 + i * step for i in range(d)]
            else:
                step = 2.0 / d
                vals = [-1.0 + step / 2 + i * step for i in range(d)]
            name, line = _table(e, "double", [e.lit(z, FLOAT64) for z in vals])
            lines.append(line)
            tabs.append(name)
        n, tp, yp = e.tmp("n"), e.tmp("th"), e.tmp("yp")
        total = int(np.prod(sp))
        lines += [f"for ({I64} {n} = 0; {n} < {e.dim(th.shape[0])}; ++{n}) {{",
                  f"const {t} *{tp} = {e.inp(0)} + {n} * {r * (r + 1)};",
                  f"{t} *{yp} = {e.out()} + {n} * {I64}({total * r});"]
        idx = [e.tmp("i") for _ in range(r)]
        for j in range(r):
            lines.append(f"for ({I64} {idx[j]} = 0; {idx[j]} < {sp[j]}; ++{idx[j]}) {{")
        # homogeneous coordinates ordered (x, y[, z], 1): x is the last spatial axis
        coords = [f"{tabs[j]}[{idx[j]}]" for j in reversed(range(r))]
        for k in range(r):
            terms = [f"double({tp}[{k * (r + 1) + m}]) * {coords[m]}" for m in range(r)]
            terms.append(f"double({tp}[{k * (r + 1) + r}])")
            lines.append(f"*{yp}++ = static_cast<{t}>({' + '.join(terms)});")
        lines.append("}" * (r + 1))
        return "\n".join(lines)


# -- RoiAlign -----------------------------------------------------------------------------------

@register
class RoiAlign(Operator):
    """ONNX RoiAlign: avg/max modes, half_pixel and output_half_pixel, sampling_ratio (adaptive
    when 0), spatial_scale; batch indices are checked at run time."""

    op_type = "RoiAlign"

    def check(self, v: NodeView) -> str | None:
        reason = _check_float_inputs(v, (0, 1)) or _check_float_inputs(v, (2,), ("int64", "int32"))
        if reason:
            return reason
        mode = _s(v.attr("mode", "avg"))
        if mode not in ("avg", "max"):
            return f"mode={mode!r} is not supported"
        ctm = _s(v.attr("coordinate_transformation_mode", "half_pixel"))
        if ctm not in ("half_pixel", "output_half_pixel"):
            return f"coordinate_transformation_mode={ctm!r} is not supported"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x, rois, bi = v.input(0), v.input(1), v.input(2)
        if x.rank != 4 or rois.rank != 2 or bi.rank != 1:
            raise v.fail(f"expected X [N,C,H,W], rois [R,4], batch_indices [R]; got {x}, {rois}, {bi}")
        if isinstance(rois.shape[1], int) and rois.shape[1] != 4:
            raise v.fail(f"rois {rois} must have 4 columns")
        if x.dtype != rois.dtype:
            raise v.fail("X and rois must have the same element type")
        oh, ow = int(v.attr("output_height", 1)), int(v.attr("output_width", 1))
        if oh < 1 or ow < 1:
            raise v.fail("output_height and output_width must be positive")
        return [OutInfo(x.dtype, (bi.shape[0], x.shape[1], oh, ow))]

    def emit(self, v: NodeView, e) -> str:
        x, bi = v.input(0), v.input(2)
        dt = x.dtype
        t = dt.cpp
        oh, ow = int(v.attr("output_height", 1)), int(v.attr("output_width", 1))
        sr = int(v.attr("sampling_ratio", 0))
        ss = float(v.attr("spatial_scale", 1.0))
        half = v.opset >= 16 and _s(v.attr("coordinate_transformation_mode", "half_pixel")) == "half_pixel"
        mx = _s(v.attr("mode", "avg")) == "max"
        N, C, H, W = (e.dim(d) for d in x.shape)
        R = e.dim(bi.shape[0])
        rr, b, rp = e.tmp("r"), e.tmp("b"), e.tmp("rp")
        L = e.lit
        lines = [
            f"const {I64} H_ = {H}, W_ = {W}, C_ = {C};",
            f"for ({I64} {rr} = 0; {rr} < {R}; ++{rr}) {{",
            f"const {I64} {b} = static_cast<{I64}>({e.inp(2)}[{rr}]);",
            f"if ({b} < 0 || {b} >= {N}) {e.fail('batch index out of range')}",
            f"const {t} *{rp} = {e.inp(1)} + {rr} * 4;",
            f"const {t} off_ = {L(0.5 if half else 0.0, dt)};",
            f"const {t} sw_ = {rp}[0] * {L(ss, dt)} - off_, sh_ = {rp}[1] * {L(ss, dt)} - off_;",
            f"const {t} ew_ = {rp}[2] * {L(ss, dt)} - off_, eh_ = {rp}[3] * {L(ss, dt)} - off_;",
            f"{t} rw_ = ew_ - sw_, rh_ = eh_ - sh_;",
        ]
        if not half:
            lines.append(f"rw_ = std::max(rw_, {t}(1)); rh_ = std::max(rh_, {t}(1));")
        lines += [
            f"const {t} bh_ = rh_ / {t}({oh}), bw_ = rw_ / {t}({ow});",
            f"const {I64} gh_ = {sr if sr > 0 else f'std::min<{I64}>(sofie_rt::float_to_int<{I64}>(std::ceil(rh_ / {t}({oh}))), 1 << 20)'};",
            f"const {I64} gw_ = {sr if sr > 0 else f'std::min<{I64}>(sofie_rt::float_to_int<{I64}>(std::ceil(rw_ / {t}({ow}))), 1 << 20)'};",
            f"const {t} cnt_ = {t}(std::max<{I64}>(gh_ * gw_, 1));",
            f"{t} *yr_ = {e.out()} + {rr} * C_ * {oh * ow};",
            f"std::fill(yr_, yr_ + C_ * {oh * ow}, {t}(0));",
            f"const {t} *xb_ = {e.inp(0)} + {b} * C_ * H_ * W_;",
            f"for ({I64} ph_ = 0; ph_ < {oh}; ++ph_)",
            f"for ({I64} pw_ = 0; pw_ < {ow}; ++pw_) {{",
            f"for ({I64} iy_ = 0; iy_ < gh_; ++iy_) {{",
            f"const {t} yy_ = sh_ + {t}(ph_) * bh_ + ({t}(iy_) + {t}(0.5)) * bh_ / {t}(gh_);",
            f"for ({I64} ix_ = 0; ix_ < gw_; ++ix_) {{",
            f"const {t} xx_ = sw_ + {t}(pw_) * bw_ + ({t}(ix_) + {t}(0.5)) * bw_ / {t}(gw_);",
            f"{I64} p1 = 0, p2 = 0, p3 = 0, p4 = 0; {t} w1 = 0, w2 = 0, w3 = 0, w4 = 0;",
            f"if (H_ > 0 && W_ > 0 && !(yy_ < {t}(-1) || yy_ > {t}(H_) || xx_ < {t}(-1) || xx_ > {t}(W_))) {{",
            f"   {t} y = std::max(yy_, {t}(0)), x = std::max(xx_, {t}(0));",
            f"   {I64} yl = sofie_rt::float_to_int<{I64}>(y), xl = sofie_rt::float_to_int<{I64}>(x), yh, xh;",
            f"   if (yl >= H_ - 1) {{ yh = yl = H_ - 1; y = {t}(yl); }} else yh = yl + 1;",
            f"   if (xl >= W_ - 1) {{ xh = xl = W_ - 1; x = {t}(xl); }} else xh = xl + 1;",
            f"   const {t} ly = y - {t}(yl), lx = x - {t}(xl), hy = {t}(1) - ly, hx = {t}(1) - lx;",
            "   w1 = hy * hx; w2 = hy * lx; w3 = ly * hx; w4 = ly * lx;",
            "   p1 = yl * W_ + xl; p2 = yl * W_ + xh; p3 = yh * W_ + xl; p4 = yh * W_ + xh;",
            "}",
            "const bool first_ = iy_ == 0 && ix_ == 0;" if mx else "",
            f"for ({I64} c_ = 0; c_ < C_; ++c_) {{",
            f"const {t} *xc_ = xb_ + c_ * H_ * W_;",
            f"{t} &o_ = yr_[(c_ * {oh} + ph_) * {ow} + pw_];",
        ]
        if mx:
            lines += [f"const {t} v_ = std::max(std::max(w1 * xc_[p1], w2 * xc_[p2]), "
                      f"std::max(w3 * xc_[p3], w4 * xc_[p4]));",
                      "o_ = first_ ? v_ : std::max(o_, v_);"]
        else:
            lines.append("o_ += w1 * xc_[p1] + w2 * xc_[p2] + w3 * xc_[p3] + w4 * xc_[p4];")
        lines.append("}}}")  # channels, ix, iy
        if not mx:
            lines.append(f"for ({I64} c_ = 0; c_ < C_; ++c_) yr_[(c_ * {oh} + ph_) * {ow} + pw_] /= cnt_;")
        lines.append("}")  # ph/pw
        lines.append("}")  # rois
        # names ending in _ are local to this block (the emitter wraps every node in braces)
        return "\n".join(lines)


# -- MaxUnpool ----------------------------------------------------------------------------------

@register
class MaxUnpool(Operator):
    """ONNX MaxUnpool: scatters X at the (checked) flat Indices of a MaxPool; output_shape pads."""

    op_type = "MaxUnpool"
    static_inputs = (2,)

    def check(self, v: NodeView) -> str | None:
        return _check_float_inputs(v, (0,), FLOATS + INTS) or _check_float_inputs(v, (1,), ("int64",))

    def _plan(self, v: NodeView) -> tuple[Shape, Shape]:
        x = v.input(0)
        if x.rank < 3:
            raise v.fail(f"input must be [N, C, spatial...], got {x}")
        n = x.rank - 2
        ks = v.attr("kernel_shape")
        if ks is None or len(ks) != n:
            raise v.fail(f"kernel_shape must have {n} values")
        ks = [int(z) for z in ks]
        st = [int(z) for z in (v.attr("strides") or [1] * n)]
        pads = [int(z) for z in (v.attr("pads") or [0] * (2 * n))]
        if len(st) != n or len(pads) != 2 * n:
            raise v.fail("strides and pads must have one value per spatial dimension")
        inferred: list[DimLike] = [x.shape[0], x.shape[1]]
        for j in range(n):
            inferred.append((x.shape[2 + j] - 1) * st[j] - (pads[j] + pads[n + j]) + ks[j])
        if v.input(1).shape != x.shape:
            raise v.fail(f"indices {v.input(1)} must have the shape of X {x}")
        out: list[DimLike] = list(inferred)
        if v.has_input(2):
            osh = _static_array(v, 2, "the output shape")
            if osh is not None:
                if len(osh) != x.rank:
                    raise v.fail(f"output_shape {list(osh)} must have {x.rank} values")
                out = [d if isinstance(d, Dim) else int(d) for d in osh]
                for a, (o, i) in enumerate(zip(out, inferred)):
                    if o == i:
                        continue
                    if isinstance(o, Dim) or isinstance(i, Dim) or o < i:
                        raise v.fail(f"output_shape {out} is smaller than the unpooled shape {inferred} "
                                     f"on axis {a}")
        return tuple(inferred), tuple(out)

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(v.input(0).dtype, self._plan(v)[1])]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        inferred, out = self._plan(v)
        total = e.dim(numel(inferred))
        k, ix, bad = e.tmp("k"), e.tmp("ix"), e.tmp("bad")
        # The scatter loop has no exit in it: an out-of-range index is recorded and redirected
        # to element 0 (a select, not a branch), and the node fails after the loop.
        bi = e.tmp("bi")
        lines = []
        if tuple(inferred) == tuple(out) and x.rank > 2:
            lines.append(self._by_plane(v, e, inferred, total))
        lines += [f"bool {bad} = false;",
                 f"std::fill({e.out()}, {e.out()} + {e.size_out()}, {x.dtype.cpp}(0));",
                 f"for ({I64} {k} = 0; {k} < {e.size_in(0)}; ++{k}) {{",
                 f"const {I64} {bi} = {e.inp(1)}[{k}];",
                 f"const bool {bad}k_ = static_cast<std::uint64_t>({bi}) >= static_cast<std::uint64_t>({total});",
                 f"{bad} |= {bad}k_;",
                 f"const {I64} {ix} = {bad}k_ ? {I64}(0) : {bi};"]
        if tuple(inferred) == tuple(out):
            lines.append(f"{e.out()}[{ix}] = {e.inp(0)}[{k}];")
        else:
            rem, o = e.tmp("rem"), e.tmp("o")
            ost = strides(out)
            lines.append(f"{I64} {rem} = {ix}, {o} = 0;")
            for a in reversed(range(len(out))):
                if a == 0:
                    lines.append(f"{o} += {rem} * {e.dim(ost[0])};")
                else:
                    lines.append(f"{o} += ({rem} % {e.dim(inferred[a])}) * {e.dim(ost[a])}; "
                                 f"{rem} /= {e.dim(inferred[a])};")
            lines.append(f"{e.out()}[{o}] = {e.inp(0)}[{k}];")
        lines.append("}")
        lines.append(f"if ({bad}) {e.fail('index out of range')}")
        if tuple(inferred) == tuple(out) and x.rank > 2:
            lines.append("}")
        return "\n".join(lines)

    @staticmethod
    def _by_plane(v: NodeView, e, shape, total: str) -> str:
        """The opening of the plane-by-plane scatter: each (image, channel) plane of the output is
        cleared, then the plane's input values are written, while it is in cache (instead of
        clearing the whole output, then scattering into it: 0.84-0.96x onnxruntime at batch 256).
        Equivalent while no index points into a later plane (whose clearing would erase the
        value; MaxPool's indices stay in their own plane); if one does, or one is out of range,
        the code that follows (the whole output cleared, then scattered) runs instead. A plane's
        indices are checked before its scatter, so the scatter loop is loads and a store only
        (MaxUnpool 2x2 [N,16,8,8]: 0.64 -> 0.47 us at batch 1, 301 -> 157 us at 256)."""
        x = v.input(0)
        t = x.dtype.cpp
        op = e.dim(numel(shape[2:]))
        ip = e.dim(numel(x.shape[2:]))
        pl, k, yp, ib, later, bad = e.tmp("pl"), e.tmp("k"), e.tmp("yp"), e.tmp("ib"), e.tmp("later"), e.tmp("bad")
        return "\n".join([
            f"bool {later} = false;",
            f"for ({I64} {pl} = 0; {pl} < {e.dim(numel(x.shape[:2]))}; ++{pl}) {{",
            f"{t} *{yp} = {e.out()} + {pl} * {op};",
            f"std::fill({yp}, {yp} + {op}, {t}(0));",
            f"const std::uint64_t {later}end_ = static_cast<std::uint64_t>(({pl} + 1) * {op});",
            f"const {I64} *{ib} = {e.inp(1)} + {pl} * {ip};",
            # the plane's indices checked first, all at once (a vector reduction), so that the
            # scatter is a plain load-load-store loop: a select and a flag in it took 2x longer
            f"bool {bad} = false;",
            f"for ({I64} {k} = 0; {k} < {ip}; ++{k}) {bad} |= static_cast<std::uint64_t>({ib}[{k}]) >= {later}end_;",
            f"if ({bad}) {{ {later} = true; break; }}",
            f"const {t} *{ib}x_ = {e.inp(0)} + {pl} * {ip};",
            f"for ({I64} {k} = 0; {k} < {ip}; ++{k}) {e.out()}[{ib}[{k}]] = {ib}x_[{k}];",
            "}",
            f"if ({later}) {{  // an index into a later plane or out of range: clear and scatter the whole output",
        ])


# -- LRN ----------------------------------------------------------------------------------------

@register
class LRN(Operator):
    """ONNX LRN: local response normalisation across channels (any rank >= 3)."""

    op_type = "LRN"
    dtypes = FLOATS

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        if v.attr("size") is None or int(v.attr("size")) < 1:
            return "the size attribute is required and must be positive"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        if x.rank < 3:
            raise v.fail(f"input must be [N, C, spatial...], got {x}")
        return [OutInfo(x.dtype, x.shape)]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        dt: DType = x.dtype
        t = dt.cpp
        size = int(v.attr("size"))
        alpha = float(v.attr("alpha", 1e-4))
        beta = float(v.attr("beta", 0.75))
        bias = float(v.attr("bias", 1.0))
        c1 = (size - 1) // 2
        c2 = -(-(size - 1) // 2) + 1
        C = e.dim(x.shape[1])
        S = e.dim(numel(x.shape[2:]))
        n, c, s, j, d = e.tmp("n"), e.tmp("c"), e.tmp("s"), e.tmp("j"), e.tmp("d")
        xp, yp, xj = e.tmp("xp"), e.tmp("yp"), e.tmp("xj")
        # The window's sum of squares is accumulated in the output row, one channel at a time,
        # so every loop runs over the contiguous spatial axis and vectorises (the same
        # summation order as a per-element window loop).
        if dt.name in ("float32", "float64") and beta == 0.75:
            # d^-0.75 as 1 / (sqrt(d) * sqrt(sqrt(d))): LRN's usual beta, three vector square
            # roots instead of exp and log (NaN and d < 0 give NaN, as pow does)
            scale = f"(std::sqrt({d}) * std::sqrt(std::sqrt({d})))"
        else:
            scale = pow_expr(d, "", dt, float(beta))
        return "\n".join([
            f"for ({I64} {n} = 0; {n} < {e.dim(x.shape[0])}; ++{n}) {{",
            f"const {t} *{xp} = {e.inp(0)} + {n} * {C} * {S};",
            f"for ({I64} {c} = 0; {c} < {C}; ++{c}) {{",
            f"const {I64} lo_ = std::max<{I64}>(0, {c} - {c1}), hi_ = std::min<{I64}>({C}, {c} + {c2});",
            f"{t} *{yp} = {e.out()} + ({n} * {C} + {c}) * {S};",
            f"for ({I64} {s} = 0; {s} < {S}; ++{s}) {yp}[{s}] = {t}(0);",
            f"for ({I64} {j} = lo_; {j} < hi_; ++{j}) {{",
            f"const {t} *{xj} = {xp} + {j} * {S};",
            f"for ({I64} {s} = 0; {s} < {S}; ++{s}) {yp}[{s}] += {xj}[{s}] * {xj}[{s}];",
            "}",
            f"for ({I64} {s} = 0; {s} < {S}; ++{s}) {{",
            f"const {t} {d} = {e.lit(bias, dt)} + {e.lit(alpha / size, dt)} * {yp}[{s}];",
            f"{yp}[{s}] = {xp}[{c} * {S} + {s}] / {scale};",
            "}}}",
        ])


@register
class NonMaxSuppression(Operator):
    """ONNX NonMaxSuppression: per batch and class, boxes in decreasing score order (ties: lower
    index first) kept unless their IoU with a kept box exceeds the threshold, at most
    ``max_output_boxes_per_class`` (0 or absent: none), above ``score_threshold`` if given;
    corner or center boxes. The number of selected boxes is a data-dependent size, bounded by
    batches x classes x boxes for memory planning."""

    op_type = "NonMaxSuppression"

    @staticmethod
    def _symbol(v: NodeView) -> str:
        return "nnms_" + re.sub(r"[^A-Za-z0-9_]", "_", v.node.outputs[0])

    def check(self, v: NodeView) -> str | None:
        if v.input(0).dtype.name not in ("float32", "float64") or v.input(1).dtype != v.input(0).dtype:
            return "boxes and scores must both be float32 or float64"
        if v.has_input(2) and v.input(2).dtype.name != "int64":
            return "max_output_boxes_per_class must be int64"
        if int(v.attr("center_point_box", 0)) not in (0, 1):
            return f"center_point_box={v.attr('center_point_box')} is not 0 or 1"
        return None

    def _dims(self, v: NodeView):
        boxes, scores = v.input(0), v.input(1)
        if boxes.rank != 3 or scores.rank != 3 or (isinstance(boxes.shape[2], int) and boxes.shape[2] != 4):
            raise v.fail(f"boxes {boxes} must be [batches, boxes, 4] and scores {scores} [batches, classes, boxes]")
        return boxes.shape[0], scores.shape[1], boxes.shape[1]

    def infer(self, v: NodeView) -> list[OutInfo]:
        self._dims(v)
        return [OutInfo(INT64, (Dim.symbol(self._symbol(v)), 3))]

    def data_dependent(self, v: NodeView) -> dict:
        b, c, n = self._dims(v)
        return {self._symbol(v): b * c * n}

    def workspace(self, v: NodeView):
        n = self._dims(v)[2]
        wide = v.input(0).dtype.itemsize // 4  # candidate keys: 8 bytes (float32 scores) or 16
        return [(INT64, n * wide), (INT64, n), (FLOAT64, n * 5)]

    def emit(self, v: NodeView, e) -> str:
        nb, nc, nn = (e.dim(d) for d in self._dims(v))
        T = v.input(0).dtype.cpp
        bx, sc = e.inp(0), e.inp(1)
        cand, sel, box = e.ws(0), e.ws(1), e.ws(2)

        def scalar(k: int, default: str) -> str:
            if not v.has_input(k):
                return default
            return f"({e.size_in(k)} > 0 ? {e.inp(k)}[0] : {default})"

        has_st = f"({e.size_in(4)} > 0)" if v.has_input(4) else "false"
        b, c, i, j, q = (e.tmp(s) for s in ("b", "c", "i", "j", "q"))
        total, ncand, nsel, keep = e.tmp("total"), e.tmp("ncand"), e.tmp("nsel"), e.tmp("keep")
        corners = int(v.attr("center_point_box", 0)) == 0
        if corners:
            extent = ("const double y0 = std::min(p[0], p[2]), y1 = std::max(p[0], p[2]), "
                      "x0 = std::min(p[1], p[3]), x1 = std::max(p[1], p[3]);")
        else:
            extent = ("const double x0 = p[0] - p[2] / 2, x1 = p[0] + p[2] / 2, "
                      "y0 = p[1] - p[3] / 2, y1 = p[1] + p[3] / 2;")
        lines = [
            f"const std::int64_t maxo = std::max<std::int64_t>(0, {scalar(2, '0')});",
            f"const double iou_t = double({scalar(3, '0')});",
            f"const bool has_st = {has_st};",
            f"const double st = {f'has_st ? double({e.inp(4)}[0]) : 0.0' if v.has_input(4) else '0.0'};",
            "(void)st;",
            # one integer key per box, (descending score order, NaN last) above (index), all ones
            # for a box under the score threshold: the smallest key is the next box in ONNX
            # order. The first 32 are found by branch-free scans (what a kept-10 selection needs,
            # no mispredicted comparisons), then a min-heap of the rest (many boxes visited):
            # neither sorts every candidate through a NaN-aware comparator
            f"using B = decltype(sofie_rt::topk_key({T}()));",
            "using K = typename std::conditional<sizeof(B) == 4, std::uint64_t, unsigned __int128>::type;",
            "constexpr int shift = int(sizeof(B)) * 8;",
            f"K *keys = reinterpret_cast<K *>({cand});",
            f"if (sizeof(B) == 4 && {nn} >= 0xFFFFFFFFll) {e.fail('more than 2^32 - 2 boxes')}",
            # box extents (x0, y0, x1, y1) and areas, once per batch entry
            f"double *ex = {box};",
            "auto suppress = [&](std::int64_t i1, std::int64_t i2) {",
            "   const double *a = ex + i1 * 5, *z = ex + i2 * 5;",
            "   const double ix0 = std::max(a[0], z[0]), ix1 = std::min(a[2], z[2]);",
            "   if (!(ix1 > ix0)) return false;",
            "   const double iy0 = std::max(a[1], z[1]), iy1 = std::min(a[3], z[3]);",
            "   if (!(iy1 > iy0)) return false;",
            "   const double inter = (ix1 - ix0) * (iy1 - iy0);",
            "   const double a1 = a[4], a2 = z[4];",
            "   const double uni = a1 + a2 - inter;",
            "   if (!(inter > 0) || !(a1 > 0) || !(a2 > 0) || !(uni > 0)) return false;",
            "   return inter / uni > iou_t;",
            "};",
            f"std::int64_t {total} = 0;",
            f"for (std::int64_t {b} = 0; {b} < {nb}; ++{b}) {{",
            f"for (std::int64_t {i} = 0; {i} < {nn}; ++{i}) {{",
            f"   const {T} *p = {bx} + ({b} * {nn} + {i}) * 4;",
            f"   {extent}",
            f"   double *r = ex + {i} * 5;",
            "   r[0] = x0; r[1] = y0; r[2] = x1; r[3] = y1; r[4] = (x1 - x0) * (y1 - y0);",
            "}",
            f"for (std::int64_t {c} = 0; {c} < {nc}; ++{c}) {{",
            f"   const {T} *s = {sc} + ({b} * {nc} + {c}) * {nn};",
            f"   for (std::int64_t {i} = 0; {i} < {nn}; ++{i}) {{",
            f"      const B d = s[{i}] != s[{i}] ? B(~B(0)) : B(~sofie_rt::topk_key(s[{i}]));",
            f"      keys[{i}] = (!has_st || double(s[{i}]) > st) ? (K(d) << shift) | K({i}) : ~K(0);",
            "   }",
            f"   std::int64_t {nsel} = 0, {ncand} = 0, pops = 0;",
            "   bool heap = false;",
            f"   while ({nsel} < maxo) {{",
            "      K m = ~K(0);",
            "      if (!heap) {",
            f"         for (std::int64_t {i} = 0; {i} < {nn}; ++{i}) m = keys[{i}] < m ? keys[{i}] : m;",
            "         if (m == ~K(0)) break;",
            "         keys[std::int64_t(m & ((K(1) << shift) - 1))] = ~K(0);",
            "         if (++pops == 32) {",
            f"            for (std::int64_t {i} = 0; {i} < {nn}; ++{i}) if (keys[{i}] != ~K(0)) keys[{ncand}++] = keys[{i}];",
            f"            std::make_heap(keys, keys + {ncand}, std::greater<K>());",
            "            heap = true;",
            "         }",
            "      } else {",
            f"         if ({ncand} == 0) break;",
            f"         std::pop_heap(keys, keys + {ncand}, std::greater<K>());",
            f"         m = keys[--{ncand}];",
            "      }",
            f"      const std::int64_t {q} = std::int64_t(m & ((K(1) << shift) - 1));",
            f"      bool {keep} = true;",
            f"      for (std::int64_t {j} = 0; {j} < {nsel}; ++{j}) if (suppress({q}, {sel}[{j}])) {{ {keep} = false; break; }}",
            f"      if (!{keep}) continue;",
            f"      {sel}[{nsel}++] = {q};",
            f"      {e.out()}[{total} * 3] = {b}; {e.out()}[{total} * 3 + 1] = {c}; {e.out()}[{total} * 3 + 2] = {q};",
            f"      ++{total};",
            "   }",
            "}",
            "}",
            f"{e.dim(e.out_info(0).shape[0])} = {total};",
        ]
        return "{\n" + "\n".join(lines) + "\n}"
