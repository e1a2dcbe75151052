// int16-activation GEMM: weight packing, the 16-bit activation quantizer, argument checks, the
// threaded driver and the scalar reference path (see gemm_i16.h).
#include "outq/kernels/gemm_i16.h"

#include <omp.h>

#include <cmath>
#include <sstream>

#include "gemm_i16_internal.h"
#include "gemm_internal.h"
#include "outq/core/error.h"

namespace outq::kernels {

PackedWeights16 pack_weights16(const int32_t* codes, int64_t n, int64_t k, int bits, bool symmetric, const float* scale,
                               const int32_t* zero) {
  OUTQ_CHECK(bits >= 2 && bits <= 8, "pack_weights16: bits: expected 2..8, found ", bits);
  OUTQ_CHECK(n > 0 && k > 0 && k <= (int64_t{1} << 24), "pack_weights16: shape: expected 1 <= n and 1 <= k <= 2^24, found ",
             n, " x ", k);
  PackedWeights16 w;
  w.n = n, w.k = k, w.k_padded = (k + 1) / 2 * 2;
  const int64_t channels = w.blocks() * PackedWeights16::kBlock;
  w.data.assign(w.blocks() * w.k_padded * PackedWeights16::kBlock, 0);
  w.scale.assign(channels, 0.0f);
  w.sum.assign(channels, 0);
  const int32_t qmin = symmetric ? -(1 << (bits - 1)) : 0, qmax = symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  for (int64_t c = 0; c < n; ++c) {
    OUTQ_CHECK(std::isfinite(scale[c]), "pack_weights16: scale of channel ", c, " is not finite");
    const int32_t zw = symmetric ? 0 : zero[c];
    OUTQ_CHECK(zw >= qmin && zw <= qmax, "pack_weights16: zero point of channel ", c, ": expected ", qmin, "..", qmax,
               ", found ", zw);
    w.scale[c] = scale[c];
    int16_t* block = w.data.data() + (c / PackedWeights16::kBlock) * w.k_padded * PackedWeights16::kBlock;
    const int64_t lane = c % PackedWeights16::kBlock;
    for (int64_t kk = 0; kk < k; ++kk) {
      const int32_t q = codes[c * k + kk];
      OUTQ_CHECK(q >= qmin && q <= qmax, "pack_weights16: code at (", c, ", ", kk, "): expected ", qmin, "..", qmax,
                 ", found ", q);
      block[(kk / 2) * 16 + lane * 2 + kk % 2] = static_cast<int16_t>(q - zw);
      w.sum[c] += q - zw;
    }
  }
  return w;
}

void quantize_activations16(const float* x, int64_t m, int64_t k, int64_t ldx, const ActivationFormat& f,
                            Activations16* out) {
  OUTQ_CHECK(m >= 0 && k > 0 && ldx >= k, "quantize_activations16: shape: expected m >= 0, k > 0, ldx >= k, found ", m,
             ", ", k, ", ", ldx);
  OUTQ_CHECK(f.dynamic || (std::isfinite(f.static_scale) && f.static_scale > 0 && std::isfinite(f.static_zero)),
             "quantize_activations16: static scale and zero: expected a positive finite scale and a finite zero, found ",
             f.static_scale, " and ", f.static_zero);
  out->m = m, out->k = k, out->k_padded = (k + 1) / 2 * 2;
  out->codes.assign(m * out->k_padded, 0);
  out->scale.resize(m);
  out->zero.resize(m);
  const int32_t qmin = f.symmetric ? -32768 : 0, qmax = f.symmetric ? 32767 : 65535;
  const int32_t shift = f.symmetric ? 0 : -32768;
  int64_t bad_row = -1;
#pragma omp parallel for schedule(static) if (m * k > 65536)
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x + r * ldx;
    float scale, zero;
    if (!detail::row_grid(row, k, f, qmax, &scale, &zero)) {
#pragma omp critical
      bad_row = r;
    }
    int16_t* codes = out->codes.data() + r * out->k_padded;
    for (int64_t i = 0; i < k; ++i)
      codes[i] = static_cast<int16_t>(detail::round_clamp(row[i] / scale + zero, qmin, qmax) + shift);
    out->scale[r] = scale;
    out->zero[r] = zero + static_cast<float>(shift);
  }
  OUTQ_CHECK(bad_row < 0, "quantize_activations16: row ", bad_row, " holds NaN or infinite values; expected finite activations");
}

std::string can_implement16(const Activations16& a, const PackedWeights16& w, int64_t ldy) {
  std::ostringstream why;
  if (a.k != w.k)
    why << "activations have " << a.k << " columns, the weights " << w.k << " (expected equal)";
  else if (a.codes.size() != static_cast<size_t>(a.m * a.k_padded) || a.k_padded != w.k_padded)
    why << "activation codes buffer does not match " << a.m << " x " << a.k;
  else if (w.data.size() != static_cast<size_t>(w.blocks() * w.k_padded * PackedWeights16::kBlock))
    why << "packed weights of " << w.n << " x " << w.k << " have inconsistent buffer sizes";
  else if (ldy < w.n)
    why << "output row stride " << ldy << " is smaller than n = " << w.n;
  return why.str();
}

namespace detail {

void gemm_i16_blocks_ref(const Activations16& a, const PackedWeights16& w, const float* bias, float* y, int64_t ldy,
                         int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    const int16_t* block = w.data.data() + b * w.k_padded * PackedWeights16::kBlock;
    for (int64_t r = 0; r < a.m; ++r) {
      const int16_t* ar = a.codes.data() + r * a.k_padded;
      float tile[PackedWeights16::kBlock];
      for (int lane = 0; lane < PackedWeights16::kBlock; ++lane) {
        const int64_t c = b * PackedWeights16::kBlock + lane;
        int64_t d = 0;
        for (int64_t kk = 0; kk < a.k_padded; ++kk) d += int64_t{ar[kk]} * block[(kk / 2) * 16 + lane * 2 + kk % 2];
        tile[lane] = epilogue16(d, a.scale[r], a.zero[r], w.scale[c], w.sum[c], bias && c < w.n ? bias[c] : 0.0f);
      }
      store16(tile, y + r * ldy, b * PackedWeights16::kBlock, w.n);
    }
  }
}

}  // namespace detail

void gemm_i16(const Activations16& a, const PackedWeights16& w, const float* bias, float* y, int64_t ldy, Isa isa) {
  const std::string problem = can_implement16(a, w, ldy);
  OUTQ_CHECK(problem.empty(), "int16 GEMM: ", problem);
  OUTQ_CHECK(isa_supported(isa), "int16 GEMM: this CPU cannot run the ", isa_name(isa), " kernels");
  if (a.m == 0) return;
  auto* fn = isa == Isa::kRef ? detail::gemm_i16_blocks_ref : detail::gemm_i16_blocks_avx2;
  const int64_t blocks = w.blocks();
  const bool parallel = blocks > 1 && a.m * w.n * w.k >= (int64_t{1} << 18);
#pragma omp parallel if (parallel)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
    if (b0 < b1) fn(a, w, bias, y, ldy, b0, b1);
  }
}

}  // namespace outq::kernels
