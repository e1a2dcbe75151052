// Activation spikes: the spike statistics against plain loops, the token prefix against the full
// sequence, and QFeM / QFeP end to end on a model with one planted spike. The planted model (see
// planted_model) fires a spike of ~20000 at one channel of layer 0's down_proj input on the
// *first* occurrence of token X after BOS and not on repeats (an attention head counts the X
// tokens seen), and that channel's down_proj column is zero, so the spike leaves the float
// function alone but ruins a per-tensor static activation scale, as real activation spikes do.
// Text is sampled from the float model itself, so its perplexity there is the float model's
// entropy and any change of function raises it in expectation (cross entropy = H + KL).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "outq/core/error.h"
#include "outq/eval/generate.h"
#include "outq/eval/perplexity.h"
#include "outq/ptq/method.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/quantized_io.h"
#include "outq/ptq/spike_stats.h"
#include "test_util.h"
#include "tiny_model.h"

namespace outq {
namespace {

void expect_error(const std::function<void()>& f, const std::string& part) {
  const std::string e = test::error_of(f);
  EXPECT_NE(e.find(part), std::string::npos) << "expected an error containing '" << part << "', got '" << e << "'";
}

constexpr int32_t kBos = 1;
constexpr int32_t kSpikeToken = 7;
constexpr int64_t kSpikeChannel = 5;
const test::TinyShape kShape{32, 48, 2, 2, 48, 64, 2, 0.3, false};

// A tiny model with the spike planted in layer 0 (numbers in the file comment; dims 0, 1, 2 of
// the residual carry "is X", "X tokens seen" and "is BOS").
Llama planted_model() {
  Llama model = test::tiny_model(11, kShape);
  torch::NoGradGuard no_grad;
  auto emb = model->model->embed_tokens->weight;
  emb.select(1, 0).zero_();
  emb.select(1, 1).zero_();
  emb.select(1, 2).zero_();
  emb[kSpikeToken][0] = 50.0;
  emb[kBos][2] = 50.0;
  auto& attn = *model->layer(0).self_attn;
  // Head 0 (rows 0..15): X queries attend to BOS and to every X so far, nothing else; value "X".
  attn.q_proj->weight.slice(0, 0, 16).zero_();
  attn.k_proj->weight.slice(0, 0, 16).zero_();
  attn.q_proj->weight[7][0] = 1.6;  // dim 7 of the head rotates slowest: the score ignores distance
  attn.k_proj->weight[7][0] = 1.6;
  attn.k_proj->weight[7][2] = 1.6;
  attn.v_proj->weight[0].zero_();
  attn.v_proj->weight[0][0] = 1.416;  // X's value: 8
  // Head 0's first output lands in residual dim 1 only; nothing else writes dims 0..2.
  attn.o_proj->weight.slice(0, 0, 3).zero_();
  attn.o_proj->weight[1][0] = 1.0;
  // One gate / up channel: gate > 0 only while "seen" / "is X" < 0.0933, i.e. at the first X
  // (seen = 8 n / (n + 1) at the n-th X, is-X = 50).
  auto& mlp = *model->layer(0).mlp;
  mlp.gate_proj->weight[kSpikeChannel].zero_();
  mlp.gate_proj->weight[kSpikeChannel][0] = 0.0933 * 5400;
  mlp.gate_proj->weight[kSpikeChannel][1] = -5400;
  mlp.up_proj->weight[kSpikeChannel].zero_();
  mlp.up_proj->weight[kSpikeChannel][0] = 9;
  mlp.down_proj->weight.select(1, kSpikeChannel).zero_();
  return model;
}

constexpr int64_t kSampleLen = 63;  // tokens after BOS: one evaluation window of 63

// `n` sequences sampled from `model` after BOS (temperature 1, never BOS again), concatenated
// without their BOS.
std::vector<int32_t> sampled_text(Llama& model, int64_t n, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  KVCache cache;
  auto logits = model->forward(torch::full({n, 1}, kBos, torch::kInt64), &cache);
  std::vector<torch::Tensor> columns;
  for (int64_t t = 0; t < kSampleLen; ++t) {
    auto last = logits.select(1, -1).clone();
    last.select(1, kBos).fill_(-std::numeric_limits<float>::infinity());  // BOS only ever starts a sequence
    const auto next = torch::multinomial(torch::softmax(last, -1), 1, false, gen);  // (n, 1)
    columns.push_back(next);
    if (t + 1 < kSampleLen) logits = model->forward(next, &cache);
  }
  const auto tokens = torch::cat(columns, 1).to(torch::kInt32).contiguous();
  return std::vector<int32_t>(tokens.data_ptr<int32_t>(), tokens.data_ptr<int32_t>() + tokens.numel());
}

Recipe planted_recipe(const std::string& methods, const std::string& tables = "") {
  return recipe_parse(R"(name = "w8a8-static"
methods = [)" + methods + R"(]
[weights]
bits = 8
symmetric = true
granularity = "channel"
[activations]
bits = 8
symmetric = false
granularity = "tensor"
range = "minmax"
dynamic = false
[calibration]
windows = 24
seq_len = 64
batch_size = 8
)" + tables,
                      "planted.toml");
}

double perplexity(Llama& model, const std::vector<int32_t>& tokens, const TokenPrefix* prefix) {
  PerplexityOptions o;
  o.seq_len = kSampleLen;
  o.bos_id = kBos;
  o.batch_size = 8;
  o.show_progress = false;
  o.prefix = prefix;
  return evaluate_perplexity(
             model, [&](uint64_t s, uint64_t n, int32_t* out) { std::copy_n(tokens.begin() + static_cast<long>(s), n, out); },
             tokens.size(), o)
      .perplexity();
}

class PlantedSpike : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path().string();
    shard_path_ = dir_ + "/train.bin";
    ShardInfo info;
    info.split = "train";
    info.num_documents = 1;
    info.vocab_size = kShape.vocab;
    info.tokenizer_checksum = "test";
    Llama model = planted_model();
    shard_write(shard_path_, sampled_text(model, 64, 1), info);
    eval_ = sampled_text(model, 32, 2);
  }
  test::TempDir tmp_;
  std::string dir_, shard_path_;
  std::vector<int32_t> eval_;
};

