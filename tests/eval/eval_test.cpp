// Perplexity against a direct computation (per-position log-softmax in double, window by
// window), the learning-rate schedule, and sampling: greedy/top-k/top-p filtering and the
// empirical distribution of temperature sampling; KV-cached greedy generation against
// re-running the full sequence every step.
#include <gtest/gtest.h>

#include <cmath>

#include "outq/core/error.h"
#include "outq/eval/generate.h"
#include "outq/eval/perplexity.h"
#include "outq/train/train_config.h"

#include "test_util.h"
#include "tiny_model.h"

namespace outq {
namespace {

Llama tiny_model(uint64_t seed) { return test::tiny_model(seed, {16, 20, 2, 2, 29, 12, 2, 0.4}); }

TEST(Perplexity, MatchesDirectComputationIncludingPartialWindow) {
  Llama m = tiny_model(1);
  std::vector<int32_t> tokens(53);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7 + 3) % 29);
  const TokenSource source = [&](uint64_t s, uint64_t n, int32_t* out) { std::copy_n(tokens.begin() + s, n, out); };
  for (int64_t max_tokens : {int64_t{0}, int64_t{30}}) {
    PerplexityOptions o;
    o.seq_len = 10;
    o.batch_size = 3;
    o.bos_id = 1;
    o.max_tokens = max_tokens;
    o.show_progress = false;
    const PerplexityResult r = evaluate_perplexity(m, source, tokens.size(), o);
    // Direct: every window of up to 10 tokens, input BOS + window[:-1], score each target.
    const size_t total = max_tokens ? static_cast<size_t>(max_tokens) : tokens.size();
    double nll = 0;
    size_t count = 0;
    std::vector<double> window_nll;
    std::vector<double> window_len;
    torch::NoGradGuard g;
    for (size_t start = 0; start < total; start += 10) {
      const size_t len = std::min<size_t>(10, total - start);
      window_nll.push_back(-nll);
      window_len.push_back(static_cast<double>(len));
      std::vector<int64_t> input = {1};
      for (size_t i = 0; i + 1 < len; ++i) input.push_back(tokens[start + i]);
      const auto logits = m->forward(torch::tensor(input).unsqueeze(0))[0].to(torch::kFloat64);
      for (size_t t = 0; t < len; ++t) {
        const auto row = logits[t];
        const double lse = std::log(row.exp().sum().item<double>());
        nll += lse - row[tokens[start + t]].item<double>();
        ++count;
      }
      window_nll.back() += nll;
    }
    EXPECT_EQ(r.tokens, static_cast<int64_t>(count));
    EXPECT_EQ(r.windows, static_cast<int64_t>((total + 9) / 10));
    // float32 logits vs double log-sum-exp: relative agreement to 1e-5 of the summed NLL.
    EXPECT_NEAR(r.nll_sum, nll, 1e-5 * nll);
    EXPECT_NEAR(r.perplexity(), std::exp(nll / count), 1e-5 * std::exp(nll / count));
    // Per window, and the standard error of the mean NLL over windows: W / (W - 1) times the
    // token-weighted spread of the window means, sum_w n_w^2 (m_w - m)^2 / (sum n)^2.
    ASSERT_EQ(r.window_nll.size(), window_nll.size());
    const double mean = nll / static_cast<double>(count);
    double spread = 0;
    for (size_t w = 0; w < window_nll.size(); ++w) {
      EXPECT_NEAR(r.window_nll[w], window_nll[w], 1e-5 * window_nll[w]);
      EXPECT_EQ(r.window_tokens[w], static_cast<int64_t>(window_len[w]));
      const double m_w = window_nll[w] / window_len[w];
      spread += window_len[w] * window_len[w] * (m_w - mean) * (m_w - mean);
    }
    const double W = static_cast<double>(window_nll.size());
    const double se = std::sqrt(W / (W - 1) * spread) / static_cast<double>(count);
    EXPECT_GT(se, 0.0);
    // 1e-4 relative: the windows' float32 NLLs (1e-5 each) enter through differences from the mean.
    EXPECT_NEAR(r.nll_standard_error(), se, 1e-4 * se);
    if (max_tokens == 30) {  // equal windows: the sample sd of the window means over sqrt(W)
      double sd = 0;
      for (double x : window_nll) sd += (x / 10 - mean) * (x / 10 - mean);
      EXPECT_NEAR(r.nll_standard_error(), std::sqrt(sd / (W - 1) / W), 1e-4 * se);
    }
  }
}

