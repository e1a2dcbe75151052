// Machine limits for docs/benchmarks.md: the int8 dot-product rate of 512-bit vpdpbusd, the fp32
// FMA rate of 512-bit vfmadd, and read bandwidth from memory. Register-only loops with enough
// independent accumulators to cover the instructions' latency; compiled with AVX-512 flags for
// this file only (the benchmark checks CPUID before calling them).
#include <immintrin.h>

#include <cstdint>

#include "peak_probes.h"

namespace outq::bench {

int64_t probe_vnni(int64_t iterations) {
  __m512i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  __m512i s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_epi32(s, acc[i]);
  return _mm512_reduce_add_epi32(s);
}

float probe_fma(int64_t iterations) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.001f);
  for (int64_t it = 0; it < iterations; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

int64_t probe_read(const uint8_t* data, int64_t bytes) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t i = 0; i + 256 <= bytes; i += 256) {
    s0 = _mm512_add_epi64(s0, _mm512_loadu_si512(data + i));
    s1 = _mm512_add_epi64(s1, _mm512_loadu_si512(data + i + 64));
    s2 = _mm512_add_epi64(s2, _mm512_loadu_si512(data + i + 128));
    s3 = _mm512_add_epi64(s3, _mm512_loadu_si512(data + i + 192));
  }
  return _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
}

}  // namespace outq::bench
