// The work of each `outq study` stage, as functions from inputs to a JSON result that the stage
// cache stores and the report reads: training a model, analysing it, evaluating one recipe on it
// (simulated), running one recipe on the integer runtime, and timing the kernels.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "app_config.h"
#include "outq/eval/perplexity.h"
#include "outq/ptq/gptq_cache.h"
#include "outq/quant/recipe.h"

namespace outq::app {

/// Built-in recipe names (recipes/*.toml, embedded in the binary).
std::vector<std::string> builtin_recipe_names();
/// A study recipe entry: a .toml path if that file exists, else a built-in recipe name.
Recipe study_recipe(const std::string& entry);

/// What the stages of one study run keep in memory for the stages after them: GPTQ results
/// (recipes that differ only in what GPTQ does not read share one run, the runtime stages reuse
/// the evaluations') and one model's float logits on the test windows, the KL reference of all its
/// evaluations. Results are identical with or without it; only repeated work is saved.
struct StudyMemory {
  GptqCache gptq;
  std::string reference_model;  ///< the model directory `reference` holds the logits of
  ReferenceLogits reference;
};

/// Trains (or resumes) `config` in run_dir, from the weights of the model in init_from if not
/// empty (a fine-tune); result: steps, tokens (the run's and the base model's), losses, speed and
/// the validation curve (its tokens counted from the base model's).
/// A run stopped by a signal throws StudyInterrupted after its checkpoint is written.
nlohmann::json study_train(OutqConfig config, const std::string& run_dir, const std::string& init_from = "");

struct StudyInterrupted {
  int signal;
};

/// Outlier statistics of model_dir on validation tokens: summary figures, analysis.json and the
/// PNGs (heatmap, spikes, weights, emergence from the run's light statistics) in out_dir.
nlohmann::json study_analyze(const std::string& model_dir, const std::string& run_dir, const std::string& data_dir,
                             int64_t tokens, const std::string& out_dir);

/// Perplexity of model_dir under `recipe` (nullptr: unquantized) on the test split, with KL and
/// top-1 agreement against the unquantized model.
nlohmann::json study_eval(const std::string& model_dir, const Recipe* recipe, const std::string& data_dir,
                          OutqConfig& config, int64_t max_tokens, StudyMemory& memory);

/// `recipe` on the integer kernels: its test perplexity (the simulated one is the eval stage's),
/// and prefill / decode tokens/s next to the float model's, measured in the same stage.
nlohmann::json study_runtime(const std::string& model_dir, const Recipe& recipe, const std::string& data_dir,
                             OutqConfig& config, int64_t max_tokens, StudyMemory& memory);

/// Kernel GEMM/GEMV timings on the model's shapes (and LLaMA-7B's) for W8A8 and W4A4.
nlohmann::json study_kernels(const OutqConfig& config);

}  // namespace outq::app
