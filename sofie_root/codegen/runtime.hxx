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
// the AVX-512 forms of a few kernels (vm::exp_n); never in a GPU compiler's host pass.
// SOFIE_RT_AVX512_VL: also the masked 8-lane loads and stores (rows::load_part, the dense tails)
#if defined(__AVX512F__) && !defined(__CUDACC__) && !defined(__HIPCC__)
#define SOFIE_RT_AVX512 1
#include <immintrin.h>
#if defined(__AVX512VL__)
#define SOFIE_RT_AVX512_VL 1
#endif
#endif

// mod_floor, int_div, nan_max, cast_float_to_int, round_float16, shift_left, ...: shared with the GPU runtime
#include "scalar.hxx"

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
      grow(n, what);
      return true;
   }

private:
   // Out of line and cold: the check above is inlined into every run, the allocation is not.
   __attribute__((noinline, cold)) void grow(std::size_t n, const char *what)
   {
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
   }

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
// x86-64, FZ (FPCR bit 24) on aarch64, and restores the caller's register on every exit,
// exceptions included. On x86-64 the whole MXCSR is restored as it was, so the sticky exception
// flags the run raised (inexact, overflow... which the math layer's clamps raise at will anyway)
// are not passed on: reading MXCSR again at the exit to keep them (STMXCSR) costs ~9 ns per call on
// AMD Zen 2, a third of a small model's run (Relu on [1, 128]: 26 -> 17 ns per call).
// Elsewhere it does nothing. Subnormal inputs read as (signed) zero inside the run and subnormal
// results become zero; a model opts out with the metadata property sofie_root.flush_denormals=0.
// The saved and the new control word live in the guard's own 64-byte line, written and read by
// STMXCSR/LDMXCSR directly (inline asm): when the compiler kept them in stack slots it copied them
// through, sharing a cache line with the run's other stack stores, some runs stalled at the
// LDMXCSR on AMD Zen 2 (Relu [1, 128] 54 ns instead of 15.5, Tanh 96 instead of 44.5, the same
// in every compiled copy; benchmarks/placement.py). A few small models still pay about 40 ns
// (NegativeLogLikelihoodLoss [1, 10] 43 against 6 without the guard). Loading read-only constant
// words for the usual caller's mode instead moved that stall to other models (Min/Max [1, 128],
// Hardmax), as did loading only the restored word from constants (Abs, Neg); over the 75 batch-1
// cases below 80 ns this form costs the least (docs/performance.md, "Per-operator table").
class alignas(64) FPModeGuard {
public:
   explicit FPModeGuard(bool enable) : fActive(enable)
   {
      if (!fActive)
         return;
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
      __asm__ __volatile__("stmxcsr %0" : "=m"(fSaved));
      fSet = fSaved | 0x8040u;
      __asm__ __volatile__("ldmxcsr %0" : : "m"(fSet));
#elif defined(__aarch64__)
      std::uint64_t v;
      __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
      fSaved64 = v;
      __asm__ __volatile__("msr fpcr, %0" : : "r"(v | (std::uint64_t(1) << 24)));
#endif
   }
   ~FPModeGuard()
   {
      if (!fActive)
         return;
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
      __asm__ __volatile__("ldmxcsr %0" : : "m"(fSaved));
#elif defined(__aarch64__)
      __asm__ __volatile__("msr fpcr, %0" : : "r"(fSaved64));
#endif
   }
   FPModeGuard(const FPModeGuard &) = delete;
   FPModeGuard &operator=(const FPModeGuard &) = delete;

private:
   bool fActive;
   unsigned fSaved, fSet; // written by the constructor when active (a zero-initialising store overlapping them stalled LDMXCSR)
   std::uint64_t fSaved64 = 0;
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
//   exp 0.9 ulp, expm1 1.6, log 0.8, log1p 1.5, tanh 5.4, sigmoid 3.2, softplus 1.9, erf 2.4, pow
//   1 (computed in double); gelu 6 ulp for x >= 0, 28 ulp (1.7e-6 relative) for -5 < x < 0 and
//   1.5e-5 relative below -5, where |gelu(x)| < 1.5e-6 (the rounding of z^2 inside erfc's exp).
// Every function returns NaN for NaN, handles +-0, +-inf and subnormal arguments as the C
// library does, overflows to inf and underflows to an exact 0 (exp and the functions built on it
// below -87.68; log-type functions produce subnormal results only when the caller has not enabled
// flush-to-zero, see FPModeGuard).
// These loops are bound by latency on AVX2 (an FMA takes 4-5 cycles, a polynomial by Horner is a
// chain of them) and by the two FMA pipes, which also take the multiplications, vmaxps/vminps and
// blends (the division runs beside them): the exp users evaluate their polynomials in Estrin's
// order where the accuracy allows it, tanh, sigmoid and erf are written for the fewest operations
// on those pipes (docs/performance.md, "tanh, sigmoid, erf and gelu by operation count"), and NaN is carried through clamps written
// x < lo ? lo : x (one vmaxps, NaN for NaN) rather than selected back at the end.
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
// Cody-Waite reduction for exp and log: 1/ln2, and ln2 = kLn2Hi - kLn2Lo, kLn2Hi with 9 significant
// bits so that n kLn2Hi is exact for the n that occur
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = 2.12194440e-4f;
// exp_poly's coefficients of r^6 ... r^2
constexpr float kExpC6 = 1.389340265e-03f, kExpC5 = 8.370262571e-03f, kExpC4 = 4.166708887e-02f,
                kExpC3 = 1.666650623e-01f, kExpC2 = 4.999999702e-01f;

// e^r for |r| <= ln2/2 + 2^-10: 1 + r + r^2 Q(r), Q of degree 4 fitted (Remez) to the relative error
// of e^r (4.3e-9, 0.07 ulp), by Horner (the last two steps add r and 1, the most accurate order).
SOFIE_RT_VM_INLINE float exp_poly(float r)
{
   float p = kExpC6;
   p = p * r + kExpC5;
   p = p * r + kExpC4;
   p = p * r + kExpC3;
   p = p * r + kExpC2;
   p = p * r + 1.0f;
   return p * r + 1.0f;
}

// The same polynomial in Estrin's order, 1 + (r + r^2 ((c2 + c3 r) + r^2 ((c4 + c5 r) + r^2 c6))):
// one more multiplication but a dependence chain of 4 FMAs instead of 6. These loops are bound by
// latency (AVX2 FMA: 4-5 cycles), so the shorter chain is faster inside exp_neg's users; its extra
// roundings cost up to 0.2 ulp (exp keeps Horner for its 1-ulp bound).
SOFIE_RT_VM_INLINE float exp_poly_estrin(float r)
{
   const float r2 = r * r;
   const float k = kExpC3 * r + kExpC2;
   const float l = kExpC5 * r + kExpC4;
   const float m = r2 * kExpC6 + l;
   const float q = r2 * m + k;
   return (r2 * q + r) + 1.0f;
}

// e^r on the same interval to degree 5, 1 + (r + r^2 ((c2 + c3 r) + r^2 (c4 + c5 r))), fitted
// (iteratively reweighted least squares) to the relative error of e^r: 1.1e-7 (0.9 ulp) with these
// float32 coefficients. One FMA fewer than exp_poly_estrin; sigmoid and erfc_pos (gelu) use it.
SOFIE_RT_VM_INLINE float exp_poly5_estrin(float r)
{
   const float r2 = r * r;
   const float k = 1.666712016e-01f * r + 4.999922216e-01f;
   const float l = 8.312392980e-03f * r + 4.189134762e-02f;
   const float q = r2 * l + k;
   return (r2 * q + r) + 1.0f;
}

// e^x = 2^n e^r, n = round(x / ln2), |r| <= ln2/2 (Cody-Waite: ln2 split in two so n*C1 is
// exact), e^r by exp_poly. x is clamped to [-88, 89] (NaN passes: x < lo ? lo : x is one vmaxps
// and NaN for NaN, so no select at the end), which keeps n + 127 in [0, 255]; t = 1.5 * 2^23 + 127
// + n holds it in its low bits and one shift makes the exponent field S = (n + 127) << 23. 2^n is
// applied as min(S, 2^127) times the rest (1 or 2), so that results between 2^127 and FLT_MAX
// (x up to 88.72) are finite and rounded once and x >= 88.73 gives inf; n = -127 makes the first
// factor 0, so e^x is an exact 0 below -87.68 (the subnormal results between -87.68 and -103.97
// are not produced; with flush-to-zero, as inside a model, they would be 0 anyway). 0.75 ulp.
SOFIE_RT_VM_INLINE float exp(float x)
{
   float c = x < -88.0f ? -88.0f : x;
   c = c > 89.0f ? 89.0f : c;
   const float t = c * kLog2e + 12583039.0f; // 1.5 * 2^23 + 127: rounds to an integer
   const float fn = t - 12583039.0f;
   const float r = (c - fn * kLn2Hi) + fn * kLn2Lo;
   const float p = vm::exp_poly(r);
   const std::int32_t e = std::int32_t(bits(t) << 23);   // (n + 127) << 23 (the 1.5 * 2^23 bits leave the word)
   const std::int32_t e1 = e < 0x7F000000 ? e : 0x7F000000; // 2^127 at most (vpminsd)
   return (p * from_bits(std::uint32_t(e1))) * from_bits(std::uint32_t(e - e1 + 0x3F800000));
}
SOFIE_RT_VM_INLINE double exp(double x) { return std::exp(x); }

#ifdef SOFIE_RT_AVX512
// exp of 16 lanes: vm::exp's reduction and polynomial, then p 2^n by one vscalefps, which gives
// the overflow to inf, the results between 2^127 and FLT_MAX and the subnormal ones, each rounded
// once, with no clamp of n and no second multiplication (vm::exp's 13 operations on the FMA pipes
// become 11). x is clamped to [-104, 89]: below -103.98 the result rounds to an exact 0, at 89
// (and +inf) it is inf; NaN passes both clamps (vmaxps/vminps return their second operand then).
SOFIE_RT_VM_INLINE __m512 exp16(__m512 x)
{
   __m512 c = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
   c = _mm512_min_ps(_mm512_set1_ps(89.0f), c);
   const __m512 t = _mm512_fmadd_ps(c, _mm512_set1_ps(kLog2e), _mm512_set1_ps(12582912.0f));
   const __m512 fn = _mm512_sub_ps(t, _mm512_set1_ps(12582912.0f)); // round(c / ln2), 1.5 * 2^23 as the shifter
   __m512 r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(kLn2Hi), c);
   r = _mm512_fmadd_ps(fn, _mm512_set1_ps(kLn2Lo), r);
   __m512 p = _mm512_set1_ps(kExpC6); // exp_poly, Horner's order
   p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpC5));
   p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpC4));
   p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpC3));
   p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpC2));
   p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
   p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
   return _mm512_scalef_ps(p, fn);
}
#endif

// y[i] = e^x[i] for n floats (the Exp node; y may be x). With AVX-512, 4 x 16 lanes per step by
// exp16 and a masked tail: [256, 128] took 5.5-5.7 us against 6.5-6.7 us for the vectorised
// vm::exp loop (Zen 4, benchmarks/alignment.py and ops.py; onnxruntime 5.5-5.8). The results are vm::exp's except that, when the caller has not
// enabled flush-to-zero (inside a model it has, see FPModeGuard), arguments between -103.98 and
// -87.68 give their subnormal results instead of 0.
inline void exp_n(const float *x, float *y, std::int64_t n)
{
#ifdef SOFIE_RT_AVX512
   std::int64_t i = 0;
   for (; i + 64 <= n; i += 64) {
      const __m512 a = exp16(_mm512_loadu_ps(x + i)), b = exp16(_mm512_loadu_ps(x + i + 16));
      const __m512 c = exp16(_mm512_loadu_ps(x + i + 32)), d = exp16(_mm512_loadu_ps(x + i + 48));
      _mm512_storeu_ps(y + i, a);
      _mm512_storeu_ps(y + i + 16, b);
      _mm512_storeu_ps(y + i + 32, c);
      _mm512_storeu_ps(y + i + 48, d);
   }
   for (; i < n; i += 16) {
      const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1u);
      _mm512_mask_storeu_ps(y + i, m, exp16(_mm512_maskz_loadu_ps(m, x + i)));
   }
#else
#if defined(__clang__)
#pragma clang loop interleave_count(4)
#endif
   for (std::int64_t i = 0; i < n; ++i)
      y[i] = vm::exp(x[i]);
#endif
}

// e^x for x <= 88 (or NaN, which propagates) inside functions that need no subnormal result:
// one scale factor 2^n built from t's bits by one shift (t = 1.5 * 2^23 + 127 + n), the clamp at
// -88 gives 2^-127 -> a zero factor, so e^x is an exact 0 below about -87.7 (subnormal above that
// down to -87.34, 0 with flush-to-zero), Estrin's polynomial. softplus uses it.
// e^c = p * scale for c <= 88 (or NaN) without a clamp: Estrin's polynomial p and the factor 2^n
// (n + 127 in [1, 254] for c in [-87.3, 88.3]; sigmoid and erfc_pos bound c themselves). Deg 5
// uses exp_poly5_estrin (their error bounds allow it; n = 128 at c = 89 gives scale = inf).
template <int Deg = 6>
SOFIE_RT_VM_INLINE float exp_parts(float c, float &scale)
{
   const float t = c * kLog2e + 12583039.0f; // 1.5 * 2^23 + 127: t's low bits hold n + 127
   const float fn = t - 12583039.0f;
   const float r = (c - fn * kLn2Hi) + fn * kLn2Lo;
   scale = from_bits(bits(t) << 23);
   if constexpr (Deg == 5)
      return vm::exp_poly5_estrin(r);
   else
      return vm::exp_poly_estrin(r);
}

SOFIE_RT_VM_INLINE float exp_neg(float x)
{
   float scale;
   const float p = vm::exp_parts(x < -88.0f ? -88.0f : x, scale);
   return p * scale;
}

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

// ln(1 + f) + e ln2 for f = m - 1, m in [sqrt(1/2), sqrt(2)): the Cephes polynomial, ln2 split as
// in exp. A template so that vm::log and the row kernels' 8-lane log8 are one polynomial (T is
// float or an 8-float vector; T{} + c is a constant of either).
template <class T>
SOFIE_RT_VM_INLINE T log_reduced(T f, T e)
{
   const T z = f * f;
   T p = T{} + 7.0376836292E-2f;
   p = p * f - 1.1514610310E-1f;
   p = p * f + 1.1676998740E-1f;
   p = p * f - 1.2420140846E-1f;
   p = p * f + 1.4249322787E-1f;
   p = p * f - 1.6668057665E-1f;
   p = p * f + 2.0000714765E-1f;
   p = p * f - 2.4999993993E-1f;
   p = p * f + 3.3333331174E-1f;
   const T y = f * z * p - e * kLn2Lo - 0.5f * z;
   return (f + y) + e * kLn2Hi;
}

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
   const float y = log_reduced(f, e);
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

// tanh(c) / c ~ P(z) / Q(z), z = c^2, for |c| <= 8.9: a [9/8] rational minimax fit (relative
// error 3.8e-8 with these float32 coefficients, against 2.4e-7 for the odd-13/even-6 rational of
// ONNX Runtime's MLAS and Eigen it replaces), Q monic so that its first step is an addition:
// 1 multiplication, 7 FMAs and an addition where the MLAS form took 1 + 9 FMAs. These loops are
// bound by the two FMA pipes (the division runs beside them), so the count is the speed: 0.30
// against 0.36 ns per element under cling (benchmarks/math_ops.py, docs/performance.md). A template
// so that vm::tanh and the 8-lane rows::tanh8 (fused 1x1 convolution, recurrent gates) are one
// rational, bit for bit (T is float or the 8-float vector).
template <class T>
SOFIE_RT_VM_INLINE T tanh_clamped(T c)
{
   const T z = c * c;
   T p = z * 1.717296988e-02f + 2.650154877e+01f;
   p = p * z + 4.495033203e+03f;
   p = p * z + 1.720687656e+05f;
   p = p * z + 1.285916125e+06f;
   T q = z + 4.225050659e+02f;
   q = q * z + 3.327562891e+04f;
   q = q * z + 6.007072500e+05f;
   q = q * z + 1.285916125e+06f;
   return c * (p / q);
}

// tanh: tanh_clamped on x clamped to [-8.9, 8.9] (beyond, tanh(x) rounds to 1 - 2^-24 or 1; the
// rational gives exactly 1 at 8.9, so tanh(+-inf) = +-1 and 1 + tanh(-inf) = 0, which Gelu's
// tanh form needs to give NaN at -inf). Written c * (p / q), not c * p / q, so that tiny and
// subnormal x keep their relative accuracy (c * p would underflow first). Max error 5.1 ulp, near
// |x| = 7-8.9 where results lie just below 1 and the roundings of p, q, p / q and c * (p / q) add
// up (some x there give 1 + 2^-23, as with the MLAS rational, whose bound was 5.3); 1.5 ulp below
// |x| = 0.6. The two clamps in sequence are one vmaxps and one vminps that keep NaN
// (x < lo ? lo : x is NaN for NaN); the nested x < lo ? lo : (x > hi ? hi : x) compiled to a
// compare, a vminps and a vblendvps (8% of tanh's time). -0 -> -0.
SOFIE_RT_VM_INLINE float tanh(float x)
{
   float c = x < -8.9f ? -8.9f : x;
   c = c > 8.9f ? 8.9f : c;
   return vm::tanh_clamped(c);
}
SOFIE_RT_VM_INLINE double tanh(double x) { return std::tanh(x); }

// sigmoid as 1 / (1 + e^-x): the relative error of E = e^-x passes to the result damped by
// E / (1 + E) <= 1, so tiny results of large negative x keep their relative accuracy without the
// e / (1 + e) branch and its select (and x need not stay live to pick it). -x is clamped to
// [-88, 89] (NaN passes both clamps); E = p * 2^n by exp_parts with the degree-5 polynomial. At
// the low end 2^n = 0 (E = 0, sigmoid = 1); at the high end n = 128 makes the exponent field 255,
// 2^n = inf and sigmoid = 0 exactly (x <= -88.38); between -88.38 and -87.33 the results are the
// subnormal ones (0 under flush-to-zero, as inside a model). 11 operations on the FMA pipes where
// the e / (1 + e) form took 12 with the degree-6 polynomial: 0.37 against 0.41 ns per element under
// cling. Max error 2.7 ulp (onnxruntime's MLAS rational: absolute accuracy only, millions of ulp
// for x below -9).
SOFIE_RT_VM_INLINE float sigmoid(float x)
{
   float c = -x;
   c = c < -88.0f ? -88.0f : c;
   c = c > 89.0f ? 89.0f : c;
   float scale;
   const float p = vm::exp_parts<5>(c, scale);
   return 1.0f / (1.0f + p * scale);
}
SOFIE_RT_VM_INLINE double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|): no overflow for large x, NaN through the log term.
// log1p(e) for e = e^-|x| in [0, 1] needs none of log1p's special cases: u = 1 + e in [1, 2],
// ln u - ((u - 1) - e) / u (Goldberg's correction, = e when u rounds to 1). Written out because
// g++ 12 stops vectorising the loop when log1p's selects meet exp's (found by the native test).
SOFIE_RT_VM_INLINE float softplus(float x)
{
   const float e = vm::exp_neg(-std::fabs(x));
   const float u = 1.0f + e;
   return (x > 0.0f ? x : 0.0f) + (vm::log(u) - ((u - 1.0f) - e) / u);
}
SOFIE_RT_VM_INLINE double softplus(double x) { return (x > 0.0 ? x : 0.0) + std::log1p(std::exp(-std::fabs(x))); }

// erfc(z) for z >= 0 as t e^(P(t) - z^2), t = 1 / (1 + z/2): the Chebyshev fit of Numerical
// Recipes (erfcc, relative error below 1.2e-7 for every z >= 0), P (degree 9) in Estrin's order.
// erfc(inf) = 0, erfc(NaN) = NaN.
SOFIE_RT_VM_INLINE float erfc_pos(float z)
{
   const float t = 1.0f / (1.0f + 0.5f * z);
   const float t2 = t * t;
   const float t4 = t2 * t2;
   const float p01 = 1.00002368f * t - 1.26551223f;
   const float p23 = 0.09678418f * t + 0.37409196f;
   const float p45 = 0.27886807f * t - 0.18628806f;
   const float p67 = 1.48851587f * t - 1.13520398f;
   const float p89 = 0.17087277f * t - 0.82215223f;
   const float p = t4 * (t4 * p89 + (t2 * p67 + p45)) + (t2 * p23 + p01);
   // e^(P - z^2) with the degree-5 polynomial: its 1.1e-7 relative error is small beside the
   // rounding of z^2 that bounds gelu's accuracy for x < 0 (measured: the same maximum errors),
   // and one FMA fewer is 6% of gelu's time
   const float arg = p - z * z;
   float scale;
   const float e = vm::exp_parts<5>(arg < -88.0f ? -88.0f : arg, scale);
   return t * (e * scale);
}

