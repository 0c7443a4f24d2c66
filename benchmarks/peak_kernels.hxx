// The machine's limits for one core, measured the way the generated code runs: JIT-compiled by
// cling in the benchmark process (same EXTRA_CLING_ARGS and optimisation pragma as sofie_root).
//
// fma_*:    many independent FMA chains on registers (no memory traffic), so the core's FMA units
//           are the only limit. 12 chains cover FMA latency x units (4 cycles x 2 units) with margin.
// stream_*: sum of a float array read over and over; when the array fits in L2 this is the rate a
//           batch-1 dense layer can read its weights (the weight-streaming floor).
// Each width has its own target attribute and is only called when the CPU supports it (peak.py
// reads /proc/cpuinfo), so the kernels do not depend on which -march cling was given.
#include <immintrin.h>

#include <chrono>
#include <cstdint>

namespace sofie_peak {

inline double now()
{
   return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

#define SOFIE_PEAK_CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

// FLOP per iteration: 12 chains x lanes x 2. Returns seconds; *sink receives the result so the
// work cannot be dropped.
__attribute__((target("avx512f"))) inline double fma512(long iters, float *sink)
{
   const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
#define SOFIE_DECL(i) __m512 c##i = _mm512_set1_ps(1.0f + 0.01f * i);
   SOFIE_PEAK_CHAINS(SOFIE_DECL)
#undef SOFIE_DECL
   const double t0 = now();
   for (long n = 0; n < iters; ++n) {
#define SOFIE_STEP(i) c##i = _mm512_fmadd_ps(c##i, a, b);
      SOFIE_PEAK_CHAINS(SOFIE_STEP)
#undef SOFIE_STEP
   }
   const double t = now() - t0;
   __m512 s = _mm512_setzero_ps();
#define SOFIE_SUM(i) s = _mm512_add_ps(s, c##i);
   SOFIE_PEAK_CHAINS(SOFIE_SUM)
#undef SOFIE_SUM
   *sink = _mm512_reduce_add_ps(s);
   return t;
}

__attribute__((target("avx2,fma"))) inline double fma256(long iters, float *sink)
{
   const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
#define SOFIE_DECL(i) __m256 c##i = _mm256_set1_ps(1.0f + 0.01f * i);
   SOFIE_PEAK_CHAINS(SOFIE_DECL)
#undef SOFIE_DECL
   const double t0 = now();
   for (long n = 0; n < iters; ++n) {
#define SOFIE_STEP(i) c##i = _mm256_fmadd_ps(c##i, a, b);
      SOFIE_PEAK_CHAINS(SOFIE_STEP)
#undef SOFIE_STEP
   }
   const double t = now() - t0;
   __m256 s = _mm256_setzero_ps();
#define SOFIE_SUM(i) s = _mm256_add_ps(s, c##i);
   SOFIE_PEAK_CHAINS(SOFIE_SUM)
#undef SOFIE_SUM
   alignas(32) float lanes[8];
   _mm256_store_ps(lanes, s);
   float r = 0;
   for (float v : lanes)
      r += v;
   *sink = r;
   return t;
}
#undef SOFIE_PEAK_CHAINS

// Reads x[0..n) `reps` times with 8 independent accumulators; returns seconds, *sum = the sum over
// all passes (so a test can check every element was read).
__attribute__((target("avx512f"))) inline double stream512(const float *x, long n, long reps, float *sum)
{
   const long body = n - n % 128;
   float tail = 0;
   // the accumulators carry over from one pass to the next, so no pass can be skipped or hoisted
   __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
   const double t0 = now();
   for (long r = 0; r < reps; ++r) {
      for (long i = 0; i < body; i += 128) {
         s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + i));
         s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + i + 16));
         s2 = _mm512_add_ps(s2, _mm512_loadu_ps(x + i + 32));
         s3 = _mm512_add_ps(s3, _mm512_loadu_ps(x + i + 48));
         s4 = _mm512_add_ps(s4, _mm512_loadu_ps(x + i + 64));
         s5 = _mm512_add_ps(s5, _mm512_loadu_ps(x + i + 80));
         s6 = _mm512_add_ps(s6, _mm512_loadu_ps(x + i + 96));
         s7 = _mm512_add_ps(s7, _mm512_loadu_ps(x + i + 112));
      }
      for (long i = body; i < n; ++i)
         tail += x[i];
   }
   const double dt = now() - t0;
   *sum = tail + _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)),
                                                    _mm512_add_ps(_mm512_add_ps(s4, s5), _mm512_add_ps(s6, s7))));
   return dt;
}

__attribute__((target("avx2,fma"))) inline double stream256(const float *x, long n, long reps, float *sum)
{
   const long body = n - n % 64;
   float tail = 0;
   __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
   const double t0 = now();
   for (long r = 0; r < reps; ++r) {
      for (long i = 0; i < body; i += 64) {
         s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
         s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
         s2 = _mm256_add_ps(s2, _mm256_loadu_ps(x + i + 16));
         s3 = _mm256_add_ps(s3, _mm256_loadu_ps(x + i + 24));
         s4 = _mm256_add_ps(s4, _mm256_loadu_ps(x + i + 32));
         s5 = _mm256_add_ps(s5, _mm256_loadu_ps(x + i + 40));
         s6 = _mm256_add_ps(s6, _mm256_loadu_ps(x + i + 48));
         s7 = _mm256_add_ps(s7, _mm256_loadu_ps(x + i + 56));
      }
      for (long i = body; i < n; ++i)
         tail += x[i];
   }
   const double dt = now() - t0;
   __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)),
                            _mm256_add_ps(_mm256_add_ps(s4, s5), _mm256_add_ps(s6, s7)));
   alignas(32) float lanes[8];
   _mm256_store_ps(lanes, s);
   for (float v : lanes)
      tail += v;
   *sum = tail;
   return dt;
}

} // namespace sofie_peak
