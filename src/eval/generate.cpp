// Sampling and KV-cached generation.
#include "outq/eval/generate.h"

#include "outq/core/error.h"

namespace outq {

int64_t sample_token(const torch::Tensor& logits_in, const SamplingOptions& o, at::Generator& gen) {
  auto logits = logits_in.to(torch::kFloat32).flatten();
  if (o.temperature <= 0) return logits.argmax().item<int64_t>();
  logits = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < logits.size(0)) {
    const auto kth = std::get<0>(logits.topk(o.top_k)).min();
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
  }
  auto probs = torch::softmax(logits, 0);
  if (o.top_p < 1.0) {
    // Keep the smallest set of most likely tokens whose mass reaches top_p (the first always).
    auto [sorted, order] = probs.sort(0, /*descending=*/true);
    auto before = sorted.cumsum(0) - sorted;  // mass strictly before each token
    auto drop = before >= o.top_p;
    sorted = sorted.masked_fill(drop, 0.0);
    probs = torch::zeros_like(probs).scatter(0, order, sorted);
  }
  return torch::multinomial(probs, 1, false, gen).item<int64_t>();
}

std::vector<int32_t> generate(Llama& model, const std::vector<int32_t>& prompt, const SamplingOptions& o,
                              const std::function<void(int32_t)>& on_token, const TokenPrefix* prefix) {
  OUTQ_CHECK(!prompt.empty(), "generate: expected a non-empty prompt (at least BOS)");
  OUTQ_CHECK(o.temperature >= 0, "generate: temperature: expected >= 0, found ", o.temperature);
  OUTQ_CHECK(o.top_p > 0 && o.top_p <= 1, "generate: top_p: expected a value in (0, 1], found ", o.top_p);
  OUTQ_CHECK(o.top_k >= 0, "generate: top_k: expected >= 0, found ", o.top_k);
  const int64_t max_pos = model->config().max_position_embeddings;
  // With a prefix, its cache takes the place of the prompt's BOS; positions continue after it.
  const int64_t used = static_cast<int64_t>(prompt.size()) + (prefix ? prefix->length() - 1 : 0);
  OUTQ_CHECK(used < max_pos, "generate: prompt of ", prompt.size(), " tokens", prefix ? " after the prefix" : "",
             " leaves no room: expected fewer than max_position_embeddings = ", max_pos, " positions, found ", used);
  torch::NoGradGuard no_grad;
  model->eval();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  KVCache cache = prefix ? prefix->for_batch(1) : KVCache{};
  std::vector<int64_t> ids(prompt.begin() + (prefix ? 1 : 0), prompt.end());
  const torch::Device device = model->parameters().front().device();
  torch::Tensor logits;  // (1, 1, V): the prompt's last position predicts the next token
  if (ids.empty()) {
    logits = prefix->last_logits.reshape({1, 1, -1});
  } else {
    logits = model->forward(torch::tensor(ids).unsqueeze(0).to(device), &cache, LlamaImpl::Logits::kLast);
  }
  std::vector<int32_t> out;
  while (static_cast<int64_t>(out.size()) < o.max_new_tokens && cache.length < max_pos) {
    const int64_t next = sample_token(logits[0][logits.size(1) - 1], o, gen);
    if (next == o.eos_id) break;
    out.push_back(static_cast<int32_t>(next));
    if (on_token) on_token(static_cast<int32_t>(next));
    if (cache.length >= max_pos) break;
    logits = model->forward(torch::tensor({next}).unsqueeze(0).to(device), &cache);
  }
  return out;
}

}  // namespace outq
