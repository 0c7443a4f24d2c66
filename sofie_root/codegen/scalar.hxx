// sofie_root scalar helpers: the small functions of the ONNX semantics that generated code calls
// per element (floored modulo, integer division by zero, NaN-propagating max/min, float to
// integer conversions, half-precision rounding, BitShift), shared by the CPU runtime (runtime.hxx,
// which includes this file) and the GPU runtime (gpu/gpu_runtime.cuh, which defines SOFIE_RT_HD
// as __host__ __device__ first). Host/device neutral: only what both nvcc/hipcc device code and
// plain C++ accept (no exceptions, no allocation; std::numeric_limits through
// --expt-relaxed-constexpr on nvcc, std::memcpy as the device builtin).
#ifndef SOFIE_ROOT_SCALAR_HXX
#define SOFIE_ROOT_SCALAR_HXX

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#ifndef SOFIE_RT_HD
#define SOFIE_RT_HD
#endif

namespace sofie_rt {

// ---- Mod: float32 fmod without the library call
// glibc's fmodf reduces the exponent difference bit by bit: tens of ns per element when |a/b| is
// large (a weight near 0). In double, q = trunc(|a| / |b|) is exact or off by one while
// q < 2^29, q * |b| is then exact (24 + 29 bits) and |a| - q * |b| exactly the remainder (or
// one |b| away, corrected below), so the result equals std::fmod bit for bit (sign of a, -0
// kept). Larger quotients, b = 0, a = inf and NaN take std::fmod.
SOFIE_RT_HD inline float fmod_f32(float a, float b)
{
   const double A = std::fabs(double(a)), B = std::fabs(double(b));
   const double q = std::trunc(A / B);
   if (!(q < 536870912.0))
      return std::fmod(a, b);
   double r = q == 0.0 ? A : A - q * B;  // q = 0 for b = +-inf, where 0 * inf would be NaN
   r = r < 0.0 ? r + B : r;  // safeguards: float operands keep q exact in practice
   r = r >= B ? r - B : r;
   return std::copysign(float(r), a);
}
template <class T> SOFIE_RT_HD inline T fmod_any(T a, T b)
{
   if constexpr (std::is_same<T, float>::value)
      return fmod_f32(a, b);
   else
      return std::fmod(a, b);
}

// min / -1 and min % -1 overflow (undefined in C++, SIGFPE on x86): the wrapped results
template <class T> SOFIE_RT_HD inline bool int_min_by_minus_one(T a, T b)
{
   if constexpr (std::is_signed<T>::value)
      return b == T(-1) && a == std::numeric_limits<T>::min();
   else
      return false;
}

// Python-style (floored) modulo for Mod with fmod=0.
template <class T> SOFIE_RT_HD inline T mod_floor(T a, T b)
{
   if constexpr (std::is_floating_point<T>::value) {
      T r = fmod_any(a, b);
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

template <class T> SOFIE_RT_HD inline T mod_trunc(T a, T b)
{
   if constexpr (std::is_floating_point<T>::value)
      return fmod_any(a, b);
   else
      return (b == T(0) || int_min_by_minus_one(a, b)) ? T(0) : T(a % b);
}

template <class T> SOFIE_RT_HD inline T int_div(T a, T b)
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
template <class T> SOFIE_RT_HD inline T wrap_add(T a, T b)
{
   using U = wrap_unsigned_t<T>;
   return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
}
template <class T> SOFIE_RT_HD inline T wrap_sub(T a, T b)
{
   using U = wrap_unsigned_t<T>;
   return static_cast<T>(static_cast<U>(static_cast<U>(a) - static_cast<U>(b)));
}
template <class T> SOFIE_RT_HD inline T wrap_mul(T a, T b)
{
   using U = wrap_unsigned_t<T>;
   return static_cast<T>(static_cast<U>(static_cast<U>(a) * static_cast<U>(b)));
}
template <class T> SOFIE_RT_HD inline T wrap_neg(T a) { return wrap_sub(T(0), a); }

template <class T> SOFIE_RT_HD inline T int_pow(T base, T exp)
{
   if constexpr (std::is_floating_point<T>::value) {
      return std::pow(base, exp);
   } else {
      return static_cast<T>(std::pow(static_cast<double>(base), static_cast<double>(exp)));
   }
}

// x clamped to [lo, hi]; NaN stays NaN (std::min/std::max would return a bound for it).
template <class T> SOFIE_RT_HD inline T clamp_nan(T x, T lo, T hi) { return x < lo ? lo : (x > hi ? hi : x); }

template <class T> SOFIE_RT_HD inline T nan_max(T a, T b) { return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : (a > b ? a : b); }
template <class T> SOFIE_RT_HD inline T nan_min(T a, T b) { return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : (a < b ? a : b); }

// Float to integer conversion without undefined behaviour for indices and sizes computed in
// floating point (Resize, GridSample, RoiAlign, float indices): NaN gives 0, out of range saturates.
template <class I, class F> SOFIE_RT_HD inline I float_to_int(F x)
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
template <class I, class F> SOFIE_RT_HD inline I cast_float_to_int(F x)
{
   static_assert(std::is_integral<I>::value && std::is_floating_point<F>::value, "cast_float_to_int<int type>(float)");
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
SOFIE_RT_HD inline float round_float16(float x)
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

SOFIE_RT_HD inline float round_bfloat16(float x)
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
template <class T> SOFIE_RT_HD inline T shift_left(T a, T b)
{
   using U = typename std::make_unsigned<T>::type;
   if ((std::is_signed<T>::value && b < T(0)) || b >= T(8 * sizeof(T)))
      return T(0);
   return static_cast<T>(static_cast<U>(static_cast<U>(a) << static_cast<int>(b)));
}
template <class T> SOFIE_RT_HD inline T shift_right(T a, T b)
{
   if ((std::is_signed<T>::value && b < T(0)) || b >= T(8 * sizeof(T)))
      return (std::is_signed<T>::value && a < T(0)) ? T(-1) : T(0);
   return static_cast<T>(a >> static_cast<int>(b));
}

} // namespace sofie_rt

#endif // SOFIE_ROOT_SCALAR_HXX
