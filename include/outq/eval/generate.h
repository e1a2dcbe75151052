// Text generation with the KV cache: the prompt is prefilled once, then one token per step is
// decoded. Sampling: greedy (temperature 0), or temperature with optional top-k and top-p
// (nucleus) filtering, from a seeded generator so the same seed gives the same text.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "outq/model/llama.h"
#include "outq/model/token_prefix.h"

namespace outq {

struct SamplingOptions {
  double temperature = 0.8;  ///< 0 = greedy
  int64_t top_k = 40;        ///< 0 = off
  double top_p = 0.95;       ///< 1 = off
  uint64_t seed = 1;
  int64_t max_new_tokens = 64;
  int32_t eos_id = 2;        ///< stop when sampled (not emitted)
};

/// Picks the next token from logits (V) with the options' filtering; `gen` supplies randomness.
int64_t sample_token(const torch::Tensor& logits, const SamplingOptions& options, at::Generator& gen);

/// Generates after `prompt` (token ids, BOS included by the caller); `on_token` is called with
/// every new token as soon as it is chosen. Stops at EOS, max_new_tokens, or the model's
/// max_position_embeddings. Returns the new tokens. With a `prefix` (QFeP), its cached keys and
/// values replace the prompt's BOS and the prompt continues after it; the prefix is never emitted.
std::vector<int32_t> generate(Llama& model, const std::vector<int32_t>& prompt, const SamplingOptions& options,
                              const std::function<void(int32_t)>& on_token = {}, const TokenPrefix* prefix = nullptr);

}  // namespace outq
