// Hadamard transforms: the small +-1 matrices satisfy H H^T = k I exactly (integer arithmetic);
// plans exist for the widths outq's models use and not for orders without a construction (the
// error names the width); the transform equals the dense product (H_k (x) H_m) x / sqrt(n)
// computed in double entry by entry (tolerance: n additions in float32, 2 n u max|x| with margin);
// M is orthogonal (M M^T = I to 1e-12 in double); and every ISA path equals the scalar reference
// bit for bit (the same adds, subtracts and scaling per element), on odd row counts and strides.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "outq/core/error.h"
#include "outq/kernels/hadamard.h"

namespace outq::kernels {
namespace {

// M[i][j] in double, entry by entry: H_k[i / m][j / m] * (-1)^popcount((i % m) & (j % m)) / sqrt(n).
double entry(const HadamardPlan& p, int64_t i, int64_t j) {
  const int s = p.small[static_cast<size_t>((i / p.m) * p.k + j / p.m)];
  const int sylvester = __builtin_popcountll(static_cast<unsigned long long>((i % p.m) & (j % p.m))) % 2 ? -1 : 1;
  return s * sylvester / std::sqrt(static_cast<double>(p.n));
}

TEST(Hadamard, SmallMatricesAreExactlyHadamard) {
  int built = 0;
  for (int64_t k = 1; k <= 200; ++k) {
    const std::vector<int8_t> h = small_hadamard(k);
    if (h.empty()) continue;
    ++built;
    ASSERT_EQ(static_cast<int64_t>(h.size()), k * k);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) {
        int64_t dot = 0;
        for (int64_t c = 0; c < k; ++c) {
          ASSERT_TRUE(h[i * k + c] == 1 || h[i * k + c] == -1);
          dot += h[i * k + c] * h[j * k + c];
        }
        ASSERT_EQ(dot, i == j ? k : 0) << "order " << k << " rows " << i << ", " << j;
      }
  }
  // Paley I (q = 3 mod 4 prime) and II (q = 1 mod 4 prime) give these orders, among others (156 and
  // 172, Williamson's, are not built).
  for (const int64_t k : {12, 20, 28, 36, 44, 60, 76, 108, 140}) EXPECT_FALSE(small_hadamard(k).empty()) << k;
  EXPECT_GE(built, 30);
}

TEST(Hadamard, PlansForModelWidthsAndClearErrorsOtherwise) {
  struct Want { int64_t n, k; };
  for (const Want w : {Want{256, 1}, Want{1024, 1}, Want{768, 12}, Want{1408, 44}, Want{1920, 60}, Want{5120, 20},
                       Want{4864, 76}, Want{96, 12}, Want{1, 1}}) {
    const HadamardPlan p = hadamard_plan(w.n);
    EXPECT_EQ(p.k, w.k) << w.n;
    EXPECT_EQ(p.k * p.m, w.n);
  }
  for (const int64_t n : {6, 92, 46 * 2}) {
    const std::string e = [&] {
      try {
        hadamard_plan(n, "R4 (intermediate_size)");
      } catch (const Error& err) {
        return std::string(err.what());
      }
      return std::string();
    }();
    EXPECT_NE(e.find("R4 (intermediate_size): no Hadamard matrix of order " + std::to_string(n)), std::string::npos) << e;
  }
  EXPECT_THROW(hadamard_plan(0), Error);
}

TEST(Hadamard, MatrixIsOrthogonal) {
  for (const int64_t n : {8, 96, 160, 304}) {  // 304 = 76 * 4 (Paley II)
    const HadamardPlan p = hadamard_plan(n);
    double worst = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < n; ++c) dot += entry(p, i, c) * entry(p, j, c);
        worst = std::max(worst, std::abs(dot - (i == j ? 1.0 : 0.0)));
      }
    EXPECT_LE(worst, 1e-12) << n;
  }
}

TEST(Hadamard, TransformEqualsDenseProductOnEveryIsa) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int compared = 0;
  for (const int64_t n : {1, 2, 4, 8, 16, 32, 12, 24, 96, 160, 256, 304, 1408}) {
    const HadamardPlan p = hadamard_plan(n);
    for (const int64_t rows : {1, 3, 7}) {
      const int64_t ld = n + 5;
      std::vector<float> x(static_cast<size_t>(rows * ld), 777.0f);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < n; ++i) x[r * ld + i] = normal(rng) * (i % 17 == 3 ? 40.0f : 1.0f);  // an outlier channel
      std::vector<float> ref = x;
      hadamard_transform(p, ref.data(), rows, ld, Isa::kRef);
      for (int64_t r = 0; r < rows; ++r) {
        double amax = 0;
        for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::abs(static_cast<double>(x[r * ld + i])));
        for (int64_t i = 0; i < n; ++i) {
          double want = 0;
          for (int64_t j = 0; j < n; ++j) want += entry(p, i, j) * x[r * ld + j];
          // n float32 additions of terms up to amax, then one scaling: |error| <= 2 n u amax (u = 2^-24), x4 margin.
          const double tol = 8.0 * n * std::ldexp(1.0, -24) * amax + 1e-30;
          ASSERT_NEAR(ref[r * ld + i], want, tol) << "n " << n << " row " << r << " entry " << i;
        }
        for (int64_t i = n; i < ld; ++i) ASSERT_EQ(ref[r * ld + i], 777.0f) << "wrote past the row";
      }
      for (const Isa isa : isa_available()) {
        std::vector<float> y = x;
        hadamard_transform(p, y.data(), rows, ld, isa);
        for (size_t i = 0; i < y.size(); ++i)
          ASSERT_EQ(std::memcmp(&y[i], &ref[i], sizeof(float)), 0) << isa_name(isa) << " n " << n << " at " << i;
        ++compared;
      }
    }
  }
  EXPECT_GT(compared, 39);
}

}  // namespace
}  // namespace outq::kernels
