// AVX-512 Hadamard transform: butterflies with distance < 16 inside one register (a lane permute
// and a masked choice of x + p or p - x), wider ones on whole registers, then the k x k mix and
// the scale on 16 columns at a time. The same float operations as detail::hadamard_rows_ref, so
// bit-identical.
#include <immintrin.h>

#include "../hadamard_internal.h"
#include "fwht_passes.h"

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

struct Avx512 {
  using reg = __m512;
  static constexpr int64_t kWidth = 16;
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg sign(int8_t s) { return _mm512_set1_ps(s < 0 ? -0.0f : 0.0f); }  // the sign bit to flip
  static reg flip(reg a, reg sign) { return _mm512_xor_ps(a, sign); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg in_register(reg v) { return stage_in_register<8>(stage_in_register<4>(stage_in_register<2>(stage_in_register<1>(v)))); }
};

}  // namespace

void hadamard_rows_avx512(const HadamardPlan& p, float* x, int64_t r0, int64_t r1, int64_t ld) {
  if (p.m < Avx512::kWidth) return hadamard_rows_avx2(p, x, r0, r1, ld);
  hadamard_rows<Avx512>(p, x, r0, r1, ld);
}

}  // namespace outq::kernels::detail
