// QAT primitives against independent references: the learned-clip quantizer's forward against
// the direct formula (values at the clip bounds and at rounding ties included) and its x / alpha /
// beta gradients against the spec's formulas evaluated in float64 loops; the kurtosis penalty
// against a float64 autograd implementation (1e-5) and central finite differences (2e-3: float32
// forward evaluations with step 1e-2 limit the accuracy of the difference quotient).
#include <gtest/gtest.h>

#include <functional>

#include <cmath>

#include "outq/core/error.h"
#include "outq/qat/learned_clip.h"

namespace outq {
namespace {

TEST(LearnedClip, ForwardEqualsFormulaAtBoundsAndTies) {
  const float a = 2.0f, b = -1.75f;  // delta = 3.75 / 15 = 0.25 exactly
  std::vector<float> xs = {b, a, b - 1, a + 3, b + 0.125f, b + 0.375f, b + 0.625f, 0.0f, 1.9f, -1.0f};
  torch::manual_seed(1);
  auto rnd = torch::randn({123}) * 2;
  for (int64_t i = 0; i < rnd.numel(); ++i) xs.push_back(rnd[i].item<float>());
  const auto x = torch::tensor(xs);
  const auto out = learned_clip_quant(x, torch::tensor(a), torch::tensor(b), 4);
  for (size_t i = 0; i < xs.size(); ++i) {
    const double xc = std::min<double>(std::max<double>(xs[i], b), a);
    const double want = b + std::nearbyint((xc - b) / 0.25) * 0.25;
    EXPECT_DOUBLE_EQ(out[i].item<float>(), want) << "x = " << xs[i];
  }
  // Ties go to even codes: u = 0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
  EXPECT_FLOAT_EQ(out[4].item<float>(), b);
  EXPECT_FLOAT_EQ(out[5].item<float>(), b + 0.5f);
  EXPECT_FLOAT_EQ(out[6].item<float>(), b + 0.5f);
}

TEST(LearnedClip, GradientsEqualTheSpecFormulas) {
  torch::manual_seed(2);
  for (int bits : {2, 4, 8}) {
    auto x = (torch::randn({7, 131}) * 3).requires_grad_(true);
    auto alpha = torch::tensor(2.5f).requires_grad_(true);
    auto beta = torch::tensor(-1.3f).requires_grad_(true);
    {
      torch::NoGradGuard ng;
      x[0][0] = 2.5f;  // exactly at alpha
      x[0][1] = -1.3f;  // exactly at beta
    }
    const auto g = torch::randn({7, 131});
    (learned_clip_quant(x, alpha, beta, bits) * g).sum().backward();
    const double a = 2.5f, b = -1.3f, N = (1 << bits) - 1, delta = (static_cast<float>(a) - static_cast<float>(b)) / static_cast<float>(N);
    double ga = 0, gb = 0;
    const auto xf = x.detach().flatten(), gf = g.flatten(), gxf = x.grad().flatten();
    for (int64_t i = 0; i < xf.numel(); ++i) {
      const double xi = xf[i].item<float>(), gi = gf[i].item<float>();
      double want_gx = 0;
      if (xi >= a) {
        ga += gi;
      } else if (xi <= b) {
        gb += gi;
      } else {
        want_gx = gi;
        const double u = static_cast<float>((static_cast<float>(xi) - static_cast<float>(b)) / static_cast<float>(delta));
        ga += gi * (std::nearbyint(u) - u) / N;
        gb += gi * (u - std::nearbyint(u)) / N;
      }
      EXPECT_EQ(gxf[i].item<float>(), static_cast<float>(want_gx)) << i;
    }
    EXPECT_NEAR(alpha.grad().item<double>(), ga, 1e-5 * std::max(1.0, std::abs(ga))) << bits;
    EXPECT_NEAR(beta.grad().item<double>(), gb, 1e-5 * std::max(1.0, std::abs(gb))) << bits;
    EXPECT_GT(std::abs(ga) + std::abs(gb), 1e-3);  // not trivially zero
  }
}

TEST(LearnedClip, BadInput) {
  const auto x = torch::randn({4});
  EXPECT_THROW(learned_clip_quant(x, torch::tensor(1.0f), torch::tensor(1.0f), 4), Error);  // alpha == beta
  EXPECT_THROW(learned_clip_quant(x, torch::tensor(-1.0f), torch::tensor(1.0f), 4), Error);
  EXPECT_THROW(learned_clip_quant(x, torch::tensor(1.0f), torch::tensor(-1.0f), 9), Error);
  EXPECT_THROW(learned_clip_quant(x, torch::tensor(1.0f), torch::tensor(-1.0f), 1), Error);
}

torch::Tensor kurtosis_reference(const torch::Tensor& y, double eps) {  // float64 autograd
  const auto c = y - y.mean(-1, true);
  const auto m2 = c.pow(2).mean(-1), m4 = c.pow(4).mean(-1);
  return (m4 / (m2 * m2 + eps)).sum();
}

TEST(Kurtosis, ValueAndGradientMatchAutogradAndFiniteDifferences) {
  torch::manual_seed(3);
  auto y = torch::randn({2, 3, 17});
  {
    torch::NoGradGuard ng;
    y[1][2][5] = 9.0f;  // a heavy-tailed token
  }
  const double eps = 1e-6;
  auto yv = y.clone().requires_grad_(true);
  const auto k = kurtosis_penalty(yv, eps);
  k.backward();
  auto yd = y.to(torch::kFloat64).requires_grad_(true);
  const auto kd = kurtosis_reference(yd, eps);
  kd.backward();
  EXPECT_NEAR(k.item<double>(), kd.item<double>(), 1e-5 * kd.item<double>());
  const double scale = yd.grad().abs().max().item<double>();
  EXPECT_LE((yv.grad().to(torch::kFloat64) - yd.grad()).abs().max().item<double>(), 1e-5 * scale);
  // Central finite differences of the float32 function itself.
  const double h = 1e-2;
  for (int64_t i : {0L, 7L, 40L, 51L + 2 * 17L + 5L, 101L}) {  // 90 = the planted outlier
    auto plus = y.clone(), minus = y.clone();
    plus.view(-1)[i] += h;
    minus.view(-1)[i] -= h;
    const double fd = (kurtosis_penalty(plus, eps).item<double>() - kurtosis_penalty(minus, eps).item<double>()) / (2 * h);
    EXPECT_NEAR(yv.grad().view(-1)[i].item<double>(), fd, 2e-3 * scale) << "element " << i;
  }
  // A Gaussian-like token has kurtosis near 3; the planted outlier token is far above it.
  const auto per_token = [&](int t) { return kurtosis_reference(y.to(torch::kFloat64)[1][t].unsqueeze(0), eps).item<double>(); };
  EXPECT_GT(per_token(2), 8.0);
}

TEST(Kurtosis, ColumnSlicesAndWideRowsMatchTheReference) {
  // q/k/v outputs are column slices of one GEMM output: read in place with a row stride. Widths
  // 33 (two 16-lane blocks and a tail) and 1030 (many blocks) against float64 autograd. Mean 0.5
  // against std 2 takes the two-pass path; the test above (mean ~0) the one-pass raw moments.
  torch::manual_seed(4);
  for (int64_t d : {33L, 1030L}) {
    auto big = (torch::randn({2, 5, d + 19}) * 2 + 0.5).requires_grad_(true);
    const auto slice = big.slice(-1, 7, 7 + d);
    ASSERT_FALSE(slice.is_contiguous());
    kurtosis_penalty(slice, 1e-6).backward();
    auto ref = big.detach().to(torch::kFloat64).requires_grad_(true);
    const auto kd = kurtosis_reference(ref.slice(-1, 7, 7 + d), 1e-6);
    kd.backward();
    const double scale = ref.grad().abs().max().item<double>();
    EXPECT_NEAR(kurtosis_penalty(slice.detach(), 1e-6).item<double>(), kd.item<double>(), 1e-5 * kd.item<double>());
    EXPECT_LE((big.grad().to(torch::kFloat64) - ref.grad()).abs().max().item<double>(), 1e-5 * scale) << "d = " << d;
  }
}

}  // namespace
}  // namespace outq

