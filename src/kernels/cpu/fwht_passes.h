// The Hadamard transform on whole registers, shared by the AVX2 and AVX-512 paths: each includes it
// under its own ISA flags with its register traits V (type, width, set1, load, store, add, sub,
// mul, sign, flip, and in_register: the stages narrower than a register). Stages at distances
// h, 2h, 4h (h a multiple of the width) run in one pass over
// eight registers (three stages per load and store instead of one); two or one when fewer are
// left. Grouping stages changes no arithmetic: every stage still combines the previous stage's
// values pairwise, so the results equal the one-stage-at-a-time reference bit for bit.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "outq/kernels/hadamard.h"

namespace outq::kernels::detail {

template <class V, int R>
inline void butterfly_pass(float* x, int64_t m, int64_t h, bool scale_out, typename V::reg scale) {
  for (int64_t i = 0; i < m; i += R * h)
    for (int64_t j = i; j < i + h; j += V::kWidth) {
      typename V::reg v[R];
      for (int t = 0; t < R; ++t) v[t] = V::load(x + j + t * h);
      for (int d = 1; d < R; d *= 2)  // stage h * d pairs registers t and t + d
        for (int t = 0; t < R; ++t)
          if ((t & d) == 0) {
            const typename V::reg a = v[t], b = v[t + d];
            v[t] = V::add(a, b);
            v[t + d] = V::sub(a, b);
          }
      for (int t = 0; t < R; ++t) V::store(x + j + t * h, scale_out ? V::mul(v[t], scale) : v[t]);
    }
}

/// Stages h = width .. m/2 of the transform of x[0, m), m > width (the narrower ones already done
/// in registers); with scale_out the last pass multiplies by `scale` on the way out.
template <class V>
inline void butterflies_from_width(float* x, int64_t m, bool scale_out, typename V::reg scale) {
  int64_t h = V::kWidth;
  while (h < m) {
    const int64_t left = m / h;  // 2^(stages left)
    const int radix = left >= 8 ? 8 : left >= 4 ? 4 : 2;
    const bool last = h * radix == m;
    if (radix == 8) butterfly_pass<V, 8>(x, m, h, scale_out && last, scale);
    else if (radix == 4) butterfly_pass<V, 4>(x, m, h, scale_out && last, scale);
    else butterfly_pass<V, 2>(x, m, h, scale_out && last, scale);
    h *= radix;
  }
}

/// The k x k mix across the k segments of one row (y[a][b] = scale * sum over c of H_k[a][c] z[c][b],
/// added in increasing c, starting from +-z[0][b]), a block of up to four registers of columns at a
/// time so that the k copied segment pieces stay in L1 while every output segment is formed. A
/// -1 entry flips the sign bit of z and adds (a + (-b) is a - b exactly in IEEE arithmetic), so
/// there is no branch in the loop. `z` holds k * 4 * width floats.
template <class V>
inline void small_mix(const HadamardPlan& p, float* row, float* z, typename V::reg scale) {
  const int64_t regs = std::min<int64_t>(4, p.m / V::kWidth), block = regs * V::kWidth;
  for (int64_t b0 = 0; b0 < p.m; b0 += block) {
    for (int64_t c = 0; c < p.k; ++c)
      for (int64_t b = 0; b < block; ++b) z[c * block + b] = row[c * p.m + b0 + b];
    for (int64_t a = 0; a < p.k; ++a) {
      const int8_t* s = p.small.data() + a * p.k;
      typename V::reg acc[4];
      const typename V::reg first = V::sign(s[0]);
      for (int64_t u = 0; u < regs; ++u) acc[u] = V::flip(V::load(z + u * V::kWidth), first);
      for (int64_t c = 1; c < p.k; ++c) {
        const typename V::reg sign = V::sign(s[c]);
        for (int64_t u = 0; u < regs; ++u) acc[u] = V::add(acc[u], V::flip(V::load(z + c * block + u * V::kWidth), sign));
      }
      for (int64_t u = 0; u < regs; ++u) V::store(row + a * p.m + b0 + u * V::kWidth, V::mul(acc[u], scale));
    }
  }
}

/// The butterflies of x[0, m) (m >= the register width); with scale_out, the scaling too.
template <class V>
inline void fwht(float* x, int64_t m, bool scale_out, typename V::reg scale) {
  const bool in_register_only = m == V::kWidth;
  for (int64_t i = 0; i < m; i += V::kWidth) {
    const typename V::reg v = V::in_register(V::load(x + i));
    V::store(x + i, scale_out && in_register_only ? V::mul(v, scale) : v);
  }
  if (!in_register_only) butterflies_from_width<V>(x, m, scale_out, scale);
}

/// y = M x for rows [r0, r1) of x (p.m >= the register width): the butterflies of every segment,
/// then the Paley mix and the scaling (fused into the last pass when k = 1).
template <class V>
inline void hadamard_rows(const HadamardPlan& p, float* x, int64_t r0, int64_t r1, int64_t ld) {
  thread_local std::vector<float> z;
  z.resize(static_cast<size_t>(p.k * 4 * V::kWidth));
  const typename V::reg scale = V::set1(p.scale);
  for (int64_t r = r0; r < r1; ++r) {
    float* row = x + r * ld;
    if (p.k == 1) {
      fwht<V>(row, p.m, true, scale);
      continue;
    }
    for (int64_t a = 0; a < p.k; ++a) fwht<V>(row + a * p.m, p.m, false, scale);
    small_mix<V>(p, row, z.data(), scale);
  }
}

}  // namespace outq::kernels::detail
