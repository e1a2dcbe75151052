// Quantization-aware training primitives (Nrusimha et al. 2024; methods spec §2.3-2.4):
//
// learned_clip_quant: asymmetric b-bit fake quantization with learned clip values alpha > beta,
//   x^ = beta + round_half_even((clamp(x, beta, alpha) - beta) / D) * D,  D = (alpha - beta) / (2^b - 1)
//   (the zero point beta / D is not rounded). Straight-through backward:
//   dL/dx     = g inside (beta, alpha), 0 outside
//   dL/dalpha = sum_{x >= alpha} g + sum_{inside} g (round(u) - u) / N
//   dL/dbeta  = sum_{x <= beta} g + sum_{inside} g (u - round(u)) / N,   u = (x - beta) / D
//   Forward is one pass over x; backward one pass (gradient for x and both sums together),
//   float32 tensors, sums accumulated in float64.
//
// kurtosis_penalty: sum over tokens of Kurt(y_t) = m4 / (m2^2 + eps) of each token's vector y_t
//   (last dimension), with an analytic backward: one pass per token forward (raw moments; a
//   second pass about the mean only when the mean is large against the RMS), one pass backward.
//   Column slices (the q/k/v outputs of one GEMM) are read in place.
//
// Tensors on other devices (CUDA) take the *_tensor_ops versions: the same formulas as LibTorch
// tensor operations (a few passes each), tested against the fused CPU versions.
#pragma once

#include <torch/torch.h>

namespace outq {

/// x (any shape, float32); alpha, beta scalar tensors (float32, alpha > beta); bits 2..8.
torch::Tensor learned_clip_quant(const torch::Tensor& x, const torch::Tensor& alpha, const torch::Tensor& beta,
                                 int bits);

/// Sum over all tokens (all leading dimensions) of the kurtosis of y's last dimension.
torch::Tensor kurtosis_penalty(const torch::Tensor& y, double eps = 1e-6);

/// The same functions from LibTorch tensor operations, for any device (used off the CPU).
torch::Tensor learned_clip_quant_tensor_ops(const torch::Tensor& x, const torch::Tensor& alpha, const torch::Tensor& beta,
                                            int bits);
torch::Tensor kurtosis_penalty_tensor_ops(const torch::Tensor& y, double eps = 1e-6);

}  // namespace outq
