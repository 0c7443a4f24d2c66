// sofie_root GPU runtime: the portability layer under every generated GPU model.
//
// Generated kernels are written in the subset of C++ that CUDA and HIP share (__global__,
// threadIdx/blockIdx/blockDim/gridDim, standard math). Everything else -- memory, copies, streams,
// kernel launches, GEMMs -- goes through this header, which maps it to one of three targets:
//
//   SOFIE_GPU_CUDA      CUDA runtime + cuBLAS (nvcc)
//   SOFIE_GPU_HIP       HIP runtime + hipBLAS when its header is there, else a plain GEMM kernel (hipcc)
//   SOFIE_GPU_EMULATED  the host: "device" memory is host memory, a launch runs the same kernel body
//                       for every block and thread in turn, GEMMs go to OpenBLAS (SOFIE_RT_CBLAS) or
//                       to the plain GEMM kernel. The test suite runs this on machines without a GPU.
//
// The emulation runs one thread after another, so kernels must not rely on threads of a block
// running together. Most generated kernels are independent per work item (grid-stride loops).
// Block-cooperative kernels (one block per row: Softmax, LayerNorm) are written as phases between
// barriers: SOFIE_FOR_THREADS(t) { ... } is one phase (on the GPU: the calling thread, t =
// threadIdx.x; emulated: every thread of the block in turn), SOFIE_BARRIER() separates phases
// (__syncthreads() on the GPU, nothing emulated: the phases already run in order), values a thread
// keeps from one phase to the next live in __shared__ arrays indexed by t, and what is written
// outside a phase must be the same for every thread of the block.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#if defined(SOFIE_GPU_CUDA)
#include <cublas_v2.h>
#include <cuda_runtime.h>
#define SOFIE_GPU_VENDOR_BLAS 1
#define SOFIE_HD __host__ __device__
#elif defined(SOFIE_GPU_HIP)
#include <hip/hip_runtime.h>
#if __has_include(<hipblas/hipblas.h>) && !defined(SOFIE_GPU_NO_VENDOR_BLAS)
#include <hipblas/hipblas.h>
#define SOFIE_GPU_VENDOR_BLAS 1
#endif
#define SOFIE_HD __host__ __device__
#elif defined(SOFIE_GPU_EMULATED)
#include <atomic>
#define __global__
#define __device__
#define __host__
#define __shared__
#define SOFIE_HD
struct sofie_dim3 {
   unsigned x, y, z;
};
// The built-in variables of a kernel, set by the emulated launch before each (block, thread) runs.
inline thread_local sofie_dim3 threadIdx{0, 0, 0}, blockIdx{0, 0, 0}, blockDim{1, 1, 1}, gridDim{1, 1, 1};
#else
#error "define one of SOFIE_GPU_CUDA, SOFIE_GPU_HIP, SOFIE_GPU_EMULATED"
#endif

#if defined(SOFIE_GPU_EMULATED) && defined(SOFIE_RT_CBLAS)
extern "C" {
void scipy_cblas_sgemm(int order, int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc);
void scipy_cblas_dgemm(int order, int transA, int transB, int M, int N, int K, double alpha, const double *A,
                       int lda, const double *B, int ldb, double beta, double *C, int ldc);
}
#endif

