// The 256-bit GEMM driver shared by the AVX2 and AVX-VNNI paths (include only from files compiled
// with -mavx2 -mfma): cache blocking, tiles and the group epilogue (activations packed by
// pack_tile_rows in gemm_internal.h, int4 octets split by split_octet below); the
// integer dot products come from a Kernel type (see gemm_avx2.cpp, gemm_avx_vnni.cpp):
//
//   struct Kernel {
//     static constexpr int kRows;          // rows per tile (1..kRows instantiated)
//     static constexpr Pack kPack;         // how the activation tiles are packed (see Pack)
//     static constexpr int kWeightOffset;  // dot() sums a' (w' - offset): the epilogue adds offset A
//     template <int R> static void dot(const void* a, const uint8_t* w, int64_t q0, int64_t q1,
//                                      __m256i (&acc)[R][2]);
//   };
//
// dot() returns the exact int32 sums D - offset A over quads [q0, q1) for R rows and the column block's two
// 8-channel halves. Loop order per thread (a range of column blocks): row block (its activations
// packed tile by tile, sized to stay in L2) -> column block (its weights stay in L1/L2 while every
// row tile of the block passes) -> row tile -> group. The epilogue is the float FMA sequence of
// gemm.h, so every path equals the reference bit for bit.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../gemm_internal.h"

namespace outq::kernels::detail::ymm {

constexpr int64_t kActivationBlockBytes = 256 << 10;  // packed activation rows per pass (L2 share)

// Activation tiles as pack_tile_rows lays them out: int8 codes, codes widened to int16, or per quad
// the R rows' int8 codes followed by their magnitudes (|-128| = 128 as an unsigned byte).
enum class Pack { kInt8, kInt16, kInt8Abs };
template <Pack P>
constexpr int64_t kPackBytes = P == Pack::kInt8 ? 1 : 2;  // packed bytes per activation code

// pack_tile_rows's int8 layout with each quad row's magnitudes after the tile's R quads of that
// quad index: quad q of row r at 8 q R + 4 r, its magnitudes at 8 q R + 4 R + 4 r. (A template
// flag on pack_tile_rows instead measured 17% slower on the 1-row W8A8 GEMV with the same loop
// instructions, on Zen 5: code placement; kept apart.)
inline void pack_tile_rows_abs(const QuantizedActivations& a, int64_t m_begin, int64_t m_end, int rows, int8_t* out) {
  const int64_t quads = a.k_padded / 4;
  for (int64_t t0 = m_begin; t0 < m_end; t0 += rows) {
    const int64_t R = std::min<int64_t>(rows, m_end - t0);
    const int8_t* src = a.codes.data() + t0 * a.k_padded;
    int8_t* dst = out + 2 * (t0 - m_begin) * a.k_padded;
    for (int64_t q = 0; q < quads; ++q)
      for (int64_t r = 0; r < R; ++r)
        for (int i = 0; i < 4; ++i) {
          const int8_t c = src[r * a.k_padded + 4 * q + i];
          dst[8 * q * R + 4 * r + i] = c;
          dst[8 * q * R + 4 * R + 4 * r + i] = static_cast<int8_t>(static_cast<uint8_t>(c < 0 ? -c : c));
        }
  }
}

inline __m256i broadcast_quad(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Octet o of a packed int4 column block as unsigned bytes, per 8-channel half h: lo[h] holds the
// octet's first quad (low nibbles), hi[h] its second (high nibbles).
inline void split_octet(const uint8_t* w, int64_t o, __m256i (&lo)[2], __m256i (&hi)[2]) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  for (int h = 0; h < 2; ++h) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * o + 32 * h));
    lo[h] = _mm256_and_si256(v, mask);
    hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
  }
}

// A kernel may read each column block's weights transformed once per row block (Kernel::panel,
// Kernel::kPanelScale > 0 panel bytes per packed byte; worth it for many rows, so the kernels that
// have one come in a variant without); others read the packed block itself.
template <class Kernel, class = void>
constexpr int kPanelScaleOf = 0;
template <class Kernel>
constexpr int kPanelScaleOf<Kernel, std::void_t<decltype(Kernel::kPanelScale)>> = Kernel::kPanelScale;

template <class Kernel>
const uint8_t* panel_of(const PackedWeights& pw, int64_t b, std::vector<uint8_t, CacheAligned<uint8_t>>& buf) {
  const uint8_t* block = pw.data.data() + b * pw.block_bytes();
  if constexpr (kPanelScaleOf<Kernel> > 0) {
    buf.resize(pw.block_bytes() * kPanelScaleOf<Kernel>);
    Kernel::panel(block, pw.block_bytes() / 64, buf.data());  // 64-byte units
    return buf.data();
  }
  return block;
}

