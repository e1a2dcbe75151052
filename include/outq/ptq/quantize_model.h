// Applying a recipe to a float model: weights by RTN or GPTQ (layer by layer, "true sequential":
// each layer's calibration inputs come from the already-quantized earlier layers), then static
// activation ranges calibrated on the weight-quantized model, and an ActivationQuantizer attached
// so that running the model afterwards simulates the quantized model exactly.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "outq/data/token_shard.h"
#include "outq/model/llama.h"
#include "outq/ptq/activation_quant.h"
#include "outq/ptq/gptq.h"
#include "outq/quant/recipe.h"

namespace outq {

struct QuantizedLinear {
  std::string module;
  QuantSpec weight_spec, activation_spec;
  torch::Tensor codes;  ///< int32 (out, in); undefined when weights are not quantized
  QParams weight_qp;
  QParams activation_qp;  ///< static ranges; undefined for dynamic or disabled
};

struct QuantizedModel {
  Recipe recipe;
  std::vector<QuantizedLinear> linears;
  std::shared_ptr<ActivationQuantizer> activations;  ///< attached to the model
  double seconds = 0;
};

/// Quantizes `model` in place as `recipe` says. `calib` (with `bos_id`) is needed for GPTQ and
/// calibrated static activation ranges; otherwise it may be null. Activations with
/// range = "learned" take their static range from `learned` (a QAT model's clips.json), which
/// must then cover every such module. Globs that match no module are warned about with the
/// list of module names.
QuantizedModel quantize_model(Llama& model, const Recipe& recipe, const TokenShard* calib, int32_t bos_id,
                              const LearnedRanges* learned = nullptr);

/// Builds and attaches the activation quantizer from per-module specs and static ranges
/// (used by quantize_model and when loading a quantized model directory).
std::shared_ptr<ActivationQuantizer> attach_activation_quantizer(Llama& model, const std::vector<QuantizedLinear>& linears);

}  // namespace outq
