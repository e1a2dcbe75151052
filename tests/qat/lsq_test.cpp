// LSQ fake quantization (learned step and offset) against independent references: the forward
// against the formula in float64 loops (rounding ties and both clip ends included, exact: the
// step is a power of two so every value is exact in float32); the x / step / offset gradients
// against the spec's formulas in float64 loops and against LibTorch autograd of a float64
// straight-through surrogate (1e-5 relative: the per-element step derivative r - x/step is formed
// in float32, about 1e-7 relative each, over ~1,000 terms); central finite differences of that
// surrogate with its rounding residuals frozen (1e-6 relative, float64 with h = 1e-6).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "outq/core/error.h"
#include "outq/qat/lsq.h"

namespace outq {
namespace {

constexpr int kBits = 4;
constexpr double kLevels = 15;

// Values that exercise every branch for step 0.25, offset 5.4 (z = 5): ties of x/step + z (k + 0.5),
// the grid's ends exactly (r + z = 0 and N, inside) and one past them, far outside, and noise.
std::vector<float> test_values() {
  std::vector<float> xs = {0.125f, 0.375f, -0.125f, -0.375f, 1.125f,    // ties: 0.5 -> 0, 1.5 -> 2, ...
                           -1.25f, 2.5f,                               // r + z = 0 and 15: inside
                           -1.5f, 2.75f, -1.3f, 2.63f,                 // r + z = -1 and 16 (also by rounding)
                           -40.0f, 55.0f, 0.0f};
  torch::manual_seed(4);
  const auto noise = torch::randn({977}) * 1.5 + 0.5;
  for (int64_t i = 0; i < noise.numel(); ++i) xs.push_back(noise[i].item<float>());
  return xs;
}

struct Expected {
  std::vector<double> out, gx;
  double gstep = 0, goffset = 0, bound = 0;  // bound: sum |g * dstep| for the tolerance
};

// The spec's formulas, element by element in float64.
Expected reference(const std::vector<float>& xs, const std::vector<float>& g, double s, double o, double scale) {
  Expected e;
  const double z = std::nearbyint(o);
  for (size_t i = 0; i < xs.size(); ++i) {
    const double u = static_cast<double>(xs[i]) / s, grid = std::nearbyint(u + z);
    const double q = std::min(std::max(grid, 0.0), kLevels);
    e.out.push_back((q - z) * s);
    const bool below = grid < 0, above = grid > kLevels;
    e.gx.push_back(below || above ? 0.0 : g[i]);
    const double dstep = below ? -z : above ? kLevels - z : (grid - z) - u;
    e.gstep += g[i] * dstep * scale;
    e.bound += std::abs(g[i] * dstep) * scale;
    if (below || above) e.goffset += -g[i] * s * scale;
  }
  return e;
}

TEST(Lsq, ForwardEqualsFormulaAtTiesAndClipEnds) {
  const auto xs = test_values();
  const auto out = lsq_quant(torch::tensor(xs), torch::tensor(0.25f), torch::tensor(5.4f), kBits);
  const Expected e = reference(xs, std::vector<float>(xs.size(), 0.0f), 0.25, 5.4, 1.0);
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_EQ(out[i].item<float>(), e.out[i]) << "x = " << xs[i];
  // Ties go to even codes (x / step + z = 5.5 and 6.5 -> 6), then the clip ends: -1.25 -> code 0,
  // 2.5 -> code 15, beyond them clipped.
  EXPECT_EQ(out[0].item<float>(), 0.25f);
  EXPECT_EQ(out[1].item<float>(), 0.25f);
  EXPECT_EQ(out[5].item<float>(), -1.25f);
  EXPECT_EQ(out[6].item<float>(), 2.5f);
  EXPECT_EQ(out[7].item<float>(), -1.25f);
  EXPECT_EQ(out[8].item<float>(), 2.5f);
}

TEST(Lsq, GradientsEqualTheSpecFormulas) {
  const auto xs = test_values();
  torch::manual_seed(9);
  const auto g = torch::randn({static_cast<int64_t>(xs.size())});
  const std::vector<float> gv(g.data_ptr<float>(), g.data_ptr<float>() + g.numel());
  for (double scale : {1.0, lsq_grad_scale(static_cast<int64_t>(xs.size()), 15)}) {
    for (float offset : {5.4f, -2.6f, 20.5f}) {  // z = 5, -3 (all above zero clipped low), 20 (half-even of 20.5)
      const auto x = torch::tensor(xs).requires_grad_(true);
      const auto step = torch::tensor(0.25f).requires_grad_(true), off = torch::tensor(offset).requires_grad_(true);
      (lsq_quant(x, step, off, kBits, scale) * g).sum().backward();
      const Expected e = reference(xs, gv, 0.25, offset, scale);
      for (size_t i = 0; i < xs.size(); ++i) EXPECT_EQ(x.grad()[i].item<float>(), e.gx[i]) << xs[i];
      EXPECT_NEAR(step.grad().item<double>(), e.gstep, 1e-5 * e.bound + 1e-12) << "offset " << offset;
      EXPECT_NEAR(off.grad().item<double>(), e.goffset, 1e-6 * std::abs(e.goffset) + 1e-9) << "offset " << offset;
    }
  }
}

// An independent route to the same gradients: LibTorch autograd in float64 through a
// straight-through surrogate (round(v) as v + (round(v) - v).detach(); clamp's own gradient).
TEST(Lsq, GradientsEqualAutogradOfTheStraightThroughSurrogate) {
  const auto xs = test_values();
  torch::manual_seed(2);
  const auto g = torch::randn({static_cast<int64_t>(xs.size())}, torch::kFloat64);
  const double s0 = 0.3, o0 = 4.7;  // not powers of two: general rounding
  auto ste_round = [](const torch::Tensor& v) { return v + (torch::round(v) - v).detach(); };
  const auto xd = torch::tensor(xs).to(torch::kFloat64).requires_grad_(true);
  const auto sd = torch::tensor(s0, torch::kFloat64).requires_grad_(true);
  const auto od = torch::tensor(o0, torch::kFloat64).requires_grad_(true);
  const auto z = ste_round(od);
  ((torch::clamp(ste_round(xd / sd + z), 0.0, kLevels) - z) * sd * g).sum().backward();

  const auto x = torch::tensor(xs).requires_grad_(true);
  const auto s = torch::tensor(static_cast<float>(s0)).requires_grad_(true);
  const auto o = torch::tensor(static_cast<float>(o0)).requires_grad_(true);
  (lsq_quant(x, s, o, kBits) * g.to(torch::kFloat32)).sum().backward();
  EXPECT_TRUE(torch::equal(x.grad().to(torch::kFloat64).ne(0), xd.grad().ne(0)));
  const double bound = (g.abs() * xd.detach().abs() / s0).sum().item<double>() + kLevels * g.abs().sum().item<double>();
  EXPECT_NEAR(s.grad().item<double>(), sd.grad().item<double>(), 1e-5 * bound);
  EXPECT_NEAR(o.grad().item<double>(), od.grad().item<double>(), 1e-5 * std::abs(od.grad().item<double>()) + 1e-6);
}

// Central finite differences in step and offset of the surrogate with the rounding residuals
// (round(v) - v) and the clip regions frozen at the evaluation point, in float64.
TEST(Lsq, GradientsEqualFiniteDifferencesOfTheFrozenSurrogate) {
  const auto xs = test_values();
  torch::manual_seed(3);
  const auto gt = torch::randn({static_cast<int64_t>(xs.size())}, torch::kFloat64);
  const std::vector<double> g(gt.data_ptr<double>(), gt.data_ptr<double>() + gt.numel());
  const double s0 = 0.3, o0 = 4.7, z0 = std::nearbyint(o0);
  auto loss = [&](double s, double o) {
    double sum = 0;
    const double z = o + (z0 - o0);  // frozen residual of round(offset)
    for (size_t i = 0; i < xs.size(); ++i) {
      const double u0 = xs[i] / s0, grid0 = std::nearbyint(u0 + z0);
      const double u = xs[i] / s, r = u + z + (grid0 - (u0 + z0));  // frozen residual of round(x / step + z)
      const double q = grid0 < 0 ? 0.0 : grid0 > kLevels ? kLevels : r;
      sum += g[i] * (q - z) * s;
    }
    return sum;
  };
  const double h = 1e-6;
  const double fd_step = (loss(s0 + h, o0) - loss(s0 - h, o0)) / (2 * h);
  const double fd_offset = (loss(s0, o0 + h) - loss(s0, o0 - h)) / (2 * h);
  const auto s = torch::tensor(static_cast<float>(s0)).requires_grad_(true);
  const auto o = torch::tensor(static_cast<float>(o0)).requires_grad_(true);
  (lsq_quant(torch::tensor(xs), s, o, kBits) * gt.to(torch::kFloat32)).sum().backward();
  EXPECT_NEAR(s.grad().item<double>(), fd_step, 1e-5 * std::abs(fd_step) + 1e-3);
  EXPECT_NEAR(o.grad().item<double>(), fd_offset, 1e-6 * std::abs(fd_offset) + 1e-6);
}

// Weights: symmetric codes -8..7, one step per row and per group of 4 columns, against the formula
// element by element in float64 (steps are powers of two, so every forward value is exact; step
// gradients summed per row / group within 1e-5 of their absolute sums, float32 terms).
TEST(Lsq, SymmetricPerChannelAndPerGroupSteps) {
  torch::manual_seed(5);
  const int64_t rows = 5, cols = 12, group = 4;
  auto w = torch::randn({rows, cols}) * 0.7;
  w.index_put_({0, 0}, 2.0f);     // a tie: 2 / 0.25 = 8 -> clipped to 7
  w.index_put_({0, 1}, -2.0f);    // -8: the lowest code, inside
  w.index_put_({0, 2}, 0.125f);   // 0.5 -> 0 (half to even)
  w.index_put_({0, 3}, -2.25f);   // -9: clipped
  for (int64_t groups : {int64_t{1}, cols / group}) {
    auto steps = torch::pow(2.0, torch::randint(-4, 0, {rows, groups, 1}).to(torch::kFloat32));
    steps.index_put_({0}, 0.25f);
    const auto x = w.reshape({rows, groups, cols / groups}).clone().requires_grad_(true);
    const auto s = steps.clone().requires_grad_(true);
    const auto g = torch::randn({rows, groups, cols / groups});
    const auto out = lsq_quant_symmetric(x, s, 4, 0.5);
    (out * g).sum().backward();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < groups; ++k) {
        const double st = steps[r][k][0].item<double>();
        double gs = 0, bound = 0;
        for (int64_t c = 0; c < cols / groups; ++c) {
          const double xv = x[r][k][c].item<double>(), gv = g[r][k][c].item<double>(), u = xv / st;
          const double grid = std::nearbyint(u), q = std::min(std::max(grid, -8.0), 7.0);
          EXPECT_EQ(out[r][k][c].item<double>(), q * st) << r << "," << k << "," << c;
          const bool inside = grid >= -8 && grid <= 7;
          EXPECT_EQ(x.grad()[r][k][c].item<double>(), inside ? gv : 0.0);
          const double d = inside ? grid - u : grid > 7 ? 7.0 : -8.0;
          gs += 0.5 * gv * d, bound += 0.5 * std::abs(gv * d);
        }
        EXPECT_NEAR(s.grad()[r][k][0].item<double>(), gs, 1e-5 * bound + 1e-9) << r << "," << k;
      }
    if (groups == 1) {  // the hand-placed values in row 0 (step 0.25)
      EXPECT_EQ(out[0][0][0].item<float>(), 1.75f);
      EXPECT_EQ(out[0][0][1].item<float>(), -2.0f);
      EXPECT_EQ(out[0][0][2].item<float>(), 0.0f);
      EXPECT_EQ(out[0][0][3].item<float>(), -2.0f);
    }
  }
  EXPECT_DOUBLE_EQ(lsq_grad_scale(1000, 15), 1.0 / std::sqrt(15000.0));
}

TEST(Lsq, BadInput) {
  const auto x = torch::randn({8});
  EXPECT_THROW(lsq_quant(x, torch::tensor(0.0f), torch::tensor(0.0f), 4), Error);
  EXPECT_THROW(lsq_quant(x, torch::tensor(NAN), torch::tensor(0.0f), 4), Error);
  EXPECT_THROW(lsq_quant(x, torch::tensor(0.1f), torch::tensor(INFINITY), 4), Error);
  EXPECT_THROW(lsq_quant(x, torch::tensor({0.1f, 0.2f}), torch::tensor(0.0f), 4), Error);
  EXPECT_THROW(lsq_quant(x, torch::tensor(0.1f), torch::tensor(0.0f), 1), Error);
  EXPECT_THROW(lsq_quant(x, torch::tensor(0.1f), torch::tensor(0.0f), 9), Error);
  EXPECT_THROW(lsq_quant(x.to(torch::kFloat64), torch::tensor(0.1f), torch::tensor(0.0f), 4), Error);
  EXPECT_THROW(lsq_quant_symmetric(x, torch::tensor({0.1f, -0.2f}).reshape({2, 1}), 4), Error);
}

}  // namespace
}  // namespace outq
