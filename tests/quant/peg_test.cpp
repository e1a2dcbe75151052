// Per-embedding-group (PEG) activation quantization against plain-loop references: the group
// boundaries (even, octet-balanced, unit-balanced), K = 1 equal to per-tensor, K = width equal to
// per-channel, uneven permuted groups code for code, the range-based permutation tightening the
// groups of a planted-outlier input, dynamic PEG, and in a quantized model: the permutation
// measured on calibration data (own or shared by a layer's residual stream), saved and loaded.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>

#include "outq/core/error.h"
#include "outq/ptq/peg_permutation.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/quantized_io.h"
#include "outq/quant/quantizer.h"
#include "test_util.h"
#include "tiny_model.h"

namespace outq {
namespace {

QuantSpec peg(int bits, int groups, bool symmetric = false) {
  QuantSpec s;
  s.bits = bits;
  s.symmetric = symmetric;
  s.granularity = Granularity::kPeg;
  s.peg_groups = groups;
  return s;
}

// Plain-loop reference: asymmetric or symmetric min-max fake quantization of a (rows, C) matrix in
// which element (t, c) belongs to group group_of[c]; float32 arithmetic as the library's, codes
// returned so they compare exactly.
std::vector<int64_t> reference_codes(const torch::Tensor& x, const std::vector<int64_t>& group_of, int64_t groups,
                                     const QuantSpec& s) {
  const auto a = x.contiguous();
  const int64_t rows = a.size(0), C = a.size(1);
  const float* p = a.data_ptr<float>();
  std::vector<float> lo(groups, 0.0f), hi(groups, 0.0f);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t g = group_of[c];
      lo[g] = std::min(lo[g], p[t * C + c]), hi[g] = std::max(hi[g], p[t * C + c]);
    }
  std::vector<int64_t> codes(rows * C);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t g = group_of[c];
      float scale, zero = 0;
      if (s.symmetric) {
        scale = std::max(-lo[g], hi[g]) / static_cast<float>(s.qmax());
      } else {
        scale = (hi[g] - lo[g]) / static_cast<float>(s.qmax());
      }
      if (!(scale > 0)) scale = 1;
      if (!s.symmetric) zero = std::nearbyint(-lo[g] / scale);
      const float q = std::nearbyint(p[t * C + c] / scale + zero);
      codes[t * C + c] = static_cast<int64_t>(std::clamp<double>(q, s.qmin(), s.qmax()));
    }
  return codes;
}

