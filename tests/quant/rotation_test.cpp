// Rotation: the rotated model computes the original function (float64 to 1e-10 of the largest
// logit: the edits are exact identities, so only double round-off remains; float32 to 1e-5 of it:
// the edits are made in float64 and cast once, and two float32 forwards of a two-layer model
// differ by a few ulps of the logits) for pre-norm models with tied and untied heads, GQA, widths
// that are and are not powers of two, random norm weights and both kinds of random rotation; the
// effect on a planted outlier channel; the quantized directory round trip (R4 is set again on
// load); and the recipe errors.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "outq/core/error.h"
#include "outq/ptq/method.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/quantized_io.h"
#include "outq/ptq/rotation.h"
#include "test_util.h"
#include "tiny_model.h"

namespace outq {
namespace {

// A tiny model with norm weights 1 +- 0.5 (so that fusing them is not trivial), and random biases
// when `attention_bias` gives q, k, v and o biases (as an imported LLaMA with attention_bias has).
Llama model_with_norms(uint64_t seed, const test::TinyShape& s, const std::string& placement = "pre",
                       bool attention_bias = false) {
  ModelConfig c = test::tiny_config(s);
  c.norm_placement = placement;
  c.attention_bias = attention_bias;
  Llama m(c);
  m->reset_parameters(seed);
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed + 50);
  for (auto& p : m->named_parameters())
    if (p.key().find("norm.weight") != std::string::npos) p.value().copy_(torch::rand(p.value().sizes(), gen) + 0.5);
    else if (p.key().find(".bias") != std::string::npos) p.value().copy_(torch::randn(p.value().sizes(), gen));
  return m;
}

MethodEntry rotate_entry(const std::string& settings_json = "{}") {
  MethodEntry e;
  e.name = "rotate";
  e.settings = nlohmann::json::parse(settings_json);
  e.origin = "r.toml";
  return e;
}

torch::Tensor tokens(int64_t vocab, uint64_t seed) {
  return torch::randint(0, vocab, {2, 12}, at::detail::createCPUGenerator(seed), torch::kInt64);
}

struct Shape {
  std::string name;
  test::TinyShape shape;
};

const std::vector<Shape> kShapes = {
    {"powers of two, GQA, untied", {32, 64, 4, 2, 29, 16, 2, 0.3, false}},
    {"12 x 2^j widths, GQA, tied", {48, 96, 4, 2, 31, 16, 2, 0.3, true}},
    {"hidden 24, head dim 12, intermediate 40 = 20 x 2, tied", {24, 40, 2, 2, 37, 16, 2, 0.3, true}},
};

TEST(Rotation, FloatModelFunctionIsPreserved) {
  for (const auto& [name, shape] : kShapes)
    for (const char* kind : {"hadamard", "orthogonal"}) {
      const std::string label = fmt::format("{}, {}", name, kind);
      const auto x = tokens(shape.vocab, 3);
      const auto settings = fmt::format(R"({{"r1": "{}", "r2": "{}", "seed": 7}})", kind, kind);
      torch::NoGradGuard no_grad;
      // float64 end to end.
      Llama ref64 = model_with_norms(1, shape), rot64 = model_with_norms(1, shape);
      ref64->to(torch::kFloat64);
      rot64->to(torch::kFloat64);
      make_method(rotate_entry(settings))->transform(rot64);
      const auto want64 = ref64->forward(x), got64 = rot64->forward(x);
      const double scale64 = want64.abs().max().item<double>();
      EXPECT_LE((got64 - want64).abs().max().item<double>(), 1e-10 * scale64) << label;
      // float32 storage (edits in float64, cast once) against the unrotated float32 model.
      Llama ref = model_with_norms(1, shape), rot = model_with_norms(1, shape);
      make_method(rotate_entry(settings))->transform(rot);
      const auto want = ref->forward(x), got = rot->forward(x);
      const double scale = want.abs().max().item<double>();
      EXPECT_LE((got - want).abs().max().item<double>(), 1e-5 * scale) << label;
      // The model did change: norms fused, head untied and no longer the embedding, weights rotated.
      EXPECT_FALSE(rot->config().tie_word_embeddings) << label;
      ASSERT_TRUE(rot->lm_head);
      EXPECT_TRUE(rot->layer(0).input_layernorm->weight.eq(1.0).all().item<bool>()) << label;
      EXPECT_TRUE(rot->model->norm->weight.eq(1.0).all().item<bool>()) << label;
      EXPECT_GT((rot->lm_head->weight - rot->model->embed_tokens->weight).abs().max().item<double>(), 1e-3) << label;
      EXPECT_GT((rot->layer(1).mlp->down_proj->weight - ref->layer(1).mlp->down_proj->weight).abs().max().item<double>(), 1e-3);
      EXPECT_TRUE(rot->layer(0).mlp->down_input_hadamard != nullptr) << label;
    }
}

// Each rotation alone preserves the function too (a mistake in one would hide behind another in the
// combined test only if they cancelled; here each stands alone).
TEST(Rotation, EachRotationAlonePreservesTheFunction) {
  const auto shape = kShapes[1].shape;
  const auto x = tokens(shape.vocab, 4);
  for (const char* settings : {R"({"r1": "none", "r2": "none", "r4": false})", R"({"r2": "none", "r4": false})",
                               R"({"r1": "none", "r4": false})", R"({"r1": "none", "r2": "none"})"}) {
    torch::NoGradGuard no_grad;
    Llama ref = model_with_norms(2, shape), rot = model_with_norms(2, shape);
    ref->to(torch::kFloat64);
    rot->to(torch::kFloat64);
    make_method(rotate_entry(settings))->transform(rot);
    const auto want = ref->forward(x);
    EXPECT_LE((rot->forward(x) - want).abs().max().item<double>(), 1e-10 * want.abs().max().item<double>()) << settings;
  }
}

// With q, k, v and o biases the o bias turns with the residual stream (R1) and the v bias with its
// heads (R2): each rotation alone and all together preserve the function.
TEST(Rotation, BiasesTurnWithTheirStreams) {
  const auto shape = kShapes[0].shape;
  const auto x = tokens(shape.vocab, 5);
  for (const char* settings : {R"({"r2": "none", "r4": false})", R"({"r1": "none", "r4": false})", R"({"seed": 3})"}) {
    torch::NoGradGuard no_grad;
    Llama ref = model_with_norms(3, shape, "pre", true), rot = model_with_norms(3, shape, "pre", true);
    ref->to(torch::kFloat64);
    rot->to(torch::kFloat64);
    ASSERT_TRUE(rot->layer(1).self_attn->o_proj->bias.defined());
    make_method(rotate_entry(settings))->transform(rot);
    const auto want = ref->forward(x);
    EXPECT_LE((rot->forward(x) - want).abs().max().item<double>(), 1e-10 * want.abs().max().item<double>()) << settings;
  }
}

// Post-norm: the norms are the residual stream, so they stay; R2 and R4 preserve the function there
// too (same tolerances), and R1 is refused with the reason.
TEST(Rotation, PostNormModelsGetR2AndR4) {
  for (const auto& [name, shape] : kShapes) {
    const auto x = tokens(shape.vocab, 8);
    const std::string settings = R"({"r1": "none", "seed": 2})";
    torch::NoGradGuard no_grad;
    Llama ref64 = model_with_norms(9, shape, "post"), rot64 = model_with_norms(9, shape, "post");
    ref64->to(torch::kFloat64);
    rot64->to(torch::kFloat64);
    make_method(rotate_entry(settings))->transform(rot64);
    const auto want64 = ref64->forward(x);
    EXPECT_LE((rot64->forward(x) - want64).abs().max().item<double>(), 1e-10 * want64.abs().max().item<double>()) << name;
    Llama ref = model_with_norms(9, shape, "post"), rot = model_with_norms(9, shape, "post");
    make_method(rotate_entry(settings))->transform(rot);
    const auto want = ref->forward(x);
    EXPECT_LE((rot->forward(x) - want).abs().max().item<double>(), 1e-5 * want.abs().max().item<double>()) << name;
    EXPECT_EQ(rot->config().tie_word_embeddings, shape.tied) << name;  // nothing fused, so nothing untied
    EXPECT_TRUE(torch::equal(rot->layer(0).input_layernorm->weight, ref->layer(0).input_layernorm->weight)) << name;
    EXPECT_GT((rot->layer(0).mlp->down_proj->weight - ref->layer(0).mlp->down_proj->weight).abs().max().item<double>(), 1e-3);
  }
  Llama post = model_with_norms(9, kShapes[0].shape, "post");
  const std::string e = test::error_of([&] { make_method(rotate_entry())->transform(post); });
  EXPECT_NE(e.find("rotate: r1 = \"hadamard\" on a post-norm model (model.norm_placement = \"post\")"), std::string::npos) << e;
  // SmoothQuant would fold its factors into norms that are the residual stream: refused too.
  MethodEntry sq;
  sq.name = "smoothquant";
  sq.origin = "r.toml";
  CalibrationData data;
  data.windows = tokens(kShapes[0].shape.vocab, 9);
  const std::string e2 = test::error_of([&] { make_method(sq)->calibrate(post, data); });
  EXPECT_NE(e2.find("smoothquant: a post-norm model"), std::string::npos) << e2;
}

// The cure's point: an outlier channel planted in the norm weights (x25) makes the q/k/v input's
// max |x| many times its mean |x|; after R1 the channel is spread over all of them.
TEST(Rotation, SpreadsAPlantedOutlierChannel) {
  const auto shape = kShapes[0].shape;
  auto outlier_model = [&] {
    Llama m = model_with_norms(3, shape);
    torch::NoGradGuard no_grad;
    for (int l = 0; l < shape.layers; ++l) m->layer(l).input_layernorm->weight[5] *= 25;
    return m;
  };
  auto peak_ratio = [&](Llama& m) {  // max |x| / mean |x| of block 0's q/k/v input
    torch::Tensor seen;
    struct Grab : Observer {
      torch::Tensor* out;
      int index;
      torch::Tensor observe(const ObservationPoint& p, const torch::Tensor& t) override {
        if (p.index == index) *out = t.detach().clone();
        return t;
      }
    };
    auto grab = std::make_shared<Grab>();
    grab->out = &seen;
    grab->index = m->point("model.layers.0.self_attn.q_proj.input").index;
    m->observers().attach(grab);
    torch::NoGradGuard no_grad;
    m->forward(tokens(shape.vocab, 5));
    m->observers().detach(grab.get());
    return (seen.abs().max() / seen.abs().mean()).item<double>();
  };
  Llama before = outlier_model(), after = outlier_model();
  make_method(rotate_entry())->transform(after);
  const double r0 = peak_ratio(before), r1 = peak_ratio(after);
  EXPECT_GT(r0, 15.0);
  EXPECT_LT(r1, r0 / 3.0) << "before " << r0 << ", after " << r1;
}

TEST(Rotation, QuantizedDirectoryRoundTripSetsR4Again) {
  test::TempDir dir;
  const auto shape = kShapes[1].shape;
  Llama model = model_with_norms(4, shape);
  const Recipe r = recipe_parse(
      "name = \"rot\"\nmethods = [\"rotate\"]\n[weights]\nbits = 4\ngranularity = \"channel\"\n[activations]\nbits = 4\n"
      "granularity = \"token\"\ndynamic = true\n[rotate]\nseed = 3\n",
      "rot.toml");
  const QuantizedModel q = quantize_model(model, r, nullptr, 1);
  quantized_save(model, q, dir / "q", "");
  QuantizedModel info;
  Llama loaded = quantized_load(dir / "q", &info);
  ASSERT_EQ(info.methods.size(), 1u);
  EXPECT_EQ(info.methods[0].state.at("r1"), "hadamard");
  EXPECT_TRUE(loaded->layer(1).mlp->down_input_hadamard != nullptr);
  torch::NoGradGuard no_grad;
  const auto x = tokens(shape.vocab, 6);
  EXPECT_TRUE(torch::equal(model->forward(x), loaded->forward(x)));
  // Without R4's online half the loaded weights compute something else (the test can fail).
  loaded->set_down_input_hadamard(nullptr);
  EXPECT_GT((model->forward(x) - loaded->forward(x)).abs().max().item<double>(), 1e-2);
}

// A rotated model says so in its config (config.json "outq_rotated_by"), so that it is never
// rotated again: not in memory, and not after its weights and config.json are saved and reloaded.
TEST(Rotation, RotatedModelIsNotRotatedTwice) {
  Llama model = model_with_norms(6, kShapes[0].shape);
  make_method(rotate_entry())->transform(model);
  EXPECT_EQ(model->config().rotated_by, "rotate");
  const std::string again = test::error_of([&] { make_method(rotate_entry())->transform(model); });
  EXPECT_NE(again.find("rotate: this model was already rotated by rotate"), std::string::npos)
      << again;
  const ModelConfig reread = ModelConfig::from_hf_json(model->config().to_hf_json(), "config.json");
  EXPECT_EQ(reread.rotated_by, "rotate");
  EXPECT_FALSE(reread.tie_word_embeddings);
  EXPECT_EQ(ModelConfig::from_hf_json(test::tiny_config(kShapes[0].shape).to_hf_json(), "c").rotated_by, "");
}

TEST(Rotation, RecipeErrors) {
  const auto shape = kShapes[0].shape;
  auto quantize = [&](const std::string& methods, const std::string& extra, const test::TinyShape& s) {
    Llama model = model_with_norms(5, s);
    return test::error_of([&] {
      const Recipe r = recipe_parse(fmt::format("name = \"e\"\nmethods = {}\n[weights]\nbits = 8\n[activations]\nbits = 8\n"
                                                "granularity = \"token\"\ndynamic = true\n{}", methods, extra), "e.toml");
      quantize_model(model, r, nullptr, 1);
    });
  };
  EXPECT_NE(quantize(R"(["rotate", "rotate"])", "", shape).find("\"rotate\" is listed twice"), std::string::npos);
  EXPECT_NE(quantize(R"(["smoothquant", "rotate"])", "", shape).find("rotate is listed after smoothquant; expected rotate first"),
            std::string::npos);
  EXPECT_NE(quantize(R"(["rotate"])", "[rotate]\nr1 = \"givens\"\n", shape).find("rotate.r1: expected \"hadamard\""),
            std::string::npos);
  EXPECT_NE(quantize(R"(["rotate"])", "[rotate]\nr3 = true\n", shape).find("unknown rotate setting 'r3'"), std::string::npos);
  EXPECT_NE(quantize(R"(["rotate"])", "[rotate]\nr4 = 1\n", shape).find("expected true or false"), std::string::npos);
  test::TinyShape odd = shape;
  odd.intermediate = 46;  // 23 x 2: no Hadamard matrix of that order
  EXPECT_NE(quantize(R"(["rotate"])", "", odd).find("R4 on the down-projection input (intermediate_size): no Hadamard "
                                                    "matrix of order 46"), std::string::npos);
  EXPECT_EQ(quantize(R"(["rotate"])", "[rotate]\nr4 = false\n", odd), "");
  // Clips learned for the unrotated inputs do not fit the rotated ones.
  Llama model = model_with_norms(5, shape);
  const Recipe learned = recipe_parse("name = \"l\"\nmethods = [\"rotate\"]\n[activations]\nbits = 4\nrange = \"learned\"\n",
                                      "l.toml");
  EXPECT_NE(test::error_of([&] { quantize_model(model, learned, nullptr, 1); })
                .find("rotate changes the input of model.layers.0.self_attn.q_proj, but its activations use range = \"learned\""),
            std::string::npos);
}

}  // namespace
}  // namespace outq
