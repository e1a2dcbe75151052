// Integer GEMM kernels: every ISA path this CPU has equals the scalar reference bit for bit (the
// integer part is exact and all paths run the same float FMA sequence), and the reference equals
// the dequantized product computed in double to 1e-5 of sum |x^| |w^| (float32 epilogue rounding
// over at most a few hundred groups). Shapes are awkward on purpose: K and N off the vector width
// and the group size, M = 1, 2, 3, 17 (tile remainders), partial last groups.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "outq/core/error.h"
#include "outq/kernels/gemm.h"

namespace outq::kernels {
namespace {

struct WeightCase {
  int bits;
  bool symmetric;
  int64_t group;
};

struct Problem {
  std::vector<float> x, bias;
  std::vector<int32_t> codes, zero;
  std::vector<float> scale;
};

Problem make_problem(int64_t m, int64_t n, int64_t k, const WeightCase& wc, std::mt19937& rng) {
  Problem p;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.01f, 0.2f);
  p.x.resize(m * k);
  for (auto& v : p.x) v = normal(rng) * 2.0f + 0.3f;
  if (m > 0) p.x[0] = 40.0f;  // an outlier
  const int32_t lo = wc.symmetric ? -(1 << (wc.bits - 1)) : 0, hi = wc.symmetric ? (1 << (wc.bits - 1)) - 1 : (1 << wc.bits) - 1;
  std::uniform_int_distribution<int32_t> code(lo, hi), zero(0, (1 << wc.bits) - 1);
  p.codes.resize(n * k);
  for (auto& c : p.codes) c = code(rng);
  const int64_t groups = wc.group == 0 ? 1 : (k + wc.group - 1) / wc.group;
  p.scale.resize(n * groups);
  p.zero.resize(n * groups);
  for (auto& s : p.scale) s = unit(rng);
  for (auto& z : p.zero) z = wc.symmetric ? 0 : zero(rng);
  p.bias.resize(n);
  for (auto& b : p.bias) b = normal(rng);
  return p;
}

// Dequantized product in double: activations from their codes, weights from theirs.
std::vector<double> dequantized_reference(const QuantizedActivations& a, const Problem& p, int64_t n, int64_t k,
                                          const WeightCase& wc, std::vector<double>* magnitude) {
  const int64_t g = wc.group == 0 || wc.group >= k ? k : wc.group, groups = (k + g - 1) / g;
  std::vector<double> y(a.m * n, 0.0);
  magnitude->assign(a.m * n, 0.0);
  for (int64_t r = 0; r < a.m; ++r)
    for (int64_t c = 0; c < n; ++c) {
      double s = 0, mag = 0;
      for (int64_t i = 0; i < k; ++i) {
        const double xa = static_cast<double>(a.scale[r]) * (a.codes[r * a.k_padded + i] - static_cast<double>(a.zero[r]));
        const int64_t gi = c * groups + i / g;
        const double wv = static_cast<double>(p.scale[gi]) * (p.codes[c * k + i] - p.zero[gi]);
        s += xa * wv;
        mag += std::abs(xa * wv);
      }
      y[r * n + c] = s + p.bias[c];
      (*magnitude)[r * n + c] = mag + std::abs(p.bias[c]);
    }
  return y;
}

class GemmAllIsas : public ::testing::TestWithParam<WeightCase> {};

TEST_P(GemmAllIsas, EqualsReferenceExactlyAndDequantizedProduct) {
  const WeightCase wc = GetParam();
  std::mt19937 rng(17 + wc.bits * 3 + static_cast<int>(wc.group));
  const std::vector<ActivationFormat> formats = {
      {8, false, true, 1, 0}, {8, true, true, 1, 0}, {4, false, true, 1, 0}, {4, false, false, 0.7f, 6.4f}};
  int checked = 0;
  for (int64_t k : {5L, 64L, 200L, 513L})
    for (int64_t n : {1L, 17L, 40L})
      for (int64_t m : {1L, 2L, 3L, 17L})
        for (const auto& f : formats) {
          if (wc.group > 0 && wc.group >= k) continue;  // per-group needs several groups to mean anything
          const Problem p = make_problem(m, n, k, wc, rng);
          const PackedWeights w = pack_weights(p.codes.data(), n, k, wc.bits, wc.symmetric, wc.group, p.scale.data(), p.zero.data());
          QuantizedActivations a;
          quantize_activations(p.x.data(), m, k, k, f, w.group_size, &a);
          std::vector<float> want(m * n, -1.0f);
          gemm({&a, &w, p.bias.data(), want.data(), n}, Isa::kRef);
          std::vector<double> magnitude;
          const auto exact = dequantized_reference(a, p, n, k, wc, &magnitude);
          for (int64_t i = 0; i < m * n; ++i)
            ASSERT_NEAR(want[i], exact[i], 1e-5 * magnitude[i] + 1e-6) << "m " << m << " n " << n << " k " << k << " i " << i;
          for (Isa isa : isa_available()) {
            std::vector<float> got(m * n, -2.0f);
            gemm({&a, &w, p.bias.data(), got.data(), n}, isa);
            ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
                << isa_name(isa) << ": m " << m << " n " << n << " k " << k << " act bits " << f.bits;
          }
          ++checked;
        }
  EXPECT_GT(checked, 50);
}

INSTANTIATE_TEST_SUITE_P(Formats, GemmAllIsas,
                         ::testing::Values(WeightCase{8, true, 0}, WeightCase{8, false, 0}, WeightCase{4, true, 0},
                                           WeightCase{4, false, 0}, WeightCase{4, true, 32}, WeightCase{4, false, 64},
                                           WeightCase{8, true, 128}),
                         [](const ::testing::TestParamInfo<WeightCase>& p) {
                           return "w" + std::to_string(p.param.bits) + (p.param.symmetric ? "sym" : "asym") + "g" +
                                  std::to_string(p.param.group);
                         });

TEST(Gemm, LargeShapesUseTheUnpackedInt4PathAndThreads) {
  // m >= 8 unpacks int4 panels; big enough that the driver runs threaded.
  std::mt19937 rng(5);
  for (int bits : {4, 8}) {
    const WeightCase wc{bits, false, 0};
    const int64_t m = 37, n = 130, k = 300;
    const Problem p = make_problem(m, n, k, wc, rng);
    const PackedWeights w = pack_weights(p.codes.data(), n, k, bits, false, 0, p.scale.data(), p.zero.data());
    QuantizedActivations a;
    quantize_activations(p.x.data(), m, k, k, {8, false, true, 1, 0}, w.group_size, &a);
    std::vector<float> want(m * n), got(m * n);
    gemm({&a, &w, nullptr, want.data(), n}, Isa::kRef);
    for (Isa isa : isa_available()) {
      std::fill(got.begin(), got.end(), 0.0f);
      gemm({&a, &w, nullptr, got.data(), n}, isa);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << isa_name(isa) << " bits " << bits;
    }
  }
}

// The AVX2 int8 path has three operand pairs, chosen by the codes present (see gemm_avx2.cpp): no
// activation code -128, else no weight code 0, else neither. Each is run here on random codes
// that select it (awkward shapes, per-channel and grouped weights) and must equal the reference;
// under 16 rows the weights are read as packed, from 16 on through a panel (21 rows: five 4-row
// tiles in the asm loop and a 1-row tile).
TEST(Gemm, Int8OperandPathsOfEveryCodeRangeEqualTheReference) {
  std::mt19937 rng(23);
  struct Path {
    const char* name;
    int32_t wlo, whi;     // weight codes drawn from [wlo, whi] (signed: symmetric packing)
    ActivationFormat f;
    bool force_min_act;   // set one activation to the grid's most negative value
  };
  const std::vector<Path> paths = {
      {"no activation code -128", -128, 127, {8, true, true, 1, 0}, false},
      {"no weight code 0", -127, 127, {8, false, true, 1, 0}, true},
      {"both extremes present", -128, 127, {8, false, true, 1, 0}, true},
  };
  for (const Path& path : paths)
    for (int64_t group : {0L, 64L})
      for (int64_t k : {8L, 200L, 520L})
        for (int64_t n : {1L, 17L, 33L})
          for (int64_t m : {1L, 2L, 5L, 9L, 21L}) {
            if (group > 0 && group >= k) continue;
            std::uniform_int_distribution<int32_t> code(path.wlo, path.whi);
            std::normal_distribution<float> normal(0.0f, 1.5f);
            std::vector<int32_t> codes(n * k), zero((group ? (k + group - 1) / group : 1) * n, 0);
            for (auto& c : codes) c = code(rng);
            codes[0] = path.wlo;  // the range's extreme present
            std::vector<float> scale(zero.size(), 0.03f), x(m * k), bias(n, 0.25f);
            for (auto& v : x) v = normal(rng);
            if (path.force_min_act) x[m * k - 1] = -50.0f;  // the row minimum: code 0 -> a' = -128
            const PackedWeights w = pack_weights(codes.data(), n, k, 8, true, group, scale.data(), zero.data());
            QuantizedActivations a;
            quantize_activations(x.data(), m, k, k, path.f, w.group_size, &a);
            const bool has_min = std::find(a.codes.begin(), a.codes.end(), int8_t{-128}) != a.codes.end();
            ASSERT_EQ(has_min, path.force_min_act) << path.name;
            ASSERT_EQ(w.min_code == 0, path.wlo == -128) << path.name;
            std::vector<float> want(m * n);
            gemm({&a, &w, bias.data(), want.data(), n}, Isa::kRef);
            for (Isa isa : isa_available()) {
              std::vector<float> got(m * n, -2.0f);
              gemm({&a, &w, bias.data(), got.data(), n}, isa);
              ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
                  << isa_name(isa) << " " << path.name << ": m " << m << " n " << n << " k " << k << " group " << group;
            }
          }
}

TEST(Gemm, ExtremeCodesOverTheLongestRowsStayExact) {
  // The bounds the AVX2 path relies on: int8 weights at 255 against activations at -128 over K =
  // 65536 (the int32 lane limit of vpmaddwd sums), int4 weights at 15 against the extreme
  // activation codes of each format (the int16 run lengths of the int4 path). Every ISA must give
  // the reference's bits, and the reference sx sw K (a' - za)(w' - zw) to 1e-6 (one group: a few
  // float roundings).
  struct Case {
    int wbits;
    bool wsym;
    int32_t wcode;  // every weight code
    ActivationFormat f;
    float x;        // every activation (clamps to the format's extreme code)
    int64_t k;
  };
  const std::vector<Case> cases = {
      {8, false, 255, {8, true, false, 1.0f, 0.0f}, -500.0f, 65536},
      {8, true, 127, {8, false, false, 1.0f, 0.0f}, -500.0f, 65536},
      {8, true, -128, {8, true, false, 1.0f, 0.0f}, 500.0f, 65528},
      // AVX2's signed-byte int8 operands at their bounds: |s| = 128 against sign-applied
      // activations of 127 (no code -128), and |a'| = 128 against sign-applied weights of 127 (no
      // weight code 0): pairs of 32512 for 65536 columns.
      {8, false, 0, {8, true, false, 1.0f, 0.0f}, -127.0f, 65536},
      {8, true, -127, {8, true, false, 1.0f, 0.0f}, -500.0f, 65536},
      {8, false, 1, {8, false, false, 1.0f, 0.0f}, -500.0f, 65536},
      {4, false, 15, {8, true, false, 1.0f, 0.0f}, -500.0f, 4096},
      {4, false, 15, {8, false, false, 1.0f, 0.0f}, 500.0f, 4104},
      {4, false, 15, {4, false, false, 1.0f, 0.0f}, 500.0f, 4096},
      {4, true, 7, {4, true, false, 1.0f, 0.0f}, -500.0f, 4096},
      {4, false, 15, {4, true, false, 1.0f, 0.0f}, -500.0f, 4096},
  };
  for (const Case& c : cases) {
    const int64_t m = 5, n = 24, k = c.k;
    std::vector<int32_t> codes(n * k, c.wcode), zero(n, 3);
    std::vector<float> scale(n, 0.5f), x(m * k, c.x);
    const PackedWeights w = pack_weights(codes.data(), n, k, c.wbits, c.wsym, 0, scale.data(), zero.data());
    QuantizedActivations a;
    quantize_activations(x.data(), m, k, k, c.f, w.group_size, &a);
    const double wq = c.wcode + (c.wsym ? 1 << (c.wbits - 1) : 0), zw = c.wsym ? 1 << (c.wbits - 1) : 3;
    const double want_value = static_cast<double>(a.scale[0]) * 0.5 * static_cast<double>(k) *
                              (a.codes[0] - static_cast<double>(a.zero[0])) * (wq - zw);
    std::vector<float> want(m * n);
    gemm({&a, &w, nullptr, want.data(), n}, Isa::kRef);
    ASSERT_NEAR(want[0], want_value, 1e-6 * std::abs(want_value)) << "w" << c.wbits << " a" << c.f.bits << " k " << k;
    for (Isa isa : isa_available()) {
      std::vector<float> got(m * n, -2.0f);
      gemm({&a, &w, nullptr, got.data(), n}, isa);
      ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
          << isa_name(isa) << ": w" << c.wbits << " a" << c.f.bits << (c.f.symmetric ? "sym" : "asym") << " k " << k;
    }
  }
}

TEST(Gemm, VectorizedQuantizerEqualsTheScalarOne) {
  // Every ISA's quantizer (AVX2 on all but ref) gives the scalar loop's codes, scales, zero points
  // and group sums: rows of awkward lengths with exact rounding ties (x / s + z = n + 0.5), values
  // beyond both clip ends, dynamic and static grids, and per-embedding groups with a gather.
  std::mt19937 rng(41);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  ActivationFormat peg(8, false, false);
  peg.peg_bounds = {0, 40, 96, 104};
  peg.peg_scale = {0.05f, 0.5f, 0.25f};
  peg.peg_zero = {3.0f, -7.5f, 128.0f};
  for (int64_t i = 0; i < 104; ++i) peg.gather.push_back((i * 37) % 104);
  const std::vector<ActivationFormat> formats = {
      {8, false, true}, {8, true, true}, {4, false, true}, {4, true, true}, {8, false, false, 0.25f, 3.0f},
      {4, true, false, 0.5f, 0.0f}, peg};
  for (const ActivationFormat& f : formats)
    for (int64_t k : {5L, 31L, 33L, 104L, 1000L}) {
      if (!f.peg_bounds.empty() && k != 104) continue;
      const int64_t m = 7;
      std::vector<float> x(m * k);
      for (auto& v : x) v = normal(rng);
      for (int64_t i = 0; i < m * k; i += 3) x[i] = f.dynamic ? std::round(x[i]) : 0.25f * (std::round(x[i] * 4.0f) + 0.5f);
      x[1 % x.size()] = 1e4f, x[2 % x.size()] = -1e4f;
      QuantizedActivations want;
      quantize_activations(x.data(), m, k, k, f, 32, &want, Isa::kRef);
      for (Isa isa : isa_available()) {
        QuantizedActivations got;
        quantize_activations(x.data(), m, k, k, f, 32, &got, isa);
        ASSERT_EQ(got.codes, want.codes) << isa_name(isa) << " k " << k << " bits " << f.bits;
        ASSERT_EQ(got.group_sum, want.group_sum) << isa_name(isa);
        ASSERT_EQ(got.scale, want.scale) << isa_name(isa);
        ASSERT_EQ(got.zero, want.zero) << isa_name(isa);
      }
    }
}

TEST(Gemm, QuantizerMatchesTheSpecGrid) {
  // Asymmetric 8-bit per token: codes q = round(x / s + z) in [0, 255] are stored as q - 128.
  const std::vector<float> x = {-1.0f, 0.0f, 0.5f, 3.0f};
  QuantizedActivations a;
  quantize_activations(x.data(), 1, 4, 4, {8, false, true, 1, 0}, 0, &a);
  const float s = 4.0f / 255.0f, z = std::nearbyint(1.0f / s);
  EXPECT_FLOAT_EQ(a.scale[0], s);
  EXPECT_FLOAT_EQ(a.zero[0], z - 128);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(a.codes[i], static_cast<int>(std::nearbyint(x[i] / s + z)) - 128) << i;
  EXPECT_EQ(a.group_sum[0], a.codes[0] + a.codes[1] + a.codes[2] + a.codes[3]);
}

TEST(Gemm, BadInputs) {
  const std::vector<int32_t> codes(4 * 8, 1), zero(4, 0);
  const std::vector<float> scale(4, 0.1f);
  EXPECT_THROW(pack_weights(codes.data(), 4, 8, 3, true, 0, scale.data(), zero.data()), Error);   // bits
  EXPECT_THROW(pack_weights(codes.data(), 4, 8, 4, true, 12, scale.data(), zero.data()), Error);  // group not /8
  std::vector<int32_t> big = codes;
  big[5] = 9;  // outside int4 symmetric [-8, 7]
  EXPECT_THROW(pack_weights(big.data(), 4, 8, 4, true, 0, scale.data(), zero.data()), Error);
  const PackedWeights w = pack_weights(codes.data(), 4, 8, 4, true, 0, scale.data(), zero.data());
  QuantizedActivations a;
  const std::vector<float> x(2 * 9, 1.0f);
  quantize_activations(x.data(), 2, 9, 9, {}, 0, &a);  // K = 9 against the weights' 8
  std::vector<float> y(8);
  EXPECT_NE(can_implement({&a, &w, nullptr, y.data(), 4}).find("columns"), std::string::npos);
  EXPECT_THROW(gemm({&a, &w, nullptr, y.data(), 4}), Error);
  quantize_activations(x.data(), 2, 8, 9, {}, 0, &a);
  EXPECT_EQ(can_implement({&a, &w, nullptr, y.data(), 4}), "");
  PackedWeights old = w;
  old.version = 0;
  EXPECT_NE(can_implement({&a, &old, nullptr, y.data(), 4}).find("version"), std::string::npos);
  std::vector<float> nan_x = x;
  nan_x[3] = std::nanf("");
  EXPECT_THROW(quantize_activations(nan_x.data(), 2, 8, 9, {}, 0, &a), Error);
  EXPECT_THROW(isa_parse("sse9"), Error);
}

}  // namespace
}  // namespace outq::kernels