// erf as ONNX Runtime's MLAS splits it, with our own fits: x P(x^2) for |x| < 0.921875 (degree 5
// in x^2, relative error 1.6e-8) and 1 - 2^-Q(c) with the sign of x above, c = |x| clamped at 3.93
// (erf rounds to 1 beyond). Q = -log2 erfc(c) is a degree-6 polynomial fitted to the error it
// makes in erf (weighted by erfc(c): 4e-9 absolute, 0.07 ulp, with these float32 coefficients;
// a fit of -ln erfc to its own error needed degree 8), in Estrin's order. Base 2, so that
// n = round(-Q) and g = Q + n in [-0.5, 0.5] come from two additions (t = 1.5 * 2^23 + 127 - Q
// holds n + 127 in its low bits, one shift makes 2^n) with no multiplication by 1/ln2 nor a
// two-constant reduction; 2^-g is a degree-5 polynomial (relative error 1.1e-7, at most 0.35 ulp
// of erf where erfc is largest, 0.19), 1 - p * 2^n one FMA. P is evaluated on c^2, which is x^2
// wherever that branch is taken. These loops are bound by the FMA pipes: 20 operations on them
// where the e^-Q form took 27, 0.67 against 0.88 ns per element under cling. No division. NaN
// passes the clamp (a > 3.93 is false) and every later step. Max error 2.3 ulp (in the x P(x^2)
// branch; 1.7 above 0.92).
SOFIE_RT_VM_INLINE float erf(float x)
{
   const float a = std::fabs(x);
   const float c = a > 3.93f ? 3.93f : a;
   const float c2 = c * c;
   float s = -5.99085085e-4f;
   s = s * c2 + 4.99317956e-3f;
   s = s * c2 - 2.67666156e-2f;
   s = s * c2 + 1.12818161e-1f;
   s = s * c2 - 3.76124937e-1f;
   s = s * c2 + 1.12837915e+0f;
   const float c4 = c2 * c2;
   const float p01 = 1.626805186e+00f * c + 3.028473875e-04f;
   const float p23 = 1.498078406e-01f * c + 9.194090366e-01f;
   const float p45 = 4.373669624e-03f * c - 3.200097382e-02f;
   const float q = c4 * (c2 * -2.809418947e-04f + p45) + (c2 * p23 + p01);
   const float t = 12583039.0f - q; // 1.5 * 2^23 + 127 - Q: rounds to an integer, low bits n + 127
   const float fn = t - 12583039.0f;
   const float g = q + fn; // exact
   const float g2 = g * g;
   const float e01 = -6.931470037e-01f * g + 1.0f;
   const float e23 = -5.550733581e-02f * g + 2.402224243e-01f;
   const float e45 = -1.326472615e-03f * g + 9.671512991e-03f;
   const float e = g2 * (g2 * e45 + e23) + e01; // 2^-g
   const float scale = from_bits(bits(t) << 23);
   const float big = from_bits(bits(1.0f - e * scale) | (bits(x) & 0x80000000u)); // 1 - 2^-Q >= 0
   return a < 0.921875f ? x * s : big;
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

// sqrt without errno: std::sqrt of a float may set errno for a negative argument, so neither
// cling nor g++ (without -fno-math-errno) vectorises a loop calling it (measured: 9 ns per element,
// the Sqrt operator 0.2x ONNX Runtime at [256, 128]); clang's element-wise builtin is the IEEE
// square root with no errno, one vsqrtps per vector. NaN for x < 0, sqrt(-0) = -0.
SOFIE_RT_VM_INLINE float sqrt(float x)
{
#if defined(__clang__) && defined(__has_builtin)
#if __has_builtin(__builtin_elementwise_sqrt)
   return __builtin_elementwise_sqrt(x);
#else
   return std::sqrt(x);
#endif
#else
   return std::sqrt(x); // g++ vectorises it under -fno-math-errno (the native backend's flags)
#endif
}
SOFIE_RT_VM_INLINE double sqrt(double x) { return std::sqrt(x); }

// asin(s) for 0 <= s <= 0.5 given z = s^2 (the Cephes asinf polynomial, relative error < 2.5e-7).
SOFIE_RT_VM_INLINE float asin_kernel(float s, float z)
{
   float p = 4.2163199048E-2f;
   p = p * z + 2.4181311049E-2f;
   p = p * z + 4.5470025998E-2f;
   p = p * z + 7.4953002686E-2f;
   p = p * z + 1.6666752422E-1f;
   return s + s * z * p;
}

// asin: the kernel on |x| <= 0.5, pi/2 - 2 asin(sqrt((1 - |x|) / 2)) above (Cephes); NaN for |x| > 1.
SOFIE_RT_VM_INLINE float asin(float x)
{
   const float a = std::fabs(x);
   const bool big = a > 0.5f;
   const float z = big ? 0.5f * (1.0f - a) : a * a;
   const float s = big ? vm::sqrt(z) : a;
   const float k = asin_kernel(s, z);
   const float r = big ? 1.57079632679489662f - (k + k) : k;
   return std::copysign(r, x); // asin(-0) = -0; NaN stays NaN
}
SOFIE_RT_VM_INLINE double asin(double x) { return std::asin(x); }

// acos: pi/2 - asin(x) on |x| <= 0.5; 2 asin(sqrt((1 - x) / 2)) above 0.5 and pi minus that of -x
// below -0.5 (Cephes), so that no result near 0 comes from a cancellation.
SOFIE_RT_VM_INLINE float acos(float x)
{
   const float a = std::fabs(x);
   const bool big = a > 0.5f;
   const float z = big ? 0.5f * (1.0f - a) : x * x;
   const float s = big ? vm::sqrt(z) : x;
   const float k = asin_kernel(s, z);
   const float r = big ? (x > 0.0f ? k + k : 3.14159265358979324f - (k + k)) : 1.57079632679489662f - k;
   return x != x ? x : r;
}
SOFIE_RT_VM_INLINE double acos(double x) { return std::acos(x); }

// atan: |x| reduced to [0, tan(pi/8)] by atan(a) = pi/2 + atan(-1/a) (a > tan(3pi/8)) or
// pi/4 + atan((a - 1)/(a + 1)) (a > tan(pi/8)), one division for both, then the Cephes atanf
// polynomial. atan(+-inf) = +-pi/2, atan(-0) = -0.
SOFIE_RT_VM_INLINE float atan(float x)
{
   const float a = std::fabs(x);
   const bool b2 = a > 2.414213562373095f;
   const bool b1 = a > 0.4142135623730950f;
   const float num = b2 ? -1.0f : (b1 ? a - 1.0f : a);
   const float den = b2 ? a : (b1 ? a + 1.0f : 1.0f);
   const float y0 = b2 ? 1.57079632679489662f : (b1 ? 0.785398163397448310f : 0.0f);
   const float t = num / den;
   const float z = t * t;
   float p = 8.05374449538e-2f;
   p = p * z - 1.38776856032E-1f;
   p = p * z + 1.99777106478E-1f;
   p = p * z - 3.33329491539E-1f;
   const float r = y0 + (t + t * z * p);
   return std::copysign(r, x);
}
SOFIE_RT_VM_INLINE double atan(double x) { return std::atan(x); }

// sinh and cosh from one exp: e = e^|x| and (e -+ 1/e) / 2 below 80; above, e^(|x| - 64) times
// the float nearest e^64 / 2 (|x| - 64 is exact there), so that results up to the overflow edge
// (|x| = 89.4) are finite and rounded about twice, not e^|x| overflowing first. sinh uses the Cephes
// odd polynomial for |x| < 1, where e - 1/e cancels.
SOFIE_RT_VM_INLINE float sinh(float x)
{
   const float a = std::fabs(x);
   const bool huge = a > 80.0f;
   const float e = vm::exp(huge ? a - 64.0f : a);
   const float big = huge ? e * 3.11757454e27f : 0.5f * e - 0.5f / e;
   const float z = x * x;
   float p = 2.03721912945E-4f;
   p = p * z + 8.33028376239E-3f;
   p = p * z + 1.66667160211E-1f;
   const float small = a + a * z * p;
   return std::copysign(a < 1.0f ? small : big, x);
}
SOFIE_RT_VM_INLINE double sinh(double x) { return std::sinh(x); }

SOFIE_RT_VM_INLINE float cosh(float x)
{
   const float a = std::fabs(x);
   const bool huge = a > 80.0f;
   const float e = vm::exp(huge ? a - 64.0f : a);
   return huge ? e * 3.11757454e27f : 0.5f * e + 0.5f / e;
}
SOFIE_RT_VM_INLINE double cosh(double x) { return std::cosh(x); }

// asinh, acosh, atanh through one log1p each, in the forms of fdlibm that avoid cancellation:
// asinh(a) = log1p(a + a^2 / (1 + sqrt(1 + a^2))) for a < 2, log(2a + 1 / (a + sqrt(a^2 + 1)))
// up to 2^28 and log(a) + ln 2 beyond (where a^2 would overflow).
SOFIE_RT_VM_INLINE float asinh(float x)
{
   const float a = std::fabs(x);
   const bool huge = a >= 268435456.0f;
   const float s = vm::sqrt(a * a + 1.0f);
   const float v = a < 2.0f ? a + a * a / (1.0f + s) : (huge ? a : 2.0f * a + 1.0f / (s + a)) - 1.0f;
   const float r = vm::log1p(v) + (huge ? 0.693147180559945309f : 0.0f);
   return std::copysign(a < 2.44140625e-4f ? a : r, x); // below 2^-12, asinh(x) = x in float
}
SOFIE_RT_VM_INLINE double asinh(double x) { return std::asinh(x); }

// acosh(x) = log1p(t + sqrt(2t + t^2)), t = x - 1 (exact), for x <= 2; log(2x - 1/(x + sqrt(x^2 - 1)))
// up to 2^28, log(x) + ln 2 beyond; NaN below 1.
SOFIE_RT_VM_INLINE float acosh(float x)
{
   const float t = x - 1.0f;
   const bool huge = x >= 268435456.0f;
   const float v = x <= 2.0f ? t + vm::sqrt(2.0f * t + t * t)
                             : (huge ? x : 2.0f * x - 1.0f / (x + vm::sqrt(x * x - 1.0f))) - 1.0f;
   const float r = vm::log1p(v) + (huge ? 0.693147180559945309f : 0.0f);
   return x >= 1.0f ? r : (x != x ? x : std::numeric_limits<float>::quiet_NaN());
}
SOFIE_RT_VM_INLINE double acosh(double x) { return std::acosh(x); }

// atanh(a) = log1p(2a + 2a^2 / (1 - a)) / 2 for a < 0.5 (no cancellation near 0), log1p(2a / (1 - a)) / 2
// above; +-inf at +-1, NaN beyond.
SOFIE_RT_VM_INLINE float atanh(float x)
{
   const float a = std::fabs(x);
   const float d = 1.0f - a;
   const float v = a < 0.5f ? 2.0f * a + 2.0f * a * a / d : 2.0f * a / d;
   return std::copysign(0.5f * vm::log1p(v), x);
}
SOFIE_RT_VM_INLINE double atanh(double x) { return std::atanh(x); }

// sin, cos and tan of float32: the argument is reduced in double, k = nearest integer to
// |x| 2/pi and r = |x| - k pi/2 by two FMAs with pi/2 split in two doubles (the first FMA is
// exact: |r| is below the last bit of k C1), then the Cephes sinf/cosf/tanf polynomials in float
// on r in [-pi/4, pi/4]. Valid (within the documented bounds) for |x| < 2^28, where k pi/2's
// third part is below 2^-79; map_trig sends larger arguments, infinities and NaN to the library.
template <int Which> SOFIE_RT_VM_INLINE float trig_reduced(float x) // 0: sin, 1: cos, 2: tan
{
   const float a = std::fabs(x);
   const double ad = double(a < 268435456.0f ? a : 0.0f); // larger: done again by the library
   const double k = std::nearbyint(ad * 0.63661977236758134);
   double rd = std::fma(-k, 1.5707963267948966, ad);
   rd = std::fma(-k, 6.123233995736766e-17, rd);
   const float r = float(rd);
   const std::int32_t q = std::int32_t(k) & 3;
   const float z = r * r;
   float ps = -1.9515295891E-4f;
   ps = ps * z + 8.3321608736E-3f;
   ps = ps * z - 1.6666654611E-1f;
   const float s = r + r * z * ps;
   float pc = 2.443315711809948E-5f;
   pc = pc * z - 1.388731625493765E-3f;
   pc = pc * z + 4.166664568298827E-2f;
   const float c = 1.0f - 0.5f * z + z * z * pc;
   float v;
   std::uint32_t neg;
   if constexpr (Which == 0) {
      v = (q & 1) ? c : s;
      neg = std::uint32_t(q >> 1) ^ (bits(x) >> 31); // sin is odd
   } else if constexpr (Which == 1) {
      v = (q & 1) ? s : c;
      neg = std::uint32_t(((q + 1) >> 1) & 1);
   } else {
      float pt = 9.38540185543E-3f;
      pt = pt * z + 3.11992232697E-3f;
      pt = pt * z + 2.44301354525E-2f;
      pt = pt * z + 5.34112807005E-2f;
      pt = pt * z + 1.33387994085E-1f;
      pt = pt * z + 3.33331568548E-1f;
      const float t = r + r * z * pt;
      v = (q & 1) ? -1.0f / t : t;
      neg = bits(x) >> 31; // tan is odd
   }
   return from_bits(bits(v) ^ (neg << 31));
}
SOFIE_RT_VM_INLINE float sin_reduced(float x) { return trig_reduced<0>(x); }
SOFIE_RT_VM_INLINE float cos_reduced(float x) { return trig_reduced<1>(x); }
SOFIE_RT_VM_INLINE float tan_reduced(float x) { return trig_reduced<2>(x); }

// y[i] = sin/cos/tan(x[i]) (Which 0/1/2) over blocks of 256: the vectorised trig_reduced into a
// block buffer, with a vectorised test for |x| >= 2^28 (or inf, NaN); only a block holding one is
// gone through again with the library for those elements. The buffer lets y be x (in place).
template <int Which> inline void map_trig(const float *x, float *y, std::int64_t n)
{
   float tmp[256];
   for (std::int64_t b = 0; b < n; b += 256) {
      const std::int64_t m = n - b < 256 ? n - b : 256;
      const float *xb = x + b;
      int huge = 0;
      for (std::int64_t i = 0; i < m; ++i) {
         tmp[i] = trig_reduced<Which>(xb[i]);
         huge |= !(std::fabs(xb[i]) < 268435456.0f);
      }
      if (huge) {
         for (std::int64_t i = 0; i < m; ++i)
            if (!(std::fabs(xb[i]) < 268435456.0f))
               tmp[i] = Which == 0 ? std::sin(xb[i]) : (Which == 1 ? std::cos(xb[i]) : std::tan(xb[i]));
      }
      std::memcpy(y + b, tmp, std::size_t(m) * sizeof(float));
   }
}

// x^0.5 as pow gives it: sqrt, except pow(-0, 0.5) = +0 (sqrt(-0) = -0) and pow(-inf, 0.5) = +inf
// (sqrt(-inf) is NaN).
template <class T> SOFIE_RT_VM_INLINE T pow_half(T x)
{
   return x == -std::numeric_limits<T>::infinity() ? -x : std::fabs(vm::sqrt(x));
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
   return vm::tanh(x); // the same MLAS rational, clamped at +-9
}
inline double gate_tanh(double x) { return std::tanh(x); }
inline float gate_sigmoid(float x)
{
   float c = x < -18.f ? -18.f : x; // two clamps in sequence (vmaxps, vminps), as in vm::tanh
   c = c > 18.f ? 18.f : c;
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
   float r = c * p / q + 0.5f;
   r = r < 0.f ? 0.f : r;
   return r > 1.f ? 1.f : r;
}
inline double gate_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// The range of x[0, n) joined with 0 (DynamicQuantizeLinear's), NaN elements skipped. Written with
// GCC/clang vector types: a select chain over the elements is a serial dependence that neither
// compiler vectorises without -ffast-math (fmaxf reductions neither), which made the operator
// 0.1x ONNX Runtime at [256, 128].
inline void range_with_zero(const float *x, std::int64_t n, float &lo, float &hi)
{
   typedef float v8 __attribute__((vector_size(32)));
   v8 mx = {}, mn = {}, mx2 = {}, mn2 = {};
   std::int64_t i = 0;
   for (; i + 16 <= n; i += 16) {
      v8 a, b;
      std::memcpy(&a, x + i, sizeof a);
      std::memcpy(&b, x + i + 8, sizeof b);
      mx = a > mx ? a : mx;
      mn = a < mn ? a : mn;
      mx2 = b > mx2 ? b : mx2;
      mn2 = b < mn2 ? b : mn2;
   }
   float h = 0.f, l = 0.f;
   for (int k = 0; k < 8; ++k) {
      h = mx[k] > h ? mx[k] : h;
      h = mx2[k] > h ? mx2[k] : h;
      l = mn[k] < l ? mn[k] : l;
      l = mn2[k] < l ? mn2[k] : l;
   }
   for (; i < n; ++i) {
      h = x[i] > h ? x[i] : h;
      l = x[i] < l ? x[i] : l;
   }
   lo = l;
   hi = h;
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

// ---- row kernels: softmax, normalisations, reductions (namespace sofie_rt::rows) -----------
// Float rows processed 8 lanes at a time with the GCC/clang vector extension, so that the code is
// vectorised the same way under cling and g++ (cling's loop vectoriser leaves reductions written
// as 8 partial accumulators mostly scalar, and cling inlines only always_inline functions, so
// every helper used per element here is forced inline). A row's last n % 8 values are loaded into
// a vector padded with a neutral value (-inf for a maximum, 0 for a sum). Elsewhere (other
// compilers, double) the same functions are plain loops.
namespace rows {

#if defined(__GNUC__) || defined(__clang__)
#define SOFIE_RT_ROWS_VEC 1
typedef float f8 __attribute__((vector_size(32)));
typedef float f8u __attribute__((vector_size(32), aligned(4), __may_alias__));
typedef std::int32_t i8 __attribute__((vector_size(32)));
typedef std::uint32_t u8 __attribute__((vector_size(32))); // shifts that may reach the sign bit

SOFIE_RT_VM_INLINE f8 load(const float *p) { return *reinterpret_cast<const f8u *>(p); }
SOFIE_RT_VM_INLINE void store(float *p, f8 v) { *reinterpret_cast<f8u *>(p) = v; }
SOFIE_RT_VM_INLINE f8 splat(float v) { return f8{v, v, v, v, v, v, v, v}; }
// the first n (< 8) values at p, the other lanes `fill`
#ifdef SOFIE_RT_AVX512_VL
// one masked load or store (lanes past n are neither read nor written, so they may lie past the
// end of a buffer); lane by lane these were up to 7 scalar loads or stores
SOFIE_RT_VM_INLINE f8 load_part(const float *p, std::int64_t n, float fill)
{
   return _mm256_mask_loadu_ps(_mm256_set1_ps(fill), __mmask8((1u << n) - 1u), p);
}
SOFIE_RT_VM_INLINE void store_part(float *p, f8 v, std::int64_t n)
{
   _mm256_mask_storeu_ps(p, __mmask8((1u << n) - 1u), v);
}
#else
SOFIE_RT_VM_INLINE f8 load_part(const float *p, std::int64_t n, float fill)
{
   f8 v = splat(fill);
   for (int l = 0; l < n; ++l)
      v[l] = p[l];
   return v;
}
SOFIE_RT_VM_INLINE void store_part(float *p, f8 v, std::int64_t n)
{
   for (int l = 0; l < n; ++l)
      p[l] = v[l];
}
#endif
SOFIE_RT_VM_INLINE f8 vmax(f8 a, f8 b) { return a > b ? a : b; } // NaN in a is left out
SOFIE_RT_VM_INLINE f8 vmin(f8 a, f8 b) { return a < b ? a : b; }
#if defined(__clang__) || __GNUC__ >= 12
// horizontal reductions by halving shuffles: 3 dependent steps instead of 7
SOFIE_RT_VM_INLINE f8 swap4(f8 v) { return __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3); }
SOFIE_RT_VM_INLINE f8 swap2(f8 v) { return __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5); }
SOFIE_RT_VM_INLINE f8 swap1(f8 v) { return __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6); }
SOFIE_RT_VM_INLINE float hmax(f8 v)
{
   v = vmax(v, swap4(v));
   v = vmax(v, swap2(v));
   return vmax(v, swap1(v))[0];
}
SOFIE_RT_VM_INLINE float hmin(f8 v)
{
   v = vmin(v, swap4(v));
   v = vmin(v, swap2(v));
   return vmin(v, swap1(v))[0];
}
SOFIE_RT_VM_INLINE float hsum(f8 v)
{
   v += swap4(v);
   v += swap2(v);
   return (v + swap1(v))[0];
}
SOFIE_RT_VM_INLINE float hprod(f8 v)
{
   v *= swap4(v);
   v *= swap2(v);
   return (v * swap1(v))[0];
}
#else
SOFIE_RT_VM_INLINE float hmax(f8 v)
{
   float m = v[0];
   for (int l = 1; l < 8; ++l)
      m = v[l] > m ? v[l] : m;
   return m;
}
SOFIE_RT_VM_INLINE float hmin(f8 v)
{
   float m = v[0];
   for (int l = 1; l < 8; ++l)
      m = v[l] < m ? v[l] : m;
   return m;
}
SOFIE_RT_VM_INLINE float hsum(f8 v)
{
   return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}
SOFIE_RT_VM_INLINE float hprod(f8 v)
{
   return ((v[0] * v[4]) * (v[2] * v[6])) * ((v[1] * v[5]) * (v[3] * v[7]));
}
#endif
SOFIE_RT_VM_INLINE bool any(i8 m)
{
   std::int32_t r = 0;
   for (int l = 0; l < 8; ++l)
      r |= m[l];
   return r != 0;
}

// The first n (< 8) values at p, the other lanes `fill`, by one full-width load and a select when
// `wide` (the 8 floats at p lie inside the buffer: a row followed by another), lane by lane if not.
SOFIE_RT_VM_INLINE f8 load_tail(const float *p, std::int64_t n, float fill, bool wide)
{
   if (wide) {
      const i8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
      return lane < std::int32_t(n) ? load(p) : splat(fill);
   }
   return load_part(p, n, fill);
}
// Stores the first n (< 8) lanes of v at p; when `wide`, by a full-width store of v merged with
// what p holds (the other lanes are written back unchanged, so in-place rows stay intact).
SOFIE_RT_VM_INLINE void store_tail(float *p, f8 v, std::int64_t n, bool wide)
{
   if (wide) {
      const i8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
      store(p, lane < std::int32_t(n) ? v : load(p));
      return;
   }
   store_part(p, v, n);
}

