// Learned clips exported as static activation ranges: a model quantized by a recipe with
// activations.range = "learned" computes what the QAT forward computed during training (same grid
// beta + k * (alpha - beta) / (2^b - 1), unrounded zero point). The two compute the code from
// (x - beta) / D and x / D - beta / D respectively, so they agree to float rounding: 1e-4 of the
// largest logit bounds a few ulps through four layers (a code flip at a near-tie would exceed it).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "outq/core/error.h"
#include "outq/ptq/activation_quant.h"
#include "outq/ptq/quantize_model.h"
#include "outq/qat/qat_observer.h"

#include "tiny_model.h"

namespace outq {
namespace {

Llama small_model() { return test::tiny_model(5); }

Recipe learned_recipe(int activation_bits) {
  return recipe_parse(fmt::format(R"(name = "learned"
[weights]
bits = 16
[activations]
bits = {}
granularity = "tensor"
range = "learned"
dynamic = false
)",
                                  activation_bits),
                      "learned.toml");
}

TEST(QatObserver, CrossedOrNarrowClipsAreMovedApart) {
  Llama model = small_model();
  QatConfig qc;
  qc.mode = "qat";
  qc.clip_init_from = "fixed";
  auto qat = std::make_shared<QatObserver>(model, qc);
  auto clips = qat->named_clips();
  clips["layers.0.o.alpha"] = torch::tensor({-0.002f});  // swapped by a step: alpha < beta
  clips["layers.0.o.beta"] = torch::tensor({0.003f});
  clips["layers.1.down.alpha"] = torch::tensor({0.5f});  // narrower than the minimum width
  clips["layers.1.down.beta"] = torch::tensor({0.4997f});
  qat->load_clips(clips);
  EXPECT_EQ(qat->constrain_clips(), 2);
  const auto after = qat->named_clips();
  for (const char* slot : {"layers.0.o", "layers.1.down"}) {
    const double a = after.at(std::string(slot) + ".alpha").item<double>(), b = after.at(std::string(slot) + ".beta").item<double>();
    EXPECT_NEAR(a - b, QatObserver::kMinClipWidth, 1e-6) << slot;
  }
  EXPECT_NEAR(after.at("layers.0.o.alpha").item<double>() + after.at("layers.0.o.beta").item<double>(), 0.001, 1e-6);
  EXPECT_FLOAT_EQ(after.at("layers.0.qkv.alpha").item<float>(), 4.0f);  // valid pairs are untouched
  EXPECT_EQ(qat->constrain_clips(), 0);
}

TEST(QatObserver, QuantizationStartsAtStartStepWithClipsFromThatBatch) {
  Llama model = small_model();
  QatConfig qc;
  qc.mode = "qat";
  qc.start_step = 3;
  auto qat = std::make_shared<QatObserver>(model, qc);
  const ObservationPoint& down = model->point("model.layers.1.mlp.down_proj.input");
  const auto x = torch::randn({2, 5, 40}) * 3;
  qat->set_step(2);  // float before the start: the input passes through unchanged
  EXPECT_FALSE(qat->quantizing());
  EXPECT_TRUE(torch::equal(qat->observe(down, x), x));
  auto loaded = qat->named_clips();  // a resume before the start keeps the clips unset
  qat->load_clips(loaded);
  qat->set_step(3);
  EXPECT_TRUE(qat->quantizing());
  const auto y = qat->observe(down, x);
  const auto clips = qat->named_clips();
  EXPECT_FLOAT_EQ(clips.at("layers.1.down.alpha").item<float>(), x.max().item<float>());  // this batch's range
  EXPECT_FLOAT_EQ(clips.at("layers.1.down.beta").item<float>(), x.min().item<float>());
  EXPECT_FALSE(torch::equal(y, x));
  EXPECT_LE(std::get<0>(at::_unique(y)).numel(), 16);  // on the 4-bit grid
}

// A QAT observer on `model` with uneven clips, as training leaves them (alpha != -beta, different
// per layer and slot), seeded tokens, and the model's logits for them with the observer and without.
struct QatForward {
  std::shared_ptr<QatObserver> qat;
  torch::Tensor tokens, want, plain;
};
QatForward qat_forward(Llama& model, const QatConfig& qc, uint64_t seed) {
  auto qat = std::make_shared<QatObserver>(model, qc);
  std::map<std::string, torch::Tensor> clips = qat->named_clips();
  torch::manual_seed(seed);
  for (auto& [name, v] : clips) {
    const bool alpha = name.size() > 5 && name.compare(name.size() - 5, 5, "alpha") == 0;
    v = (alpha ? 1.0 : -1.0) * (0.2 + torch::rand({1}) * 1.5);
  }
  qat->load_clips(clips);
  const auto tokens = torch::randint(0, 37, {3, 11}, torch::kInt64);
  torch::NoGradGuard no_grad;
  model->observers().attach(qat);
  const auto want = model->forward(tokens);
  model->observers().clear();
  return {qat, tokens, want, model->forward(tokens)};
}

TEST(QatExport, LearnedRangesReproduceTheQatForward) {
  for (int bits : {3, 4}) {
    Llama model = small_model();
    QatConfig qc;
    qc.mode = "qat";
    qc.bits = bits;
    const auto [qat, tokens, want, plain] = qat_forward(model, qc, bits);
    torch::NoGradGuard no_grad;

    const LearnedRanges ranges = learned_ranges_from_json(qat->clips_json(), "clips.json");
    EXPECT_EQ(ranges.size(), model->linear_modules().size());
    quantize_model(model, learned_recipe(bits), nullptr, 1, &ranges);
    const auto got = model->forward(tokens);
    const double tol = 1e-4 * want.abs().max().item<double>();
    EXPECT_LE((got - want).abs().max().item<double>(), tol) << bits << " bits";
    EXPECT_GT((plain - want).abs().max().item<double>(), 100 * tol) << "the clips must matter for the test to mean anything";
  }
}

TEST(QatObserver, ClampModeTakesEachInputsRangeFromClipsJson) {
  Llama model = small_model();
  QatConfig qc;
  qc.mode = "qat";
  const auto [qat, tokens, want, plain] = qat_forward(model, qc, 7);
  const nlohmann::json learned = qat->clips_json();
  QatConfig cc;
  cc.mode = "clamp";
  auto clamp = std::make_shared<QatObserver>(model, cc);
  clamp->load_clips_json(learned, "clips.json");
  const nlohmann::json exported = clamp->clips_json();  // the same ranges, now of kind clamp
  ASSERT_EQ(exported.size(), learned.size());
  for (const auto& [module, v] : learned.items()) {
    EXPECT_EQ(exported[module]["alpha"], v["alpha"]) << module;
    EXPECT_EQ(exported[module]["beta"], v["beta"]) << module;
    EXPECT_EQ(exported[module]["kind"], "clamp") << module;
  }
  // The reference: every linear input clamped by hand to its module's range.
  struct HandClamp : Observer {
    nlohmann::json ranges;
    torch::Tensor observe(const ObservationPoint& p, const torch::Tensor& x) override {
      if (p.kind != PointKind::kLinearInput || !ranges.contains(p.module)) return x;
      return x.clamp(ranges[p.module]["beta"].get<double>(), ranges[p.module]["alpha"].get<double>());
    }
  };
  auto hand = std::make_shared<HandClamp>();
  hand->ranges = learned;
  torch::NoGradGuard no_grad;
  model->observers().attach(clamp);
  const auto got = model->forward(tokens);
  model->observers().clear();
  model->observers().attach(hand);
  const auto ref = model->forward(tokens);
  model->observers().clear();
  EXPECT_TRUE(torch::equal(got, ref));
  EXPECT_GT((got - plain).abs().max().item<double>(), 1e-2) << "the ranges must clamp something";
  // A module missing, modules sharing an input with different ranges, a crossed range: errors.
  auto missing = learned;
  missing.erase("model.layers.1.mlp.down_proj");
  EXPECT_THROW(clamp->load_clips_json(missing, "c"), Error);
  auto split = learned;
  split["model.layers.0.self_attn.k_proj"]["alpha"] = 9.0;
  EXPECT_THROW(clamp->load_clips_json(split, "c"), Error);
  auto crossed = learned;
  crossed["model.layers.0.self_attn.o_proj"]["beta"] = 99.0;
  EXPECT_THROW(clamp->load_clips_json(crossed, "c"), Error);
  EXPECT_THROW(clamp->load_clips_json(nlohmann::json::array(), "c"), Error);
}

TEST(QatExport, LearnedInputObserverRunsTheModelAsTrained) {
  for (const std::string mode : {"qat", "clamp"}) {
    Llama model = small_model();
    QatConfig qc;
    qc.mode = mode;
    const auto [qat, tokens, want, plain] = qat_forward(model, qc, 11);
    torch::NoGradGuard no_grad;

    const LearnedRanges ranges = learned_ranges_from_json(qat->clips_json(), "clips.json");
    for (const auto& [module, r] : ranges) EXPECT_EQ(r.clamp_only, mode == "clamp") << module;
    model->observers().attach(learned_input_observer(model, ranges));
    // A recorder attached first sees the inputs before the clips: values beyond them survive.
    struct Recorder : Observer {
      double largest = 0;
      torch::Tensor observe(const ObservationPoint& p, const torch::Tensor& x) override {
        if (p.name == "model.layers.1.mlp.down_proj.input") largest = x.abs().max().item<double>();
        return x;
      }
    };
    auto recorder = std::make_shared<Recorder>();
    model->observers().attach_first(recorder);
    const auto got = model->forward(tokens);
    const double tol = 1e-4 * want.abs().max().item<double>();
    EXPECT_LE((got - want).abs().max().item<double>(), tol) << mode;
    EXPECT_GT((plain - want).abs().max().item<double>(), 100 * tol) << mode << ": the clips must matter";
    const LearnedRange& down = ranges.at("model.layers.1.mlp.down_proj");
    EXPECT_GT(recorder->largest, 1.01 * std::max(down.alpha, -down.beta)) << mode << ": the recorder saw clipped inputs";
  }
  // An unknown kind, and a module the model does not have, are clear errors.
  EXPECT_THROW(learned_ranges_from_json(nlohmann::json::parse(R"({"m": {"alpha": 1, "beta": 0, "kind": "round"}})"), "c"),
               Error);
  Llama model = small_model();
  const LearnedRanges other{{"model.layers.7.mlp.down_proj", {1.0, -1.0, 4}}};
  EXPECT_THROW(learned_input_observer(model, other), Error);
}

TEST(QatExport, BadLearnedRanges) {
  Llama model = small_model();
  // No clips at all: the model was not trained with QAT.
  EXPECT_THROW(quantize_model(model, learned_recipe(4), nullptr, 1, nullptr), Error);
  // A module missing from clips.json.
  LearnedRanges partial{{"model.layers.0.mlp.down_proj", {1.0, -1.0, 4}}};
  EXPECT_THROW(quantize_model(model, learned_recipe(4), nullptr, 1, &partial), Error);
  // Malformed entries.
  EXPECT_THROW(learned_ranges_from_json(nlohmann::json::parse(R"({"m": {"alpha": -1, "beta": 1}})"), "c"), Error);
  EXPECT_THROW(learned_ranges_from_json(nlohmann::json::parse(R"({"m": {"alpha": 1}})"), "c"), Error);
  EXPECT_THROW(learned_ranges_from_json(nlohmann::json::parse(R"({"m": {"alpha": 1, "beta": 0, "bits": 9}})"), "c"), Error);
  EXPECT_THROW(learned_ranges_from_json(nlohmann::json::object(), "c"), Error);
  // Learned ranges only make sense for static asymmetric per-tensor activations.
  EXPECT_THROW(recipe_parse("[activations]\nbits = 4\ngranularity = \"token\"\ndynamic = true\nrange = \"learned\"\n", "r"),
               Error);
  EXPECT_THROW(recipe_parse("[weights]\nbits = 4\nrange = \"learned\"\n", "r"), Error);
}

}  // namespace
}  // namespace outq
