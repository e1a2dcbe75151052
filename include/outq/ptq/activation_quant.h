// Activation quantization on the model's observation points: an observer that fake-quantizes
// linear inputs (static ranges or dynamic), an observer that calibrates static ranges over
// calibration batches in bounded memory, and the calibration windows themselves.
#pragma once

#include <optional>
#include <vector>

#include "outq/data/token_shard.h"
#include "outq/model/llama.h"
#include "outq/quant/quantizer.h"
#include "outq/quant/recipe.h"

namespace outq {

class Progress;

struct ActivationTarget {
  QuantSpec spec;
  QParams qp;          ///< static ranges (undefined for dynamic specs)
  torch::Tensor perm;  ///< PEG channel permutation (undefined = identity)
};

/// Replaces each targeted point's tensor with its fake-quantized version.
class ActivationQuantizer : public Observer {
 public:
  explicit ActivationQuantizer(size_t num_points) : targets_(num_points) {}
  void set(int point, ActivationTarget target) { targets_.at(point) = std::move(target); }
  const std::optional<ActivationTarget>& target(int point) const { return targets_.at(point); }
  torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) override;

 private:
  std::vector<std::optional<ActivationTarget>> targets_;
};

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

/// `options.windows` windows of BOS + (seq_len - 1) tokens from seeded random positions: (n, seq_len).
torch::Tensor calibration_windows(const TokenShard& shard, const CalibrationOptions& options, int32_t bos_id);

/// Runs the model over the windows in batches, without gradients (observers see every batch).
void run_windows(Llama& model, const torch::Tensor& windows, int64_t batch_size, Progress* progress = nullptr);

}  // namespace outq
