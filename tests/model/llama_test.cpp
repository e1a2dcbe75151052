// The decoder against an independent re-implementation written here with explicit loops in
// double precision (per-head attention, pairwise RoPE rotation, RMSNorm, SwiGLU), plus KV-cache
// decoding, observation points and grouped-query attention.
//
// Tolerance: the model runs in float32 (unit round-off 6e-8); with sums of at most ~40 terms per
// dot product and 2 layers the accumulated relative error stays far below 1e-5 of the largest
// logit, which is the bound checked.
#include <gtest/gtest.h>

#include <cmath>

#include "outq/core/error.h"
#include "outq/model/llama.h"

#include "tiny_model.h"

namespace outq {
namespace {

using Mat = std::vector<std::vector<double>>;  // [row][col]

Mat to_mat(const torch::Tensor& t) {
  auto d = t.to(torch::kFloat64).contiguous();
  Mat m(d.size(0), std::vector<double>(d.size(1)));
  auto a = d.accessor<double, 2>();
  for (int64_t i = 0; i < d.size(0); ++i)
    for (int64_t j = 0; j < d.size(1); ++j) m[i][j] = a[i][j];
  return m;
}

std::vector<double> matvec(const Mat& w, const std::vector<double>& x) {  // w is (out, in)
  std::vector<double> y(w.size(), 0.0);
  for (size_t o = 0; o < w.size(); ++o)
    for (size_t i = 0; i < x.size(); ++i) y[o] += w[o][i] * x[i];
  return y;
}

std::vector<double> rmsnorm(const std::vector<double>& x, const torch::Tensor& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double r = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * w[i].item<double>();
  return y;
}

// Rotates pairs (i, i + D/2) of one head vector by angle pos * theta^(-2i/D).
void rope(std::vector<double>& v, size_t offset, int D, int64_t pos, double theta) {
  for (int i = 0; i < D / 2; ++i) {
    const double angle = pos * std::pow(theta, -2.0 * i / D);
    const double a = v[offset + i], b = v[offset + i + D / 2];
    v[offset + i] = a * std::cos(angle) - b * std::sin(angle);
    v[offset + i + D / 2] = b * std::cos(angle) + a * std::sin(angle);
  }
}

// Logits (T, V) for one sequence, computed position by position.
Mat reference_logits(Llama& m, const std::vector<int64_t>& tokens) {
  const ModelConfig& c = m->config();
  const int H = c.num_attention_heads, K = c.num_key_value_heads, D = c.head_dim();
  const size_t T = tokens.size();
  const Mat emb = to_mat(m->model->embed_tokens->weight);
  std::vector<std::vector<double>> x(T);
  for (size_t t = 0; t < T; ++t) x[t] = emb[tokens[t]];
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    auto layer = m->model->layers[l]->as<DecoderLayerImpl>();
    const Mat wq = to_mat(layer->self_attn->q_proj->weight), wk = to_mat(layer->self_attn->k_proj->weight),
              wv = to_mat(layer->self_attn->v_proj->weight), wo = to_mat(layer->self_attn->o_proj->weight);
    const bool post = c.norm_placement == "post";  // post-norm: each norm after its residual sum
    std::vector<std::vector<double>> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      const auto h = post ? x[t] : rmsnorm(x[t], layer->input_layernorm->weight, c.rms_norm_eps);
      q[t] = matvec(wq, h), k[t] = matvec(wk, h), v[t] = matvec(wv, h);
      for (int hh = 0; hh < H; ++hh) rope(q[t], hh * D, D, t, c.rope_theta);
      for (int kk = 0; kk < K; ++kk) rope(k[t], kk * D, D, t, c.rope_theta);
    }
    for (size_t t = 0; t < T; ++t) {
      std::vector<double> attn(H * D, 0.0);
      for (int hh = 0; hh < H; ++hh) {
        const int kv = hh / (H / K);
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (size_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += q[t][hh * D + d] * k[j][kv * D + d];
          s[j] = dot / std::sqrt(D);
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (auto& e : s) z += (e = std::exp(e - mx));
        for (size_t j = 0; j <= t; ++j)
          for (int d = 0; d < D; ++d) attn[hh * D + d] += s[j] / z * v[j][kv * D + d];
      }
      const auto o = matvec(wo, attn);
      for (size_t i = 0; i < o.size(); ++i) x[t][i] += o[i];
    }
    if (post)
      for (size_t t = 0; t < T; ++t) x[t] = rmsnorm(x[t], layer->input_layernorm->weight, c.rms_norm_eps);
    const Mat wg = to_mat(layer->mlp->gate_proj->weight), wu = to_mat(layer->mlp->up_proj->weight),
              wd = to_mat(layer->mlp->down_proj->weight);
    for (size_t t = 0; t < T; ++t) {
      const auto h = post ? x[t] : rmsnorm(x[t], layer->post_attention_layernorm->weight, c.rms_norm_eps);
      auto g = matvec(wg, h);
      const auto u = matvec(wu, h);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const auto dn = matvec(wd, g);
      for (size_t i = 0; i < dn.size(); ++i) x[t][i] += dn[i];
      if (post) x[t] = rmsnorm(x[t], layer->post_attention_layernorm->weight, c.rms_norm_eps);
    }
  }
  const Mat head = to_mat(m->lm_head_weight());
  Mat logits(T);
  for (size_t t = 0; t < T; ++t) logits[t] = matvec(head, rmsnorm(x[t], m->model->norm->weight, c.rms_norm_eps));
  return logits;
}

ModelConfig awkward_config(bool tied, int kv_heads, const std::string& placement = "pre") {
  ModelConfig c = test::tiny_config({24, 37, 4, kv_heads, 53, 19, 2, 0.3, tied});  // head dim 6
  c.norm_placement = placement;
  return c;
}

void randomize_norms(Llama& m) {
  torch::NoGradGuard g;
  torch::manual_seed(5);
  for (auto& p : m->named_parameters())
    if (p.key().find("norm") != std::string::npos) p.value().uniform_(0.5, 1.5);
}

class Identity : public Observer {
 public:
  torch::Tensor observe(const ObservationPoint&, const torch::Tensor& x) override { return x; }
};

class LlamaReference : public ::testing::TestWithParam<std::tuple<bool, int, std::string>> {};

TEST_P(LlamaReference, LogitsMatchExplicitLoops) {
  const auto [tied, kv, placement] = GetParam();
  Llama m(awkward_config(tied, kv, placement));
  m->reset_parameters(11);
  randomize_norms(m);
  torch::NoGradGuard g;
  const std::vector<std::vector<int64_t>> seqs = {{3, 17, 52, 0, 9, 9, 41, 2, 33, 1, 7, 50, 12},
                                                  {5, 5, 5, 8, 44, 31, 0, 19, 26, 38, 1, 2, 3}};
  auto tokens = torch::tensor(seqs[0]).unsqueeze(0);
  tokens = torch::cat({tokens, torch::tensor(seqs[1]).unsqueeze(0)}, 0);  // (2, 13)
  // Both code paths: fused q/k/v and gate/up GEMMs (no observer) and per-module linears (observed).
  for (bool observed : {false, true}) {
    m->observers().clear();
    if (observed) m->observers().attach(std::make_shared<Identity>());
    const auto logits = m->forward(tokens).to(torch::kFloat64);
    double max_ref = 0, max_err = 0;
    for (int b = 0; b < 2; ++b) {
      const Mat ref = reference_logits(m, seqs[b]);
      for (size_t t = 0; t < ref.size(); ++t)
        for (size_t v = 0; v < ref[t].size(); ++v) {
          max_ref = std::max(max_ref, std::abs(ref[t][v]));
          max_err = std::max(max_err, std::abs(ref[t][v] - logits[b][t][v].item<double>()));
        }
    }
    EXPECT_GT(max_ref, 0.1);  // guard against a trivially passing all-zero comparison
    EXPECT_LE(max_err, 1e-5 * max_ref) << "observed " << observed << " max_err " << max_err << " max_ref " << max_ref;
  }
}

INSTANTIATE_TEST_SUITE_P(TiedAndGrouped, LlamaReference,
                         ::testing::Values(std::make_tuple(false, 4, "pre"), std::make_tuple(true, 2, "pre"),
                                           std::make_tuple(false, 1, "pre"), std::make_tuple(false, 2, "post"),
                                           std::make_tuple(true, 4, "post")));

// The two placements are different functions of the same weights, and the placement survives
// config.json (as outq_norm_placement; Hugging Face's LLaMA is pre-norm only).
TEST(LlamaPostNorm, DiffersFromPreNormAndRoundTripsThroughConfigJson) {
  Llama pre(awkward_config(false, 2)), post(awkward_config(false, 2, "post"));
  pre->reset_parameters(3);
  post->reset_parameters(3);
  torch::NoGradGuard g;
  const auto tokens = torch::tensor(std::vector<int64_t>{1, 2, 3, 4, 5, 6}).unsqueeze(0);
  EXPECT_GT((pre->forward(tokens) - post->forward(tokens)).abs().max().item<double>(), 1e-2);
  const ModelConfig back = ModelConfig::from_hf_json(post->config().to_hf_json(), "config.json");
  EXPECT_EQ(back.norm_placement, "post");
  EXPECT_FALSE(pre->config().to_hf_json().contains("outq_norm_placement"));
  ModelConfig bad = awkward_config(false, 2);
  bad.norm_placement = "middle";
  try {
    bad.validate();
    ADD_FAILURE() << "norm_placement = middle accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.norm_placement: expected \"pre\" or \"post\", found \"middle\""),
              std::string::npos) << e.what();
  }
}

