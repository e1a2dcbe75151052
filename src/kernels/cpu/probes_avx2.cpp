// AVX2 probe loops (see probes_internal.h). Compiled with -mavx2 -mfma only for this file.
#include <immintrin.h>

#include "../probes_internal.h"

namespace outq::kernels::detail {
namespace {

inline int64_t reduce32(const __m256i* acc, int n) {
  __m256i s = acc[0];
  for (int i = 1; i < n; ++i) s = _mm256_add_epi32(s, acc[i]);
  return _mm256_extract_epi32(s, 0) + _mm256_extract_epi32(s, 7);
}

// The multi-instruction steps are written in asm: their products depend on loop-invariant operands
// only, so in intrinsics the compiler computes them once before the loop (it did: the int8 step
// and vpmaddwd probes measured vpaddd and stack traffic, not the multiplies). One asm statement
// per round reads and writes all eight sums in registers, so each round runs as written.
#define OUTQ_ACCUMULATORS                                                                                  \
  [c0] "+x"(c0), [c1] "+x"(c1), [c2] "+x"(c2), [c3] "+x"(c3), [c4] "+x"(c4), [c5] "+x"(c5), [c6] "+x"(c6), \
      [c7] "+x"(c7), [t] "=&x"(t)
#define OUTQ_EIGHT(STEP) STEP(c0) STEP(c1) STEP(c2) STEP(c3) STEP(c4) STEP(c5) STEP(c6) STEP(c7)
#define OUTQ_INT8DOT(x) \
  "vpmaddubsw %[s], %[u], %[t]\n\tvpmaddwd %[ones], %[t], %[t]\n\tvpaddd %[t], %[" #x "], %[" #x "]\n\t"
#define OUTQ_INT8SIGN(x)                                                                                  \
  "vpsignb %[s], %[s], %[t]\n\tvpmaddubsw %[t], %[u], %[t]\n\tvpmaddwd %[ones], %[t], %[t]\n\t" \
  "vpaddd %[t], %[" #x "], %[" #x "]\n\t"
#define OUTQ_MADDWD(x) "vpmaddwd %[s], %[u], %[t]\n\tvpaddd %[t], %[" #x "], %[" #x "]\n\t"

template <int Kind>  // 0: int8 step, 1: exact signed-byte step, 2: vpmaddwd + vpaddd
int64_t run_steps(int64_t iterations, __m256i u, __m256i s) {
  static_assert(kStepAccumulators == 8);
  const __m256i ones = _mm256_set1_epi16(1);
  // Named sums, not an array: with an array GCC stored every sum to the stack each round.
  __m256i c0 = _mm256_set1_epi32(0), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, t;
  for (int64_t it = 0; it < iterations; ++it) {
    if constexpr (Kind == 0)
      asm(OUTQ_EIGHT(OUTQ_INT8DOT) : OUTQ_ACCUMULATORS : [u] "x"(u), [s] "x"(s), [ones] "x"(ones));
    else if constexpr (Kind == 1)
      asm(OUTQ_EIGHT(OUTQ_INT8SIGN) : OUTQ_ACCUMULATORS : [u] "x"(u), [s] "x"(s), [ones] "x"(ones));
    else
      asm(OUTQ_EIGHT(OUTQ_MADDWD) : OUTQ_ACCUMULATORS : [u] "x"(u), [s] "x"(s));
  }
  const __m256i c[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
  return reduce32(c, 8);
}
#undef OUTQ_ACCUMULATORS
#undef OUTQ_EIGHT
#undef OUTQ_INT8DOT
#undef OUTQ_INT8SIGN
#undef OUTQ_MADDWD

}  // namespace

int64_t probe_int8dot_avx2(int64_t iterations) {
  return run_steps<0>(iterations, _mm256_set1_epi8(3), _mm256_set1_epi8(-2));
}

int64_t probe_int8sign_avx2(int64_t iterations) {
  return run_steps<1>(iterations, _mm256_set1_epi8(3), _mm256_set1_epi8(-2));
}

int64_t probe_maddwd_avx2(int64_t iterations) {
  return run_steps<2>(iterations, _mm256_set1_epi16(3), _mm256_set1_epi16(-2));
}

int64_t probe_maddubs_avx2(int64_t iterations) {
  __m256i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_epi8(static_cast<char>(i));
  const __m256i b = _mm256_set1_epi8(1);
  for (int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_maddubs_epi16(acc[i], b);
  return reduce32(acc, 12);
}

float probe_fma_ymm(int64_t iterations) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.001f);
  for (int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  return _mm256_cvtss_f32(s);
}

int64_t probe_read_ymm(const uint8_t* data, int64_t bytes) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t i = 0; i + 128 <= bytes; i += 128) {
    s0 = _mm256_add_epi64(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i)));
    s1 = _mm256_add_epi64(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i + 32)));
    s2 = _mm256_add_epi64(s2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i + 64)));
    s3 = _mm256_add_epi64(s3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
  return _mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 3);
}

}  // namespace outq::kernels::detail
