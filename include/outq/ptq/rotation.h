// Rotations as exact weight edits (QuaRot / SpinQuant, spec: research/rotation.md): RMSNorm
// weights fused into the linears that read the norm, then an orthogonal R1 on the residual stream
// (embedding, every reader and writer of the residual, the LM head), an orthogonal R2 per head on
// value -> output, and the offline half of R4 (the down projection's inputs rotated by a Hadamard
// matrix M that the model applies online, see model/online_hadamard.h). Each edit leaves the
// model's function unchanged in real arithmetic. All edits happen on float64 copies, and the
// model's weights are written once at the end (WeightEdit::commit).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "outq/model/llama.h"

namespace outq {

enum class RotationKind { kNone, kHadamard, kOrthogonal };
/// "none", "hadamard", "orthogonal"; `where` prefixes the error listing them.
RotationKind rotation_kind_parse(const std::string& name, const std::string& where);
const char* rotation_kind_name(RotationKind kind);

/// A seeded random orthogonal (n, n) float64 matrix: kHadamard = diag(random signs) * M (M from
/// kernels::hadamard_plan; an error naming `what` and n when n has no construction), kOrthogonal
/// = Q of the QR decomposition of a Gaussian matrix with the signs of diag(R) folded in.
torch::Tensor random_rotation(RotationKind kind, int64_t n, uint64_t seed, const std::string& what);

/// Float64 copies of a model's parameters, edited together and written back once. The model's
/// parameter set must not change while it lives (untie the head first).
class WeightEdit {
 public:
  explicit WeightEdit(Llama& model);
  /// The float64 copy of parameter `name` ("model.layers.0.mlp.down_proj.weight").
  torch::Tensor& operator[](const std::string& name);
  /// Whether the model has parameter `name` (a bias, say).
  bool has(const std::string& name) const { return params_.find(name) != nullptr; }
  /// Casts every copy to its parameter's dtype and writes it into the model.
  void commit();

 private:
  torch::OrderedDict<std::string, torch::Tensor> params_;  ///< the model's (shared storage)
  std::map<std::string, torch::Tensor> copies_;
};

/// Every RMSNorm weight folded into the columns of the linears reading that norm (q/k/v, gate/up,
/// the LM head), the norm weights set to 1. The model must have an untied head.
void fuse_norms(WeightEdit& w, const ModelConfig& c);
/// Residual stream h -> h Q: embedding E Q, readers (q, k, v, gate, up, LM head) W Q, writers
/// (o_proj, down_proj) Q^T W. Needs fused norms (unit-weight RMSNorm commutes with Q).
void rotate_residual(WeightEdit& w, const ModelConfig& c, const torch::Tensor& q);
/// Per layer l, every value head v -> v R2[l] (v_proj rows R2^T W per head) and the output
/// projection's input columns of every query head W (I (x) R2[l]).
void rotate_heads(WeightEdit& w, const ModelConfig& c, const std::vector<torch::Tensor>& r2);
/// down_proj W -> W M^T, for a model that applies x -> M x to the down-projection input online.
void fold_down_input_hadamard(WeightEdit& w, const ModelConfig& c, const torch::Tensor& m);

}  // namespace outq
