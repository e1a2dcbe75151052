// GPTQ: the lazy-block implementation equals a plain column-by-column GPTQ written here in
// float64 (to 1e-6), with and without act-order and groups; its output error ||XW^T - XQ^T|| is
// below RTN's on inputs with correlated channels; dead columns; a singular Hessian is a clear
// error; recipes: parsing, overrides, bad keys and values.
#include <gtest/gtest.h>

#include "outq/core/error.h"
#include "outq/ptq/gptq.h"
#include "outq/quant/recipe.h"

namespace outq {
namespace {

// Inputs with correlated channels: X = Z A with a random mixing matrix and a few loud channels.
torch::Tensor correlated_inputs(int64_t n, int64_t c, uint64_t seed) {
  torch::manual_seed(seed);
  auto z = torch::randn({n, c}, torch::kFloat64);
  auto a = torch::randn({c, c}, torch::kFloat64) * 0.3 + torch::eye(c, torch::kFloat64);
  auto x = torch::matmul(z, a);
  x.select(1, 3).mul_(8);
  return x;
}

// Column-by-column GPTQ in float64: every column's error is propagated to all later columns
// at once (no blocks). Quantizer parameters come from the library's (separately tested) range
// functions, per row over the group's fully updated columns, or fixed beforehand.
torch::Tensor plain_gptq(torch::Tensor W, torch::Tensor H, const QuantSpec& spec, const GptqOptions& o) {
  W = W.to(torch::kFloat64).clone();
  H = H.to(torch::kFloat64).clone();
  const int64_t rows = W.size(0), cols = W.size(1);
  const bool grouped = spec.granularity == Granularity::kGroup;
  const int64_t g = grouped ? spec.group_size : cols;
  QuantSpec row_spec = spec;
  row_spec.granularity = Granularity::kChannel;
  auto params = [&](const torch::Tensor& w) {
    auto [lo, hi] = observe_range(w, row_spec);
    const QParams qp = qparams_from_range(lo, hi, row_spec);
    return std::make_pair(qp.scale.flatten().to(torch::kFloat64), qp.zero.flatten().to(torch::kFloat64));
  };
  std::vector<std::pair<torch::Tensor, torch::Tensor>> group_params(cols / g);
  const bool static_groups = grouped && o.act_order;
  if (spec.granularity == Granularity::kTensor) {
    auto [lo, hi] = observe_range(W, spec);
    const QParams qp = qparams_from_range(lo, hi, spec);
    group_params[0] = {qp.scale.flatten().to(torch::kFloat64).expand({rows}), qp.zero.flatten().to(torch::kFloat64).expand({rows})};
  } else if (!grouped || static_groups) {
    for (int64_t k = 0; k < cols / g; ++k) group_params[k] = params(W.slice(1, k * g, (k + 1) * g));
  }
  torch::Tensor perm = torch::arange(cols);
  if (o.act_order) perm = torch::argsort(H.diagonal(), 0, true);
  W = W.index_select(1, perm);
  H = H.index_select(0, perm).index_select(1, perm);
  H.diagonal().add_(o.damp * H.diagonal().mean().item<double>());
  const auto U = torch::linalg::cholesky(torch::cholesky_inverse(torch::linalg::cholesky(H))).t();
  auto Q = torch::zeros_like(W);
  for (int64_t i = 0; i < cols; ++i) {
    const int64_t group = perm[i].item<int64_t>() / g;
    if (grouped && !static_groups && i % g == 0) group_params[group] = params(W.slice(1, i, i + g));
    const auto& [s, z] = group_params[group];
    const auto w = W.select(1, i).clone();
    const auto q = (torch::clamp(torch::round(w / s) + z, spec.qmin(), spec.qmax()) - z) * s;
    Q.select(1, i).copy_(q);
    const auto err = (w - q) / U[i][i];
    for (int64_t j = i + 1; j < cols; ++j) W.select(1, j).sub_(err * U[i][j]);
  }
  return Q.index_select(1, torch::argsort(perm));
}

QuantSpec weight_spec(int bits, Granularity g, int group = 0) {
  QuantSpec s;
  s.bits = bits;
  s.granularity = g;
  s.group_size = group;
  return s;
}

TEST(Gptq, LazyBlocksEqualColumnByColumn) {
  const int64_t rows = 17, cols = 96;
  const auto X = correlated_inputs(400, cols, 1);
  const auto H = (2.0 / 400) * torch::matmul(X.t(), X);
  torch::manual_seed(2);
  const auto W = torch::randn({rows, cols});
  for (bool act_order : {false, true})
    for (const QuantSpec& spec : {weight_spec(4, Granularity::kChannel), weight_spec(3, Granularity::kGroup, 32),
                                  weight_spec(4, Granularity::kGroup, 24), weight_spec(4, Granularity::kTensor)}) {
      GptqOptions o;
      o.act_order = act_order;
      o.block_size = 40;  // not a multiple of the width: blocks end mid-matrix
      const auto lazy = gptq_quantize(W, H.to(torch::kFloat32), spec, o, "test");
      const auto plain = plain_gptq(W, H.to(torch::kFloat32), spec, o);
      EXPECT_LE((lazy.dequantized.to(torch::kFloat64) - plain).abs().max().item<double>(), 1e-6)
          << spec.describe() << " act_order " << act_order;
      // Codes and parameters reproduce the dequantized weights.
      EXPECT_TRUE(torch::allclose(dequantize(lazy.codes, lazy.qp, spec), lazy.dequantized, 0, 1e-6));
    }
}

TEST(Gptq, BeatsRtnOnCorrelatedInputs) {
  const int64_t cols = 128;
  const auto X = correlated_inputs(1000, cols, 5).to(torch::kFloat32);
  HessianAccumulator acc;
  acc.add(X.slice(0, 0, 500));
  acc.add(X.slice(0, 500));
  EXPECT_EQ(acc.tokens, 1000);
  torch::manual_seed(6);
  const auto W = torch::randn({64, cols});
  for (const QuantSpec& spec : {weight_spec(4, Granularity::kChannel), weight_spec(3, Granularity::kGroup, 32)})
    for (bool act_order : {false, true}) {
      GptqOptions o;
      o.act_order = act_order;
      const auto g = gptq_quantize(W, acc.hessian(), spec, o, "test");
      const auto r = rtn_quantize(W, spec);
      const auto ref = torch::matmul(X, W.t());
      const double e_gptq = (ref - torch::matmul(X, g.dequantized.t())).norm().item<double>();
      const double e_rtn = (ref - torch::matmul(X, r.dequantized.t())).norm().item<double>();
      EXPECT_LT(e_gptq, 0.8 * e_rtn) << spec.describe() << " act_order " << act_order;
    }
}

TEST(Gptq, DeadColumnsAndSingularHessian) {
  const auto X = correlated_inputs(300, 16, 7).to(torch::kFloat32);
  auto H = (2.0 / 300) * torch::matmul(X.t(), X);
  H.select(0, 5).zero_();
  H.select(1, 5).zero_();  // channel 5 never active
  const auto W = torch::randn({8, 16});
  const auto q = gptq_quantize(W, H, weight_spec(4, Granularity::kChannel), GptqOptions{}, "layer");
  EXPECT_TRUE(torch::equal(q.dequantized.select(1, 5), torch::zeros({8})));
  GptqOptions tiny_damp;
  tiny_damp.damp = 1e-30;
  const auto rank_one = torch::outer(torch::ones({16}), torch::ones({16})) * -1.0;  // negative definite
  try {
    gptq_quantize(W, rank_one, weight_spec(4, Granularity::kChannel), tiny_damp, "model.layers.0.mlp.up_proj");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.up_proj: GPTQ: the input Hessian is not positive definite"),
              std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("raise gptq.damp"), std::string::npos);
  }
  EXPECT_THROW(gptq_quantize(W, H, weight_spec(4, Granularity::kGroup, 5), GptqOptions{}, "x"), Error);
}

std::string recipe_error(const std::string& text) {
  try {
    recipe_parse(text, "r.toml");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Recipe, ParsesSpecsOverridesAndLabels) {
  const Recipe r = recipe_parse(
      "name = \"mix\"\n[weights]\nbits = 4\ngranularity = \"group\"\ngroup_size = 32\nalgorithm = \"gptq\"\n"
      "[gptq]\nact_order = true\n[activations]\nbits = 8\ngranularity = \"token\"\ndynamic = true\n"
      "[[override]]\nmodules = \"model.layers.*.mlp.down_proj\"\nactivations = { bits = 16 }\n"
      "[[override]]\nmodules = \"model.layers.0.*\"\nweights = { bits = 8, granularity = \"channel\" }\n",
      "r.toml");
  EXPECT_EQ(r.name, "mix");
  EXPECT_EQ(r.label(), "W4A8");
  EXPECT_EQ(r.algorithm, WeightAlgorithm::kGptq);
  EXPECT_TRUE(r.gptq.act_order);
  EXPECT_EQ(r.weight_spec("model.layers.1.self_attn.q_proj").bits, 4);
  EXPECT_EQ(r.weight_spec("model.layers.0.self_attn.q_proj").bits, 8);
  EXPECT_EQ(r.weight_spec("model.layers.0.self_attn.q_proj").granularity, Granularity::kChannel);
  EXPECT_EQ(r.activation_spec("model.layers.3.mlp.down_proj").bits, 16);
  EXPECT_EQ(r.activation_spec("model.layers.3.mlp.up_proj").bits, 8);
  EXPECT_FALSE(r.needs_calibration());
  EXPECT_EQ(glob_matches("model.layers.*.mlp.down_proj", {"model.layers.0.mlp.down_proj", "model.layers.0.mlp.up_proj"}).size(), 1u);
}

TEST(Recipe, BadRecipesAreClearErrors) {
  EXPECT_NE(recipe_error("[weights]\nbitz = 4\n").find("unknown recipe key 'weights.bitz' (valid keys in [weights]: bits"),
            std::string::npos);
  EXPECT_NE(recipe_error("colour = 1\n").find("unknown recipe key 'colour'"), std::string::npos);
  EXPECT_NE(recipe_error("[weights]\nbits = 12\n").find("bits: expected 2..8, or 16 for no quantization, found 12"),
            std::string::npos);
  EXPECT_NE(recipe_error("[activations]\nbits = 8\ninteger = true\n").find("integer: expected true only with bits = 16"),
            std::string::npos);
  EXPECT_NE(recipe_error("[weights]\nalgorithm = \"awq\"\n").find("weights.algorithm: expected \"rtn\", \"gptq\" or \"learned\""),
            std::string::npos);
  EXPECT_NE(recipe_error("[activations]\nbits = 8\ngranularity = \"token\"\n").find("true for per-token activations"),
            std::string::npos);
  EXPECT_NE(recipe_error("[[override]]\nweights = { bits = 8 }\n").find("override.modules"), std::string::npos);
  EXPECT_NE(recipe_error("[weights\n").find("not valid TOML"), std::string::npos);
  // No silent narrowing (4294967300 would become 4) and no non-finite numbers.
  EXPECT_NE(recipe_error("[weights]\nbits = 4294967300\n").find("weights.bits: expected an integer in [-2147483648, "
                                                               "2147483647], found 4294967300"), std::string::npos);
  EXPECT_NE(recipe_error("[gptq]\ndamp = nan\n").find("gptq.damp: expected a finite number, found nan"), std::string::npos);
  EXPECT_NE(recipe_error("[activations]\npercentile = inf\n").find("expected a finite number, found inf"), std::string::npos);
}

}  // namespace
}  // namespace outq
