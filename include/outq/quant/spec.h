// Quantizer specifications (data, no LibTorch): bit width, symmetric or asymmetric grid,
// granularity, range estimator, static or dynamic. Notation follows the methods spec: b bits,
// asymmetric codes q in [0, 2^b - 1] with x^ = scale * (q - zero); symmetric codes
// q in [-2^(b-1), 2^(b-1) - 1] with zero = 0 and scale = max|x| / (2^(b-1) - 1). Rounding is
// ties-to-even everywhere.
#pragma once

#include <cstdint>
#include <string>

namespace outq {

enum class Granularity {
  kTensor,   ///< one scale for the whole tensor
  kToken,    ///< activations (tokens, C): one per row
  kChannel,  ///< weights (out, in): one per output row
  kGroup,    ///< weights: one per group of `group_size` consecutive input columns of a row
  kPeg,      ///< activations: one per group of channels (per-embedding-group, K groups)
};

enum class RangeMethod {
  kMinMax,      ///< observed minimum and maximum
  kPercentile,  ///< the `percentile` and 100 - `percentile` quantiles (asymmetric) or of |x|
  kMse,         ///< the clipping range minimising the quantization MSE (grid search)
  kLearned,     ///< learned clip values (QAT)
};

struct QuantSpec {
  int bits = 16;  ///< 2..8, or 16 = not quantized (float) unless `integer16`
  bool symmetric = false;
  Granularity granularity = Granularity::kTensor;
  int group_size = 0;      ///< kGroup: input columns per group
  int peg_groups = 0;      ///< kPeg: number of channel groups K
  bool peg_permute = false;  ///< kPeg: groups formed after the range-based channel permutation
  bool peg_shared = false;   ///< kPeg + permute: one permutation per layer for its residual-stream tensors
  bool integer16 = false;    ///< activations with bits = 16: 16-bit integer codes (mixed precision)
  RangeMethod range = RangeMethod::kMinMax;
  double percentile = 99.99;
  bool dynamic = false;    ///< recompute the range from every tensor (else calibrated once)

  bool enabled() const { return bits < 16 || integer16; }
  int64_t qmin() const { return symmetric ? -(int64_t{1} << (bits - 1)) : 0; }
  int64_t qmax() const { return symmetric ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1; }
  /// Throws outq::Error naming `where` if the combination is impossible.
  void validate(const std::string& where, bool is_weight) const;
  /// Short description: "int4 asym per-token dynamic", "off".
  std::string describe() const;
};

const char* granularity_name(Granularity g);
Granularity granularity_parse(const std::string& name, const std::string& where);
const char* range_name(RangeMethod r);
RangeMethod range_parse(const std::string& name, const std::string& where);

}  // namespace outq
