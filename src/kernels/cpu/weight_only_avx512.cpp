// AVX-512 weight-only GEMM: one 16-channel column block per zmm; each 64-byte quad (int8) or octet
// (int4) of the packed panel is split into its columns in registers (byte shuffle, convert) and fed
// to float FMAs against broadcast activations. Tiles of up to 4 rows x 2 blocks (a decoded column
// serves several rows), or 8 blocks for fewer than 4 rows, so that enough FMA chains are in flight.
// Same operation order per output as the reference (weight_only.cpp). Compiled with AVX-512 flags
// for this file only; never called unless CPUID says so.
#include <immintrin.h>

#include <algorithm>

#include "../weight_only_internal.h"

namespace outq::kernels::detail {
namespace {

// R rows x NB column blocks per tile: R * NB independent FMA chains (8 keep both FMA ports busy
// through their 4-cycle latency; one row alone would leave them idle).
template <int R, int NB>
struct Tile {
  __m512 d[R][NB];
};

template <int R, int NB>
inline void fma_column(const __m512 (&col)[NB], const float* const* x, int64_t k, Tile<R, NB>& t) {
  for (int r = 0; r < R; ++r) {
    const __m512 xv = _mm512_set1_ps(x[r][k]);
    for (int j = 0; j < NB; ++j) t.d[r][j] = _mm512_fmadd_ps(xv, col[j], t.d[r][j]);
  }
}

// Byte `Byte` of every 32-bit lane, zero-extended (one shuffle instead of a shift and a mask).
// (vpshufb indexes bytes within each 128-bit lane: dword i of a lane starts at byte 4 i; an index
// with the high bit set zeroes the byte.)
template <int Byte>
inline __m512i byte_of_lanes(__m512i v) {
  constexpr int b0 = static_cast<int>(0x80808000u | Byte), b1 = b0 + 4, b2 = b0 + 8, b3 = b0 + 12;
  const __m512i index = _mm512_set_epi32(b3, b2, b1, b0, b3, b2, b1, b0, b3, b2, b1, b0, b3, b2, b1, b0);
  return _mm512_shuffle_epi8(v, index);
}

template <int Byte, int R, int NB>
inline void step(const __m512i (&v)[NB], const float* const* x, int64_t k, Tile<R, NB>& t) {
  __m512 col[NB];
  for (int j = 0; j < NB; ++j) col[j] = _mm512_cvtepi32_ps(byte_of_lanes<Byte>(v[j]));
  fma_column<R, NB>(col, x, k, t);
}

// The last, partial quad / octet: columns one at a time with a variable shift.
template <int R, int NB>
inline void partial(int bits, const __m512i (&v)[NB], const float* const* x, int64_t k, int64_t n, Tile<R, NB>& t) {
  static constexpr int kShift8[3] = {0, 8, 16};
  static constexpr int kShift4[7] = {0, 8, 16, 24, 4, 12, 20};
  const __m512i mask = _mm512_set1_epi32(bits == 8 ? 0xFF : 0xF);
  for (int c = 0; c < n; ++c) {
    const __m128i s = _mm_cvtsi32_si128(bits == 8 ? kShift8[c] : kShift4[c]);
    __m512 col[NB];
    for (int j = 0; j < NB; ++j) col[j] = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srl_epi32(v[j], s), mask));
    fma_column<R, NB>(col, x, k + c, t);
  }
}

