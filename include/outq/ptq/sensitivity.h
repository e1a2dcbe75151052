// Sensitivity analysis of activation quantization (methods §4.6: the leave-one-out study that
// finds the tensors to keep at 16 bits). A recipe is applied once; then its activation quantizers
// are switched on and off by tensor type (every layer) and by (type, layer), and the model is
// evaluated for each selection: leave-one-in (only that type quantized) and leave-one-out (all but
// that type). Static ranges do not depend on which quantizers are on (they are calibrated with
// float activations), so one application serves every selection exactly. From the ranking, a
// mixed-precision recipe is built greedily: the types whose removal helps most go to 16-bit
// integer activations, one at a time, each step quantized and evaluated for real, until the
// perplexity is within the tolerance of the weights-only model (activations in float).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/model/llama.h"
#include "outq/quant/quantized_model.h"
#include "outq/quant/recipe.h"

namespace outq {

/// A tensor type of the decoder block: the linear inputs by slot ("qkv_input" = the tensor q/k/v
/// read, "down_input" = the MLP hidden activation), each linear's output ("q_proj_output"), the
/// residual sums and the attention scores and probabilities.
struct TensorType {
  std::string name;
  std::string paper;  ///< the methods spec's letter for it in BERT, "" if none
  bool linear_input = false;
  std::vector<std::string> relative;  ///< relative point names ("self_attn.q_proj.input", "residual_mlp")
  std::vector<std::string> modules;   ///< linear_input: the relative modules whose input it is
};

/// The block's tensor types in forward order, from the block schema.
std::vector<TensorType> tensor_types();

struct SensitivityRow {
  std::string type;
  int layer = -1;            ///< -1: every layer
  double perplexity = 0;
};

struct SensitivityResult {
  double float_perplexity = 0;         ///< float model
  double weights_only_perplexity = 0;  ///< recipe's weights, float activations
  double all_perplexity = 0;           ///< the whole recipe
  double target = 0;                   ///< weights_only * (1 + tolerance)
  std::vector<std::string> types;      ///< the types the recipe quantizes, forward order
  std::vector<SensitivityRow> leave_one_in, leave_one_out, per_layer_out;
  std::vector<std::string> suggested;  ///< types at 16-bit integer in the suggestion, in the order chosen
  std::vector<double> suggested_steps; ///< perplexity after each choice with the chosen types in float
  double suggested_perplexity = 0;     ///< the suggestion quantized for real (16-bit integer activations)
  bool reached = false;                ///< the suggestion meets the target
  std::string suggested_recipe;        ///< TOML text
  nlohmann::json to_json() const;
};

struct SensitivityOptions {
  double tolerance = 0.02;  ///< relative perplexity over the weights-only model
  int per_layer_types = 3;  ///< leave-one-out per layer for this many of the most sensitive types
  int max_suggested = 0;    ///< cap on 16-bit types in the suggestion (0 = as many as needed)
};

/// Evaluates a model (perplexity); `prefix` is a QFeP prefix to continue after, or null.
using PerplexityFn = std::function<double(Llama& model, const TokenPrefix* prefix)>;
/// Applies a recipe to a fresh copy of the float model and returns it with the quantized record.
using QuantizeFn = std::function<std::pair<Llama, QuantizedModel>(const Recipe& recipe)>;

/// Runs the analysis of `recipe`; `float_model` is evaluated as it is.
SensitivityResult sensitivity_analysis(Llama& float_model, const Recipe& recipe, const QuantizeFn& quantize,
                                       const PerplexityFn& perplexity, const SensitivityOptions& options);

/// The recipe text with `types` at 16-bit integer activations (overrides and [[tensors]] entries
/// appended, named `name`).
std::string mixed_precision_recipe(const Recipe& recipe, const std::vector<std::string>& types, const std::string& name);

}  // namespace outq