// Device versions of the scalar helpers the element-wise operators' expressions call
// (sofie_root/ops/elementwise.py writes them as sofie_rt::...; the CPU versions are in runtime.hxx).
namespace sofie_rt {
SOFIE_HD inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
SOFIE_HD inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
SOFIE_HD inline float gate_sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
SOFIE_HD inline double gate_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
SOFIE_HD inline float fast_tanh(float x) { return std::tanh(x); }
SOFIE_HD inline float gate_tanh(float x) { return std::tanh(x); }
SOFIE_HD inline double gate_tanh(double x) { return std::tanh(x); }
SOFIE_HD inline double fast_tanh(double x) { return std::tanh(x); }
// erfc form: keeps the relative accuracy for negative x, where 1 + erf(x / sqrt 2) cancels
SOFIE_HD inline float gelu(float x) { return 0.5f * x * std::erfc(-x * 0.70710678118654752f); }
SOFIE_HD inline double gelu(double x) { return 0.5 * x * std::erfc(-x * 0.70710678118654752); }
template <class T> SOFIE_HD inline T softplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }
// min / -1 and min % -1 overflow (undefined in C++): the wrapped results
template <class T> SOFIE_HD inline bool int_min_by_minus_one(T a, T b)
{
   if constexpr (std::is_signed<T>::value)
      return b == T(-1) && a == std::numeric_limits<T>::min();
   else
      return false;
}
template <class T> SOFIE_HD inline T mod_floor(T a, T b)
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
template <class T> SOFIE_HD inline T mod_trunc(T a, T b)
{
   if constexpr (std::is_floating_point<T>::value)
      return std::fmod(a, b);
   else
      return (b == T(0) || int_min_by_minus_one(a, b)) ? T(0) : T(a % b);
}
template <class T> SOFIE_HD inline T int_div(T a, T b)
{
   if constexpr (std::is_floating_point<T>::value)
      return a / b;
   else if (int_min_by_minus_one(a, b))
      return a;
   else
      return b == T(0) ? T(0) : T(a / b);
}
// integer Add, Sub, Mul, Neg wrap around (as runtime.hxx's wrap_*: no signed overflow)
template <class T>
using wrap_unsigned_t = typename std::conditional<(sizeof(T) < sizeof(unsigned)), unsigned,
                                                  typename std::make_unsigned<T>::type>::type;
template <class T> SOFIE_HD inline T wrap_add(T a, T b)
{
   using U = wrap_unsigned_t<T>;
   return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
}
template <class T> SOFIE_HD inline T wrap_sub(T a, T b)
{
   using U = wrap_unsigned_t<T>;
   return static_cast<T>(static_cast<U>(static_cast<U>(a) - static_cast<U>(b)));
}
template <class T> SOFIE_HD inline T wrap_mul(T a, T b)
{
   using U = wrap_unsigned_t<T>;
   return static_cast<T>(static_cast<U>(static_cast<U>(a) * static_cast<U>(b)));
}
template <class T> SOFIE_HD inline T wrap_neg(T a) { return wrap_sub(T(0), a); }
template <class T> SOFIE_HD inline T int_pow(T base, T e)
{
   if constexpr (std::is_floating_point<T>::value)
      return std::pow(base, e);
   else
      return static_cast<T>(std::pow(static_cast<double>(base), static_cast<double>(e)));
}
template <class T> SOFIE_HD inline T quiet_nan() { return T(NAN); }
template <class T> SOFIE_HD inline T nan_max(T a, T b) { return (a != a || b != b) ? T(NAN) : (a > b ? a : b); }
template <class T> SOFIE_HD inline T nan_min(T a, T b) { return (a != a || b != b) ? T(NAN) : (a < b ? a : b); }
template <class I, class F> SOFIE_HD inline I float_to_int(F x)
{
   if (x != x)
      return I(0);
   if (x <= static_cast<F>(std::numeric_limits<I>::min()))
      return std::numeric_limits<I>::min();
   if (x >= static_cast<F>(std::numeric_limits<I>::max()))
      return std::numeric_limits<I>::max();
   return static_cast<I>(x);
}
// ONNX BitShift: shifts by a negative amount or by the type's width or more (undefined in C++)
template <class T> SOFIE_HD inline T shift_left(T a, T b)
{
   using U = typename std::make_unsigned<T>::type;
   if ((std::is_signed<T>::value && b < T(0)) || b >= T(8 * sizeof(T)))
      return T(0);
   return static_cast<T>(static_cast<U>(static_cast<U>(a) << static_cast<int>(b)));
}
template <class T> SOFIE_HD inline T shift_right(T a, T b)
{
   if ((std::is_signed<T>::value && b < T(0)) || b >= T(8 * sizeof(T)))
      return (std::is_signed<T>::value && a < T(0)) ? T(-1) : T(0);
   return static_cast<T>(a >> static_cast<int>(b));
}
// x clamped to [lo, hi]; NaN stays NaN (as runtime.hxx's clamp_nan: HardSigmoid, HardSwish)
template <class T> SOFIE_HD inline T clamp_nan(T x, T lo, T hi) { return x < lo ? lo : (x > hi ? hi : x); }
// The float to integer Cast of runtime.hxx (cast_float_to_int, see its comment there): no undefined
// behaviour, numpy's / ONNX Runtime's x86-64 results on every target -- in-range values truncate,
// int32/int64 get their minimum for NaN, +-inf and out-of-range values, 8- and 16-bit types keep the
// low bits of the int32 result, uint32/uint64 wrap negative values of the signed range and give 0
// above their range and 2^(n-1) for NaN, -inf and below the signed range.
template <class I, class F> SOFIE_HD inline I cast_float_to_int(F x)
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

