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
// exp for float without a library call: 2^n * e^r with |r| <= ln2/2 and a Cephes polynomial
// (about 1 ulp, as accurate as std::exp). exp_core has no branch, so loops calling it vectorise
// (sigmoid/tanh gates, softmax); it needs x in [-87.3, 88.7], which the callers ensure.
inline float exp_core(float x)
{
   const float fn = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
   const float r = (x - fn * 0.693359375f) + fn * 2.12194440e-4f;
   float p = 1.9875691500E-4f;
   p = p * r + 1.3981999507E-3f;
   p = p * r + 8.3334519073E-3f;
   p = p * r + 4.1665795894E-2f;
   p = p * r + 1.6666665459E-1f;
   p = p * r + 5.0000001201E-1f;
   p = p * r * r + r + 1.0f;
   const std::int32_t bits = (static_cast<std::int32_t>(fn) + 127) << 23;
   float scale;
   std::memcpy(&scale, &bits, 4);
   return p * scale;
}
// Out of exp_core's range it defers to std::exp (overflow to inf, subnormal results).
inline float fast_exp(float x) { return (x > -87.3f && x < 88.7f) ? exp_core(x) : std::exp(x); }
inline double fast_exp(double x) { return std::exp(x); }
// exp of a value <= 0 next to a 1 (softmax after subtracting the maximum): below e^-87.3 the
// terms vanish against the maximum's 1, so clamping there changes nothing.
inline float exp_nonpos(float x) { return exp_core(x < -87.3f ? -87.3f : x); }
inline double exp_nonpos(double x) { return std::exp(x); }

inline float sigmoid(float x)
{
   const float z = x < -87.f ? -87.f : (x > 87.f ? 87.f : x); // saturated well before the clamp
   return 1.0f / (1.0f + exp_core(-z));
}
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// tanh through exp_core; an odd Taylor polynomial near zero keeps the relative accuracy there.
inline float fast_tanh(float x)
{
   const float a = std::fabs(x);
   const float b = a < 9.0f ? a : 9.0f; // tanh(9) == 1 in float
   const float t = 1.0f - 2.0f / (exp_core(2.0f * b) + 1.0f);
   const float x2 = x * x;
   const float p = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f)));
   return a < 0.0625f ? p : (x < 0 ? -t : t);
}
inline double fast_tanh(double x) { return std::tanh(x); }
// Gate activations of the recurrent cells: the rational minimax approximations ONNX Runtime's
// MLAS and Eigen use (absolute error <= 3.3e-7, no exp, one division, vectorise). Measured in
// the LSTM gate loop (H=32) under cling: 0.57x the exp_core versions at batch 256, 0.79x at 1.
// Absolute, not relative, accuracy: sigmoid(-17) comes out near 0, not near 4e-8.
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
// Exact (erf-based) GELU without a library call, so loops over it vectorise (std::erf does not).
// erfc(z) = t * exp(-z^2 + P(t)), t = 1 / (1 + z/2), is the Chebyshev fit with a relative error
// below 1.2e-7 for every z >= 0 (Press et al., Numerical Recipes, erfcc); writing GELU through
// erfc keeps the relative accuracy for negative x, where 1 + erf(x/sqrt2) cancels.
inline float gelu(float x)
{
   const float a = std::fabs(x) * 0.70710678118654752f;
   const float z = a < 9.0f ? a : 9.0f; // erfc(9) ~ 4e-37: the clamp changes nothing visible
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
   const float erfc = t * exp_core(p - z * z);
   return 0.5f * x * (x >= 0.0f ? 2.0f - erfc : erfc);
}
inline double gelu(double x) { return 0.5 * x * std::erfc(-x * 0.70710678118654752); }
template <class T> inline T softplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }

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
            T smax = ninf;
            for (std::int64_t j = 0; j < a.St; ++j) {
               T s = T(0);
               const T *k = K + j * a.D;
               for (std::int64_t d = 0; d < a.D; ++d)
                  s += (q[d] * a.scale_sqrt) * (k[d] * a.scale_sqrt);
               if (a.softcap > T(0))
                  s = a.softcap * std::tanh(s / a.softcap);
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
               a.scores[j] = s;
               if (s > smax)
                  smax = s;
            }
            T *y = a.Y + b * a.yb + h * a.yh + i * a.yi;
            for (std::int64_t d = 0; d < a.Dv; ++d)
               y[d] = T(0);
            if (!any_allowed || smax == ninf) {
               if (qk && a.qk_mode == 3)
                  for (std::int64_t j = 0; j < a.St; ++j)
                     qk[j] = T(0);
               continue;
            }
            T sum = T(0);
            for (std::int64_t j = 0; j < a.St; ++j) {
               a.scores[j] = std::exp(a.scores[j] - smax);
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
