// Shared by the weight-only implementations: the per-ISA entry points and the group sums of x.
#pragma once

#include <cstdint>

#include "outq/kernels/weight_only.h"

namespace outq::kernels::detail {

/// Column blocks [b0, b1) of y for all rows; `xsum` holds the group sums of x, (m, groups).
void weight_only_blocks_ref(const WeightOnlyArguments& args, const float* xsum, int64_t b0, int64_t b1);
void weight_only_blocks_avx2(const WeightOnlyArguments& args, const float* xsum, int64_t b0, int64_t b1);
void weight_only_blocks_avx512(const WeightOnlyArguments& args, const float* xsum, int64_t b0, int64_t b1);

/// The code of channel `lane` of a block at input column `k` (unsigned w').
inline int32_t packed_code(const uint8_t* block, int bits, int64_t lane, int64_t k) {
  if (bits == 8) return block[(k / 4) * 64 + lane * 4 + k % 4];
  const uint8_t byte = block[(k / 8) * 64 + lane * 4 + k % 4];
  return k % 8 < 4 ? byte & 0x0F : byte >> 4;
}

}  // namespace outq::kernels::detail
