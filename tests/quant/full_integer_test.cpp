// Full-integer mode (simulation): with full_integer = true every tensor of the block is quantized
// (linear inputs and outputs, residual sums, attention scores and probabilities), each on its own
// calibrated grid; [[tensors]] globs address them by name; bad globs and impossible specs are
// one-line errors; a saved and loaded model computes the same logits.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <map>

#include "outq/core/error.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/quantized_io.h"
#include "test_util.h"
#include "tiny_model.h"

namespace outq {
namespace {

// Records every point's tensor after the quantizer replaced it.
class After : public Observer {
 public:
  torch::Tensor observe(const ObservationPoint& p, const torch::Tensor& x) override {
    seen[p.name] = x.detach().clone();
    return x;
  }
  std::map<std::string, torch::Tensor> seen;
};

Recipe full_recipe(const std::string& extra) {
  return recipe_parse(fmt::format("name = \"fi\"\nfull_integer = true\n[weights]\nbits = 8\ngranularity = \"channel\"\n"
                                  "[activations]\nbits = 8\n[calibration]\nwindows = 4\nseq_len = 12\nbatch_size = 2\n{}",
                                  extra),
                      "fi.toml");
}

struct Calib {
  test::TempDir dir;
  std::unique_ptr<TokenShard> shard;
  Calib() {
    test::write_random_shard(dir / "calib.bin", 3000, 37, 8);
    shard = std::make_unique<TokenShard>(dir / "calib.bin");
  }
};

TEST(FullInteger, EveryTensorIsOnItsCalibratedGrid) {
  Calib c;
  for (const std::string post : {"pre", "post"}) {
    test::TinyShape shape;
    Llama model(test::tiny_config(shape));
    if (post == "post") {
      ModelConfig cfg = test::tiny_config(shape);
      cfg.norm_placement = "post";
      model = Llama(cfg);
    }
    model->reset_parameters(4);
    const QuantizedModel q = quantize_model(model, full_recipe(
        "[[tensors]]\npoints = \"model.layers.1.residual_mlp\"\nactivations = { bits = 16, integer = true }\n"), c.shard.get(), 1);
    int expected = 0;
    for (const auto& p : model->points()) expected += p.kind != PointKind::kLinearInput;
    ASSERT_EQ(static_cast<int>(q.points.size()), expected) << post;
    auto after = std::make_shared<After>();
    model->observers().attach(after);
    torch::NoGradGuard no_grad;
    model->forward(torch::randint(0, 37, {2, 9}, at::detail::createCPUGenerator(1), torch::kInt64));
    for (const auto& p : q.points) {
      ASSERT_TRUE(p.qp.scale.defined()) << p.point;
      EXPECT_EQ(p.spec.bits, p.point == "model.layers.1.residual_mlp" ? 16 : 8) << p.point;
      EXPECT_EQ(p.spec.integer16, p.point == "model.layers.1.residual_mlp") << p.point;
      const auto& x = after->seen.at(p.point);
      auto on_grid = x;
      if (p.point.find("scores") != std::string::npos) on_grid = x.masked_fill(torch::isinf(x), 0);  // masked later
      // Quantized values are fixed points of the quantizer, and there are at most 2^b of them.
      EXPECT_TRUE(torch::equal(fake_quant(on_grid, p.qp, p.spec, p.perm), on_grid)) << post << " " << p.point;
      EXPECT_LE(std::get<0>(at::_unique(on_grid.flatten())).numel(), int64_t{1} << p.spec.bits) << p.point;
    }
    // The probabilities really are quantized: far fewer distinct values than a float softmax has.
    EXPECT_LE(std::get<0>(at::_unique(after->seen.at("model.layers.0.self_attn.probs").flatten())).numel(), 256);
  }
}

TEST(FullInteger, TensorGlobsAndSpecsAreChecked) {
  Calib c;
  Llama model = test::tiny_model(4);
  auto error = [&](const std::string& extra) {
    return test::error_of([&] { quantize_model(model, full_recipe(extra), c.shard.get(), 1); });
  };
  EXPECT_NE(error("[[tensors]]\npoints = \"model.layers.*.residual_fnn\"\nactivations = { bits = 8 }\n")
                .find("tensors.points: expected a glob on tensor names such as"),
            std::string::npos);
  EXPECT_NE(error("[[tensors]]\npoints = \"model.layers.*.mlp.down_proj.input\"\nactivations = { bits = 8 }\n")
                .find("names linear inputs"),
            std::string::npos);
  EXPECT_NE(error("[[tensors]]\npoints = \"*.scores\"\nactivations = { bits = 8, granularity = \"peg\", peg_groups = 2 }\n")
                .find("expected tensor or token for attention scores"),
            std::string::npos);
  EXPECT_NE(error("[[tensors]]\npoints = \"*.residual_mlp\"\nactivations = { bits = 8, granularity = \"peg\", peg_groups = 99 }\n")
                .find("at most the tensor's width 24"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { recipe_parse("[[tensors]]\npoints = \"*\"\n", "r.toml"); }).find("tensors.activations"),
            std::string::npos);
}

// A per-embedding-group default reaches the attention scores and probabilities per tensor (they
// have no channels); every (B, T, C) tensor keeps its groups.
TEST(FullInteger, PegDefaultQuantizesAttentionPerTensor) {
  Calib c;
  Llama model = test::tiny_model(4);
  const Recipe r = recipe_parse("full_integer = true\n[activations]\nbits = 8\ngranularity = \"peg\"\npeg_groups = 3\n"
                                "peg_permute = true\n[calibration]\nwindows = 4\nseq_len = 12\nbatch_size = 2\n", "p.toml");
  const QuantizedModel q = quantize_model(model, r, c.shard.get(), 1);
  for (const auto& p : q.points) {
    const bool attention = p.point.find("scores") != std::string::npos || p.point.find("probs") != std::string::npos;
    EXPECT_EQ(p.spec.granularity, attention ? Granularity::kTensor : Granularity::kPeg) << p.point;
    EXPECT_EQ(p.perm.defined(), !attention) << p.point;
  }
}

TEST(FullInteger, SavedAndLoadedModelsAgree) {
  Calib c;
  Llama model = test::tiny_model(5);
  const QuantizedModel q = quantize_model(
      model,
      full_recipe("[[tensors]]\npoints = \"*.residual_*\"\nactivations = { bits = 8, granularity = \"peg\", peg_groups = 3, "
                  "peg_permute = true, peg_shared = true }\n"),
      c.shard.get(), 1);
  torch::NoGradGuard no_grad;
  const auto tokens = torch::randint(0, 37, {2, 9}, at::detail::createCPUGenerator(2), torch::kInt64);
  const auto logits = model->forward(tokens);
  quantized_save(model, q, c.dir / "q", "");
  QuantizedModel info;
  Llama loaded = quantized_load(c.dir / "q", &info);
  EXPECT_EQ(info.points.size(), q.points.size());
  EXPECT_TRUE(torch::equal(loaded->forward(tokens), logits));
  // One permutation per layer, shared by both residual sums (it comes from the layer's
  // down-projection output), and different between the layers.
  std::map<std::string, torch::Tensor> perms;
  for (const auto& p : info.points)
    if (p.point.find("residual") != std::string::npos) perms[p.point] = p.perm;
  ASSERT_EQ(perms.size(), 4u);
  for (const auto& [name, perm] : perms) ASSERT_TRUE(perm.defined()) << name;
  EXPECT_TRUE(torch::equal(perms["model.layers.0.residual_attn"], perms["model.layers.0.residual_mlp"]));
  EXPECT_TRUE(torch::equal(perms["model.layers.1.residual_attn"], perms["model.layers.1.residual_mlp"]));
  EXPECT_FALSE(torch::equal(perms["model.layers.0.residual_mlp"], perms["model.layers.1.residual_mlp"]));
}

}  // namespace
}  // namespace outq
