// AVX2 GEMM (no int8 dot-product instruction that cannot saturate, so none of them saturates here):
//  - int8 weights: weight bytes widened to int16 (vpmovzxbw) and multiplied with int16 activation
//    pairs by vpmaddwd, which sums two products into int32. Bound: |w' a'| <= 255 * 128, a pair
//    <= 65280, and K <= 65536 columns keep every int32 lane below 2^31 - 1 (255 * 128 * 65536 =
//    2139095040). Each lane holds half of a channel's quad (columns 0-1 or 2-3); the halves are
//    added (vphaddd) at the end of each group.
//  - int4 weights: nibbles (0..15) as vpmaddubsw's unsigned operand against int8 activations; the
//    int16 lane of one octet (two vpmaddubsw, four products) is within 4 * 15 * B for activation
//    codes bounded by B in magnitude (QuantizedActivations::code_bound), so floor(32767 / (60 B))
//    octets accumulate in int16 before vpmaddwd widens them: 4 octets for 8-bit activations
//    (30720 <= 32767), 36 for asymmetric 4-bit ones (B = 15), 68 for symmetric 4-bit ones.
// Tiles of 4 rows x 8 channels per pass (two passes per 16-channel column block); driver, packing
// and epilogue in ymm_gemm.h. Compiled with -mavx2 -mfma only for this file; never called unless
// CPUID says so.
#include <immintrin.h>

#include "ymm_gemm.h"

namespace outq::kernels::detail {
namespace {

inline __m256i broadcast_pair4(const int16_t* p) {  // four int16 activations in every 64-bit lane
  int64_t v;
  std::memcpy(&v, p, 8);
  return _mm256_set1_epi64x(v);
}

struct Avx2W8 {
  static constexpr int kRows = 4;
  static constexpr bool kWide = true;
  template <int R>
  static void dot(const void* ap, const uint8_t* w, const PackedWeights&, int64_t q0, int64_t q1, int,
                  __m256i (&acc)[R][2]) {
    const int16_t* a = static_cast<const int16_t*>(ap);
    for (int h = 0; h < 2; ++h) {
      // part[r][0]: channels 0-3 of the half, part[r][1]: 4-7; two int32 lanes per channel.
      __m256i part[R][2];
      for (int r = 0; r < R; ++r) part[r][0] = part[r][1] = _mm256_setzero_si256();
      for (int64_t q = q0; q < q1; ++q) {
        const uint8_t* wq = w + 64 * q + 32 * h;
        const __m256i w0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wq)));
        const __m256i w1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wq + 16)));
        for (int r = 0; r < R; ++r) {
          const __m256i av = broadcast_pair4(a + 4 * (q * R + r));
          part[r][0] = _mm256_add_epi32(part[r][0], _mm256_madd_epi16(w0, av));
          part[r][1] = _mm256_add_epi32(part[r][1], _mm256_madd_epi16(w1, av));
        }
      }
      // hadd -> channels 0 1 4 5 | 2 3 6 7; the 64-bit permute (0, 2, 1, 3) restores 0..7.
      for (int r = 0; r < R; ++r)
        acc[r][h] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(part[r][0], part[r][1]), 0xD8);
    }
  }
};

struct Avx2W4 {
  static constexpr int kRows = 4;
  static constexpr bool kWide = false;
  template <int R>
  static void dot(const void* ap, const uint8_t* w, const PackedWeights&, int64_t q0, int64_t q1, int bound,
                  __m256i (&acc)[R][2]) {
    const int8_t* a = static_cast<const int8_t*>(ap);
    const __m256i mask = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const int64_t run = std::max(1, 32767 / (60 * std::max(bound, 1)));  // octets per int16 run (see the top)
    for (int h = 0; h < 2; ++h) {
      __m256i sum[R];
      for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_si256();
      for (int64_t o0 = q0 / 2; o0 < q1 / 2; o0 += run) {
        const int64_t o1 = std::min(q1 / 2, o0 + run);
        __m256i s16[R];
        for (int r = 0; r < R; ++r) s16[r] = _mm256_setzero_si256();
        for (int64_t o = o0; o < o1; ++o) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * o + 32 * h));
          const __m256i lo = _mm256_and_si256(v, mask), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
          for (int r = 0; r < R; ++r) {
            const __m256i a0 = ymm::broadcast_quad(a + 4 * (2 * o * R + r));
            const __m256i a1 = ymm::broadcast_quad(a + 4 * ((2 * o + 1) * R + r));
            s16[r] = _mm256_add_epi16(s16[r], _mm256_add_epi16(_mm256_maddubs_epi16(lo, a0), _mm256_maddubs_epi16(hi, a1)));
          }
        }
        for (int r = 0; r < R; ++r) sum[r] = _mm256_add_epi32(sum[r], _mm256_madd_epi16(s16[r], ones));
      }
      for (int r = 0; r < R; ++r) acc[r][h] = sum[r];
    }
  }
};

}  // namespace

void gemm_blocks_avx2(const GemmArguments& args, int64_t b0, int64_t b1) {
  args.w->bits == 4 ? ymm::gemm_blocks<Avx2W4>(args, b0, b1) : ymm::gemm_blocks<Avx2W8>(args, b0, b1);
}

}  // namespace outq::kernels::detail