// The math layer's names (runtime.hxx's sofie_rt::vm, which the CPU operators' expressions call
// and the GPU emitters reuse). runtime.hxx's definitions are host-only polynomials written for the
// CPU's vectorisers; here each function maps to the standard math function of the target (CUDA's
// and HIP's device math library on the device, the C library in the emulation and host code),
// with the same formulas where the CPU layer composes them (sigmoid, softplus, gelu's erfc form,
// pow_half's special cases). Both follow C99/IEEE for NaN, +-0 and +-inf, so NaN stays NaN.
namespace vm {
SOFIE_HD inline float exp(float x) { return std::exp(x); }
SOFIE_HD inline double exp(double x) { return std::exp(x); }
SOFIE_HD inline float expm1(float x) { return std::expm1(x); }
SOFIE_HD inline double expm1(double x) { return std::expm1(x); }
SOFIE_HD inline float log(float x) { return std::log(x); }
SOFIE_HD inline double log(double x) { return std::log(x); }
SOFIE_HD inline float log1p(float x) { return std::log1p(x); }
SOFIE_HD inline double log1p(double x) { return std::log1p(x); }
SOFIE_HD inline float tanh(float x) { return std::tanh(x); }
SOFIE_HD inline double tanh(double x) { return std::tanh(x); }
SOFIE_HD inline float erf(float x) { return std::erf(x); }
SOFIE_HD inline double erf(double x) { return std::erf(x); }
SOFIE_HD inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
SOFIE_HD inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
// ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|): no overflow for large x, NaN through the log term
SOFIE_HD inline float softplus(float x) { return (x > 0.0f ? x : 0.0f) + std::log1p(std::exp(-std::fabs(x))); }
SOFIE_HD inline double softplus(double x) { return (x > 0.0 ? x : 0.0) + std::log1p(std::exp(-std::fabs(x))); }
// 0.5 x erfc(-x / sqrt 2): keeps the relative accuracy for negative x; gelu(-inf) = NaN as ONNX's
SOFIE_HD inline float gelu(float x) { return 0.5f * x * std::erfc(-x * 0.70710678118654752f); }
SOFIE_HD inline double gelu(double x) { return 0.5 * x * std::erfc(-x * 0.70710678118654752); }
SOFIE_HD inline float pow(float x, float y) { return std::pow(x, y); }
SOFIE_HD inline double pow(double x, double y) { return std::pow(x, y); }
// x^0.5 as pow gives it: pow(-0, 0.5) = +0 (sqrt(-0) = -0), pow(-inf, 0.5) = +inf (sqrt(-inf) = NaN)
SOFIE_HD inline float pow_half(float x) { return x == -INFINITY ? -x : std::fabs(std::sqrt(x)); }
SOFIE_HD inline double pow_half(double x) { return x == -double(INFINITY) ? -x : std::fabs(std::sqrt(x)); }
} // namespace vm
// float32 rounded to the nearest float16 / bfloat16 value, ties to even (sofie::RoundFloat: the
// half-precision models are computed in float32 and round at their casts; as runtime.hxx's)
SOFIE_HD inline float round_float16(float x)
{
   if (!(x == x))
      return x;
   const float a = std::fabs(x);
   if (a >= 65520.f) // halfway between the largest float16 (65504) and the next power of two
      return std::copysign(INFINITY, x);
   if (a < 6.103515625e-05f) { // subnormal float16: multiples of 2^-24
      const float q = 5.9604644775390625e-08f;
      return std::copysign(std::nearbyint(a / q) * q, x);
   }
   std::uint32_t u;
   memcpy(&u, &a, 4);
   u += 0xFFFu + ((u >> 13) & 1u); // keep 10 mantissa bits, ties to even
   u &= ~0x1FFFu;
   float r;
   memcpy(&r, &u, 4);
   return std::copysign(r, x);
}
SOFIE_HD inline float round_bfloat16(float x)
{
   if (!(x == x))
      return x;
   std::uint32_t u;
   memcpy(&u, &x, 4);
   u += 0x7FFFu + ((u >> 16) & 1u);
   u &= 0xFFFF0000u;
   float r;
   memcpy(&r, &u, 4);
   return r;
}
} // namespace sofie_rt