// Horizontal reductions of 8 rows at once: lane k of the result is the sum (maximum, minimum) of
// the lanes of v[k]. A transpose by halving shuffles, 14 shuffles and 7 operations for the 8
// rows where 8 separate reductions take 24 and 24, and no dependency chain per row.
struct AddOp {
   static SOFIE_RT_VM_INLINE f8 f(f8 a, f8 b) { return a + b; }
};
struct MaxOp {
   static SOFIE_RT_VM_INLINE f8 f(f8 a, f8 b) { return vmax(a, b); }
};
struct MinOp {
   static SOFIE_RT_VM_INLINE f8 f(f8 a, f8 b) { return vmin(a, b); }
};
template <class Op> SOFIE_RT_VM_INLINE f8 reduce8x8(const f8 *v)
{
#if defined(__clang__) || __GNUC__ >= 12
   // rows taken in the order 0 4 1 5 2 6 3 7, so that the last step lands row k in lane k
   const f8 b0 = Op::f(__builtin_shufflevector(v[0], v[4], 0, 1, 2, 3, 8, 9, 10, 11),
                       __builtin_shufflevector(v[0], v[4], 4, 5, 6, 7, 12, 13, 14, 15));
   const f8 b1 = Op::f(__builtin_shufflevector(v[1], v[5], 0, 1, 2, 3, 8, 9, 10, 11),
                       __builtin_shufflevector(v[1], v[5], 4, 5, 6, 7, 12, 13, 14, 15));
   const f8 b2 = Op::f(__builtin_shufflevector(v[2], v[6], 0, 1, 2, 3, 8, 9, 10, 11),
                       __builtin_shufflevector(v[2], v[6], 4, 5, 6, 7, 12, 13, 14, 15));
   const f8 b3 = Op::f(__builtin_shufflevector(v[3], v[7], 0, 1, 2, 3, 8, 9, 10, 11),
                       __builtin_shufflevector(v[3], v[7], 4, 5, 6, 7, 12, 13, 14, 15));
   const f8 c0 = Op::f(__builtin_shufflevector(b0, b1, 0, 1, 8, 9, 4, 5, 12, 13),
                       __builtin_shufflevector(b0, b1, 2, 3, 10, 11, 6, 7, 14, 15));
   const f8 c1 = Op::f(__builtin_shufflevector(b2, b3, 0, 1, 8, 9, 4, 5, 12, 13),
                       __builtin_shufflevector(b2, b3, 2, 3, 10, 11, 6, 7, 14, 15));
   return Op::f(__builtin_shufflevector(c0, c1, 0, 2, 8, 10, 4, 6, 12, 14),
                __builtin_shufflevector(c0, c1, 1, 3, 9, 11, 5, 7, 13, 15));
#else
   f8 r;
   for (int k = 0; k < 8; ++k) {
      f8 a = v[k];
      for (int l = 1; l < 8; ++l)
         a[0] = Op::f(a, splat(v[k][l]))[0];
      r[k] = a[0];
   }
   return r;
#endif
}

// exp on 8 lanes: Cephes' range reduction and polynomial (0.97 ulp), the form vm::exp had before its
// degree-6 Remez polynomial; used by the row kernels that need the whole range (ReduceLogSumExp).
SOFIE_RT_VM_INLINE f8 exp8(f8 x)
{
   const f8 lo = splat(-104.0f), hi = splat(89.0f);
   const f8 xc = x > lo ? (x < hi ? x : hi) : lo;
   const f8 t = xc * vm::kLog2e + 12582912.0f;
   const f8 fn = t - 12582912.0f;
   const i8 n = (i8)t - 0x4B400000;
   const f8 r = (xc - fn * vm::kLn2Hi) + fn * vm::kLn2Lo;
   f8 p = splat(1.9875691500E-4f);
   p = p * r + 1.3981999507E-3f;
   p = p * r + 8.3334519073E-3f;
   p = p * r + 4.1665795894E-2f;
   p = p * r + 1.6666665459E-1f;
   p = p * r + 5.0000001201E-1f;
   p = p * r * r + r + 1.0f;
   const i8 n1 = n >> 1;
   const i8 n2 = n - n1;
   const f8 y = (p * (f8)((n1 + 127) << 23)) * (f8)((n2 + 127) << 23);
   return x != x ? x : y;
}

// p[P], p[P + 2], ..., p[P + 14] of 16 floats: P = 0 is a stride-2 row of a convolution (even8),
// P = 1 the other phase (odd8; a stride-2 convolution splits its input rows into the two once,
// so that every tap reads contiguous values). Reads all 16.
template <int P>
SOFIE_RT_VM_INLINE f8 phase8(const float *p)
{
#if defined(__clang__) || __GNUC__ >= 12
   return __builtin_shufflevector(load(p), load(p + 8), P, P + 2, P + 4, P + 6, P + 8, P + 10, P + 12, P + 14);
#else
   f8 v;
   for (int l = 0; l < 8; ++l)
      v[l] = p[2 * l + P];
   return v;
#endif
}
// the same phase of two vectors a (values 0-7) and b (values 8-15)
template <int P>
SOFIE_RT_VM_INLINE f8 phase8v(f8 a, f8 b)
{
#if defined(__clang__) || __GNUC__ >= 12
   return __builtin_shufflevector(a, b, P, P + 2, P + 4, P + 6, P + 8, P + 10, P + 12, P + 14);
#else
   f8 v;
   for (int l = 0; l < 4; ++l) {
      v[l] = a[2 * l + P];
      v[l + 4] = b[2 * l + P];
   }
   return v;
#endif
}
SOFIE_RT_VM_INLINE f8 even8(const float *p) { return phase8<0>(p); }
SOFIE_RT_VM_INLINE f8 odd8(const float *p) { return phase8<1>(p); }

// one 2 x 2 window per lane from the two rows' values: r0a, r0b (row 0, 16 values), r1a, r1b
SOFIE_RT_VM_INLINE f8 maxpool_fold8(f8 r0a, f8 r0b, f8 r1a, f8 r1b)
{
   f8 m = vmax(phase8v<0>(r0a, r0b), splat(-std::numeric_limits<float>::infinity()));
   m = vmax(phase8v<1>(r0a, r0b), m);
   m = vmax(phase8v<0>(r1a, r1b), m);
   return vmax(phase8v<1>(r1a, r1b), m);
}
SOFIE_RT_VM_INLINE float maxpool_fold1(const float *r0, const float *r1)
{
   float m = -std::numeric_limits<float>::infinity();
   m = r0[0] > m ? r0[0] : m;
   m = r0[1] > m ? r0[1] : m;
   m = r1[0] > m ? r1[0] : m;
   return r1[1] > m ? r1[1] : m;
}
// MaxPool with a 2 x 2 window, stride 2 and no padding over `planes` planes of H x W floats into
// H/2 x W/2 (a last odd row or column is not read): 8 outputs per step from four vectors of the
// two input rows, split into their even and odd columns. Each output folds its window as the
// generated loop does, acc = v > acc ? v : acc from -inf in the order (0,0), (0,1), (1,0), (1,1)
// (so NaN is skipped, docs/conformance.md). Planes 8 wide (W = 8, H even) are taken
// two output rows per step; the generated loop, one scalar fold per output, ran [N, 64, 8, 8] at
// 0.4x onnxruntime (benchmarks/breadth.py).
inline void maxpool2x2(const float *x, float *y, std::int64_t planes, std::int64_t H, std::int64_t W)
{
   const std::int64_t OH = H / 2, OW = W / 2;
   if (W == 8 && H % 2 == 0) {
      // output row q reads the 16 floats at x + 16 q (its two input rows), writes 4 at y + 4 q
      const std::int64_t Q = planes * OH;
      std::int64_t q = 0;
      for (; q + 2 <= Q; q += 2) {
         const float *p = x + q * 16;
         store(y + q * 4, maxpool_fold8(load(p), load(p + 16), load(p + 8), load(p + 24)));
      }
      for (; q < Q; ++q)
         for (std::int64_t j = 0; j < 4; ++j)
            y[q * 4 + j] = maxpool_fold1(x + q * 16 + 2 * j, x + q * 16 + 8 + 2 * j);
      return;
   }
   for (std::int64_t pl = 0; pl < planes; ++pl)
      for (std::int64_t i = 0; i < OH; ++i) {
         const float *r0 = x + (pl * H + 2 * i) * W, *r1 = r0 + W;
         float *o = y + (pl * OH + i) * OW;
         std::int64_t j = 0;
         for (; j + 8 <= OW; j += 8)
            store(o + j, maxpool_fold8(load(r0 + 2 * j), load(r0 + 2 * j + 8), load(r1 + 2 * j),
                                       load(r1 + 2 * j + 8)));
         for (; j < OW; ++j)
            o[j] = maxpool_fold1(r0 + 2 * j, r1 + 2 * j);
      }
}

// vm::tanh on 8 lanes: the same clamps and rational (vm::tanh_clamped), bit for bit (the
// register-blocked 1x1 convolution applies it to its accumulators before the single store).
SOFIE_RT_VM_INLINE f8 tanh8(f8 x)
{
   const f8 lo = splat(-8.9f), hi = splat(8.9f);
   f8 c = x < lo ? lo : x;
   c = c > hi ? hi : c;
   return vm::tanh_clamped(c);
}

// e^x for x <= 0 or NaN (softmax after subtracting the maximum), in 12 vector operations where
// vm::exp takes 24: vm::exp's range reduction; e^r by a degree-5 polynomial (minimax for the
// relative error on [-ln2/2, ln2/2]; the whole function is within 1.8e-7 relative error, 1.5 ulp,
// of e^x on [-87, 0], against 0.7 ulp for vm::exp's degree-7 one: softmax sums and divides it
// anyway); 2^n built by one shift: the rounding constant carries the exponent bias, so the low
// bits of t are n + 127 and t << 23 is the float 2^n. x is clamped at -88 (n = -127), where that
// factor is +0: the result is then exactly 0, as it must be for a masked score (-1e9, -inf);
// between -87.7 and -86.5 it is subnormal (0 under a model's flush-to-zero). The clamp keeps NaN
// (max(lo, x) takes x when either is NaN) and NaN * 0 is NaN, so NaN needs no select. Positive x
// is not handled.
SOFIE_RT_VM_INLINE f8 exp8_nonpos(f8 x)
{
   const f8 lo = splat(-88.0f);
   const f8 xc = lo > x ? lo : x;
   const f8 t = xc * vm::kLog2e + 12583039.0f; // 1.5 * 2^23 + 127
   const f8 fn = t - 12583039.0f;
   const f8 r = (xc - fn * vm::kLn2Hi) + fn * vm::kLn2Lo;
   f8 p = splat(8.31251033e-3f);
   p = p * r + 4.18900996e-2f;
   p = p * r + 1.66671142e-1f;
   p = p * r + 4.99992311e-1f;
   p = p * r + 1.0f;
   p = p * r + 1.0f;
   return p * (f8)((u8)t << 23);
}

// vm::log on 8 lanes: the same reduction, polynomial (vm::log_reduced) and special cases.
SOFIE_RT_VM_INLINE f8 log8(f8 x)
{
   const f8 inf = splat(std::numeric_limits<float>::infinity());
   const i8 sub = x < 1.17549435e-38f;
   const f8 xs = sub ? x * 8388608.0f : x;
   const i8 ix = (i8)xs - 0x3F3504F3;
   const i8 k = ix >> 23;
   const f8 m = (f8)((i8)xs - (ix & std::int32_t(0xFF800000u)));
   const f8 e = __builtin_convertvector(k, f8) - (sub ? splat(23.0f) : splat(0.0f));
   const f8 f = m - 1.0f;
   const f8 y = vm::log_reduced(f, e);
   const f8 special = xs == 0.0f ? -inf : (xs == inf ? xs : splat(std::numeric_limits<float>::quiet_NaN()));
   const f8 r = ((xs > 0.0f) & (xs < inf)) ? y : special;
   return x != x ? x : r;
}
#endif

// Softmax (or log-softmax) of `rows` contiguous rows of n values. The maximum leaves NaN out (a
// NaN then makes its row NaN through the sum, as the reference's x - max(x) does); exp and the
// sum are one pass; a row of -inf gives NaN (-inf - -inf), as the reference.
template <class T> inline void softmax(const T *x, T *y, std::int64_t rows, std::int64_t n, bool log)
{
   for (std::int64_t r = 0; r < rows; ++r) {
      const T *xr = x + r * n;
      T *yr = y + r * n;
      T m = -std::numeric_limits<T>::infinity();
      for (std::int64_t i = 0; i < n; ++i)
         m = xr[i] > m ? xr[i] : m;
      T s = 0;
      for (std::int64_t i = 0; i < n; ++i) {
         yr[i] = vm::exp(xr[i] - m);
         s += yr[i];
      }
      if (log) {
         const T c = m + vm::log(s);
         for (std::int64_t i = 0; i < n; ++i)
            yr[i] = xr[i] - c;
      } else {
         const T inv = T(1) / s;
         for (std::int64_t i = 0; i < n; ++i)
            yr[i] *= inv;
      }
   }
}

#ifdef SOFIE_RT_ROWS_VEC
// Up to 8 rows of a float softmax (log-softmax) together, in three passes each over the 8 rows:
// the maxima, exp and the sums, the scaling. A row of 10 or 40 values alone is a chain of
// dependent steps (maximum, horizontal reduction, exp, sum, reduction, division or log, output);
// 8 independent rows per pass let the core overlap them, and their horizontal reductions, the
// division and the log are done once for the 8 (reduce8x8, log8). `avail` counts the values
// from x (and y) to the end of the buffers: a row's tail is read and written full width when the
// next 8 values are still inside them.
template <bool LOG>
inline void softmax_rows8(const float *x, float *y, std::int64_t nr, std::int64_t n, std::int64_t avail)
{
   const float ninf = -std::numeric_limits<float>::infinity();
   const std::int64_t nv = n & ~std::int64_t(7), rem = n - nv;
   f8 acc[8];
   for (int k = 0; k < 8; ++k)
      acc[k] = splat(0.0f);
   for (std::int64_t k = 0; k < nr; ++k) {
      const float *xr = x + k * n;
      f8 m8 = rem ? load_tail(xr + nv, rem, ninf, k * n + nv + 8 <= avail) : splat(ninf);
      for (std::int64_t i = 0; i < nv; i += 8)
         m8 = vmax(load(xr + i), m8);
      acc[k] = m8;
   }
   const f8 mx = reduce8x8<MaxOp>(acc);
   for (std::int64_t k = 0; k < nr; ++k) {
      const float *xr = x + k * n;
      float *yr = y + k * n;
      const f8 m = splat(mx[k]);
      const bool wide = k * n + nv + 8 <= avail;
      f8 s8 = splat(0.0f);
      for (std::int64_t i = 0; i < nv; i += 8) {
         const f8 e = exp8_nonpos(load(xr + i) - m);
         if (!LOG)
            store(yr + i, e);
         s8 += e;
      }
      if (rem) {
         const f8 e = exp8_nonpos(load_tail(xr + nv, rem, ninf, wide) - m);
         if (!LOG)
            store_tail(yr + nv, e, rem, wide);
         s8 += e;
      }
      acc[k] = s8;
   }
   const f8 sum = reduce8x8<AddOp>(acc);
   if (LOG) {
      const f8 c8 = mx + log8(sum); // log8 of the unused lanes' 0 is -inf, harmless
      for (std::int64_t k = 0; k < nr; ++k) {
         const float *xr = x + k * n;
         float *yr = y + k * n;
         const f8 c = splat(c8[k]);
         for (std::int64_t i = 0; i < nv; i += 8)
            store(yr + i, load(xr + i) - c);
         if (rem) {
            const bool wide = k * n + nv + 8 <= avail;
            store_tail(yr + nv, load_tail(xr + nv, rem, 0.0f, wide) - c, rem, wide);
         }
      }
   } else {
      const f8 inv8 = 1.0f / sum;
      for (std::int64_t k = 0; k < nr; ++k) {
         float *yr = y + k * n;
         const f8 inv = splat(inv8[k]);
         for (std::int64_t i = 0; i < nv; i += 8)
            store(yr + i, load(yr + i) * inv);
         if (rem) {
            const bool wide = k * n + nv + 8 <= avail;
            store_tail(yr + nv, load_tail(yr + nv, rem, 0.0f, wide) * inv, rem, wide);
         }
      }
   }
}

// Up to 8 rows of at most 16 values: every row is one or two vectors, held from the load to the
// store (the exp values are not stored and read back: that read would straddle the previous
// row's tail store, which the core cannot forward). Tails are stored lane by lane.
template <bool LOG>
inline void softmax_short8(const float *x, float *y, std::int64_t nr, std::int64_t n, std::int64_t avail)
{
   const float ninf = -std::numeric_limits<float>::infinity();
   f8 a[8], b[8], acc[8];
   for (int k = 0; k < 8; ++k)
      a[k] = b[k] = splat(ninf);
   for (std::int64_t k = 0; k < nr; ++k) {
      const float *xr = x + k * n;
      if (n >= 8) {
         a[k] = load(xr);
         if (n > 8)
            b[k] = load_tail(xr + 8, n - 8, ninf, k * n + 16 <= avail);
      } else {
         a[k] = load_tail(xr, n, ninf, k * n + 8 <= avail);
      }
   }
   for (int k = 0; k < 8; ++k)
      acc[k] = vmax(a[k], b[k]);
   const f8 mx = reduce8x8<MaxOp>(acc); // rows past nr: -inf, their lanes are unused
   for (int k = 0; k < 8; ++k) {
      const f8 m = splat(mx[k]);
      const f8 ea = exp8_nonpos(a[k] - m), eb = exp8_nonpos(b[k] - m);
      acc[k] = ea + eb;
      if (!LOG) {
         a[k] = ea;
         b[k] = eb;
      }
   }
   const f8 sum = reduce8x8<AddOp>(acc);
   const f8 c8 = LOG ? mx + log8(sum) : 1.0f / sum;
   for (std::int64_t k = 0; k < nr; ++k) {
      float *yr = y + k * n;
      const f8 c = splat(c8[k]);
      const f8 oa = LOG ? a[k] - c : a[k] * c, ob = LOG ? b[k] - c : b[k] * c;
      if (n >= 8) {
         store(yr, oa);
         if (n > 8)
            store_part(yr + 8, ob, n - 8);
      } else {
         store_part(yr, oa, n);
      }
   }
}

// One row (the attention kernel calls the softmax row by row): the passes of softmax_rows8
// without the transposes.
template <bool LOG> inline void softmax_row1(const float *xr, float *yr, std::int64_t n)
{
   const float ninf = -std::numeric_limits<float>::infinity();
   const std::int64_t nv = n & ~std::int64_t(7), rem = n - nv;
   // the maximum in four chains (one chain of dependent vmaxps took an eighth of a row of 1000)
   f8 m0 = splat(ninf), m1 = m0, m2 = m0, m3 = m0;
   std::int64_t i0 = 0;
   for (; i0 + 32 <= nv; i0 += 32) {
      m0 = vmax(load(xr + i0), m0);
      m1 = vmax(load(xr + i0 + 8), m1);
      m2 = vmax(load(xr + i0 + 16), m2);
      m3 = vmax(load(xr + i0 + 24), m3);
   }
   for (; i0 < nv; i0 += 8)
      m0 = vmax(load(xr + i0), m0);
   const f8 tail = rem ? load_part(xr + nv, rem, ninf) : splat(ninf);
   const f8 m8 = vmax(vmax(vmax(tail, m0), m1), vmax(m2, m3));
   const f8 m = splat(hmax(m8));
   f8 s8 = splat(0.0f);
   for (std::int64_t i = 0; i < nv; i += 8) {
      const f8 e = exp8_nonpos(load(xr + i) - m);
      if (!LOG)
         store(yr + i, e);
      s8 += e;
   }
   const f8 et = exp8_nonpos(tail - m);
   s8 += et;
   if (LOG) {
      const f8 c = m + vm::log(hsum(s8));
      for (std::int64_t i = 0; i < nv; i += 8)
         store(yr + i, load(xr + i) - c);
      if (rem)
         store_part(yr + nv, tail - c, rem);
   } else {
      const f8 inv = splat(1.0f / hsum(s8));
      for (std::int64_t i = 0; i < nv; i += 8)
         store(yr + i, load(yr + i) * inv);
      if (rem)
         store_part(yr + nv, et * inv, rem);
   }
}

#ifdef SOFIE_RT_AVX512
// exp8_nonpos on 16 lanes: the same operations (the FMAs the compiler makes of exp8_nonpos's
// expressions written out), so the same values
SOFIE_RT_VM_INLINE __m512 exp16_nonpos(__m512 x)
{
   const __m512 xc = _mm512_max_ps(_mm512_set1_ps(-88.0f), x); // NaN: vmaxps returns x
   const __m512 t = _mm512_fmadd_ps(xc, _mm512_set1_ps(vm::kLog2e), _mm512_set1_ps(12583039.0f));
   const __m512 fn = _mm512_sub_ps(t, _mm512_set1_ps(12583039.0f));
   __m512 r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(vm::kLn2Hi), xc);
   r = _mm512_fmadd_ps(fn, _mm512_set1_ps(vm::kLn2Lo), r);
   __m512 p = _mm512_set1_ps(8.31251033e-3f);
   p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.18900996e-2f));
   p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.66671142e-1f));
   p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.99992311e-1f));
   p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
   p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
   return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(t), 23)));
}

// softmax_row1 in 16-lane registers, the tail by masked loads and stores
template <bool LOG> inline void softmax_row16(const float *xr, float *yr, std::int64_t n)
{
   const std::int64_t nv = n & ~std::int64_t(15), rem = n - nv;
   const __mmask16 tm = __mmask16((1u << rem) - 1u);
   const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
   __m512 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf; // four chains; NaN is left out (vmaxps(x, m))
   std::int64_t i0 = 0;
   for (; i0 + 64 <= nv; i0 += 64) {
      m0 = _mm512_max_ps(_mm512_loadu_ps(xr + i0), m0);
      m1 = _mm512_max_ps(_mm512_loadu_ps(xr + i0 + 16), m1);
      m2 = _mm512_max_ps(_mm512_loadu_ps(xr + i0 + 32), m2);
      m3 = _mm512_max_ps(_mm512_loadu_ps(xr + i0 + 48), m3);
   }
   for (; i0 < nv; i0 += 16)
      m0 = _mm512_max_ps(_mm512_loadu_ps(xr + i0), m0);
   const __m512 tail = _mm512_mask_loadu_ps(ninf, tm, xr + nv);
   m0 = _mm512_max_ps(tail, m0);
   const float mx = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
   const __m512 m = _mm512_set1_ps(mx);
   __m512 s0 = _mm512_setzero_ps(), s1 = s0;
   std::int64_t i = 0;
   for (; i + 32 <= nv; i += 32) {
      const __m512 a = exp16_nonpos(_mm512_sub_ps(_mm512_loadu_ps(xr + i), m));
      const __m512 b = exp16_nonpos(_mm512_sub_ps(_mm512_loadu_ps(xr + i + 16), m));
      if (!LOG) {
         _mm512_storeu_ps(yr + i, a);
         _mm512_storeu_ps(yr + i + 16, b);
      }
      s0 = _mm512_add_ps(s0, a);
      s1 = _mm512_add_ps(s1, b);
   }
   for (; i < nv; i += 16) {
      const __m512 a = exp16_nonpos(_mm512_sub_ps(_mm512_loadu_ps(xr + i), m));
      if (!LOG)
         _mm512_storeu_ps(yr + i, a);
      s0 = _mm512_add_ps(s0, a);
   }
   const __m512 et = exp16_nonpos(_mm512_sub_ps(tail, m)); // the padding lanes: exp(-inf - m) = 0
   s1 = _mm512_add_ps(s1, et);
   const float sum = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
   if (LOG) {
      const __m512 c = _mm512_set1_ps(mx + vm::log(sum));
      for (std::int64_t k = 0; k < nv; k += 16)
         _mm512_storeu_ps(yr + k, _mm512_sub_ps(_mm512_loadu_ps(xr + k), c));
      _mm512_mask_storeu_ps(yr + nv, tm, _mm512_sub_ps(tail, c));
   } else {
      const __m512 inv = _mm512_set1_ps(1.0f / sum);
      for (std::int64_t k = 0; k < nv; k += 16)
         _mm512_storeu_ps(yr + k, _mm512_mul_ps(_mm512_loadu_ps(yr + k), inv));
      _mm512_mask_storeu_ps(yr + nv, tm, _mm512_mul_ps(et, inv));
   }
}
#endif