TEST(LlamaKVCache, IncrementalDecodeEqualsFullForward) {
  Llama m(awkward_config(false, 2));
  m->reset_parameters(3);
  torch::NoGradGuard g;
  auto tokens = torch::randint(0, 53, {2, 11}, torch::kInt64);
  const auto full = m->forward(tokens);
  KVCache cache;
  std::vector<torch::Tensor> parts = {m->forward(tokens.slice(1, 0, 4), &cache)};  // prefill 4
  KVCache prefix = cache.clone();
  for (int t = 4; t < 11; ++t) parts.push_back(m->forward(tokens.slice(1, t, t + 1), &cache));
  EXPECT_EQ(cache.length, 11);
  const auto incremental = torch::cat(parts, 1);
  EXPECT_LE((incremental - full).abs().max().item<double>(), 1e-5 * full.abs().max().item<double>());
  // The saved prefix is unchanged by later decoding and can be continued again.
  EXPECT_EQ(prefix.length, 4);
  const auto rest = m->forward(tokens.slice(1, 4), &prefix);
  EXPECT_LE((rest - full.slice(1, 4)).abs().max().item<double>(), 1e-5 * full.abs().max().item<double>());
}

TEST(LlamaKVCache, LastLogitsOnlyEqualTheLastRowAndFillTheSameCache) {
  // A prompt's prefill with Logits::kLast: the logits of its last position alone, the last row of
  // the full forward (within 1e-6 of the largest logit: the head's matrix product of one row may
  // sum in another order than that of seven), and the same cache, bit for bit (the layers run on
  // every position either way); decoding on from either cache gives the same logits. Pre-norm with
  // an untied head and post-norm with a tied one.
  for (const auto& [tied, placement] : {std::pair{false, "pre"}, std::pair{true, "post"}}) {
    Llama m(awkward_config(tied, 2, placement));
    m->reset_parameters(5);
    torch::NoGradGuard g;
    const auto tokens = torch::randint(0, 53, {2, 9}, torch::kInt64);
    KVCache all_cache, last_cache;
    const auto all = m->forward(tokens.slice(1, 0, 7), &all_cache);
    const auto last = m->forward(tokens.slice(1, 0, 7), &last_cache, LlamaImpl::Logits::kLast);
    ASSERT_EQ(last.sizes(), (std::vector<int64_t>{2, 1, all.size(2)})) << placement;
    const double scale = all.abs().max().item<double>();
    EXPECT_LE((last - all.slice(1, 6, 7)).abs().max().item<double>(), 1e-6 * scale) << placement;
    ASSERT_EQ(last_cache.length, 7);
    for (size_t l = 0; l < all_cache.keys.size(); ++l) {
      EXPECT_TRUE(torch::equal(last_cache.keys[l], all_cache.keys[l])) << placement;
      EXPECT_TRUE(torch::equal(last_cache.values[l], all_cache.values[l])) << placement;
    }
    EXPECT_TRUE(torch::equal(m->forward(tokens.slice(1, 7), &last_cache), m->forward(tokens.slice(1, 7), &all_cache)))
        << placement;
  }
}

