// Sensitivity analysis: switching quantizers on and off after one application equals quantizing
// with a recipe that quantizes only those tensors (the calibrated ranges do not depend on which
// quantizers are on), checked exactly for a leave-one-in and a leave-one-out selection; the
// suggested mixed-precision recipe parses and puts the chosen types at 16-bit integer.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "outq/core/error.h"
#include "outq/eval/perplexity.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/sensitivity.h"
#include "test_util.h"
#include "tiny_model.h"

namespace outq {
namespace {

constexpr const char* kBase =
    "name = \"s\"\n[weights]\nbits = 8\ngranularity = \"channel\"\n[activations]\nbits = 4\n"
    "[calibration]\nwindows = 4\nseq_len = 12\nbatch_size = 2\n";

TEST(TensorTypes, FollowTheBlockInForwardOrder) {
  std::vector<std::string> names;
  for (const auto& t : tensor_types()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"qkv_input", "q_proj_output", "k_proj_output", "v_proj_output", "scores",
                                             "probs", "o_input", "o_proj_output", "residual_attn", "gate_up_input",
                                             "gate_proj_output", "up_proj_output", "down_input", "down_proj_output",
                                             "residual_mlp"}));
}

// Tokens the float model itself predicts (greedy continuations of random starts): the float model
// scores them well, so quantization noise raises the perplexity and the greedy search has work to do.
void write_greedy_shard(const std::string& path, Llama& model) {
  torch::NoGradGuard no_grad;
  auto seq = torch::randint(0, 37, {200, 1}, at::detail::createCPUGenerator(10), torch::kInt64);
  for (int t = 1; t < 15; ++t) seq = torch::cat({seq, model->forward(seq).select(1, t - 1).argmax(-1, true)}, 1);
  const auto flat = seq.flatten().to(torch::kInt32).contiguous();
  ShardInfo info;
  info.split = "train";
  info.num_documents = 1;
  info.vocab_size = 37;
  info.tokenizer_checksum = "test";
  shard_write(path, std::vector<int32_t>(flat.data_ptr<int32_t>(), flat.data_ptr<int32_t>() + flat.numel()), info);
}