// Rows in groups of 8 (rows of up to 16 values in registers); rows longer than 512 values one at
// a time (8 of them would not stay in the first-level cache between the passes, and their fixed
// costs per row are small anyway), as a single row.
template <> inline void softmax<float>(const float *x, float *y, std::int64_t rows, std::int64_t n, bool log)
{
   if (rows == 1 || n > 512) {
      for (std::int64_t r = 0; r < rows; ++r) {
#ifdef SOFIE_RT_AVX512
         if (log)
            softmax_row16<true>(x + r * n, y + r * n, n);
         else
            softmax_row16<false>(x + r * n, y + r * n, n);
#else
         if (log)
            softmax_row1<true>(x + r * n, y + r * n, n);
         else
            softmax_row1<false>(x + r * n, y + r * n, n);
#endif
      }
      return;
   }
   for (std::int64_t r = 0; r < rows; r += 8) {
      const std::int64_t nr = rows - r < 8 ? rows - r : 8, avail = (rows - r) * n;
      if (n <= 16) {
         if (log)
            softmax_short8<true>(x + r * n, y + r * n, nr, n, avail);
         else
            softmax_short8<false>(x + r * n, y + r * n, nr, n, avail);
      } else if (log) {
         softmax_rows8<true>(x + r * n, y + r * n, nr, n, avail);
      } else {
         softmax_rows8<false>(x + r * n, y + r * n, nr, n, avail);
      }
   }
}
#endif

// Softmax (log-softmax) along an axis that is not the last: x is [outer, a, inner], the
// reduction runs over a with stride inner. Generic types column by column; floats 8 columns of the
// contiguous inner dimension per vector, three passes over the column block (maximum, exp and
// sum, scaling), each a run of independent vectors. NaN and -inf columns as softmax.
template <class T>
inline void softmax_inner(const T *x, T *y, std::int64_t outer, std::int64_t a, std::int64_t inner, bool log)
{
   for (std::int64_t o = 0; o < outer; ++o) {
      const T *xo = x + o * a * inner;
      T *yo = y + o * a * inner;
      for (std::int64_t k = 0; k < inner; ++k) {
         T m = -std::numeric_limits<T>::infinity();
         for (std::int64_t j = 0; j < a; ++j)
            m = xo[j * inner + k] > m ? xo[j * inner + k] : m;
         T s = 0;
         for (std::int64_t j = 0; j < a; ++j) {
            const T e = vm::exp(xo[j * inner + k] - m);
            s += e;
            if (!log)
               yo[j * inner + k] = e;
         }
         const T c = log ? m + vm::log(s) : T(1) / s;
         for (std::int64_t j = 0; j < a; ++j)
            yo[j * inner + k] = log ? xo[j * inner + k] - c : yo[j * inner + k] * c;
      }
   }
}
#ifdef SOFIE_RT_ROWS_VEC
template <bool LOG>
inline void softmax_inner_f8(const float *x, float *y, std::int64_t outer, std::int64_t a, std::int64_t inner)
{
   const float ninf = -std::numeric_limits<float>::infinity();
   const std::int64_t total = outer * a * inner;
   for (std::int64_t o = 0; o < outer; ++o) {
      const std::int64_t base = o * a * inner;
      for (std::int64_t k0 = 0; k0 < inner; k0 += 8) {
         const std::int64_t cnt = inner - k0 < 8 ? inner - k0 : 8;
         f8 m = splat(ninf);
         for (std::int64_t j = 0; j < a; ++j) {
            const std::int64_t at = base + j * inner + k0;
            m = vmax(cnt == 8 ? load(x + at) : load_tail(x + at, cnt, ninf, at + 8 <= total), m);
         }
         f8 s = splat(0.0f);
         for (std::int64_t j = 0; j < a; ++j) {
            const std::int64_t at = base + j * inner + k0;
            const bool wide = at + 8 <= total;
            const f8 e = exp8_nonpos((cnt == 8 ? load(x + at) : load_tail(x + at, cnt, ninf, wide)) - m);
            s += e;
            if (!LOG) {
               if (cnt == 8)
                  store(y + at, e);
               else
                  store_tail(y + at, e, cnt, wide);
            }
         }
         const f8 c = LOG ? m + log8(s) : 1.0f / s;
         for (std::int64_t j = 0; j < a; ++j) {
            const std::int64_t at = base + j * inner + k0;
            if (cnt == 8) {
               store(y + at, LOG ? load(x + at) - c : load(y + at) * c);
            } else {
               const bool wide = at + 8 <= total;
               store_tail(y + at, LOG ? load_tail(x + at, cnt, 0.0f, wide) - c : load_tail(y + at, cnt, 0.0f, wide) * c,
                          cnt, wide);
            }
         }
      }
   }
}
template <>
inline void softmax_inner<float>(const float *x, float *y, std::int64_t outer, std::int64_t a, std::int64_t inner,
                                 bool log)
{
   if (log)
      softmax_inner_f8<true>(x, y, outer, a, inner);
   else
      softmax_inner_f8<false>(x, y, outer, a, inner);
}
#endif

// Hardmax of contiguous rows: 1 at the first maximum (NaN counts as the largest, the first NaN
// wins, as numpy's argmax), 0 elsewhere; the position is found before the row is written (in-place
// rows). Float rows: hardmax<float> below, 8 rows at a time.
template <class T> inline std::int64_t argmax_first(const T *xr, std::int64_t n)
{
   std::int64_t b = 0;
   for (std::int64_t j = 1; j < n; ++j)
      if (xr[j] > xr[b] || (xr[j] != xr[j] && xr[b] == xr[b]))
         b = j;
   return b;
}
template <class T> inline void hardmax(const T *x, T *y, std::int64_t rows, std::int64_t n)
{
   for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t at = n > 0 ? argmax_first(x + r * n, n) : 0;
      for (std::int64_t j = 0; j < n; ++j)
         y[r * n + j] = T(0);
      if (n > 0)
         y[r * n + at] = T(1);
   }
}

// Hardmax along an axis that is not the last: x is [outer, a, inner], the maximum runs over a
// with stride inner. Generic types column by column; floats 8 columns at a time in vectors (the
// contiguous inner dimension), two passes over the column block: the maximum and whether a NaN
// is present, then 1 at the first position holding it (the first NaN), 0 elsewhere, written
// directly (no zeroing pass, no scattered store).
template <class T>
inline void hardmax_inner(const T *x, T *y, std::int64_t outer, std::int64_t a, std::int64_t inner)
{
   for (std::int64_t o = 0; o < outer; ++o) {
      const T *xo = x + o * a * inner;
      T *yo = y + o * a * inner;
      for (std::int64_t k = 0; k < inner; ++k) {
         std::int64_t b = 0;
         for (std::int64_t j = 1; j < a; ++j) {
            const T v = xo[j * inner + k], w = xo[b * inner + k];
            if (v > w || (v != v && w == w))
               b = j;
         }
         for (std::int64_t j = 0; j < a; ++j)
            yo[j * inner + k] = T(j == b ? 1 : 0);
      }
   }
}
#ifdef SOFIE_RT_ROWS_VEC
template <>
inline void hardmax_inner<float>(const float *x, float *y, std::int64_t outer, std::int64_t a, std::int64_t inner)
{
   const float ninf = -std::numeric_limits<float>::infinity();
   const std::int64_t total = outer * a * inner;
   const f8 one = splat(1.0f), zero = splat(0.0f);
   for (std::int64_t o = 0; o < outer; ++o) {
      const std::int64_t base = o * a * inner;
      for (std::int64_t k0 = 0; k0 < inner; k0 += 8) {
         const std::int64_t cnt = inner - k0 < 8 ? inner - k0 : 8;
         f8 m = splat(ninf);
         i8 nan = {};
         for (std::int64_t j = 0; j < a; ++j) {
            const std::int64_t at = base + j * inner + k0;
            const f8 v = cnt == 8 ? load(x + at) : load_tail(x + at, cnt, ninf, at + 8 <= total);
            m = vmax(v, m);
            nan |= v != v;
         }
         i8 found = {};
         for (std::int64_t j = 0; j < a; ++j) {
            const std::int64_t at = base + j * inner + k0;
            const f8 v = cnt == 8 ? load(x + at) : load_tail(x + at, cnt, ninf, at + 8 <= total);
            const i8 hit = (nan ? v != v : v == m) & ~found;
            found |= hit;
            const f8 out = hit ? one : zero;
            if (cnt == 8)
               store(y + at, out);
            else
               store_tail(y + at, out, cnt, at + 8 <= total);
         }
      }
   }
}
#endif

// ArgMax (greater) / ArgMin of contiguous rows of n >= 1 values into out[r], numpy's rules: the
// first extreme (the last with `last`, ONNX select_last_index), NaN counting as the extreme (the
// first NaN; the last with `last`).
template <class T>
SOFIE_RT_VM_INLINE std::int64_t arg_extreme_strided(const T *x, std::int64_t n, std::int64_t stride, bool greater,
                                                    bool last)
{
   std::int64_t b = 0;
   for (std::int64_t j = 1; j < n; ++j) {
      const T v = x[j * stride], w = x[b * stride];
      const bool better = greater ? v > w : v < w;
      if (last ? (v != v || (w == w && (better || v == w))) : (better || (v != v && w == w)))
         b = j;
   }
   return b;
}
template <class T> inline std::int64_t arg_extreme_row(const T *xr, std::int64_t n, bool greater, bool last)
{
   return arg_extreme_strided(xr, n, std::int64_t(1), greater, last);
}
template <class T>
inline void arg_extreme(const T *x, std::int64_t *out, std::int64_t rows, std::int64_t n, bool greater, bool last)
{
   for (std::int64_t r = 0; r < rows; ++r)
      out[r] = arg_extreme_row(x + r * n, n, greater, last);
}
#ifdef SOFIE_RT_ROWS_VEC
// 8 rows at a time, one pass per row: each lane keeps its extreme and the position where it first
// (last) met it, and a running sum, NaN when a NaN went by (one add where a test takes two); the
// 8 rows' extremes and sums are reduced by transposes, then the first (last) position among the
// lanes holding the extreme by another. No branch per element (a search stopping at the first
// match mispredicts once per row). Rows whose sum is NaN (a NaN, or both infinities) take the
// scalar loop. Positions are counted in float lanes, exact below 2^24 (longer rows take the
// scalar loop).
template <bool GREATER, bool LAST>
inline void arg_extreme_rows8(const float *x, std::int64_t *out, std::int64_t nr, std::int64_t n, std::int64_t avail)
{
   const float fill = GREATER ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
   const std::int64_t nv = n & ~std::int64_t(7), rem = n - nv;
   const f8 lane = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f};
   const f8 none = splat(LAST ? -1.0f : 16777216.0f);
   const i8 in_tail = i8{0, 1, 2, 3, 4, 5, 6, 7} < std::int32_t(rem);
   f8 val[8], pos[8], sums[8];
   for (int k = 0; k < 8; ++k) {
      val[k] = sums[k] = splat(0.0f);
      pos[k] = none;
   }
   for (std::int64_t k = 0; k < nr; ++k) {
      const float *xr = x + k * n;
      const bool wide = k * n + nv + 8 <= avail;
      f8 m8, p8;
      if (nv) {
         m8 = load(xr);
         p8 = lane;
      } else {
         m8 = load_tail(xr, rem, fill, wide);
         p8 = in_tail ? lane : none;
      }
      f8 sum = m8;
      f8 at = lane + 8.0f;
      for (std::int64_t i = 8; i < nv; i += 8) {
         const f8 v = load(xr + i);
         const i8 up = GREATER ? (LAST ? v >= m8 : v > m8) : (LAST ? v <= m8 : v < m8);
         m8 = up ? v : m8;
         p8 = up ? at : p8;
         sum += v;
         at += 8.0f;
      }
      if (nv && rem) {
         const f8 v = load_tail(xr + nv, rem, fill, wide);
         const i8 up = (GREATER ? (LAST ? v >= m8 : v > m8) : (LAST ? v <= m8 : v < m8)) & in_tail;
         m8 = up ? v : m8;
         p8 = up ? at : p8;
         sum += v;
      }
      val[k] = m8;
      pos[k] = p8;
      sums[k] = sum;
   }
   const f8 tot = nr == 1 ? splat(hsum(sums[0])) : reduce8x8<AddOp>(sums);
   const f8 ext = nr == 1 ? splat(GREATER ? hmax(val[0]) : hmin(val[0]))
                          : (GREATER ? reduce8x8<MaxOp>(val) : reduce8x8<MinOp>(val));
   for (std::int64_t k = 0; k < nr; ++k)
      pos[k] = val[k] == splat(ext[k]) ? pos[k] : none;
   const f8 at8 = nr == 1 ? splat(LAST ? hmax(pos[0]) : hmin(pos[0]))
                          : (LAST ? reduce8x8<MaxOp>(pos) : reduce8x8<MinOp>(pos));
   for (std::int64_t k = 0; k < nr; ++k)
      out[k] = tot[k] != tot[k] ? arg_extreme_row(x + k * n, n, GREATER, LAST) : std::int64_t(at8[k]);
}
template <>
inline void arg_extreme<float>(const float *x, std::int64_t *out, std::int64_t rows, std::int64_t n, bool greater,
                               bool last)
{
   if (n >= 16777216) {
      for (std::int64_t r = 0; r < rows; ++r)
         out[r] = arg_extreme_row(x + r * n, n, greater, last);
      return;
   }
   for (std::int64_t r = 0; r < rows; r += 8) {
      const std::int64_t nr = rows - r < 8 ? rows - r : 8, avail = (rows - r) * n;
      const float *xb = x + r * n;
      if (greater && last)
         arg_extreme_rows8<true, true>(xb, out + r, nr, n, avail);
      else if (greater)
         arg_extreme_rows8<true, false>(xb, out + r, nr, n, avail);
      else if (last)
         arg_extreme_rows8<false, true>(xb, out + r, nr, n, avail);
      else
         arg_extreme_rows8<false, false>(xb, out + r, nr, n, avail);
   }
}
#endif

// ArgMax / ArgMin over a strided axis: x is outer x n x inner (inner > 1), out is outer x inner,
// the rules of arg_extreme_row for every column.
template <class T>
inline void arg_extreme_cols(const T *x, std::int64_t *out, std::int64_t outer, std::int64_t n, std::int64_t inner,
                             bool greater, bool last)
{
   for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t c = 0; c < inner; ++c)
         out[o * inner + c] = arg_extreme_strided(x + o * n * inner + c, n, inner, greater, last);
}
#ifdef SOFIE_RT_ROWS_VEC
// Floats, NV vectors of 8 columns at a time: each lane keeps its extreme and position by selects
// that follow the scalar rule, NaN included (so no NaN pass); NV independent chains of
// compare-and-select per step of the axis (one chain is bound by their latency). Positions are
// counted in float lanes, exact below 2^24.
template <bool GREATER, bool LAST, int NV>
SOFIE_RT_VM_INLINE void arg_extreme_cols8(const float *x, std::int64_t *out, std::int64_t n, std::int64_t inner)
{
   f8 m[NV], p[NV];
   for (int v = 0; v < NV; ++v) {
      m[v] = load(x + 8 * v);
      p[v] = splat(0.0f);
   }
   f8 at = splat(1.0f);
   for (std::int64_t j = 1; j < n; ++j) {
      for (int v = 0; v < NV; ++v) {
         const f8 y = load(x + j * inner + 8 * v);
         const i8 better = GREATER ? (LAST ? y >= m[v] : y > m[v]) : (LAST ? y <= m[v] : y < m[v]);
         const i8 up = LAST ? ((y != y) | ((m[v] == m[v]) & better)) : (better | ((y != y) & (m[v] == m[v])));
         m[v] = up ? y : m[v];
         p[v] = up ? at : p[v];
      }
      at += 1.0f;
   }
   for (int v = 0; v < NV; ++v)
      for (int l = 0; l < 8; ++l)
         out[8 * v + l] = std::int64_t(p[v][l]);
}
template <bool GREATER, bool LAST>
inline void arg_extreme_cols_f(const float *x, std::int64_t *out, std::int64_t outer, std::int64_t n,
                               std::int64_t inner)
{
   for (std::int64_t o = 0; o < outer; ++o) {
      const float *xo = x + o * n * inner;
      std::int64_t *yo = out + o * inner;
      std::int64_t c = 0;
      for (; c + 32 <= inner; c += 32)
         arg_extreme_cols8<GREATER, LAST, 4>(xo + c, yo + c, n, inner);
      for (; c + 8 <= inner; c += 8)
         arg_extreme_cols8<GREATER, LAST, 1>(xo + c, yo + c, n, inner);
      for (; c < inner; ++c)
         yo[c] = arg_extreme_strided(xo + c, n, inner, GREATER, LAST);
   }
}
template <>
inline void arg_extreme_cols<float>(const float *x, std::int64_t *out, std::int64_t outer, std::int64_t n,
                                    std::int64_t inner, bool greater, bool last)
{
   if (n >= 16777216 || inner < 8) {
      for (std::int64_t o = 0; o < outer; ++o)
         for (std::int64_t c = 0; c < inner; ++c)
            out[o * inner + c] = arg_extreme_strided(x + o * n * inner + c, n, inner, greater, last);
      return;
   }
   if (greater && last)
      arg_extreme_cols_f<true, true>(x, out, outer, n, inner);
   else if (greater)
      arg_extreme_cols_f<true, false>(x, out, outer, n, inner);
   else if (last)
      arg_extreme_cols_f<false, true>(x, out, outer, n, inner);
   else
      arg_extreme_cols_f<false, false>(x, out, outer, n, inner);
}
#endif

#ifdef SOFIE_RT_ROWS_VEC
// Float Hardmax rows: the position by arg_extreme_rows8 (ArgMax's rule: the first maximum, the
// first NaN), 8 rows at a time, then each row written as zeros and its 1 (positions are found for
// the 8 rows before any is written: in-place rows stay correct).
template <> inline void hardmax<float>(const float *x, float *y, std::int64_t rows, std::int64_t n)
{
   if (n <= 0)
      return;
   if (n >= 16777216) {
      for (std::int64_t r = 0; r < rows; ++r) {
         const std::int64_t at = arg_extreme_row(x + r * n, n, true, false);
         for (std::int64_t j = 0; j < n; ++j)
            y[r * n + j] = 0.0f;
         y[r * n + at] = 1.0f;
      }
      return;
   }
   const std::int64_t nv = n & ~std::int64_t(7), rem = n - nv;
   const f8 zero = splat(0.0f);
   if (rows < 8 || n <= 16) {
      // a few rows (a classifier head at batch 1) or short ones: the maximum by vectors and a
      // scalar search for its first position, without the 8-row machinery (3x faster on one
      // row of 10, 1.6x on 256 rows of 10)
      const float ninf = -std::numeric_limits<float>::infinity();
      for (std::int64_t r = 0; r < rows; ++r) {
         const float *xr = x + r * n;
         f8 m8 = rem ? load_part(xr + nv, rem, ninf) : splat(ninf);
         f8 sum = m8;
         for (std::int64_t i = 0; i < nv; i += 8) {
            const f8 v = load(xr + i);
            m8 = vmax(v, m8);
            sum += v;
         }
         std::int64_t at = 0;
         if (hsum(sum) != hsum(sum)) {
            at = arg_extreme_row(xr, n, true, false);
         } else {
            const float m = hmax(m8);
            while (xr[at] != m)
               ++at;
         }
         float *yr = y + r * n;
         for (std::int64_t i = 0; i < nv; i += 8)
            store(yr + i, zero);
         if (rem)
            store_part(yr + nv, zero, rem);
         yr[at] = 1.0f;
      }
      return;
   }
   std::int64_t at[8];
   for (std::int64_t r = 0; r < rows; r += 8) {
      const std::int64_t nr = rows - r < 8 ? rows - r : 8;
      arg_extreme_rows8<true, false>(x + r * n, at, nr, n, (rows - r) * n);
      for (std::int64_t k = 0; k < nr; ++k) {
         float *yr = y + (r + k) * n;
         for (std::int64_t i = 0; i < nv; i += 8)
            store(yr + i, zero);
         if (rem)
            store_part(yr + nv, zero, rem);
         yr[at[k]] = 1.0f;
      }
   }
}
#endif

