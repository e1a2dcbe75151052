// The AVX-VNNI probe loop (256-bit vpdpbusd; see probes_internal.h). Compiled with -mavxvnni only
// for this file.
#include <immintrin.h>

#include "../probes_internal.h"

namespace outq::kernels::detail {

int64_t probe_vnni_ymm(int64_t iterations) {
  // One asm round per iteration with the 12 sums in named registers: in intrinsics (or with an
  // array of sums) GCC stored the sums to the stack every round, and the stores, not vpdpbusd, set
  // the rate (about 310 GOPS on a Zen 5 core, whose vpdpbusd issues twice per cycle).
  __m256i c0 = _mm256_set1_epi32(0), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0,
          c10 = c0, c11 = c0;
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
#define OUTQ_DP(x) "%{vex%} vpdpbusd %[b], %[a], %[" #x "]\n\t"
  for (int64_t it = 0; it < iterations; ++it)
    asm(OUTQ_DP(c0) OUTQ_DP(c1) OUTQ_DP(c2) OUTQ_DP(c3) OUTQ_DP(c4) OUTQ_DP(c5) OUTQ_DP(c6) OUTQ_DP(c7) OUTQ_DP(c8)
            OUTQ_DP(c9) OUTQ_DP(c10) OUTQ_DP(c11)
        : [c0] "+x"(c0), [c1] "+x"(c1), [c2] "+x"(c2), [c3] "+x"(c3), [c4] "+x"(c4), [c5] "+x"(c5), [c6] "+x"(c6),
          [c7] "+x"(c7), [c8] "+x"(c8), [c9] "+x"(c9), [c10] "+x"(c10), [c11] "+x"(c11)
        : [a] "x"(a), [b] "x"(b));
#undef OUTQ_DP
  const __m256i s = _mm256_add_epi32(
      _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),
                       _mm256_add_epi32(_mm256_add_epi32(c4, c5), _mm256_add_epi32(c6, c7))),
      _mm256_add_epi32(_mm256_add_epi32(c8, c9), _mm256_add_epi32(c10, c11)));
  return _mm256_extract_epi32(s, 0);
}

}  // namespace outq::kernels::detail
