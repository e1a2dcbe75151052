// int16-activation x int8-weight GEMM: the 16-bit quantizer equals a plain-loop one code for code;
// the reference path equals an int64 dot product of the unpacked codes through the documented
// epilogue bit for bit, and the dequantized product in double to 1e-6 of sum |x^ w^|; every ISA
// equals the reference bit for bit. Extreme codes (|a'| = 32768, |w''| = 255) over 1000 columns
// drive the sums past 2^31, which only the int64 widening survives.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "outq/core/error.h"
#include "outq/kernels/gemm_i16.h"

namespace outq::kernels {
namespace {

TEST(GemmInt16, EqualsTheReferenceOnAwkwardShapes) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int checked = 0;
  for (int64_t k : {1L, 7L, 64L, 257L, 1000L})
    for (int64_t n : {1L, 9L, 40L})
      for (int64_t m : {1L, 3L, 6L})
        for (int wbits : {8, 4})
          for (bool asym_w : {false, true})
            for (const ActivationFormat& f : {ActivationFormat(16, false, true), ActivationFormat(16, true, true),
                                              ActivationFormat(16, false, false, 0.001f, 30000.0f)}) {
              std::vector<float> x(m * k);
              for (auto& v : x) v = normal(rng) * 3.0f;
              x[0] = 25.0f;
              const int32_t qmin = asym_w ? 0 : -(1 << (wbits - 1)), qmax = asym_w ? (1 << wbits) - 1 : (1 << (wbits - 1)) - 1;
              std::uniform_int_distribution<int32_t> code(qmin, qmax);
              std::vector<int32_t> codes(n * k), zero(n);
              std::vector<float> scale(n), bias(n);
              for (auto& c : codes) c = code(rng);
              for (int64_t c = 0; c < n; ++c) zero[c] = asym_w ? code(rng) : 0, scale[c] = 0.01f + 0.001f * c, bias[c] = normal(rng);
              const PackedWeights16 w = pack_weights16(codes.data(), n, k, wbits, !asym_w, scale.data(), zero.data());
              Activations16 a;
              quantize_activations16(x.data(), m, k, k, f, &a);
              std::vector<float> want(m * n);
              gemm_i16(a, w, bias.data(), want.data(), n, Isa::kRef);
              for (int64_t r = 0; r < m; ++r) {
                // Plain-loop quantizer (float32 as the library's) and int64 products.
                float sx = f.static_scale, zx = f.static_zero;
                if (f.dynamic) {
                  float lo = 0, hi = 0;
                  for (int64_t i = 0; i < k; ++i) lo = std::min(lo, x[r * k + i]), hi = std::max(hi, x[r * k + i]);
                  sx = (f.symmetric ? std::max(-lo, hi) / 32767.0f : (hi - lo) / 65535.0f);
                  zx = f.symmetric ? 0.0f : std::nearbyint(-lo / sx);
                }
                const float shift = f.symmetric ? 0.0f : -32768.0f;
                for (int64_t c = 0; c < n; ++c) {
                  int64_t d = 0, wc = 0;
                  double exact = 0, mag = 0;
                  for (int64_t i = 0; i < k; ++i) {
                    const float q = std::clamp(std::nearbyint(x[r * k + i] / sx + zx), f.symmetric ? -32768.0f : 0.0f,
                                               f.symmetric ? 32767.0f : 65535.0f);
                    const int64_t ac = static_cast<int64_t>(q + shift);
                    if (c == 0) {
                      ASSERT_EQ(a.codes[r * a.k_padded + i], ac) << "row " << r << " column " << i;
                    }
                    const int64_t wv = codes[c * k + i] - zero[c];
                    d += ac * wv, wc += wv;
                    const double term = double{sx} * (q - double{zx}) * double{scale[c]} * static_cast<double>(wv);
                    exact += term, mag += std::abs(term);
                  }
                  const double t = static_cast<double>(d) - double{zx + shift} * static_cast<double>(wc);
                  const float formula = static_cast<float>(double{sx} * double{scale[c]} * t) + bias[c];
                  ASSERT_EQ(want[r * n + c], formula) << "k " << k << " n " << n << " m " << m;
                  ASSERT_NEAR(want[r * n + c], exact + bias[c], 1e-6 * mag + 1e-5);
                }
              }
              for (Isa isa : isa_available()) {
                std::vector<float> got(m * n, -1.0f);
                gemm_i16(a, w, bias.data(), got.data(), n, isa);
                ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << isa_name(isa);
              }
              ++checked;
            }
  EXPECT_GT(checked, 500);
}

TEST(GemmInt16, ExtremeCodesNeedTheInt64Widening) {
  const int64_t m = 4, n = 8, k = 1000;
  std::vector<int32_t> codes(n * k, 0), zero(n, 255);  // w'' = -255 everywhere
  std::vector<float> scale(n, 1.0f);
  const PackedWeights16 w = pack_weights16(codes.data(), n, k, 8, false, scale.data(), zero.data());
  std::vector<float> x(m * k, -1.0f);  // static grid: every code is 0, stored -32768
  Activations16 a;
  quantize_activations16(x.data(), m, k, k, ActivationFormat(16, false, false, 1.0f, 0.0f), &a);
  ASSERT_EQ(a.codes[5], -32768);
  // y = sx sw (D - za Wc) with D = k * 32768 * 255 > 2^31 and za = -32768, Wc = -255 k: y = 0 exactly.
  for (Isa isa : isa_available()) {
    std::vector<float> y(m * n, -1.0f);
    gemm_i16(a, w, nullptr, y.data(), n, isa);
    for (float v : y) ASSERT_EQ(v, 0.0f) << isa_name(isa);
  }
}

TEST(GemmInt16, BadInputs) {
  std::vector<int32_t> codes(2 * 4, 300), zero(2, 0);
  std::vector<float> scale(2, 1.0f);
  EXPECT_THROW(pack_weights16(codes.data(), 2, 4, 8, true, scale.data(), zero.data()), Error);  // 300 is not int8
  EXPECT_THROW(pack_weights16(codes.data(), 2, 4, 9, true, scale.data(), zero.data()), Error);
  std::fill(codes.begin(), codes.end(), 1);
  const PackedWeights16 w = pack_weights16(codes.data(), 2, 4, 8, true, scale.data(), zero.data());
  std::vector<float> x(2 * 5, 1.0f), y(4);
  Activations16 a;
  quantize_activations16(x.data(), 2, 5, 5, ActivationFormat(16), &a);
  EXPECT_NE(can_implement16(a, w, 2).find("columns"), std::string::npos);
  x[2] = std::nanf("");
  EXPECT_THROW(quantize_activations16(x.data(), 2, 4, 5, ActivationFormat(16), &a), Error);
}

}  // namespace
}  // namespace outq::kernels
