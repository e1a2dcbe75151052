// Streaming activation statistics at the model's observation points, in one pass and in memory
// that does not grow with the number of tokens (O(channels) per point plus a few top values):
//   per channel:  mean |x|, mean x, standard deviation, max |x|
//   per token:    kurtosis of the token's vector over channels (mean and max over tokens)
//   per sequence: token-wise absmax and its spike ratio max/median over the sequence's tokens
//   outliers:     channels whose mean |x| exceeds 6 x the point's mean |x| over channels
//   where:        the largest |x| values with their window, position, channel and token id
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/model/llama.h"

namespace outq {

struct TopValue {
  double value = 0;  ///< |x|
  int64_t window = 0, position = 0, channel = 0;
  int32_t token = -1;
};

/// Finished statistics of one point.
struct PointStats {
  std::string name;
  PointKind kind = PointKind::kLinearInput;
  int layer = -1;
  LinearRole role = LinearRole::kNone;  ///< of the linear the point belongs to (block schema)
  int64_t channels = 0, tokens = 0, sequences = 0;
  std::vector<double> mean_abs, mean, std, max_abs;  ///< per channel
  double layer_mean_abs = 0;                          ///< mean over channels of mean_abs
  std::vector<int64_t> outlier_channels;              ///< by the 6x rule, largest first
  double kurtosis_mean = 0, kurtosis_max = 0;
  double spike_ratio_mean = 0, spike_ratio_max = 0;
  int64_t spike_window = -1, spike_position = -1;     ///< where the largest spike ratio's maximum is
  int32_t spike_token = -1;
  std::vector<TopValue> top;                          ///< largest |x|, descending
  std::vector<float> first_window_token_absmax;       ///< token-wise absmax of window 0 (plots)
};

/// The layer type of a point for emergence tables: "qkv_input", "attn_out_input", "mlp_input",
/// "mlp_down_input", or "" for other points.
std::string point_layer_type(PointKind kind, LinearRole role);

/// Observer that accumulates PointStats for the selected points.
class ActivationStats : public Observer {
 public:
  /// `points`: indices to watch; `keep_top`: how many largest values to remember per point;
  /// `heatmap_point`: index whose |x| of window 0 is kept for the heat map (-1 = none).
  ActivationStats(const std::vector<ObservationPoint>& all_points, const std::vector<int>& points, int keep_top = 5,
                  int heatmap_point = -1);

  /// Called before each forward with the batch's token ids (B, T) and the index of its first window.
  void begin_batch(const torch::Tensor& tokens, int64_t first_window);
  torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) override;

  /// Statistics of every watched point, in point order.
  std::vector<PointStats> finish() const;
  /// |x| of window 0 at the heat-map point, (T, C); undefined if none.
  const torch::Tensor& heatmap() const { return heatmap_; }
  /// Bytes held by the accumulators (independent of the number of tokens seen).
  size_t state_bytes() const;

 private:
  struct Acc {
    ObservationPoint point;
    torch::Tensor sum_abs, sum, sum_sq, max_abs;  ///< float64 (C)
    int64_t tokens = 0, sequences = 0;
    double kurt_sum = 0, kurt_max = 0, spike_sum = 0, spike_max = 0;
    int64_t spike_window = -1, spike_position = -1;
    int32_t spike_token = -1;
    std::vector<TopValue> top;
    std::vector<float> first_absmax;
  };
  std::vector<int> slot_of_point_;
  std::vector<Acc> acc_;
  torch::Tensor tokens_, heatmap_;
  int64_t first_window_ = 0;
  int keep_top_, heatmap_point_;
};

nlohmann::json point_stats_json(const PointStats& s, bool with_channels);

}  // namespace outq
