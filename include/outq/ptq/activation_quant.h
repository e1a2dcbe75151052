// Activation calibration on the model's observation points: an observer that calibrates static
// ranges over calibration batches in bounded memory, learned (QAT) ranges, and the calibration
// windows themselves. (The simulating quantizer itself is quant/quantized_model.h's.)
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "outq/data/token_shard.h"
#include "outq/model/llama.h"
#include "outq/model/token_prefix.h"
#include "outq/quant/quantized_model.h"
#include "outq/quant/quantizer.h"
#include "outq/quant/recipe.h"

namespace outq {

class Progress;

/// Accumulates static ranges: min-max ranges as the running extremes over batches; percentile
/// and MSE ranges as the mean of per-batch estimates (memory: one range per watched point).
class RangeCalibrator : public Observer {
 public:
  explicit RangeCalibrator(size_t num_points) : watched_(num_points) {}
  void watch(int point, const QuantSpec& spec, const torch::Tensor& perm = {});
  torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) override;
  /// Calibrated parameters of a watched point (error if it saw no data).
  QParams qparams(int point) const;

 private:
  struct Watch {
    QuantSpec spec;
    torch::Tensor perm, lo, hi;
    int64_t batches = 0;
  };
  std::vector<std::optional<Watch>> watched_;
};

/// The learned clip values of a QAT model (its clips.json): per linear module, the static
/// per-tensor range [beta, alpha] of its input and the bit width it was trained for. A `clamp`
/// model (kind "clamp") was trained with its inputs clamped to the range, not quantized.
struct LearnedRange {
  double alpha = 0, beta = 0;
  int bits = 4;
  bool clamp_only = false;
  double step = 0;        ///< LSQ ranges: the learned step (> 0) and integer zero point, the grid
  double zero_point = 0;  ///< itself (alpha and beta are its ends); 0 for learned clips
};
using LearnedRanges = std::map<std::string, LearnedRange>;

/// Reads a clips.json written by `outq train` in a QAT mode (alpha > beta, finite, bits 2..8).
LearnedRanges learned_ranges_load(const std::string& path);
/// The same from parsed JSON; `origin` names it in errors.
LearnedRanges learned_ranges_from_json(const nlohmann::json& j, const std::string& origin);

/// An observer that runs a QAT model as it was trained: each linear input with a learned range is
/// fake-quantized on that grid (as qparams_from_learned), or clamped to it for a clamp model.
std::shared_ptr<Observer> learned_input_observer(Llama& model, const LearnedRanges& ranges);

/// Static parameters that reproduce the QAT quantizer exactly: for LSQ ranges the learned step and
/// zero point; for learned clips scale = (alpha - beta) / (2^b - 1) and zero = -beta / scale, not
/// rounded (the trained grid is beta + k * scale).
QParams qparams_from_learned(const LearnedRange& range, const QuantSpec& spec);

/// `options.windows` windows of BOS + (seq_len - 1) tokens from seeded random positions: (n, seq_len).
torch::Tensor calibration_windows(const TokenShard& shard, const CalibrationOptions& options, int32_t bos_id);

/// Runs the model over the BOS-first windows in batches, without gradients (observers see every
/// batch); after `prefix` in place of BOS when given (observers then never see the prefix).
void run_windows(Llama& model, const torch::Tensor& windows, int64_t batch_size, Progress* progress = nullptr,
                 const TokenPrefix* prefix = nullptr);

}  // namespace outq