// Mean and (biased) variance of n contiguous values, two passes: the sum, then the sum of squared
// deviations from the mean (no cancellation, a constant row gives exactly 0). Float rows use 8
// float lanes (relative error of the sums about 1e-7 sqrt(n / 8)); double rows plain loops.
struct Moments {
   double mean, var;
};
template <class T> inline Moments moments_d(const T *x, std::int64_t n)
{
   double s = 0;
   for (std::int64_t i = 0; i < n; ++i)
      s += double(x[i]);
   const double mu = s / double(n);
   double q = 0;
   for (std::int64_t i = 0; i < n; ++i)
      q += (double(x[i]) - mu) * (double(x[i]) - mu);
   return Moments{mu, q / double(n)};
}
template <class T> inline Moments moments(const T *x, std::int64_t n) { return moments_d(x, n); }
#ifdef SOFIE_RT_ROWS_VEC
template <> inline Moments moments<float>(const float *x, std::int64_t n)
{
   if (n <= 0)
      return Moments{std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
   // the sum of x - x[0]: the values summed in float are the spread of the row, not its level
   // (a row at 1000 with a spread of 0.01 keeps its mean to double precision, a constant row has
   // mean x[0] and variance 0 exactly)
   const std::int64_t nv = n & ~std::int64_t(7), rem = n - nv;
   const float x0 = x[0];
   const f8 p = splat(x0);
   f8 s0 = splat(0.0f), s1 = s0;
   std::int64_t i = 0;
   for (; i + 16 <= nv; i += 16) {
      s0 += load(x + i) - p;
      s1 += load(x + i + 8) - p;
   }
   if (i < nv)
      s0 += load(x + i) - p;
   const f8 tail = rem ? load_part(x + nv, rem, x0) : p;
   s0 += tail - p;
   const double mu = double(x0) + double(hsum(s0 + s1)) / double(n);
   const f8 m = splat(float(mu));
   f8 q0 = splat(0.0f), q1 = q0;
   for (i = 0; i + 16 <= nv; i += 16) {
      const f8 d0 = load(x + i) - m, d1 = load(x + i + 8) - m;
      q0 += d0 * d0;
      q1 += d1 * d1;
   }
   if (i < nv) {
      const f8 d = load(x + i) - m;
      q0 += d * d;
   }
   if (rem) {
      f8 d = tail - m;
      for (int l = int(rem); l < 8; ++l)
         d[l] = 0.0f;
      q0 += d * d;
   }
   const double var = double(hsum(q0 + q1)) / double(n);
   // float lanes can overflow where double does not (values near FLT_MAX): those rows, and rows
   // with an inf or NaN, are redone in double, which gives exactly the double statistics
   if (!(std::isfinite(mu) && std::isfinite(var)))
      return moments_d(x, n);
   return Moments{mu, var};
}
#endif

// y = (x - mean) * inv * scale[j] (+ bias[j]) over rows of n values (LayerNormalization with scale
// and bias over the whole normalised shape; bias may be null). mean_out / inv_out (may be null)
// receive the statistics per row in the stash type U.
template <class T, class U>
inline void layernorm(const T *x, T *y, std::int64_t rows, std::int64_t n, const T *scale, const T *bias, U eps,
                      U *mean_out, U *inv_out)
{
   for (std::int64_t r = 0; r < rows; ++r) {
      const T *xr = x + r * n;
      T *yr = y + r * n;
      const Moments mo = moments(xr, n);
      const U mean = U(mo.mean);
      const U inv = U(1) / std::sqrt(U(mo.var) + eps);
      if (bias)
         for (std::int64_t j = 0; j < n; ++j)
            yr[j] = T((U(xr[j]) - mean) * inv) * scale[j] + bias[j];
      else
         for (std::int64_t j = 0; j < n; ++j)
            yr[j] = T((U(xr[j]) - mean) * inv) * scale[j];
      if (mean_out)
         mean_out[r] = mean;
      if (inv_out)
         inv_out[r] = inv;
   }
}

// The sum of n contiguous values, and the sum of their squared deviations from m (a row of
// MeanVarianceNormalization's statistics); float rows in 8 float lanes, others in double.
template <class T> inline double row_sum_d(const T *x, std::int64_t n)
{
   double s = 0;
   for (std::int64_t i = 0; i < n; ++i)
      s += double(x[i]);
   return s;
}
template <class T> inline double row_sqdev_d(const T *x, std::int64_t n, double m)
{
   double s = 0;
   for (std::int64_t i = 0; i < n; ++i)
      s += (double(x[i]) - m) * (double(x[i]) - m);
   return s;
}
template <class T> inline double row_sum(const T *x, std::int64_t n) { return row_sum_d(x, n); }
template <class T> inline double row_sqdev(const T *x, std::int64_t n, double m) { return row_sqdev_d(x, n, m); }
#ifdef SOFIE_RT_ROWS_VEC
template <> inline double row_sum<float>(const float *x, std::int64_t n)
{
   if (n <= 0)
      return 0.0;
   // n x[0] + the sum of x - x[0] (as moments: the float lanes sum the spread, not the level)
   const std::int64_t nv = n & ~std::int64_t(7), rem = n - nv;
   const f8 p = splat(x[0]);
   f8 s = splat(0.0f);
   for (std::int64_t i = 0; i < nv; i += 8)
      s += load(x + i) - p;
   if (rem)
      s += load_part(x + nv, rem, x[0]) - p;
   const double r = double(n) * double(x[0]) + double(hsum(s));
   return std::isfinite(r) ? r : row_sum_d(x, n); // overflow of the float lanes, inf or NaN
}
template <> inline double row_sqdev<float>(const float *x, std::int64_t n, double m)
{
   const std::int64_t nv = n & ~std::int64_t(7), rem = n - nv;
   const f8 mv = splat(float(m));
   f8 s = splat(0.0f);
   for (std::int64_t i = 0; i < nv; i += 8) {
      const f8 d = load(x + i) - mv;
      s += d * d;
   }
   for (std::int64_t i = nv; i < n; ++i) {
      const float d = x[i] - float(m);
      s[0] += d * d;
   }
   const double r = double(hsum(s));
   return std::isfinite(r) ? r : row_sqdev_d(x, n, m); // overflow of the float lanes, inf or NaN
}
#endif

// Reductions of contiguous rows of n values (n >= 1 for max/min): out[r] for r < rows.
// kind 0: sum, 1: max, 2: min (NaN anywhere in a row gives NaN), 3: log-sum-exp over the finite
// maximum (ReduceLogSumExp), 4: product, 5: sum of squares, 6: sum of absolute values; a sum
// (kind 0) is divided by `div` (ReduceMean: n, ReduceSum: 1). ReduceL2 and ReduceLogSum take
// kinds 5 and 0 and their square root or log afterwards.
template <class T> inline void reduce(const T *x, T *out, std::int64_t rows, std::int64_t n, int kind, T div)
{
   for (std::int64_t r = 0; r < rows; ++r) {
      const T *xr = x + r * n;
      T acc;
      if (kind == 0) {
         acc = 0;
         for (std::int64_t i = 0; i < n; ++i)
            acc += xr[i];
         acc /= div;
      } else if (kind == 4) {
         acc = 1;
         for (std::int64_t i = 0; i < n; ++i)
            acc *= xr[i];
      } else if (kind == 5) {
         acc = 0;
         for (std::int64_t i = 0; i < n; ++i)
            acc += xr[i] * xr[i];
      } else if (kind == 6) {
         acc = 0;
         for (std::int64_t i = 0; i < n; ++i)
            acc += xr[i] < T(0) ? T(-xr[i]) : xr[i];
      } else if (kind == 1 || kind == 2) {
         acc = kind == 1 ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
         bool nan = false;
         for (std::int64_t i = 0; i < n; ++i) {
            acc = kind == 1 ? (xr[i] > acc ? xr[i] : acc) : (xr[i] < acc ? xr[i] : acc);
            nan = nan || xr[i] != xr[i];
         }
         acc = nan ? std::numeric_limits<T>::quiet_NaN() : acc;
      } else {
         T m = -std::numeric_limits<T>::infinity();
         for (std::int64_t i = 0; i < n; ++i)
            m = (std::isfinite(xr[i]) && xr[i] > m) ? xr[i] : m;
         m = m == -std::numeric_limits<T>::infinity() ? T(0) : m;
         T s = 0;
         for (std::int64_t i = 0; i < n; ++i)
            s += vm::exp(xr[i] - m);
         acc = vm::log(s) + m;
      }
      out[r] = acc;
   }
}
#ifdef SOFIE_RT_ROWS_VEC
template <> inline void reduce<float>(const float *x, float *out, std::int64_t rows, std::int64_t n, int kind,
                                      float div)
{
   const float inf = std::numeric_limits<float>::infinity();
   const std::int64_t nv = n & ~std::int64_t(7), rem = n - nv;
   for (std::int64_t r = 0; r < rows; ++r) {
      const float *xr = x + r * n;
      float acc;
      if (kind == 0) {
         f8 s0 = splat(0.0f), s1 = s0;
         std::int64_t i = 0;
         for (; i + 16 <= nv; i += 16) {
            s0 += load(xr + i);
            s1 += load(xr + i + 8);
         }
         if (i < nv)
            s0 += load(xr + i);
         if (rem)
            s0 += load_part(xr + nv, rem, 0.0f);
         acc = hsum(s0 + s1) / div;
      } else if (kind >= 4) {
         // product, sum of squares, sum of |x|: two independent chains of vectors (a single one
         // waits on the latency of each multiply or add); |x| by clearing the sign bit, so NaN
         // stays NaN and -0 counts as 0
         const bool prod = kind == 4;
         const i8 nosign = i8{} + 0x7FFFFFFF;
         auto fold = [&](f8 s, f8 v) -> f8 {
            return prod ? s * v : s + (kind == 5 ? v * v : (f8)((i8)v & nosign));
         };
         f8 s0 = splat(prod ? 1.0f : 0.0f), s1 = s0;
         std::int64_t i = 0;
         for (; i + 16 <= nv; i += 16) {
            s0 = fold(s0, load(xr + i));
            s1 = fold(s1, load(xr + i + 8));
         }
         if (i < nv)
            s0 = fold(s0, load(xr + i));
         if (rem) // the padding lanes (1 or 0) leave every kind unchanged
            s0 = fold(s0, load_part(xr + nv, rem, prod ? 1.0f : 0.0f));
         acc = prod ? hprod(s0 * s1) : hsum(s0 + s1);
      } else if (kind == 1 || kind == 2) {
         // four chains of maxima and two of NaN tests: one chain of 32 dependent vmaxps per row
         // of 256 ran at 0.5x onnxruntime ([N,16,16,16] over axes (2, 3), benchmarks/breadth.py)
         const float fill = kind == 1 ? -inf : inf;
         auto ext = [&](f8 a, f8 b) -> f8 { return kind == 1 ? vmax(a, b) : vmin(a, b); };
         f8 m0 = splat(fill), m1 = m0, m2 = m0, m3 = m0;
         i8 nan0 = {}, nan1 = {};
         std::int64_t i = 0;
         for (; i + 32 <= nv; i += 32) {
            const f8 a = load(xr + i), b = load(xr + i + 8), c = load(xr + i + 16), d = load(xr + i + 24);
            m0 = ext(a, m0);
            m1 = ext(b, m1);
            m2 = ext(c, m2);
            m3 = ext(d, m3);
            nan0 |= (a != a) | (b != b);
            nan1 |= (c != c) | (d != d);
         }
         for (; i < nv; i += 8) {
            const f8 v = load(xr + i);
            m0 = ext(v, m0);
            nan0 |= v != v;
         }
         if (rem) {
            const f8 v = load_part(xr + nv, rem, fill);
            m1 = ext(v, m1);
            nan1 |= v != v;
         }
         const f8 m8 = ext(ext(m0, m1), ext(m2, m3));
         acc = any(nan0 | nan1) ? std::numeric_limits<float>::quiet_NaN() : (kind == 1 ? hmax(m8) : hmin(m8));
      } else {
         // the finite maximum: v - v is 0 exactly for finite v, NaN for +-inf and NaN
         const f8 ninf8 = splat(-inf), zero = splat(0.0f);
         f8 m8 = ninf8;
         for (std::int64_t i = 0; i < nv; i += 8) {
            const f8 v = load(xr + i);
            m8 = ((v - v) == zero && v > m8) ? v : m8;
         }
         const f8 tail = rem ? load_part(xr + nv, rem, -inf) : ninf8;
         m8 = ((tail - tail) == zero && tail > m8) ? tail : m8;
         float m = hmax(m8);
         m = m == -inf ? 0.0f : m;
         const f8 mv = splat(m);
         f8 s8 = zero;
         for (std::int64_t i = 0; i < nv; i += 8)
            s8 += exp8(load(xr + i) - mv);
         if (rem)
            s8 += exp8(tail - mv);
         acc = vm::log(hsum(s8)) + m;
      }
      out[r] = acc;
   }
}
#endif

// Reductions along an axis that is not the last: x is [outer, a, inner], out[o * inner + k] reduces
// x[o, :, k]; kind 0 sum (divided by `div`), 1 max, 2 min (NaN anywhere gives NaN). The values
// are added in the order of a, as the generated loops do. Floats 32 (then 8) columns of the
// contiguous inner dimension at a time in vector accumulators.
template <class T>
inline void reduce_inner(const T *x, T *out, std::int64_t outer, std::int64_t a, std::int64_t inner, int kind, T div)
{
   for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t k = 0; k < inner; ++k) {
         const T *xc = x + o * a * inner + k;
         T acc = kind == 0 ? T(0) : T(kind == 1 ? -1 : 1) * std::numeric_limits<T>::infinity();
         for (std::int64_t j = 0; j < a; ++j) {
            const T v = xc[j * inner];
            if (kind == 0)
               acc += v;
            else if (acc == acc && (v != v || (kind == 1 ? v > acc : v < acc)))
               acc = v;
         }
         out[o * inner + k] = kind == 0 ? acc / div : acc;
      }
}
#ifdef SOFIE_RT_ROWS_VEC
template <int KIND> struct ColAcc {
   f8 v;
   i8 nan;
   SOFIE_RT_VM_INLINE void init()
   {
      v = splat(KIND == 0 ? 0.0f : KIND == 1 ? -std::numeric_limits<float>::infinity()
                                             : std::numeric_limits<float>::infinity());
      nan = i8{};
   }
   SOFIE_RT_VM_INLINE void step(f8 x)
   {
      if (KIND == 0) {
         v += x;
      } else {
         v = KIND == 1 ? vmax(x, v) : vmin(x, v);
         nan |= x != x;
      }
   }
   SOFIE_RT_VM_INLINE f8 get(float div) const
   {
      return KIND == 0 ? v / div : (nan ? splat(std::numeric_limits<float>::quiet_NaN()) : v);
   }
};
template <int KIND>
inline void reduce_inner_f8(const float *x, float *out, std::int64_t outer, std::int64_t a, std::int64_t inner,
                            float div)
{
   const std::int64_t total = outer * a * inner;
   for (std::int64_t o = 0; o < outer; ++o) {
      const float *xo = x + o * a * inner;
      float *yo = out + o * inner;
      std::int64_t k = 0;
      for (; k + 32 <= inner; k += 32) {
         ColAcc<KIND> c0, c1, c2, c3;
         c0.init(), c1.init(), c2.init(), c3.init();
         for (std::int64_t j = 0; j < a; ++j) {
            const float *p = xo + j * inner + k;
            c0.step(load(p));
            c1.step(load(p + 8));
            c2.step(load(p + 16));
            c3.step(load(p + 24));
         }
         store(yo + k, c0.get(div));
         store(yo + k + 8, c1.get(div));
         store(yo + k + 16, c2.get(div));
         store(yo + k + 24, c3.get(div));
      }
      for (; k + 8 <= inner; k += 8) {
         ColAcc<KIND> c;
         c.init();
         for (std::int64_t j = 0; j < a; ++j)
            c.step(load(xo + j * inner + k));
         store(yo + k, c.get(div));
      }
      if (k < inner) {
         const std::int64_t cnt = inner - k;
         ColAcc<KIND> c;
         c.init();
         for (std::int64_t j = 0; j < a; ++j) {
            const std::int64_t at = o * a * inner + j * inner + k;
            c.step(load_tail(x + at, cnt, 0.0f, at + 8 <= total));
         }
         store_part(yo + k, c.get(div), cnt);
      }
   }
}
template <>
inline void reduce_inner<float>(const float *x, float *out, std::int64_t outer, std::int64_t a, std::int64_t inner,
                                int kind, float div)
{
   if (kind == 0)
      reduce_inner_f8<0>(x, out, outer, a, inner, div);
   else if (kind == 1)
      reduce_inner_f8<1>(x, out, outer, a, inner, div);
   else
      reduce_inner_f8<2>(x, out, outer, a, inner, div);
}
#endif

#ifdef SOFIE_RT_ROWS_VEC
// CumSum (MUL: CumProd) of floats along an axis that is not the last: x and y are outer x n x
// inner (inner >= 8, x not y), running along n. 32 (then 8) columns at a time, each running
// total kept in a vector register: one load, one add (multiply) and one store per 8 values. The
// generated loop of a row from the row before it (a store, then a load of it per step) ran
// reversed at 0.3x onnxruntime ([N, 50, 64] axis 1, benchmarks/breadth.py). Values are combined
// in the order of the axis, as that loop did. The columns past the last 8 take the scalar loop.
template <bool MUL, int NV>
SOFIE_RT_VM_INLINE void scan_cols8(const float *x, float *y, std::int64_t n, std::int64_t inner, bool reverse,
                                   bool exclusive)
{
   f8 acc[NV];
   for (int v = 0; v < NV; ++v)
      acc[v] = splat(MUL ? 1.0f : 0.0f);
   const std::int64_t step = reverse ? -inner : inner;
   std::int64_t off = reverse ? (n - 1) * inner : 0;
   for (std::int64_t s = 0; s < n; ++s, off += step)
      for (int v = 0; v < NV; ++v) {
         const f8 xv = load(x + off + 8 * v);
         const f8 next = MUL ? acc[v] * xv : acc[v] + xv;
         store(y + off + 8 * v, exclusive ? acc[v] : next);
         acc[v] = next;
      }
}
template <bool MUL>
inline void scan_cols(const float *x, float *y, std::int64_t outer, std::int64_t n, std::int64_t inner, bool reverse,
                      bool exclusive)
{
   for (std::int64_t o = 0; o < outer; ++o) {
      const float *xo = x + o * n * inner;
      float *yo = y + o * n * inner;
      std::int64_t c = 0;
      for (; c + 32 <= inner; c += 32)
         scan_cols8<MUL, 4>(xo + c, yo + c, n, inner, reverse, exclusive);
      for (; c + 8 <= inner; c += 8)
         scan_cols8<MUL, 1>(xo + c, yo + c, n, inner, reverse, exclusive);
      for (; c < inner; ++c) {
         float acc = MUL ? 1.0f : 0.0f;
         for (std::int64_t s = 0; s < n; ++s) {
            const std::int64_t at = (reverse ? n - 1 - s : s) * inner + c;
            const float next = MUL ? acc * xo[at] : acc + xo[at];
            yo[at] = exclusive ? acc : next;
            acc = next;
         }
      }
   }
}
#endif

} // namespace rows

// n copies of v from d (Expand's broadcast runs): forced inline and, for float, written in 8-lane
// vectors, because cling inlines only always_inline functions, and a plain loop of a short
// constant length is fully unrolled into scalar stores before its vectoriser sees it (no SLP
// pass merges them). Expand [1,32,100,1] -> [1,32,100,16], 3200 runs of 16: 15.3 us as
// std::fill_n (16 scalar stores per run).
template <class T>
SOFIE_RT_VM_INLINE void fill(T *d, std::int64_t n, T v)
{
   std::int64_t i = 0;
#ifdef SOFIE_RT_ROWS_VEC
   if constexpr (std::is_same<T, float>::value) {
      const rows::f8 s = rows::splat(v);
      for (; i + 8 <= n; i += 8)
         rows::store(d + i, s);
   }
#endif
   for (; i < n; ++i)
      d[i] = v;
}