namespace outq {
namespace {

// The tensor-operation versions (used for CUDA tensors) equal the fused CPU ones on the CPU:
// forward to float rounding of the step size (1e-5), clip gradients to 1e-4 relative (float32
// element terms summed in a different order), the input gradient exactly.
TEST(LearnedClip, TensorOpsVersionEqualsTheFusedOne) {
  torch::manual_seed(5);
  for (int bits : {2, 4, 7}) {
    const auto x0 = torch::randn({5, 77, 33}) * 2;
    const auto g = torch::randn({5, 77, 33});
    auto run = [&](auto fn) {
      auto x = x0.clone().requires_grad_(true);
      auto alpha = torch::tensor(2.1f).requires_grad_(true);
      auto beta = torch::tensor(-1.7f).requires_grad_(true);
      const auto y = fn(x, alpha, beta, bits);
      (y * g).sum().backward();
      return std::vector<torch::Tensor>{y.detach(), x.grad(), alpha.grad(), beta.grad()};
    };
    const auto fused = run([](auto&&... a) { return learned_clip_quant(a...); });
    const auto ops = run([](auto&&... a) { return learned_clip_quant_tensor_ops(a...); });
    EXPECT_LT((fused[0] - ops[0]).abs().max().item<double>(), 1e-5) << bits;
    EXPECT_TRUE(torch::equal(fused[1], ops[1])) << bits;
    for (int i : {2, 3})
      EXPECT_NEAR(fused[i].item<double>(), ops[i].item<double>(), 1e-4 * (1 + std::abs(fused[i].item<double>()))) << bits;
  }
}

TEST(Kurtosis, TensorOpsVersionEqualsTheFusedOne) {
  torch::manual_seed(6);
  const auto y0 = torch::randn({3, 41, 97}) + torch::randn({3, 41, 1}) * 4;  // some large token means
  auto run = [&](const std::function<torch::Tensor(const torch::Tensor&, double)>& fn) {
    auto y = y0.clone().requires_grad_(true);
    const auto k = fn(y, 1e-6);
    k.backward();
    return std::pair{k.item<double>(), y.grad()};
  };
  const auto [kf, gf] = run([](const torch::Tensor& y, double e) { return kurtosis_penalty(y, e); });
  const auto [ko, go] = run([](const torch::Tensor& y, double e) { return kurtosis_penalty_tensor_ops(y, e); });
  EXPECT_NEAR(kf, ko, 1e-4 * kf);
  EXPECT_LT((gf - go).abs().max().item<double>(), 1e-4 * go.abs().max().item<double>());
}

}  // namespace
}  // namespace outq