std::vector<int64_t> library_codes(const torch::Tensor& x, const QuantSpec& s, const torch::Tensor& perm = {}) {
  auto [lo, hi] = observe_range(x, s, perm);
  const auto c = quantize(x, qparams_from_range(lo, hi, s), s, perm).to(torch::kInt64).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

TEST(PegBounds, EqualOctetAndUnitGroups) {
  EXPECT_EQ(peg_bounds(768, 6), (std::vector<int64_t>{0, 128, 256, 384, 512, 640, 768}));  // K divides C
  EXPECT_EQ(peg_bounds(48, 4), (std::vector<int64_t>{0, 12, 24, 36, 48}));                // equal, not octets
  EXPECT_EQ(peg_bounds(256, 6), (std::vector<int64_t>{0, 40, 80, 128, 168, 208, 256}));   // whole octets
  EXPECT_EQ(peg_bounds(14, 4), (std::vector<int64_t>{0, 3, 7, 10, 14}));                  // sizes differ by one
  EXPECT_EQ(peg_bounds(24, 24).size(), 25u);
  EXPECT_NE(test::error_of([] { peg_bounds(24, 25); }).find("expected 1..24"), std::string::npos);
  EXPECT_THROW(peg_bounds(24, 0), Error);
}

TEST(Peg, OneGroupIsPerTensorAndWidthGroupsArePerChannel) {
  auto x = torch::randn({9, 14}, at::detail::createCPUGenerator(1));
  x.select(1, 3).mul_(30);
  for (bool sym : {false, true}) {
    QuantSpec tensor;
    tensor.bits = 8, tensor.symmetric = sym;
    EXPECT_EQ(library_codes(x, peg(8, 1, sym)), library_codes(x, tensor)) << "K = 1, symmetric " << sym;
    std::vector<int64_t> own(14);
    for (int64_t c = 0; c < 14; ++c) own[c] = c;
    EXPECT_EQ(library_codes(x, peg(4, 14, sym)), reference_codes(x, own, 14, peg(4, 14, sym))) << "K = C, symmetric " << sym;
  }
}

// Uneven groups (K = 4 of 14 channels) after a permutation: group k holds the channels
// perm[b_k .. b_{k+1}) with the bounds checked above.
TEST(Peg, UnevenPermutedGroupsMatchTheReference) {
  auto x = torch::randn({7, 14}, at::detail::createCPUGenerator(2));
  const auto perm = torch::randperm(14, at::detail::createCPUGenerator(3));
  const std::vector<int64_t> bounds = {0, 3, 7, 10, 14};
  std::vector<int64_t> group_of(14);
  for (int k = 0; k < 4; ++k)
    for (int64_t i = bounds[k]; i < bounds[k + 1]; ++i) group_of[perm[i].item<int64_t>()] = k;
  for (int bits : {4, 8}) {
    const QuantSpec s = peg(bits, 4);
    EXPECT_EQ(library_codes(x, s, perm), reference_codes(x, group_of, 4, s)) << bits << " bits";
    auto [lo, hi] = observe_range(x, s, perm);
    const QParams qp = qparams_from_range(lo, hi, s);
    EXPECT_TRUE(torch::equal(fake_quant(x, qp, s, perm), dequantize(quantize(x, qp, s, perm), qp, s, perm)));
    EXPECT_TRUE(torch::equal(fake_quant_dynamic(x, s, perm), fake_quant(x, qp, s, perm)));  // dynamic: same ranges
  }
}

// Three planted outlier channels spread over the width: without the permutation they spoil three of
// the six groups; the range-based permutation puts them together, so five groups stay tight.
TEST(Peg, RangePermutationTightensTheGroups) {
  auto x = torch::randn({64, 48}, at::detail::createCPUGenerator(4));
  for (int64_t c : {5, 20, 40}) x.select(1, c).mul_(50);
  const auto lo = std::get<0>(x.min(0)), hi = std::get<0>(x.max(0));
  const auto perm = range_permutation(lo, hi);
  EXPECT_EQ(perm.size(0), 48);
  // The three widest channels come last.
  std::vector<int64_t> last = {perm[45].item<int64_t>(), perm[46].item<int64_t>(), perm[47].item<int64_t>()};
  std::sort(last.begin(), last.end());
  EXPECT_EQ(last, (std::vector<int64_t>{5, 20, 40}));
  const QuantSpec s = peg(8, 6);
  auto normal = torch::ones({48}, torch::kBool);
  for (int64_t c : {5, 20, 40}) normal[c] = false;
  // Squared error on the 45 ordinary channels (the outliers' own error is the same either way).
  auto mse = [&](const torch::Tensor& p) {
    auto [l, h] = observe_range(x, s, p);
    const auto err = (fake_quant(x, qparams_from_range(l, h, s), s, p) - x).pow(2);
    return std::make_pair(err.index({torch::indexing::Slice(), normal}).mean().item<double>(), (h - l).flatten());
  };
  const auto [e_plain, spread_plain] = mse({});
  const auto [e_perm, spread_perm] = mse(perm);
  // Five of six groups have a range below 20 with the permutation, three without it.
  EXPECT_EQ((spread_perm < 20).sum().item<int64_t>(), 5);
  EXPECT_EQ((spread_plain < 20).sum().item<int64_t>(), 3);
  EXPECT_LT(e_perm, e_plain / 2) << "plain " << e_plain << ", permuted " << e_perm;
}

TEST(PegSpec, SettingsThatWouldChangeNothingAreErrors) {
  QuantSpec s = peg(8, 4);
  s.peg_shared = true;
  EXPECT_NE(test::error_of([&] { s.validate("r.toml: activations", false); }).find("peg_shared"), std::string::npos);
  QuantSpec t;
  t.bits = 8;
  t.peg_permute = true;
  EXPECT_NE(test::error_of([&] { t.validate("r.toml: activations", false); }).find("only with granularity = \"peg\""),
            std::string::npos);
}

// Per-channel extremes of a point, measured independently of the library's PEG code.
class Extremes : public Observer {
 public:
  explicit Extremes(int point) : point_(point) {}
  torch::Tensor observe(const ObservationPoint& p, const torch::Tensor& x) override {
    if (p.index != point_) return x;
    const auto m = x.reshape({-1, x.size(-1)});
    auto l = std::get<0>(m.min(0)), h = std::get<0>(m.max(0));
    lo = lo.defined() ? torch::minimum(lo, l) : l;
    hi = hi.defined() ? torch::maximum(hi, h) : h;
    return x;
  }
  torch::Tensor lo, hi;

 private:
  int point_;
};

Recipe peg_recipe(const std::string& extra) {
  return recipe_parse(fmt::format("name = \"peg\"\n[weights]\nbits = 8\ngranularity = \"channel\"\n"
                                  "[activations]\nbits = 8\ngranularity = \"peg\"\npeg_groups = 3\n{}\n"
                                  "[calibration]\nwindows = 6\nseq_len = 12\nbatch_size = 3\n",
                                  extra),
                      "peg.toml");
}

// The permutation a quantized model stores is the range permutation of the point named by
// peg_permutation_source, measured on the calibration windows after weight quantization; a
// shared permutation of q/k/v and gate/up inputs comes from the layer's down_proj output, the
// attention-output input keeps its own. Saved and loaded, the model gives the same logits.
TEST(PegModel, PermutationsAreMeasuredSharedSavedAndLoaded) {
  test::TempDir dir;
  test::write_random_shard(dir / "calib.bin", 4000, 37, 5);
  const TokenShard shard(dir / "calib.bin");
  for (bool shared : {false, true}) {
    Llama model = test::tiny_model(7);
    const Recipe r = peg_recipe(shared ? "peg_permute = true\npeg_shared = true" : "peg_permute = true");
    const QuantizedModel q = quantize_model(model, r, &shard, 1);
    const auto windows = calibration_windows(shard, r.calibration, 1);
    for (const auto& rec : q.linears) {
      ASSERT_TRUE(rec.activation_perm.defined()) << rec.module;
      const std::string src = peg_permutation_source(model, rec.module + ".input", rec.activation_spec);
      const bool from_down = src.find("down_proj.output") != std::string::npos;
      const bool stream_reader = rec.module.find("o_proj") == std::string::npos &&
                                 rec.module.find("down_proj") == std::string::npos;
      EXPECT_EQ(from_down, shared && stream_reader) << rec.module;
      // Independent measurement on the weight-quantized model without activation quantization.
      model->observers().clear();
      auto ext = std::make_shared<Extremes>(model->point(src).index);
      model->observers().attach(ext);
      run_windows(model, windows, 3);
      model->observers().clear();
      const auto expected = torch::argsort((ext->hi - ext->lo).to(torch::kFloat64), true, 0, false);
      EXPECT_TRUE(torch::equal(rec.activation_perm, expected)) << rec.module;
    }
    model->observers().attach(q.activations);
    const auto tokens = windows.slice(0, 0, 2);
    const auto logits = model->forward(tokens);
    quantized_save(model, q, dir / "q", "");
    Llama loaded = quantized_load(dir / "q", nullptr);
    EXPECT_TRUE(torch::equal(loaded->forward(tokens), logits)) << "shared " << shared;
    // Without the permutation the model computes something else (the test would see a dropped one).
    QuantizedModel copy = q;
    for (auto& rec : copy.linears) rec.activation_perm = torch::Tensor();
    model->observers().clear();
    attach_activation_quantizer(model, copy.linears);
    EXPECT_FALSE(torch::equal(model->forward(tokens), logits));
  }
}

TEST(PegModel, TooManyGroupsIsAnError) {
  Llama model = test::tiny_model(7);
  const Recipe r = recipe_parse("name = \"p\"\n[activations]\nbits = 8\ngranularity = \"peg\"\npeg_groups = 30\n"
                                "dynamic = true\n", "p.toml");
  const std::string e = test::error_of([&] { quantize_model(model, r, nullptr, 1); });
  EXPECT_NE(e.find("activations.peg_groups: expected at most the input width 24"), std::string::npos) << e;
}

}  // namespace
}  // namespace outq
