// Weight-only kernels (W8A16 / W4A16): every ISA path this CPU has equals the scalar reference bit
// for bit (same float FMA sequence per output), and the reference equals the dequantized product
// in double within the float32 summation bound 2 K u sum |x| (|w'| + |zw|) sw, u = 2^-24 (K terms
// accumulated in float, then the zero-point term subtracted). Shapes are awkward on purpose: K off
// the quad / octet width and the group size, N off the 16-channel block, M = 1 .. 9 (row tiles
// and remainders).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "outq/core/error.h"
#include "outq/kernels/weight_only.h"

namespace outq::kernels {
namespace {

struct Case {
  int bits;
  bool symmetric;
  int64_t group;
};

struct Problem {
  std::vector<float> x, bias, scale;
  std::vector<int32_t> codes, zero;
};

Problem make_problem(int64_t m, int64_t n, int64_t k, const Case& c, std::mt19937& rng) {
  Problem p;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.01f, 0.2f);
  p.x.resize(m * k);
  for (auto& v : p.x) v = normal(rng) * 2.0f + 0.3f;
  if (m > 0) p.x[0] = 300.0f;  // an activation spike: float activations keep it exactly
  const int32_t lo = c.symmetric ? -(1 << (c.bits - 1)) : 0, hi = c.symmetric ? (1 << (c.bits - 1)) - 1 : (1 << c.bits) - 1;
  std::uniform_int_distribution<int32_t> code(lo, hi), zero(0, (1 << c.bits) - 1);
  p.codes.resize(n * k);
  for (auto& v : p.codes) v = code(rng);
  const int64_t groups = c.group == 0 ? 1 : (k + c.group - 1) / c.group;
  p.scale.resize(n * groups);
  p.zero.resize(n * groups);
  for (auto& s : p.scale) s = unit(rng);
  for (auto& z : p.zero) z = c.symmetric ? 0 : zero(rng);
  p.bias.resize(n);
  for (auto& b : p.bias) b = normal(rng);
  return p;
}

class WeightOnlyAllIsas : public ::testing::TestWithParam<Case> {};

TEST_P(WeightOnlyAllIsas, EqualsReferenceExactlyAndDequantizedProduct) {
  const Case c = GetParam();
  std::mt19937 rng(29 + c.bits * 5 + static_cast<int>(c.group));
  int checked = 0;
  for (const int64_t k : {8, 37, 96, 200}) {
    if (c.group != 0 && k % c.group != 0) continue;  // groups divide the input (as recipes require)
    for (const int64_t n : {1, 16, 33}) {
      for (const int64_t m : {1, 2, 3, 5, 9}) {
        const Problem p = make_problem(m, n, k, c, rng);
        const PackedWeights w = pack_weights(p.codes.data(), n, k, c.bits, c.symmetric, c.group, p.scale.data(), p.zero.data());
        std::vector<float> ref(m * n);
        gemm_weight_only({p.x.data(), m, k, &w, p.bias.data(), ref.data(), n}, Isa::kRef);
        // Dequantized product in double, and the float32 rounding bound of the kernels' sums.
        const int64_t g = c.group == 0 ? k : c.group;
        for (int64_t r = 0; r < m; ++r)
          for (int64_t j = 0; j < n; ++j) {
            double y = p.bias[j], bound = 0;
            const int32_t offset = c.symmetric ? 1 << (c.bits - 1) : 0;  // unsigned code space of the kernels
            for (int64_t i = 0; i < k; ++i) {
              const int64_t gi = j * (k / g) + i / g;
              const double x = p.x[r * k + i];
              y += x * p.scale[gi] * (p.codes[j * k + i] - p.zero[gi]);
              bound += std::abs(x) * p.scale[gi] * (std::abs(p.codes[j * k + i] + offset) + p.zero[gi] + offset);
            }
            const double tol = 2.0 * static_cast<double>(k + 2) * std::ldexp(1.0, -24) * bound + 1e-6 * std::abs(y);
            ASSERT_NEAR(ref[r * n + j], y, tol) << "m=" << m << " n=" << n << " k=" << k << " row " << r << " col " << j;
          }
        for (const Isa isa : isa_available()) {
          std::vector<float> y(m * n, std::numeric_limits<float>::quiet_NaN());
          gemm_weight_only({p.x.data(), m, k, &w, p.bias.data(), y.data(), n}, isa);
          for (int64_t i = 0; i < m * n; ++i)
            ASSERT_EQ(y[i], ref[i]) << isa_name(isa) << " m=" << m << " n=" << n << " k=" << k << " at " << i;
        }
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 10);
}

INSTANTIATE_TEST_SUITE_P(Formats, WeightOnlyAllIsas,
                         ::testing::Values(Case{8, true, 0}, Case{8, false, 0}, Case{4, true, 0}, Case{4, false, 0},
                                           Case{4, false, 8}, Case{8, true, 40}, Case{4, true, 24}),
                         [](const auto& param_info) {
                           return std::to_string(param_info.param.bits) + (param_info.param.symmetric ? "sym" : "asym") + "_g" +
                                  std::to_string(param_info.param.group);
                         });

TEST(WeightOnly, LargeOutputsAndRowStridesMatchReference) {
  // A GEMV and a GEMM big enough to be split over threads, with padded row strides.
  std::mt19937 rng(5);
  const Case c{4, true, 0};
  const int64_t n = 130, k = 1024;
  for (const int64_t m : {1, 7}) {
    const Problem p = make_problem(m, n, k, c, rng);
    std::vector<float> x_strided(m * (k + 3), -1.0f);
    for (int64_t r = 0; r < m; ++r) std::copy_n(p.x.data() + r * k, k, x_strided.data() + r * (k + 3));
    const PackedWeights w = pack_weights(p.codes.data(), n, k, c.bits, c.symmetric, 0, p.scale.data(), p.zero.data());
    std::vector<float> ref(m * n);
    gemm_weight_only({p.x.data(), m, k, &w, nullptr, ref.data(), n}, Isa::kRef);
    for (const Isa isa : isa_available()) {
      std::vector<float> y(m * (n + 5), 7.0f);
      gemm_weight_only({x_strided.data(), m, k + 3, &w, nullptr, y.data(), n + 5}, isa);
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t j = 0; j < n; ++j) ASSERT_EQ(y[r * (n + 5) + j], ref[r * n + j]) << isa_name(isa);
        for (int64_t j = n; j < n + 5; ++j) ASSERT_EQ(y[r * (n + 5) + j], 7.0f) << "wrote past n";
      }
    }
  }
}

TEST(WeightOnly, RejectsBadArgumentsAndNonFiniteInput) {
  std::mt19937 rng(3);
  const Problem p = make_problem(2, 16, 16, {8, true, 0}, rng);
  const PackedWeights w = pack_weights(p.codes.data(), 16, 16, 8, true, 0, p.scale.data(), p.zero.data());
  std::vector<float> y(32), x = p.x;
  EXPECT_NE(can_implement(WeightOnlyArguments{x.data(), 2, 8, &w, nullptr, y.data(), 16}).find("row stride"),
            std::string::npos);
  EXPECT_NE(can_implement(WeightOnlyArguments{x.data(), 2, 16, &w, nullptr, y.data(), 8}).find("smaller than n"),
            std::string::npos);
  x[5] = std::numeric_limits<float>::quiet_NaN();
  try {
    gemm_weight_only({x.data(), 2, 16, &w, nullptr, y.data(), 16});
    FAIL() << "NaN input accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 0 holds NaN"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace outq::kernels
