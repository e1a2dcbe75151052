// Plain scalar GEMM: the readable definition of the kernels' arithmetic and their test oracle.
// Integer dot products per (row, channel, group), then the fused multiply-add epilogue in the
// order every optimized kernel uses (see gemm.h).
#include <cmath>

#include "../gemm_internal.h"

namespace outq::kernels::detail {

void gemm_blocks_ref(const GemmArguments& args, int64_t b0, int64_t b1) {
  const QuantizedActivations& a = *args.a;
  const PackedWeights& w = *args.w;
  const int64_t groups = w.groups();
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t m = 0; m < a.m; ++m) {
      float tile[PackedWeights::kBlock];
      for (int c = 0; c < PackedWeights::kBlock; ++c) {
        const int64_t n = b * PackedWeights::kBlock + c;
        float acc = 0;
        for (int64_t g = 0; g < groups; ++g) {
          int64_t q0, q1;
          group_quads(w, g, &q0, &q1);
          int32_t dot = 0;
          for (int64_t kk = 4 * q0; kk < 4 * q1; ++kk) dot += a.codes[m * a.k_padded + kk] * packed_weight_code(w, b, c, kk);
          const int64_t wi = w.at(n, g);
          const int32_t corr = dot - w.zero[wi] * a.group_sum[m * groups + g];
          const float t = std::fma(-a.zero[m], static_cast<float>(w.sum[wi]), static_cast<float>(corr));
          acc = std::fma(w.scale[wi], t, acc);
        }
        tile[c] = std::fma(a.scale[m], acc, args.bias && n < w.n ? args.bias[n] : 0.0f);
      }
      store_row(tile, args.y + m * args.ldy, b * PackedWeights::kBlock, w.n);
    }
}

}  // namespace outq::kernels::detail
