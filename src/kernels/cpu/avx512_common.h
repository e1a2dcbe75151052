// Pieces shared by the AVX-512 VNNI and AMX GEMMs (include only from files compiled with
// AVX-512 flags): unpacking int4 weight panels to the int8 layout, one group's weight parameters
// and its epilogue term.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "outq/kernels/gemm.h"

namespace outq::kernels::detail {

// One packed int4 column block into the int8 layout (two quads per octet).
inline void unpack_w4(const uint8_t* src, int64_t octets, uint8_t* dst) {
  const __m512i mask = _mm512_set1_epi8(0x0F);
  for (int64_t o = 0; o < octets; ++o) {
    const __m512i v = _mm512_loadu_si512(src + 64 * o);
    _mm512_storeu_si512(dst + 128 * o, _mm512_and_si512(v, mask));
    _mm512_storeu_si512(dst + 128 * o + 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), mask));
  }
}

// sw, zw and Wc of the 16 channels of column block b in group g.
struct GroupWeights {
  __m512 sw, wc;
  __m512i zw;
};
inline GroupWeights group_weights(const PackedWeights& pw, int64_t b, int64_t g) {
  const int64_t i = pw.at(b * PackedWeights::kBlock, g);
  return {_mm512_loadu_ps(pw.scale.data() + i), _mm512_cvtepi32_ps(_mm512_loadu_si512(pw.sum.data() + i)),
          _mm512_loadu_si512(pw.zero.data() + i)};
}

// t = fma(-za, Wc, D - zw A) for 16 channels of one row and group (see gemm.h); the caller adds
// sw * t to its accumulator.
inline __m512 group_term(__m512i d, __m512i zw, __m512 wc, int32_t a_sum, float za) {
  const __m512i corr = _mm512_sub_epi32(d, _mm512_mullo_epi32(zw, _mm512_set1_epi32(a_sum)));
  return _mm512_fmadd_ps(_mm512_set1_ps(-za), wc, _mm512_cvtepi32_ps(corr));
}

}  // namespace outq::kernels::detail