TEST(SpikeStats, RatioIsMeanOfMaxOverLowerMedian) {
  const auto a = torch::rand({5, 8}, torch::kFloat32) + 0.1;
  const auto r = spike_ratio_per_sequence(a);
  for (int64_t s = 0; s < 5; ++s) {
    std::vector<double> row;
    for (int64_t t = 0; t < 8; ++t) row.push_back(a[s][t].item<double>());
    std::sort(row.begin(), row.end());
    EXPECT_NEAR(r[s].item<double>(), row.back() / row[3], 1e-12) << "sequence " << s;  // lower middle of 8
  }
  EXPECT_DOUBLE_EQ(spike_ratio_per_sequence(torch::zeros({1, 4}))[0].item<double>(), 1.0);
}

TEST(SpikeStats, QkvInputAbsmaxEqualsNormedEmbeddings) {
  // Layer 0's q/k/v input is RMSNorm(embedding) exactly: its token-wise absmax by hand, in double.
  Llama model = test::tiny_model(4, kShape);
  const auto windows = torch::randint(3, kShape.vocab, {3, 10}, torch::kInt64);
  windows.select(1, 0).fill_(kBos);
  const SpikeStats stats = measure_spikes(model, CalibrationData{windows, 2, kBos, nullptr}, "test");
  ASSERT_EQ(stats.slots.size(), 8u);  // 2 layers x 4 slots
  const auto& qkv = stats.slots[0];
  EXPECT_EQ(qkv.module, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(qkv.modules.size(), 3u);
  const auto emb = model->model->embed_tokens->weight.to(torch::kFloat64);
  double ratio_sum = 0;
  for (int64_t s = 0; s < 3; ++s) {
    std::vector<double> row;
    for (int64_t t = 0; t < 10; ++t) {
      const auto x = emb[windows[s][t].item<int64_t>()];
      const double rms = std::sqrt((x * x).mean().item<double>() + model->config().rms_norm_eps);
      row.push_back(x.abs().max().item<double>() / rms);
      EXPECT_NEAR(qkv.absmax[s][t].item<double>(), row.back(), 1e-5 * row.back());
    }
    std::sort(row.begin(), row.end());
    ratio_sum += row.back() / row[4];
  }
  EXPECT_NEAR(qkv.ratio, ratio_sum / 3, 1e-4 * qkv.ratio);
}

TEST(TokenPrefix, ContinuingAfterThePrefixEqualsTheFullSequence) {
  Llama model = test::tiny_model(6, kShape);
  torch::NoGradGuard no_grad;
  const std::vector<int32_t> prefix_ids = {kBos, 9, 12};
  const TokenPrefix prefix = compute_token_prefix(model, prefix_ids);
  auto windows = torch::randint(3, kShape.vocab, {2, 20}, torch::kInt64);
  windows.select(1, 0).fill_(kBos);
  const auto after = forward_after_prefix(model, windows, prefix);  // (2, 19, V)
  const auto full = model->forward(torch::cat({torch::tensor({kBos, 9, 12}, torch::kInt64).unsqueeze(0).expand({2, 3}),
                                               windows.slice(1, 1)}, 1));
  EXPECT_LT((after - full.slice(1, 3)).abs().max().item<double>(), 1e-4);
  EXPECT_LT((prefix.last_logits - full[0][2]).abs().max().item<double>(), 1e-4);
  // Evaluation scores t0 from the prefix's last logits and the rest after the cache.
  std::vector<int32_t> tokens(19);
  for (int64_t i = 0; i < 19; ++i) tokens[i] = static_cast<int32_t>(windows[0][i + 1].item<int64_t>());
  const double ppl = perplexity(model, tokens, &prefix);
  const auto logp = torch::log_softmax(full[0].to(torch::kFloat64), -1);
  double nll = 0;
  for (int64_t i = 0; i < 19; ++i) nll -= logp[2 + i][tokens[i]].item<double>();
  EXPECT_NEAR(ppl, std::exp(nll / 19), 1e-4 * ppl);
  // A KL reference continues after the same cache, so it must have the shape the cache was made for.
  test::TinyShape other = kShape;
  other.layers = 1;
  Llama shallow = test::tiny_model(6, other);
  PerplexityOptions po;
  po.seq_len = 19;
  po.bos_id = kBos;
  po.show_progress = false;
  po.prefix = &prefix;
  expect_error([&] {
    evaluate_perplexity(model, [&](uint64_t s, uint64_t n, int32_t* out) { std::copy_n(tokens.begin() + static_cast<long>(s), n, out); },
                        tokens.size(), po, &shallow);
  }, "to continue after its prefix's cache, found 1, 2, 16");
  // A prefix that fills the context is refused with what was expected.
  std::vector<int32_t> too_long(kShape.positions, 9);
  too_long[0] = kBos;
  expect_error([&] { compute_token_prefix(model, too_long); }, "expected a prefix shorter than the context");
}

TEST(TokenPrefix, GenerationContinuesAfterThePrefixAndNeverEmitsIt) {
  Llama model = test::tiny_model(8, kShape);
  const TokenPrefix prefix = compute_token_prefix(model, {kBos, 9, 12});
  SamplingOptions o;
  o.temperature = 0;
  o.max_new_tokens = 6;
  o.eos_id = -1;
  const auto with_prefix = generate(model, {kBos, 20, 21}, o, {}, &prefix);
  const auto full = generate(model, {kBos, 9, 12, 20, 21}, o);
  EXPECT_EQ(with_prefix, full);
  EXPECT_EQ(generate(model, {kBos}, o, {}, &prefix), generate(model, {kBos, 9, 12}, o));
}

TEST_F(PlantedSpike, QfemExcludesThePlantedModuleAndQfepFindsThePlantedToken) {
  const TokenShard shard(shard_path_);
  Llama float_model = planted_model();
  const double float_ppl = perplexity(float_model, eval_, nullptr);

  // Without a cure, the spike sets the static per-tensor range of layer 0's down_proj input.
  Llama plain = planted_model();
  quantize_model(plain, planted_recipe(""), &shard, kBos);
  const double plain_ppl = perplexity(plain, eval_, nullptr);
  EXPECT_GT(plain_ppl, float_ppl * 1.05) << "the planted spike should hurt static W8A8";

  // QFeM (automatic threshold) keeps exactly that input in float.
  Llama qfem = planted_model();
  const QuantizedModel q = quantize_model(qfem, planted_recipe(R"("qfem")"), &shard, kBos);
  const nlohmann::json& state = q.methods.at(0).state;
  EXPECT_EQ(state.at("excluded"), nlohmann::json::array({"model.layers.0.mlp.down_proj"})) << state.dump();
  EXPECT_EQ(state.at("spikes").size(), 8u);
  EXPECT_GT(state.at("curve").size(), 2u);
  for (const auto& l : q.linears)
    EXPECT_EQ(l.activation_spec.enabled(), l.module != "model.layers.0.mlp.down_proj") << l.module;
  EXPECT_LT(std::abs(perplexity(qfem, eval_, nullptr) / float_ppl - 1), 0.01);

  // QFeP finds X as the spike token; with its prefix static W8A8 is within 1% of float (both after
  // the same prefix, which changes the context of the first tokens).
  Llama qfep = planted_model();
  const QuantizedModel p = quantize_model(qfep, planted_recipe(R"("qfep")"), &shard, kBos);
  ASSERT_TRUE(p.prefix);
  ASSERT_EQ(p.prefix->tokens.size(), 3u);
  EXPECT_EQ(p.prefix->tokens[0], kBos);
  EXPECT_EQ(p.prefix->tokens[2], kSpikeToken) << p.methods.at(0).state.dump();
  EXPECT_EQ(p.methods.at(0).state.at("top_module"), "model.layers.0.mlp.down_proj");
  const double float_after_prefix = perplexity(float_model, eval_, p.prefix.get());
  const double qfep_ppl = perplexity(qfep, eval_, p.prefix.get());
  EXPECT_LT(std::abs(qfep_ppl / float_after_prefix - 1), 0.01) << "float " << float_after_prefix << ", qfep " << qfep_ppl;

  // Saved and loaded, the prefix and the exclusion come back and give the same perplexity.
  Llama both = planted_model();
  const QuantizedModel b = quantize_model(both, planted_recipe(R"("qfep", "qfem")"), &shard, kBos);
  const double both_ppl = perplexity(both, eval_, b.prefix.get());
  quantized_save(both, b, dir_ + "/q", "");
  QuantizedModel info;
  Llama loaded = quantized_load(dir_ + "/q", &info);
  ASSERT_TRUE(info.prefix);
  EXPECT_EQ(info.prefix->tokens, b.prefix->tokens);
  EXPECT_DOUBLE_EQ(perplexity(loaded, eval_, info.prefix.get()), both_ppl);
}

TEST_F(PlantedSpike, BadSettingsAreClearErrorsAndAFullExclusionIsAWarning) {
  const TokenShard shard(shard_path_);
  Llama model = planted_model();
  // A threshold below every ratio excludes every input: quantizing still works, all float.
  const QuantizedModel q = quantize_model(model, planted_recipe(R"("qfem")", "[qfem]\nthreshold = 1\n"), &shard, kBos);
  for (const auto& l : q.linears) EXPECT_FALSE(l.activation_spec.enabled()) << l.module;
  Llama m2 = planted_model();
  expect_error([&] { quantize_model(m2, planted_recipe(R"("qfep")"), &shard, -1); }, "has no BOS token");
  expect_error([&] { make_methods(planted_recipe(R"("qfem")", "[qfem]\nthreshold = 2\nmodules = [\"x\"]\n")); },
                     "either threshold or modules");
  expect_error([&] { make_methods(planted_recipe(R"("qfep")", "[qfep]\ntokens = [1, -4]\n")); },
                     "non-negative token ids");
  Llama m3 = planted_model();
  expect_error(
      [&] { quantize_model(m3, planted_recipe(R"("qfem", "qfep")"), &shard, kBos); }, "expected qfep listed first");
  Llama m4 = planted_model();
  std::string ids = "1";
  for (int i = 1; i < kShape.positions; ++i) ids += ", 9";
  expect_error([&] { quantize_model(m4, planted_recipe(R"("qfep")", "[qfep]\ntokens = [" + ids + "]\n"), &shard, kBos); },
                     "is not shorter than the context");
}

}  // namespace
}  // namespace outq
