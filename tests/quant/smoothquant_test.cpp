// SmoothQuant and the method plug-in point: the transform against a plain double-precision
// reference of its formula, the float function it must preserve, its effect on per-tensor
// activation quantization, the quantized directory round trip with a method's state, and the
// recipe errors (unknown names and keys, duplicates, slots without a norm, alpha out of range).
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "outq/core/error.h"
#include "outq/ptq/activation_quant.h"
#include "outq/ptq/method.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/quantized_io.h"
#include "test_util.h"
#include "tiny_model.h"

namespace outq {
namespace {

// Awkward widths: 30 channels (3 heads of 10), 46 MLP channels, vocabulary 41.
const test::TinyShape kShape{30, 46, 3, 3, 41, 20, 2, 0.3};

// A model with outlier channels: a few norm-weight channels of every block scaled up, so that the
// norm outputs (the smoothed slots' inputs) have channels far above the rest, as trained LLMs do.
Llama outlier_model(uint64_t seed) {
  Llama m = test::tiny_model(seed, kShape);
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed + 100);
  for (int l = 0; l < kShape.layers; ++l) {
    for (const char* norm : {"input_layernorm", "post_attention_layernorm"}) {
      auto& w = m->layer(l).norm(norm).weight;
      w.copy_(torch::rand({kShape.hidden}, gen) + 0.5);
      w[3] *= 25;
      w[17] *= -12;
    }
  }
  return m;
}

torch::Tensor random_windows(int64_t n, int64_t T, uint64_t seed) {
  auto w = torch::randint(1, kShape.vocab, {n, T}, at::detail::createCPUGenerator(seed), torch::kInt64);
  w.select(1, 0).fill_(0);  // BOS first, as calibration windows are
  return w;
}

MethodEntry smoothquant_entry(const std::string& settings_json) {
  MethodEntry e;
  e.name = "smoothquant";
  e.settings = nlohmann::json::parse(settings_json);
  e.origin = "test";
  return e;
}

Recipe recipe(const std::string& text) { return recipe_parse(text, "r.toml"); }

using test::error_of;

// The transform against its formula in plain double loops, on block 0's q/k/v slot, whose input
// is RMSNorm(embedding) and so computable by hand: s_j = max|X_j|^a / max_k |W_kj|^(1-a) over the
// stacked q, k, v rows; the norm weight becomes g / s and every column j of q, k, v becomes W_j s_j.
// Tolerance 1e-6 relative: the method keeps factors and weights in float32 after double math.
TEST(SmoothQuant, FactorsAndFoldMatchADoubleReference) {
  const double alpha = 0.65;
  Llama model = outlier_model(3);
  const auto windows = random_windows(6, 20, 4);
  const ModelConfig& c = model->config();
  const int64_t C = c.hidden_size;
  // Reference activations: X = x / rms(x) * g for each token's embedding row x.
  const auto emb = model->model->embed_tokens->weight.to(torch::kFloat64);
  const auto g = model->layer(0).input_layernorm->weight.to(torch::kFloat64);
  std::vector<double> amax(C, 0.0);
  for (int64_t i = 0; i < windows.numel(); ++i) {
    const int64_t tok = windows.reshape({-1})[i].item<int64_t>();
    double ss = 0;
    for (int64_t j = 0; j < C; ++j) ss += emb[tok][j].item<double>() * emb[tok][j].item<double>();
    const double inv = 1.0 / std::sqrt(ss / C + c.rms_norm_eps);
    for (int64_t j = 0; j < C; ++j) amax[j] = std::max(amax[j], std::abs(emb[tok][j].item<double>() * inv * g[j].item<double>()));
  }
  std::vector<torch::Tensor> before;
  for (const char* lin : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"})
    before.push_back(model->layer(0).linear(lin).weight.clone().to(torch::kFloat64));
  std::vector<double> s(C);
  for (int64_t j = 0; j < C; ++j) {
    double wmax = 0;
    for (const auto& w : before)
      for (int64_t k = 0; k < w.size(0); ++k) wmax = std::max(wmax, std::abs(w[k][j].item<double>()));
    s[j] = std::max(std::pow(amax[j], alpha) / std::pow(std::max(wmax, 1e-5), 1 - alpha), 1e-5);
  }

  auto method = make_method(smoothquant_entry(fmt::format("{{\"alpha\": {}}}", alpha)));
  method->calibrate(model, CalibrationData{windows, 4, 1, nullptr});
  method->transform(model);
  const AppliedMethod rec = method->record();
  const auto factors = rec.tensors.at("layers.0.qkv.factors").to(torch::kFloat64);
  ASSERT_EQ(factors.numel(), C);
  const auto g_after = model->layer(0).input_layernorm->weight.to(torch::kFloat64);
  for (int64_t j = 0; j < C; ++j) {
    EXPECT_NEAR(factors[j].item<double>(), s[j], 1e-6 * s[j]) << "channel " << j;
    EXPECT_NEAR(g_after[j].item<double>(), g[j].item<double>() / s[j], 1e-6 * std::abs(g[j].item<double>() / s[j]));
  }
  int i = 0;
  for (const char* lin : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}) {
    const auto after = model->layer(0).linear(lin).weight.to(torch::kFloat64);
    const auto expect = before[i++] * torch::tensor(s, torch::kFloat64).unsqueeze(0);
    EXPECT_LE((after - expect).abs().max().item<double>(), 1e-6 * expect.abs().max().item<double>()) << lin;
  }
  // The outlier channels were scaled down the most (the point of the method).
  EXPECT_GT(factors[3].item<double>(), 3 * factors.median().item<double>());
  EXPECT_EQ(rec.state.at("alpha").at("qkv").get<double>(), alpha);
  EXPECT_TRUE(rec.tensors.count("layers.1.gate_up.factors"));
}

// The float function is preserved: in float64 to 1e-12 of the largest logit (a few roundings per
// multiply-add of the ~50-term dot products), in float32 to 1e-5 relative (float32 epsilon 6e-8
// times the accumulated rounding of two blocks).
TEST(SmoothQuant, LeavesTheFloatModelsLogitsUnchanged) {
  for (const auto dtype : {torch::kFloat64, torch::kFloat32}) {
    Llama model = outlier_model(7);
    model->to(dtype);
    const auto windows = random_windows(5, 20, 8);
    torch::NoGradGuard no_grad;
    const auto before = model->forward(windows);
    auto method = make_method(smoothquant_entry(R"({"alpha": 0.8, "slot_alpha": {"gate_up": 0.4}})"));
    method->calibrate(model, CalibrationData{windows, 2, 1, nullptr});
    method->transform(model);
    const auto after = model->forward(windows);
    const double tol = dtype == torch::kFloat64 ? 1e-12 : 1e-5;
    EXPECT_LE((after - before).abs().max().item<double>(), tol * before.abs().max().item<double>()) << dtype;
    // And the weights did change (a no-op transform would pass the comparison above).
    EXPECT_GT((model->layer(1).mlp->up_proj->weight - outlier_model(7)->layer(1).mlp->up_proj->weight.to(dtype))
                  .abs().max().item<double>(), 1e-3);
  }
}

// Per-tensor static W8A8 on a model with outlier channels: smoothing must bring the quantized
// logits closer to the float ones (the method's purpose; fails if the transform is dropped).
TEST(SmoothQuant, ReducesPerTensorQuantizationError) {
  test::TempDir dir;
  test::write_random_shard(dir / "calib.bin", 4000, kShape.vocab, 5);
  const TokenShard shard(dir / "calib.bin");
  const std::string base = "name = \"t\"\n[weights]\nbits = 8\nsymmetric = true\ngranularity = \"channel\"\n"
                           "[activations]\nbits = 6\ngranularity = \"tensor\"\n[calibration]\nwindows = 16\nseq_len = 20\n";
  const auto tokens = random_windows(4, 20, 9);
  torch::NoGradGuard no_grad;
  const auto reference = outlier_model(1)->forward(tokens);
  double err[2];
  for (int sq = 0; sq < 2; ++sq) {
    Llama model = outlier_model(1);
    const std::string text = sq ? "methods = [\"smoothquant\"]\n" + base + "[smoothquant]\nalpha = 0.5\n" : base;
    quantize_model(model, recipe(text), &shard, 0);
    err[sq] = (model->forward(tokens) - reference).pow(2).mean().item<double>();
  }
  EXPECT_LT(err[1], 0.7 * err[0]) << "without " << err[0] << ", with " << err[1];
}

// quantize -> save -> load: the loaded model computes the same logits bit for bit, and carries
// the method's record (settings, state, factors). A version-1 directory (no methods) still loads;
// a future version fails with how to requantize.
TEST(SmoothQuant, QuantizedDirectoryRoundTripWithMethods) {
  test::TempDir dir;
  test::write_random_shard(dir / "calib.bin", 4000, kShape.vocab, 6);
  const TokenShard shard(dir / "calib.bin");
  const Recipe r = recipe(
      "name = \"sq\"\nmethods = [\"smoothquant\"]\n[weights]\nbits = 4\ngranularity = \"channel\"\nalgorithm = \"gptq\"\n"
      "[activations]\nbits = 8\ngranularity = \"tensor\"\n[calibration]\nwindows = 12\nseq_len = 20\n"
      "[smoothquant]\nalpha = 0.7\nslots = [\"gate_up\"]\n");
  Llama model = outlier_model(2);
  const QuantizedModel q = quantize_model(model, r, &shard, 0);
  ASSERT_EQ(q.methods.size(), 1u);
  const auto tokens = random_windows(3, 20, 10);
  torch::NoGradGuard no_grad;
  const auto expected = model->forward(tokens);
  quantized_save(model, q, dir / "q", "");
  QuantizedModel info;
  Llama loaded = quantized_load(dir / "q", &info);
  EXPECT_TRUE(torch::equal(loaded->forward(tokens), expected));
  ASSERT_EQ(info.methods.size(), 1u);
  EXPECT_EQ(info.methods[0].name, "smoothquant");
  EXPECT_EQ(info.methods[0].settings.at("alpha").get<double>(), 0.7);
  EXPECT_TRUE(torch::equal(info.methods[0].tensors.at("layers.1.gate_up.factors"), q.methods[0].tensors.at("layers.1.gate_up.factors")));
  EXPECT_FALSE(info.methods[0].tensors.count("layers.0.qkv.factors"));

  // A record missing its factors is refused on load.
  const std::string qc_path = dir / "q/quant_config.json";
  const std::string qc = test::read_text(qc_path);
  auto j = nlohmann::json::parse(qc);
  j["methods"][0]["settings"]["slots"] = {"qkv", "gate_up"};
  test::write_text(qc_path, j.dump());
  EXPECT_NE(error_of([&] { quantized_load(dir / "q"); }).find("expected methods.smoothquant.layers.0.qkv.factors"),
            std::string::npos);
  // Version 1 had no methods section: a plain directory of that version loads.
  j = nlohmann::json::parse(qc);
  j["version"] = 1;
  j.erase("methods");
  test::write_text(qc_path, j.dump());
  EXPECT_TRUE(torch::equal(quantized_load(dir / "q")->forward(tokens), expected));
  j["version"] = 3;
  test::write_text(qc_path, j.dump());
  const std::string e = error_of([&] { quantized_load(dir / "q"); });
  EXPECT_NE(e.find("requantize"), std::string::npos) << e;
}

TEST(SmoothQuant, RecipeAndSettingErrorsAreOneLine) {
  auto methods_error = [](const std::string& text) {
    return error_of([&] { make_methods(recipe(text)); });
  };
  EXPECT_NE(methods_error("methods = [\"smoothquant2\"]\n").find("unknown outlier method 'smoothquant2' (available: smoothquant"),
            std::string::npos);
  EXPECT_NE(error_of([&] { recipe("methods = [\"smoothquant\", \"smoothquant\"]\n"); }).find("\"smoothquant\" is listed twice"),
            std::string::npos);
  EXPECT_NE(error_of([&] { recipe("[smoothquant]\nalpha = 0.5\n"); }).find("needs the method in `methods`"), std::string::npos);
  EXPECT_NE(methods_error("methods = [\"smoothquant\"]\n[smoothquant]\nalpah = 0.5\n")
                .find("unknown smoothquant setting 'alpah' (valid keys in [smoothquant]: alpha, slots, slot_alpha)"),
            std::string::npos);
  for (const char* a : {"1.5", "-0.1", "nan"})
    EXPECT_NE(methods_error(fmt::format("methods = [\"smoothquant\"]\n[smoothquant]\nalpha = {}\n", a)).find("expected"),
              std::string::npos) << a;
  EXPECT_NE(methods_error("methods = [\"smoothquant\"]\n[smoothquant]\nalpha = 1.5\n").find("expected alpha in [0, 1], found 1.5"),
            std::string::npos);
  const std::string no_norm = methods_error("methods = [\"smoothquant\"]\n[smoothquant]\nslots = [\"qkv\", \"down\"]\n");
  EXPECT_NE(no_norm.find("slot \"down\" (mlp.down_proj) has no norm in front"), std::string::npos) << no_norm;
  EXPECT_NE(methods_error("methods = [\"smoothquant\"]\n[smoothquant]\nslots = [\"mlp\"]\n").find("unknown activation slot \"mlp\""),
            std::string::npos);
  EXPECT_NE(methods_error("methods = [\"smoothquant\"]\n[smoothquant]\nslots = [\"qkv\"]\nslot_alpha = { gate_up = 0.3 }\n")
                .find("slot \"gate_up\" is not smoothed"),
            std::string::npos);
  // SmoothQuant changes the inputs that learned (QAT) clips were trained for.
  Llama model = test::tiny_model(1, kShape);
  LearnedRanges ranges;
  for (const auto& m : model->linear_modules()) ranges[m] = {2.0, -2.0, 4, false};
  const std::string learned = error_of([&] {
    quantize_model(model, recipe("methods = [\"smoothquant\"]\n[activations]\nbits = 4\nrange = \"learned\"\n"), nullptr, 0, &ranges);
  });
  EXPECT_NE(learned.find("range = \"learned\""), std::string::npos) << learned;
  for (const std::string& e : {no_norm, learned}) EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

}  // namespace
}  // namespace outq
