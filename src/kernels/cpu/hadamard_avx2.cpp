// AVX2 Hadamard transform: butterflies with distance < 8 inside one register (a lane permute and
// a blend of x + p and p - x), wider ones on whole registers, then the k x k mix and the scale on
// 8 columns at a time. The same float operations as detail::hadamard_rows_ref, so bit-identical.
#include <immintrin.h>

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
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg sign(int8_t s) { return _mm256_set1_ps(s < 0 ? -0.0f : 0.0f); }  // the sign bit to flip
  static reg flip(reg a, reg sign) { return _mm256_xor_ps(a, sign); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg in_register(reg v) { return stage_in_register<4>(stage_in_register<2>(stage_in_register<1>(v))); }
};

}  // namespace

void hadamard_rows_avx2(const HadamardPlan& p, float* x, int64_t r0, int64_t r1, int64_t ld) {
  if (p.m < Avx2::kWidth) return hadamard_rows_ref(p, x, r0, r1, ld);
  hadamard_rows<Avx2>(p, x, r0, r1, ld);
}

}  // namespace outq::kernels::detail
