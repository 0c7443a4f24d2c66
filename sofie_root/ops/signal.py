"""Signal processing: DFT (opset 17-19 axis attribute, opset 20 axis input), STFT, the Hann,
Hamming and Blackman windows and MelWeightMatrix.

Complex tensors are real tensors with a trailing dimension of 2 (real, imaginary); a trailing
dimension of 1 is a real signal. Each line is copied into a complex double buffer and
transformed: an in-place radix-2 FFT when its length is a power of two, otherwise a direct
O(n²) sum (index products reduced modulo n, so large n keeps its accuracy), both with a table of
n twiddle factors computed at the first call (the length is known at compile time). Lengths,
axes and window sizes must be known at compile time.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataDependentShapeError
from ..ir.dims import numel
from ..ir.dtypes import FLOAT32, FLOAT64, dtype_from_onnx
from .base import NodeView, Operator, OutInfo, normalize_axis, register


def _scalar(v: NodeView, i: int, what: str) -> int:
    val = v.require_value(i, what)
    if len(val) != 1 or not isinstance(val[0], int):
        raise v.fail(f"{what} must be one integer known at compile time, got {val}")
    return int(val[0])


def _twiddles(e, n: int, name: str) -> str:
    """C++ declaring ``name``, a table of cos and sin of 2*pi*m/n at ``name[2m], name[2m+1]``,
    computed once (a function-local static: ``n`` is known at compile time), not at every call."""
    tbl = e.tmp("twiddles")
    return (f"static const std::vector<double> {tbl} = [] {{ std::vector<double> t_(2 * {n}); "
            f"for (std::int64_t m_ = 0; m_ < {n}; ++m_) {{ const double a_ = 6.283185307179586476925 * "
            f"double(m_) / double({n}); t_[2 * m_] = std::cos(a_); t_[2 * m_ + 1] = std::sin(a_); }} "
            f"return t_; }}();\nconst double *const {name} = {tbl}.data();")


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _line_transform(length: int, bins: int, sign: str, tw: str, buf: str, spec: str) -> tuple[str, str]:
    """C++ transforming one line ``buf[0..2L)`` (interleaved re, im) with e^(sign 2 pi i jk / L);
    returns the code and the name of the array holding bins 0..bins-1 afterwards. A power-of-two
    length takes an in-place radix-2 FFT (O(L log L)); others a direct sum into ``spec``."""
    if _pow2(length):
        code = f"""
    for (std::int64_t i_ = 1, j_ = 0; i_ < {length}; ++i_) {{
      std::int64_t bit_ = {length} >> 1;
      for (; j_ & bit_; bit_ >>= 1) j_ ^= bit_;
      j_ ^= bit_;
      if (i_ < j_) {{ std::swap({buf}[2 * i_], {buf}[2 * j_]); std::swap({buf}[2 * i_ + 1], {buf}[2 * j_ + 1]); }}
    }}
    for (std::int64_t len_ = 2; len_ <= {length}; len_ <<= 1) {{
      const std::int64_t half_ = len_ / 2, step_ = {length} / len_;
      for (std::int64_t i_ = 0; i_ < {length}; i_ += len_)
        for (std::int64_t k_ = 0; k_ < half_; ++k_) {{
          const double c_ = {tw}[2 * k_ * step_], s_ = {sign}{tw}[2 * k_ * step_ + 1];
          double* u_ = {buf} + 2 * (i_ + k_); double* w_ = {buf} + 2 * (i_ + k_ + half_);
          const double vr_ = w_[0] * c_ - w_[1] * s_, vi_ = w_[0] * s_ + w_[1] * c_;
          w_[0] = u_[0] - vr_; w_[1] = u_[1] - vi_; u_[0] += vr_; u_[1] += vi_;
        }}
    }}"""
        return code, buf
    code = f"""
    for (std::int64_t k_ = 0; k_ < {bins}; ++k_) {{
      double re_ = 0.0, im_ = 0.0;
      for (std::int64_t j_ = 0; j_ < {length}; ++j_) {{
        const std::int64_t m_ = (k_ * j_) % {length};
        const double c_ = {tw}[2 * m_], s_ = {sign}{tw}[2 * m_ + 1], xr_ = {buf}[2 * j_], xi_ = {buf}[2 * j_ + 1];
        re_ += xr_ * c_ - xi_ * s_; im_ += xr_ * s_ + xi_ * c_;
      }}
      {spec}[2 * k_] = re_; {spec}[2 * k_ + 1] = im_;
    }}"""
    return code, spec


@register
class DFT(Operator):
    """ONNX DFT: forward and inverse, real or complex input, onesided (rfft / irfft), zero
    padding or truncation to ``dft_length``; any axis but the trailing complex one."""

    op_type = "DFT"
    dtypes = ("float32", "float64")
    static_inputs = (1, 2)

    def _params(self, v: NodeView):
        x = v.input(0)
        if x.rank < 2 or x.shape[-1] not in (1, 2):
            raise v.fail(f"the input's last dimension must be 1 (real) or 2 (complex), shape {list(x.shape)}")
        if v.opset >= 20:
            axis = _scalar(v, 2, "axis") if v.has_input(2) else -2
        else:
            axis = int(v.attr("axis", 1))
        axis = normalize_axis(axis, x.rank, v)
        if axis == x.rank - 1:
            raise v.fail("axis cannot be the trailing (real, imaginary) dimension")
        n_in = x.shape[axis]
        inverse, onesided = bool(v.attr("inverse", 0)), bool(v.attr("onesided", 0))
        if v.has_input(1):
            length = _scalar(v, 1, "dft_length")
        elif not isinstance(n_in, int):
            raise v.fail("the transformed dimension must be known at compile time (or give dft_length)")
        else:
            length = 2 * (n_in - 1) if inverse and onesided else n_in
        if length < 1:
            raise v.fail(f"dft_length must be positive, got {length}")
        return axis, length, inverse, onesided

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        axis, length, inverse, onesided = self._params(v)
        shape = list(x.shape)
        if inverse and onesided:
            shape[axis], shape[-1] = length, 1
        else:
            shape[axis], shape[-1] = (length // 2 + 1 if onesided else length), 2
        return [OutInfo(x.dtype, tuple(shape))]

    def workspace(self, v: NodeView):
        _, length, _, _ = self._params(v)
        return [(FLOAT64, 2 * length), (FLOAT64, 2 * length)]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        axis, length, inverse, onesided = self._params(v)
        out_shape = e.out_info(0).shape
        c_in, c_out = int(x.shape[-1]), int(out_shape[-1])
        outer = e.dim(numel(x.shape[:axis]))
        inner = e.dim(numel(x.shape[axis + 1:-1]))
        n_in = e.dim(x.shape[axis])
        k_out = int(out_shape[axis])
        tw, src, dst, t = e.tmp("tw"), e.inp(0), e.out(0), e.ctype(x.dtype)
        buf, spec = e.ws(0), e.ws(1)
        irfft = inverse and onesided
        xi = "0.0" if c_in == 1 else f"{src}[bi + h_ * si + 1]"
        if irfft:
            # the full spectrum of a real signal from its first L/2+1 bins (Hermitian symmetry);
            # only the real part of the result is kept, as numpy's irfft does
            load = (f"const std::int64_t h_ = j <= {length} / 2 ? j : {length} - j;\n"
                    f"      double xr_ = 0.0, xi_ = 0.0;\n"
                    f"      if (h_ < n_in) {{ xr_ = {src}[bi + h_ * si]; xi_ = {xi}; if (j > {length} / 2) xi_ = -xi_; }}")
        else:
            load = (f"const std::int64_t h_ = j; double xr_ = 0.0, xi_ = 0.0;\n"
                    f"      if (h_ < n_in) {{ xr_ = {src}[bi + h_ * si]; xi_ = {xi}; }}")
        transform, res = _line_transform(length, k_out, "+" if inverse else "-", tw, buf, spec)
        scale = f"1.0 / {float(length)!r}" if inverse else "1.0"
        store_im = f" {dst}[bo + k * so + 1] = {t}({res}[2 * k + 1] * sc_);" if c_out == 2 else ""
        return "\n".join([
            "{",
            _twiddles(e, length, tw),
            f"const std::int64_t n_in = {n_in}, si = {inner} * {c_in}, so = {inner} * {c_out};",
            f"const double sc_ = {scale};",
            f"for (std::int64_t o = 0; o < {outer}; ++o)",
            f"  for (std::int64_t i = 0; i < {inner}; ++i) {{",
            f"    const std::int64_t bi = o * n_in * si + i * {c_in}, bo = o * {k_out} * so + i * {c_out};",
            f"    for (std::int64_t j = 0; j < {length}; ++j) {{",
            f"      {load}",
            f"      {buf}[2 * j] = xr_; {buf}[2 * j + 1] = xi_;",
            "    }",
            transform,
            f"    for (std::int64_t k = 0; k < {k_out}; ++k) {{",
            f"      {dst}[bo + k * so] = {t}({res}[2 * k] * sc_);{store_im}",
            "    }",
            "  }",
            "}",
        ])


@register
class STFT(Operator):
    """ONNX STFT: short-time Fourier transform of [batch, samples, 1 or 2] with an optional
    window, frame step and length known at compile time, onesided or full."""

    op_type = "STFT"
    dtypes = ("float32", "float64")
    static_inputs = (1, 3)

    def _params(self, v: NodeView):
        x = v.input(0)
        if x.rank != 3 or x.shape[-1] not in (1, 2):
            raise v.fail(f"the signal must be [batch, samples, 1 or 2], got {list(x.shape)}")
        step = _scalar(v, 1, "frame_step")
        win = v.has_input(2)
        if v.has_input(3):
            length = _scalar(v, 3, "frame_length")
        elif win:
            length = v.input(2).shape[0]
        else:
            length = x.shape[1]
        if not isinstance(length, int) or not isinstance(x.shape[1], int):
            raise v.fail("the frame length and the signal length must be known at compile time")
        if win and (v.input(2).rank != 1 or v.input(2).shape[0] != length):
            raise v.fail(f"the window must be a vector of frame_length={length} values")
        if step < 1 or length < 1 or length > x.shape[1]:
            raise v.fail(f"frame_step {step} and frame_length {length} do not fit a signal of {x.shape[1]} samples")
        frames = (x.shape[1] - length) // step + 1
        bins = length // 2 + 1 if v.attr("onesided", 1) else length
        return step, length, frames, bins

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        _, _, frames, bins = self._params(v)
        return [OutInfo(x.dtype, (x.shape[0], frames, bins, 2))]

    def workspace(self, v: NodeView):
        n = 2 * self._params(v)[1]
        return [(FLOAT64, n), (FLOAT64, n)]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        step, length, frames, bins = self._params(v)
        c_in = int(x.shape[-1])
        tw, src, dst, t = e.tmp("tw"), e.inp(0), e.out(0), e.ctype(x.dtype)
        buf, spec = e.ws(0), e.ws(1)
        w = f"double({e.inp(2)}[j])" if v.has_input(2) else "1.0"
        xi = "0.0" if c_in == 1 else f"{src}[p + 1]"
        samples = int(x.shape[1])
        transform, res = _line_transform(length, bins, "-", tw, buf, spec)
        return "\n".join([
            "{",
            _twiddles(e, length, tw),
            f"for (std::int64_t b = 0; b < {e.dim(x.shape[0])}; ++b)",
            f"  for (std::int64_t f = 0; f < {frames}; ++f) {{",
            f"    for (std::int64_t j = 0; j < {length}; ++j) {{",
            f"      const std::int64_t p = (b * {samples} + f * {step} + j) * {c_in};",
            f"      const double w_ = {w}; {buf}[2 * j] = {src}[p] * w_; {buf}[2 * j + 1] = {xi} * w_;",
            "    }",
            transform,
            f"    for (std::int64_t k = 0; k < {bins}; ++k) {{",
            f"      const std::int64_t q = ((b * {frames} + f) * {bins} + k) * 2;",
            f"      {dst}[q] = {t}({res}[2 * k]); {dst}[q + 1] = {t}({res}[2 * k + 1]);",
            "    }",
            "  }",
            "}",
        ])


class _Window(Operator):
    """Generalised cosine windows a0 - a1 cos(2 pi n / M) + a2 cos(4 pi n / M), M = size for a
    periodic window, size - 1 for a symmetric one."""

    static_inputs = (0,)
    coeffs: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def _size(self, v: NodeView) -> int:
        n = _scalar(v, 0, "size")
        if n < 0:
            raise v.fail(f"the window size must not be negative, got {n}")
        return n

    def _dtype(self, v: NodeView):
        dt = dtype_from_onnx(int(v.attr("output_datatype", 1)), f"{v.label}: output_datatype: ")
        if dt.name not in ("float32", "float64", "int32", "int64", "int8", "uint8", "int16", "uint16"):
            raise v.fail(f"output_datatype {dt.name} is not supported")
        return dt

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(self._dtype(v), (self._size(v),))]

    def emit(self, v: NodeView, e) -> str:
        n = self._size(v)
        m = n if v.attr("periodic", 1) else n - 1
        a0, a1, a2 = self.coeffs
        dt = self._dtype(v)
        if m == 0:  # a window of one sample: the formula's 0/0 is NaN in every runtime
            return f"for (std::int64_t i = 0; i < {n}; ++i) {e.out(0)}[i] = {e.ctype(dt)}(std::nan(\"\"));"
        return (f"for (std::int64_t i = 0; i < {n}; ++i) {{ const double a_ = 6.283185307179586476925 * double(i) / "
                f"{float(m)!r};\n  {e.out(0)}[i] = {e.ctype(dt)}({a0!r} - {a1!r} * std::cos(a_) + {a2!r} * "
                f"std::cos(2.0 * a_)); }}")


@register
class HannWindow(_Window):
    """ONNX HannWindow (sin²(pi n / M) = 0.5 - 0.5 cos(2 pi n / M))."""

    op_type = "HannWindow"
    coeffs = (0.5, 0.5, 0.0)


@register
class HammingWindow(_Window):
    """ONNX HammingWindow (alpha = 25/46, beta = 21/46)."""

    op_type = "HammingWindow"
    coeffs = (25.0 / 46.0, 21.0 / 46.0, 0.0)


@register
class BlackmanWindow(_Window):
    """ONNX BlackmanWindow (0.42, 0.5, 0.08)."""

    op_type = "BlackmanWindow"
    coeffs = (0.42, 0.5, 0.08)


@register
class MelWeightMatrix(Operator):
    """ONNX MelWeightMatrix: triangular filters from linear frequency bins to mel bins; every
    input is known at compile time, so only the filter edges reach the generated code."""

    op_type = "MelWeightMatrix"
    static_inputs = (0, 1, 2, 3, 4)

    def _params(self, v: NodeView):
        mel = _scalar(v, 0, "num_mel_bins")
        dft = _scalar(v, 1, "dft_length")
        rate = _scalar(v, 2, "sample_rate")
        edges = []
        for i, what in ((3, "lower_edge_hertz"), (4, "upper_edge_hertz")):
            c = v.const(i)
            if c is None:  # a graph input: the model is specialised on its value (see api.compile)
                name = v.input(i).name
                raise DataDependentShapeError(f"{v.label}: {what} ({name!r}) must be known at compile time", name)
            if c.size != 1:
                raise v.fail(f"{what} must be a scalar, got shape {list(c.shape)}")
            edges.append(float(c.reshape(-1)[0]))
        if mel < 1 or dft < 1 or rate <= 0:
            raise v.fail(f"num_mel_bins={mel}, dft_length={dft} and sample_rate={rate} must be positive")
        return mel, dft, rate, edges[0], edges[1]

    def infer(self, v: NodeView) -> list[OutInfo]:
        mel, dft, _, _, _ = self._params(v)
        dt = dtype_from_onnx(int(v.attr("output_datatype", 1)), f"{v.label}: output_datatype: ")
        if dt not in (FLOAT32, FLOAT64):
            raise v.fail(f"output_datatype {dt.name} is not supported")
        return [OutInfo(dt, (dft // 2 + 1, mel))]

    @staticmethod
    def edges(mel: int, dft: int, rate: int, lo: float, hi: float) -> list[int]:
        """The mel filters' edge bins: mel + 2 points evenly spaced in mel between the edges."""
        to_mel = 2595.0 / math.log(10.0)
        lo_mel, hi_mel = to_mel * math.log1p(lo / 700.0), to_mel * math.log1p(hi / 700.0)
        step = (hi_mel - lo_mel) / (mel + 2)
        hz = 700.0 * np.expm1((np.arange(mel + 2) * step + lo_mel) / to_mel)
        return [int(b) for b in ((dft + 1) * hz) // rate]

    def emit(self, v: NodeView, e) -> str:
        mel, dft, rate, lo, hi = self._params(v)
        bins = self.edges(mel, dft, rate, lo, hi)
        rows = dft // 2 + 1
        if min(bins) < 0 or max(bins) >= rows + 1:
            raise v.fail(f"the mel edges {lo}..{hi} Hz fall outside the {rows} frequency bins")
        y, t = e.out(0), e.ctype(e.out_info(0).dtype)
        lines = [f"std::fill({y}, {y} + {rows * mel}, {t}(0));"]
        for i in range(mel):
            left, center, right = bins[i], bins[i + 1], bins[i + 2]
            if center == left:
                if center < rows:
                    lines.append(f"{y}[{center * mel + i}] = {t}(1);")
            else:
                lines.append(f"for (std::int64_t j = {left}; j <= {min(center, rows - 1)}; ++j) "
                             f"{y}[j * {mel} + {i}] = {t}(double(j - {left}) / {float(center - left)!r});")
            if right > center:
                lines.append(f"for (std::int64_t j = {center}; j < {min(right, rows)}; ++j) "
                             f"{y}[j * {mel} + {i}] = {t}(double({right} - j) / {float(right - center)!r});")
        return "\n".join(lines)
