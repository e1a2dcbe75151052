// Batch sampling of training windows from a token shard. Each window is seq_len + 1 consecutive
// tokens (inputs and shifted targets). Window k's start is a pure function of (seed, k): a
// counter-based generator, so the sampler's whole state is {seed, windows drawn}, which is
// saved with training checkpoints and restored to continue the exact same sequence.
#pragma once

#include <cstdint>
#include <vector>

#include "outq/data/token_shard.h"

namespace outq {

struct SamplerState {
  uint64_t seed = 0;
  uint64_t drawn = 0;  ///< windows drawn so far
};

class WindowSampler {
 public:
  /// `num_tokens` is the shard length; it must hold at least one window of seq_len + 1.
  WindowSampler(uint64_t num_tokens, int64_t seq_len, uint64_t seed);

  /// Start offset of the next window, uniform over [0, num_tokens - seq_len - 1].
  uint64_t next();
  /// Fills out[b * (seq_len + 1) + t] with `batch` windows from `shard`.
  void next_batch(const TokenShard& shard, int64_t batch, int32_t* out);

  SamplerState state() const { return state_; }
  /// Restores a saved state (its seed must be this sampler's seed).
  void restore(const SamplerState& state);
  int64_t seq_len() const { return seq_len_; }

 private:
  uint64_t num_starts_;
  int64_t seq_len_;
  SamplerState state_;
};

/// Start offsets of consecutive windows of seq_len + 1 tokens advancing by `stride` (evaluation:
/// stride = seq_len gives non-overlapping targets). The last partial window is dropped.
std::vector<uint64_t> sequential_windows(uint64_t num_tokens, int64_t seq_len, int64_t stride);

}  // namespace outq
