// LSQ activation ranges and weight QAT on a model, and their export:
// - an LSQ range starts from the first quantized batch exactly as a recipe calibrates it (min-max
//   or MSE: qparams_from_range of that batch's range);
// - clips.json of an LSQ model, quantized by a recipe with activations.range = "learned", runs the
//   very forward the QAT observer ran: equal logits (torch::equal), since both evaluate
//   clamp(round(x / step + z)) with the same float32 operations;
// - weight QAT starts as RTN (the fake-quantized weights equal rtn_quantize's, exactly), its
//   steps exported and quantized with weights.algorithm = "learned" give the trained weights
//   exactly and the trained logits to float rounding (1e-5 of the largest logit: the trained
//   forward runs q/k/v as separate GEMMs with the fake-quantized weights, the exported one fused);
// - gradients reach the weights and steps; bad steps files and spec mismatches are clear errors.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "outq/core/error.h"
#include "outq/ptq/activation_quant.h"
#include "outq/ptq/gptq.h"
#include "outq/ptq/quantize_model.h"
#include "outq/qat/qat_observer.h"
#include "outq/qat/weight_qat.h"
#include "outq/quant/quantizer.h"

#include "test_util.h"
#include "tiny_model.h"

namespace outq {
namespace {

Recipe recipe_of(const std::string& text) { return recipe_parse(text, "test.toml"); }

TEST(LsqObserver, FirstBatchSetsTheStepAndOffsetAsCalibrationWould) {
  for (const std::string init : {"minmax", "mse"}) {
    Llama model = test::tiny_model(3);
    QatConfig qc;
    qc.mode = "lsq";
    qc.lsq_init = init;
    auto qat = std::make_shared<QatObserver>(model, qc);
    qat->set_step(0);
    const ObservationPoint& down = model->point("model.layers.1.mlp.down_proj.input");
    const auto x = torch::randn({2, 5, 40}) * 3 + 0.7;
    torch::Tensor y;
    {
      torch::AutoGradMode grad(true);  // training: the first batch sets the range
      y = qat->observe(down, x);
    }
    QuantSpec spec;
    spec.bits = 4;
    spec.range = init == "mse" ? RangeMethod::kMse : RangeMethod::kMinMax;
    const auto [lo, hi] = observe_range(x, spec);
    const QParams qp = qparams_from_range(lo, hi, spec);
    const auto named = qat->named_clips();
    EXPECT_EQ(named.at("layers.1.down.step").item<float>(), qp.scale.item<float>()) << init;
    EXPECT_EQ(named.at("layers.1.down.offset").item<float>(), qp.zero.item<float>()) << init;
    EXPECT_TRUE(torch::equal(y, fake_quant(x, qp, spec))) << init << ": the first quantized forward is the calibrated quantizer";
    EXPECT_EQ(named.count("layers.1.down.alpha"), 0u);
  }
}

// An LSQ observer with uneven steps and non-integer offsets, as training leaves them.
std::shared_ptr<QatObserver> trained_lsq(Llama& model, int bits, uint64_t seed) {
  QatConfig qc;
  qc.mode = "lsq+kurtosis";
  qc.bits = bits;
  qc.clip_init_from = "fixed";
  auto qat = std::make_shared<QatObserver>(model, qc);
  auto ranges = qat->named_clips();
  torch::manual_seed(seed);
  const double levels = (1 << bits) - 1;
  for (auto& [name, v] : ranges) {
    const bool step = name.size() > 4 && name.compare(name.size() - 4, 4, "step") == 0;
    v = step ? 0.02 + torch::rand({1}) * 0.3 : torch::rand({1}) * levels;
  }
  qat->load_clips(ranges);
  return qat;
}

TEST(LsqExport, LearnedRangesReproduceTheLsqForwardExactly) {
  for (int bits : {3, 4, 8}) {
    Llama model = test::tiny_model(5);
    auto qat = trained_lsq(model, bits, bits);
    const auto tokens = torch::randint(0, 37, {3, 11}, torch::kInt64);
    torch::NoGradGuard no_grad;
    model->observers().attach(qat);
    const auto want = model->forward(tokens);
    model->observers().clear();
    const auto plain = model->forward(tokens);

    const nlohmann::json clips = qat->clips_json();
    const auto& q = clips["model.layers.0.self_attn.q_proj"];
    EXPECT_EQ(q["zero_point"].get<double>(), std::nearbyint(q["zero_point"].get<double>()));
    const LearnedRanges ranges = learned_ranges_from_json(clips, "clips.json");
    model->observers().attach(learned_input_observer(model, ranges));
    EXPECT_TRUE(torch::equal(model->forward(tokens), want)) << bits << " bits: learned_input_observer";
    model->observers().clear();
    quantize_model(model, recipe_of(fmt::format("[weights]\nbits = 16\n[activations]\nbits = {}\nrange = \"learned\"\n", bits)),
                   nullptr, 1, &ranges);
    EXPECT_TRUE(torch::equal(model->forward(tokens), want)) << bits << " bits: recipe with range = learned";
    EXPECT_GT((plain - want).abs().max().item<double>(), 1e-2) << "the ranges must matter for the test to mean anything";
  }
  // A step and zero point that disagree with alpha and beta, or a fractional zero point: errors.
  auto bad = [](const char* text) { return learned_ranges_from_json(nlohmann::json::parse(text), "c"); };
  EXPECT_NO_THROW(bad(R"({"m": {"alpha": 1.5, "beta": -0.375, "bits": 4, "step": 0.125, "zero_point": 3}})"));
  EXPECT_THROW(bad(R"({"m": {"alpha": 1.5, "beta": -0.375, "bits": 4, "step": 0.25, "zero_point": 3}})"), Error);
  EXPECT_THROW(bad(R"({"m": {"alpha": 1.5, "beta": -0.375, "bits": 4, "step": 0.125, "zero_point": 3.5}})"), Error);
  EXPECT_THROW(bad(R"({"m": {"alpha": 1.5, "beta": -0.375, "bits": 4, "step": -0.125, "zero_point": 3}})"), Error);
  EXPECT_THROW(bad(R"({"m": {"alpha": 1.5, "beta": -0.375, "bits": 4, "step": "x", "zero_point": 3}})"), Error);
}

TEST(LsqObserver, StepsAreKeptPositive) {
  Llama model = test::tiny_model(3);
  auto qat = trained_lsq(model, 4, 1);
  auto ranges = qat->named_clips();
  ranges["layers.0.o.step"] = torch::tensor({-0.01f});
  ranges["layers.1.qkv.step"] = torch::tensor({0.0f});
  qat->load_clips(ranges);
  EXPECT_EQ(qat->constrain_clips(), 2);
  EXPECT_FLOAT_EQ(qat->named_clips().at("layers.0.o.step").item<float>(), static_cast<float>(QatObserver::kMinStep));
  EXPECT_EQ(qat->constrain_clips(), 0);
  ranges.erase("layers.1.down.offset");
  EXPECT_THROW(qat->load_clips(ranges), Error);
}

QatConfig weight_config(int bits, int64_t group) {
  QatConfig qc;
  qc.weight_bits = bits;
  qc.weight_group_size = group;
  return qc;
}

TEST(WeightQat, StartsAsRtnAndExportsTheTrainedWeightsExactly) {
  for (int64_t group : {int64_t{0}, int64_t{4}}) {  // per channel; groups of 4 (24 and 40 columns)
    Llama model = test::tiny_model(7);
    Llama reference = test::tiny_model(7);
    WeightQat wq(model, weight_config(4, group));
    wq.set_step(0);
    const auto tokens = torch::randint(0, 37, {2, 9}, torch::kInt64);
    // A training step: the steps start from the weights (as RTN's scales), gradients reach both.
    const auto loss = model->forward(tokens).logsumexp(-1).mean();
    loss.backward();
    const LearnedWeights lw = wq.learned();
    ASSERT_EQ(lw.steps.size(), model->linear_modules().size());
    const QuantSpec spec = lw.spec();
    for (const auto& m : model->linear_modules()) {
      const auto rtn = rtn_quantize(reference->linear_weight(m), spec);
      const auto [codes, deq] = learned_weight_quantize(model->linear_weight(m).detach(), lw.steps.at(m), spec, m);
      EXPECT_TRUE(torch::equal(codes, rtn.codes)) << m << " group " << group;
      EXPECT_TRUE(torch::equal(deq, rtn.dequantized)) << m;
      EXPECT_GT(model->linear_weight(m).grad().abs().sum().item<double>(), 0) << m;
    }
    for (const auto& p : wq.parameters()) EXPECT_GT(p.grad().abs().sum().item<double>(), 0);

    // Move the steps off RTN's (as training would), then export and quantize with them.
    auto steps = wq.named_steps();
    torch::manual_seed(group + 1);
    for (auto& [name, s] : steps) s = s * (0.7 + 0.6 * torch::rand(s.sizes()));
    wq.load_steps(steps);
    torch::NoGradGuard no_grad;
    const auto want = model->forward(tokens);
    const LearnedWeights moved = wq.learned();
    std::map<std::string, torch::Tensor> trained;  // the fake-quantized weights the forward used
    for (const auto& m : model->linear_modules()) {
      const auto w = model->linear_weight(m);
      const auto s = moved.steps.at(m).reshape({w.size(0), -1, 1});
      trained[m] = (torch::clamp(torch::round(grouped_view(w, spec) / s), -8, 7) * s).reshape(w.sizes());
    }
    test::TempDir dir;
    const std::string path = (dir.path() / kLearnedWeightsFile).string();
    learned_weights_write(moved, path);
    const LearnedWeights loaded = learned_weights_load(path);
    EXPECT_EQ(loaded.bits, 4);
    EXPECT_EQ(loaded.group_size, group);
    Llama exported = test::tiny_model(7);
    const std::string weights = group ? "bits = 4\nsymmetric = true\ngranularity = \"group\"\ngroup_size = 4\n"
                                      : "bits = 4\nsymmetric = true\ngranularity = \"channel\"\n";
    const QuantizedModel q = quantize_model(
        exported, recipe_of("[weights]\n" + weights + "algorithm = \"learned\"\n[activations]\nbits = 16\n"), nullptr, 1,
        nullptr, &loaded);
    for (const auto& m : model->linear_modules()) EXPECT_TRUE(torch::equal(exported->linear_weight(m), trained.at(m))) << m;
    const auto got = exported->forward(tokens);
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-5 * want.abs().max().item<double>()) << "group " << group;
    EXPECT_GT((reference->forward(tokens) - want).abs().max().item<double>(), 1e-3) << "the quantization must matter";
    ASSERT_FALSE(q.linears.empty());
    EXPECT_TRUE(torch::equal(q.linears[0].codes.to(torch::kFloat32) * q.linears[0].weight_qp.scale.reshape({q.linears[0].codes.size(0), -1})
                                                                          .repeat_interleave(group ? 4 : q.linears[0].codes.size(1), 1),
                             trained.at(q.linears[0].module)));
  }
}

TEST(WeightQat, BadStepsAndMismatchedRecipes) {
  Llama model = test::tiny_model(7);
  const Recipe learned = recipe_of("[weights]\nbits = 4\nsymmetric = true\ngranularity = \"channel\"\nalgorithm = \"learned\"\n");
  EXPECT_THROW(quantize_model(model, learned, nullptr, 1), Error);  // no learned steps
  LearnedWeights lw;
  {
    WeightQat wq(model, weight_config(4, 0));
    wq.set_step(0);
    model->forward(torch::zeros({1, 3}, torch::kInt64));
    lw = wq.learned();
  }
  EXPECT_FALSE(model->linear(model->linear_modules()[0])->kernel) << "the kernels are detached with the WeightQat";
  const Recipe other_bits = recipe_of("[weights]\nbits = 8\nsymmetric = true\ngranularity = \"channel\"\nalgorithm = \"learned\"\n");
  EXPECT_THROW(quantize_model(model, other_bits, nullptr, 1, nullptr, &lw), Error);
  const Recipe asym = recipe_of("[weights]\nbits = 4\ngranularity = \"channel\"\nalgorithm = \"learned\"\n");
  EXPECT_THROW(quantize_model(model, asym, nullptr, 1, nullptr, &lw), Error);
  const Recipe with_method = recipe_of(
      "methods = [\"smoothquant\"]\n[weights]\nbits = 4\nsymmetric = true\ngranularity = \"channel\"\nalgorithm = \"learned\"\n"
      "[activations]\nbits = 8\n");
  EXPECT_THROW(quantize_model(model, with_method, nullptr, 1, nullptr, &lw), Error);
  LearnedWeights missing = lw;
  missing.steps.erase(model->linear_modules()[3]);
  EXPECT_THROW(quantize_model(model, learned, nullptr, 1, nullptr, &missing), Error);
  LearnedWeights wrong_shape = lw;
  wrong_shape.steps.begin()->second = torch::ones({3, 1});
  EXPECT_THROW(quantize_model(model, learned, nullptr, 1, nullptr, &wrong_shape), Error);
  EXPECT_NO_THROW(quantize_model(model, learned, nullptr, 1, nullptr, &lw));
  // Files: a non-positive step, missing metadata.
  test::TempDir dir;
  LearnedWeights negative = lw;
  negative.steps.begin()->second = -negative.steps.begin()->second;
  learned_weights_write(negative, (dir.path() / "neg.safetensors").string());
  EXPECT_THROW(learned_weights_load((dir.path() / "neg.safetensors").string()), Error);
  LearnedWeights bad_bits = lw;
  bad_bits.bits = 12;
  learned_weights_write(bad_bits, (dir.path() / "bits.safetensors").string());
  EXPECT_THROW(learned_weights_load((dir.path() / "bits.safetensors").string()), Error);
  EXPECT_THROW(learned_weights_load((dir.path() / "none.safetensors").string()), Error);
  // A group size that does not divide a linear's width.
  EXPECT_THROW(WeightQat(model, weight_config(4, 7)), Error);
}

}  // namespace
}  // namespace outq
