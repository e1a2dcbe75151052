// `outq analyze`: activation statistics over an evaluation shard (activation_stats.h), weight
// magnitude statistics per linear layer, the emergence of outliers over training (from a series
// of checkpoints, or from the light statistics `outq train` records), a text summary, JSON, and
// PNG plots:
//   heatmap.png   |x| over (channel, token) of one sequence at a chosen point
//   weights.png   per-input-channel weight magnitude of the linear fed by that point
//   spikes.png    token-wise absmax per module along one sequence, with the spike tokens
//   emergence.png outlier-channel count versus training step by layer type
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/analysis/activation_stats.h"
#include "outq/data/token_shard.h"
#include "outq/data/tokenizer.h"
#include "outq/model/llama.h"

namespace outq {

struct WeightStats {
  std::string name;  ///< module name
  int64_t rows = 0, cols = 0;
  std::vector<double> in_magnitude;   ///< mean |W[:, i]| per input channel
  std::vector<double> out_magnitude;  ///< mean |W[o, :]| per output channel
  double in_max_median = 0, out_max_median = 0;  ///< max / median of those magnitudes
  double kurtosis = 0;  ///< of all weight values (a Gaussian gives 3)
};

std::vector<WeightStats> weight_stats(Llama& model);

struct AnalyzeOptions {
  int64_t max_tokens = 100000;
  int64_t seq_len = 256;
  int64_t batch_size = 8;
  int32_t bos_id = 1;
  std::string heatmap_point;  ///< "" = the linear input whose loudest channel stands out most
  bool heatmap = true;        ///< false: no heat map (light statistics during training)
  bool show_progress = true;
};

struct AnalysisResult {
  std::vector<PointStats> points;
  std::vector<WeightStats> weights;
  std::string heatmap_point;
  torch::Tensor heatmap;  ///< (T, C) |x| of window 0 at heatmap_point
  std::vector<int32_t> first_window_tokens;
  int64_t tokens = 0;
  double seconds = 0;
  size_t state_bytes = 0;
};

/// The points analysed: the distinct linear inputs of each block (q_proj for q/k/v, o_proj,
/// gate_proj for gate/up, down_proj), every linear output, and both residual points.
std::vector<int> analysis_points(Llama& model);

/// One pass over the first max_tokens tokens of `shard` in windows of BOS + seq_len - 1 tokens.
/// The statistics see each point's tensor before any observer already attached to the model
/// (a quantizer) replaces it, so a quantized or clipped model is analysed as it runs, at the
/// inputs its quantizers face.
AnalysisResult analyze_model(Llama& model, const TokenShard& shard, const AnalyzeOptions& options);

/// Compact per-layer-type statistics (outlier counts and max kurtosis by depth) for emergence.
nlohmann::json layer_type_summary(const std::vector<PointStats>& points);

nlohmann::json analysis_json(const AnalysisResult& r, const Tokenizer* tokenizer);
/// Top outlier channels, spike modules, largest values with their decoded context.
std::string analysis_summary(const AnalysisResult& r, const Tokenizer* tokenizer);

/// Writes heatmap.png, weights.png and spikes.png into `dir`. Throws outq::Error if gnuplot is
/// missing (callers write the statistics first).
void analysis_plots(const AnalysisResult& r, const std::string& dir);

/// Reads the light statistics `outq train` appended to run_dir/metrics.jsonl: (step, summary).
std::vector<std::pair<int64_t, nlohmann::json>> emergence_from_metrics(const std::string& run_dir);

/// Emergence from a list of (step, layer-type summary): outlier counts by layer type and step.
void emergence_plot(const std::vector<std::pair<int64_t, nlohmann::json>>& series, const std::string& png);
/// The same series as a text table (rows: step; columns: layer type, summed over depth, and per depth).
std::string emergence_table(const std::vector<std::pair<int64_t, nlohmann::json>>& series);

}  // namespace outq
