// Weight-only GEMM / GEMV (W8A16, W4A16): float32 activations times int8 / int4 weights packed as
// for the integer kernels (gemm.h), dequantized on the fly inside the product, so the weights
// move through memory at 1 or 1/2 byte per value. Per output
//   y[m, n] = sum_g sw[n, g] * (D - zw[n, g] * X) + bias[n]
// with D = sum over group g of x[m, k] * w'[n, k] (float FMAs in increasing k) and X the group sum
// of x. Every implementation performs the same float operations in the same order (the lanes are
// output channels), so all ISAs agree bit for bit. Used for the linears whose activations stay in
// float (QFeM's modules, W8A16 / W4A16 recipes).
#pragma once

#include <cstdint>
#include <string>

#include "outq/kernels/gemm.h"
#include "outq/kernels/isa.h"

namespace outq::kernels {

struct WeightOnlyArguments {
  const float* x = nullptr;      ///< m x k, row stride ldx
  int64_t m = 0, ldx = 0;
  const PackedWeights* w = nullptr;
  const float* bias = nullptr;   ///< n values or null
  float* y = nullptr;            ///< m x n, row stride ldy
  int64_t ldy = 0;
};

/// Empty when the kernels can run these arguments, else what is wrong and what was expected.
std::string can_implement(const WeightOnlyArguments& args);

/// y = x dequant(w)^T + bias on the given ISA (default: the active one; AMX runs the AVX-512
/// path), over all threads of the OpenMP team. Throws outq::Error when can_implement fails.
void gemm_weight_only(const WeightOnlyArguments& args, Isa isa = isa_active());

}  // namespace outq::kernels
