// LSQ / LSQ+ fake quantization with a learned step and offset (methods spec §4.8): asymmetric,
// per tensor, b bits, N = 2^b - 1 levels above zero,
//   z = round(offset),  q = clamp(round(x / step) + z, 0, N),  x^ = (q - z) * step
// (round half to even). Straight-through backward, by where round(x / step) + z falls:
//   inside [0, N]:  dx^/dx = 1,  dx^/dstep = round(x/step) - x/step,  dx^/doffset = 0
//   above N:        dx^/dx = 0,  dx^/dstep = N - z,                   dx^/doffset = -step
//   below 0:        dx^/dx = 0,  dx^/dstep = -z,                      dx^/doffset = -step
// The step and offset gradients are multiplied by `grad_scale` (LSQ's 1 / sqrt(numel * N), from
// lsq_grad_scale, or 1 for none). Built from LibTorch tensor operations: any device.
#pragma once

#include <torch/torch.h>

namespace outq {

/// x (any shape, float32); step and offset scalar tensors (float32, step > 0); bits 2..8.
torch::Tensor lsq_quant(const torch::Tensor& x, const torch::Tensor& step, const torch::Tensor& offset, int bits,
                        double grad_scale = 1.0);

/// LSQ's gradient scale for a tensor of `numel` elements at `bits`: 1 / sqrt(numel * (2^bits - 1)).
double lsq_grad_scale(int64_t numel, int bits);

/// Initial step and offset from a tensor's range [lo, hi] (min-max calibration), so that
/// lsq_quant starts as the min-max asymmetric quantizer: step = (hi - lo) / N, offset = -lo / step.
std::pair<double, double> lsq_init_minmax(double lo, double hi, int bits);

}  // namespace outq
