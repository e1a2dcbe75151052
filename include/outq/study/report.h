// The study report: report.md for people, report.json for programs, and its plots, all made from
// one results object that `outq study` assembles from its stages (see docs/study.md for the
// fields). Torch-free, so the report can be rebuilt and tested from JSON alone.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/core/table.h"

namespace outq {

/// The headline figures, looked up in the results (missing entries are errors naming them).
struct StudyHeadline {
  double baseline_float = 0;   ///< baseline W16A16 perplexity
  double baseline_w4a4 = 0;    ///< baseline under study.headline_baseline
  double qat_float = 0;        ///< QAT model W16A16 (its weights and activations unquantized)
  double qat_native = 0;       ///< QAT model at its training precision (W16A4 at the learned clips)
  double qat_w4a4 = 0;         ///< QAT model under study.headline_qat
  std::string baseline_recipe, qat_recipe;
  bool has_native = false;
  bool has_finetune = false;   ///< the study has a QAT fine-tune of the baseline
  double finetune_own = 0;     ///< its W16A16, or W16A4 at its learned ranges when evaluated
  double finetune_w4a4 = 0;    ///< under study.headline_finetune
  std::string finetune_recipe;
  double baseline_ratio() const { return baseline_w4a4 / baseline_float; }
  /// The QAT model's W4A4 against its own unquantized-weight perplexity (native if known).
  double qat_ratio() const { return qat_w4a4 / (has_native ? qat_native : qat_float); }
  /// The QAT model's W4A4 against the baseline's float perplexity.
  double qat_vs_baseline_float() const { return qat_w4a4 / baseline_float; }
  double finetune_ratio() const { return finetune_w4a4 / finetune_own; }
  double finetune_vs_baseline_float() const { return finetune_w4a4 / baseline_float; }
};

StudyHeadline study_headline(const nlohmann::json& results);

/// The entry of results["models"] with this id ("baseline", "qat", "finetune"), or null.
const nlohmann::json* study_model(const nlohmann::json& results, const std::string& id);

/// The headline as a table (one row per model: what its training cost, its float and W4A4
/// perplexities), for report.md and the terminal.
Table study_headline_table(const nlohmann::json& results);

/// What a model's training cost: "819k tokens, 6m02s", or "+82k tokens (10% more), 1m05s" for a fine-tune.
std::string study_training_cost(const nlohmann::json& model);

/// The cures the study evaluated, one entry per cure: {cure, model, w8a8, w4a4 (each null or
/// {recipe, perplexity, ppl_se, kl, quantize_seconds, per_token_scale, vs_float,
/// prefill_vs_float}), training_tokens}; the best recipe of each format, from results["evals"].
nlohmann::json study_cures(const nlohmann::json& results);
/// The recommendation drawn from them ("For static W4A4 on this model use ..."), ties within the
/// standard error named; "" when no static W4A4 cure was evaluated.
std::string study_recommendation(const nlohmann::json& results);
/// The "## Cures" section of report.md: the table and the recommendation.
std::string study_cures_section(const nlohmann::json& results);

/// Plain-language conclusions, each a sentence built from the numbers.
std::vector<std::string> study_conclusions(const nlohmann::json& results);

/// The Markdown report. Plots are referenced by the paths in results["plots"].
std::string study_report_markdown(const nlohmann::json& results);

/// Draws the report's own plots (training curves, perplexity per recipe) into dir/plots and
/// records them in results["plots"]; returns the names of plots that could not be drawn
/// (gnuplot missing), which the report then lists instead of an image.
std::vector<std::string> study_report_plots(nlohmann::json& results, const std::filesystem::path& dir);

/// Writes report.json and report.md into `dir` (the study stages the report directory as a whole).
void study_report_write(const nlohmann::json& results, const std::filesystem::path& dir);

}  // namespace outq
