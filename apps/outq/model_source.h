// Shared by the commands that read models and data: loading a float or quantized model
// directory with its tokenizer, and finding the evaluation / calibration token shards.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "app_config.h"
#include "outq/data/prepare.h"
#include "outq/data/tokenizer.h"
#include "outq/model/llama.h"
#include "outq/ptq/activation_quant.h"
#include "outq/quant/learned_weights.h"
#include "outq/runtime/integer_runtime.h"

namespace outq::app {

struct LoadedModel {
  Llama model{nullptr};
  std::unique_ptr<Tokenizer> tokenizer;
  bool quantized = false;
  std::optional<LearnedRanges> learned;  ///< clips.json of a QAT model, when present
  std::optional<LearnedWeights> learned_weights;  ///< weight_steps.safetensors of a weight-QAT model
  std::optional<IntegerRuntimeReport> runtime;  ///< quantized models on the integer kernels
  std::shared_ptr<const TokenPrefix> prefix;     ///< a quantized model's QFeP prefix, if it has one
};

/// Loads `dir` (float or quantized, detected by quant_config.json), its tokenizer, checking
/// that the tokenizer's vocabulary is the model's, its learned clips if it has clips.json and its
/// learned weight steps if it has weight_steps.safetensors.
/// A quantized model runs its linear layers on the integer kernels unless `simulate` (then the
/// fake-quant simulation runs them in float).
LoadedModel load_model_dir(const std::string& dir, bool simulate = false);

/// An imported model reads the corpus with its own tokenizer: unless data.tokenizer is set, it
/// becomes the model directory's tokenizer.model, so the data prepared for it matches it.
void use_model_tokenizer(OutqConfig& config, const ModelConfig& model, const std::string& model_dir);

/// One line on how a loaded model computes: "float", "fake-quant simulation" or the integer
/// runtime's layer counts and ISA.
std::string describe_compute(const LoadedModel& lm);

/// Each token as its quoted piece ("<s>", "\"the\"") for printing a prefix.
std::vector<std::string> describe_tokens(const Tokenizer& tokenizer, const std::vector<int32_t>& ids);

/// Refuses an output directory `out` (one line, before any work) that would destroy something not
/// made by this command: `out` equal to, inside, or holding one of `inputs`; or an existing file or
/// directory without `marker` (the file every output of the command has, e.g. quant_config.json),
/// unless `overwrite`. A previous output of the same command is replaced (atomically) as before.
void check_output_dir(const std::string& option, const std::string& out, const std::vector<std::string>& inputs,
                      const std::string& marker, bool overwrite);

/// The prepared data directory: `data_dir` if given, else prepare/reuse the [data] config.
std::string resolve_data_dir(const std::string& data_dir, OutqConfig& config);

/// A split of the prepared data directory `dir`, which must have been made with `tokenizer`
/// (the tokenizer of `model_dir`).
TokenShard open_eval_shard(const std::string& dir, const std::string& split, const Tokenizer& tokenizer,
                           const std::string& model_dir);

/// A token shard for calibration: `calib_path` (a shard file) or the prepared data's train
/// split; in both cases it must have been made with `tokenizer`.
std::unique_ptr<TokenShard> open_calibration_shard(const std::string& calib_path, const std::string& data_dir,
                                                   OutqConfig& config, const Tokenizer& tokenizer,
                                                   const std::string& tokenizer_path);

}  // namespace outq::app
