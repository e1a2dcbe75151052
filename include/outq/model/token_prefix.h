// A fixed token prefix run once by the float model and kept as its KV cache (the quantization-free
// prefix of QFeP): models that continue after it never see the prefix tokens themselves, so their
// activations at those positions are never quantized. Positions continue after the prefix.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "outq/model/llama.h"

namespace outq {

struct TokenPrefix {
  std::vector<int32_t> tokens;  ///< BOS first
  KVCache cache;                ///< batch 1, every layer
  torch::Tensor last_logits;    ///< (V) the float model's logits at the last prefix position
  int64_t length() const { return static_cast<int64_t>(tokens.size()); }
  /// The cache for a batch of `batch` sequences (expanded views, no copies).
  KVCache for_batch(int64_t batch) const;
};

/// Runs `tokens` through `model` without its observers (the float function) and keeps the cache.
/// Errors: empty prefix, or one that leaves no position of the context for other tokens.
TokenPrefix compute_token_prefix(Llama& model, const std::vector<int32_t>& tokens);

/// Tokens of BOS-first windows (B, T) that fit after `prefix` in the model's context: the prefix
/// replaces the BOS column, so this is windows[:, 1 : 1 + min(T - 1, max_positions - P)].
torch::Tensor tokens_after_prefix(const Llama& model, const torch::Tensor& windows, const TokenPrefix& prefix);

/// Forward pass of BOS-first windows with `prefix` in place of BOS (see tokens_after_prefix):
/// logits (B, T', V) for the kept tokens. Observers see only those positions.
torch::Tensor forward_after_prefix(Llama& model, const torch::Tensor& windows, const TokenPrefix& prefix);

}  // namespace outq