// ---- atomics of the scatter reductions (several updates may land on one element) -------------
#if defined(SOFIE_GPU_EMULATED)
template <class T> inline void sofie_gpu_atomic_add(T *p, T v) { *p = T(*p + v); }
template <class T> inline void sofie_gpu_atomic_mul(T *p, T v) { *p = T(*p * v); }
template <class T> inline void sofie_gpu_atomic_max(T *p, T v) { *p = v > *p ? v : *p; }
template <class T> inline void sofie_gpu_atomic_min(T *p, T v) { *p = v < *p ? v : *p; }
#else
// compare-and-swap loop on the bits of a 4- or 8-byte value
template <class T, class Op> __device__ inline void sofie_gpu_atomic_cas(T *p, T v, Op op)
{
   static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomics of 4- or 8-byte types");
   using U = typename std::conditional<sizeof(T) == 4, unsigned int, unsigned long long>::type;
   U *q = reinterpret_cast<U *>(p);
   U old = *q, assumed;
   do {
      assumed = old;
      T cur;
      memcpy(&cur, &assumed, sizeof(T));
      const T next = op(cur, v);
      U bits;
      memcpy(&bits, &next, sizeof(T));
      old = atomicCAS(q, assumed, bits);
   } while (assumed != old);
}
struct sofie_gpu_op_add { template <class T> __device__ T operator()(T a, T b) const { return T(a + b); } };
struct sofie_gpu_op_mul { template <class T> __device__ T operator()(T a, T b) const { return T(a * b); } };
struct sofie_gpu_op_max { template <class T> __device__ T operator()(T a, T b) const { return b > a ? b : a; } };
struct sofie_gpu_op_min { template <class T> __device__ T operator()(T a, T b) const { return b < a ? b : a; } };
template <class T> __device__ inline void sofie_gpu_atomic_add(T *p, T v)
{
   if constexpr (std::is_same<T, float>::value || std::is_same<T, double>::value || std::is_same<T, int>::value)
      atomicAdd(p, v);
   else
      sofie_gpu_atomic_cas(p, v, sofie_gpu_op_add());
}
template <class T> __device__ inline void sofie_gpu_atomic_mul(T *p, T v) { sofie_gpu_atomic_cas(p, v, sofie_gpu_op_mul()); }
template <class T> __device__ inline void sofie_gpu_atomic_max(T *p, T v) { sofie_gpu_atomic_cas(p, v, sofie_gpu_op_max()); }
template <class T> __device__ inline void sofie_gpu_atomic_min(T *p, T v) { sofie_gpu_atomic_cas(p, v, sofie_gpu_op_min()); }
#endif