// A column block's int4 octets split once into a panel for the int4 kernels: per octet the low
// nibbles of both halves, then the high ones (128 bytes); `octets` 64-byte units of the block.
inline void nibble_panel(const uint8_t* w, int64_t octets, uint8_t* out) {
  for (int64_t o = 0; o < octets; ++o) {
    __m256i lo[2], hi[2];
    split_octet(w, o, lo, hi);
    for (int h = 0; h < 2; ++h) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 128 * o + 32 * h), lo[h]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 128 * o + 64 + 32 * h), hi[h]);
    }
  }
}

template <class Kernel, int R>
void tile(const GemmArguments& args, int64_t m0, int64_t b, const uint8_t* w, const void* apack) {
  const QuantizedActivations& a = *args.a;
  const PackedWeights& pw = *args.w;
  const int64_t groups = pw.groups();
  __m256 facc[R][2];
  for (int r = 0; r < R; ++r) facc[r][0] = facc[r][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    int64_t q0, q1;
    group_quads(pw, g, &q0, &q1);
    __m256i acc[R][2];
    Kernel::template dot<R>(apack, w, q0, q1, acc);
    for (int h = 0; h < 2; ++h) {
      const int64_t i = pw.at(b * PackedWeights::kBlock + 8 * h, g);
      const __m256 sw = _mm256_loadu_ps(pw.scale.data() + i);
      const __m256i zw = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(pw.zero.data() + i)),
                                          _mm256_set1_epi32(Kernel::kWeightOffset));
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
  const bool whole = n0 + PackedWeights::kBlock <= pw.n;
  for (int r = 0; r < R; ++r) {
    alignas(32) float out[PackedWeights::kBlock];
    float* y = args.y + (m0 + r) * args.ldy;
    for (int h = 0; h < 2; ++h) {
      const __m256 v = _mm256_fmadd_ps(_mm256_set1_ps(a.scale[m0 + r]), facc[r][h], _mm256_load_ps(bias + 8 * h));
      whole ? _mm256_storeu_ps(y + n0 + 8 * h, v) : _mm256_store_ps(out + 8 * h, v);
    }
    if (!whole) store_row(out, y, n0, pw.n);
  }
}

// Rows [m_begin, m_end) of column block b; `apack` holds them packed by tiles (element size E).
template <class Kernel, int R = Kernel::kRows>
void rows(const GemmArguments& args, int64_t b, const uint8_t* w, int64_t m_begin, int64_t m_end, const char* apack) {
  constexpr int64_t E = kPackBytes<Kernel::kPack>;
  const int64_t kp = args.a->k_padded;
  int64_t m0 = m_begin;
  for (; m0 + R <= m_end; m0 += R) tile<Kernel, R>(args, m0, b, w, apack + (m0 - m_begin) * kp * E);
  if constexpr (R > 1) {
    if (m0 < m_end) rows<Kernel, R - 1>(args, b, w, m0, m_end, apack + (m0 - m_begin) * kp * E);
  }
}

template <class Kernel>
void gemm_blocks(const GemmArguments& args, int64_t b0, int64_t b1) {
  const int64_t m = args.a->m, kp = args.a->k_padded;
  constexpr int64_t E = kPackBytes<Kernel::kPack>;
  thread_local std::vector<char> apack;
  thread_local std::vector<uint8_t, CacheAligned<uint8_t>> panel;
  const int64_t row_block = std::max<int64_t>(Kernel::kRows, kActivationBlockBytes / (kp * E) / Kernel::kRows * Kernel::kRows);
  for (int64_t r0 = 0; r0 < m; r0 += row_block) {
    const int64_t r1 = std::min(m, r0 + row_block);
    apack.resize((r1 - r0) * kp * E);
    if constexpr (Kernel::kPack == Pack::kInt16)
      pack_tile_rows(*args.a, r0, r1, Kernel::kRows, reinterpret_cast<int16_t*>(apack.data()));
    else if constexpr (Kernel::kPack == Pack::kInt8Abs)
      pack_tile_rows_abs(*args.a, r0, r1, Kernel::kRows, reinterpret_cast<int8_t*>(apack.data()));
    else
      pack_tile_rows(*args.a, r0, r1, Kernel::kRows, reinterpret_cast<int8_t*>(apack.data()));
    for (int64_t b = b0; b < b1; ++b) rows<Kernel>(args, b, panel_of<Kernel>(*args.w, b, panel), r0, r1, apack.data());
  }
}

// The panels (recentred or nibble-split weights) cost a pass over the weights per call: worth it
// from this many rows on (a GEMV reading the weights through one ran at half speed).
constexpr int64_t kPanelRows = 16;

// Paneled (a kernel with a panel) from kPanelRows rows on, else Plain (the same products read from
// the packed weights).
template <class Paneled, class Plain>
void gemm_blocks_by_rows(const GemmArguments& args, int64_t b0, int64_t b1) {
  args.a->m >= kPanelRows ? gemm_blocks<Paneled>(args, b0, b1) : gemm_blocks<Plain>(args, b0, b1);
}

}  // namespace outq::kernels::detail::ymm
