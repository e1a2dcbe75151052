// Integer GEMM / GEMV for quantized linear layers (no LibTorch): y = x W^T with x quantized per
// token (or per tensor) to int8 / int4 codes and W packed to int8 / int4 codes per output channel
// or per group of input columns; int32 dot products, float32 output.
//
// Code spaces (any affine quantizer maps onto them exactly):
//   activations a' in int8 (int4 codes 0..15 are stored one per byte), x = sx * (a' - za)
//   weights     w' in uint8 (int4 codes 0..15, two per byte in the packed panel), w = sw * (w' - zw)
// so every output is
//   y[m, n] = sx[m] * sum_g sw[n, g] * ((D - zw[n, g] * A[m, g]) - za[m] * Wc[n, g]) + bias[n]
// with D = sum over group g of a' w' (int32, exact), A the group sum of a' (computed when
// quantizing) and Wc the group sum of (w' - zw) (computed when packing). D - zw A is exact in int32
// for K <= 65536; the float part is the same sequence of fused multiply-adds in every
// implementation (t = fma(-za, Wc, D - zw A); acc = fma(sw, t, acc); y = fma(sx, acc, bias)), so
// all of them agree bit for bit.
//
// Per-embedding-group (PEG) activations: the groups may be uneven (`bounds`, whole octets), the
// activation codes are gathered in the weights' permuted column order while quantizing, every
// group has its own static scale and zero point (sx_g, za_g), and the caller folds them into the
// weights: sw'[n, g] = sw[n] sx_g and bias'[n] = bias[n] - sum_g sw'[n, g] za_g Wc[n, g], so the
// kernels run with sx = 1, za = 0 and the same inner loops (see runtime/integer_runtime.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "outq/kernels/isa.h"

namespace outq::kernels {

/// Allocator of 64-byte aligned storage: packed weight rows start on cache lines (and AMX tile
/// rows, which load fastest from aligned addresses).
template <class T>
struct CacheAligned {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlign); }
  template <class U>
  bool operator==(const CacheAligned<U>&) const { return true; }
  template <class U>
  bool operator!=(const CacheAligned<U>&) const { return false; }
};

/// Weights packed for the kernels: column blocks of 16 output channels; inside a block, for each
/// quad of input columns, 16 x 4 bytes (channel-major) for int8, or for each octet of input
/// columns 16 x 4 bytes whose low nibbles hold columns 0..3 and high nibbles 4..7 of the octet.
struct PackedWeights {
  static constexpr int kVersion = 1;
  static constexpr int kBlock = 16;  ///< output channels per column block
  int version = kVersion;
  int64_t n = 0, k = 0;      ///< output channels, input columns
  int bits = 8;              ///< 8 or 4
  int64_t group_size = 0;    ///< input columns per group (K for per-channel quantization)
  std::vector<int64_t> bounds;  ///< uneven groups: column boundaries 0 = b_0 < ... < b_G = k (multiples of 8); empty = uniform
  int64_t k_padded = 0;      ///< K rounded up to 8 (zero codes in the padding)
  std::vector<uint8_t, CacheAligned<uint8_t>> data;  ///< 64-byte aligned; blocks are whole lines when K % 64 == 0
  std::vector<float> scale;  ///< (groups, n_blocks * 16), group-major so 16 channels load at once: sw
  std::vector<int32_t> zero; ///< same shape: zw in the uint8 code space
  std::vector<int32_t> sum;  ///< same shape: Wc, the sum of (w' - zw) over the group
  int32_t min_code = 0;      ///< the smallest w' of the real codes (the AVX2 int8 path's operands depend on it)

  int64_t groups() const { return bounds.empty() ? (k + group_size - 1) / group_size : static_cast<int64_t>(bounds.size()) - 1; }
  int64_t group_begin(int64_t g) const { return bounds.empty() ? g * group_size : bounds[g]; }
  int64_t group_end(int64_t g) const { return bounds.empty() ? std::min(k, (g + 1) * group_size) : bounds[g + 1]; }
  int64_t blocks() const { return (n + kBlock - 1) / kBlock; }
  int64_t channels() const { return blocks() * kBlock; }  ///< n padded to whole blocks
  /// Index of (channel c, group g) in scale / zero / sum.
  int64_t at(int64_t c, int64_t g) const { return g * channels() + c; }
  int64_t block_bytes() const { return kBlock * k_padded * bits / 8; }
  size_t bytes() const { return data.size() + 4 * (scale.size() + zero.size() + sum.size()); }
};