namespace sofie_gpu {

// ---- errors ------------------------------------------------------------------------------------
#if defined(SOFIE_GPU_CUDA)
using stream_t = cudaStream_t;
inline void check(cudaError_t e, const char *what)
{
   if (e != cudaSuccess)
      throw std::runtime_error(std::string(what) + ": CUDA error " + std::to_string(int(e)) + " (" +
                               cudaGetErrorName(e) + ": " + cudaGetErrorString(e) + ")");
}
inline void check_blas(cublasStatus_t s, const char *what)
{
   if (s != CUBLAS_STATUS_SUCCESS)
      throw std::runtime_error(std::string(what) + ": cuBLAS status " + std::to_string(int(s)) +
                               (s == CUBLAS_STATUS_NOT_INITIALIZED ? " (not initialised: no usable GPU or driver)" : ""));
}
#elif defined(SOFIE_GPU_HIP)
using stream_t = hipStream_t;
inline void check(hipError_t e, const char *what)
{
   if (e != hipSuccess)
      throw std::runtime_error(std::string(what) + ": HIP error " + std::to_string(int(e)) + " (" +
                               hipGetErrorName(e) + ": " + hipGetErrorString(e) + ")");
}
#ifdef SOFIE_GPU_VENDOR_BLAS
inline void check_blas(hipblasStatus_t s, const char *what)
{
   if (s != HIPBLAS_STATUS_SUCCESS)
      throw std::runtime_error(std::string(what) + ": hipBLAS status " + std::to_string(int(s)));
}
#endif
#else
using stream_t = void *;
// Bytes the emulated device may hold at once (SOFIE_GPU_EMULATED_MEMORY, default unlimited): lets
// the tests exercise the out-of-device-memory path.
inline std::atomic<std::size_t> &emu_in_use()
{
   static std::atomic<std::size_t> n{0};
   return n;
}
#endif

// After every launch: a launch error (bad configuration, no device, a fault in an earlier kernel)
// names the node that launched.
inline void check_launch(const char *where)
{
#if defined(SOFIE_GPU_CUDA)
   const cudaError_t e = cudaGetLastError();
   if (e != cudaSuccess)
      throw std::runtime_error(std::string("kernel launch failed in ") + where + ": CUDA error " +
                               std::to_string(int(e)) + " (" + cudaGetErrorString(e) + ")");
#elif defined(SOFIE_GPU_HIP)
   const hipError_t e = hipGetLastError();
   if (e != hipSuccess)
      throw std::runtime_error(std::string("kernel launch failed in ") + where + ": HIP error " +
                               std::to_string(int(e)) + " (" + hipGetErrorString(e) + ")");
#else
   (void)where;
#endif
}

// ---- memory ------------------------------------------------------------------------------------
inline void *device_alloc(std::size_t n, const std::string &what)
{
   if (n == 0)
      return nullptr;
   void *p = nullptr;
#if defined(SOFIE_GPU_CUDA)
   const cudaError_t e = cudaMalloc(&p, n);
   if (e == cudaErrorMemoryAllocation)
      throw std::runtime_error("out of device memory allocating " + std::to_string(n) + " bytes for " + what);
   check(e, ("cudaMalloc of " + std::to_string(n) + " bytes for " + what).c_str());
#elif defined(SOFIE_GPU_HIP)
   const hipError_t e = hipMalloc(&p, n);
   if (e == hipErrorOutOfMemory)
      throw std::runtime_error("out of device memory allocating " + std::to_string(n) + " bytes for " + what);
   check(e, ("hipMalloc of " + std::to_string(n) + " bytes for " + what).c_str());
#else
   static const std::size_t limit = [] {
      const char *s = std::getenv("SOFIE_GPU_EMULATED_MEMORY");
      return s && *s ? std::size_t(std::strtoull(s, nullptr, 10)) : std::numeric_limits<std::size_t>::max();
   }();
   const std::size_t before = emu_in_use().fetch_add(n);
   if (before + n > limit || (p = std::aligned_alloc(256, (n + 255) / 256 * 256)) == nullptr) {
      emu_in_use().fetch_sub(n);
      throw std::runtime_error("out of device memory allocating " + std::to_string(n) + " bytes for " + what +
                               " (emulated device: " + std::to_string(before) + " bytes in use)");
   }
#endif
   return p;
}

inline void device_free(void *p, std::size_t n)
{
   if (!p)
      return;
#if defined(SOFIE_GPU_CUDA)
   (void)n;
   cudaFree(p);
#elif defined(SOFIE_GPU_HIP)
   (void)n;
   (void)hipFree(p);
#else
   emu_in_use().fetch_sub(n);
   std::free(p);
#endif
}

enum class Copy { HostToDevice, DeviceToHost, DeviceToDevice };

inline void copy_async(void *dst, const void *src, std::size_t n, Copy kind, stream_t s, const char *what)
{
   if (n == 0 || dst == src)
      return;
#if defined(SOFIE_GPU_CUDA)
   const cudaMemcpyKind k = kind == Copy::HostToDevice   ? cudaMemcpyHostToDevice
                            : kind == Copy::DeviceToHost ? cudaMemcpyDeviceToHost
                                                         : cudaMemcpyDeviceToDevice;
   check(cudaMemcpyAsync(dst, src, n, k, s), what);
#elif defined(SOFIE_GPU_HIP)
   const hipMemcpyKind k = kind == Copy::HostToDevice   ? hipMemcpyHostToDevice
                           : kind == Copy::DeviceToHost ? hipMemcpyDeviceToHost
                                                        : hipMemcpyDeviceToDevice;
   check(hipMemcpyAsync(dst, src, n, k, s), what);
#else
   (void)kind;
   (void)s;
   (void)what;
   std::memmove(dst, src, n);
#endif
}

// Synchronous device-to-host copy (DeviceArray.numpy()), after every queued kernel has finished.
inline void download(void *dst, const void *src, std::size_t n)
{
#if defined(SOFIE_GPU_CUDA)
   check(cudaDeviceSynchronize(), "waiting for the device");
   check(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), "copying a device array to the host");
#elif defined(SOFIE_GPU_HIP)
   check(hipDeviceSynchronize(), "waiting for the device");
   check(hipMemcpy(dst, src, n, hipMemcpyDeviceToHost), "copying a device array to the host");
#else
   std::memcpy(dst, src, n);
#endif
}

