// AVX-512 Hadamard transform: butterflies with distance < 16 inside one register (a lane permute
// and a masked choice of x + p or p - x), wider ones on whole registers, then the k x k mix and
// the scale on 16 columns at a time. The same float operations as detail::hadamard_rows_ref, so
// bit-identical.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "../hadamard_internal.h"

namespace outq::kernels::detail {
namespace {

template <int H>
__m512 stage_in_register(__m512 x) {
  const __m512i idx = _mm512_xor_si512(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                       _mm512_set1_epi32(H));
  const __m512 p = _mm512_permutexvar_ps(idx, x);
  constexpr __mmask16 upper = H == 1 ? 0xAAAA : H == 2 ? 0xCCCC : H == 4 ? 0xF0F0 : 0xFF00;
  return _mm512_mask_sub_ps(_mm512_add_ps(x, p), upper, p, x);
}

void fwht_avx512(float* x, int64_t m) {
  for (int64_t i = 0; i < m; i += 16) {
    __m512 v = _mm512_loadu_ps(x + i);
    v = stage_in_register<1>(v);
    v = stage_in_register<2>(v);
    v = stage_in_register<4>(v);
    v = stage_in_register<8>(v);
    _mm512_storeu_ps(x + i, v);
  }
  for (int64_t h = 16; h < m; h *= 2)
    for (int64_t i = 0; i < m; i += 2 * h)
      for (int64_t j = i; j < i + h; j += 16) {
        const __m512 a = _mm512_loadu_ps(x + j), b = _mm512_loadu_ps(x + j + h);
        _mm512_storeu_ps(x + j, _mm512_add_ps(a, b));
        _mm512_storeu_ps(x + j + h, _mm512_sub_ps(a, b));
      }
}

}  // namespace

void hadamard_rows_avx512(const HadamardPlan& p, float* x, int64_t r0, int64_t r1, int64_t ld) {
  if (p.m < 16) return hadamard_rows_avx2(p, x, r0, r1, ld);
  thread_local std::vector<float> z;
  z.resize(static_cast<size_t>(p.n));
  const __m512 scale = _mm512_set1_ps(p.scale);
  for (int64_t r = r0; r < r1; ++r) {
    float* row = x + r * ld;
    for (int64_t a = 0; a < p.k; ++a) fwht_avx512(row + a * p.m, p.m);
    if (p.k == 1) {
      for (int64_t i = 0; i < p.n; i += 16) _mm512_storeu_ps(row + i, _mm512_mul_ps(_mm512_loadu_ps(row + i), scale));
      continue;
    }
    std::copy(row, row + p.n, z.begin());
    for (int64_t a = 0; a < p.k; ++a) {
      const int8_t* s = p.small.data() + a * p.k;
      for (int64_t b = 0; b < p.m; b += 16) {
        __m512 acc = _mm512_loadu_ps(z.data() + b);
        if (s[0] < 0) acc = _mm512_xor_ps(acc, _mm512_set1_ps(-0.0f));  // a sign flip, as the reference's -z
        for (int64_t c = 1; c < p.k; ++c) {
          const __m512 v = _mm512_loadu_ps(z.data() + c * p.m + b);
          acc = s[c] > 0 ? _mm512_add_ps(acc, v) : _mm512_sub_ps(acc, v);
        }
        _mm512_storeu_ps(row + a * p.m + b, _mm512_mul_ps(acc, scale));
      }
    }
  }
}

}  // namespace outq::kernels::detail