TEST(LlamaInput, TooLongSequenceIsAnError) {
  Llama m(awkward_config(false, 4));
  torch::NoGradGuard g;
  EXPECT_THROW(m->forward(torch::zeros({1, 20}, torch::kInt64)), Error);
  KVCache cache;
  m->forward(torch::zeros({1, 19}, torch::kInt64), &cache);
  EXPECT_THROW(m->forward(torch::zeros({1, 1}, torch::kInt64), &cache), Error);
}

TEST(LlamaConfig, ImpossibleShapesAreErrors) {
  ModelConfig c = awkward_config(false, 4);
  c.num_attention_heads = 5;  // does not divide 24
  EXPECT_THROW(Llama{c}, Error);
  c = awkward_config(false, 3);  // 3 kv heads do not divide 4
  EXPECT_THROW(c.validate(), Error);
  c = awkward_config(false, 4);
  c.hidden_size = 20;  // head dim 5 is odd
  EXPECT_THROW(c.validate(), Error);
}

class Recorder : public Observer {
 public:
  torch::Tensor observe(const ObservationPoint& p, const torch::Tensor& x) override {
    seen.push_back(p.name);
    shapes.push_back(x.sizes().vec());
    return x;
  }
  std::vector<std::string> seen;
  std::vector<std::vector<int64_t>> shapes;
};

