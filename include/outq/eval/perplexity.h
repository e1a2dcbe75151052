// Perplexity over a token sequence with non-overlapping windows: each window scores W = seq_len
// consecutive tokens, with input [BOS, t0 .. t(W-2)] and targets [t0 .. t(W-1)], so every token
// is predicted exactly once and every window starts from BOS (as training windows do). With a
// token prefix (QFeP) the prefix's cached keys and values take BOS's place: input [t0 .. t(W-2)]
// after the cache, t0 scored from the logits the float model gave at the prefix's last position,
// and W shortened to max_position_embeddings - P + 1 when the prefix would not fit otherwise.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/core/window_stats.h"  // paired_nll_standard_error for two results
#include "outq/data/token_shard.h"
#include "outq/model/llama.h"
#include "outq/model/token_prefix.h"

namespace outq {

struct PerplexityOptions {
  int64_t seq_len = 256;
  int64_t max_tokens = 0;  ///< 0 = all tokens of the source
  int64_t batch_size = 8;
  int32_t bos_id = 1;
  bool show_progress = true;
  const TokenPrefix* prefix = nullptr;  ///< continue every window after this prefix (QFeP)
};

/// The window length evaluate_perplexity uses: seq_len, shortened so that the prefix fits.
int64_t effective_window(const Llama& model, const PerplexityOptions& options);

struct PerplexityResult {
  double nll_sum = 0;   ///< summed negative log-likelihood (nats)
  double kl_sum = 0;    ///< with a reference model: summed KL(reference || model) per position (nats)
  int64_t top1_agree = 0;  ///< with a reference model: positions where both argmax tokens agree
  bool has_reference = false;
  int64_t tokens = 0;   ///< tokens scored
  int64_t windows = 0;
  int64_t window = 0;   ///< tokens per window (seq_len, or shorter so that a prefix fits)
  double seconds = 0;
  /// Summed NLL and token count of each window, in window order (the windows are the units of the
  /// standard errors below: tokens within a window are not independent).
  std::vector<double> window_nll;
  std::vector<int64_t> window_tokens;
  double mean_nll() const { return tokens ? nll_sum / static_cast<double>(tokens) : 0.0; }
  double perplexity() const;
  double kl_mean() const { return tokens ? kl_sum / static_cast<double>(tokens) : 0.0; }
  double top1_agreement() const { return tokens ? static_cast<double>(top1_agree) / static_cast<double>(tokens) : 0.0; }
  /// Standard error of mean_nll() over windows (the ratio estimator's: sqrt(W / (W - 1) sum_w
  /// (nll_w - mean n_w)^2) / sum_w n_w; sd / sqrt(W) of the window means for equal windows); 0 for
  /// fewer than 2 windows. The perplexity's is perplexity() times it (first order).
  double nll_standard_error() const;
  nlohmann::json to_json() const;
};

/// A reference model's logits on every scored batch of one evaluation, kept so that later
/// evaluations of other models against the same reference, on the same source and windows, read
/// them instead of running the reference again (tokens x vocabulary floats of memory). Not used
/// with a prefix (the reference then continues after each model's own prefix).
struct ReferenceLogits {
  std::string windows;                 ///< the token count, window, batch and BOS they were scored with
  std::vector<torch::Tensor> batches;  ///< (B, len, V) float32, in scoring order
  bool complete = false;
};

/// Reads tokens [start, start + n) of a source into `out`.
using TokenSource = std::function<void(uint64_t start, uint64_t n, int32_t* out)>;

/// Scores the first min(max_tokens, num_tokens) tokens (a last partial window is scored too).
/// Runs under NoGradGuard; shows running perplexity with progress. With a `reference` model the
/// same windows also give the mean KL divergence of this model's next-token distribution from
/// the reference's and the top-1 agreement, in one pass with memory independent of the tokens.
/// With `kept` (and no prefix): the reference's logits come from it when it holds these windows'
/// (the reference model may then be null), else the reference runs and they are kept there.
PerplexityResult evaluate_perplexity(Llama& model, const TokenSource& source, uint64_t num_tokens,
                                     const PerplexityOptions& options, Llama* reference = nullptr,
                                     ReferenceLogits* kept = nullptr);

/// Convenience overload for a token shard.
PerplexityResult evaluate_perplexity(Llama& model, const TokenShard& shard, const PerplexityOptions& options,
                                     Llama* reference = nullptr, ReferenceLogits* kept = nullptr);

}  // namespace outq
