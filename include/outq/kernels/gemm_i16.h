// Integer GEMM with 16-bit activation codes and 8-bit (or narrower) weight codes: the 16-bit
// integer activations of mixed-precision recipes (the paper's "16-bit" tensors are a 16-bit uniform
// integer quantizer, not float16). No LibTorch.
//
// Code spaces: activations a' in int16 (asymmetric codes 0..65535 are stored shifted by -32768,
// symmetric ones as they are), x = sx * (a' - za) per row; weights as centred int16 values
// w'' = w' - zw (per channel), w = sw * w''. Every output is
//   y[m, n] = (float)(sx[m] * sw[n] * (D - za[m] * Wc[n])) + bias[n]   (the product in double)
// with D = sum_k a' w'' exact in int64 and Wc = sum_k w''. The vector path multiplies pairs with
// vpmaddwd into int32 lanes: |a' w''| <= 32768 * 255 < 2^23, so 128 pair steps (256 columns) stay
// below 2^31 (256 * 32768 * 255 = 2139095040 < 2147483647); every 256 columns the lanes are
// widened into int64. The epilogue is one scalar function for all paths, so they agree bit for bit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "outq/kernels/gemm.h"
#include "outq/kernels/isa.h"

namespace outq::kernels {

/// Weights for the int16-activation kernels: blocks of 8 output channels; inside a block, for each
/// pair of input columns, 8 x 2 int16 values (channel-major), centred (w' - zw); K padded to even.
struct PackedWeights16 {
  static constexpr int kBlock = 8;
  int64_t n = 0, k = 0, k_padded = 0;
  std::vector<int16_t, CacheAligned<int16_t>> data;
  std::vector<float> scale;   ///< sw per channel (n_blocks * 8, zero past n)
  std::vector<int64_t> sum;   ///< Wc per channel
  int64_t blocks() const { return (n + kBlock - 1) / kBlock; }
  size_t bytes() const { return data.size() * 2 + scale.size() * 4 + sum.size() * 8; }
};

/// Packs per-channel (or per-tensor, repeated) weight codes of 2..8 bits (signed when `symmetric`,
/// else unsigned with integer zero points) with one scale and zero per channel. Checks its arguments.
PackedWeights16 pack_weights16(const int32_t* codes, int64_t n, int64_t k, int bits, bool symmetric, const float* scale,
                               const int32_t* zero);

struct Activations16 {
  int64_t m = 0, k = 0, k_padded = 0;
  std::vector<int16_t, CacheAligned<int16_t>> codes;  ///< (m, k_padded), zero padding
  std::vector<float> scale, zero;                      ///< per row: sx, za (in the int16 code space)
};

/// Quantizes x (m x k, row stride ldx) to 16-bit codes: per token from each row's range when
/// format.dynamic, else with the static scale and zero; ties-to-even rounding of x / scale + zero
/// in float32 as outq's quantizer. format.bits is ignored (16). NaN or infinite input is an error.
void quantize_activations16(const float* x, int64_t m, int64_t k, int64_t ldx, const ActivationFormat& format,
                            Activations16* out);

/// "" when gemm_i16 can run these operands, else what is wrong.
std::string can_implement16(const Activations16& a, const PackedWeights16& w, int64_t ldy);

/// y (m x n, row stride ldy) = dequant(a) dequant(w)^T + bias (n values or null), on `isa`
/// (AVX2 and above run the AVX2 path). Throws outq::Error when can_implement16 fails.
void gemm_i16(const Activations16& a, const PackedWeights16& w, const float* bias, float* y, int64_t ldy,
              Isa isa = isa_active());

}  // namespace outq::kernels
