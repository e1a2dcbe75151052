// The float model's KV cache of a fixed token prefix, and forward passes that continue after it.
#include "outq/model/token_prefix.h"

#include <utility>

#include "outq/core/error.h"

namespace outq {

KVCache TokenPrefix::for_batch(int64_t batch) const {
  KVCache out;
  out.length = cache.length;
  for (const auto& k : cache.keys) out.keys.push_back(k.expand({batch, k.size(1), k.size(2), k.size(3)}));
  for (const auto& v : cache.values) out.values.push_back(v.expand({batch, v.size(1), v.size(2), v.size(3)}));
  return out;
}

TokenPrefix compute_token_prefix(Llama& model, const std::vector<int32_t>& tokens) {
  const int64_t max_pos = model->config().max_position_embeddings;
  OUTQ_CHECK(!tokens.empty(), "token prefix: expected at least one token (BOS), found none");
  OUTQ_CHECK(static_cast<int64_t>(tokens.size()) < max_pos, "token prefix: ", tokens.size(),
             " tokens leave no room in a context of max_position_embeddings = ", max_pos,
             "; expected a prefix shorter than the context");
  const int64_t vocab = model->config().vocab_size;
  for (const int32_t t : tokens)
    OUTQ_CHECK(t >= 0 && t < vocab, "token prefix: token id ", t, " is outside the vocabulary [0, ", vocab, ")");
  torch::NoGradGuard no_grad;
  // The float function: no quantizer, no statistics; the observers come back however this ends.
  struct Detached {
    ObserverList& list;
    ObserverList saved;
    ~Detached() { list = std::move(saved); }
  } detached{model->observers(), std::exchange(model->observers(), ObserverList{})};
  TokenPrefix p;
  p.tokens = tokens;
  std::vector<int64_t> ids(tokens.begin(), tokens.end());
  const torch::Device device = model->parameters().front().device();
  const auto logits = model->forward(torch::tensor(ids).unsqueeze(0).to(device), &p.cache, LlamaImpl::Logits::kLast);
  p.last_logits = logits[0][-1].clone();
  return p;
}

torch::Tensor tokens_after_prefix(const Llama& model, const torch::Tensor& windows, const TokenPrefix& prefix) {
  OUTQ_CHECK(windows.dim() == 2 && windows.size(1) >= 2, "prefix windows: expected BOS-first windows (B, T >= 2), found ",
             windows.sizes());
  const int64_t room = model->config().max_position_embeddings - prefix.length();
  OUTQ_CHECK(room >= 1, "token prefix of ", prefix.length(), " tokens leaves no room in a context of ",
             model->config().max_position_embeddings, " positions");
  return windows.slice(1, 1, 1 + std::min(windows.size(1) - 1, room));
}

torch::Tensor forward_after_prefix(Llama& model, const torch::Tensor& windows, const TokenPrefix& prefix) {
  const auto tokens = tokens_after_prefix(model, windows, prefix);
  KVCache cache = prefix.for_batch(tokens.size(0));
  return model->forward(tokens, &cache);
}

}  // namespace outq