// ---- dense layers: register-blocked GEMM with a bias (namespace sofie_rt::dense) ------------
// C[M, N] = A[M, K] B[K, N] + bias[N] (bias may be null), row-major, no transposition: the
// product of every Gemm, MatMul and FusedMatMul whose weight is one [K, N] matrix (batch rows of
// a 3-D MatMul folded into M). A tile of 6 rows x 16 columns is summed over K in twelve 8-float
// vectors (a local array of the vector type, fully unrolled: cling keeps it in registers with
// -optimize-regalloc), B read in place (the layout pass already stores constant weights [K, N]),
// the bias loaded into the accumulators and C written once. Under cling on the corpus's shapes
// this is 1.1-1.5x OpenBLAS's sgemm (which also writes C then needs a bias pass), e.g. [12800, 64]
// x [64, 64] 95 against 70-84 GFLOP/s (docs/performance.md, "Convolutions and dense layers").
// One row (batch 1) stays a BLAS gemv (2-3x faster than one row of tiles: 2 accumulators). A
// constant weight above 128 KiB with K <= 512 is also stored in 16-column panels by the compiler
// (gemm_bias_panels, from 32 rows: one aligned line of B per step, K unrolled 4x); any other B
// above 128 KiB goes to BLAS sgemm per block of 256 rows (see gemm_bias). With AVX2 (16 vector
// registers) 6 x 16 (12 accumulators, 2 B vectors, 1 broadcast) is the largest tile that fits;
// with AVX-512 the tiles are 6 x 32 in 16-lane registers (tile_zmm) and the last columns are read
// in place by masked loads.
namespace dense {

#if defined(__clang__)
#define SOFIE_RT_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define SOFIE_RT_UNROLL _Pragma("GCC unroll 16")
#else
#define SOFIE_RT_UNROLL
#endif

#ifdef SOFIE_RT_ROWS_VEC
using rows::f8;

// one step k of a tile: acc[r] += A[r, k] * B[k, :]; MASK: the last vector has nt valid columns,
// read by a masked load (B in place, no zero-padded copy)
template <int MR, int NV, bool MASK = false>
SOFIE_RT_VM_INLINE void tile_step(f8 (&acc)[MR][NV], const float *A, std::int64_t lda, const float *Bk, std::int64_t k,
                                  std::int64_t nt = 8)
{
   f8 b[NV];
   SOFIE_RT_UNROLL
   for (int v = 0; v < NV; ++v)
      b[v] = MASK && v == NV - 1 ? rows::load_part(Bk + 8 * v, nt, 0.0f) : rows::load(Bk + 8 * v);
   SOFIE_RT_UNROLL
   for (int r = 0; r < MR; ++r) {
      const f8 a = rows::splat(A[r * lda + k]);
      SOFIE_RT_UNROLL
      for (int v = 0; v < NV; ++v)
         acc[r][v] += a * b[v];
   }
}

// MR rows x NV vectors of 8 columns; the last vector of a Tail tile has nt (< 8) valid columns,
// and B then comes from a zero-padded copy of the last columns. U > 1 (packed panels, ldb = 16):
// K unrolled U times, B addressed by constant offsets (for B read in place, a runtime ldb, the
// unrolled loop ran out of registers: 2x slower). KC > 0: K and lda are both KC, known to the
// compiler (a weight's K is fixed, A's rows are contiguous), so the rows of A are constant offsets
// of one pointer: 3-19% faster for K <= 32, within +-2% at K = 64 (benchmarks/dense_kernel.py;
// docs/performance.md, "A weight's fixed K as a template argument")
template <int MR, int NV, bool Tail, int U = 1, int KC = 0, bool MASK = false>
SOFIE_RT_VM_INLINE void tile(std::int64_t Krt, const float *A, std::int64_t ldart, const float *B, std::int64_t ldb,
                             const float *bias, float *C, std::int64_t ldc, std::int64_t nt)
{
   const std::int64_t K = KC > 0 ? KC : Krt, lda = KC > 0 ? KC : ldart;
   f8 acc[MR][NV];
   SOFIE_RT_UNROLL
   for (int v = 0; v < NV; ++v) {
      const f8 b0 = !bias ? rows::splat(0.0f)
                          : (Tail && v == NV - 1 ? rows::load_part(bias + 8 * v, nt, 0.0f) : rows::load(bias + 8 * v));
      SOFIE_RT_UNROLL
      for (int r = 0; r < MR; ++r)
         acc[r][v] = b0;
   }
   if (U > 1) {
      std::int64_t k = 0;
      for (; k + U <= K; k += U) {
         SOFIE_RT_UNROLL
         for (int u = 0; u < U; ++u)
            tile_step<MR, NV>(acc, A, lda, B + (k + u) * 16, k + u);
      }
      for (; k < K; ++k)
         tile_step<MR, NV>(acc, A, lda, B + k * 16, k);
   } else {
      for (std::int64_t k = 0; k < K; ++k)
         tile_step<MR, NV, MASK>(acc, A, lda, B + k * ldb, k, nt);
   }
   SOFIE_RT_UNROLL
   for (int r = 0; r < MR; ++r)
      SOFIE_RT_UNROLL
      for (int v = 0; v < NV; ++v) {
         if (Tail && v == NV - 1)
            rows::store_part(C + r * ldc + 8 * v, acc[r][v], nt);
         else
            rows::store(C + r * ldc + 8 * v, acc[r][v]);
      }
}

#ifdef SOFIE_RT_AVX512
// MR rows x 32 columns in 2 x MR accumulators of 16 lanes: row k of columns j..j+15 at P0 + k ldp,
// of j+16..j+31 at P1 + k ldp (two adjacent packed panels, ldp = 16, or B in place, ldp = ldb).
// Half the broadcasts of A per multiply-add of the 6 x 16 tile and half the instructions:
// [N, 300] x [300, 300] at batch 256 417 -> 405 us, [12800, 64] x [64, 64] 951 -> 912 us,
// [256, 1024] x [1024, 32] 164 -> 144 us (Zen 4, whose FMA units are 256 bits wide: the peak
// is the same, what the tile gains is issue slots; benchmarks/dense_kernel.py and ops.py)
template <int MR, int KC = 0>
SOFIE_RT_VM_INLINE void tile_zmm(std::int64_t Krt, const float *A, std::int64_t ldart, const float *P0,
                                 const float *P1, std::int64_t ldp, const float *bias, float *C, std::int64_t ldc)
{
   const std::int64_t K = KC > 0 ? KC : Krt, lda = KC > 0 ? KC : ldart;
   __m512 acc[MR][2];
   const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
   const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
   SOFIE_RT_UNROLL
   for (int r = 0; r < MR; ++r) {
      acc[r][0] = b0;
      acc[r][1] = b1;
   }
   for (std::int64_t k = 0; k < K; ++k) {
      const __m512 x0 = _mm512_loadu_ps(P0 + k * ldp), x1 = _mm512_loadu_ps(P1 + k * ldp);
      SOFIE_RT_UNROLL
      for (int r = 0; r < MR; ++r) {
         const __m512 a = _mm512_set1_ps(A[r * lda + k]);
         acc[r][0] = _mm512_fmadd_ps(a, x0, acc[r][0]);
         acc[r][1] = _mm512_fmadd_ps(a, x1, acc[r][1]);
      }
   }
   SOFIE_RT_UNROLL
   for (int r = 0; r < MR; ++r) {
      _mm512_storeu_ps(C + r * ldc, acc[r][0]);
      _mm512_storeu_ps(C + r * ldc + 16, acc[r][1]);
   }
}
#endif

// MR rows, columns [j0, j1); `tail` is B's last N % 16 columns zero-padded to 16 ([K, 16]), read
// by the one partial tile at the matrix's right edge (16 columns whose second vector is partial).
// PACKED: B is panels() layout (16 columns of all K rows contiguous, zero-padded; ldb and
// tail unused), so a tile reads one aligned 64-byte line per k instead of a row segment that
// straddles two lines when N * 4 is not a multiple of 64
template <int MR, bool PACKED = false, int KC = 0>
inline void row_tiles(std::int64_t K, std::int64_t j0, std::int64_t j1, const float *A, std::int64_t lda,
                      const float *B, std::int64_t ldb, const float *tail, const float *bias, float *C, std::int64_t ldc)
{
   std::int64_t j = j0;
#ifdef SOFIE_RT_AVX512
   for (; j + 32 <= j1; j += 32) {
      if (PACKED)
         tile_zmm<MR, KC>(K, A, lda, B + j * K, B + (j + 16) * K, 16, bias ? bias + j : nullptr, C + j, ldc);
      else
         tile_zmm<MR, KC>(K, A, lda, B + j, B + j + 16, ldb, bias ? bias + j : nullptr, C + j, ldc);
   }
#endif
   for (; j + 16 <= j1; j += 16)
      tile<MR, 2, false, PACKED ? 4 : 1, KC>(K, A, lda, PACKED ? B + j * K : B + j, PACKED ? 16 : ldb,
                                         bias ? bias + j : nullptr, C + j, ldc, 8);
   const std::int64_t nt = j1 - j;
   if (PACKED)
      tail = B + j * K; // the last panel, zero-padded like the tail copy
#ifdef SOFIE_RT_AVX512_VL
   else if (nt % 8) { // B's last columns in place, by masked loads (gemm_bias makes no tail copy)
      if (nt > 8)
         tile<MR, 2, true, 1, 0, true>(K, A, lda, B + j, ldb, bias ? bias + j : nullptr, C + j, ldc, nt - 8);
      else
         tile<MR, 1, true, 1, 0, true>(K, A, lda, B + j, ldb, bias ? bias + j : nullptr, C + j, ldc, nt);
      return;
   }
#endif
   if (nt > 8)
      tile<MR, 2, true, PACKED ? 4 : 1>(K, A, lda, tail, 16, bias ? bias + j : nullptr, C + j, ldc, nt - 8);
   else if (nt == 8 && !PACKED)
      tile<MR, 1, false>(K, A, lda, B + j, ldb, bias ? bias + j : nullptr, C + j, ldc, 8);
   else if (nt == 8)
      tile<MR, 1, false, 4>(K, A, lda, tail, 16, bias ? bias + j : nullptr, C + j, ldc, 8);
   else if (nt > 0)
      tile<MR, 1, true>(K, A, lda, tail, 16, bias ? bias + j : nullptr, C + j, ldc, nt);
}

template <bool PACKED = false, int KC = 0>
inline void block(std::int64_t M, std::int64_t j0, std::int64_t j1, std::int64_t K, const float *A, std::int64_t lda,
                  const float *B, std::int64_t ldb, const float *tail, const float *bias, float *C, std::int64_t ldc)
{
   // tiles of 6 rows; 1 or 2 rows left over after a full tile are taken as 4 + 3 or 4 + 4 instead
   // (a tile of 1 or 2 rows has 2 or 4 accumulators, too few to hide the FMA latency: 50 rows
   // = 8 x 6 + 2 ran 8% slower than 7 x 6 + 4 + 4)
   const std::int64_t rem = M % 6, full = M - rem - (M > 6 && rem && rem < 3 ? 6 : 0);
   std::int64_t i = 0;
   for (; i < full; i += 6)
      row_tiles<6, PACKED, KC>(K, j0, j1, A + i * lda, lda, B, ldb, tail, bias, C + i * ldc, ldc);
   A += i * lda;
   C += i * ldc;
   switch (M - i) {
   case 8:
      row_tiles<4, PACKED>(K, j0, j1, A, lda, B, ldb, tail, bias, C, ldc);
      row_tiles<4, PACKED>(K, j0, j1, A + 4 * lda, lda, B, ldb, tail, bias, C + 4 * ldc, ldc);
      break;
   case 7:
      row_tiles<4, PACKED>(K, j0, j1, A, lda, B, ldb, tail, bias, C, ldc);
      row_tiles<3, PACKED>(K, j0, j1, A + 4 * lda, lda, B, ldb, tail, bias, C + 4 * ldc, ldc);
      break;
   case 5: row_tiles<5, PACKED>(K, j0, j1, A, lda, B, ldb, tail, bias, C, ldc); break;
   case 4: row_tiles<4, PACKED>(K, j0, j1, A, lda, B, ldb, tail, bias, C, ldc); break;
   case 3: row_tiles<3, PACKED>(K, j0, j1, A, lda, B, ldb, tail, bias, C, ldc); break;
   case 2: row_tiles<2, PACKED>(K, j0, j1, A, lda, B, ldb, tail, bias, C, ldc); break;
   case 1: row_tiles<1, PACKED>(K, j0, j1, A, lda, B, ldb, tail, bias, C, ldc); break;
   default: break;
   }
}
#endif

#ifdef SOFIE_RT_ROWS_VEC
// the packed panels (gemm_bias_panels): B's layout is ops/linalg.py's panels() (16 columns of all
// K rows contiguous, the last panel zero-padded), made for K up to DENSE_PACK_MAX_K (= linalg's
// PANELS_MAX_K: a tile's 6 rows of A stay in L1) and read from DENSE_PACK_MIN_ROWS rows
constexpr std::int64_t DENSE_PACK_MAX_K = 512;
constexpr std::int64_t DENSE_PACK_MIN_ROWS = 32;

#endif

// No epilogue (gemm_bias's default).
struct no_epilogue {
   void operator()(std::int64_t, std::int64_t) const {}
};

#ifdef SOFIE_RT_ROWS_VEC
// C = A B + bias with B in panels() layout P, then epi per block of rows (see gemm_bias): the
// row tiles of a block (about 16 KiB of C) each sweep all the panels, A's 6 rows staying in L1
template <int KC, class Epi>
inline void panel_blocks(std::int64_t M, std::int64_t N, std::int64_t K, const float *A, std::int64_t lda,
                         const float *P, const float *bias, float *C, std::int64_t ldc, Epi &epi)
{
   const std::int64_t mb = std::max<std::int64_t>(6, std::min<std::int64_t>(48, 4096 / N) / 6 * 6);
   for (std::int64_t i = 0; i < M; i += mb) {
      const std::int64_t rows = std::min<std::int64_t>(mb, M - i);
      block<true, KC>(rows, 0, N, K, A + i * lda, lda, P, 16, nullptr, bias, C + i * ldc, ldc);
      epi(i, rows);
   }
}

#endif

#ifdef SOFIE_RT_ROWS_VEC
// One row against a narrow B (2 <= N <= 16, batch 1's output layers): y = a B + bias with B's rows
// in two vectors of 8 lanes, K in 4 interleaved sets of accumulators (one set was bound by the FMA
// latency). OpenBLAS's sgemv took 2.1 us for K = 1000, N = 10 (0.84x onnxruntime). A row of B is
// read as 16 floats, past its end into the next rows (those lanes are never stored); the last
// rows, where that would leave B, are read by parts.
inline void gemv_narrow(std::int64_t N, std::int64_t K, const float *a, const float *B, std::int64_t ldb,
                        const float *bias, float *C)
{
   f8 acc[4][2];
   for (int u = 0; u < 4; ++u)
      acc[u][0] = acc[u][1] = rows::splat(0.0f);
   // rows k with k * ldb + 16 <= (K - 1) * ldb + N: whole 16-float reads stay inside B
   const std::int64_t lim = (K - 1) * ldb + N - 16;
   const std::int64_t safe = lim < 0 ? 0 : std::min<std::int64_t>(K, lim / ldb + 1);
   std::int64_t k = 0;
   for (; k + 4 <= safe; k += 4)
      for (int u = 0; u < 4; ++u) {
         const f8 x = rows::splat(a[k + u]);
         const float *b = B + (k + u) * ldb;
         acc[u][0] += x * rows::load(b);
         acc[u][1] += x * rows::load(b + 8);
      }
   for (; k < K; ++k) {
      const f8 x = rows::splat(a[k]);
      const float *b = B + k * ldb;
      acc[0][0] += x * rows::load_part(b, N < 8 ? N : 8, 0.0f);
      if (N > 8)
         acc[0][1] += x * rows::load_part(b + 8, N - 8, 0.0f);
   }
   f8 y0 = (acc[0][0] + acc[1][0]) + (acc[2][0] + acc[3][0]);
   f8 y1 = (acc[0][1] + acc[1][1]) + (acc[2][1] + acc[3][1]);
   if (bias) {
      y0 += rows::load_part(bias, N < 8 ? N : 8, 0.0f);
      if (N > 8)
         y1 += rows::load_part(bias + 8, N - 8, 0.0f);
   }
   rows::store_part(C, y0, N < 8 ? N : 8);
   if (N > 8)
      rows::store_part(C + 8, y1, N - 8);
}
#endif

// C = A B + bias as above; then epi(r0, rows) is called for each block of rows [r0, r0 + rows)
// right after the block is written, while it is in L1 or L2 (a fused activation runs there: at
// batch 256 a pass over the whole output afterwards would read it back from L3 or memory). Blocks
// follow each other in order and cover every row once. KC: K when the compiler may know it (see
// tile), else 0.
template <class T, int KC = 0, class Epi = no_epilogue>
inline void gemm_bias(std::int64_t M, std::int64_t N, std::int64_t K, const T *A, std::int64_t lda, const T *B,
                      std::int64_t ldb, const T *bias, T *C, std::int64_t ldc, Epi epi = Epi())
{
   if (M <= 0 || N <= 0)
      return;
   if (KC > 0 && (K != KC || lda != KC)) // the tiles take K and lda to be KC
      return gemm_bias<T, 0>(M, N, K, A, lda, B, ldb, bias, C, ldc, epi);
#ifdef SOFIE_RT_ROWS_VEC
   if constexpr (std::is_same<T, float>::value) {
      // one row is a gemv, one column a dot product per row: BLAS (or the loops) do those better,
      // except one row against a narrow B
      if (M == 1 && N > 1 && N <= 16 && K > 0) {
         gemv_narrow(N, K, A, B, ldb, bias, C);
         epi(std::int64_t(0), std::int64_t(1));
         return;
      }
      if (M > 1 && N > 1 && K > 0) {
#ifdef SOFIE_RT_AVX512_VL
         const float *tail = nullptr; // row_tiles reads B's last columns in place by masked loads
#else
         // B's last N % 16 columns, zero-padded to 16 (the tiles read whole vectors of B)
         float stack_tail[16 * 128];
         std::vector<float> heap_tail;
         float *tail = stack_tail;
         if (N % 16 && N % 16 != 8 && K * N <= 32768) {
            if (K > 128) {
               heap_tail.resize(std::size_t(16 * K));
               tail = heap_tail.data();
            }
            const std::int64_t j = N - N % 16;
            for (std::int64_t k = 0; k < K; ++k)
               for (std::int64_t l = 0; l < 16; ++l)
                  tail[k * 16 + l] = j + l < N ? B[k * ldb + j + l] : 0.0f;
         }
#endif
         // B of at most 128 KiB stays in L1/L2 while the tiles sweep all its columns for a few rows
         // at a time (blocks of about 16 KiB of C). A larger B (dense's 300 x 300) read in place
         // was 5% slower than BLAS (rows straddling cache lines); packed into panels it is faster
         // than BLAS (docs/performance.md). Packing per call here (8-11 us for 300 x 300) was
         // tried for a non-constant B and not kept: the branch in this inlined function made
         // every dense layer slower, also at batch 1
         if (K * N <= 32768) {
            const std::int64_t mb = std::max<std::int64_t>(6, std::min<std::int64_t>(48, 4096 / N) / 6 * 6);
            for (std::int64_t i = 0; i < M; i += mb) {
               const std::int64_t rows = std::min<std::int64_t>(mb, M - i);
               block<false, KC>(rows, 0, N, K, A + i * lda, lda, B, ldb, tail, bias, C + i * ldc, ldc);
               epi(i, rows);
            }
            return;
         }
         // (a constant B of this size comes packed: gemm_bias_panels)
         // blocks of 256 rows: each block's bias and epilogue while it is in L2
         for (std::int64_t i = 0; i < M; i += 256) {
            const std::int64_t rows = std::min<std::int64_t>(256, M - i);
            gemm<T>(false, false, rows, N, K, T(1), A + i * lda, lda, B, ldb, T(0), C + i * ldc, ldc);
            if (bias)
               for (std::int64_t r = i; r < i + rows; ++r)
                  for (std::int64_t j = 0; j < N; ++j)
                     C[r * ldc + j] += bias[j];
            epi(i, rows);
         }
         return;
      }
   }
#endif
   gemm<T>(false, false, M, N, K, T(1), A, lda, B, ldb, T(0), C, ldc);
   if (bias)
      for (std::int64_t i = 0; i < M; ++i)
         for (std::int64_t j = 0; j < N; ++j)
            C[i * ldc + j] += bias[j];
   epi(std::int64_t(0), M);
}

// gemm_bias for a constant float B that the compiler also stored packed (P: panels() layout
// of B, made once by ops/linalg.py's panels() in the weight blob): from DENSE_PACK_MIN_ROWS rows
// the tiles read P, fewer rows (batch 1's gemv) take gemm_bias on B
template <int KC = 0, class Epi = no_epilogue>
inline void gemm_bias_panels(std::int64_t M, std::int64_t N, std::int64_t K, const float *A, std::int64_t lda,
                             const float *B, std::int64_t ldb, const float *P, const float *bias, float *C,
                             std::int64_t ldc, Epi epi = Epi())
{
   if (KC > 0 && (K != KC || lda != KC)) // the tiles take K and lda to be KC
      return gemm_bias_panels<0>(M, N, K, A, lda, B, ldb, P, bias, C, ldc, epi);
#ifdef SOFIE_RT_ROWS_VEC
   if (M >= DENSE_PACK_MIN_ROWS && N > 1 && K > 0) {
      panel_blocks<KC>(M, N, K, A, lda, P, bias, C, ldc, epi);
      return;
   }
#else
   (void)P;
#endif
   gemm_bias<float, KC>(M, N, K, A, lda, B, ldb, bias, C, ldc, epi);
}

} // namespace dense

// ---- scaled dot-product attention (ONNX Attention, opsets 23-25) ---------------------------
// Q, K, V and Y are addressed through strides (the innermost stride is 1), so that 3-D
// ([B, S, H*D]) and 4-D layouts share the code and K and V are read in place when there is no
// past cache to concatenate (with one, they arrive gathered in the [B, Hkv, S, D] present layout).
template <class T> struct AttentionArgs {
   std::int64_t B, Hq, Hkv, Sq, St, D, Dv;
   std::int64_t qb, qh, qi;          // strides of Q
   std::int64_t kb, kh, ki, kd;      // strides of K (its head is h / (Hq / Hkv)); kd = 1 but for
                                     // a K given transposed ([D, St] per head, sofie.FusedAttention)
   std::int64_t vb, vh, vi;          // strides of V
   std::int64_t yb, yh, yi;          // strides of Y
   const T *Q; const T *K; const T *V; T *Y;
   T scale_q, scale_k;               // Q K^T is (scale_q Q)(scale_k K)^T: both sqrt(scale) for
                                     // Attention as its ONNX function does, 1 and scale for
                                     // sofie.FusedAttention (Q is then read in place)
   T softcap;
   bool causal; std::int64_t past; std::int64_t left, right;
   const std::int64_t *nonpad;       // per-batch valid key count, or nullptr
   const void *mask; bool mask_bool; // additive float mask or boolean mask, or nullptr
   std::int64_t mb, mh, mi, mlen;    // mask strides (0 where broadcast) and its last dimension
   int qk_mode; T *qk;               // optional [B, Hq, Sq, St] output, or nullptr
   bool softmax_plain;               // the float mask is added as is and a row of -inf scores is NaN,
                                     // as ONNX Softmax(scale Q K^T + mask) (sofie.FusedAttention)
   T *scores;                        // workspace, attention_scratch elements (ops/attention.py)
};

// The reference form, for double and for the optional qk output: per (batch, head) the scores
// of every query row by one GEMM (Q K^T, Q and K scaled by sqrt(scale) as the ONNX function
// does: scaling after the product may overflow where the scaled factors do not), the masks and
// the softmax row by row, then Y = P V by a second GEMM.
template <class T> inline void attention_rows(const AttentionArgs<T> &a)
{
   const T ninf = -std::numeric_limits<T>::infinity();
   const std::int64_t group = a.Hq / a.Hkv;
   for (std::int64_t b = 0; b < a.B; ++b) {
      const std::int64_t offset = a.past > 0 || !a.nonpad ? a.past : a.nonpad[b] - a.Sq;
      for (std::int64_t h = 0; h < a.Hq; ++h) {
         const std::int64_t hk = h / group;
         const T *K = a.K + b * a.kb + hk * a.kh;
         const T *V = a.V + b * a.vb + hk * a.vh;
         const T *Q = a.Q + b * a.qb + h * a.qh;
         T *Y = a.Y + b * a.yb + h * a.yh;
         T *S = a.scores; // [Sq, St], then Q and K scaled by sqrt(scale)
         T *Qs = S + a.Sq * a.St, *Ks = Qs + a.Sq * a.D;
         for (std::int64_t i = 0; i < a.Sq; ++i)
            for (std::int64_t d = 0; d < a.D; ++d)
               Qs[i * a.D + d] = Q[i * a.qi + d] * a.scale_q;
         for (std::int64_t j = 0; j < a.St; ++j)
            for (std::int64_t d = 0; d < a.D; ++d)
               Ks[j * a.D + d] = K[j * a.ki + d * a.kd] * a.scale_k;
         if (a.St > 0 && a.D > 0)
            gemm<T>(false, true, a.Sq, a.St, a.D, T(1), Qs, a.D, Ks, a.D, T(0), S, a.St);
         else
            for (std::int64_t k = 0; k < a.Sq * a.St; ++k)
               S[k] = T(0);
         for (std::int64_t i = 0; i < a.Sq; ++i) {
            T *row = S + i * a.St;
            T *qk = a.qk ? a.qk + ((b * a.Hq + h) * a.Sq + i) * a.St : nullptr;
            if (a.softcap > T(0))
               for (std::int64_t j = 0; j < a.St; ++j)
                  row[j] = a.softcap * vm::tanh(row[j] / a.softcap);
            if (qk && a.qk_mode <= 1)
               for (std::int64_t j = 0; j < a.St; ++j)
                  qk[j] = row[j];
            bool any_allowed = false;
            bool any_nan = false; // a NaN score makes the row NaN (as the reference), not "fully masked"
            T smax = ninf;
            const bool plain = !a.mask && !a.causal && a.left < 0 && a.right < 0 && !a.nonpad;
            for (std::int64_t j = 0; j < a.St; ++j) {
               T bias = T(0);
               if (!plain) {
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
               }
               const T s = row[j] + bias;
               if (qk && a.qk_mode == 2)
                  qk[j] = s;
               if (bias != ninf)
                  any_allowed = true;
               // a masked key takes no part, whatever its score (NaN included), as in the reference
               row[j] = bias == ninf ? ninf : s;
               any_nan = any_nan || (bias != ninf && s != s);
               smax = s > smax ? s : smax;
            }
            if (!any_nan && (!any_allowed || smax == ninf)) {
               // every probability is 0; the product with V below still carries V's NaN and
               // infinities into y, as the reference's product with the all-zero row does
               for (std::int64_t j = 0; j < a.St; ++j)
                  row[j] = T(0);
            } else {
               rows::softmax<T>(row, row, 1, a.St, false);
            }
            if (qk && a.qk_mode == 3)
               for (std::int64_t j = 0; j < a.St; ++j)
                  qk[j] = row[j];
         }
         if (a.Dv > 0) {
            // a zero probability times an inf or NaN of V is NaN in the reference; BLAS kernels
            // may skip zeros of P, so V holding one takes the explicit loop
            bool v_finite = true;
            for (std::int64_t j = 0; j < a.St; ++j)
               for (std::int64_t d = 0; d < a.Dv; ++d)
                  v_finite = v_finite && (V[j * a.vi + d] - V[j * a.vi + d]) == T(0);
            if (a.St > 0 && v_finite)
               gemm<T>(false, false, a.Sq, a.Dv, a.St, T(1), S, a.St, V, a.vi, T(0), Y, a.yi);
            else if (a.St > 0)
               for (std::int64_t i = 0; i < a.Sq; ++i) {
                  T *y = Y + i * a.yi;
                  for (std::int64_t d = 0; d < a.Dv; ++d)
                     y[d] = T(0);
                  for (std::int64_t j = 0; j < a.St; ++j) {
                     const T p = S[i * a.St + j];
                     for (std::int64_t d = 0; d < a.Dv; ++d)
                        y[d] += p * V[j * a.vi + d];
                  }
               }
            else
               for (std::int64_t i = 0; i < a.Sq; ++i)
                  for (std::int64_t d = 0; d < a.Dv; ++d)
                     Y[i * a.yi + d] = T(0);
         }
      }
   }
}

