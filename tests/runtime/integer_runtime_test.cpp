// The integer runtime against the fake-quant simulation of the same quantized model. Both use
// the same codes, scales and zero points and quantize activations with the same float formula,
// so they differ only in how the dot products are summed (exact int32 vs float32 GEMM): about
// K * 2^-24 of sum |x^ w^| per output. Through 2 layers that stays below 2e-4 of the largest
// logit unless a difference moves an activation across a rounding boundary of the next quantizer,
// which changes one code by one step; the bound below (2e-3) allows for a few such flips, and the
// number of logits beyond 1e-4 is checked to be small.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "outq/kernels/isa.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/quantized_io.h"
#include "outq/runtime/integer_runtime.h"

#include "test_util.h"
#include "tiny_model.h"

namespace outq {
namespace {

Llama small_model() { return test::tiny_model(11, {64, 96, 4, 2, 53, 32, 2, 0.2}); }

Recipe recipe(const std::string& weights, const std::string& activations) {
  return recipe_parse(fmt::format("name = \"t\"\n[weights]\n{}\n[activations]\n{}\n", weights, activations), "t.toml");
}

LearnedRanges random_ranges(Llama& model) {
  LearnedRanges out;
  int i = 0;
  for (const auto& m : model->linear_modules()) out[m] = {1.5 + 0.1 * (i % 5), -1.2 - 0.07 * (i % 3), 4}, ++i;
  return out;
}

// The integer logits agree with the simulation within the bounds above.
void expect_close_to_simulation(const torch::Tensor& integer, const torch::Tensor& simulated, const std::string& name) {
  const double scale = simulated.abs().max().item<double>();
  const auto diff = (integer - simulated).abs();
  EXPECT_LE(diff.max().item<double>(), 2e-3 * scale) << name;
  EXPECT_LE((diff > 1e-4 * scale).sum().item<int64_t>(), diff.numel() / 50) << name;
}

TEST(IntegerRuntime, LogitsMatchTheSimulation) {
  const std::vector<std::pair<std::string, Recipe>> cases = {
      {"w8a8 channel / token", recipe("bits = 8\ngranularity = \"channel\"", "bits = 8\ngranularity = \"token\"\ndynamic = true")},
      {"w4a4 sym channel / learned static tensor",
       recipe("bits = 4\nsymmetric = true\ngranularity = \"channel\"", "bits = 4\ngranularity = \"tensor\"\nrange = \"learned\"")},
      {"w4a8 group 32 / sym token",
       recipe("bits = 4\ngranularity = \"group\"\ngroup_size = 32", "bits = 8\nsymmetric = true\ngranularity = \"token\"\ndynamic = true")},
      {"w3a4 channel / token", recipe("bits = 3\ngranularity = \"channel\"", "bits = 4\ngranularity = \"token\"\ndynamic = true")},
      // Rotation: the down-projection input goes through the online Hadamard (R4) before the kernel.
      {"rotate + w4a4 channel / token",
       recipe_parse("name = \"t\"\nmethods = [\"rotate\"]\n[weights]\nbits = 4\ngranularity = \"channel\"\n[activations]\n"
                    "bits = 4\ngranularity = \"token\"\ndynamic = true\n", "t.toml")},
  };
  // A fixed draw: LibTorch seeds its default generator nondeterministically per process, and a
  // draw decides how many near-ties the two summation orders resolve differently.
  const auto tokens = torch::randint(0, 53, {2, 19}, at::detail::createCPUGenerator(1), torch::kInt64);
  for (const auto& [name, r] : cases) {
    Llama model = small_model();
    const LearnedRanges ranges = random_ranges(model);
    const QuantizedModel q = quantize_model(model, r, nullptr, 1, &ranges);
    torch::NoGradGuard no_grad;
    const auto simulated = model->forward(tokens);
    EXPECT_EQ(model->layer(0).mlp->down_input_hadamard != nullptr, !q.methods.empty()) << name;
    const IntegerRuntimeReport report = attach_integer_runtime(model, q);
    EXPECT_EQ(report.integer_layers, static_cast<int>(model->linear_modules().size())) << name;
    EXPECT_TRUE(report.float_layers.empty()) << name;
    const auto integer = model->forward(tokens);
    const double scale = simulated.abs().max().item<double>();
    const auto diff = (integer - simulated).abs();
    EXPECT_LE(diff.max().item<double>(), 2e-3 * scale) << name;
    EXPECT_LE((diff > 1e-4 * scale).sum().item<int64_t>(), diff.numel() / 50) << name;
    EXPECT_GT((simulated - small_model()->forward(tokens)).abs().max().item<double>(), 1e-3 * scale)
        << name << ": quantization must change the logits for the comparison to mean anything";
  }
}

// A model with q/k/v biases (an imported Qwen2) or q/k/v/o biases (LLaMA's attention_bias): the
// biases stay float and are added after the integer product, as in the simulation; the quantized
// directory keeps them (the reloaded model gives the same logits bit for bit).
TEST(IntegerRuntime, BiasedModelsMatchTheSimulationAndRoundTrip) {
  const auto tokens = torch::randint(0, 53, {2, 19}, at::detail::createCPUGenerator(5), torch::kInt64);
  for (const char* family : {"qwen2", "llama attention_bias"}) {
    auto make = [&] {
      ModelConfig c = test::tiny_config({64, 96, 4, 2, 53, 32, 2, 0.2});
      if (std::string(family) == "qwen2") c.model_type = "qwen2";
      else c.attention_bias = true;
      Llama m(c);
      m->reset_parameters(11);
      torch::NoGradGuard no_grad;
      auto gen = at::detail::createCPUGenerator(12);
      for (auto& p : m->named_parameters())
        if (p.key().find(".bias") != std::string::npos) p.value().copy_(torch::randn(p.value().sizes(), gen) * 0.5);
      return m;
    };
    Llama model = make();
    const QuantizedModel q = quantize_model(
        model, recipe("bits = 4\ngranularity = \"channel\"", "bits = 8\ngranularity = \"token\"\ndynamic = true"), nullptr, 1);
    test::TempDir dir;
    quantized_save(model, q, dir / "q", "");
    torch::NoGradGuard no_grad;
    const auto simulated = model->forward(tokens);
    attach_integer_runtime(model, q);
    expect_close_to_simulation(model->forward(tokens), simulated, family);
    QuantizedModel info;
    Llama loaded = quantized_load(dir / "q", &info);
    EXPECT_TRUE(torch::equal(loaded->forward(tokens), simulated)) << family;
    EXPECT_TRUE(torch::equal(loaded->layer(1).self_attn->k_proj->bias, model->layer(1).self_attn->k_proj->bias)) << family;
    // The biases matter: without them the logits move.
    for (auto& p : loaded->named_parameters())
      if (p.key().find(".bias") != std::string::npos) p.value().zero_();
    EXPECT_GT((loaded->forward(tokens) - simulated).abs().max().item<double>(), 1e-2 * simulated.abs().max().item<double>());
  }
}

// Linears with quantized weights and float activations (W4A16 / W8A16, QFeM's modules) run on the
// weight-only kernels: float sums of the dequantized product in another order than LibTorch's, so
// the logits agree to float32 summation error (1e-4 of the largest logit through 2 layers).
TEST(IntegerRuntime, WeightOnlyLayersMatchTheSimulation) {
  test::TempDir dir;
  test::write_random_shard(dir / "calib.bin", 4000, 53, 3);
  const TokenShard calib(dir / "calib.bin");
  const Recipe qfem_down = recipe_parse(
      "name = \"t\"\nmethods = [\"qfem\"]\n[weights]\nbits = 8\ngranularity = \"channel\"\n[activations]\nbits = 8\n"
      "granularity = \"token\"\ndynamic = true\n[calibration]\nwindows = 4\nseq_len = 32\n[qfem]\nmodules = [\"*.mlp.down_proj\"]\n",
      "t.toml");
  const std::vector<std::tuple<std::string, Recipe, int>> cases = {
      {"w4a16 channel", recipe("bits = 4\ngranularity = \"channel\"", "bits = 16"), 14},
      {"w8a16 sym group 32", recipe("bits = 8\nsymmetric = true\ngranularity = \"group\"\ngroup_size = 32", "bits = 16"), 14},
      {"w8a8 token + qfem down_proj", qfem_down, 2},
  };
  const auto tokens = torch::randint(0, 53, {2, 19}, at::detail::createCPUGenerator(2), torch::kInt64);
  for (const auto& [name, r, weight_only] : cases) {
    Llama model = small_model();
    const QuantizedModel q = quantize_model(model, r, &calib, 1);
    torch::NoGradGuard no_grad;
    const auto simulated = model->forward(tokens);
    const IntegerRuntimeReport report = attach_integer_runtime(model, q);
    EXPECT_EQ(report.weight_only_layers, weight_only) << name;
    EXPECT_EQ(report.integer_layers + report.weight_only_layers, static_cast<int>(model->linear_modules().size())) << name;
    EXPECT_TRUE(report.float_layers.empty()) << name;
    const auto kernels = model->forward(tokens);
    const double scale = simulated.abs().max().item<double>();
    if (weight_only == 14) EXPECT_LE((kernels - simulated).abs().max().item<double>(), 1e-4 * scale) << name;
    else EXPECT_LE((kernels - simulated).abs().max().item<double>(), 2e-3 * scale) << name;  // integer layers too
    EXPECT_GT((simulated - small_model()->forward(tokens)).abs().max().item<double>(), 1e-3 * scale) << name;
  }
}

// Static per-embedding-group activations (K = 6: uneven octet groups of the 64-wide inputs, equal
// groups of 16 for the 96-wide down-projection input), with and without the range permutation:
// every linear runs on the kernels (gathered codes, folded group scales) and the logits agree with
// the simulation as in LogitsMatchTheSimulation. Dynamic PEG stays simulated, with its reason.
// Each linear's input and output in a forward pass.
struct LinearRecorder : Observer {
  std::map<std::string, torch::Tensor> input, output;
  torch::Tensor observe(const ObservationPoint& p, const torch::Tensor& x) override {
    if (p.kind == PointKind::kLinearInput) input[p.module] = x.detach().clone();
    if (p.kind == PointKind::kLinearOutput) output[p.module] = x.detach().clone();
    return x;
  }
};

// Range permutation sorts the channels into PEG groups by range, so one group holds every wide
// channel on a coarse grid, and a code at a near-tie there rounds the other way when its input
// differs from the simulation's by float noise (the attention summed in another order, 1e-6):
// on AVX2-only CPUs 4 of 10 token draws saw such a flip, which then spreads through the later
// layers and positions (up to 3% of the largest logit). So each integer linear is compared with
// the simulated one on the very input it saw: fake-quantized activations (permuted groups) times
// the dequantized weights, in double. Bound: the float epilogue (group partial sums times float
// scales, 1e-6 of the output's scale), and the rare element whose code differs because the
// kernel multiplies by the reciprocal scale where the simulation divides (one step, a few per mille).
void expect_linears_match_simulation(const QuantizedModel& q, const LinearRecorder& seen, const std::string& name) {
  for (const auto& rec : q.linears) {
    const auto x = seen.input.at(rec.module).to(torch::kFloat64);
    const auto y = seen.output.at(rec.module).to(torch::kFloat64);
    const auto xq = fake_quant(x.to(torch::kFloat32), rec.activation_qp, rec.activation_spec, rec.activation_perm).to(torch::kFloat64);
    const auto w = dequantize(rec.codes, rec.weight_qp, rec.weight_spec).to(torch::kFloat64);
    const auto want = torch::matmul(xq, w.t());
    const double scale = want.abs().max().item<double>();
    const auto diff = (y - want).abs();
    EXPECT_LE((diff > 1e-5 * scale).sum().item<int64_t>(), std::max<int64_t>(1, diff.numel() / 200)) << name << " " << rec.module;
    EXPECT_LE(diff.max().item<double>(), 5e-2 * scale) << name << " " << rec.module;
  }
}

TEST(IntegerRuntime, PerEmbeddingGroupLayersMatchTheSimulation) {
  test::TempDir dir;
  test::write_random_shard(dir / "calib.bin", 4000, 53, 4);
  const TokenShard calib(dir / "calib.bin");
  const auto tokens = torch::randint(0, 53, {2, 19}, at::detail::createCPUGenerator(3), torch::kInt64);
  for (const std::string extra : {"", "peg_permute = true", "peg_permute = true\npeg_shared = true"}) {
    for (int wbits : {8, 4}) {
      const Recipe r = recipe_parse(fmt::format("name = \"t\"\n[weights]\nbits = {}\ngranularity = \"channel\"\n"
                                                "[activations]\nbits = 8\ngranularity = \"peg\"\npeg_groups = 6\n{}\n"
                                                "[calibration]\nwindows = 4\nseq_len = 32\n", wbits, extra),
                                    "t.toml");
      Llama model = small_model();
      const QuantizedModel q = quantize_model(model, r, &calib, 1);
      torch::NoGradGuard no_grad;
      const IntegerRuntimeReport report = attach_integer_runtime(model, q);
      const std::string name = fmt::format("w{} {}", wbits, extra);
      EXPECT_EQ(report.integer_layers, static_cast<int>(model->linear_modules().size())) << name;
      EXPECT_TRUE(report.float_layers.empty()) << name << ": " << (report.float_layers.empty() ? "" : report.float_layers[0]);
      auto seen = std::make_shared<LinearRecorder>();
      model->observers().attach_first(seen);
      model->forward(tokens);
      model->observers().detach(seen.get());
      expect_linears_match_simulation(q, *seen, name);
    }
  }
  Llama model = small_model();
  const QuantizedModel dyn = quantize_model(
      model, recipe("bits = 8\ngranularity = \"channel\"", "bits = 8\ngranularity = \"peg\"\npeg_groups = 6\ndynamic = true"),
      nullptr, 1);
  const IntegerRuntimeReport report = attach_integer_runtime(model, dyn);
  ASSERT_FALSE(report.float_layers.empty());
  EXPECT_NE(report.float_layers.front().find("dynamic per-embedding-group"), std::string::npos) << report.float_layers.front();
}

// Mixed precision: 16-bit integer activations on the int16 kernel, for every linear (dynamic per
// token) or only for the down projections beside static 8-bit per-tensor ones.
TEST(IntegerRuntime, Integer16LayersMatchTheSimulation) {
  test::TempDir dir;
  test::write_random_shard(dir / "calib.bin", 4000, 53, 5);
  const TokenShard calib(dir / "calib.bin");
  const auto tokens = torch::randint(0, 53, {2, 19}, at::detail::createCPUGenerator(4), torch::kInt64);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"w8a16i token", "[weights]\nbits = 8\ngranularity = \"channel\"\n[activations]\nbits = 16\ninteger = true\n"
                       "granularity = \"token\"\ndynamic = true\n"},
      {"w4a8 tensor + a16i down", "[weights]\nbits = 4\nsymmetric = true\ngranularity = \"channel\"\n[activations]\nbits = 8\n"
                                  "[calibration]\nwindows = 4\nseq_len = 32\n[[override]]\nmodules = \"*.down_proj\"\n"
                                  "activations = { bits = 16, integer = true }\n"},
  };
  for (const auto& [name, text] : cases) {
    Llama model = small_model();
    const QuantizedModel q = quantize_model(model, recipe_parse("name = \"t\"\n" + text, "t.toml"), &calib, 1);
    torch::NoGradGuard no_grad;
    const auto simulated = model->forward(tokens);
    const IntegerRuntimeReport report = attach_integer_runtime(model, q);
    EXPECT_EQ(report.integer_layers, static_cast<int>(model->linear_modules().size())) << name;
    EXPECT_TRUE(report.float_layers.empty()) << name << ": " << (report.float_layers.empty() ? "" : report.float_layers[0]);
    expect_close_to_simulation(model->forward(tokens), simulated, name);
  }
}

TEST(IntegerRuntime, UnsupportedLayersStayInFloatWithAReason) {
  Llama model = small_model();
  const QuantizedModel q =
      quantize_model(model, recipe("bits = 4\ngranularity = \"group\"\ngroup_size = 4", "bits = 8\ngranularity = \"token\"\ndynamic = true"),
                     nullptr, 1);
  const IntegerRuntimeReport report = attach_integer_runtime(model, q);
  EXPECT_EQ(report.integer_layers, 0);
  ASSERT_FALSE(report.float_layers.empty());
  EXPECT_NE(report.float_layers.front().find("multiple of 8"), std::string::npos) << report.float_layers.front();
}

}  // namespace
}  // namespace outq
