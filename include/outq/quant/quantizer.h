// Quantizer math on torch tensors: range observation per granularity, scale/zero computation,
// real quantization to integer codes, dequantization, and fake quantization with a
// straight-through gradient. fake_quant(x) == dequantize(quantize(x)) exactly.
//
// Granularity views: every tensor is viewed as (rows, groups, items) and one (scale, zero) pair
// is kept per (row, group); tensor = (1, 1, numel); token/channel = (rows, 1, C); group g =
// (rows, C/g, g); peg K = channels permuted, then (1, K, N * C/K) after moving the channel groups
// (equal groups; uneven ones, see peg_bounds, are handled group by group).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "outq/quant/spec.h"

namespace outq {

struct QParams {
  torch::Tensor scale;  ///< float32, shape (rows, groups, 1) of the grouped view
  torch::Tensor zero;   ///< float32, same shape: integers from ranges, 0 for symmetric, any value
                        ///< for learned clips (the QAT grid beta + k * scale need not contain 0)
};

/// Range (lo, hi) per (row, group) of the grouped view of x, by spec.range (minmax, percentile
/// or MSE-optimal clipping), always including 0. `perm` is the PEG channel permutation (or
/// undefined = identity).
std::pair<torch::Tensor, torch::Tensor> observe_range(const torch::Tensor& x, const QuantSpec& spec,
                                                      const torch::Tensor& perm = {});

/// Scale and zero point from a range. A zero-width range gets scale 1 (all values quantize to
/// the zero point exactly).
QParams qparams_from_range(const torch::Tensor& lo, const torch::Tensor& hi, const QuantSpec& spec);

/// Integer codes (int32 tensor shaped like x): clamp(round(x / scale + zero), qmin, qmax).
torch::Tensor quantize(const torch::Tensor& x, const QParams& qp, const QuantSpec& spec, const torch::Tensor& perm = {});
/// scale * (codes - zero), float32 shaped like codes.
torch::Tensor dequantize(const torch::Tensor& codes, const QParams& qp, const QuantSpec& spec,
                         const torch::Tensor& perm = {});
/// dequantize(quantize(x)); gradient 1 where x lies inside the clipping range, 0 outside (STE).
torch::Tensor fake_quant(const torch::Tensor& x, const QParams& qp, const QuantSpec& spec, const torch::Tensor& perm = {});

/// Dynamic fake quantization: range from x itself (spec.range), then fake_quant.
torch::Tensor fake_quant_dynamic(const torch::Tensor& x, const QuantSpec& spec, const torch::Tensor& perm = {});

/// Column boundaries (K + 1 values, 0 .. C) of the K channel groups of per-embedding-group (PEG)
/// quantization of C channels, in permuted order: equal groups of C / K when K divides C;
/// otherwise balanced groups of whole octets (sizes differ by 8) when C is a multiple of 8 with at
/// least K octets, so the integer kernels can split their products at the boundaries; otherwise
/// balanced groups whose sizes differ by one. K < 1 or K > C is an error.
std::vector<int64_t> peg_bounds(int64_t channels, int64_t groups);

/// The range-based permutation of PEG: channel indices sorted by range hi - lo, ascending (ties
/// keep channel order), so channels of similar range share a group. lo, hi: one value per channel.
torch::Tensor range_permutation(const torch::Tensor& lo, const torch::Tensor& hi);

/// The grouped view (rows, groups, items) of x for spec, and its inverse.
torch::Tensor grouped_view(const torch::Tensor& x, const QuantSpec& spec, const torch::Tensor& perm = {});
torch::Tensor ungrouped(const torch::Tensor& g, const torch::IntArrayRef& shape, const QuantSpec& spec,
                        const torch::Tensor& perm = {});

}  // namespace outq