// Device pointers handed in by the caller were written on the caller's streams (PyTorch, CuPy):
// wait for the whole device before reading them.
inline void device_sync(const char *what)
{
#if defined(SOFIE_GPU_CUDA)
   check(cudaDeviceSynchronize(), what);
#elif defined(SOFIE_GPU_HIP)
   check(hipDeviceSynchronize(), what);
#else
   (void)what;
#endif
}

// A device allocation that only grows (the arena grows with the batch size, never per call).
struct DeviceBuffer {
   void *ptr = nullptr;
   std::size_t size = 0;
   DeviceBuffer() = default;
   DeviceBuffer(const DeviceBuffer &) = delete;
   DeviceBuffer &operator=(const DeviceBuffer &) = delete;
   ~DeviceBuffer() { device_free(ptr, size); }
   // the caller synchronises the stream first when the buffer may be in use
   char *reserve(std::size_t n, const std::string &what)
   {
      if (n > size) {
         device_free(ptr, size);
         ptr = nullptr;
         size = 0;
         ptr = device_alloc(n, what);
         size = n;
      }
      return static_cast<char *>(ptr);
   }
   char *data() const { return static_cast<char *>(ptr); }
};

// ---- the per-Session context: one stream and one BLAS handle -----------------------------------
struct Context {
   stream_t stream{};
#if defined(SOFIE_GPU_CUDA)
   cublasHandle_t blas{};
#elif defined(SOFIE_GPU_HIP) && defined(SOFIE_GPU_VENDOR_BLAS)
   hipblasHandle_t blas{};
#endif
   Context()
   {
#if defined(SOFIE_GPU_CUDA)
      int count = 0;
      check(cudaGetDeviceCount(&count), "looking for a CUDA device");
      if (count == 0)
         throw std::runtime_error("no CUDA device");
      check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "creating a CUDA stream");
      const cublasStatus_t st = cublasCreate(&blas);
      if (st != CUBLAS_STATUS_SUCCESS) {
         cudaStreamDestroy(stream);
         check_blas(st, "creating the cuBLAS handle");
      }
      cublasSetStream(blas, stream);
#elif defined(SOFIE_GPU_HIP)
      int count = 0;
      check(hipGetDeviceCount(&count), "looking for a HIP device");
      if (count == 0)
         throw std::runtime_error("no HIP device");
      check(hipStreamCreateWithFlags(&stream, hipStreamNonBlocking), "creating a HIP stream");
#ifdef SOFIE_GPU_VENDOR_BLAS
      const hipblasStatus_t st = hipblasCreate(&blas);
      if (st != HIPBLAS_STATUS_SUCCESS) {
         (void)hipStreamDestroy(stream);
         check_blas(st, "creating the hipBLAS handle");
      }
      hipblasSetStream(blas, stream);
#endif
#endif
   }
   Context(const Context &) = delete;
   Context &operator=(const Context &) = delete;
   ~Context()
   {
#if defined(SOFIE_GPU_CUDA)
      cublasDestroy(blas);
      cudaStreamDestroy(stream);
#elif defined(SOFIE_GPU_HIP)
#ifdef SOFIE_GPU_VENDOR_BLAS
      hipblasDestroy(blas);
#endif
      (void)hipStreamDestroy(stream);
#endif
   }
   void sync(const char *what)
   {
#if defined(SOFIE_GPU_CUDA)
      check(cudaStreamSynchronize(stream), what);
#elif defined(SOFIE_GPU_HIP)
      check(hipStreamSynchronize(stream), what);
#else
      (void)what;
#endif
   }
};

