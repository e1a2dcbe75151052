// AVX-512 weight-only GEMM: one 16-channel column block per zmm; each 64-byte quad (int8) or octet
// (int4) of the packed panel is split into its columns in registers (shift, mask, convert) and fed
// to float FMAs against broadcast activations, up to 4 rows at once so a decoded column serves
// several rows. Same operation order as the reference (weight_only.cpp). Compiled with AVX-512
// flags for this file only; never called unless CPUID says so.
#include <immintrin.h>

#include <algorithm>

#include "../weight_only_internal.h"

namespace outq::kernels::detail {
namespace {

constexpr int kMaxRows = 4;

template <int R>
inline void fma_column(__m512 col, const float* const* x, int64_t k, __m512 (&d)[R]) {
  for (int r = 0; r < R; ++r) d[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r][k]), col, d[r]);
}

template <int Shift, int Mask>
inline __m512 column(__m512i v) {
  return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, Shift), _mm512_set1_epi32(Mask)));
}

// D for R rows over columns [k0, k1) of one block (k0 a multiple of 8).
template <int R>
inline void group_dot(const PackedWeights& w, const uint8_t* block, const float* const* x, int64_t k0, int64_t k1,
                      __m512 (&d)[R]) {
  for (int r = 0; r < R; ++r) d[r] = _mm512_setzero_ps();
  if (w.bits == 8) {
    int64_t k = k0;
    for (; k + 4 <= k1; k += 4) {
      const __m512i v = _mm512_loadu_si512(block + (k / 4) * 64);
      fma_column<R>(column<0, 0xFF>(v), x, k, d);
      fma_column<R>(column<8, 0xFF>(v), x, k + 1, d);
      fma_column<R>(column<16, 0xFF>(v), x, k + 2, d);
      fma_column<R>(column<24, 0xFF>(v), x, k + 3, d);
    }
    if (k < k1) {
      const __m512i v = _mm512_loadu_si512(block + (k / 4) * 64);
      const __m512 cols[3] = {column<0, 0xFF>(v), column<8, 0xFF>(v), column<16, 0xFF>(v)};
      for (int j = 0; k + j < k1; ++j) fma_column<R>(cols[j], x, k + j, d);
    }
    return;
  }
  int64_t k = k0;
  for (; k + 8 <= k1; k += 8) {
    const __m512i v = _mm512_loadu_si512(block + (k / 8) * 64);
    fma_column<R>(column<0, 0xF>(v), x, k, d);
    fma_column<R>(column<8, 0xF>(v), x, k + 1, d);
    fma_column<R>(column<16, 0xF>(v), x, k + 2, d);
    fma_column<R>(column<24, 0xF>(v), x, k + 3, d);
    fma_column<R>(column<4, 0xF>(v), x, k + 4, d);
    fma_column<R>(column<12, 0xF>(v), x, k + 5, d);
    fma_column<R>(column<20, 0xF>(v), x, k + 6, d);
    fma_column<R>(column<28, 0xF>(v), x, k + 7, d);
  }
  if (k < k1) {
    const __m512i v = _mm512_loadu_si512(block + (k / 8) * 64);
    const __m512 cols[7] = {column<0, 0xF>(v),  column<8, 0xF>(v),  column<16, 0xF>(v), column<24, 0xF>(v),
                            column<4, 0xF>(v), column<12, 0xF>(v), column<20, 0xF>(v)};
    for (int j = 0; k + j < k1; ++j) fma_column<R>(cols[j], x, k + j, d);
  }
}

template <int R>
void rows_of_block(const WeightOnlyArguments& a, const float* xsum, int64_t b, int64_t r0) {
  const PackedWeights& w = *a.w;
  const uint8_t* block = w.data.data() + b * w.block_bytes();
  const int64_t groups = w.groups(), c0 = b * PackedWeights::kBlock;
  const float* x[R];
  for (int r = 0; r < R; ++r) x[r] = a.x + (r0 + r) * a.ldx;
  __m512 out[R], d[R];
  for (int r = 0; r < R; ++r) out[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t k0 = g * w.group_size, k1 = std::min(w.k, k0 + w.group_size);
    group_dot<R>(w, block, x, k0, k1, d);
    const __m512 zw = _mm512_cvtepi32_ps(_mm512_loadu_si512(w.zero.data() + w.at(c0, g)));
    const __m512 sw = _mm512_loadu_ps(w.scale.data() + w.at(c0, g));
    const __m512 neg_zw = _mm512_sub_ps(_mm512_setzero_ps(), zw);
    for (int r = 0; r < R; ++r) {
      const __m512 t = _mm512_fmadd_ps(neg_zw, _mm512_set1_ps(xsum[(r0 + r) * groups + g]), d[r]);
      out[r] = _mm512_fmadd_ps(sw, t, out[r]);
    }
  }
  const int64_t count = std::min<int64_t>(PackedWeights::kBlock, w.n - c0);
  const __mmask16 mask = static_cast<__mmask16>((1u << count) - 1u);
  const __m512 bias = a.bias ? _mm512_maskz_loadu_ps(mask, a.bias + c0) : _mm512_setzero_ps();
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(a.y + (r0 + r) * a.ldy + c0, mask, _mm512_add_ps(out[r], bias));
}

}  // namespace

void weight_only_blocks_avx512(const WeightOnlyArguments& a, const float* xsum, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    int64_t r = 0;
    for (; r + kMaxRows <= a.m; r += kMaxRows) rows_of_block<kMaxRows>(a, xsum, b, r);
    switch (a.m - r) {
      case 3: rows_of_block<3>(a, xsum, b, r); break;
      case 2: rows_of_block<2>(a, xsum, b, r); break;
      case 1: rows_of_block<1>(a, xsum, b, r); break;
      default: break;
    }
  }
}

}  // namespace outq::kernels::detail