namespace outq::kernels {
namespace {

// Shapes the AMX path takes (>= 16 rows, groups of whole 64-column chunks: K a multiple of 64,
// per channel or groups of 64 / 128), with row counts that leave partial 16- and 32-row tiles and
// odd numbers of column blocks: every ISA equals the reference bit for bit.
TEST(Gemm, TileShapesEqualTheReferenceOnEveryIsa) {
  std::mt19937 rng(23);
  int checked = 0;
  for (const WeightCase wc : {WeightCase{8, false, 0}, WeightCase{8, true, 128}, WeightCase{4, false, 0}, WeightCase{4, true, 64}})
    for (int64_t m : {16L, 17L, 33L, 70L, 300L})
      for (int64_t k : {64L, 192L, 256L, 640L, 2048L})
        for (int64_t n : {17L, 40L, 130L}) {
          if (wc.group > 0 && k % wc.group != 0) continue;
          // K beyond one 512-column step (sums parked, int4 unpacked per step), and M beyond one
          // activation block (256 rows at K = 2048), only in a few combinations to keep it quick.
          if ((k > 256 || m > 70) && (n != 40 || (m > 70) != (k == 2048))) continue;
          const Problem p = make_problem(m, n, k, wc, rng);
          const PackedWeights w = pack_weights(p.codes.data(), n, k, wc.bits, wc.symmetric, wc.group, p.scale.data(), p.zero.data());
          QuantizedActivations a;
          quantize_activations(p.x.data(), m, k, k, {wc.bits == 4 ? 4 : 8, false, true, 1, 0}, w.group_size, &a);
          std::vector<float> want(m * n);
          gemm({&a, &w, p.bias.data(), want.data(), n}, Isa::kRef);
          for (Isa isa : isa_available()) {
            std::vector<float> got(m * n, -2.0f);
            gemm({&a, &w, p.bias.data(), got.data(), n}, isa);
            ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
                << isa_name(isa) << ": m " << m << " n " << n << " k " << k << " bits " << wc.bits << " group " << wc.group;
          }
          ++checked;
        }
  EXPECT_GT(checked, 100);
}

}  // namespace
}  // namespace outq::kernels
