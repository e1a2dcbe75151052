// Per-embedding-group (PEG) integer GEMM: activation codes gathered in permuted column order, each
// uneven group on its own static grid, equal to a plain-loop quantizer code for code; the group
// scales folded into the weight scales and the zero-point terms into the bias as gemm.h says, the
// product equals the dequantized product in double to 1e-5 of sum |x^ w^| (float32 epilogue over a
// handful of groups), and every ISA equals the reference bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "outq/core/error.h"
#include "outq/kernels/gemm.h"

namespace outq::kernels {
namespace {

struct PegCase {
  int act_bits;
  bool act_symmetric;
  int weight_bits;
  std::vector<int64_t> bounds;  ///< k = bounds.back()
};

TEST(GemmPeg, GatheredGroupsEqualTheReferenceAndTheDequantizedProduct) {
  const std::vector<PegCase> cases = {
      {8, false, 8, {0, 8, 16, 32, 40, 48, 64}},          // 64 channels, K = 6 in octets
      {8, false, 4, {0, 40, 80, 128, 168, 208, 256}},     // 256 channels, K = 6
      {4, false, 4, {0, 16, 32, 48}},                    // K = 3 equal
      {8, true, 8, {0, 24, 72, 203}},                    // partial last octet
  };
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const auto& pc : cases) {
    const int64_t k = pc.bounds.back(), G = static_cast<int64_t>(pc.bounds.size()) - 1;
    for (int64_t m : {1L, 3L, 17L, 40L})
      for (int64_t n : {5L, 33L}) {
        std::vector<int64_t> perm(k);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng);
        std::vector<float> x(m * k);
        for (int64_t i = 0; i < m * k; ++i) x[i] = normal(rng) * (i % k == 7 ? 30.0f : 1.0f);  // an outlier channel
        ActivationFormat f;
        f.bits = pc.act_bits, f.symmetric = pc.act_symmetric, f.dynamic = false;
        f.peg_bounds = pc.bounds, f.gather = perm;
        const int32_t qmin = f.symmetric ? -(1 << (f.bits - 1)) : 0, qmax = f.symmetric ? (1 << (f.bits - 1)) - 1 : (1 << f.bits) - 1;
        for (int64_t g = 0; g < G; ++g) {
          f.peg_scale.push_back(0.05f + 0.3f * static_cast<float>(g));
          f.peg_zero.push_back(f.symmetric ? 0.0f : static_cast<float>((qmax + 1) / 2 - g));
        }
        QuantizedActivations a;
        quantize_activations(x.data(), m, k, k, f, 0, &a);
        // Plain-loop quantizer: column i holds x[perm[i]] on the grid of its group.
        const int32_t shift = !f.symmetric && f.bits == 8 ? -128 : 0;
        std::vector<int32_t> q(m * k);
        for (int64_t r = 0; r < m; ++r)
          for (int64_t g = 0; g < G; ++g)
            for (int64_t i = pc.bounds[g]; i < pc.bounds[g + 1]; ++i) {
              const float v = std::nearbyint(x[r * k + perm[i]] / f.peg_scale[g] + f.peg_zero[g]);
              q[r * k + i] = static_cast<int32_t>(std::clamp<float>(v, qmin, qmax));
              ASSERT_EQ(a.codes[r * a.k_padded + i], q[r * k + i] + shift) << "row " << r << " column " << i;
            }
        // Weights: per-channel codes in the permuted column order, folded scales and bias.
        const int32_t wlo = -(1 << (pc.weight_bits - 1)), whi = (1 << (pc.weight_bits - 1)) - 1;
        std::uniform_int_distribution<int32_t> code(wlo, whi);
        std::vector<int32_t> codes(n * k), zero(n * G, 0);
        for (auto& c : codes) c = code(rng);
        std::vector<float> sw(n), scale(n * G), bias(n);
        for (int64_t c = 0; c < n; ++c) {
          sw[c] = 0.01f + 0.002f * static_cast<float>(c);
          for (int64_t g = 0; g < G; ++g) scale[c * G + g] = sw[c] * f.peg_scale[g];
        }
        const PackedWeights w = pack_weights(codes.data(), n, k, pc.weight_bits, true, pc.bounds, scale.data(), zero.data());
        for (int64_t c = 0; c < n; ++c) {
          double b = 0;
          for (int64_t g = 0; g < G; ++g) b -= double{w.scale[w.at(c, g)]} * (f.peg_zero[g] + shift) * w.sum[w.at(c, g)];
          bias[c] = static_cast<float>(b);
        }
        std::vector<float> want(m * n);
        gemm({&a, &w, bias.data(), want.data(), n}, Isa::kRef);
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < n; ++c) {
            double exact = 0, mag = 0;
            for (int64_t g = 0; g < G; ++g)
              for (int64_t i = pc.bounds[g]; i < pc.bounds[g + 1]; ++i) {
                const double xa = double{f.peg_scale[g]} * (q[r * k + i] - double{f.peg_zero[g]});
                const double wv = double{sw[c]} * codes[c * k + i];
                exact += xa * wv, mag += std::abs(xa * wv);
              }
            ASSERT_NEAR(want[r * n + c], exact, 1e-5 * mag + 1e-6) << "k " << k << " m " << m << " n " << n;
          }
        for (Isa isa : isa_available()) {
          std::vector<float> got(m * n, -1.0f);
          gemm({&a, &w, bias.data(), got.data(), n}, isa);
          ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << isa_name(isa) << " k " << k << " m " << m;
        }
      }
  }
}

TEST(GemmPeg, MismatchedOrBadGroupsAreErrors) {
  const std::vector<int32_t> codes(4 * 16, 1), zero(8, 0);
  const std::vector<float> scale(8, 0.1f), x(2 * 16, 1.0f);
  EXPECT_THROW(pack_weights(codes.data(), 4, 16, 8, true, std::vector<int64_t>{0, 12, 16}, scale.data(), zero.data()), Error);
  const PackedWeights w = pack_weights(codes.data(), 4, 16, 8, true, std::vector<int64_t>{0, 8, 16}, scale.data(), zero.data());
  ActivationFormat f;
  f.dynamic = false, f.peg_bounds = {0, 8, 16}, f.peg_scale = {1, 1}, f.peg_zero = {0, 0};
  QuantizedActivations a;
  quantize_activations(x.data(), 2, 16, 16, f, 0, &a);
  std::vector<float> y(8);
  EXPECT_EQ(can_implement({&a, &w, nullptr, y.data(), 4}), "");
  quantize_activations(x.data(), 2, 16, 16, {}, 0, &a);  // uniform groups against uneven weights
  EXPECT_NE(can_implement({&a, &w, nullptr, y.data(), 4}).find("boundaries"), std::string::npos);
  f.peg_scale = {1};
  EXPECT_THROW(quantize_activations(x.data(), 2, 16, 16, f, 0, &a), Error);  // one scale for two groups
  f.peg_scale = {1, 1};
  f.gather = {0, 1, 2};
  EXPECT_THROW(quantize_activations(x.data(), 2, 16, 16, f, 0, &a), Error);  // gather of the wrong length
}

}  // namespace
}  // namespace outq::kernels