class ZeroDownProjInput : public Observer {
 public:
  torch::Tensor observe(const ObservationPoint& p, const torch::Tensor& x) override {
    return p.name == "model.layers.1.mlp.down_proj.input" ? torch::zeros_like(x) : x;
  }
};

TEST(LlamaObservation, PointsAreNamedAndSeenInOrder) {
  Llama m(awkward_config(false, 2));
  EXPECT_EQ(m->points().size(), 36u);  // 14 linears x 2 + 2 residuals + scores and probs, per block
  EXPECT_EQ(m->point("model.layers.0.self_attn.q_proj.input").kind, PointKind::kLinearInput);
  EXPECT_EQ(m->point("model.layers.1.residual_mlp").layer, 1);
  EXPECT_THROW(m->point("model.layers.9.mlp.up_proj.input"), Error);
  auto rec = std::make_shared<Recorder>();
  m->observers().attach(rec);
  torch::NoGradGuard g;
  const auto observed = m->forward(torch::zeros({1, 5}, torch::kInt64));
  EXPECT_EQ(rec->seen.size(), 36u);  // every point once
  EXPECT_EQ(rec->seen.front(), "model.layers.0.self_attn.q_proj.input");
  EXPECT_EQ(rec->seen.back(), "model.layers.1.residual_mlp");
  // Scores and probabilities (B, H, T, S) right after k/v, before o_proj's input; the rest (B, T, C).
  EXPECT_EQ(rec->seen[6], "model.layers.0.self_attn.scores");
  EXPECT_EQ(rec->seen[7], "model.layers.0.self_attn.probs");
  for (size_t i = 0; i < rec->seen.size(); ++i)
    EXPECT_EQ(rec->shapes[i].size(), rec->seen[i].find("self_attn.scores") != std::string::npos ||
                                             rec->seen[i].find("self_attn.probs") != std::string::npos
                                         ? 4u
                                         : 3u)
        << rec->seen[i];
  m->observers().clear();
  // Without observers q/k/v and gate/up run as fused GEMMs: equal up to float rounding.
  EXPECT_TRUE(torch::allclose(observed, m->forward(torch::zeros({1, 5}, torch::kInt64)), 1e-5, 1e-6));
}

TEST(LlamaObservation, ObserverCanReplaceTensors) {
  Llama m(awkward_config(false, 2));
  m->reset_parameters(2);
  torch::NoGradGuard g;
  auto tokens = torch::randint(0, 53, {1, 6}, torch::kInt64);
  const auto plain = m->forward(tokens);
  m->observers().attach(std::make_shared<ZeroDownProjInput>());
  const auto changed = m->forward(tokens);
  EXPECT_FALSE(torch::allclose(plain, changed));
  // Zeroing layer 1's down_proj input equals removing that MLP's contribution.
  m->observers().clear();
  auto layer = m->model->layers[1]->as<DecoderLayerImpl>();
  layer->mlp->down_proj->weight.zero_();
  EXPECT_TRUE(torch::allclose(m->forward(tokens), changed, 1e-6, 1e-6));
}

}  // namespace
}  // namespace outq
