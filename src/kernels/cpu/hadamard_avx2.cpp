// AVX2 Hadamard transform: butterflies with distance < 8 inside one register (a lane permute and
// a blend of x + p and p - x), wider ones on whole registers, then the k x k mix and the scale on
// 8 columns at a time. The same float operations as detail::hadamard_rows_ref, so bit-identical.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "../hadamard_internal.h"

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

void fwht_avx2(float* x, int64_t m) {
  for (int64_t i = 0; i < m; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    v = stage_in_register<1>(v);
    v = stage_in_register<2>(v);
    v = stage_in_register<4>(v);
    _mm256_storeu_ps(x + i, v);
  }
  for (int64_t h = 8; h < m; h *= 2)
    for (int64_t i = 0; i < m; i += 2 * h)
      for (int64_t j = i; j < i + h; j += 8) {
        const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + h);
        _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
        _mm256_storeu_ps(x + j + h, _mm256_sub_ps(a, b));
      }
}

}  // namespace

void hadamard_rows_avx2(const HadamardPlan& p, float* x, int64_t r0, int64_t r1, int64_t ld) {
  if (p.m < 8) return hadamard_rows_ref(p, x, r0, r1, ld);
  thread_local std::vector<float> z;
  z.resize(static_cast<size_t>(p.n));
  const __m256 scale = _mm256_set1_ps(p.scale), sign = _mm256_set1_ps(-0.0f);
  for (int64_t r = r0; r < r1; ++r) {
    float* row = x + r * ld;
    for (int64_t a = 0; a < p.k; ++a) fwht_avx2(row + a * p.m, p.m);
    if (p.k == 1) {
      for (int64_t i = 0; i < p.n; i += 8) _mm256_storeu_ps(row + i, _mm256_mul_ps(_mm256_loadu_ps(row + i), scale));
      continue;
    }
    std::copy(row, row + p.n, z.begin());
    for (int64_t a = 0; a < p.k; ++a) {
      const int8_t* s = p.small.data() + a * p.k;
      for (int64_t b = 0; b < p.m; b += 8) {
        __m256 acc = _mm256_loadu_ps(z.data() + b);
        if (s[0] < 0) acc = _mm256_xor_ps(acc, sign);
        for (int64_t c = 1; c < p.k; ++c) {
          const __m256 v = _mm256_loadu_ps(z.data() + c * p.m + b);
          acc = s[c] > 0 ? _mm256_add_ps(acc, v) : _mm256_sub_ps(acc, v);
        }
        _mm256_storeu_ps(row + a * p.m + b, _mm256_mul_ps(acc, scale));
      }
    }
  }
}

}  // namespace outq::kernels::detail
