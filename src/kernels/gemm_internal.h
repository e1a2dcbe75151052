// Shared by the GEMM implementations: the per-ISA entry points (each computes a range of column
// blocks for every row) and the group boundaries in units of input-column quads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "outq/kernels/gemm.h"

namespace outq::kernels::detail {

/// Column blocks [b0, b1) of y for all rows of args.a.
void gemm_blocks_ref(const GemmArguments& args, int64_t b0, int64_t b1);
void gemm_blocks_avx2(const GemmArguments& args, int64_t b0, int64_t b1);
void gemm_blocks_avx_vnni(const GemmArguments& args, int64_t b0, int64_t b1);
void gemm_blocks_avx512(const GemmArguments& args, int64_t b0, int64_t b1);
/// AMX tiles when amx_applies (>= 16 rows, groups of whole 64-column chunks), else AVX-512.
void gemm_blocks_amx(const GemmArguments& args, int64_t b0, int64_t b1);
bool amx_applies(const GemmArguments& args);
/// AMX on rows [r0, r1) (a multiple of 16 apart unless r1 = m) and every column block.
void gemm_rows_amx(const GemmArguments& args, int64_t r0, int64_t r1);

/// Quads [q0, q1) of input columns in group g (the last group runs to the padded end, whose
/// codes are zero on both sides).
inline void group_quads(const PackedWeights& w, int64_t g, int64_t* q0, int64_t* q1) {
  *q0 = w.group_begin(g) / 4;
  *q1 = g + 1 == w.groups() ? w.k_padded / 4 : w.group_end(g) / 4;
}

/// Weight code w' (unsigned) of channel `lane` of column block `b` at input column `k`, read from
/// the packed layout: the scalar definition the reference paths use.
inline int32_t packed_weight_code(const PackedWeights& w, int64_t b, int64_t lane, int64_t k) {
  const uint8_t* block = w.data.data() + b * w.block_bytes();
  if (w.bits == 8) return block[(k / 4) * 64 + lane * 4 + k % 4];
  const uint8_t byte = block[(k / 8) * 64 + lane * 4 + k % 4];
  return k % 8 < 4 ? byte & 0x0F : byte >> 4;
}

/// Ties-to-even rounding of v clamped to [lo, hi] (integers, so clamping first changes nothing):
/// adding and subtracting 1.5 * 2^23 leaves the rounding to the float addition itself, which
/// vectorizes (std::nearbyint is a library call without SSE4.1); exact for |v| < 2^22. NaN clamps to lo.
inline int32_t round_clamp(float v, int32_t lo, int32_t hi) {
  const float c = std::min(static_cast<float>(hi), std::max(static_cast<float>(lo), v));
  constexpr float kMagic = 12582912.0f;
  return static_cast<int32_t>((c + kMagic) - kMagic);
}

/// The grid of a row whose range is [lo, hi] (lo <= 0 <= hi): the static (scale, zero) of `f`, or
/// with f.dynamic the row's own min-max range on codes up to `qmax`; a zero-width range gets scale 1.
inline void grid_from_range(float lo, float hi, const ActivationFormat& f, int32_t qmax, float* scale, float* zero) {
  *scale = f.static_scale, *zero = f.static_zero;
  if (!f.dynamic) return;
  if (f.symmetric) {
    *scale = std::max(-lo, hi) / static_cast<float>(qmax);
    *zero = 0;
  } else {
    *scale = (hi - lo) / static_cast<float>(qmax);
    if (*scale > 0) *zero = std::nearbyint(-lo / *scale);
  }
  if (!(*scale > 0)) *scale = 1, *zero = 0;
}

/// The grid of one activation row (its range always includes 0). Returns false when the row holds
/// NaN or infinite values (0 * x is NaN exactly then).
inline bool row_grid(const float* row, int64_t k, const ActivationFormat& f, int32_t qmax, float* scale, float* zero) {
  float lo = 0, hi = 0, probe = 0;
  for (int64_t i = 0; i < k; ++i) lo = std::min(lo, row[i]), hi = std::max(hi, row[i]), probe += row[i] * 0.0f;
  grid_from_range(lo, hi, f, qmax, scale, zero);
  return probe == 0.0f;
}

/// Codes of x[0..n) on the grid (scale, zero): round_clamp(x / scale + zero, qmin, qmax) + shift,
/// stored as int8; returns their sum.
inline int32_t quantize_run(const float* x, int64_t n, float scale, float zero, int32_t qmin, int32_t qmax, int32_t shift,
                            int8_t* codes) {
  int32_t sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t q = round_clamp(x[i] / scale + zero, qmin, qmax) + shift;  // as outq::quantize
    codes[i] = static_cast<int8_t>(q);
    sum += q;
  }
  return sum;
}

/// The same two with AVX2 (cpu/quantize_avx2.cpp): equal results (the same IEEE operations per
/// element; min and max of finite values do not depend on the order).
bool row_grid_avx2(const float* row, int64_t k, const ActivationFormat& f, int32_t qmax, float* scale, float* zero);
int32_t quantize_run_avx2(const float* x, int64_t n, float scale, float zero, int32_t qmin, int32_t qmax, int32_t shift,
                          int8_t* codes);

/// Packs activation rows [m_begin, m_end) tile by tile (`rows` per tile, the last tile what is
/// left), quad-major: quad q of row r of a tile at 4 (q R + r) elements from the tile's start (R the
/// tile's rows), as int8 or widened to int16. The vector paths read each tile as one stream.
template <class T>
void pack_tile_rows(const QuantizedActivations& a, int64_t m_begin, int64_t m_end, int rows, T* out) {
  const int64_t quads = a.k_padded / 4;
  for (int64_t t0 = m_begin; t0 < m_end; t0 += rows) {
    const int64_t R = std::min<int64_t>(rows, m_end - t0);
    const int8_t* src = a.codes.data() + t0 * a.k_padded;
    T* dst = out + (t0 - m_begin) * a.k_padded;
    for (int64_t q = 0; q < quads; ++q)
      for (int64_t r = 0; r < R; ++r)
        for (int i = 0; i < 4; ++i) dst[4 * (q * R + r) + i] = static_cast<T>(src[r * a.k_padded + 4 * q + i]);
  }
}

/// Writes a 16-wide row segment of y (only the columns that exist).
inline void store_row(const float* tile, float* y, int64_t n0, int64_t n) {
  const int64_t count = std::min<int64_t>(PackedWeights::kBlock, n - n0);
  std::copy(tile, tile + count, y + n0);
}

}  // namespace outq::kernels::detail