// ---- launches ----------------------------------------------------------------------------------
// One-dimensional launches over n work items; kernels loop grid-stride, so the grid is capped.
inline unsigned block_for(std::int64_t n) { return n >= 256 ? 256u : unsigned((n + 31) / 32 * 32); }
inline unsigned grid_for(std::int64_t n)
{
   const std::int64_t b = (n + 255) / 256;
   return unsigned(b < 1 ? 1 : (b > 8192 ? 8192 : b));
}

#if defined(SOFIE_GPU_EMULATED)
template <class F> inline void emu_launch(unsigned grid, unsigned block, F &&body)
{
   gridDim = {grid, 1, 1};
   blockDim = {block, 1, 1};
   for (unsigned b = 0; b < grid; ++b) {
      blockIdx = {b, 0, 0};
      for (unsigned t = 0; t < block; ++t) {
         threadIdx = {t, 0, 0};
         body();
      }
   }
}
#define SOFIE_LAUNCH(kernel, grid, block, stream, ...) ::sofie_gpu::emu_launch(grid, block, [&] { kernel(__VA_ARGS__); })
// block-cooperative kernels run once per block; their SOFIE_FOR_THREADS phases loop over the threads
template <class F> inline void emu_launch_blocks(unsigned grid, unsigned block, F &&body)
{
   gridDim = {grid, 1, 1};
   blockDim = {block, 1, 1};
   threadIdx = {0, 0, 0};
   for (unsigned b = 0; b < grid; ++b) {
      blockIdx = {b, 0, 0};
      body();
   }
}
#define SOFIE_LAUNCH_BLOCKS(kernel, grid, block, stream, ...) \
   ::sofie_gpu::emu_launch_blocks(grid, block, [&] { kernel(__VA_ARGS__); })
#define SOFIE_FOR_THREADS(t) for (unsigned t = 0; t < blockDim.x; ++t)
#define SOFIE_BARRIER() ((void)0)
#elif defined(SOFIE_GPU_CUDA)
#define SOFIE_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#else
#define SOFIE_LAUNCH(kernel, grid, block, stream, ...) hipLaunchKernelGGL(kernel, dim3(grid), dim3(block), 0, stream, __VA_ARGS__)
#endif
#if !defined(SOFIE_GPU_EMULATED)
#define SOFIE_LAUNCH_BLOCKS SOFIE_LAUNCH
#define SOFIE_FOR_THREADS(t) for (unsigned t = threadIdx.x, t##_once_ = 1; t##_once_; t##_once_ = 0)
#define SOFIE_BARRIER() __syncthreads()
#endif
//: threads per block of the block-cooperative kernels (a power of two: tree reductions)
#define SOFIE_BLOCK 128

// ---- GEMM (row major, as the CPU runtime's sofie_rt::gemm) -------------------------------------
// C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b] for b < batch, A[b] = A + b * strideA, etc.
// A plain kernel, one thread per element of C: the GEMM of targets without a vendor BLAS (HIP
// without hipBLAS, the emulation without OpenBLAS).
template <class T>
__global__ void gemm_kernel(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha, const T *A,
                            std::int64_t lda, std::int64_t sa, const T *B, std::int64_t ldb, std::int64_t sb, T beta,
                            T *C, std::int64_t ldc, std::int64_t sc, std::int64_t batch)
{
   const std::int64_t total = batch * M * N;
   for (std::int64_t t = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
        t += std::int64_t(gridDim.x) * blockDim.x) {
      const std::int64_t b = t / (M * N), i = (t / N) % M, j = t % N;
      const T *a = A + b * sa;
      const T *bb = B + b * sb;
      T acc = T(0);
      for (std::int64_t k = 0; k < K; ++k)
         acc += (ta ? a[k * lda + i] : a[i * lda + k]) * (tb ? bb[j * ldb + k] : bb[k * ldb + j]);
      T *c = C + b * sc + i * ldc + j;
      *c = beta == T(0) ? alpha * acc : alpha * acc + beta * *c;
   }
}

