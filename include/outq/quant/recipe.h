// Quantization recipes: which weight and activation quantizers every linear layer gets, how the
// weights are quantized (RTN or GPTQ), calibration settings, per-module overrides by glob, and
// the outlier methods to apply. A recipe is data, loaded from TOML and printed back in reports:
//
//   name = "w4a4-token-gptq"
//   methods = ["smoothquant"]                      # outlier methods, applied in this order
//   [smoothquant]  alpha = 0.5                     # one settings table per listed method
//   [weights]      bits = 4  symmetric = false  granularity = "channel"  group_size = 0
//                  range = "minmax"  algorithm = "gptq" (rtn | gptq | learned)
//   [gptq]         damp = 0.01  block_size = 128  act_order = true  true_sequential = true
//   [activations]  bits = 4  symmetric = false  granularity = "token"  range = "minmax"  dynamic = true
//   [calibration]  windows = 128  seq_len = 256  seed = 0  batch_size = 16
//   [[override]]   modules = "model.layers.*.mlp.down_proj"   weights = { bits = 8 }
//                  activations = { bits = 16 }                # 16 = float; add integer = true for int16
//   full_integer = false                            # true: also quantize every other tensor (below)
//   [[tensors]]    points = "model.layers.*.residual_mlp"    activations = { bits = 16, integer = true }
//
// Linear inputs take [activations] and the module overrides. Every other observation point (linear
// outputs, residual sums, attention scores and probabilities: model/observe.h) is float unless
// full_integer gives it the [activations] spec (per tensor for the attention scores and
// probabilities when that spec is per embedding group: they have no channel dimension), or a
// [[tensors]] glob on its name sets one.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/quant/spec.h"

namespace outq {

enum class WeightAlgorithm { kRtn, kGptq, kLearned };
/// "rtn", "gptq", "learned"
const char* weight_algorithm_name(WeightAlgorithm a);

struct GptqOptions {
  double damp = 0.01;      ///< added to the Hessian diagonal, as a fraction of its mean
  int block_size = 128;    ///< columns per lazy batch update
  bool act_order = false;  ///< quantize columns by decreasing Hessian diagonal
  bool true_sequential = true;
};

struct CalibrationOptions {
  int64_t windows = 128;
  int64_t seq_len = 256;
  int64_t seed = 0;
  int64_t batch_size = 16;
};

struct ModuleOverride {
  std::string pattern;        ///< glob on module names, e.g. "model.layers.*.mlp.down_proj"
  bool has_weights = false, has_activations = false;
  QuantSpec weights, activations;  ///< full specs: the recipe's defaults with the override's keys applied
};

/// An outlier method listed in `methods`, with its settings table (TOML converted to JSON; the
/// method checks the keys: see ptq/method.h).
/// A [[tensors]] entry: the activation spec of the observation points (other than linear inputs)
/// whose names match the glob.
struct TensorOverride {
  std::string pattern;
  QuantSpec activations;
  std::string origin;  ///< "recipe.toml:12"
};

struct MethodEntry {
  std::string name;
  nlohmann::json settings = nlohmann::json::object();
  std::string origin;  ///< "recipe.toml:12" of the settings table (or of `methods` when there is none)
};

struct Recipe {
  std::string name, description, source_path, source_text;
  QuantSpec weights, activations;
  WeightAlgorithm algorithm = WeightAlgorithm::kRtn;
  GptqOptions gptq;
  CalibrationOptions calibration;
  std::vector<ModuleOverride> overrides;
  bool full_integer = false;
  std::vector<TensorOverride> tensors;
  std::vector<MethodEntry> methods;

  /// Specs for a linear module ("model.layers.0.mlp.down_proj"): the last matching override wins.
  QuantSpec weight_spec(const std::string& module) const;
  QuantSpec activation_spec(const std::string& module) const;
  /// Spec of an observation point that is not a linear input ("model.layers.0.residual_mlp"): the
  /// last matching [[tensors]] entry, else [activations] under full_integer, else off.
  QuantSpec point_spec(const std::string& point) const;
  /// True if any activation quantizer is static (needs calibration ranges).
  bool needs_calibration() const;
  /// True if any activation quantizer uses learned ranges (a QAT model's clips.json).
  bool needs_learned_ranges() const;
  /// True if the weights are quantized on a weight-QAT model's learned steps (weight_steps.safetensors).
  bool needs_learned_weights() const { return algorithm == WeightAlgorithm::kLearned; }
  /// "W4A4" style label from the default specs.
  std::string label() const;
  /// "smoothquant+qfem" (the listed methods), "" when there are none.
  std::string methods_label() const;
};

/// Loads and validates a recipe file; unknown keys are errors that list the valid ones.
Recipe recipe_load(const std::string& path);
/// Parses recipe text (`origin` names it in errors).
Recipe recipe_parse(const std::string& text, const std::string& origin);

/// Names (among `modules`) matching a glob pattern.
std::vector<std::string> glob_matches(const std::string& pattern, const std::vector<std::string>& modules);

}  // namespace outq
