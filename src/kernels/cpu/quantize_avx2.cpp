// AVX2 versions of the activation quantizer's two loops (see gemm_internal.h): the row's range and
// NaN probe 8 floats at a time, and the codes of a run (divide, add, clamp, round by the 1.5 * 2^23
// addition, narrow to int8) with their sum. Same IEEE operations per element as the scalar loops,
// so the codes are identical. Compiled with -mavx2 -mfma only for this file (no contraction can
// apply: a division feeds the addition).
#include <immintrin.h>

#include "../gemm_internal.h"

namespace outq::kernels::detail {

bool row_grid_avx2(const float* row, int64_t k, const ActivationFormat& f, int32_t qmax, float* scale, float* zero) {
  __m256 lo = _mm256_setzero_ps(), hi = lo, probe = lo;
  const __m256 zerov = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 v = _mm256_loadu_ps(row + i);
    lo = _mm256_min_ps(v, lo);  // (v < lo) ? v : lo, as std::min(lo, v)
    hi = _mm256_max_ps(v, hi);
    probe = _mm256_add_ps(probe, _mm256_mul_ps(v, zerov));
  }
  alignas(32) float l[8], h[8], p[8];
  _mm256_store_ps(l, lo), _mm256_store_ps(h, hi), _mm256_store_ps(p, probe);
  float lo_s = 0, hi_s = 0, probe_s = 0;
  for (int j = 0; j < 8; ++j) lo_s = std::min(lo_s, l[j]), hi_s = std::max(hi_s, h[j]), probe_s += p[j];
  for (; i < k; ++i) lo_s = std::min(lo_s, row[i]), hi_s = std::max(hi_s, row[i]), probe_s += row[i] * 0.0f;
  grid_from_range(lo_s, hi_s, f, qmax, scale, zero);
  return probe_s == 0.0f;
}

int32_t quantize_run_avx2(const float* x, int64_t n, float scale, float zero, int32_t qmin, int32_t qmax, int32_t shift,
                          int8_t* codes) {
  const __m256 s = _mm256_set1_ps(scale), z = _mm256_set1_ps(zero), lo = _mm256_set1_ps(static_cast<float>(qmin)),
               hi = _mm256_set1_ps(static_cast<float>(qmax)), magic = _mm256_set1_ps(12582912.0f);
  const __m256i sh = _mm256_set1_epi32(shift);
  __m256i sum = _mm256_setzero_si256();
  auto codes8 = [&](const float* p) {  // 8 codes as int32, as round_clamp(p[i] / scale + zero) + shift
    const __m256 v = _mm256_add_ps(_mm256_div_ps(_mm256_loadu_ps(p), s), z);
    const __m256 c = _mm256_min_ps(_mm256_max_ps(v, lo), hi);  // NaN -> lo, as round_clamp
    return _mm256_add_epi32(_mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(c, magic), magic)), sh);
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i q0 = codes8(x + i), q1 = codes8(x + i + 8), q2 = codes8(x + i + 16), q3 = codes8(x + i + 24);
    sum = _mm256_add_epi32(sum, _mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3)));
    // Codes are within int8, so the saturating packs are exact; the permute undoes their lane order.
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i),
                        _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  int32_t total = 0;
  for (int j = 0; j < 8; ++j) total += lanes[j];
  return total + quantize_run(x + i, n - i, scale, zero, qmin, qmax, shift, codes + i);
}

}  // namespace outq::kernels::detail
