// sofie_root runtime: the small set of helpers every generated model uses.
// Declared once per process (and copied into standalone headers by `sofie-root emit`).
// Self-contained on purpose: only the C++ standard library.
#ifndef SOFIE_ROOT_RUNTIME_HXX
#define SOFIE_ROOT_RUNTIME_HXX

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace sofie_rt {

constexpr std::size_t kAlign = 64;

// An owning, 64-byte aligned byte buffer that only grows.
class Buffer {
public:
   Buffer() = default;
   Buffer(const Buffer &) = delete;
   Buffer &operator=(const Buffer &) = delete;
   ~Buffer() { release(); }
   char *data() const { return fData; }
   std::size_t size() const { return fSize; }
   // Grow to at least n bytes; returns true if the storage moved (contents are not kept). Out
   // of memory is a std::runtime_error naming `what` and the size (std::bad_alloc says neither).
   bool reserve(std::size_t n, const char *what = "a buffer")
   {
      if (n <= fSize && fData)
         return false;
      release();
      std::size_t rounded = (n + kAlign - 1) / kAlign * kAlign;
      if (rounded == 0)
         rounded = kAlign;
      try {
         fData = static_cast<char *>(::operator new(rounded, std::align_val_t(kAlign)));
      } catch (const std::bad_alloc &) {
         throw std::runtime_error(std::string("out of memory: ") + what + " needs " + std::to_string(rounded) +
                                  " bytes");
      }
      fSize = rounded;
      return true;
   }

private:
   void release()
   {
      if (fData)
         ::operator delete(fData, std::align_val_t(kAlign));
      fData = nullptr;
      fSize = 0;
   }
   char *fData = nullptr;
   std::size_t fSize = 0;
};

inline std::size_t round_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Put before a loop with a short constant trip count whose body is a few statements (an
// epilogue over a row of 16-64 columns): clang (so cling) fully unrolls such a loop and the SLP
// vectoriser then takes seconds on the unrolled body (measured: a FusedMatMul bias+Relu row of 32
// took 2.3 s to JIT, 0.1 s with this); the loop vectoriser still vectorises it.
#if defined(__clang__)
#define SOFIE_RT_NO_UNROLL _Pragma("clang loop unroll(disable)")
#else
#define SOFIE_RT_NO_UNROLL
#endif

// ---- floating-point mode ------------------------------------------------------------------
// Flush-to-zero and denormals-are-zero for the duration of a model's run: subnormal floats (a
// softmax over a padding mask, products of tiny weights) take 20-100x longer per operation on
// x86-64 and would slow every later reader. The guard sets FTZ|DAZ (MXCSR bits 15 and 6) on
// x86-64, FZ (FPCR bit 24) on aarch64, and restores the caller's control bits on every exit,
// exceptions included; exception flags raised meanwhile stay raised, as without the guard.
// Elsewhere it does nothing. Subnormal inputs read as (signed) zero inside the run and subnormal
// results become zero; a model opts out with the metadata property sofie_root.flush_denormals=0.
class FPModeGuard {
public:
   explicit FPModeGuard(bool enable) : fActive(enable)
   {
      if (!fActive)
         return;
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
      fSaved = __builtin_ia32_stmxcsr();
      __builtin_ia32_ldmxcsr(static_cast<unsigned>(fSaved) | 0x8040u);
#elif defined(__aarch64__)
      std::uint64_t v;
      __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
      fSaved = v;
      __asm__ __volatile__("msr fpcr, %0" : : "r"(v | (std::uint64_t(1) << 24)));
#endif
   }
   ~FPModeGuard()
   {
      if (!fActive)
         return;
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
      __builtin_ia32_ldmxcsr(static_cast<unsigned>(fSaved) | (__builtin_ia32_stmxcsr() & 0x3Fu));
#elif defined(__aarch64__)
      __asm__ __volatile__("msr fpcr, %0" : : "r"(fSaved));
#endif
   }
   FPModeGuard(const FPModeGuard &) = delete;
   FPModeGuard &operator=(const FPModeGuard &) = delete;

private:
   bool fActive;
   std::uint64_t fSaved = 0;
};

// The floating-point control word of the calling thread (MXCSR on x86-64, FPCR on aarch64, 0
// elsewhere); for tests and diagnostics.
inline std::uint64_t fp_mode()
{
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
   return __builtin_ia32_stmxcsr();
#elif defined(__aarch64__)
   std::uint64_t v;
   __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
   return v;
#else
   return 0;
#endif
}

// ---- vectorisable math (namespace sofie_rt::vm) -------------------------------------------
// Transcendental functions of float32 without a library call: range reduction, a polynomial and
// IEEE special cases chosen by selects, never by branches, so that loops calling them vectorise
// under cling and g++ -O3 (std::exp/tanh/erf/log/pow are opaque calls that neither compiler
// vectorises without -ffast-math). The float64 overloads are std:: (float64 models are rare and
// keep the library's accuracy). Maximum errors against the correctly rounded result, measured
// over a sweep of float32 bit patterns (tests/sofie_root/test_math_layer.py, docs/conformance.md, "Numerics"):
//   exp 1 ulp, expm1 2, log 1, log1p 2, tanh 2, sigmoid 2, softplus 2, erf 2.5, pow 1 (computed
//   in double); gelu 6.2 ulp for x >= 0, 24 ulp (1.4e-6 relative) for -5 < x < 0 and 1.2e-5
//   relative below -5, where |gelu(x)| < 1.5e-6 (the rounding of z^2 inside erfc's exp).
// Every function returns NaN for NaN, handles +-0, +-inf and subnormal arguments as the C
// library does, overflows to inf and underflows to an exact 0 (subnormal results are produced
// only when the caller has not enabled flush-to-zero, see FPModeGuard).
namespace vm {

// Forced inlining: a call left in a loop (cling's inliner gives up on the larger compositions,
// softplus = log1p(exp(.)) or pow) stops the loop from vectorising (measured: softplus 38 ns per
// element under cling without it, 3.5 ns with g++).
#if defined(__GNUC__) || defined(__clang__)
#define SOFIE_RT_VM_INLINE inline __attribute__((always_inline))
#else
#define SOFIE_RT_VM_INLINE inline
#endif

SOFIE_RT_VM_INLINE std::uint32_t bits(float x)
{
   std::uint32_t u;
   std::memcpy(&u, &x, 4);
   return u;
}
SOFIE_RT_VM_INLINE float from_bits(std::uint32_t u)
{
   float x;
   std::memcpy(&x, &u, 4);
   return x;
}
constexpr float kInf = std::numeric_limits<float>::infinity();

// e^x = 2^n e^r, n = round(x / ln2), |r| <= ln2/2 (Cody-Waite: ln2 split in two so n*C1 is
// exact), e^r by the Cephes minimax polynomial. 2^n is applied as two factors 2^(n/2) 2^(n-n/2),
// both normal for every n the clamp allows, so results near the overflow edge and subnormal
// results are rounded once, like the library's. Clamping to [-104, 89] (where e^x is already 0
// or inf in float) keeps the integer arithmetic in range; NaN is selected back at the end.
SOFIE_RT_VM_INLINE float exp(float x)
{
   const float xc = x > -104.0f ? (x < 89.0f ? x : 89.0f) : -104.0f;
   const float t = xc * 1.44269504088896341f + 12582912.0f; // 1.5 * 2^23: rounds to an integer
   const float fn = t - 12582912.0f;
   const std::int32_t n = std::int32_t(bits(t) - 0x4B400000u);
   const float r = (xc - fn * 0.693359375f) + fn * 2.12194440e-4f;
   float p = 1.9875691500E-4f;
   p = p * r + 1.3981999507E-3f;
   p = p * r + 8.3334519073E-3f;
   p = p * r + 4.1665795894E-2f;
   p = p * r + 1.6666665459E-1f;
   p = p * r + 5.0000001201E-1f;
   p = p * r * r + r + 1.0f;
   const std::int32_t n1 = n >> 1; // arithmetic shift (GCC and clang define it so): floor(n / 2)
   const std::int32_t n2 = n - n1;
   const float y = (p * from_bits(std::uint32_t(n1 + 127) << 23)) * from_bits(std::uint32_t(n2 + 127) << 23);
   return x != x ? x : y;
}
SOFIE_RT_VM_INLINE double exp(double x) { return std::exp(x); }

// e^x - 1: a Taylor polynomial for |x| < 0.7 (where e^x - 1 would cancel), e^x - 1 beyond.
SOFIE_RT_VM_INLINE float expm1(float x)
{
   float p = 2.75573192e-7f; // 1/10!
   p = p * x + 2.75573192e-6f;
   p = p * x + 2.48015873e-5f;
   p = p * x + 1.98412698e-4f;
   p = p * x + 1.38888889e-3f;
   p = p * x + 8.33333333e-3f;
   p = p * x + 4.16666667e-2f;
   p = p * x + 1.66666667e-1f;
   p = p * x + 0.5f;
   const float small = x == 0.0f ? x : x + (x * x) * p; // keeps the sign of -0
   return std::fabs(x) < 0.7f ? small : vm::exp(x) - 1.0f;
}
SOFIE_RT_VM_INLINE double expm1(double x) { return std::expm1(x); }

// ln x = k ln2 + ln m with m in [sqrt(1/2), sqrt(2)) read from the bits (subnormals are scaled
// by 2^23 first), ln(1 + f) by the Cephes polynomial, ln2 split as in exp. The special cases are
// read from the scaled value: under denormals-are-zero the scaling gives 0, so a subnormal x is
// then a zero throughout (the compiler may test the class of x on its bits, which DAZ ignores).
SOFIE_RT_VM_INLINE float log(float x)
{
   const bool sub = x < 1.17549435e-38f;
   const float xs = sub ? x * 8388608.0f : x;
   const std::uint32_t ix = bits(xs) - 0x3F3504F3u; // sqrt(1/2): m lands in [sqrt(1/2), sqrt(2))
   const std::int32_t k = std::int32_t(ix) >> 23;
   const float m = from_bits(bits(xs) - (ix & 0xFF800000u));
   const float e = float(k) - (sub ? 23.0f : 0.0f);
   const float f = m - 1.0f;
   const float z = f * f;
   float p = 7.0376836292E-2f;
   p = p * f - 1.1514610310E-1f;
   p = p * f + 1.1676998740E-1f;
   p = p * f - 1.2420140846E-1f;
   p = p * f + 1.4249322787E-1f;
   p = p * f - 1.6668057665E-1f;
   p = p * f + 2.0000714765E-1f;
   p = p * f - 2.4999993993E-1f;
   p = p * f + 3.3333331174E-1f;
   float y = f * z * p - e * 2.12194440e-4f - 0.5f * z;
   y = (f + y) + e * 0.693359375f;
   const float special = xs == 0.0f ? -kInf : (xs == kInf ? xs : std::numeric_limits<float>::quiet_NaN());
   const float r = (xs > 0.0f && xs < kInf) ? y : special;
   return x != x ? x : r;
}
SOFIE_RT_VM_INLINE double log(double x) { return std::log(x); }

// ln(1 + x) with the rounding of 1 + x corrected to first order (Goldberg): u = fl(1 + x),
// ln(1 + x) = ln u - ((u - 1) - x) / u.
SOFIE_RT_VM_INLINE float log1p(float x)
{
   const float u = 1.0f + x;
   const float y = vm::log(u) - ((u - 1.0f) - x) / u;
   return (u == 1.0f || x == kInf) ? x : (u == 0.0f ? -kInf : y);
}
SOFIE_RT_VM_INLINE double log1p(double x) { return std::log1p(x); }

// tanh: the Cephes odd polynomial for |x| < 0.625, 1 - 2 / (e^2|x| + 1) beyond (tanh(10) is 1
// in float, so the argument of exp is bounded).
SOFIE_RT_VM_INLINE float tanh(float x)
{
   const float a = std::fabs(x);
   const float z = x * x;
   float p = -5.70498872745E-3f;
   p = p * z + 2.06390887954E-2f;
   p = p * z - 5.37397155531E-2f;
   p = p * z + 1.33314422036E-1f;
   p = p * z - 3.33332819422E-1f;
   const float small = x == 0.0f ? x : x + x * z * p; // keeps the sign of -0
   const float b = a < 10.0f ? a : 10.0f; // tanh(10) rounds to 1, tanh(9) does not
   const float big = 1.0f - 2.0f / (vm::exp(2.0f * b) + 1.0f);
   const float r = a < 0.625f ? small : std::copysign(big, x);
   return x != x ? x : r;
}
SOFIE_RT_VM_INLINE double tanh(double x) { return std::tanh(x); }

SOFIE_RT_VM_INLINE float sigmoid(float x) { return 1.0f / (1.0f + vm::exp(-x)); }
SOFIE_RT_VM_INLINE double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|): no overflow for large x, NaN through the log term.
SOFIE_RT_VM_INLINE float softplus(float x) { return (x > 0.0f ? x : 0.0f) + vm::log1p(vm::exp(-std::fabs(x))); }
SOFIE_RT_VM_INLINE double softplus(double x) { return (x > 0.0 ? x : 0.0) + std::log1p(std::exp(-std::fabs(x))); }

// erfc(z) for z >= 0 as t e^(P(t) - z^2), t = 1 / (1 + z/2): the Chebyshev fit of Numerical
// Recipes (erfcc, relative error below 1.2e-7 for every z >= 0). erfc(inf) = 0, erfc(NaN) = NaN.
SOFIE_RT_VM_INLINE float erfc_pos(float z)
{
   const float t = 1.0f / (1.0f + 0.5f * z);
   float p = 0.17087277f;
   p = p * t - 0.82215223f;
   p = p * t + 1.48851587f;
   p = p * t - 1.13520398f;
   p = p * t + 0.27886807f;
   p = p * t - 0.18628806f;
   p = p * t + 0.09678418f;
   p = p * t + 0.37409196f;
   p = p * t + 1.00002368f;
   p = p * t - 1.26551223f;
   return t * vm::exp(p - z * z);
}

// erf(x) for |x| < 0.5 by its Maclaurin series (2/sqrt(pi)) sum (-1)^n x^(2n+1) / (n! (2n+1)),
// truncated after x^15 (relative truncation error below 2e-9 there).
SOFIE_RT_VM_INLINE float erf_series(float x)
{
   const float z = x * x;
   float p = -1.1283791670955126f / 75600.0f;
   p = p * z + 1.1283791670955126f / 9360.0f;
   p = p * z - 1.1283791670955126f / 1320.0f;
   p = p * z + 1.1283791670955126f / 216.0f;
   p = p * z - 1.1283791670955126f / 42.0f;
   p = p * z + 1.1283791670955126f / 10.0f;
   p = p * z - 1.1283791670955126f / 3.0f;
   p = p * z + 1.1283791670955126f;
   return x * p;
}

// erf: the series for |x| < 0.5, where it keeps the relative accuracy near 0, and 1 - erfc(|x|)
// with the sign of x beyond.
SOFIE_RT_VM_INLINE float erf(float x)
{
   const float a = std::fabs(x);
   const float big = std::copysign(1.0f - erfc_pos(a), x);
   return a < 0.5f ? erf_series(x) : big;
}
SOFIE_RT_VM_INLINE double erf(double x) { return std::erf(x); }

// GELU (exact, erf form) as 0.5 x erfc(-x / sqrt2), so that negative x keep their relative
// accuracy where 1 + erf(x / sqrt2) cancels. gelu(-inf) is NaN (-inf * 0) and gelu(inf) = inf,
// as ONNX's definition 0.5 x (1 + erf(x / sqrt2)) gives.
SOFIE_RT_VM_INLINE float gelu(float x)
{
   const float ec = erfc_pos(std::fabs(x) * 0.70710678118654752f);
   return 0.5f * x * (x >= 0.0f ? 2.0f - ec : ec);
}
SOFIE_RT_VM_INLINE double gelu(double x) { return 0.5 * x * std::erfc(-x * 0.70710678118654752); }

// ln x in double for x = xs * 2^(sub ? -23 : 0), xs a finite normal float > 0 (the inner step
// of pow): m in [sqrt(1/2), sqrt(2)) from the float bits, ln m = 2 atanh(s), s = (m - 1) / (m + 1),
// |s| < 0.172, by its series to s^17 (truncation below 2e-14).
SOFIE_RT_VM_INLINE double log_scaled_d(float xs, bool sub)
{
   const std::uint32_t ix = bits(xs) - 0x3F3504F3u;
   const std::int32_t k = std::int32_t(ix) >> 23;
   const double m = double(from_bits(bits(xs) - (ix & 0xFF800000u)));
   const double s = (m - 1.0) / (m + 1.0);
   const double s2 = s * s;
   double p = 1.0 / 17;
   p = p * s2 + 1.0 / 15;
   p = p * s2 + 1.0 / 13;
   p = p * s2 + 1.0 / 11;
   p = p * s2 + 1.0 / 9;
   p = p * s2 + 1.0 / 7;
   p = p * s2 + 1.0 / 5;
   p = p * s2 + 1.0 / 3;
   p = p * s2 + 1.0;
   const double e = double(k) - (sub ? 23.0 : 0.0);
   return e * 0.6931471805599453 + 2.0 * s * p;
}

// e^t in double for |t| <= 200 (the outer step of pow; the float result rounds it once).
SOFIE_RT_VM_INLINE double exp_d(double t)
{
   const double tt = t * 1.4426950408889634 + 6755399441055744.0; // 1.5 * 2^52: rounds to an integer
   const double fn = tt - 6755399441055744.0;
   std::uint64_t u;
   std::memcpy(&u, &tt, 8);
   const std::int32_t n = std::int32_t(std::uint32_t(u));
   const double r = (t - fn * 0.6931471803691238) - fn * 1.9082149292705877e-10;
   double p = 1.0 / 39916800; // 1/11!
   p = p * r + 1.0 / 3628800;
   p = p * r + 1.0 / 362880;
   p = p * r + 1.0 / 40320;
   p = p * r + 1.0 / 5040;
   p = p * r + 1.0 / 720;
   p = p * r + 1.0 / 120;
   p = p * r + 1.0 / 24;
   p = p * r + 1.0 / 6;
   p = p * r + 0.5;
   p = p * r * r + r + 1.0;
   const std::uint64_t sb = std::uint64_t(std::int64_t(n) + 1023) << 52;
   double scale;
   std::memcpy(&scale, &sb, 8);
   return p * scale;
}

// x^y with the special cases of C99/IEEE pow (Annex F): x^0 = 1 and 1^y = 1 even for NaN,
// (-1)^+-inf = 1, a negative finite x with a non-integer y is NaN, the sign of a negative x
// (and of -0, -inf) survives odd integer exponents. |x|^y = e^(y ln|x|) in double precision, so
// the float result is within 1 ulp wherever it is finite.
SOFIE_RT_VM_INLINE float pow(float x, float y)
{
   const float ax = std::fabs(x);
   const bool sub = ax < 1.17549435e-38f;
   const float xs = sub ? ax * 8388608.0f : ax; // 0 for a subnormal x under denormals-are-zero (see log)
   const bool finite_pos = xs > 0.0f && xs < kInf;
   const double lx = finite_pos ? log_scaled_d(finite_pos ? xs : 1.0f, sub) : (xs == 0.0f ? -HUGE_VAL : HUGE_VAL);
   double t = double(y) * lx;
   t = t > 200.0 ? 200.0 : (t < -200.0 ? -200.0 : t);
   const bool t_nan = t != t;
   float r = float(exp_d(t_nan ? 0.0 : t));
   r = t_nan ? std::numeric_limits<float>::quiet_NaN() : r;
   const float fy = std::floor(y);
   const bool y_int = fy == y; // true for +-inf
   const float hy = 0.5f * y;
   const bool y_odd = y_int && std::fabs(y) < 16777216.0f && std::floor(hy) != hy;
   r = (std::signbit(x) && y_odd) ? -r : r;
   r = (std::signbit(x) && finite_pos && !y_int && y == y) ? std::numeric_limits<float>::quiet_NaN() : r;
   r = (x == -1.0f && (y == kInf || y == -kInf)) ? 1.0f : r;
   r = x != x ? x : r;
   return (y == 0.0f || x == 1.0f) ? 1.0f : r;
}
SOFIE_RT_VM_INLINE double pow(double x, double y) { return std::pow(x, y); }

// x^0.5 as pow gives it: sqrt, except pow(-0, 0.5) = +0 (sqrt(-0) = -0) and pow(-inf, 0.5) = +inf
// (sqrt(-inf) is NaN).
template <class T> SOFIE_RT_VM_INLINE T pow_half(T x)
{
   return x == -std::numeric_limits<T>::infinity() ? -x : std::fabs(std::sqrt(x));
}

} // namespace vm

// The names generated code used before the vm layer; kept so that other kernels keep compiling.
inline float exp_core(float x) { return vm::exp(x); }
inline float fast_exp(float x) { return vm::exp(x); }
inline double fast_exp(double x) { return std::exp(x); }
// exp of a value <= 0 next to a 1 (softmax after subtracting the maximum): vm::exp, which
// underflows to an exact 0 instead of producing subnormals that slow every later reader down.
inline float exp_nonpos(float x) { return vm::exp(x); }
inline double exp_nonpos(double x) { return std::exp(x); }
inline float sigmoid(float x) { return vm::sigmoid(x); }
inline double sigmoid(double x) { return vm::sigmoid(x); }
inline float fast_tanh(float x) { return vm::tanh(x); }
inline double fast_tanh(double x) { return std::tanh(x); }
inline float gelu(float x) { return vm::gelu(x); }
inline double gelu(double x) { return vm::gelu(x); }
template <class T> inline T softplus(T x) { return vm::softplus(x); }

// Gate activations of the recurrent cells: the rational minimax approximations ONNX Runtime's
// MLAS and Eigen use (absolute error <= 3.3e-7, no exp, one division, vectorise). Measured in
// the LSTM gate loop (H=32) under cling: 0.57x the exp_core versions at batch 256, 0.79x at 1.
// Absolute, not relative, accuracy: sigmoid(-17) comes out near 0, not near 4e-8. NaN stays NaN
// (the clamps keep it).
inline float gate_tanh(float x)
{
   const float c = x < -9.f ? -9.f : (x > 9.f ? 9.f : x);
   const float x2 = c * c;
   float p = -2.76076847742355e-16f;
   p = p * x2 + 2.00018790482477e-13f;
   p = p * x2 - 8.60467152213735e-11f;
   p = p * x2 + 5.12229709037114e-08f;
   p = p * x2 + 1.48572235717979e-05f;
   p = p * x2 + 6.37261928875436e-04f;
   p = p * x2 + 4.89352455891786e-03f;
   float q = 1.19825839466702e-06f;
   q = q * x2 + 1.18534705686654e-04f;
   q = q * x2 + 2.26843463243900e-03f;
   q = q * x2 + 4.89352518554385e-03f;
   return c * p / q;
}
inline double gate_tanh(double x) { return std::tanh(x); }
inline float gate_sigmoid(float x)
{
   const float c = x < -18.f ? -18.f : (x > 18.f ? 18.f : x);
   const float x2 = c * c;
   float p = 4.37031012579801e-11f;
   p = p * x2 + 1.15627324459942e-07f;
   p = p * x2 + 6.08574864600143e-05f;
   p = p * x2 + 8.51377133304701e-03f;
   p = p * x2 + 2.48287947061529e-01f;
   float q = 6.10247389755681e-13f;
   q = q * x2 + 5.76102136993427e-09f;
   q = q * x2 + 6.29106785017040e-06f;
   q = q * x2 + 1.70198817374094e-03f;
   q = q * x2 + 1.16817656904453e-01f;
   q = q * x2 + 9.93151921023180e-01f;
   const float r = c * p / q + 0.5f;
   return r < 0.f ? 0.f : (r > 1.f ? 1.f : r);
}
inline double gate_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// min / -1 and min % -1 overflow (undefined in C++, SIGFPE on x86): the wrapped results
template <class T> inline bool int_min_by_minus_one(T a, T b)
{
   if constexpr (std::is_signed<T>::value)
      return b == T(-1) && a == std::numeric_limits<T>::min();
   else
      return false;
}

// Python-style (floored) modulo for Mod with fmod=0.
template <class T> inline T mod_floor(T a, T b)
{
   if constexpr (std::is_floating_point<T>::value) {
      T r = std::fmod(a, b);
      if (r != T(0) && ((r < T(0)) != (b < T(0))))
         r += b;
      return r;
   } else {
      if (b == T(0) || int_min_by_minus_one(a, b))
         return T(0);
      T r = a % b;
      if (r != T(0) && ((r < T(0)) != (b < T(0))))
         r += b;
      return r;
   }
}

template <class T> inline T mod_trunc(T a, T b)
{
   if constexpr (std::is_floating_point<T>::value)
      return std::fmod(a, b);
   else
      return (b == T(0) || int_min_by_minus_one(a, b)) ? T(0) : T(a % b);
}

template <class T> inline T int_div(T a, T b)
{
   if constexpr (std::is_floating_point<T>::value)
      return a / b;
   else if (int_min_by_minus_one(a, b))
      return a; // -min wraps to min (numpy, two's complement)
   else
      return b == T(0) ? T(0) : T(a / b);
}

// Integer Add, Sub, Mul, Neg wrap around as in numpy and ONNX Runtime. In C++ a signed overflow
// is undefined, and so is uint16 * uint16 (promoted to int, 65535 * 65535 overflows it): the
// operands are computed in an unsigned type at least as wide as unsigned int.
template <class T>
using wrap_unsigned_t = typename std::conditional<(sizeof(T) < sizeof(unsigned)), unsigned,
                                                  typename std::make_unsigned<T>::type>::type;
template <class T> inline T wrap_add(T a, T b)
{
   using U = wrap_unsigned_t<T>;
   return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
}
template <class T> inline T wrap_sub(T a, T b)
{
   using U = wrap_unsigned_t<T>;
   return static_cast<T>(static_cast<U>(static_cast<U>(a) - static_cast<U>(b)));
}
template <class T> inline T wrap_mul(T a, T b)
{
   using U = wrap_unsigned_t<T>;
   return static_cast<T>(static_cast<U>(static_cast<U>(a) * static_cast<U>(b)));
}
template <class T> inline T wrap_neg(T a) { return wrap_sub(T(0), a); }

template <class T> inline T int_pow(T base, T exp)
{
   if constexpr (std::is_floating_point<T>::value) {
      return std::pow(base, exp);
   } else {
      return static_cast<T>(std::pow(static_cast<double>(base), static_cast<double>(exp)));
   }
}

// x clamped to [lo, hi]; NaN stays NaN (std::min/std::max would return a bound for it).
template <class T> inline T clamp_nan(T x, T lo, T hi) { return x < lo ? lo : (x > hi ? hi : x); }

template <class T> inline T nan_max(T a, T b) { return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : (a > b ? a : b); }
template <class T> inline T nan_min(T a, T b) { return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : (a < b ? a : b); }

// Float to integer conversion without undefined behaviour for indices and sizes computed in
// floating point (Resize, GridSample, RoiAlign, float indices): NaN gives 0, out of range saturates.
template <class I, class F> inline I float_to_int(F x)
{
   if (x != x)
      return I(0);
   if (x <= static_cast<F>(std::numeric_limits<I>::min()))
      return std::numeric_limits<I>::min();
   if (x >= static_cast<F>(std::numeric_limits<I>::max()))
      return std::numeric_limits<I>::max();
   return static_cast<I>(x);
}

// The float to integer Cast without undefined behaviour, giving what numpy's astype and ONNX
// Runtime's Cast give on x86-64 (the hardware conversion's results, kept on every platform):
// values in range truncate toward zero; int32 and int64 get their minimum ("integer indefinite")
// for NaN, +-inf and out-of-range values; 8- and 16-bit types convert through int32 and keep its
// low bits (300.7 -> uint8 44, -1.5 -> uint8 255, NaN -> 0); uint32 and uint64 take negative
// values in the range of the signed type of their width modulo 2^n, give 0 for +inf and values
// above their range, and 2^(n-1) for NaN, -inf and values below the signed range.
template <class I, class F> inline I cast_float_to_int(F x)
{
   static_assert(std::is_integral<I>::value && std::is_floating_point<F>::value, "float_to_int<int type>(float)");
   if constexpr (std::is_same<I, bool>::value) {
      return x != F(0);
   } else if constexpr (sizeof(I) < 4) {
      using U = typename std::make_unsigned<I>::type;
      return static_cast<I>(static_cast<U>(static_cast<std::uint32_t>(cast_float_to_int<std::int32_t>(x))));
   } else if constexpr (std::is_signed<I>::value) {
      constexpr F lim = F(sizeof(I) == 8 ? 9223372036854775808.0 : 2147483648.0); // 2^(n-1), exact
      return (x >= -lim && x < lim) ? static_cast<I>(x) : std::numeric_limits<I>::min();
   } else {
      using S = typename std::make_signed<I>::type;
      constexpr F half = F(sizeof(I) == 8 ? 9223372036854775808.0 : 2147483648.0);
      if (x >= F(0) && x < F(2) * half)
         return static_cast<I>(x);
      if (x > -half && x < F(0))
         return static_cast<I>(static_cast<S>(x));
      return x >= F(2) * half ? I(0) : static_cast<I>(half);
   }
}

// Rounding float32 values to the nearest float16 / bfloat16 value (ties to even): half-precision
// models are computed in float32, and casts to the half types round with these.
inline float round_float16(float x)
{
   if (!(x == x))
      return x;
   const float a = std::fabs(x);
   if (a >= 65520.f) // halfway between the largest float16 (65504) and the next power of two
      return std::copysign(std::numeric_limits<float>::infinity(), x);
   if (a < 6.103515625e-05f) { // subnormal float16: multiples of 2^-24
      const float q = 5.9604644775390625e-08f;
      return std::copysign(std::nearbyint(a / q) * q, x);
   }
   std::uint32_t u;
   std::memcpy(&u, &a, 4);
   u += 0xFFFu + ((u >> 13) & 1u); // keep 10 mantissa bits, ties to even
   u &= ~0x1FFFu;
   float r;
   std::memcpy(&r, &u, 4);
   return std::copysign(r, x);
}

inline float round_bfloat16(float x)
{
   if (!(x == x))
      return x;
   std::uint32_t u;
   std::memcpy(&u, &x, 4);
   u += 0x7FFFu + ((u >> 16) & 1u);
   u &= 0xFFFF0000u;
   float r;
   std::memcpy(&r, &u, 4);
   return r;
}

// BitShift as ONNX defines it: no undefined behaviour for negative or too large shift amounts.
template <class T> inline T shift_left(T a, T b)
{
   using U = typename std::make_unsigned<T>::type;
   if ((std::is_signed<T>::value && b < T(0)) || b >= T(8 * sizeof(T)))
      return T(0);
   return static_cast<T>(static_cast<U>(static_cast<U>(a) << static_cast<int>(b)));
}
template <class T> inline T shift_right(T a, T b)
{
   if ((std::is_signed<T>::value && b < T(0)) || b >= T(8 * sizeof(T)))
      return (std::is_signed<T>::value && a < T(0)) ? T(-1) : T(0);
   return static_cast<T>(a >> static_cast<int>(b));
}

// ---- matrix multiplication ---------------------------------------------------------------
// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major with leading dimensions.
// The portable loop keeps the inner loop over contiguous columns of B and C (axpy form), which
// vectorises; float and double go to BLAS when one is available (SOFIE_RT_CBLAS_PREFIX).
template <class T>
inline void gemm_loops(bool transA, bool transB, std::int64_t M, std::int64_t N, std::int64_t K, T alpha,
                       const T *A, std::int64_t lda, const T *B, std::int64_t ldb, T beta, T *C, std::int64_t ldc)
{
   for (std::int64_t i = 0; i < M; ++i) {
      T *c = C + i * ldc;
      if (beta == T(0)) {
         for (std::int64_t j = 0; j < N; ++j)
            c[j] = T(0);
      } else if (beta != T(1)) {
         for (std::int64_t j = 0; j < N; ++j)
            c[j] *= beta;
      }
      for (std::int64_t k = 0; k < K; ++k) {
         T a = alpha * (transA ? A[k * lda + i] : A[i * lda + k]);
         if (!transB) {
            const T *b = B + k * ldb;
            for (std::int64_t j = 0; j < N; ++j)
               c[j] += a * b[j];
         } else {
            for (std::int64_t j = 0; j < N; ++j)
               c[j] += a * B[j * ldb + k];
         }
      }
   }
}

#ifdef SOFIE_RT_CBLAS
// The CBLAS symbols' prefix: scipy-openblas32 exports scipy_cblas_*, MKL and BLIS cblas_*
// (SOFIE_ROOT_BLAS, see jit/cling.py's blas()).
#ifndef SOFIE_RT_CBLAS_PREFIX
#define SOFIE_RT_CBLAS_PREFIX scipy_cblas_
#endif
#define SOFIE_RT_CBLAS_CAT2(a, b) a##b
#define SOFIE_RT_CBLAS_CAT(a, b) SOFIE_RT_CBLAS_CAT2(a, b)
#define SOFIE_RT_BLAS(f) SOFIE_RT_CBLAS_CAT(SOFIE_RT_CBLAS_PREFIX, f)
extern "C" {
void SOFIE_RT_BLAS(sgemm)(int order, int transA, int transB, int M, int N, int K, float alpha, const float *A,
                          int lda, const float *B, int ldb, float beta, float *C, int ldc);
void SOFIE_RT_BLAS(dgemm)(int order, int transA, int transB, int M, int N, int K, double alpha, const double *A,
                          int lda, const double *B, int ldb, double beta, double *C, int ldc);
void SOFIE_RT_BLAS(sgemv)(int order, int trans, int M, int N, float alpha, const float *A, int lda, const float *x,
                          int incx, float beta, float *y, int incy);
void SOFIE_RT_BLAS(dgemv)(int order, int trans, int M, int N, double alpha, const double *A, int lda,
                          const double *x, int incx, double beta, double *y, int incy);
}

// Matrix-vector product through BLAS gemv (row major): y = alpha * op(A) x + beta * y, where
// A is [rows, cols] with leading dimension lda.
template <class T>
inline void gemv_blas(bool trans, std::int64_t rows, std::int64_t cols, T alpha, const T *A, std::int64_t lda,
                      const T *x, std::int64_t incx, T beta, T *y, std::int64_t incy)
{
   if (beta == T(0)) {
      // whatever the arena held (NaN included) must not leak into y through 0 * y
      const std::int64_t n = trans ? cols : rows;
      for (std::int64_t i = 0; i < n; ++i)
         y[i * incy] = T(0);
   }
   if constexpr (std::is_same<T, float>::value)
      SOFIE_RT_BLAS(sgemv)(101, trans ? 112 : 111, int(rows), int(cols), alpha, A, int(lda), x, int(incx),
                        beta == T(0) ? T(1) : beta, y, int(incy));
   else
      SOFIE_RT_BLAS(dgemv)(101, trans ? 112 : 111, int(rows), int(cols), alpha, A, int(lda), x, int(incx),
                        beta == T(0) ? T(1) : beta, y, int(incy));
}
#endif

template <class T>
inline void gemm(bool transA, bool transB, std::int64_t M, std::int64_t N, std::int64_t K, T alpha, const T *A,
                 std::int64_t lda, const T *B, std::int64_t ldb, T beta, T *C, std::int64_t ldc)
{
   if (M <= 0 || N <= 0)
      return;
#ifdef SOFIE_RT_CBLAS
   // Measured (300x300, batch 1): OpenBLAS 7.8 us, the axpy loop as cling compiles it 13 us, so
   // every size goes to BLAS when it is there. 101 = row major, 111/112 = no transpose/transpose.
   if (K > 0 && M < (std::int64_t(1) << 31) && N < (std::int64_t(1) << 31) && K < (std::int64_t(1) << 31)) {
      if constexpr (std::is_same<T, float>::value || std::is_same<T, double>::value) {
         // One row (batch 1) or one column: gemv. Measured under cling, OpenBLAS sgemv vs sgemm at
         // M=1 with B stored [K, N]: 300x300 0.85x, 7x300 0.95x, 32x128 0.96x; with N=1 (a dot
         // product per row) 0.4x. B stored [N, K] (transB) at M=1: gemv 0.3x-1.1x of sgemm.
         if (M == 1) {
            // y[N] = op(B)^T a, a is row 0 of op(A): contiguous unless A is transposed
            if (transB)
               gemv_blas<T>(false, N, K, alpha, B, ldb, A, transA ? lda : 1, beta, C, 1);
            else
               gemv_blas<T>(true, K, N, alpha, B, ldb, A, transA ? lda : 1, beta, C, 1);
            return;
         }
         if (N == 1) {
            // C[M, 1] = op(A) b, b is column 0 of op(B)
            gemv_blas<T>(transA, transA ? K : M, transA ? M : K, alpha, A, lda, B, transB ? 1 : ldb, beta, C,
                         ldc);
            return;
         }
      }
      if constexpr (std::is_same<T, float>::value) {
         SOFIE_RT_BLAS(sgemm)(101, transA ? 112 : 111, transB ? 112 : 111, int(M), int(N), int(K), alpha, A, int(lda),
                           B, int(ldb), beta, C, int(ldc));
         return;
      } else if constexpr (std::is_same<T, double>::value) {
         SOFIE_RT_BLAS(dgemm)(101, transA ? 112 : 111, transB ? 112 : 111, int(M), int(N), int(K), alpha, A, int(lda),
                           B, int(ldb), beta, C, int(ldc));
         return;
      }
   }
#endif
   gemm_loops(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// ---- scaled dot-product attention (ONNX Attention, opsets 23-25) ---------------------------
// K and V arrive already concatenated with the past cache, in [B, Hkv, S, D] layout; Q and Y
// are addressed through strides so that 3-D ([B, S, H*D]) and 4-D layouts share the code.
template <class T> struct AttentionArgs {
   std::int64_t B, Hq, Hkv, Sq, St, D, Dv;
   std::int64_t qb, qh, qi;          // strides of Q (the innermost stride is 1)
   std::int64_t yb, yh, yi;          // strides of Y
   const T *Q; const T *K; const T *V; T *Y;
   T scale_sqrt; T softcap;
   bool causal; std::int64_t past; std::int64_t left, right;
   const std::int64_t *nonpad;       // per-batch valid key count, or nullptr
   const void *mask; bool mask_bool; // additive float mask or boolean mask, or nullptr
   std::int64_t mb, mh, mi, mlen;    // mask strides (0 where broadcast) and its last dimension
   int qk_mode; T *qk;               // optional [B, Hq, Sq, St] output, or nullptr
   T *scores;                        // workspace of St elements
};

template <class T> inline void attention(const AttentionArgs<T> &a)
{
   const T ninf = -std::numeric_limits<T>::infinity();
   const std::int64_t group = a.Hq / a.Hkv;
   for (std::int64_t b = 0; b < a.B; ++b) {
      const std::int64_t offset = a.past > 0 || !a.nonpad ? a.past : a.nonpad[b] - a.Sq;
      for (std::int64_t h = 0; h < a.Hq; ++h) {
         const std::int64_t hk = h / group;
         const T *K = a.K + (b * a.Hkv + hk) * a.St * a.D;
         const T *V = a.V + (b * a.Hkv + hk) * a.St * a.Dv;
         for (std::int64_t i = 0; i < a.Sq; ++i) {
            const T *q = a.Q + b * a.qb + h * a.qh + i * a.qi;
            T *qk = a.qk ? a.qk + ((b * a.Hq + h) * a.Sq + i) * a.St : nullptr;
            bool any_allowed = false;
            bool any_nan = false; // a NaN score makes the row NaN (as the reference), not "fully masked"
            T smax = ninf;
            for (std::int64_t j = 0; j < a.St; ++j) {
               T s = T(0);
               const T *k = K + j * a.D;
               for (std::int64_t d = 0; d < a.D; ++d)
                  s += (q[d] * a.scale_sqrt) * (k[d] * a.scale_sqrt);
               if (a.softcap > T(0))
                  s = a.softcap * vm::tanh(s / a.softcap);
               T bias = T(0);
               if (a.mask) {
                  const std::int64_t m = b * a.mb + h * a.mh + i * a.mi + j;
                  if (j >= a.mlen)
                     bias = ninf;
                  else if (a.mask_bool)
                     bias = static_cast<const bool *>(a.mask)[m] ? T(0) : ninf;
                  else
                     bias = static_cast<const T *>(a.mask)[m];
               }
               const std::int64_t diff = i + offset - j;
               if (a.causal && diff < 0)
                  bias = ninf;
               if ((a.left >= 0 && diff > a.left) || (a.right >= 0 && -diff > a.right))
                  bias = ninf;
               if (a.nonpad && j >= a.nonpad[b])
                  bias = ninf;
               if (qk && a.qk_mode <= 1)
                  qk[j] = s;
               s += bias;
               if (qk && a.qk_mode == 2)
                  qk[j] = s;
               if (bias != ninf)
                  any_allowed = true;
               // a masked key takes no part, whatever its score (NaN included), as in the reference
               a.scores[j] = bias == ninf ? ninf : s;
               any_nan = any_nan || (bias != ninf && s != s);
               if (s > smax)
                  smax = s;
            }
            T *y = a.Y + b * a.yb + h * a.yh + i * a.yi;
            for (std::int64_t d = 0; d < a.Dv; ++d)
               y[d] = T(0);
            if (!any_nan && (!any_allowed || smax == ninf)) {
               // every probability is 0; 0 * V still carries V's NaN and infinities into y, as the
               // reference's product with the all-zero row does
               for (std::int64_t j = 0; j < a.St; ++j) {
                  if (qk && a.qk_mode == 3)
                     qk[j] = T(0);
                  const T *v = V + j * a.Dv;
                  for (std::int64_t d = 0; d < a.Dv; ++d)
                     y[d] += T(0) * v[d];
               }
               continue;
            }
            T sum = T(0);
            for (std::int64_t j = 0; j < a.St; ++j) {
               a.scores[j] = vm::exp(a.scores[j] - smax);
               sum += a.scores[j];
            }
            const T inv = T(1) / sum;
            for (std::int64_t j = 0; j < a.St; ++j) {
               const T p = a.scores[j] * inv;
               if (qk && a.qk_mode == 3)
                  qk[j] = p;
               const T *v = V + j * a.Dv;
               for (std::int64_t d = 0; d < a.Dv; ++d)
                  y[d] += p * v[d];
            }
         }
      }
   }
}

// TopK support. topk_key maps a value to an unsigned integer whose ascending order is the ONNX
// order: NaN (any payload or sign) above +inf and all NaNs equal, -0.0 equal to +0.0, so that
// equal keys are exactly the ties ONNX breaks by the lower index.
template <class T> inline auto topk_key(T x)
{
   if constexpr (std::is_same<T, float>::value || std::is_same<T, double>::value) {
      using U = typename std::conditional<sizeof(T) == 4, std::uint32_t, std::uint64_t>::type;
      constexpr U sign = U(1) << (sizeof(U) * 8 - 1);
      U u;
      std::memcpy(&u, &x, sizeof u);
      u = (u & sign) ? U(~u) : U(u | sign);
      u = (x == T(0)) ? sign : u;
      return (x != x) ? U(~U(0)) : u;
   } else if constexpr (sizeof(T) <= 4) {
      if constexpr (std::is_signed<T>::value)
         return std::uint32_t(std::int32_t(x)) ^ 0x80000000u;
      else
         return std::uint32_t(x);
   } else {
      if constexpr (std::is_signed<T>::value)
         return std::uint64_t(x) ^ (std::uint64_t(1) << 63);
      else
         return std::uint64_t(x);
   }
}

// ONNX TopK over outer x inner rows of n elements (stride inner): the k largest (or smallest)
// values, sorted, ties to the lower index. Each element becomes one integer key, (order bits,
// flipped for `largest`) above (index), so one ascending order on plain integers gives the
// ONNX order including the tie-break; the k first keys are found by nth_element and sorted.
// This avoids an index array sorted through a branchy comparator that re-reads the values.
// `work` holds n keys: 8 bytes each for types up to 32 bits, 16 bytes for 64-bit types.
// values or indices may be null (output not requested).
template <class T>
inline void topk(const T *x, std::int64_t outer, std::int64_t n, std::int64_t inner, std::int64_t k, bool largest,
                 T *values, std::int64_t *indices, void *work)
{
   using B = decltype(topk_key(T()));
   using K = typename std::conditional<sizeof(B) == 4, std::uint64_t, unsigned __int128>::type;
   constexpr int shift = int(sizeof(B)) * 8;
   if (sizeof(B) == 4 && n > std::int64_t(0xFFFFFFFFll))
      throw std::length_error("sofie_rt::topk: axis longer than 2^32 elements");
   const B flip = largest ? B(~B(0)) : B(0);
   const K low = (K(1) << shift) - 1;
   K *key = static_cast<K *>(work);
   for (std::int64_t o = 0; o < outer; ++o) {
      for (std::int64_t i = 0; i < inner; ++i) {
         const T *xb = x + o * n * inner + i;
         for (std::int64_t j = 0; j < n; ++j)
            key[j] = (K(B(topk_key(xb[j * inner]) ^ flip)) << shift) | K(j);
         if (k == 1) {
            K m = key[0];
            for (std::int64_t j = 1; j < n; ++j)
               m = key[j] < m ? key[j] : m;
            key[0] = m;
         } else if (k > 1) {
            if (k < n) {
               // key[k - 1] lands in place with only smaller keys before it
               std::nth_element(key, key + k - 1, key + n);
               std::sort(key, key + k - 1);
            } else {
               std::sort(key, key + n);
            }
         }
         const std::int64_t base = o * k * inner + i;
         for (std::int64_t j = 0; j < k; ++j) {
            const std::int64_t at = std::int64_t(key[j] & low);
            if (values)
               values[base + j * inner] = xb[at * inner];
            if (indices)
               indices[base + j * inner] = at;
         }
      }
   }
}

} // namespace sofie_rt

#endif
