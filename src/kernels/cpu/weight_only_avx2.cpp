// AVX2 weight-only GEMM: a 16-channel column block as two ymm halves (channels 0-7 in the first 32
// bytes of each quad / octet, 8-15 in the second); columns split in registers (shift, mask,
// convert) and fed to float FMAs against broadcast activations, up to 2 rows at once. Same
// operation order as the reference (weight_only.cpp). Compiled with -mavx2 -mfma for this file only.
#include <immintrin.h>

#include <algorithm>

#include "../weight_only_internal.h"

namespace outq::kernels::detail {
namespace {

constexpr int kMaxRows = 2;

template <int Shift, int Mask>
inline __m256 column(__m256i v) {
  return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, Shift), _mm256_set1_epi32(Mask)));
}

template <int R>
inline void fma_column(__m256 lo, __m256 hi, const float* const* x, int64_t k, __m256 (&d)[R][2]) {
  for (int r = 0; r < R; ++r) {
    const __m256 xv = _mm256_broadcast_ss(x[r] + k);
    d[r][0] = _mm256_fmadd_ps(xv, lo, d[r][0]);
    d[r][1] = _mm256_fmadd_ps(xv, hi, d[r][1]);
  }
}

template <int R, int Shift, int Mask>
inline void step(__m256i lo, __m256i hi, const float* const* x, int64_t k, __m256 (&d)[R][2]) {
  fma_column<R>(column<Shift, Mask>(lo), column<Shift, Mask>(hi), x, k, d);
}

// Columns [k, k + n) of the quad / octet at `p` (n < width only at the end of the input).
template <int R>
inline void partial(int bits, const uint8_t* p, const float* const* x, int64_t k, int64_t n, __m256 (&d)[R][2]) {
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
  static constexpr int kShift8[3] = {0, 8, 16};
  static constexpr int kShift4[7] = {0, 8, 16, 24, 4, 12, 20};
  const __m256i mask = _mm256_set1_epi32(bits == 8 ? 0xFF : 0xF);
  for (int j = 0; j < n; ++j) {
    const __m128i s = _mm_cvtsi32_si128(bits == 8 ? kShift8[j] : kShift4[j]);
    fma_column<R>(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(lo, s), mask)),
                  _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(hi, s), mask)), x, k + j, d);
  }
}

template <int R>
inline void group_dot(const PackedWeights& w, const uint8_t* block, const float* const* x, int64_t k0, int64_t k1,
                      __m256 (&d)[R][2]) {
  for (int r = 0; r < R; ++r) d[r][0] = d[r][1] = _mm256_setzero_ps();
  const int64_t width = w.bits == 8 ? 4 : 8;
  int64_t k = k0;
  for (; k + width <= k1; k += width) {
    const uint8_t* p = block + (k / width) * 64;
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
    if (w.bits == 8) {
      step<R, 0, 0xFF>(lo, hi, x, k, d);
      step<R, 8, 0xFF>(lo, hi, x, k + 1, d);
      step<R, 16, 0xFF>(lo, hi, x, k + 2, d);
      step<R, 24, 0xFF>(lo, hi, x, k + 3, d);
    } else {
      step<R, 0, 0xF>(lo, hi, x, k, d);
      step<R, 8, 0xF>(lo, hi, x, k + 1, d);
      step<R, 16, 0xF>(lo, hi, x, k + 2, d);
      step<R, 24, 0xF>(lo, hi, x, k + 3, d);
      step<R, 4, 0xF>(lo, hi, x, k + 4, d);
      step<R, 12, 0xF>(lo, hi, x, k + 5, d);
      step<R, 20, 0xF>(lo, hi, x, k + 6, d);
      step<R, 28, 0xF>(lo, hi, x, k + 7, d);
    }
  }
  if (k < k1) partial<R>(w.bits, block + (k / width) * 64, x, k, k1 - k, d);
}

template <int R>
void rows_of_block(const WeightOnlyArguments& a, const float* xsum, int64_t b, int64_t r0) {
  const PackedWeights& w = *a.w;
  const uint8_t* block = w.data.data() + b * w.block_bytes();
  const int64_t groups = w.groups(), c0 = b * PackedWeights::kBlock;
  const float* x[R];
  for (int r = 0; r < R; ++r) x[r] = a.x + (r0 + r) * a.ldx;
  __m256 out[R][2], d[R][2];
  for (int r = 0; r < R; ++r) out[r][0] = out[r][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t k0 = g * w.group_size, k1 = std::min(w.k, k0 + w.group_size);
    group_dot<R>(w, block, x, k0, k1, d);
    for (int h = 0; h < 2; ++h) {
      const int64_t i = w.at(c0 + 8 * h, g);
      const __m256 neg_zw = _mm256_sub_ps(
          _mm256_setzero_ps(), _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.zero.data() + i))));
      const __m256 sw = _mm256_loadu_ps(w.scale.data() + i);
      for (int r = 0; r < R; ++r) {
        const __m256 t = _mm256_fmadd_ps(neg_zw, _mm256_set1_ps(xsum[(r0 + r) * groups + g]), d[r][h]);
        out[r][h] = _mm256_fmadd_ps(sw, t, out[r][h]);
      }
    }
  }
  const int64_t count = std::min<int64_t>(PackedWeights::kBlock, w.n - c0);
  for (int r = 0; r < R; ++r) {
    alignas(32) float tile[PackedWeights::kBlock];
    _mm256_store_ps(tile, out[r][0]);
    _mm256_store_ps(tile + 8, out[r][1]);
    float* y = a.y + (r0 + r) * a.ldy + c0;
    for (int64_t j = 0; j < count; ++j) y[j] = tile[j] + (a.bias ? a.bias[c0 + j] : 0.0f);
  }
}

}  // namespace

void weight_only_blocks_avx2(const WeightOnlyArguments& a, const float* xsum, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    int64_t r = 0;
    for (; r + kMaxRows <= a.m; r += kMaxRows) rows_of_block<kMaxRows>(a, xsum, b, r);
    if (r < a.m) rows_of_block<1>(a, xsum, b, r);
  }
}

}  // namespace outq::kernels::detail