inline void check_gemm_dims(std::int64_t M, std::int64_t N, std::int64_t K)
{
   const std::int64_t lim = std::numeric_limits<int>::max();
   if (M > lim || N > lim || K > lim)
      throw std::runtime_error("GEMM dimensions exceed the 32-bit BLAS interface: M=" + std::to_string(M) +
                               " N=" + std::to_string(N) + " K=" + std::to_string(K));
}

template <class T>
inline void gemm_batched(Context &ctx, bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha,
                         const T *A, std::int64_t lda, std::int64_t sa, const T *B, std::int64_t ldb, std::int64_t sb,
                         T beta, T *C, std::int64_t ldc, std::int64_t sc, std::int64_t batch, const char *where)
{
   static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "GEMM of float or double");
   if (M == 0 || N == 0 || batch == 0)
      return;
   check_gemm_dims(M, N, K);
#if defined(SOFIE_GPU_CUDA)
   // row major C = op(A) op(B) is column major C^T = op(B)^T op(A)^T: swap the operands
   const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
   cublasStatus_t st;
   if constexpr (std::is_same<T, float>::value) {
      st = batch == 1 ? cublasSgemm(ctx.blas, ob, oa, int(N), int(M), int(K), &alpha, B, int(ldb), A, int(lda), &beta,
                                    C, int(ldc))
                      : cublasSgemmStridedBatched(ctx.blas, ob, oa, int(N), int(M), int(K), &alpha, B, int(ldb), sb,
                                                  A, int(lda), sa, &beta, C, int(ldc), sc, int(batch));
   } else {
      st = batch == 1 ? cublasDgemm(ctx.blas, ob, oa, int(N), int(M), int(K), &alpha, B, int(ldb), A, int(lda), &beta,
                                    C, int(ldc))
                      : cublasDgemmStridedBatched(ctx.blas, ob, oa, int(N), int(M), int(K), &alpha, B, int(ldb), sb,
                                                  A, int(lda), sa, &beta, C, int(ldc), sc, int(batch));
   }
   check_blas(st, where);
#elif defined(SOFIE_GPU_HIP) && defined(SOFIE_GPU_VENDOR_BLAS)
   const hipblasOperation_t oa = ta ? HIPBLAS_OP_T : HIPBLAS_OP_N, ob = tb ? HIPBLAS_OP_T : HIPBLAS_OP_N;
   hipblasStatus_t st;
   if constexpr (std::is_same<T, float>::value) {
      st = hipblasSgemmStridedBatched(ctx.blas, ob, oa, int(N), int(M), int(K), &alpha, B, int(ldb), sb, A, int(lda),
                                      sa, &beta, C, int(ldc), sc, int(batch));
   } else {
      st = hipblasDgemmStridedBatched(ctx.blas, ob, oa, int(N), int(M), int(K), &alpha, B, int(ldb), sb, A, int(lda),
                                      sa, &beta, C, int(ldc), sc, int(batch));
   }
   check_blas(st, where);
#elif defined(SOFIE_GPU_EMULATED) && defined(SOFIE_RT_CBLAS)
   (void)ctx;
   (void)where;
   // 101 = row major, 111/112 = no transpose/transpose
   for (std::int64_t b = 0; b < batch; ++b) {
      if constexpr (std::is_same<T, float>::value)
         scipy_cblas_sgemm(101, ta ? 112 : 111, tb ? 112 : 111, int(M), int(N), int(K), alpha, A + b * sa, int(lda),
                           B + b * sb, int(ldb), beta, C + b * sc, int(ldc));
      else
         scipy_cblas_dgemm(101, ta ? 112 : 111, tb ? 112 : 111, int(M), int(N), int(K), alpha, A + b * sa, int(lda),
                           B + b * sb, int(ldb), beta, C + b * sc, int(ldc));
   }
#else
   const std::int64_t total = batch * M * N;
   SOFIE_LAUNCH(gemm_kernel<T>, grid_for(total), block_for(total), ctx.stream, ta, tb, M, N, K, alpha, A, lda, sa, B,
                ldb, sb, beta, C, ldc, sc, batch);
   check_launch(where);
#endif
}

template <class T>
inline void gemm(Context &ctx, bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha, const T *A,
                 std::int64_t lda, const T *B, std::int64_t ldb, T beta, T *C, std::int64_t ldc, const char *where)
{
   gemm_batched<T>(ctx, ta, tb, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1, where);
}

} // namespace sofie_gpu
