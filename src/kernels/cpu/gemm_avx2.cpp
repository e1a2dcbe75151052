// AVX2 GEMM: tiles of up to 4 rows x 16 channels (one column block as two 8-channel halves).
// AVX2 has no int8 dot-product instruction that cannot saturate, so weight bytes are split into
// nibbles: vpmaddubsw of a 0..15 nibble and an int8 activation pair never leaves int16
// (2 * 15 * 128 < 32767), vpmaddwd then sums pairs into int32 (by 16 for the high nibble of an
// int8 weight). int4 weights are nibbles already. Same epilogue as every path (see gemm.h).
// Compiled with -mavx2 -mfma only for this file; never called unless CPUID says so.
#include <immintrin.h>

#include "../gemm_internal.h"

namespace outq::kernels::detail {
namespace {

constexpr int kRows = 4;

inline __m256i broadcast_quad(const int8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// acc[r][h] (h = channel half) += dot products over quads [q0, q1), int8 or packed int4 weights.
template <int R, bool kW4>
inline void dot(const int8_t* a, int64_t lda, const uint8_t* w, int64_t q0, int64_t q1, __m256i (&acc)[R][2]) {
  const __m256i mask = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1), sixteen = _mm256_set1_epi16(16);
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  if (!kW4) {
    for (int64_t q = q0; q < q1; ++q)
      for (int h = 0; h < 2; ++h) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * q + 32 * h));
        const __m256i lo = _mm256_and_si256(v, mask), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
        for (int r = 0; r < R; ++r) {
          const __m256i av = broadcast_quad(a + r * lda + 4 * q);
          const __m256i p = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(hi, av), sixteen),
                                             _mm256_madd_epi16(_mm256_maddubs_epi16(lo, av), ones));
          acc[r][h] = _mm256_add_epi32(acc[r][h], p);
        }
      }
    return;
  }
  for (int64_t o = q0 / 2; o < q1 / 2; ++o)
    for (int h = 0; h < 2; ++h) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * o + 32 * h));
      const __m256i lo = _mm256_and_si256(v, mask), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
      for (int r = 0; r < R; ++r) {
        const __m256i a0 = broadcast_quad(a + r * lda + 8 * o), a1 = broadcast_quad(a + r * lda + 8 * o + 4);
        // Each vpmaddubsw lane is within +-3840 (two products of at most 15 * 128), the sum +-7680.
        const __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(lo, a0), _mm256_maddubs_epi16(hi, a1));
        acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(s, ones));
      }
    }
}

template <int R, bool kW4>
void tile(const GemmArguments& args, int64_t m0, int64_t b) {
  const QuantizedActivations& a = *args.a;
  const PackedWeights& pw = *args.w;
  const int64_t groups = pw.groups();
  const int8_t* arow = a.codes.data() + m0 * a.k_padded;
  const uint8_t* w = pw.data.data() + b * pw.block_bytes();
  __m256 facc[R][2];
  for (int r = 0; r < R; ++r) facc[r][0] = facc[r][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    int64_t q0, q1;
    group_quads(pw, g, &q0, &q1);
    __m256i acc[R][2];
    dot<R, kW4>(arow, a.k_padded, w, q0, q1, acc);
    for (int h = 0; h < 2; ++h) {
      const int64_t i = pw.at(b * PackedWeights::kBlock + 8 * h, g);
      const __m256 sw = _mm256_loadu_ps(pw.scale.data() + i);
      const __m256i zw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pw.zero.data() + i));
      const __m256 wc = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(pw.sum.data() + i)));
      for (int r = 0; r < R; ++r) {
        const __m256i corr =
            _mm256_sub_epi32(acc[r][h], _mm256_mullo_epi32(zw, _mm256_set1_epi32(a.group_sum[(m0 + r) * groups + g])));
        const __m256 t = _mm256_fmadd_ps(_mm256_set1_ps(-a.zero[m0 + r]), wc, _mm256_cvtepi32_ps(corr));
        facc[r][h] = _mm256_fmadd_ps(sw, t, facc[r][h]);
      }
    }
  }
  const int64_t n0 = b * PackedWeights::kBlock;
  alignas(32) float bias[PackedWeights::kBlock] = {};
  if (args.bias)
    for (int64_t c = 0; c < PackedWeights::kBlock && n0 + c < pw.n; ++c) bias[c] = args.bias[n0 + c];
  for (int r = 0; r < R; ++r) {
    alignas(32) float out[PackedWeights::kBlock];
    for (int h = 0; h < 2; ++h)
      _mm256_store_ps(out + 8 * h, _mm256_fmadd_ps(_mm256_set1_ps(a.scale[m0 + r]), facc[r][h], _mm256_load_ps(bias + 8 * h)));
    store_row(out, args.y + (m0 + r) * args.ldy, n0, pw.n);
  }
}

template <bool kW4>
void rows(const GemmArguments& args, int64_t b) {
  const int64_t m = args.a->m;
  int64_t m0 = 0;
  for (; m0 + kRows <= m; m0 += kRows) tile<kRows, kW4>(args, m0, b);
  switch (m - m0) {
    case 1: tile<1, kW4>(args, m0, b); break;
    case 2: tile<2, kW4>(args, m0, b); break;
    case 3: tile<3, kW4>(args, m0, b); break;
    default: break;
  }
}

}  // namespace

void gemm_blocks_avx2(const GemmArguments& args, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) args.w->bits == 4 ? rows<true>(args, b) : rows<false>(args, b);
}

}  // namespace outq::kernels::detail
