// AVX2 int16-activation GEMM: tiles of up to 4 rows x 8 channels; vpmaddwd multiplies a broadcast
// activation pair with 8 channels' weight pairs into int32 lanes, which are widened into int64
// every 128 pairs (the bound is in gemm_i16.h). Compiled with -mavx2 -mfma only for this file.
#include <immintrin.h>

#include <algorithm>

#include "../gemm_i16_internal.h"

namespace outq::kernels::detail {
namespace {

constexpr int kRows = 4;
constexpr int64_t kPairsPerChunk = 128;  // 256 columns: |sum| < 2^31 in every int32 lane

template <int R>
void tile(const Activations16& a, const PackedWeights16& w, const float* bias, float* y, int64_t ldy, int64_t r0, int64_t b) {
  const int16_t* block = w.data.data() + b * w.k_padded * PackedWeights16::kBlock;
  const int64_t pairs = w.k_padded / 2;
  __m256i wide[R][2];
  for (int r = 0; r < R; ++r) wide[r][0] = wide[r][1] = _mm256_setzero_si256();
  for (int64_t p0 = 0; p0 < pairs; p0 += kPairsPerChunk) {
    const int64_t p1 = std::min(pairs, p0 + kPairsPerChunk);
    __m256i acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
    for (int64_t p = p0; p < p1; ++p) {
      const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(block + p * 16));
      for (int r = 0; r < R; ++r) {
        int32_t pair;
        __builtin_memcpy(&pair, a.codes.data() + (r0 + r) * a.k_padded + 2 * p, 4);
        acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(_mm256_set1_epi32(pair), wv));
      }
    }
    for (int r = 0; r < R; ++r) {
      wide[r][0] = _mm256_add_epi64(wide[r][0], _mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc[r])));
      wide[r][1] = _mm256_add_epi64(wide[r][1], _mm256_cvtepi32_epi64(_mm256_extracti128_si256(acc[r], 1)));
    }
  }
  const int64_t n0 = b * PackedWeights16::kBlock;
  for (int r = 0; r < R; ++r) {
    alignas(32) int64_t d[PackedWeights16::kBlock];
    _mm256_store_si256(reinterpret_cast<__m256i*>(d), wide[r][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(d + 4), wide[r][1]);
    float out[PackedWeights16::kBlock];
    for (int lane = 0; lane < PackedWeights16::kBlock; ++lane) {
      const int64_t c = n0 + lane;
      out[lane] = epilogue16(d[lane], a.scale[r0 + r], a.zero[r0 + r], w.scale[c], w.sum[c], bias && c < w.n ? bias[c] : 0.0f);
    }
    store16(out, y + (r0 + r) * ldy, n0, w.n);
  }
}

}  // namespace

void gemm_i16_blocks_avx2(const Activations16& a, const PackedWeights16& w, const float* bias, float* y, int64_t ldy,
                          int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    int64_t r = 0;
    for (; r + kRows <= a.m; r += kRows) tile<kRows>(a, w, bias, y, ldy, r, b);
    switch (a.m - r) {
      case 1: tile<1>(a, w, bias, y, ldy, r, b); break;
      case 2: tile<2>(a, w, bias, y, ldy, r, b); break;
      case 3: tile<3>(a, w, bias, y, ldy, r, b); break;
      default: break;
    }
  }
}

}  // namespace outq::kernels::detail