/// Packs weight codes `codes` (n x k, row-major, values in [qmin, qmax] of a `bits`-bit container:
/// 2- and 3-bit codes fit the 4-bit container, 5- to 7-bit ones the 8-bit one;
/// signed [-2^(b-1), 2^(b-1)-1] when `symmetric`, else unsigned [0, 2^b - 1]) with float scales
/// and (asymmetric) integer zero points per (channel, group): x = scale * (code - zero).
/// `group_size` 0 means one group per channel. Checks every argument (outq::Error).
PackedWeights pack_weights(const int32_t* codes, int64_t n, int64_t k, int bits, bool symmetric, int64_t group_size,
                           const float* scale, const int32_t* zero);
/// The same with uneven groups: column boundaries `bounds` (0, ..., k; increasing multiples of 8),
/// scale and zero per (channel, group) as above.
PackedWeights pack_weights(const int32_t* codes, int64_t n, int64_t k, int bits, bool symmetric,
                           const std::vector<int64_t>& bounds, const float* scale, const int32_t* zero);

/// Activation quantizer of a linear input.
struct ActivationFormat {
  ActivationFormat(int bits_ = 8, bool symmetric_ = false, bool dynamic_ = true, float static_scale_ = 1,
                   float static_zero_ = 0)
      : bits(bits_), symmetric(symmetric_), dynamic(dynamic_), static_scale(static_scale_), static_zero(static_zero_) {}
  int bits = 8;             ///< 2..8 (codes are int8 in any case; 8 and 4 are the usual ones)
  bool symmetric = false;   ///< symmetric codes [-2^(b-1), 2^(b-1)-1], else [0, 2^b - 1] with a zero point
  bool dynamic = true;      ///< per-token range from each row; else the static per-tensor range below
  float static_scale = 1;   ///< static: x = scale * (q - zero), q on the grid above
  float static_zero = 0;    ///< static: may be fractional (learned clips); rounding is x / scale + zero
  /// Static per-embedding-group activations (when `peg_bounds` is not empty; `dynamic` must be
  /// false): code column i quantizes x[gather[i]] (empty gather = identity) with the static scale
  /// and zero of the group [peg_bounds[g], peg_bounds[g + 1]) that holds i. The rows then get
  /// scale 1 and zero 0: the group parameters belong in the weights (see the note at the top).
  std::vector<int64_t> peg_bounds, gather;
  std::vector<float> peg_scale, peg_zero;  ///< per group: x = scale * (q - zero), q on the grid above
};

/// Quantized activations: int8 codes (m x k_padded), per-row scale and zero in the int8 code space,
/// and per-row group sums of the codes for the weight groups (`group_size`).
struct QuantizedActivations {
  int64_t m = 0, k = 0, k_padded = 0, group_size = 0;
  std::vector<int64_t> bounds;   ///< uneven groups (PEG): as PackedWeights::bounds
  std::vector<int8_t, CacheAligned<int8_t>> codes;  ///< 64-byte aligned rows when k_padded % 64 == 0
  std::vector<float> scale;      ///< sx per row
  std::vector<float> zero;       ///< za per row (fractional only for static learned zero points)
  std::vector<int32_t> group_sum;///< (m, groups)
  int code_bound = 128;          ///< max |a'| over the codes (the AVX2 int4 path's int16 run length depends on it)
  int64_t groups() const { return bounds.empty() ? (k + group_size - 1) / group_size : static_cast<int64_t>(bounds.size()) - 1; }
};

/// Quantizes x (m x k, row stride ldx) with ties-to-even rounding of x / scale + zero, clamped
/// to the grid, into `out` (reusing its buffers). `group_size` must be the weights' (PEG formats
/// take the groups from format.peg_bounds, which must be the weights' bounds). Vectorized with AVX2
/// on every ISA but ref; the codes are the same on each.
void quantize_activations(const float* x, int64_t m, int64_t k, int64_t ldx, const ActivationFormat& format,
                          int64_t group_size, QuantizedActivations* out, Isa isa = isa_active());

struct GemmArguments {
  const QuantizedActivations* a = nullptr;
  const PackedWeights* w = nullptr;
  const float* bias = nullptr;  ///< n values or null
  float* y = nullptr;           ///< m x n, row stride ldy
  int64_t ldy = 0;
};

/// Empty when the kernels can run these arguments, else what is wrong and what was expected.
std::string can_implement(const GemmArguments& args);

/// y = dequant(a) dequant(w)^T + bias on the given ISA (default: the active one), over all
/// threads of the OpenMP team. Throws outq::Error when can_implement fails.
void gemm(const GemmArguments& args, Isa isa = isa_active());

}  // namespace outq::kernels
