// AVX2 weight-only GEMM: a 16-channel column block as two ymm halves (channels 0-7 in the first 32
// bytes of each quad / octet, 8-15 in the second); columns split in registers (byte shuffle,
// convert) and fed to float FMAs against broadcast activations. Tiles of 2 rows x 1 block, or 1 row
// x 2 blocks for a single row (4 FMA chains in flight within 16 registers). Same operation order per output
// as the reference (weight_only.cpp). Compiled with -mavx2 -mfma for this file only.
#include <immintrin.h>

#include <algorithm>

#include "../weight_only_internal.h"

namespace outq::kernels::detail {
namespace {

// Accumulators of R rows x H ymm halves (H = 2 per 16-channel block).
template <int R, int H>
struct Tile {
  __m256 d[R][H];
};

// Byte `Byte` of every 32-bit lane, zero-extended (vpshufb works within 128-bit lanes: dword i
// starts at byte 4 i; an index with the high bit set zeroes the byte).
template <int Byte>
inline __m256i byte_of_lanes(__m256i v) {
  constexpr int b0 = static_cast<int>(0x80808000u | Byte), b1 = b0 + 4, b2 = b0 + 8, b3 = b0 + 12;
  return _mm256_shuffle_epi8(v, _mm256_set_epi32(b3, b2, b1, b0, b3, b2, b1, b0));
}

template <int Byte, int R, int H>
inline void step(const __m256i (&v)[H], const float* const* x, int64_t k, Tile<R, H>& t) {
  __m256 col[H];
  for (int h = 0; h < H; ++h) col[h] = _mm256_cvtepi32_ps(byte_of_lanes<Byte>(v[h]));
  for (int r = 0; r < R; ++r) {
    const __m256 xv = _mm256_broadcast_ss(x[r] + k);
    for (int h = 0; h < H; ++h) t.d[r][h] = _mm256_fmadd_ps(xv, col[h], t.d[r][h]);
  }
}

// Columns [k, k + n) of the last, partial quad / octet, one at a time with a variable shift.
template <int R, int H>
inline void partial(int bits, const __m256i (&v)[H], const float* const* x, int64_t k, int64_t n, Tile<R, H>& t) {
  static constexpr int kShift8[3] = {0, 8, 16};
  static constexpr int kShift4[7] = {0, 8, 16, 24, 4, 12, 20};
  const __m256i mask = _mm256_set1_epi32(bits == 8 ? 0xFF : 0xF);
  for (int c = 0; c < n; ++c) {
    const __m128i s = _mm_cvtsi32_si128(bits == 8 ? kShift8[c] : kShift4[c]);
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x[r] + k + c);
      for (int h = 0; h < H; ++h)
        t.d[r][h] = _mm256_fmadd_ps(xv, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(v[h], s), mask)), t.d[r][h]);
    }
  }
}

// D over columns [k0, k1) for R rows; `halves` point at each half's bytes in its block.
template <int R, int H>
inline void group_dot(int bits, const uint8_t* const* halves, const float* const* x, int64_t k0, int64_t k1,
                      Tile<R, H>& t) {
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < H; ++h) t.d[r][h] = _mm256_setzero_ps();
  const int64_t width = bits == 8 ? 4 : 8;
  __m256i v[H];
  int64_t k = k0;
  for (; k + width <= k1; k += width) {
    for (int h = 0; h < H; ++h) v[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(halves[h] + (k / width) * 64));
    if (bits == 8) {
      step<0>(v, x, k, t);
      step<1>(v, x, k + 1, t);
      step<2>(v, x, k + 2, t);
      step<3>(v, x, k + 3, t);
    } else {
      const __m256i nibbles = _mm256_set1_epi8(0x0F);
      __m256i lo[H], hi[H];
      for (int h = 0; h < H; ++h) {
        lo[h] = _mm256_and_si256(v[h], nibbles);
        hi[h] = _mm256_and_si256(_mm256_srli_epi32(v[h], 4), nibbles);
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
    for (int h = 0; h < H; ++h) v[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(halves[h] + (k / width) * 64));
    partial<R, H>(bits, v, x, k, k1 - k, t);
  }
}

// Rows [r0, r0 + R) of blocks [b, b + H / 2).
template <int R, int H>
void tile(const WeightOnlyArguments& a, const float* xsum, int64_t b, int64_t r0) {
  const PackedWeights& w = *a.w;
  const int64_t groups = w.groups();
  const uint8_t* halves[H];
  for (int h = 0; h < H; ++h) halves[h] = w.data.data() + (b + h / 2) * w.block_bytes() + 32 * (h % 2);
  const float* x[R];
  for (int r = 0; r < R; ++r) x[r] = a.x + (r0 + r) * a.ldx;
  __m256 out[R][H];
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < H; ++h) out[r][h] = _mm256_setzero_ps();
  Tile<R, H> t;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t k0 = g * w.group_size, k1 = std::min(w.k, k0 + w.group_size);
    group_dot<R, H>(w.bits, halves, x, k0, k1, t);
    for (int h = 0; h < H; ++h) {
      const int64_t i = w.at((b + h / 2) * PackedWeights::kBlock + 8 * (h % 2), g);
      const __m256 neg_zw = _mm256_sub_ps(
          _mm256_setzero_ps(), _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.zero.data() + i))));
      const __m256 sw = _mm256_loadu_ps(w.scale.data() + i);
      for (int r = 0; r < R; ++r) {
        const __m256 d = _mm256_fmadd_ps(neg_zw, _mm256_set1_ps(xsum[(r0 + r) * groups + g]), t.d[r][h]);
        out[r][h] = _mm256_fmadd_ps(sw, d, out[r][h]);
      }
    }
  }
  for (int j = 0; j < H / 2; ++j) {
    const int64_t c0 = (b + j) * PackedWeights::kBlock;
    const int64_t count = std::min<int64_t>(PackedWeights::kBlock, w.n - c0);
    for (int r = 0; r < R; ++r) {
      alignas(32) float values[PackedWeights::kBlock];
      _mm256_store_ps(values, out[r][2 * j]);
      _mm256_store_ps(values + 8, out[r][2 * j + 1]);
      float* y = a.y + (r0 + r) * a.ldy + c0;
      for (int64_t c = 0; c < count; ++c) y[c] = values[c] + (a.bias ? a.bias[c0 + c] : 0.0f);
    }
  }
}

}  // namespace

void weight_only_blocks_avx2(const WeightOnlyArguments& a, const float* xsum, int64_t b0, int64_t b1) {
  int64_t b = b0;
  if (a.m == 1)  // GEMV: 2 blocks at a time (4 chains; more would spill the 16 ymm registers)
    for (; b + 2 <= b1; b += 2) tile<1, 4>(a, xsum, b, 0);
  for (; b < b1; ++b) {
    int64_t r = 0;
    for (; r + 2 <= a.m; r += 2) tile<2, 2>(a, xsum, b, r);
    if (r < a.m) tile<1, 2>(a, xsum, b, r);
  }
}

}  // namespace outq::kernels::detail
