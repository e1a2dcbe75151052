// Windowed perplexity with running progress (see perplexity.h for the window layout).
#include "outq/eval/perplexity.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>

#include "outq/core/error.h"
#include "outq/core/progress.h"

namespace outq {

double PerplexityResult::perplexity() const { return std::exp(mean_nll()); }

double PerplexityResult::nll_standard_error() const { return ratio_standard_error(window_nll, window_tokens); }

nlohmann::json PerplexityResult::to_json() const {
  nlohmann::json j = {{"perplexity", perplexity()}, {"mean_nll", mean_nll()}, {"nll_se", nll_standard_error()},
                      {"tokens", tokens},           {"windows", windows},     {"window", window}, {"seconds", seconds}};
  if (has_reference) {
    j["kl_mean"] = kl_mean();
    j["top1_agreement"] = top1_agreement();
  }
  return j;
}

int64_t effective_window(const Llama& model, const PerplexityOptions& o) {
  if (!o.prefix) return o.seq_len;
  const int64_t room = model->config().max_position_embeddings - o.prefix->length() + 1;
  OUTQ_CHECK(room >= 2, "evaluation: a prefix of ", o.prefix->length(), " tokens leaves no room in a context of ",
             model->config().max_position_embeddings, " positions; expected a prefix of at most ",
             model->config().max_position_embeddings - 1, " tokens");
  return std::min(o.seq_len, room);
}

namespace {

// Logits (B, len, V) of windows (B, len + 1) that start with BOS: from BOS, or after the prefix.
torch::Tensor window_logits(Llama& model, const torch::Tensor& windows, int64_t len, const TokenPrefix* prefix) {
  if (!prefix) return model->forward(windows.slice(1, 0, len));
  const int64_t B = windows.size(0);
  const auto first = prefix->last_logits.reshape({1, 1, -1}).expand({B, 1, prefix->last_logits.size(0)});
  if (len == 1) return first.contiguous();
  KVCache cache = prefix->for_batch(B);
  return torch::cat({first, model->forward(windows.slice(1, 1, len), &cache)}, 1);
}

}  // namespace

PerplexityResult evaluate_perplexity(Llama& model, const TokenSource& source, uint64_t num_tokens,
                                     const PerplexityOptions& o_in, Llama* reference, ReferenceLogits* kept) {
  OUTQ_CHECK(o_in.seq_len >= 2 && o_in.seq_len <= model->config().max_position_embeddings,
             "evaluation seq_len: expected 2 .. max_position_embeddings = ", model->config().max_position_embeddings,
             ", found ", o_in.seq_len);
  PerplexityOptions o = o_in;
  o.seq_len = effective_window(model, o_in);
  if (o.prefix) {
    OUTQ_CHECK(o.prefix->last_logits.defined() && o.prefix->last_logits.size(0) == model->config().vocab_size,
               "evaluation: the prefix's logits do not match the model's vocabulary of ", model->config().vocab_size);
    if (reference) {
      // The reference continues after the same cache, so it must have the shape the cache was made for.
      const ModelConfig& a = model->config();
      const ModelConfig& b = (*reference)->config();
      OUTQ_CHECK(a.num_hidden_layers == b.num_hidden_layers && a.num_key_value_heads == b.num_key_value_heads &&
                     a.head_dim() == b.head_dim(),
                 "KL reference model: expected the evaluated model's layers, key/value heads and head size (",
                 a.num_hidden_layers, ", ", a.num_key_value_heads, ", ", a.head_dim(),
                 ") to continue after its prefix's cache, found ", b.num_hidden_layers, ", ", b.num_key_value_heads, ", ",
                 b.head_dim());
    }
  }
  OUTQ_CHECK(o.batch_size >= 1, "evaluation batch size: expected >= 1, found ", o.batch_size);
  const uint64_t total = o.max_tokens > 0 ? std::min<uint64_t>(num_tokens, o.max_tokens) : num_tokens;
  OUTQ_CHECK(total > 0, "evaluation: expected tokens to score, found none");
  // Kept reference logits: read when they are of these windows, else recorded from the reference.
  if (o.prefix) kept = nullptr;
  const std::string windows_id = fmt::format("{} tokens, window {}, batch {}, bos {}", total, o.seq_len, o.batch_size, o.bos_id);
  const bool read_kept = kept && kept->complete && kept->windows == windows_id;
  if (kept && !read_kept) {
    OUTQ_CHECK(reference != nullptr, "evaluation: expected a reference model or its kept logits of ", windows_id,
               ", found neither");
    *kept = ReferenceLogits{windows_id, {}, false};
  }
  const bool has_reference = reference != nullptr || read_kept;
  size_t batch_index = 0;
  const auto t0 = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  const torch::Device device = model->parameters().front().device();
  const bool was_training = model->is_training();
  model->eval();
  if (reference && !read_kept) {
    OUTQ_CHECK((*reference)->config().vocab_size == model->config().vocab_size, "KL reference model: vocab_size: expected ",
               model->config().vocab_size, " (the evaluated model's), found ", (*reference)->config().vocab_size);
    (*reference)->eval();
  }
  PerplexityResult r;
  const uint64_t W = static_cast<uint64_t>(o.seq_len);
  const uint64_t n_windows = (total + W - 1) / W;
  std::unique_ptr<Progress> progress;
  if (o.show_progress) progress = std::make_unique<Progress>("perplexity", static_cast<int64_t>(total), "tok");
  std::vector<int32_t> buffer;
  for (uint64_t w0 = 0; w0 < n_windows; w0 += o.batch_size) {
    const uint64_t nb = std::min<uint64_t>(o.batch_size, n_windows - w0);
    // Windows of a batch have equal length except possibly the very last one: score it alone.
    const bool last_partial = (w0 + nb == n_windows) && total % W != 0;
    const uint64_t full = last_partial ? nb - 1 : nb;
    auto score = [&](uint64_t first, uint64_t count, uint64_t len) {
      if (count == 0) return;
      buffer.assign(count * (len + 1), 0);
      for (uint64_t b = 0; b < count; ++b) {
        buffer[b * (len + 1)] = o.bos_id;
        source((first + b) * W, len, buffer.data() + b * (len + 1) + 1);
      }
      auto windows = torch::from_blob(buffer.data(), {static_cast<int64_t>(count), static_cast<int64_t>(len + 1)},
                                      torch::kInt32).to(device, torch::kInt64);
      auto logits = window_logits(model, windows, static_cast<int64_t>(len), o.prefix);  // (B, len, V)
      // Per-token NLL, summed per window in double (the windows are the standard error's units).
      const auto nll = torch::nn::functional::cross_entropy(
                           logits.reshape({-1, logits.size(-1)}), windows.slice(1, 1).reshape({-1}),
                           torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone))
                           .to(torch::kCPU, torch::kFloat64)
                           .reshape({static_cast<int64_t>(count), static_cast<int64_t>(len)})
                           .sum(1);
      const double* per_window = nll.data_ptr<double>();
      for (uint64_t b = 0; b < count; ++b) {
        r.window_nll.push_back(per_window[b]);
        r.window_tokens.push_back(static_cast<int64_t>(len));
        r.nll_sum += per_window[b];
      }
      if (has_reference) {
        // The reference continues after the same prefix (its cache is the float model's).
        torch::Tensor ref_logits;
        if (read_kept) {
          OUTQ_CHECK(batch_index < kept->batches.size() && kept->batches[batch_index].sizes() == logits.sizes(),
                     "evaluation: the kept reference logits do not match batch ", batch_index, " of ", windows_id);
          ref_logits = kept->batches[batch_index];
        } else {
          ref_logits = window_logits(*reference, windows, static_cast<int64_t>(len), o.prefix);
          if (kept) kept->batches.push_back(ref_logits);
        }
        ++batch_index;
        // In float64 (the logits converted inside log_softmax): KL of close models is a small
        // difference of large terms.
        const auto ref_logp = torch::log_softmax(ref_logits, -1, torch::kFloat64);
        auto diff = torch::log_softmax(logits, -1, torch::kFloat64);
        diff.sub_(ref_logp).neg_();  // ref_logp - logp, in place
        r.kl_sum += ref_logp.exp().mul_(diff).sum().item<double>();
        r.top1_agree += (logits.argmax(-1) == ref_logits.argmax(-1)).sum().item<int64_t>();
      }
      r.tokens += static_cast<int64_t>(count * len);
      r.windows += static_cast<int64_t>(count);
      if (progress) {
        progress->set_note(has_reference ? fmt::format("ppl {:.2f}  KL {:.4f}", r.perplexity(), r.kl_mean())
                                     : fmt::format("ppl {:.2f}", r.perplexity()));
        progress->advance(static_cast<int64_t>(count * len));
      }
    };
    score(w0, full, W);
    if (last_partial) score(w0 + full, 1, total - (n_windows - 1) * W);
  }
  if (progress) progress->finish();
  if (was_training) model->train();
  if (kept && !read_kept) kept->complete = true;
  r.has_reference = has_reference;
  r.window = o.seq_len;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

PerplexityResult evaluate_perplexity(Llama& model, const TokenShard& shard, const PerplexityOptions& options,
                                     Llama* reference, ReferenceLogits* kept) {
  return evaluate_perplexity(
      model, [&](uint64_t start, uint64_t n, int32_t* out) { shard.copy(start, n, out); }, shard.size(), options,
      reference, kept);
}

}  // namespace outq
