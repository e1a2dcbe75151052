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
#include "outq/ptq/gptq_cache.h"
#include "outq/quant/learned_weights.h"
#include "outq/quant/quantized_model.h"
#include "outq/quant/recipe.h"

namespace outq {

/// Quantizes `model` in place as `recipe` says. `calib` (with `bos_id`) is needed for GPTQ and
/// calibrated static activation ranges; otherwise it may be null. Activations with
/// range = "learned" take their static range from `learned` (a QAT model's clips.json), which
/// must then cover every such module. Weights with algorithm = "learned" are quantized on the grid
/// of `learned_weights` (a weight-QAT model's steps), whose spec must be the recipe's. Globs that
/// match no module are warned about with the list of module names.
/// With `gptq_cache`, a GPTQ run identical to one it holds (see gptq_cache.h) takes that run's
/// weights instead of repeating it, and a new run is stored there.
QuantizedModel quantize_model(Llama& model, const Recipe& recipe, const TokenShard* calib, int32_t bos_id,
                              const LearnedRanges* learned = nullptr, const LearnedWeights* learned_weights = nullptr,
                              GptqCache* gptq_cache = nullptr);

}  // namespace outq
