// AVX2 Hadamard transform: butterflies with distance < 8 inside one register (a lane permute and
// a blend of x + p and p - x), wider ones on whole registers, then the k x k mix and the scale on
// 8 columns at a time. The same float operations as detail::hadamard_rows_ref, so bit-identical.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "../hadamard_internal.h"
#include "fwht_passes.h"

namespace outq::kernels::detail {
namespace {

// Stage h (1, 2 or 4) inside one register: lane i pairs with lane i ^ h; the lane with bit h clear
// gets x_i + x_(i+h), the other x_(i-h) - x_i.
template <int H>
__m256 stage_in_register(__m256 x) {
  const __m256i idx = _mm256_setr_epi32(0 ^ H, 1 ^ H, 2 ^ H, 3 ^ H, 4 ^ H, 5 ^ H, 6 ^ H, 7 ^ H);
  const __m256 p = _mm256_permutevar8x32_ps(x, idx);
  constexpr int mask = (H == 1 ? 0xAA : H == 2 ? 0xCC : 0xF0);
  return _mm256_blend_ps(_mm256_add_ps(x, p), _mm256_sub_ps(p, x), mask);
}

struct Avx2 {
  using reg = __m256;
  static constexpr int64_t kWidth = 8;
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg sign(int8_t s) { return _mm256_set1_ps(s < 0 ? -0.0f : 0.0f); }  // the sign bit to flip
  static reg flip(reg a, reg sign) { return _mm256_xor_ps(a, sign); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
};

// The butterflies of x[0, m) (m >= the register width); with scale_out, the scaling too.
void fwht_avx2(float* x, int64_t m, bool scale_out, __m256 scale) {
  const bool in_register_only = m == 8;
  for (int64_t i = 0; i < m; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    v = stage_in_register<1>(v);
    v = stage_in_register<2>(v);
    v = stage_in_register<4>(v);
    _mm256_storeu_ps(x + i, scale_out && in_register_only ? _mm256_mul_ps(v, scale) : v);
  }
  if (!in_register_only) butterflies_from_width<Avx2>(x, m, scale_out, scale);
}

}  // namespace

void hadamard_rows_avx2(const HadamardPlan& p, float* x, int64_t r0, int64_t r1, int64_t ld) {
  if (p.m < 8) return hadamard_rows_ref(p, x, r0, r1, ld);
  thread_local std::vector<float> z;
  z.resize(static_cast<size_t>(p.k * 4 * Avx2::kWidth));
  const __m256 scale = _mm256_set1_ps(p.scale);
  for (int64_t r = r0; r < r1; ++r) {
    float* row = x + r * ld;
    if (p.k == 1) {  // the scaling fused into the last pass
      fwht_avx2(row, p.m, true, scale);
      continue;
    }
    for (int64_t a = 0; a < p.k; ++a) fwht_avx2(row + a * p.m, p.m, false, scale);
    small_mix<Avx2>(p, row, z.data(), scale);
  }
}

}  // namespace outq::kernels::detail
