// A Hadamard transform on the last dimension of a tensor, as a model applies it online (rotation's
// R4 on the down-projection input): float32 without autograd through the kernels' fast transform,
// float64 or with autograd as a dense product with the same matrix M (kernels/hadamard.h).
#pragma once

#include <torch/torch.h>

#include <mutex>
#include <string>

#include "outq/kernels/hadamard.h"

namespace outq {

class OnlineHadamard {
 public:
  /// Length n; `what` names the tensor in the error when n has no Hadamard construction.
  OnlineHadamard(int64_t n, const std::string& what);
  const kernels::HadamardPlan& plan() const { return plan_; }
  int64_t size() const { return plan_.n; }
  /// x M^T over the last dimension (each row x becomes M x), same dtype as x.
  torch::Tensor forward(const torch::Tensor& x) const;
  /// M as a dense (n, n) float64 matrix: kron(H_k, H_m) / sqrt(n), built on first use (8 n^2
  /// bytes: 1.6 GB for n = 14336, which the float32 path never needs).
  const torch::Tensor& matrix() const;

 private:
  kernels::HadamardPlan plan_;
  mutable std::once_flag matrix_once_;
  mutable torch::Tensor matrix_;  ///< float64
};

/// The dense float64 matrix of a plan (independent of the fast transform: built entry by entry).
torch::Tensor hadamard_matrix(const kernels::HadamardPlan& plan);

}  // namespace outq
