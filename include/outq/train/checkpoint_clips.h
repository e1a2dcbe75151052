// The clip values a training checkpoint of a QAT or clamp run was trained with, in the form of the
// final model's clips.json, so a checkpoint can be run (analysed) as it was trained.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "outq/model/llama.h"

namespace outq {

/// clips.json for the checkpoint directory `dir` (read with learned_ranges_from_json): the learned
/// clips of a qat / qat+kurtosis checkpoint after qat.start_step, the fixed clamp of a clamp one.
/// None for a directory without trainer_state.json (a model directory), for float and kurtosis
/// runs, and for a QAT checkpoint written before quantization started. `model` is the checkpoint's
/// model (its depth names the entries).
std::optional<nlohmann::json> checkpoint_clips_json(const std::string& dir, const Llama& model);

}  // namespace outq
