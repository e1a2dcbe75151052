// GPTQ over a whole model: quantize_model's layer-by-layer GPTQ (each layer's Hessians from the
// already-quantized earlier layers and slots, each layer run only as far as the inputs it needs)
// against a reference that runs the whole model for every slot; and GptqCache: an identical run
// reuses the stored weights bit for bit, any change GPTQ would see (weights, weight spec, GPTQ
// options, calibration, a method's transform) runs it again, and the least recently used result
// is dropped past the memory bound.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <functional>
#include <map>

#include "outq/model/block_schema.h"
#include "outq/ptq/activation_quant.h"
#include "outq/ptq/gptq_cache.h"
#include "outq/ptq/quantize_model.h"
#include "test_util.h"
#include "tiny_model.h"

namespace outq {
namespace {

// Awkward widths: 30 channels in 3 heads of 10 (one key/value head shared by all), 46 MLP channels.
const test::TinyShape kShape{30, 46, 3, 1, 41, 20, 3, 0.3};

Recipe gptq_recipe(bool true_sequential, int bits = 4, const std::string& activations = "tensor",
                   const std::string& extra = "") {
  return recipe_parse(fmt::format("name = \"g\"\n{}[weights]\nbits = {}\ngranularity = \"channel\"\nalgorithm = \"gptq\"\n"
                                  "[gptq]\nact_order = true\nblock_size = 8\ntrue_sequential = {}\n"
                                  "[activations]\nbits = 4\ngranularity = \"{}\"\ndynamic = {}\n"
                                  "[calibration]\nwindows = 13\nseq_len = 20\nbatch_size = 5\n",
                                  extra, bits, true_sequential, activations, activations == "token"),
                      "g.toml");
}

// Accumulates the Hessian of one module's input over full forward passes.
class InputHessian : public Observer {
 public:
  explicit InputHessian(std::string module) : module_(std::move(module)) {}
  HessianAccumulator acc;
  torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) override {
    if (point.kind == PointKind::kLinearInput && point.module == module_) acc.add(x);
    return x;
  }

