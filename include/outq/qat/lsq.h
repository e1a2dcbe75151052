// LSQ / LSQ+ fake quantization with a learned step and offset (methods spec §4.8), evaluated as the
// static quantizer of recipes evaluates it, so that a trained model's grid exports exactly:
//   z = round(offset),  q = clamp(round(x / step + z), qmin, qmax),  x^ = (q - z) * step
// (round half to even; the division and the addition in float32). Straight-through backward, by
// where round(x / step + z) falls:
//   inside [qmin, qmax]:  dx^/dx = 1,  dx^/dstep = (q - z) - x/step,  dx^/doffset = 0
//   above qmax:           dx^/dx = 0,  dx^/dstep = qmax - z,          dx^/doffset = -step
//   below qmin:           dx^/dx = 0,  dx^/dstep = qmin - z,          dx^/doffset = -step
// Step and offset gradients are summed over the elements each step covers (in float64) and
// multiplied by `grad_scale` (LSQ's 1 / sqrt(numel * qmax), from lsq_grad_scale, or 1 for none).
// Built from LibTorch tensor operations: any device.
#pragma once

#include <torch/torch.h>

namespace outq {

/// Activations: asymmetric codes 0..2^bits - 1; x (any shape, float32); scalar step (> 0) and
/// offset tensors (float32); bits 2..8.
torch::Tensor lsq_quant(const torch::Tensor& x, const torch::Tensor& step, const torch::Tensor& offset, int bits,
                        double grad_scale = 1.0);

/// Weights: symmetric codes -2^(bits-1)..2^(bits-1) - 1 with zero point 0 (the grid of a
/// symmetric weight spec); `step` (all > 0) broadcasts against x, e.g. (rows, groups, 1) steps over
/// the grouped view (rows, groups, group_size) of a weight matrix. Step gradients are summed over
/// the elements each step scales.
torch::Tensor lsq_quant_symmetric(const torch::Tensor& x, const torch::Tensor& step, int bits, double grad_scale = 1.0);

/// LSQ's gradient scale for a step covering `numel` elements with positive code range `qmax`:
/// 1 / sqrt(numel * qmax).
double lsq_grad_scale(int64_t numel, int64_t qmax);

}  // namespace outq