// D for R rows and NB blocks over columns [k0, k1) (k0 a multiple of 8).
template <int R, int NB>
inline void group_dot(const PackedWeights& w, const uint8_t* const* blocks, const float* const* x, int64_t k0, int64_t k1,
                      Tile<R, NB>& t) {
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) t.d[r][j] = _mm512_setzero_ps();
  const int64_t width = w.bits == 8 ? 4 : 8;
  __m512i v[NB];
  int64_t k = k0;
  for (; k + width <= k1; k += width) {
    for (int j = 0; j < NB; ++j) v[j] = _mm512_loadu_si512(blocks[j] + (k / width) * 64);
    if (w.bits == 8) {
      step<0>(v, x, k, t);
      step<1>(v, x, k + 1, t);
      step<2>(v, x, k + 2, t);
      step<3>(v, x, k + 3, t);
    } else {
      // Low nibbles hold the octet's columns 0..3, high nibbles 4..7.
      const __m512i nibbles = _mm512_set1_epi8(0x0F);
      __m512i lo[NB], hi[NB];
      for (int j = 0; j < NB; ++j) {
        lo[j] = _mm512_and_si512(v[j], nibbles);
        hi[j] = _mm512_and_si512(_mm512_srli_epi32(v[j], 4), nibbles);
      }
      step<0>(lo, x, k, t);
      step<1>(lo, x, k + 1, t);
      step<2>(lo, x, k + 2, t);
      step<3>(lo, x, k + 3, t);
      step<0>(hi, x, k + 4, t);
      step<1>(hi, x, k + 5, t);
      step<2>(hi, x, k + 6, t);
      step<3>(hi, x, k + 7, t);
    }
  }
  if (k < k1) {
    for (int j = 0; j < NB; ++j) v[j] = _mm512_loadu_si512(blocks[j] + (k / width) * 64);
    partial<R, NB>(w.bits, v, x, k, k1 - k, t);
  }
}

// Rows [r0, r0 + R) of blocks [b, b + NB).
template <int R, int NB>
void tile(const WeightOnlyArguments& a, const float* xsum, int64_t b, int64_t r0) {
  const PackedWeights& w = *a.w;
  const int64_t groups = w.groups();
  const uint8_t* blocks[NB];
  for (int j = 0; j < NB; ++j) blocks[j] = w.data.data() + (b + j) * w.block_bytes();
  const float* x[R];
  for (int r = 0; r < R; ++r) x[r] = a.x + (r0 + r) * a.ldx;
  __m512 out[R][NB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) out[r][j] = _mm512_setzero_ps();
  Tile<R, NB> t;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t k0 = g * w.group_size, k1 = std::min(w.k, k0 + w.group_size);
    group_dot<R, NB>(w, blocks, x, k0, k1, t);
    for (int j = 0; j < NB; ++j) {
      const int64_t i = w.at((b + j) * PackedWeights::kBlock, g);
      const __m512 neg_zw = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_cvtepi32_ps(_mm512_loadu_si512(w.zero.data() + i)));
      const __m512 sw = _mm512_loadu_ps(w.scale.data() + i);
      for (int r = 0; r < R; ++r) {
        const __m512 d = _mm512_fmadd_ps(neg_zw, _mm512_set1_ps(xsum[(r0 + r) * groups + g]), t.d[r][j]);
        out[r][j] = _mm512_fmadd_ps(sw, d, out[r][j]);
      }
    }
  }
  for (int j = 0; j < NB; ++j) {
    const int64_t c0 = (b + j) * PackedWeights::kBlock;
    const int64_t count = std::min<int64_t>(PackedWeights::kBlock, w.n - c0);
    const __mmask16 mask = static_cast<__mmask16>((1u << count) - 1u);
    const __m512 bias = a.bias ? _mm512_maskz_loadu_ps(mask, a.bias + c0) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(a.y + (r0 + r) * a.ldy + c0, mask, _mm512_add_ps(out[r][j], bias));
  }
}

// Every row of blocks [b, b + NB): tiles of 4 rows, then the remainder.
template <int NB>
void blocks_all_rows(const WeightOnlyArguments& a, const float* xsum, int64_t b) {
  int64_t r = 0;
  for (; r + 4 <= a.m; r += 4) tile<4, NB>(a, xsum, b, r);
  switch (a.m - r) {
    case 3: tile<3, NB>(a, xsum, b, r); break;
    case 2: tile<2, NB>(a, xsum, b, r); break;
    case 1: tile<1, NB>(a, xsum, b, r); break;
    default: break;
  }
}

}  // namespace

void weight_only_blocks_avx512(const WeightOnlyArguments& a, const float* xsum, int64_t b0, int64_t b1) {
  int64_t b = b0;
  if (a.m < 4) {  // GEMV-like: 8 blocks at a time for enough independent chains
    for (; b + 8 <= b1; b += 8) blocks_all_rows<8>(a, xsum, b);
    for (; b + 2 <= b1; b += 2) blocks_all_rows<2>(a, xsum, b);
  } else {
    for (; b + 2 <= b1; b += 2) blocks_all_rows<2>(a, xsum, b);
  }
  for (; b < b1; ++b) blocks_all_rows<1>(a, xsum, b);
}

}  // namespace outq::kernels::detail
