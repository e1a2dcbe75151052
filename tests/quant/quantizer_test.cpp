// Quantizer math against an independent double-precision reference written here with plain
// loops: every granularity, symmetric and asymmetric, bits 2/3/4/8, widths that are not
// multiples of the group size. Codes must match exactly (ties-to-even via std::nearbyint);
// fake_quant == dequantize(quantize); the error inside the range is at most half a step;
// the straight-through gradient is 1 inside the clipping range and 0 outside.
#include <gtest/gtest.h>

#include <cfenv>
#include <cmath>

#include "outq/core/error.h"
#include "outq/quant/quantizer.h"

namespace outq {
namespace {

struct Ref {
  std::vector<double> scale, zero;  // per (row, group)
  std::vector<int64_t> codes;
};

// Plain-loop reference for tensor / token / channel / group granularity of a (rows, cols) matrix.
Ref reference(const torch::Tensor& x, const QuantSpec& s) {
  const auto a = x.to(torch::kFloat64).contiguous();
  const int64_t rows = a.size(0), cols = a.size(1);
  const double* p = a.data_ptr<double>();
  int64_t g_rows = rows, g_cols = cols, n_groups = 1;
  if (s.granularity == Granularity::kTensor) g_rows = 1, g_cols = rows * cols;
  if (s.granularity == Granularity::kGroup) n_groups = cols / s.group_size, g_cols = s.group_size;
  Ref r;
  r.codes.resize(rows * cols);
  for (int64_t gr = 0; gr < g_rows; ++gr)
    for (int64_t gi = 0; gi < n_groups; ++gi) {
      // Elements of this group: flat indices.
      std::vector<int64_t> idx;
      for (int64_t k = 0; k < g_cols; ++k)
        idx.push_back(s.granularity == Granularity::kTensor ? k : gr * cols + gi * g_cols + k);
      // float32 arithmetic, as the library computes (so codes can be compared exactly).
      float lo = 0, hi = 0;
      for (int64_t i : idx) lo = std::min(lo, static_cast<float>(p[i])), hi = std::max(hi, static_cast<float>(p[i]));
      float scale, zero;
      if (s.symmetric) {
        scale = std::max(-lo, hi) / static_cast<float>((1 << (s.bits - 1)) - 1);
        if (!(scale > 0)) scale = 1;
        zero = 0;
      } else {
        scale = (hi - lo) / static_cast<float>((1 << s.bits) - 1);
        if (!(scale > 0)) scale = 1;
        zero = std::nearbyint(-lo / scale);
      }
      for (int64_t i : idx) {
        const float q = std::nearbyint(static_cast<float>(p[i]) / scale + zero);
        r.codes[i] = static_cast<int64_t>(std::clamp<double>(q, s.qmin(), s.qmax()));
      }
      r.scale.push_back(scale);
      r.zero.push_back(zero);
    }
  return r;
}

QuantSpec spec(int bits, bool sym, Granularity g, int group = 0) {
  QuantSpec s;
  s.bits = bits;
  s.symmetric = sym;
  s.granularity = g;
  s.group_size = group;
  return s;
}

class QuantizerReference : public ::testing::TestWithParam<std::tuple<int, bool, Granularity>> {};

TEST_P(QuantizerReference, CodesScalesAndErrorsMatchReference) {
  const auto [bits, sym, gran] = GetParam();
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  torch::manual_seed(bits * 10 + sym);
  for (auto shape : {std::vector<int64_t>{7, 96}, std::vector<int64_t>{3, 33}, std::vector<int64_t>{1, 256}}) {
    const int group = gran == Granularity::kGroup ? (shape[1] % 32 == 0 ? 32 : (shape[1] % 11 == 0 ? 11 : 1)) : 0;
    const QuantSpec s = spec(bits, sym, gran, group);
    auto x = torch::randn(shape) * 3;
    x[0][0] = 7.5;  // an outlier
    if (shape[0] > 2) x[2].fill_(0.0);  // an all-zero row: zero range
    auto [lo, hi] = observe_range(x, s);
    const QParams qp = qparams_from_range(lo, hi, s);
    const auto codes = quantize(x, qp, s);
    const Ref ref = reference(x, s);
    ASSERT_EQ(qp.scale.numel(), static_cast<int64_t>(ref.scale.size()));
    for (size_t i = 0; i < ref.scale.size(); ++i) {
      EXPECT_FLOAT_EQ(qp.scale.flatten()[i].item<float>(), static_cast<float>(ref.scale[i]));
      EXPECT_EQ(qp.zero.flatten()[i].item<double>(), ref.zero[i]);
    }
    const auto flat = codes.flatten();
    int64_t mismatches = 0;
    for (int64_t i = 0; i < flat.numel(); ++i) mismatches += flat[i].item<int64_t>() != ref.codes[i];
    EXPECT_EQ(mismatches, 0);
    EXPECT_GE(codes.min().item<int64_t>(), s.qmin());
    EXPECT_LE(codes.max().item<int64_t>(), s.qmax());
    const auto deq = dequantize(codes, qp, s);
    const auto fq = fake_quant(x, qp, s);
    EXPECT_TRUE(torch::equal(fq, deq));
    // Inside the range the error is at most half a step (plus float32 rounding of x/scale).
    const auto err = (fq - x).abs();
    const auto step = grouped_view(torch::ones_like(x), s) * qp.scale;
    const auto half = ungrouped(step, x.sizes(), s) * 0.5 * (1 + 1e-5) + 1e-6;
    EXPECT_TRUE((err <= half).all().item<bool>()) << s.describe();
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllGranularities, QuantizerReference,
    ::testing::Combine(::testing::Values(2, 3, 4, 8), ::testing::Bool(),
                       ::testing::Values(Granularity::kTensor, Granularity::kToken, Granularity::kChannel,
                                         Granularity::kGroup)));

TEST(Quantizer, TiesRoundToEven) {
  const QuantSpec s = spec(8, true, Granularity::kTensor);
  QParams qp{torch::ones({1, 1, 1}), torch::zeros({1, 1, 1})};
  const auto codes = quantize(torch::tensor({{0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f}}), qp, s);
  EXPECT_TRUE(torch::equal(codes, torch::tensor({{0, 2, 2, 0, -2, -2}}, torch::kInt32)));
}

TEST(Quantizer, StraightThroughGradient) {
  const QuantSpec s = spec(4, false, Granularity::kTensor);
  QParams qp = qparams_from_range(torch::tensor({-1.0f}).reshape({1, 1, 1}), torch::tensor({2.0f}).reshape({1, 1, 1}), s);
  auto x = torch::tensor({{-3.0f, -1.0f, 0.3f, 1.99f, 2.0f, 5.0f}}, torch::requires_grad());
  auto y = fake_quant(x, qp, s);
  const auto w = torch::tensor({{1.f, 2.f, 3.f, 4.f, 5.f, 6.f}});
  (y * w).sum().backward();
  // d/dx = w inside [-1, 2] (the clipping range, bounds included), 0 outside.
  EXPECT_TRUE(torch::equal(x.grad(), torch::tensor({{0.f, 2.f, 3.f, 4.f, 5.f, 0.f}})));
}

TEST(Quantizer, PegGroupsAndPermutationRoundTrip) {
  QuantSpec s = spec(8, false, Granularity::kPeg);
  s.peg_groups = 3;
  torch::manual_seed(3);
  auto x = torch::randn({5, 12});
  x.select(1, 7).mul_(40);  // one outlier channel
  const auto perm = torch::randperm(12);
  for (const auto& p : {torch::Tensor(), perm}) {
    const auto g = grouped_view(x, s, p);
    EXPECT_EQ(g.sizes(), (torch::IntArrayRef{1, 3, 20}));
    EXPECT_TRUE(torch::equal(ungrouped(g, x.sizes(), s, p), x));
    auto [lo, hi] = observe_range(x, s, p);
    const QParams qp = qparams_from_range(lo, hi, s);
    EXPECT_TRUE(torch::equal(fake_quant(x, qp, s, p), dequantize(quantize(x, qp, s, p), qp, s, p)));
  }
  s.peg_groups = 5;  // does not divide 12: uneven groups have no grouped view (peg_test covers them)
  EXPECT_THROW(grouped_view(x, s), Error);
}

// With a permutation, group k holds channels perm[4k .. 4k+3]: a double-loop reference of
// per-group min-max 4-bit fake quantization over those channels. Dropping the permutation groups
// the outlier channel 7 with 4..6 instead of with its permuted partners, which this catches.
TEST(Quantizer, PegPermutationGroupsThePermutedChannels) {
  QuantSpec s = spec(4, false, Granularity::kPeg);
  s.peg_groups = 3;
  auto x = torch::randn({6, 12}, at::detail::createCPUGenerator(5)).to(torch::kFloat64);
  x.select(1, 7).mul_(40);
  const auto perm = torch::tensor(std::vector<int64_t>{7, 0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11});
  auto [lo, hi] = observe_range(x.to(torch::kFloat32), s, perm);
  const auto got = fake_quant(x.to(torch::kFloat32), qparams_from_range(lo, hi, s), s, perm).to(torch::kFloat64);
  for (int k = 0; k < 3; ++k) {
    double mn = 0, mx = 0;  // ranges include zero
    for (int t = 0; t < 6; ++t)
      for (int i = 0; i < 4; ++i) {
        const double v = x[t][perm[4 * k + i].item<int64_t>()].item<double>();
        mn = std::min(mn, v), mx = std::max(mx, v);
      }
    const double scale = (mx - mn) / 15, zero = std::nearbyint(-mn / scale);
    for (int t = 0; t < 6; ++t)
      for (int i = 0; i < 4; ++i) {
        const int64_t c = perm[4 * k + i].item<int64_t>();
        const double q = std::clamp(std::nearbyint(x[t][c].item<double>() / scale) + zero, 0.0, 15.0);
        EXPECT_NEAR(got[t][c].item<double>(), (q - zero) * scale, 1e-4 * (mx - mn)) << "group " << k << " channel " << c;
      }
  }
}

TEST(Quantizer, PercentileAndMseClipBelowMinMax) {
  torch::manual_seed(4);
  auto x = torch::randn({1, 4000});
  x[0][0] = 60;
  QuantSpec s = spec(4, false, Granularity::kTensor);
  const auto [lo0, hi0] = observe_range(x, s);
  s.range = RangeMethod::kPercentile;
  s.percentile = 99.9;
  const auto [lo1, hi1] = observe_range(x, s);
  EXPECT_LT(hi1.item<float>(), hi0.item<float>());
  EXPECT_NEAR(hi1.item<float>(), std::get<0>(x.flatten().kthvalue(3996)).item<float>(), 1e-6);
  s.range = RangeMethod::kMse;
  const auto [lo2, hi2] = observe_range(x, s);
  EXPECT_LT(hi2.item<float>(), hi0.item<float>());
  // The chosen range has no larger squared error than min-max.
  QuantSpec mm = s;
  mm.range = RangeMethod::kMinMax;
  const auto e_mm = (fake_quant(x, qparams_from_range(lo0, hi0, mm), mm) - x).pow(2).sum().item<double>();
  const auto e_mse = (fake_quant(x, qparams_from_range(lo2, hi2, s), s) - x).pow(2).sum().item<double>();
  EXPECT_LE(e_mse, e_mm);
}

TEST(QuantSpec, ValidationErrors) {
  EXPECT_THROW(spec(9, true, Granularity::kTensor).validate("r", true), Error);
  EXPECT_THROW(spec(1, true, Granularity::kTensor).validate("r", true), Error);
  EXPECT_NO_THROW(spec(16, true, Granularity::kTensor).validate("r", true));
  EXPECT_THROW(spec(4, true, Granularity::kToken).validate("r", true), Error);   // token weights
  EXPECT_THROW(spec(4, true, Granularity::kToken).validate("r", false), Error);  // static per-token
  EXPECT_THROW(spec(4, true, Granularity::kGroup, 0).validate("r", true), Error);
  EXPECT_THROW(spec(4, true, Granularity::kChannel).validate("r", false), Error);
}

}  // namespace
}  // namespace outq