// The paired standard error of two models' mean NLLs on the same windows equals the ratio
// estimator's over the per-window differences computed here; a model against itself gives 0; the
// windows must match.
TEST(Perplexity, PairedStandardErrorOfTwoModelsOnTheSameWindows) {
  Llama a = tiny_model(1), b = tiny_model(2);
  std::vector<int32_t> tokens(97);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 11 + 5) % 29);
  const TokenSource source = [&](uint64_t s, uint64_t n, int32_t* out) { std::copy_n(tokens.begin() + s, n, out); };
  PerplexityOptions o;
  o.seq_len = 12;
  o.batch_size = 4;
  o.show_progress = false;
  const PerplexityResult ra = evaluate_perplexity(a, source, tokens.size(), o), rb = evaluate_perplexity(b, source, tokens.size(), o);
  ASSERT_EQ(ra.window_tokens, rb.window_tokens);
  const double diff = ra.mean_nll() - rb.mean_nll();
  double ss = 0, n = 0;
  for (size_t w = 0; w < ra.window_nll.size(); ++w) {
    const double t = static_cast<double>(ra.window_tokens[w]);
    const double d = ra.window_nll[w] - rb.window_nll[w] - diff * t;
    ss += d * d;
    n += t;
  }
  const double W = static_cast<double>(ra.window_nll.size());
  const double want = std::sqrt(W / (W - 1) * ss) / n;
  EXPECT_NEAR(paired_nll_standard_error(ra.window_nll, rb.window_nll, ra.window_tokens), want, 1e-9 * want);
  EXPECT_EQ(paired_nll_standard_error(ra.window_nll, ra.window_nll, ra.window_tokens), 0.0);
  auto shorter = rb.window_nll;
  shorter.pop_back();
  EXPECT_NE(test::error_of([&] { paired_nll_standard_error(ra.window_nll, shorter, ra.window_tokens); })
                .find("expected the same windows on both sides"),
            std::string::npos);
}

// KL against a reference: a direct computation, then the reference's logits kept from one
// evaluation give later evaluations of other models exactly the same KL and top-1 agreement as
// running the reference again; kept logits of other windows are not used (refilled, or an error
// without a reference model).
TEST(Perplexity, KlAgainstKeptReferenceLogitsEqualsRunningTheReference) {
  Llama ref = tiny_model(1), a = tiny_model(2), b = tiny_model(3);
  std::vector<int32_t> tokens(61);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 13 + 2) % 29);
  const TokenSource source = [&](uint64_t s, uint64_t n, int32_t* out) { std::copy_n(tokens.begin() + s, n, out); };
  PerplexityOptions o;
  o.seq_len = 9;  // 61 tokens: 6 full windows and a partial one, batches of 4
  o.batch_size = 4;
  o.show_progress = false;
  const PerplexityResult direct = evaluate_perplexity(b, source, tokens.size(), o, &ref);
  {  // KL(ref || b) per position in double, from the two models' full-window logits
    torch::NoGradGuard g;
    double kl = 0;
    int64_t agree = 0;
    for (size_t start = 0; start < tokens.size(); start += 9) {
      const size_t len = std::min<size_t>(9, tokens.size() - start);
      std::vector<int64_t> input = {o.bos_id};
      for (size_t i = 0; i + 1 < len; ++i) input.push_back(tokens[start + i]);
      const auto x = torch::tensor(input).unsqueeze(0);
      const auto lp = torch::log_softmax(b->forward(x)[0].to(torch::kFloat64), -1);
      const auto lr = torch::log_softmax(ref->forward(x)[0].to(torch::kFloat64), -1);
      kl += (lr.exp() * (lr - lp)).sum().item<double>();
      agree += (lp.argmax(-1) == lr.argmax(-1)).sum().item<int64_t>();
    }
    // float32 logits, double softmax: the sums agree to 1e-6 relative.
    EXPECT_NEAR(direct.kl_sum, kl, 1e-6 * kl);
    EXPECT_EQ(direct.top1_agree, agree);
  }
  ReferenceLogits kept;
  const PerplexityResult first = evaluate_perplexity(a, source, tokens.size(), o, &ref, &kept);
  EXPECT_TRUE(kept.complete);
  EXPECT_EQ(kept.batches.size(), 3u);  // two batches of 4 and 2 full windows, then the partial window
  const PerplexityResult from_kept = evaluate_perplexity(b, source, tokens.size(), o, nullptr, &kept);
  EXPECT_TRUE(from_kept.has_reference);
  EXPECT_EQ(from_kept.kl_sum, direct.kl_sum);
  EXPECT_EQ(from_kept.top1_agree, direct.top1_agree);
  EXPECT_EQ(from_kept.nll_sum, direct.nll_sum);
  // Other windows: without a reference model an error naming them, with one the kept logits are
  // replaced by the reference's on those windows.
  PerplexityOptions shorter = o;
  shorter.max_tokens = 40;
  EXPECT_NE(test::error_of([&] { evaluate_perplexity(b, source, tokens.size(), shorter, nullptr, &kept); })
                .find("expected a reference model or its kept logits of 40 tokens"),
            std::string::npos);
  const PerplexityResult refilled = evaluate_perplexity(b, source, tokens.size(), shorter, &ref, &kept);
  EXPECT_EQ(refilled.kl_sum, evaluate_perplexity(b, source, tokens.size(), shorter, &ref).kl_sum);
  EXPECT_EQ(evaluate_perplexity(a, source, tokens.size(), shorter, nullptr, &kept).kl_sum,
            evaluate_perplexity(a, source, tokens.size(), shorter, &ref).kl_sum);
  EXPECT_GT(first.kl_sum, 0.0);
}

