// Weight QAT: every decoder linear's weight is fake-quantized in the forward pass with learned
// symmetric steps, one per output channel or per group of qat.weight_group_size columns (LSQ with
// zero point 0, lsq.h), through the linear layer's kernel slot. The float weights stay the master
// copy; gradients reach both them and the steps (straight-through). Steps start from the weights
// at the first quantized step (min-max or MSE range, as recipes estimate it: the forward then
// equals RTN), and are exported as weight_steps.safetensors (quant/learned_weights.h).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "outq/model/llama.h"
#include "outq/qat/qat_config.h"
#include "outq/quant/learned_weights.h"

namespace outq {

class WeightQat {
 public:
  /// Attaches a fake-quantizing kernel to every decoder linear of `model` (which must have none).
  WeightQat(Llama& model, const QatConfig& config);
  ~WeightQat();  ///< detaches the kernels
  WeightQat(const WeightQat&) = delete;
  WeightQat& operator=(const WeightQat&) = delete;

  /// The learned steps, for the optimizer.
  std::vector<torch::Tensor> parameters() const;
  /// "<module>.weight_step" -> (rows, groups), for checkpoints; and their restoration (all of them).
  std::map<std::string, torch::Tensor> named_steps() const;
  void load_steps(const std::map<std::string, torch::Tensor>& steps);
  /// The training step about to run: float weights before qat.start_step; at it the steps are
  /// (re)set from the weights, whatever a resumed checkpoint held.
  void set_step(int64_t step);
  bool quantizing() const;
  /// Raises steps below kMinStep after an optimizer update; returns how many were changed.
  int constrain();
  static constexpr double kMinStep = 1e-8;
  /// The steps as exported: module -> (rows, groups).
  LearnedWeights learned() const;

  struct State;

 private:
  Llama model_;
  std::shared_ptr<State> state_;
};

}  // namespace outq
