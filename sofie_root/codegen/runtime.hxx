// sofie_root runtime: the small set of helpers every generated model uses.
// Declared once per process (and copied into standalone headers by `sofie-root emit`).
// Self-contained on purpose: only the C++ standard library.
#ifndef SOFIE_ROOT_RUNTIME_HXX
#define SOFIE_ROOT_RUNTIME_HXX

#include <algorithm>
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
   // Grow to at least n bytes; returns true if the storage moved (contents are not kept).
   bool reserve(std::size_t n)
   {
      if (n <= fSize && fData)
         return false;
      release();
      std::size_t rounded = (n + kAlign - 1) / kAlign * kAlign;
      if (rounded == 0)
         rounded = kAlign;
      fData = static_cast<char *>(::operator new(rounded, std::align_val_t(kAlign)));
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

// ---- scalar functions used by element-wise operators -------------------------------------
template <class T> inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
template <class T> inline T relu(T x) { return x > T(0) ? x : T(0); }
template <class T> inline T softplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }

// Round half to even, as ONNX Round does.
template <class T> inline T round_even(T x) { return std::nearbyint(x); }

// Python-style (floored) modulo for Mod with fmod=0.
template <class T> inline T mod_floor(T a, T b)
{
   if constexpr (std::is_floating_point<T>::value) {
      T r = std::fmod(a, b);
      if (r != T(0) && ((r < T(0)) != (b < T(0))))
         r += b;
      return r;
   } else {
      if (b == T(0))
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
      return b == T(0) ? T(0) : T(a % b);
}

template <class T> inline T int_div(T a, T b)
{
   if constexpr (std::is_floating_point<T>::value)
      return a / b;
   else
      return b == T(0) ? T(0) : T(a / b);
}

template <class T> inline T int_pow(T base, T exp)
{
   if constexpr (std::is_floating_point<T>::value) {
      return std::pow(base, exp);
   } else {
      return static_cast<T>(std::pow(static_cast<double>(base), static_cast<double>(exp)));
   }
}

template <class T> inline T nan_max(T a, T b) { return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : (a > b ? a : b); }
template <class T> inline T nan_min(T a, T b) { return (a != a || b != b) ? std::numeric_limits<T>::quiet_NaN() : (a < b ? a : b); }

// Float to integer conversion without undefined behaviour: NaN gives 0, out of range saturates.
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

// ---- matrix multiplication ---------------------------------------------------------------
// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major with leading dimensions.
// The inner loop runs over contiguous columns of B and C (axpy form), which vectorises.
template <class T>
inline void gemm(bool transA, bool transB, std::int64_t M, std::int64_t N, std::int64_t K, T alpha,
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

inline std::string shape_error(const char *where, const char *what)
{
   return std::string(where) + ": " + what;
}

} // namespace sofie_rt

#endif
