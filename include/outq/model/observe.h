// Named observation points: every linear layer's input and output, the residual stream after
// attention and after the MLP, and the attention scores and probabilities. The model passes each such tensor through observe(); attached
// observers may record it (statistics, calibration, GPTQ Hessians) or replace it (fake
// quantization, clamping). With no observer attached, observe() is one branch and returns x.
//
// Point names: "<module>.input" / "<module>.output" for linear modules named as in Hugging Face
// ("model.layers.3.mlp.down_proj.input"), "model.layers.<N>.residual_attn" / ".residual_mlp" for
// the residual stream, "model.layers.<N>.self_attn.scores" / ".probs" for attention (scores
// scaled by 1/sqrt(head_dim), before the causal mask; probabilities after the softmax).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "outq/model/block_schema.h"

namespace outq {

enum class PointKind { kLinearInput, kLinearOutput, kResidual, kAttention };

struct ObservationPoint {
  int index = 0;        ///< position in Llama::points(): observers may key tables by it
  std::string name;     ///< full point name (see above)
  std::string module;   ///< "model.layers.3.mlp.down_proj" (the residual's block for kResidual)
  PointKind kind = PointKind::kLinearInput;
  int layer = -1;       ///< decoder block index
  int slot = -1;        ///< index in block_schema().slots of the input a linear reads (-1 for residuals)
};

/// Role of the linear module a point belongs to (kNone for residual points).
LinearRole linear_role(const ObservationPoint& point);
/// Whether `point` is the input of its slot's first linear: one point per shared input (q/k/v
/// read one, gate/up another), where per-input statistics are gathered.
bool is_slot_input(const ObservationPoint& point);

class Observer {
 public:
  virtual ~Observer() = default;
  /// Sees (and may replace) the tensor at `point`; x is (B, T, C) for every point but the attention
  /// ones, which are (B, H, T, S) (S keys, cached ones included).
  virtual torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) = 0;
};

/// The observers attached to a model, applied in attachment order.
class ObserverList {
 public:
  void attach(std::shared_ptr<Observer> observer) { observers_.push_back(std::move(observer)); }
  /// Attaches ahead of the others, so it sees each point's tensor before any of them replaces it.
  void attach_first(std::shared_ptr<Observer> observer) { observers_.insert(observers_.begin(), std::move(observer)); }
  void detach(const Observer* observer);
  void clear() { observers_.clear(); }
  bool empty() const { return observers_.empty(); }

  torch::Tensor operator()(const ObservationPoint& point, torch::Tensor x) const {
    for (const auto& o : observers_) x = o->observe(point, x);
    return x;
  }

 private:
  std::vector<std::shared_ptr<Observer>> observers_;
};

}  // namespace outq
