// The AVX-VNNI probe loop (256-bit vpdpbusd; see probes_internal.h). Compiled with -mavxvnni only
// for this file.
#include <immintrin.h>

#include "../probes_internal.h"

namespace outq::kernels::detail {

int64_t probe_vnni_ymm(int64_t iterations) {
  __m256i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_epi32(i);
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
  for (int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_dpbusd_avx_epi32(acc[i], a, b);
  __m256i s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_epi32(s, acc[i]);
  return _mm256_extract_epi32(s, 0);
}

}  // namespace outq::kernels::detail