template <class T> inline void attention(const AttentionArgs<T> &a) { attention_rows<T>(a); }

#ifdef SOFIE_RT_ROWS_VEC
namespace attn {
using rows::f8;

// C[MR, cols] = A[MR, K] B[K, cols] for cols in (8 (NV - 1), 8 NV]: MR x NV accumulators of 8
// lanes held in registers over the whole K loop, one broadcast of A and NV loads of B per step.
// B must be readable 8 NV wide on every row. Of the last vector, `last` lanes are stored; or, with
// PAD, the whole vector with -inf in the other lanes (scores padded for the softmax: lanes stored
// one by one and then loaded as a vector stall the store forwarding).
template <int MR, int NV, bool PAD>
SOFIE_RT_VM_INLINE void tile(const float *A, std::int64_t lda, const float *B, std::int64_t ldb, std::int64_t K,
                             float *C, std::int64_t ldc, std::int64_t last)
{
   f8 acc[MR][NV];
   for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v)
         acc[r][v] = rows::splat(0.0f);
   for (std::int64_t k = 0; k < K; ++k) {
      f8 bv[NV];
      for (int v = 0; v < NV; ++v)
         bv[v] = rows::load(B + k * ldb + 8 * v);
      for (int r = 0; r < MR; ++r) {
         const f8 av = rows::splat(A[r * lda + k]);
         for (int v = 0; v < NV; ++v)
            acc[r][v] += av * bv[v];
      }
   }
   const rows::i8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
   const rows::i8 keep = lane < static_cast<std::int32_t>(last);
   for (int r = 0; r < MR; ++r) {
      for (int v = 0; v + 1 < NV; ++v)
         rows::store(C + r * ldc + 8 * v, acc[r][v]);
      if (PAD)
         rows::store(C + r * ldc + 8 * (NV - 1),
                     keep ? acc[r][NV - 1] : rows::splat(-std::numeric_limits<float>::infinity()));
      else if (last == 8)
         rows::store(C + r * ldc + 8 * (NV - 1), acc[r][NV - 1]);
      else
         rows::store_part(C + r * ldc + 8 * (NV - 1), acc[r][NV - 1], last);
   }
}

template <int MR, bool PAD>
SOFIE_RT_VM_INLINE void tile_row(const float *A, std::int64_t lda, const float *B, std::int64_t ldb, std::int64_t K,
                                 float *C, std::int64_t ldc, std::int64_t N)
{
   std::int64_t j = 0;
   for (; j + 16 <= N; j += 16)
      tile<MR, 2, false>(A, lda, B + j, ldb, K, C + j, ldc, 8);
   if (N - j > 8)
      tile<MR, 2, PAD>(A, lda, B + j, ldb, K, C + j, ldc, N - j - 8);
   else if (N - j > 0)
      tile<MR, 1, PAD>(A, lda, B + j, ldb, K, C + j, ldc, N - j);
}

// C[M, N] = A[M, K] B[K, N], every product computed (a zero of A times an inf or NaN of B is
// NaN, as in the reference; BLAS kernels may skip zeros). Rows of B readable to N rounded up to 8;
// with PAD, so are the rows of C, whose columns N.. up to the next multiple of 8 are set to -inf.
template <bool PAD>
inline void small_gemm(std::int64_t M, std::int64_t N, std::int64_t K, const float *A, std::int64_t lda,
                       const float *B, std::int64_t ldb, float *C, std::int64_t ldc)
{
   std::int64_t i = 0;
   for (; i + 6 <= M; i += 6)
      tile_row<6, PAD>(A + i * lda, lda, B, ldb, K, C + i * ldc, ldc, N);
   switch (M - i) {
   case 5: tile_row<5, PAD>(A + i * lda, lda, B, ldb, K, C + i * ldc, ldc, N); break;
   case 4: tile_row<4, PAD>(A + i * lda, lda, B, ldb, K, C + i * ldc, ldc, N); break;
   case 3: tile_row<3, PAD>(A + i * lda, lda, B, ldb, K, C + i * ldc, ldc, N); break;
   case 2: tile_row<2, PAD>(A + i * lda, lda, B, ldb, K, C + i * ldc, ldc, N); break;
   case 1: tile_row<1, PAD>(A + i * lda, lda, B, ldb, K, C + i * ldc, ldc, N); break;
   default: break;
   }
}
} // namespace attn

