// Streaming statistics against a direct computation over all stored activations (1e-5
// relative: both sides accumulate in float64 from the same float32 activations, in different
// orders); accumulator memory independent of the token count; a planted outlier channel and a
// planted token spike are reported where they were planted; weight statistics by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "outq/analysis/analyze.h"

#include "tiny_model.h"

namespace outq {
namespace {

Llama small_model() { return test::tiny_model(8, {32, 40, 4, 4, 64, 24, 2, 0.02}); }

class Store : public Observer {
 public:
  explicit Store(int point) : point_(point) {}
  torch::Tensor observe(const ObservationPoint& p, const torch::Tensor& x) override {
    if (p.index == point_) seen.push_back(x.detach().to(torch::kFloat64).clone());
    return x;
  }
  std::vector<torch::Tensor> seen;

 private:
  int point_;
};

void expect_close(const std::vector<double>& got, const torch::Tensor& want, const char* what) {
  ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel()) << what;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double w = want[i].item<double>();
    EXPECT_NEAR(got[i], w, 1e-5 * std::max(1.0, std::abs(w))) << what << " channel " << i;
  }
}

TEST(ActivationStats, EqualsDirectComputation) {
  Llama m = small_model();
  torch::NoGradGuard g;
  const auto windows = torch::randint(0, 64, {7, 24}, torch::kInt64);
  for (const char* name : {"model.layers.1.mlp.down_proj.input", "model.layers.0.residual_attn",
                           "model.layers.1.self_attn.o_proj.output"}) {
    const int point = m->point(name).index;
    auto store = std::make_shared<Store>(point);
    auto stats = std::make_shared<ActivationStats>(m->points(), std::vector<int>{point}, 3);
    m->observers().clear();
    m->observers().attach(store);
    m->observers().attach(stats);
    for (int64_t b = 0; b < 7; b += 3) {  // batches of 3, 3, 1 windows
      const auto batch = windows.slice(0, b, std::min<int64_t>(b + 3, 7));
      stats->begin_batch(batch, b);
      m->forward(batch);
    }
    const PointStats s = stats->finish().at(0);
    const auto all = torch::cat(store->seen, 0);  // (7, 24, C)
    const auto x = all.reshape({-1, all.size(-1)});
    EXPECT_EQ(s.tokens, 7 * 24);
    expect_close(s.mean_abs, x.abs().mean(0), "mean |x|");
    expect_close(s.mean, x.mean(0), "mean");
    expect_close(s.std, x.std(0, /*unbiased=*/false), "std");
    expect_close(s.max_abs, x.abs().amax(0), "max |x|");
    const auto d = x - x.mean(-1, true);
    const auto kurt = (d.pow(4).mean(-1)) / d.pow(2).mean(-1).pow(2);
    EXPECT_NEAR(s.kurtosis_mean, kurt.mean().item<double>(), 1e-5 * kurt.mean().item<double>());
    EXPECT_NEAR(s.kurtosis_max, kurt.max().item<double>(), 1e-5 * kurt.max().item<double>());
    const auto tok = all.abs().amax(-1);  // (7, 24)
    const auto ratio = tok.amax(-1) / std::get<0>(tok.median(-1));
    EXPECT_NEAR(s.spike_ratio_max, ratio.max().item<double>(), 1e-5 * ratio.max().item<double>());
    EXPECT_NEAR(s.spike_ratio_mean, ratio.mean().item<double>(), 1e-5 * ratio.mean().item<double>());
    // Largest value and where it is.
    const auto flat = all.abs().flatten();
    const int64_t arg = flat.argmax().item<int64_t>(), C = all.size(-1);
    ASSERT_FALSE(s.top.empty());
    EXPECT_NEAR(s.top[0].value, flat.max().item<double>(), 1e-6);
    EXPECT_EQ(s.top[0].window, arg / (24 * C));
    EXPECT_EQ(s.top[0].position, (arg / C) % 24);
    EXPECT_EQ(s.top[0].channel, arg % C);
    EXPECT_EQ(s.top[0].token, windows[s.top[0].window][s.top[0].position].item<int64_t>());
    // Outlier channels by the 6x rule, recomputed.
    const auto ma = x.abs().mean(0);
    std::vector<int64_t> want;
    for (int64_t c = 0; c < C; ++c)
      if (ma[c].item<double>() > 6 * ma.mean().item<double>()) want.push_back(c);
    auto got = s.outlier_channels;
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want);
  }
}

