// Activation-spike statistics (methods §3.3): over BOS-first calibration sequences, the token-wise
// absmax a[s, t] = max_c |X[s, t, c]| of every activation slot's input (one per shared input: q, k
// and v read one, gate and up another), and each slot's spike ratio
//   r = mean over sequences s of ( max_t a[s, t] / median_t a[s, t] )
// (the median of an even count is the lower middle value). QFeM excludes slots by r; QFeP searches
// its prefix around the top slot. After a prefix, only the positions after it are measured.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/ptq/method.h"

namespace outq {

struct SlotSpikes {
  std::string module;                ///< the slot's first linear ("model.layers.1.mlp.down_proj")
  std::vector<std::string> modules;  ///< every linear reading that input
  int layer = 0, slot = 0;           ///< block and block-schema slot
  double ratio = 0;                  ///< mean over sequences of max / median token-wise absmax
  double peak = 0;                   ///< largest token-wise absmax over all sequences
  double median = 0;                 ///< mean over sequences of the median token-wise absmax
  torch::Tensor absmax;              ///< (n, T) float32 token-wise absmax
};

struct SpikeStats {
  std::vector<SlotSpikes> slots;  ///< in model order (block, then schema slot)
  torch::Tensor tokens;           ///< (n, T) int64: the token at each measured position
  int64_t sequences = 0;
  /// The slot with the largest ratio.
  const SlotSpikes& top() const;
  /// Per slot: module, layer, slot name, ratio, peak, median (no per-token data).
  nlohmann::json to_json() const;
  /// A table for people, largest ratio first; `excluded` modules are marked.
  std::string table(const std::vector<std::string>& excluded = {}) const;
};

/// Per-sequence max / median of token-wise absmax rows (n, T) -> (n) float64.
torch::Tensor spike_ratio_per_sequence(const torch::Tensor& absmax);

/// Measures every slot's token-wise absmax over `data` on `model` as it is (its observers stay).
SpikeStats measure_spikes(Llama& model, const CalibrationData& data, const std::string& label);

}  // namespace outq