TEST(Sensitivity, SelectionsEqualRecipesThatQuantizeOnlyThoseTensors) {
  test::TempDir dir;
  Llama float_model = test::tiny_model(6);
  write_greedy_shard(dir / "calib.bin", float_model);
  const TokenShard shard(dir / "calib.bin");
  PerplexityOptions po;
  po.seq_len = 16, po.max_tokens = 200, po.batch_size = 4, po.show_progress = false;
  const PerplexityFn perplexity = [&](Llama& m, const TokenPrefix*) { return evaluate_perplexity(m, shard, po).perplexity(); };
  const QuantizeFn quantize = [&](const Recipe& r) {
    Llama m = test::tiny_model(6);
    QuantizedModel q = quantize_model(m, r, &shard, 1);
    return std::make_pair(m, std::move(q));
  };
  const Recipe recipe = recipe_parse(std::string("full_integer = true\n") + kBase, "s.toml");
  SensitivityOptions o;
  o.tolerance = 0.0;  // unreachable with 4-bit tensors left: the greedy search runs a few steps
  o.per_layer_types = 1;
  o.max_suggested = 2;
  const SensitivityResult r = sensitivity_analysis(float_model, recipe, quantize, perplexity, o);
  ASSERT_EQ(r.types.size(), 15u);
  EXPECT_EQ(r.per_layer_out.size(), 2u);  // one type x 2 layers
  // Leave-one-in "down_input": a recipe quantizing only the down-projection inputs.
  const auto in = std::find_if(r.leave_one_in.begin(), r.leave_one_in.end(), [](const auto& x) { return x.type == "down_input"; });
  const Recipe only_down = recipe_parse(std::string(kBase).replace(std::string(kBase).find("bits = 4"), 8, "bits = 16") +
                                            "[[override]]\nmodules = \"*.down_proj\"\nactivations = { bits = 4 }\n",
                                        "only.toml");
  auto [m1, q1] = quantize(only_down);
  EXPECT_EQ(perplexity(m1, nullptr), in->perplexity);
  // Leave-one-out "residual_mlp": everything but the residual sums after the MLP.
  const auto out = std::find_if(r.leave_one_out.begin(), r.leave_one_out.end(), [](const auto& x) { return x.type == "residual_mlp"; });
  const Recipe all_but = recipe_parse(std::string("full_integer = true\n") + kBase +
                                          "[[tensors]]\npoints = \"*.residual_mlp\"\nactivations = { bits = 16 }\n",
                                      "but.toml");
  auto [m2, q2] = quantize(all_but);
  EXPECT_EQ(perplexity(m2, nullptr), out->perplexity);
  // Weights only and everything.
  EXPECT_GT(r.all_perplexity, r.weights_only_perplexity);
  EXPECT_NE(r.float_perplexity, r.weights_only_perplexity);
  // The suggestion: forward selection; its first step is the best leave-one-out selection (one
  // type released), its second the best pair containing it (checked against every other type).
  ASSERT_EQ(r.suggested.size(), 2u);
  ASSERT_EQ(r.suggested_steps.size(), 2u);
  auto best = r.leave_one_out;
  std::stable_sort(best.begin(), best.end(), [](const auto& a, const auto& b) { return a.perplexity < b.perplexity; });
  EXPECT_EQ(r.suggested[0], best[0].type);
  EXPECT_EQ(r.suggested_steps[0], best[0].perplexity);
  for (const auto& other : r.types) {
    if (other == r.suggested[0] || other == r.suggested[1]) continue;
    std::string text = std::string("full_integer = true\n") + kBase;
    for (const auto& t : {r.suggested[0], other})
      for (const auto& ty : tensor_types())
        if (ty.name == t)
          for (size_t i = 0; i < ty.relative.size(); ++i)
            text += ty.linear_input ? "[[override]]\nmodules = \"model.layers.*." + ty.modules[i] + "\"\nactivations = { bits = 16 }\n"
                                    : "[[tensors]]\npoints = \"model.layers.*." + ty.relative[i] + "\"\nactivations = { bits = 16 }\n";
    auto [m, q] = quantize(recipe_parse(text, "pair.toml"));
    EXPECT_GE(perplexity(m, nullptr), r.suggested_steps[1]) << r.suggested[0] << " + " << other;
  }
  EXPECT_GT(r.suggested_perplexity, 0);
  const Recipe mp = recipe_parse(r.suggested_recipe, "mp.toml");
  EXPECT_EQ(mp.name, "s-mp");
  EXPECT_TRUE(mp.full_integer);
  auto [m3, q3] = quantize(mp);
  int sixteen = 0;
  for (const auto& rec : q3.linears) sixteen += rec.activation_spec.integer16;
  for (const auto& p : q3.points) sixteen += p.spec.integer16;
  EXPECT_GT(sixteen, 0);
}

TEST(Sensitivity, UnknownTypesAndNoActivationsAreErrors) {
  const Recipe r = recipe_parse(kBase, "s.toml");
  EXPECT_NE(test::error_of([&] { mixed_precision_recipe(r, {"residual_fnn"}, "x"); }).find("unknown tensor type 'residual_fnn'"),
            std::string::npos);
  Llama model = test::tiny_model(6);
  const Recipe w_only = recipe_parse("name = \"w\"\n[weights]\nbits = 8\n", "w.toml");
  const std::string e = test::error_of([&] {
    sensitivity_analysis(
        model, w_only,
        [&](const Recipe& rr) {
          Llama m = test::tiny_model(6);
          QuantizedModel q = quantize_model(m, rr, nullptr, 1);
          return std::make_pair(m, std::move(q));
        },
        [](Llama&, const TokenPrefix*) { return 1.0; }, {});
  });
  EXPECT_NE(e.find("quantizes no activations"), std::string::npos) << e;
}

}  // namespace
}  // namespace outq