TEST(ActivationStats, MemoryDoesNotGrowWithTokens) {
  Llama m = small_model();
  torch::NoGradGuard g;
  auto stats = std::make_shared<ActivationStats>(m->points(), analysis_points(m), 5);
  m->observers().attach(stats);
  stats->begin_batch(torch::zeros({2, 24}, torch::kInt64), 0);
  m->forward(torch::zeros({2, 24}, torch::kInt64));
  const size_t after_one = stats->state_bytes();
  for (int i = 1; i < 20; ++i) {
    const auto batch = torch::randint(0, 64, {4, 24}, torch::kInt64);
    stats->begin_batch(batch, 2 + 4 * (i - 1));
    m->forward(batch);
  }
  EXPECT_EQ(stats->state_bytes(), after_one);
  EXPECT_GT(after_one, 0u);
}

TEST(ActivationStats, PlantedOutlierChannelIsReportedInTheRightLayers) {
  Llama m = small_model();
  torch::NoGradGuard g;
  m->layer(1).input_layernorm->weight[7].mul_(50.0);  // only layer 1's attention input sees it
  auto stats = std::make_shared<ActivationStats>(m->points(), analysis_points(m), 5);
  m->observers().attach(stats);
  const auto windows = torch::randint(0, 64, {6, 24}, torch::kInt64);
  stats->begin_batch(windows, 0);
  m->forward(windows);
  for (const auto& s : stats->finish()) {
    if (s.name == "model.layers.1.self_attn.q_proj.input") {
      ASSERT_FALSE(s.outlier_channels.empty());
      EXPECT_EQ(s.outlier_channels.front(), 7);
      EXPECT_EQ(s.top.front().channel, 7);
    }
    if (s.name == "model.layers.0.self_attn.q_proj.input" || s.name == "model.layers.1.mlp.gate_proj.input") {
      EXPECT_EQ(std::count(s.outlier_channels.begin(), s.outlier_channels.end(), 7), 0) << s.name;
    }
  }
}

TEST(ActivationStats, PlantedTokenSpikeIsFoundWithItsToken) {
  Llama m = small_model();
  torch::NoGradGuard g;
  m->model->embed_tokens->weight[17].mul_(50.0);
  auto windows = torch::randint(18, 64, {4, 24}, torch::kInt64);  // token 17 nowhere ...
  windows[2][9] = 17;                                               // ... except here
  const int point = m->point("model.layers.0.residual_attn").index;
  auto stats = std::make_shared<ActivationStats>(m->points(), std::vector<int>{point}, 3);
  m->observers().attach(stats);
  stats->begin_batch(windows, 0);
  m->forward(windows);
  const PointStats s = stats->finish().at(0);
  EXPECT_GT(s.spike_ratio_max, 10.0);
  EXPECT_EQ(s.spike_window, 2);
  EXPECT_EQ(s.spike_position, 9);
  EXPECT_EQ(s.spike_token, 17);
  EXPECT_EQ(s.top.front().token, 17);
}

TEST(WeightStats, MagnitudesRatiosAndKurtosisByHand) {
  Llama m = small_model();
  {
    torch::NoGradGuard g;
    m->linear_weight("model.layers.0.mlp.down_proj").select(1, 3).mul_(20.0);  // one loud input channel
  }
  for (const auto& w : weight_stats(m)) {
    if (w.name != "model.layers.0.mlp.down_proj") continue;
    const auto W = m->linear_weight(w.name).detach().to(torch::kFloat64);
    expect_close(w.in_magnitude, W.abs().mean(0), "in magnitude");
    expect_close(w.out_magnitude, W.abs().mean(1), "out magnitude");
    const auto in = W.abs().mean(0);
    EXPECT_NEAR(w.in_max_median, in.max().item<double>() / std::get<0>(in.median(0)).item<double>() , 1e-9 * w.in_max_median + 1e-3);
    EXPECT_GT(w.in_max_median, 10.0);
    const auto d = W - W.mean();
    EXPECT_NEAR(w.kurtosis, (d.pow(4).mean() / d.pow(2).mean().pow(2)).item<double>(), 1e-9 * w.kurtosis);
  }
}

}  // namespace
}  // namespace outq
