// GPTQ (Frantar et al. 2022) for one linear layer, and RTN for comparison. W is (rows = output
// channels, cols = input channels); H is the input Hessian (cols x cols), H = 2/n sum x x^T.
//
// Algorithm (methods spec §5): dead columns (zero Hessian diagonal) are zeroed; optional
// act-order permutes columns by decreasing diagonal; H is dampened by damp * mean(diag H);
// U = upper Cholesky factor of H^-1; the sweep runs in float64 (H is accumulated in float32); columns are quantized left to right, each
// column's rounding error spread over the later columns through U, with lazy block updates.
// Groups: with act-order the group quantizers are fixed from the original W beforehand ("static
// groups"); without it each group's quantizer is computed when the sweep reaches the group, from
// the fully updated columns. Blocks are rounded to a multiple of the group size so that a group
// never straddles two blocks; this makes the lazy version equal the column-by-column algorithm.
#pragma once

#include <torch/torch.h>

#include <string>

#include "outq/quant/quantizer.h"
#include "outq/quant/recipe.h"

namespace outq {

struct QuantizedWeight {
  torch::Tensor dequantized;  ///< float32 (rows, cols)
  torch::Tensor codes;        ///< int32 (rows, cols)
  QParams qp;                 ///< grouped-view shape (rows, groups, 1) (or (1,1,1) per tensor)
};

/// Round-to-nearest with min-max (or the spec's range method) parameters.
QuantizedWeight rtn_quantize(const torch::Tensor& weight, const QuantSpec& spec);

/// GPTQ; `name` identifies the layer in errors (Cholesky failure says to raise gptq.damp).
QuantizedWeight gptq_quantize(const torch::Tensor& weight, const torch::Tensor& hessian, const QuantSpec& spec,
                              const GptqOptions& options, const std::string& name);

/// Accumulates sum x x^T and the token count for one input point.
struct HessianAccumulator {
  torch::Tensor sum;  ///< float32 (C, C)
  int64_t tokens = 0;
  void add(const torch::Tensor& x);  ///< x (..., C)
  torch::Tensor hessian() const;     ///< 2 / tokens * sum
};

}  // namespace outq