TEST(Perplexity, BadOptionsAreErrors) {
  Llama m = tiny_model(1);
  std::vector<int32_t> tokens(20, 3);
  const TokenSource source = [&](uint64_t s, uint64_t n, int32_t* out) { std::copy_n(tokens.begin() + s, n, out); };
  PerplexityOptions o;
  o.show_progress = false;
  o.seq_len = 13;  // > max_position_embeddings 12
  EXPECT_THROW(evaluate_perplexity(m, source, tokens.size(), o), Error);
  o.seq_len = 8;
  EXPECT_THROW(evaluate_perplexity(m, source, 0, o), Error);
}

TEST(Schedule, WarmupThenCosine) {
  TrainConfig c;
  c.lr = 1.0;
  c.warmup_steps = 10;
  c.steps = 110;
  c.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(c.lr_at(0), 0.1);
  EXPECT_DOUBLE_EQ(c.lr_at(9), 1.0);
  EXPECT_DOUBLE_EQ(c.lr_at(10), 1.0);
  EXPECT_NEAR(c.lr_at(60), 0.55, 1e-12);  // half-way: cosine at 0.5
  EXPECT_NEAR(c.lr_at(109), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 0.99)), 1e-12);
  EXPECT_DOUBLE_EQ(c.lr_at(200), 0.1);
}

TEST(Sampling, GreedyTopKAndTopP) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto logits = torch::tensor({0.1f, 2.0f, 1.9f, -1.0f, 0.5f});
  SamplingOptions o;
  o.temperature = 0;
  EXPECT_EQ(sample_token(logits, o, gen), 1);
  o.temperature = 1.0;
  o.top_k = 1;
  o.top_p = 1.0;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sample_token(logits, o, gen), 1);
  o.top_k = 0;
  o.top_p = 0.01;  // only the most likely token reaches the mass
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sample_token(logits, o, gen), 1);
  o.top_k = 2;
  o.top_p = 1.0;
  for (int i = 0; i < 50; ++i) {
    const auto t = sample_token(logits, o, gen);
    EXPECT_TRUE(t == 1 || t == 2);
  }
}

TEST(Sampling, TemperatureSamplingFollowsSoftmax) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  const auto logits = torch::tensor({1.0f, 0.0f, -1.0f, 0.5f});
  SamplingOptions o;
  o.temperature = 2.0;
  o.top_k = 0;
  o.top_p = 1.0;
  const auto p = torch::softmax(logits / 2.0, 0);
  std::vector<int> counts(4, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[sample_token(logits, o, gen)];
  for (int k = 0; k < 4; ++k) {
    const double expected = p[k].item<double>() * n;
    EXPECT_NEAR(counts[k], expected, 5 * std::sqrt(expected));  // 5 binomial standard deviations
  }
}

TEST(Generate, CachedGreedyEqualsFullRecomputation) {
  Llama m = tiny_model(4);
  SamplingOptions o;
  o.temperature = 0;
  o.max_new_tokens = 8;
  o.eos_id = -1;  // never stop early
  const std::vector<int32_t> prompt = {1, 5, 9};
  const auto out = generate(m, prompt, o);
  ASSERT_EQ(out.size(), 8u);
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  torch::NoGradGuard g;
  for (int32_t tok : out) {
    const auto logits = m->forward(torch::tensor(seq).unsqueeze(0));
    EXPECT_EQ(logits[0][static_cast<int64_t>(seq.size()) - 1].argmax().item<int64_t>(), tok);
    seq.push_back(tok);
  }
  o.max_new_tokens = 100;  // stops at max_position_embeddings (12)
  EXPECT_EQ(generate(m, prompt, o).size(), 12u - 3u);
}

}  // namespace
}  // namespace outq