// One entry C[M, N] = A[M, K] B[K, N] of a batched MatMul (contiguous matrices): the attention
// tiles while the product is small (many small heads: BLAS's per-call cost and packing dominate,
// [50, 16] x [16, 50] took 1.6 us per call through sgemm, 1.1 us by the tiles), else gemm.
// `b_slack`: the tiles read B's rows 8-lane wide, so up to 7 elements past the end of this
// entry's B when N is not a multiple of 8; the caller says whether the buffer has them.
template <class T>
inline void gemm_batch_entry(std::int64_t M, std::int64_t N, std::int64_t K, const T *A, const T *B, T *C, bool b_slack)
{
   (void)b_slack;
   gemm<T>(false, false, M, N, K, T(1), A, K, B, N, T(0), C, N);
}
template <>
inline void gemm_batch_entry<float>(std::int64_t M, std::int64_t N, std::int64_t K, const float *A, const float *B,
                                    float *C, bool b_slack)
{
   if (M * N * K <= 64 * 64 * 64 && (b_slack || N % 8 == 0))
      attn::small_gemm<false>(M, N, K, A, K, B, N, C, N);
   else
      gemm<float>(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
}

// float: the two products by the register-blocked tiles above (per head, Q K^T is [Sq, D] x
// [D, St] and P V is [Sq, St] x [St, Dv], too small for BLAS's call and packing overhead), K
// packed once per key/value head, transposed and scaled (Q too unless scale_q is 1). When every
// row sees every key (no causal, window or length limit), the masks row by row and one
// rows::softmax call over all the rows; otherwise the row's allowed key range plus a select and
// rows::softmax on that range. The qk output takes the reference form.
template <> inline void attention<float>(const AttentionArgs<float> &a)
{
   if (a.qk) {
      attention_rows<float>(a);
      return;
   }
   const float ninf = -std::numeric_limits<float>::infinity();
   // the fields in locals: a float store may alias a.scale_q or a.softcap (same type), which
   // made every loop reload the fields, unvectorised (packing cost more than both products)
   const std::int64_t Sq = a.Sq, St = a.St, D = a.D, Dv = a.Dv, group = a.Hq / a.Hkv;
   const std::int64_t qi = a.qi, ki = a.ki, kd = a.kd, vi = a.vi, yi = a.yi;
   const float scale_q = a.scale_q, scale_k = a.scale_k, softcap = a.softcap;
   const std::int64_t Stp = (St + 7) & ~std::int64_t(7), Dvp = (Dv + 7) & ~std::int64_t(7);
   const bool plain = !a.mask && !a.causal && a.left < 0 && a.right < 0 && !a.nonpad;
   const bool full = !a.causal && a.left < 0 && a.right < 0 && !a.nonpad && (!a.mask || a.mlen >= St);
   const bool pack_v = Dv % 8 != 0; // the tiles read V 8 lanes wide: a ragged row is padded
   float *Qs = a.scores;    // [Sq, D]
   float *Kt = Qs + Sq * D; // [D, Stp]
   float *S = Kt + D * Stp; // [Sq, Stp] scores
   float *P = S + Sq * Stp; // [Sq, Stp] probabilities
   float *Vp = P + Sq * Stp; // [St, Dvp] when pack_v
   for (std::int64_t k = 0; k < D * Stp; ++k)
      Kt[k] = 0.0f;
   for (std::int64_t k = 0; k < St * Dvp; ++k)
      Vp[k] = 0.0f;
   for (std::int64_t b = 0; b < a.B; ++b) {
      const std::int64_t offset = a.past > 0 || !a.nonpad ? a.past : a.nonpad[b] - Sq;
      for (std::int64_t hk = 0; hk < a.Hkv; ++hk) {
         const float *K = a.K + b * a.kb + hk * a.kh;
         for (std::int64_t j = 0; j < St; ++j)
            for (std::int64_t d = 0; d < D; ++d)
               Kt[d * Stp + j] = K[j * ki + d * kd] * scale_k;
         const float *V = a.V + b * a.vb + hk * a.vh;
         std::int64_t ldv = vi;
         if (pack_v) {
            for (std::int64_t j = 0; j < St; ++j)
               for (std::int64_t d = 0; d < Dv; ++d)
                  Vp[j * Dvp + d] = V[j * vi + d];
            V = Vp;
            ldv = Dvp;
         }
         for (std::int64_t h = hk * group; h < (hk + 1) * group; ++h) {
            const float *Q = a.Q + b * a.qb + h * a.qh;
            if (scale_q == 1.0f) {
               attn::small_gemm<true>(Sq, St, D, Q, qi, Kt, Stp, S, Stp);
            } else {
               for (std::int64_t i = 0; i < Sq; ++i)
                  for (std::int64_t d = 0; d < D; ++d)
                     Qs[i * D + d] = Q[i * qi + d] * scale_q;
               attn::small_gemm<true>(Sq, St, D, Qs, D, Kt, Stp, S, Stp);
            }
            if (full) {
               // every row sees every key: the bias or mask row by row, then one softmax call over
               // all rows (their padding is -inf already)
               for (std::int64_t i = 0; i < Sq; ++i) {
                  float *srow = S + i * Stp;
                  if (softcap > 0.0f)
                     for (std::int64_t j = 0; j < St; ++j)
                        srow[j] = softcap * vm::tanh(srow[j] / softcap);
                  if (a.mask) {
                     const std::int64_t m0 = b * a.mb + h * a.mh + i * a.mi;
                     if (a.mask_bool) {
                        const bool *m = static_cast<const bool *>(a.mask) + m0;
                        for (std::int64_t j = 0; j < St; ++j)
                           srow[j] = m[j] ? srow[j] : ninf;
                     } else if (a.softmax_plain) {
                        const float *m = static_cast<const float *>(a.mask) + m0;
                        for (std::int64_t j = 0; j < St; ++j)
                           srow[j] += m[j];
                     } else {
                        const float *m = static_cast<const float *>(a.mask) + m0;
                        for (std::int64_t j = 0; j < St; ++j)
                           srow[j] = m[j] == ninf ? ninf : srow[j] + m[j];
                     }
                  }
               }
               rows::softmax<float>(S, P, Sq, Stp, false);
               if (!a.softmax_plain)
                  for (std::int64_t i = 0; i < Sq; ++i) {
                     float *srow = S + i * Stp, *prow = P + i * Stp;
                     if (prow[0] == prow[0])
                        continue;
                     // NaN: a NaN or +inf score (the row stays NaN) or every score -inf (every
                     // probability is 0: see below)
                     bool zero = true;
                     for (std::int64_t j = 0; j < St; ++j)
                        zero = zero && srow[j] == ninf;
                     for (std::int64_t j = 0; j < (zero ? St : 0); ++j)
                        prow[j] = 0.0f;
                  }
            } else {
               for (std::int64_t i = 0; i < Sq; ++i) {
                  float *srow = S + i * Stp, *prow = P + i * Stp;
                  if (softcap > 0.0f)
                     for (std::int64_t j = 0; j < St; ++j)
                        srow[j] = softcap * vm::tanh(srow[j] / softcap);
                  // the keys this row may see: [lo, hi), less those a mask hides
                  std::int64_t lo = 0, hi = St;
                  if (!plain) {
                     const std::int64_t pos = i + offset;
                     if (a.causal)
                        hi = std::min(hi, pos + 1);
                     if (a.right >= 0)
                        hi = std::min(hi, pos + a.right + 1);
                     if (a.left >= 0)
                        lo = std::max(lo, pos - a.left);
                     if (a.nonpad)
                        hi = std::min(hi, a.nonpad[b]);
                     if (a.mask) {
                        hi = std::min(hi, a.mlen);
                        const std::int64_t m0 = b * a.mb + h * a.mh + i * a.mi;
                        // a masked key takes no part, whatever its score (NaN included)
                        if (a.mask_bool) {
                           const bool *m = static_cast<const bool *>(a.mask) + m0;
                           for (std::int64_t j = lo; j < hi; ++j)
                              srow[j] = m[j] ? srow[j] : ninf;
                        } else if (a.softmax_plain) {
                           const float *m = static_cast<const float *>(a.mask) + m0;
                           for (std::int64_t j = lo; j < hi; ++j)
                              srow[j] += m[j];
                        } else {
                           const float *m = static_cast<const float *>(a.mask) + m0;
                           for (std::int64_t j = lo; j < hi; ++j)
                              srow[j] = m[j] == ninf ? ninf : srow[j] + m[j];
                        }
                     }
                  }
                  lo = std::max<std::int64_t>(lo, 0);
                  hi = std::min(hi, St);
                  bool zero = hi <= lo;
                  if (!zero) {
                     // widened to whole vectors with -inf scores (probability 0): rows::softmax
                     // then takes no ragged tail (lanes moved one by one); the product padded
                     // the columns St.. already
                     const std::int64_t lo8 = lo & ~std::int64_t(7), hi8 = (hi + 7) & ~std::int64_t(7);
                     for (std::int64_t j = lo8; j < lo; ++j)
                        srow[j] = ninf;
                     for (std::int64_t j = hi; j < (hi == St ? 0 : hi8); ++j)
                        srow[j] = ninf;
                     rows::softmax<float>(srow + lo8, prow + lo8, 1, hi8 - lo8, false);
                     if (prow[lo] != prow[lo] && !a.softmax_plain) {
                        // NaN: a NaN or +inf score (the row stays NaN, as in the reference) or
                        // every visible score -inf (every probability is 0)
                        zero = true;
                        for (std::int64_t j = lo; j < hi; ++j)
                           zero = zero && srow[j] == ninf;
                     }
                  }
                  // the product with V still carries V's NaN and infinities into y through the
                  // zero probabilities, as the reference's product does
                  for (std::int64_t j = 0; j < (zero ? 0 : lo); ++j)
                     prow[j] = 0.0f;
                  for (std::int64_t j = zero ? 0 : hi; j < St; ++j)
                     prow[j] = 0.0f;
               }
            }
            float *Y = a.Y + b * a.yb + h * a.yh;
            attn::small_gemm<false>(Sq, Dv, St, P, Stp, V, ldv, Y, yi);
         }
      }
   }
}
#endif

// ---- linear attention (ONNX LinearAttention, opset 27) -------------------------------------
// The recurrence of the spec run token by token (the chunk-parallel form is a GPU optimisation
// with the same result): per batch and key/value head, a state S[dk][dv] is decayed by
// exp(g_t) (gated rules), corrected by beta_t (v_t - S^T k_t) (delta rules), updated with
// k_t (x) v_t and read by every query head of the group: o_t = scale * q_t^T S. Q, K, V, the
// decay, beta and the output are packed [B, T, H*D]; the state is [B, Hkv, dk, dv].
template <class T> struct LinearAttentionArgs {
   std::int64_t B, T_, Hq, Hkv, dk, dv;
   const T *Q; const T *K; const T *V;
   const T *past;                 // [B, Hkv, dk, dv], or nullptr for a zero state
   const T *decay; std::int64_t decay_w; // [B, T, decay_w]: decay_w is Hkv (per head) or Hkv*dk
   const T *beta; std::int64_t beta_w;   // [B, T, beta_w]: beta_w is Hkv or 1
   T scale;
   T *Y;                          // [B, T, Hq*dv]
   T *present;                    // [B, Hkv, dk, dv], or nullptr
   T *state;                      // workspace of dk*dv elements (used when present is nullptr)
   T *u;                          // workspace of dv elements
};

template <class T> inline void linear_attention(const LinearAttentionArgs<T> &a)
{
   // Per token, at most two passes over the state, row by row: (decay and) the retrieval
   // S^T k of the delta rules; then (decay,) the update and the read-out of every query head
   // of the group, accumulated row by row into the outputs.
   const std::int64_t group = a.Hq / a.Hkv, dk = a.dk, dv = a.dv;
   const std::int64_t sq = a.Hq * dk, sk = a.Hkv * dk, sv = a.Hkv * dv, sy = a.Hq * dv;
   for (std::int64_t b = 0; b < a.B; ++b) {
      for (std::int64_t hk = 0; hk < a.Hkv; ++hk) {
         T *S = a.present ? a.present + (b * a.Hkv + hk) * dk * dv : a.state;
         if (a.past)
            std::memcpy(S, a.past + (b * a.Hkv + hk) * dk * dv, sizeof(T) * std::size_t(dk * dv));
         else
            for (std::int64_t x = 0; x < dk * dv; ++x)
               S[x] = T(0);
         for (std::int64_t t = 0; t < a.T_; ++t) {
            const std::int64_t row = b * a.T_ + t;
            const T *k = a.K + row * sk + hk * dk;
            const T *v = a.V + row * sv + hk * dv;
            const T *g = a.decay ? a.decay + row * a.decay_w + (a.decay_w == a.Hkv ? hk : hk * dk) : nullptr;
            const std::int64_t gstep = a.decay_w == a.Hkv ? 0 : 1;
            const T g0 = g ? vm::exp(g[0]) : T(1);
            const T *u = v;
            bool decayed = false;
            if (a.beta) {
               const T bt = a.beta[row * a.beta_w + (a.beta_w == 1 ? 0 : hk)];
               T *w = a.u;
               for (std::int64_t m = 0; m < dv; ++m)
                  w[m] = T(0);
               for (std::int64_t i = 0; i < dk; ++i) {
                  T *s = S + i * dv;
                  const T ki = k[i];
                  if (g) {
                     const T f = gstep ? vm::exp(g[i]) : g0;
                     for (std::int64_t m = 0; m < dv; ++m) {
                        s[m] *= f;
                        w[m] += s[m] * ki;
                     }
                  } else {
                     for (std::int64_t m = 0; m < dv; ++m)
                        w[m] += s[m] * ki;
                  }
               }
               for (std::int64_t m = 0; m < dv; ++m)
                  w[m] = bt * (v[m] - w[m]);
               u = w;
               decayed = true;
            }
            T *y0 = a.Y + row * sy + hk * group * dv;
            const T *q0 = a.Q + row * sq + hk * group * dk;
            for (std::int64_t x = 0; x < group * dv; ++x)
               y0[x] = T(0);
            for (std::int64_t i = 0; i < dk; ++i) {
               T *s = S + i * dv;
               const T ki = k[i];
               if (g && !decayed) {
                  const T f = gstep ? vm::exp(g[i]) : g0;
                  for (std::int64_t m = 0; m < dv; ++m)
                     s[m] = s[m] * f + ki * u[m];
               } else {
                  for (std::int64_t m = 0; m < dv; ++m)
                     s[m] += ki * u[m];
               }
               for (std::int64_t h = 0; h < group; ++h) {
                  T *y = y0 + h * dv;
                  const T qi = q0[h * dk + i];
                  for (std::int64_t m = 0; m < dv; ++m)
                     y[m] += qi * s[m];
               }
            }
            for (std::int64_t x = 0; x < group * dv; ++x)
               y0[x] *= a.scale;
         }
      }
   }
}

// Batched 2-D transpose y[b][c][r] = x[b][r][c] (x is batch x rows x cols), the form most
// Transposes take once adjacent axes are merged (ParticleNet's [N, P, K, C] -> [N, C, P, K]).
// Element by element, reading rows of a 16 x 16 tile and writing its columns, so that the 16
// destination lines of a tile stay in L1 (3x faster than a plain loop over y, which reads x with
// a stride of `cols`): one store per element, the limit of the scalar form.
template <class T>
SOFIE_RT_VM_INLINE void transpose_tile(const T *xb, T *yb, std::int64_t rows, std::int64_t cols, std::int64_t r0,
                                       std::int64_t r1, std::int64_t c0, std::int64_t c1)
{
   for (std::int64_t r = r0; r < r1; ++r)
      for (std::int64_t c = c0; c < c1; ++c)
         yb[c * rows + r] = xb[r * cols + c];
}

// rows [r0, rows) of one matrix by 16 x 16 tiles. The generated code passes constant rows and
// cols, and clang fully unrolls every loop it can under the batch loop: beyond two tiles of
// columns the loop over them is kept (SOFIE_RT_NO_UNROLL), as unrolled, [N, 2, 100] gave an
// innermost loop of 400 loads and stores whose dependence analysis (LoopVectorize and
// LoopLoadElimination) took 1.0 s of JIT, [N, 3, 50] 0.5 s (0.07 s each with the loop kept)
template <class T>
SOFIE_RT_VM_INLINE void transpose_rows(const T *xb, T *yb, std::int64_t rows, std::int64_t cols, std::int64_t r0)
{
   constexpr std::int64_t t = 16;
   for (; r0 < rows; r0 += t) {
      const std::int64_t r1 = std::min(r0 + t, rows);
      if (cols > 2 * t) {
         std::int64_t c0 = 0;
         SOFIE_RT_NO_UNROLL
         for (; c0 + t <= cols; c0 += t)
            transpose_tile(xb, yb, rows, cols, r0, r1, c0, c0 + t);
         transpose_tile(xb, yb, rows, cols, r0, r1, c0, cols);
      } else {
         for (std::int64_t c0 = 0; c0 < cols; c0 += t)
            transpose_tile(xb, yb, rows, cols, r0, r1, c0, std::min(c0 + t, cols));
      }
   }
}

#if defined(SOFIE_RT_ROWS_VEC) && (defined(__clang__) || __GNUC__ >= 12)
// 8 x 8 floats in registers: y[j * ldy + i] = x[i * ldx + j] by 8 loads, 24 shuffles (unpack,
// shuffle within 128-bit lanes, then exchange of lanes: vunpcklps/vshufps/vperm2f128 on AVX) and
// 8 stores, where the scalar form makes 64 stores
SOFIE_RT_VM_INLINE void transpose8x8(const float *x, std::int64_t ldx, float *y, std::int64_t ldy)
{
   using rows::f8;
   const f8 r0 = rows::load(x), r1 = rows::load(x + ldx), r2 = rows::load(x + 2 * ldx),
            r3 = rows::load(x + 3 * ldx), r4 = rows::load(x + 4 * ldx), r5 = rows::load(x + 5 * ldx),
            r6 = rows::load(x + 6 * ldx), r7 = rows::load(x + 7 * ldx);
   const f8 t0 = __builtin_shufflevector(r0, r1, 0, 8, 1, 9, 4, 12, 5, 13);
   const f8 t1 = __builtin_shufflevector(r0, r1, 2, 10, 3, 11, 6, 14, 7, 15);
   const f8 t2 = __builtin_shufflevector(r2, r3, 0, 8, 1, 9, 4, 12, 5, 13);
   const f8 t3 = __builtin_shufflevector(r2, r3, 2, 10, 3, 11, 6, 14, 7, 15);
   const f8 t4 = __builtin_shufflevector(r4, r5, 0, 8, 1, 9, 4, 12, 5, 13);
   const f8 t5 = __builtin_shufflevector(r4, r5, 2, 10, 3, 11, 6, 14, 7, 15);
   const f8 t6 = __builtin_shufflevector(r6, r7, 0, 8, 1, 9, 4, 12, 5, 13);
   const f8 t7 = __builtin_shufflevector(r6, r7, 2, 10, 3, 11, 6, 14, 7, 15);
   const f8 u0 = __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
   const f8 u1 = __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
   const f8 u2 = __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
   const f8 u3 = __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
   const f8 u4 = __builtin_shufflevector(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);
   const f8 u5 = __builtin_shufflevector(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
   const f8 u6 = __builtin_shufflevector(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);
   const f8 u7 = __builtin_shufflevector(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
   rows::store(y, __builtin_shufflevector(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11));
   rows::store(y + ldy, __builtin_shufflevector(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11));
   rows::store(y + 2 * ldy, __builtin_shufflevector(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11));
   rows::store(y + 3 * ldy, __builtin_shufflevector(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11));
   rows::store(y + 4 * ldy, __builtin_shufflevector(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15));
   rows::store(y + 5 * ldy, __builtin_shufflevector(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15));
   rows::store(y + 6 * ldy, __builtin_shufflevector(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15));
   rows::store(y + 7 * ldy, __builtin_shufflevector(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15));
}
// 8 rows of C = 2, 3 or 4 columns (8 C contiguous floats, [N, P, 3] coordinates and the like) into
// C vectors of 8: y[c * ldy + i] = x[i * C + c], by C loads, two-source shuffles and C stores
template <int C> SOFIE_RT_VM_INLINE void deinterleave8(const float *x, float *y, std::int64_t ldy)
{
   using rows::f8;
   const f8 v0 = rows::load(x), v1 = rows::load(x + 8);
   if constexpr (C == 2) {
      rows::store(y, __builtin_shufflevector(v0, v1, 0, 2, 4, 6, 8, 10, 12, 14));
      rows::store(y + ldy, __builtin_shufflevector(v0, v1, 1, 3, 5, 7, 9, 11, 13, 15));
   } else if constexpr (C == 3) {
      const f8 v2 = rows::load(x + 16);
      const f8 t0 = __builtin_shufflevector(v0, v1, 0, 3, 6, 9, 12, 15, 0, 0);
      const f8 t1 = __builtin_shufflevector(v0, v1, 1, 4, 7, 10, 13, 0, 0, 0);
      const f8 t2 = __builtin_shufflevector(v0, v1, 2, 5, 8, 11, 14, 0, 0, 0);
      rows::store(y, __builtin_shufflevector(t0, v2, 0, 1, 2, 3, 4, 5, 10, 13));
      rows::store(y + ldy, __builtin_shufflevector(t1, v2, 0, 1, 2, 3, 4, 8, 11, 14));
      rows::store(y + 2 * ldy, __builtin_shufflevector(t2, v2, 0, 1, 2, 3, 4, 9, 12, 15));
   } else {
      static_assert(C == 4, "2, 3 or 4 columns");
      // rows 2k and 2k + 1 in v_k; shuffles within 128-bit lanes gather each column's rows in the
      // order 0 2 4 6 | 1 3 5 7, one permutation across lanes puts them in order
      const f8 v2 = rows::load(x + 16), v3 = rows::load(x + 24);
      const f8 t0 = __builtin_shufflevector(v0, v1, 0, 8, 1, 9, 4, 12, 5, 13);
      const f8 t1 = __builtin_shufflevector(v0, v1, 2, 10, 3, 11, 6, 14, 7, 15);
      const f8 t2 = __builtin_shufflevector(v2, v3, 0, 8, 1, 9, 4, 12, 5, 13);
      const f8 t3 = __builtin_shufflevector(v2, v3, 2, 10, 3, 11, 6, 14, 7, 15);
      const f8 c0 = __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
      const f8 c1 = __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
      const f8 c2 = __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
      const f8 c3 = __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
      rows::store(y, __builtin_shufflevector(c0, c0, 0, 4, 1, 5, 2, 6, 3, 7));
      rows::store(y + ldy, __builtin_shufflevector(c1, c1, 0, 4, 1, 5, 2, 6, 3, 7));
      rows::store(y + 2 * ldy, __builtin_shufflevector(c2, c2, 0, 4, 1, 5, 2, 6, 3, 7));
      rows::store(y + 3 * ldy, __builtin_shufflevector(c3, c3, 0, 4, 1, 5, 2, 6, 3, 7));
   }
}
#define SOFIE_RT_TRANSPOSE8 1
#endif

// The batched transpose. Floats with at least 8 rows and 8 columns go by 8 x 8 blocks in
// registers (benchmarks/transpose.py, batch 256: [N, 32, 100] 3.2x and [N, 64, 64] 2.6x faster
// than the scalar tiles, from 0.3-0.7x onnxruntime to above it); the loops over blocks are kept
// (SOFIE_RT_NO_UNROLL) for the JIT's sake as above. The columns right of the last whole block and
// the rows below it take the scalar tiles. Forced inline: the constant rows and cols of the
// generated call are what make the scalar tiles fast (the same code with run-time shapes,
// [N, 1600, 8]: 5x slower).
template <class T>
SOFIE_RT_VM_INLINE void transpose2d(const T *x, T *y, std::int64_t batch, std::int64_t rows, std::int64_t cols)
{
   for (std::int64_t n = 0; n < batch; ++n) {
      const T *xb = x + n * rows * cols;
      T *yb = y + n * rows * cols;
      std::int64_t r0 = 0;
#ifdef SOFIE_RT_TRANSPOSE8
      if constexpr (std::is_same<T, float>::value) {
         if (cols >= 2 && cols <= 4) {
            SOFIE_RT_NO_UNROLL
            for (; r0 + 8 <= rows; r0 += 8) {
               if (cols == 2)
                  deinterleave8<2>(xb + r0 * 2, yb + r0, rows);
               else if (cols == 3)
                  deinterleave8<3>(xb + r0 * 3, yb + r0, rows);
               else
                  deinterleave8<4>(xb + r0 * 4, yb + r0, rows);
            }
         }
         if (cols >= 8) {
            SOFIE_RT_NO_UNROLL
            for (; r0 + 8 <= rows; r0 += 8) {
               std::int64_t c0 = 0;
               SOFIE_RT_NO_UNROLL
               for (; c0 + 8 <= cols; c0 += 8)
                  transpose8x8(xb + r0 * cols + c0, cols, yb + c0 * rows + r0, rows);
               transpose_tile(xb, yb, rows, cols, r0, r0 + 8, c0, cols);
            }
         }
      }
#endif
      transpose_rows(xb, yb, rows, cols, r0);
   }
}

// Nearest-neighbour upsampling of a row by an integer factor (Resize/Upsample): out[j * s + r] =
// in[j] for j < n, r < s. Float rows of factor 2 or 4 duplicate the columns of 8 loaded values
// with shuffles and write whole vectors (the scalar loop, one 4-byte store per output value, ran
// at 0.65x onnxruntime on [N, 16, 8, 8] x2). Forced inline: called once per output row, and cling
// inlines only always_inline functions.
template <class T> SOFIE_RT_VM_INLINE void repeat_row(const T *in, std::int64_t n, std::int64_t s, T *out)
{
   for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t r = 0; r < s; ++r)
         out[j * s + r] = in[j];
}

#if defined(SOFIE_RT_ROWS_VEC) && (defined(__clang__) || __GNUC__ >= 12)
template <> SOFIE_RT_VM_INLINE void repeat_row<float>(const float *in, std::int64_t n, std::int64_t s, float *out)
{
   using rows::f8;
   std::int64_t j = 0;
   if (s == 2) {
      for (; j + 8 <= n; j += 8) {
         const f8 v = rows::load(in + j);
         rows::store(out + 2 * j, __builtin_shufflevector(v, v, 0, 0, 1, 1, 2, 2, 3, 3));
         rows::store(out + 2 * j + 8, __builtin_shufflevector(v, v, 4, 4, 5, 5, 6, 6, 7, 7));
      }
   } else if (s == 4) {
      for (; j + 8 <= n; j += 8) {
         const f8 v = rows::load(in + j);
         rows::store(out + 4 * j, __builtin_shufflevector(v, v, 0, 0, 0, 0, 1, 1, 1, 1));
         rows::store(out + 4 * j + 8, __builtin_shufflevector(v, v, 2, 2, 2, 2, 3, 3, 3, 3));
         rows::store(out + 4 * j + 16, __builtin_shufflevector(v, v, 4, 4, 4, 4, 5, 5, 5, 5));
         rows::store(out + 4 * j + 24, __builtin_shufflevector(v, v, 6, 6, 6, 6, 7, 7, 7, 7));
      }
   }
   for (; j < n; ++j)
      for (std::int64_t r = 0; r < s; ++r)
         out[j * s + r] = in[j];
}
#endif

#ifdef SOFIE_RT_ROWS_VEC
// gate_sigmoid on 8 lanes, step for step (the recurrent layers' gate loops: cling left the scalar
// loop of a GRU unvectorised, 2.2x slower than g++ on the same code).
SOFIE_RT_VM_INLINE rows::f8 gate_sigmoid8(rows::f8 x)
{
   const rows::f8 lo = rows::splat(-18.f), hi = rows::splat(18.f);
   const rows::f8 c = x < lo ? lo : (x > hi ? hi : x);
   const rows::f8 x2 = c * c;
   rows::f8 p = rows::splat(4.37031012579801e-11f);
   p = p * x2 + 1.15627324459942e-07f;
   p = p * x2 + 6.08574864600143e-05f;
   p = p * x2 + 8.51377133304701e-03f;
   p = p * x2 + 2.48287947061529e-01f;
   rows::f8 q = rows::splat(6.10247389755681e-13f);
   q = q * x2 + 5.76102136993427e-09f;
   q = q * x2 + 6.29106785017040e-06f;
   q = q * x2 + 1.70198817374094e-03f;
   q = q * x2 + 1.16817656904453e-01f;
   q = q * x2 + 9.93151921023180e-01f;
   const rows::f8 r = c * p / q + 0.5f;
   const rows::f8 zero = rows::splat(0.f), one = rows::splat(1.f);
   return r < zero ? zero : (r > one ? one : r);
}
#endif

// y[j] += x[j] for j < n (Col2Im and ConvTranspose sum overlapping blocks row by row). Written
// with 8-float vectors: cling left the plain loop over rows of 8 scalar (2.7x slower than g++).
template <class T> SOFIE_RT_VM_INLINE void add_row(T *__restrict y, const T *__restrict x, std::int64_t n)
{
   for (std::int64_t j = 0; j < n; ++j)
      y[j] += x[j];
}

#ifdef SOFIE_RT_ROWS_VEC
template <> SOFIE_RT_VM_INLINE void add_row<float>(float *__restrict y, const float *__restrict x, std::int64_t n)
{
   std::int64_t j = 0;
   for (; j + 8 <= n; j += 8)
      rows::store(y + j, rows::load(y + j) + rows::load(x + j));
   for (; j < n; ++j)
      y[j] += x[j];
}
#endif

// y[2j] += a[j], y[2j + 1] += b[j] for j < n: the two kernel columns of a stride-2 ConvTranspose
// (2-wide kernel) summed into one output row with vector stores, the interleave a shuffle.
template <class T>
SOFIE_RT_VM_INLINE void add_row_interleave2(T *__restrict y, const T *__restrict a, const T *__restrict b, std::int64_t n)
{
   for (std::int64_t j = 0; j < n; ++j) {
      y[2 * j] += a[j];
      y[2 * j + 1] += b[j];
   }
}

#if defined(SOFIE_RT_ROWS_VEC) && (defined(__clang__) || __GNUC__ >= 12)
template <>
SOFIE_RT_VM_INLINE void add_row_interleave2<float>(float *__restrict y, const float *__restrict a,
                                                   const float *__restrict b, std::int64_t n)
{
   std::int64_t j = 0;
   for (; j + 8 <= n; j += 8) {
      const rows::f8 va = rows::load(a + j), vb = rows::load(b + j);
      rows::store(y + 2 * j, rows::load(y + 2 * j) + __builtin_shufflevector(va, vb, 0, 8, 1, 9, 2, 10, 3, 11));
      rows::store(y + 2 * j + 8,
                  rows::load(y + 2 * j + 8) + __builtin_shufflevector(va, vb, 4, 12, 5, 13, 6, 14, 7, 15));
   }
   for (; j < n; ++j) {
      y[2 * j] += a[j];
      y[2 * j + 1] += b[j];
   }
}
#endif

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

// Sorts n 64-bit keys (order key above, index below: (topk_key(x) << 32) | i) by their upper 32
// bits, stably: least-significant-digit radix sort, four passes of 8 bits, a pass skipped when
// one bucket holds every key (few distinct values). Keys made in index order come out in
// (value, index) order, with no comparator re-reading the values (Unique's sort). tmp: n keys.
inline void radix_sort_high32(std::uint64_t *key, std::uint64_t *tmp, std::int64_t n)
{
   std::uint64_t *src = key, *dst = tmp;
   for (int shift = 32; shift < 64; shift += 8) {
      std::int64_t count[257] = {0};
      for (std::int64_t i = 0; i < n; ++i)
         ++count[((src[i] >> shift) & 0xFF) + 1];
      bool one = false;
      for (int b = 1; b <= 256; ++b)
         one = one || count[b] == n;
      if (one)
         continue;
      for (int b = 1; b <= 256; ++b)
         count[b] += count[b - 1];
      for (std::int64_t i = 0; i < n; ++i)
         dst[count[(src[i] >> shift) & 0xFF]++] = src[i];
      std::swap(src, dst);
   }
   if (src != key)
      std::memcpy(key, src, std::size_t(n) * sizeof(std::uint64_t));
}

// The k (<= kTopkSmall) smallest of n order keys `kk`, as (key, index) pairs sorted ascending
// in `best`: one pass keeping the best k so far in a sorted buffer. An element enters only if
// its key is below the worst kept one (an equal key has a higher index, so it loses the tie).
// For random data about k ln(n/k) elements enter and the test is mostly predicted; at worst (a
// sorted row) each element costs k moves, O(n k), which for k <= 32 stays near what
// nth_element costs. (Testing blocks of 8 keys at once first was 2x slower under cling.)
constexpr std::int64_t kTopkSmall = 32;
template <class B, class K>
inline void topk_select_small(const B *kk, std::int64_t n, std::int64_t k, K *best)
{
   constexpr int shift = int(sizeof(B)) * 8;
   for (std::int64_t j = 0; j < k; ++j) {
      const K c = (K(kk[j]) << shift) | K(j);
      std::int64_t p = j;
      for (; p > 0 && best[p - 1] > c; --p)
         best[p] = best[p - 1];
      best[p] = c;
   }
   B worst = B(best[k - 1] >> shift);
   for (std::int64_t j = k; j < n; ++j) {
      if (kk[j] < worst) {
         const K c = (K(kk[j]) << shift) | K(j);
         std::int64_t p = k - 1;
         for (; p > 0 && best[p - 1] > c; --p)
            best[p] = best[p - 1];
         best[p] = c;
         worst = B(best[k - 1] >> shift);
      }
   }
}

#ifdef SOFIE_RT_ROWS_VEC
// The k (2..kTopkSmall) best of 8 contiguous rows of n (<= kTopkRows8MaxN) 32-bit order keys at
// once, one row per vector lane, without a branch that depends on the data. The one-pass
// selection above mispredicts about once per kept element (on rows of 100 with k = 17, a kNN's
// TopK, most of its time). Here each element is inserted into 8 sorted lists in lanes: for every
// kept position p, from the last to the first, the list moves up where its entry is greater than
// the new key and the key lands where the one before is not greater; an equal key stays behind
// (a later index), so ties keep the lower index. Keys are offset by 2^31 for signed compares.
constexpr std::int64_t kTopkRows8MaxN = 256;
template <class T, class B>
inline void topk_rows8(const T *x, std::int64_t n, std::int64_t k, B flip, T *values, std::int64_t *indices)
{
   using rows::i8;
   alignas(32) std::int32_t kt[kTopkRows8MaxN * 8];
   for (std::int64_t j = 0; j < n; ++j)
      for (int r = 0; r < 8; ++r)
         kt[j * 8 + r] = std::int32_t(std::uint32_t(topk_key(x[r * n + j]) ^ flip) ^ 0x80000000u);
   const i8 all = {-1, -1, -1, -1, -1, -1, -1, -1}, none = {0, 0, 0, 0, 0, 0, 0, 0};
   i8 bk[kTopkSmall], bi[kTopkSmall];
   for (std::int64_t p = 0; p < k; ++p)
      bk[p] = bi[p] = none;
   for (std::int64_t j = 0; j < n; ++j) {
      i8 c;
      std::memcpy(&c, kt + j * 8, sizeof c);
      const std::int32_t j32 = std::int32_t(j);
      const i8 cj = {j32, j32, j32, j32, j32, j32, j32, j32};
      const std::int64_t last = j < k - 1 ? j : k - 1;
      // slot j is still empty while j < k: every key enters it
      i8 gt = last == j ? all : i8(bk[last] > c);
      for (std::int64_t p = last; p > 0; --p) {
         const i8 gt_before = bk[p - 1] > c;
         bk[p] = gt_before ? bk[p - 1] : (gt ? c : bk[p]);
         bi[p] = gt_before ? bi[p - 1] : (gt ? cj : bi[p]);
         gt = gt_before;
      }
      bk[0] = gt ? c : bk[0];
      bi[0] = gt ? cj : bi[0];
   }
   for (int r = 0; r < 8; ++r)
      for (std::int64_t p = 0; p < k; ++p) {
         const std::int64_t at = bi[p][r];
         if (values)
            values[r * k + p] = x[r * n + at];
         if (indices)
            indices[r * k + p] = at;
      }
}
#endif

// ONNX TopK over outer x inner rows of n elements (stride inner): the k largest (or smallest)
// values, sorted, ties to the lower index. Each element becomes one integer key, (order bits,
// flipped for `largest`) above (index), so one ascending order on plain integers gives the
// ONNX order including the tie-break. A small k (2..kTopkSmall) is selected in one pass over
// the order keys (topk_select_small); otherwise the k first keys are found by nth_element and
// sorted. This avoids an index array sorted through a branchy comparator that re-reads the
// values. `work` holds n keys: 8 bytes each for types up to 32 bits, 16 bytes for 64-bit types.
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
   const bool small = k > 1 && k <= kTopkSmall && k < n;
   std::int64_t o0 = 0;
#ifdef SOFIE_RT_ROWS_VEC
   if constexpr (sizeof(B) == 4) {
      if (small && inner == 1 && n <= kTopkRows8MaxN)
         for (; o0 + 8 <= outer; o0 += 8)
            topk_rows8(x + o0 * n, n, k, flip, values ? values + o0 * k : nullptr,
                       indices ? indices + o0 * k : nullptr);
   }
#endif
   for (std::int64_t o = o0; o < outer; ++o) {
      for (std::int64_t i = 0; i < inner; ++i) {
         const T *xb = x + o * n * inner + i;
         if (small) {
            // the order keys alone (half the size) in `work`; the kept k on the stack, then
            // copied over them for the output loop below
            B *kk = reinterpret_cast<B *>(key);
            if (inner == 1) {
               for (std::int64_t j = 0; j < n; ++j)
                  kk[j] = B(topk_key(xb[j]) ^ flip);
            } else {
               for (std::int64_t j = 0; j < n; ++j)
                  kk[j] = B(topk_key(xb[j * inner]) ^ flip);
            }
            K best[kTopkSmall];
            topk_select_small(kk, n, k, best);
            std::copy(best, best + k, key);
         } else {
            for (std::int64_t j = 0; j < n; ++j)
               key[j] = (K(B(topk_key(xb[j * inner]) ^ flip)) << shift) | K(j);
         }
         if (small) {
            // selected and sorted above
         } else if (k == 1) {
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