 private:
  std::string module_;
};

// The reference: for every layer and slot in forward order (or every slot of a layer at once),
// the slot's input Hessian from whole-model forward passes over the calibration batches, then
// GPTQ of each linear of the slot with it, written back before the next slot.
void reference_gptq(Llama& model, const Recipe& recipe, const torch::Tensor& windows) {
  torch::NoGradGuard no_grad;
  const auto& slots = block_schema().slots;
  for (int l = 0; l < model->config().num_hidden_layers; ++l) {
    std::vector<std::vector<const ActivationSlot*>> steps;
    for (const auto& slot : slots) {
      if (recipe.gptq.true_sequential || steps.empty()) steps.emplace_back();
      steps.back().push_back(&slot);
    }
    for (const auto& step : steps) {
      std::map<const ActivationSlot*, std::shared_ptr<InputHessian>> hessians;
      for (const ActivationSlot* slot : step) {
        hessians[slot] = std::make_shared<InputHessian>(block_module(l, slot->linears.front()));
        model->observers().attach(hessians[slot]);
      }
      for (int64_t b = 0; b < windows.size(0); b += recipe.calibration.batch_size)
        model->forward(windows.slice(0, b, std::min(b + recipe.calibration.batch_size, windows.size(0))));
      model->observers().clear();
      for (const ActivationSlot* slot : step) {
        const torch::Tensor H = hessians[slot]->acc.hessian();
        for (const auto& name : slot->linears) {
          const std::string module = block_module(l, name);
          model->linear_weight(module).copy_(
              gptq_quantize(model->linear_weight(module), H, recipe.weights, recipe.gptq, module).dequantized);
        }
      }
    }
  }
}

// Bit-exact: both sides run the same float32 operations on the same batches (the reference only
// recomputes the earlier layers instead of carrying their outputs).
TEST(GptqModel, LayerByLayerEqualsWholeModelReference) {
  test::TempDir dir;
  test::write_random_shard(dir / "calib.bin", 3000, kShape.vocab, 3);
  const TokenShard shard(dir / "calib.bin");
  for (bool true_sequential : {true, false}) {
    const Recipe recipe = gptq_recipe(true_sequential);
    Llama model = test::tiny_model(5, kShape), reference = test::tiny_model(5, kShape);
    quantize_model(model, recipe, &shard, 0);
    reference_gptq(reference, recipe, calibration_windows(shard, recipe.calibration, 0));
    for (const auto& m : model->linear_modules()) {
      if (m == "lm_head") continue;
      EXPECT_TRUE(torch::equal(model->linear_weight(m), reference->linear_weight(m)))
          << m << (true_sequential ? " (true sequential)" : " (all slots at once)");
    }
  }
}

// The result of quantizing a fresh copy of model `seed` with `recipe` (and cache), its weights.
struct Quantized {
  QuantizedModel q;
  std::map<std::string, torch::Tensor> weights;
};
Quantized run(const Recipe& recipe, const TokenShard& shard, GptqCache* cache, uint64_t seed = 5,
        const std::function<void(Llama&)>& edit = {}) {
  Llama model = test::tiny_model(seed, kShape);
  if (edit) edit(model);
  Quantized r{quantize_model(model, recipe, &shard, 0, nullptr, nullptr, cache), {}};
  for (const auto& m : model->linear_modules()) r.weights[m] = model->linear_weight(m).detach().clone();
  return r;
}

bool same_weights(const Quantized& a, const Quantized& b) {
  for (const auto& [m, w] : a.weights)
    if (!torch::equal(w, b.weights.at(m))) return false;
  for (size_t i = 0; i < a.q.linears.size(); ++i)
    if (a.q.linears[i].codes.defined() && !torch::equal(a.q.linears[i].codes, b.q.linears[i].codes)) return false;
  return true;
}

TEST(GptqCache, IdenticalRunsReuseTheWeightsAndAnyChangeGptqSeesRunsAgain) {
  test::TempDir dir;
  test::write_random_shard(dir / "calib.bin", 3000, kShape.vocab, 4);
  const TokenShard shard(dir / "calib.bin");
  GptqCache cache;
  const Quantized plain = run(gptq_recipe(true), shard, nullptr);
  const Quantized first = run(gptq_recipe(true), shard, &cache);
  EXPECT_FALSE(first.q.gptq_reused);
  EXPECT_GT(first.q.gptq_seconds, 0.0);
  EXPECT_TRUE(same_weights(plain, first));
  EXPECT_EQ(cache.size(), 1u);

  // Other activations (dynamic per token) and a method that leaves weights and forward alone
  // (QFeM only keeps some inputs in float): GPTQ's result is reused, equal to running it.
  for (const Recipe& r : {gptq_recipe(true, 4, "token"), gptq_recipe(true, 4, "tensor", "methods = [\"qfem\"]\n")}) {
    const Quantized reused = run(r, shard, &cache);
    EXPECT_TRUE(reused.q.gptq_reused) << r.source_text;
    EXPECT_EQ(reused.q.gptq_seconds, first.q.gptq_seconds);
    EXPECT_TRUE(same_weights(reused, run(r, shard, nullptr))) << r.source_text;
  }
  EXPECT_EQ(cache.hits(), 2);

  // Anything GPTQ reads: each of these runs again (and then differs from the first run).
  Recipe damp = gptq_recipe(true);
  damp.gptq.damp = 0.05;
  Recipe windows = gptq_recipe(true);
  windows.calibration.windows = 12;
  const std::vector<std::pair<std::string, Quantized>> changed = {
      {"3-bit weights", run(gptq_recipe(true, 3), shard, &cache)},
      {"all slots at once", run(gptq_recipe(false), shard, &cache)},
      {"damp", run(damp, shard, &cache)},
      {"calibration windows", run(windows, shard, &cache)},
      {"one weight", run(gptq_recipe(true), shard, &cache, 5,
                         [](Llama& m) {
                           torch::NoGradGuard g;
                           m->layer(2).mlp->up_proj->weight[3][7] += 0.25;
                         })},
      {"SmoothQuant", run(gptq_recipe(true, 4, "tensor", "methods = [\"smoothquant\"]\n"), shard, &cache)},
  };
  for (const auto& [what, r] : changed) {
    EXPECT_FALSE(r.q.gptq_reused) << what;
    EXPECT_FALSE(same_weights(r, first)) << what;
  }
  EXPECT_EQ(cache.hits(), 2);
}

TEST(GptqCache, DropsTheLeastRecentlyUsedResultPastItsBound) {
  test::TempDir dir;
  test::write_random_shard(dir / "calib.bin", 3000, kShape.vocab, 4);
  const TokenShard shard(dir / "calib.bin");
  GptqCache probe;
  run(gptq_recipe(true), shard, &probe);
  const int64_t one = probe.bytes();
  ASSERT_GT(one, 0);
  GptqCache cache(2 * one + one / 2);  // room for two results
  run(gptq_recipe(true, 4), shard, &cache);
  run(gptq_recipe(true, 3), shard, &cache);
  EXPECT_TRUE(run(gptq_recipe(true, 4), shard, &cache).q.gptq_reused);  // 4-bit now the most recent
  run(gptq_recipe(true, 5), shard, &cache);                              // drops the 3-bit result
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_LE(cache.bytes(), 2 * one + one / 2);
  EXPECT_TRUE(run(gptq_recipe(true, 4), shard, &cache).q.gptq_reused);
  EXPECT_FALSE(run(gptq_recipe(true, 3), shard, &cache).q.gptq_reused);
  GptqCache tiny(one / 2);  // a result larger than the bound is not kept
  run(gptq_recipe(true), shard, &tiny);
  EXPECT_EQ(tiny.size(), 0u);
}

}  // namespace
}  // namespace outq
