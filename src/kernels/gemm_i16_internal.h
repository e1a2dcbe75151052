// Shared by the int16-activation GEMM paths: the per-ISA entry points and the one epilogue.
#pragma once

#include <cstdint>

#include "outq/kernels/gemm_i16.h"

namespace outq::kernels::detail {

/// Column blocks [b0, b1) of y for all rows.
void gemm_i16_blocks_ref(const Activations16& a, const PackedWeights16& w, const float* bias, float* y, int64_t ldy,
                         int64_t b0, int64_t b1);
void gemm_i16_blocks_avx2(const Activations16& a, const PackedWeights16& w, const float* bias, float* y, int64_t ldy,
                          int64_t b0, int64_t b1);

/// y = (float)(sx sw (D - za Wc)) + bias, the product in double (see gemm_i16.h).
inline float epilogue16(int64_t d, float sx, float za, float sw, int64_t wc, float bias) {
  const double t = static_cast<double>(d) - static_cast<double>(za) * static_cast<double>(wc);
  return static_cast<float>(static_cast<double>(sx) * static_cast<double>(sw) * t) + bias;
}

/// Writes the columns of block b that exist (n0 = 8 b).
inline void store16(const float* tile, float* y, int64_t n0, int64_t n) {
  for (int64_t c = 0; c < PackedWeights16::kBlock && n0 + c < n; ++c) y[n0 + c] = tile[c];
}

}  // namespace outq::kernels::detail
