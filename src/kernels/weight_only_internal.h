// Shared by the weight-only implementations: the per-ISA entry points (the packed layout and its
// scalar code reader are gemm_internal.h's).
#pragma once

#include <cstdint>

#include "gemm_internal.h"
#include "outq/kernels/weight_only.h"

namespace outq::kernels::detail {

/// Column blocks [b0, b1) of y for all rows; `xsum` holds the group sums of x, (m, groups).
void weight_only_blocks_ref(const WeightOnlyArguments& args, const float* xsum, int64_t b0, int64_t b1);
void weight_only_blocks_avx2(const WeightOnlyArguments& args, const float* xsum, int64_t b0, int64_t b1);
void weight_only_blocks_avx512(const WeightOnlyArguments& args, const float* xsum, int64_t b0, int64_t b1);

}  // namespace outq::kernels::detail
