// Learned weight steps of a weight-QAT model (weight_steps.safetensors in its directory): one
// float32 (rows, groups) tensor of symmetric steps per decoder linear, named by module, with the
// bit width and group size in the file's metadata. Quantizing a weight with its steps,
//   codes = clamp(round(W / step), -2^(b-1), 2^(b-1) - 1),  W^ = codes * step,
// gives exactly the weights the model trained with (the same float32 operations).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

#include "outq/quant/spec.h"

namespace outq {

struct LearnedWeights {
  int bits = 0;
  int64_t group_size = 0;                      ///< input columns per step; 0 = one step per output channel
  std::map<std::string, torch::Tensor> steps;  ///< module -> float32 (rows, groups), all > 0

  /// The weight spec the steps belong to: symmetric, per channel or per group.
  QuantSpec spec() const;
};

inline constexpr const char* kLearnedWeightsFile = "weight_steps.safetensors";

/// Writes the steps atomically.
void learned_weights_write(const LearnedWeights& weights, const std::string& path);
/// Reads and validates a steps file (metadata, dtype, shapes, finite positive steps).
LearnedWeights learned_weights_load(const std::string& path);

/// The codes (int32, W's shape) and dequantized weight (float32) of W (rows, cols) on the grid of
/// `steps` (rows, groups); `origin` names the steps in errors (shape mismatch).
std::pair<torch::Tensor, torch::Tensor> learned_weight_quantize(const torch::Tensor& weight, const torch::Tensor& steps,
                                                                const QuantSpec& spec, const std::string& origin);

}  // namespace outq
