// QuantSpec validation, names and descriptions.
#include "outq/quant/spec.h"

#include <fmt/format.h>

#include "outq/core/error.h"

namespace outq {
namespace {

struct GranularityName {
  Granularity g;
  const char* name;
};
constexpr GranularityName kGranularities[] = {{Granularity::kTensor, "tensor"}, {Granularity::kToken, "token"},
                                              {Granularity::kChannel, "channel"}, {Granularity::kGroup, "group"},
                                              {Granularity::kPeg, "peg"}};
struct RangeName {
  RangeMethod r;
  const char* name;
};
constexpr RangeName kRanges[] = {{RangeMethod::kMinMax, "minmax"}, {RangeMethod::kPercentile, "percentile"},
                                 {RangeMethod::kMse, "mse"}, {RangeMethod::kLearned, "learned"}};

}  // namespace

const char* granularity_name(Granularity g) {
  for (const auto& e : kGranularities)
    if (e.g == g) return e.name;
  OUTQ_ASSERT(false, "unknown granularity");
}

Granularity granularity_parse(const std::string& name, const std::string& where) {
  for (const auto& e : kGranularities)
    if (name == e.name) return e.g;
  fail_mismatch(where, "granularity", "one of tensor, token, channel, group, peg", "\"" + name + "\"");
}

const char* range_name(RangeMethod r) {
  for (const auto& e : kRanges)
    if (e.r == r) return e.name;
  OUTQ_ASSERT(false, "unknown range method");
}

RangeMethod range_parse(const std::string& name, const std::string& where) {
  for (const auto& e : kRanges)
    if (name == e.name) return e.r;
  fail_mismatch(where, "range", "one of minmax, percentile, mse, learned", "\"" + name + "\"");
}

void QuantSpec::validate(const std::string& where, bool is_weight) const {
  if (!(bits == 16 || (bits >= 2 && bits <= 8))) {
    fail_mismatch(where, "bits",
                  is_weight ? "2..8, or 16 for no quantization"
                            : "2..8, or 16 for no quantization (16-bit integer codes with integer = true)",
                  std::to_string(bits));
  }
  if (integer16 && (is_weight || bits != 16)) {
    fail_mismatch(where, "integer", is_weight ? "absent for weights (16-bit integer codes are for activations)"
                                              : "true only with bits = 16 (lower widths are integer already)",
                  fmt::format("true with bits = {}", bits));
  }
  if (!enabled()) return;
  if (is_weight) {
    if (granularity == Granularity::kToken || granularity == Granularity::kPeg) {
      fail_mismatch(where, "granularity", "tensor, channel or group for weights", granularity_name(granularity));
    }
    if (dynamic) fail_mismatch(where, "dynamic", "false for weights (they are quantized once)", "true");
  } else {
    if (granularity == Granularity::kChannel || granularity == Granularity::kGroup) {
      fail_mismatch(where, "granularity", "tensor, token or peg for activations", granularity_name(granularity));
    }
    if (granularity == Granularity::kToken && !dynamic) {
      fail_mismatch(where, "dynamic", "true for per-token activations (tokens differ at run time)", "false");
    }
  }
  // A setting that would change nothing is an error, not silently ignored.
  if (group_size != 0 && granularity != Granularity::kGroup) {
    fail_mismatch(where, "group_size", "only with granularity = \"group\"",
                  fmt::format("{} with granularity = \"{}\"", group_size, granularity_name(granularity)));
  }
  if (peg_groups != 0 && granularity != Granularity::kPeg) {
    fail_mismatch(where, "peg_groups", "only with granularity = \"peg\"",
                  fmt::format("{} with granularity = \"{}\"", peg_groups, granularity_name(granularity)));
  }
  if (granularity == Granularity::kGroup && group_size < 1) {
    fail_mismatch(where, "group_size", "a positive number of input columns per group", std::to_string(group_size));
  }
  if (granularity == Granularity::kPeg && peg_groups < 1) {
    fail_mismatch(where, "peg_groups", "a positive number of channel groups", std::to_string(peg_groups));
  }
  if ((peg_permute || peg_shared) && granularity != Granularity::kPeg) {
    fail_mismatch(where, peg_permute ? "peg_permute" : "peg_shared", "only with granularity = \"peg\"",
                  granularity_name(granularity));
  }
  if (peg_shared && !peg_permute) {
    fail_mismatch(where, "peg_shared", "only with peg_permute = true (it shares the permutation)", "peg_permute = false");
  }
  if (range == RangeMethod::kLearned) {
    if (is_weight) fail_mismatch(where, "range", "minmax, percentile or mse for weights", "learned");
    if (granularity != Granularity::kTensor || dynamic || symmetric) {
      fail_mismatch(where, "range = \"learned\"",
                    "static asymmetric per-tensor activations (granularity = \"tensor\", dynamic = false, symmetric = false)",
                    describe());
    }
  }
  if (range == RangeMethod::kPercentile && !(percentile > 50 && percentile <= 100)) {
    fail_mismatch(where, "percentile", "a value in (50, 100]", fmt::format("{}", percentile));
  }
}

std::string QuantSpec::describe() const {
  if (!enabled()) return "off";
  std::string g = granularity_name(granularity);
  if (granularity == Granularity::kGroup) g = fmt::format("group{}", group_size);
  if (granularity == Granularity::kPeg)
    g = fmt::format("peg{}{}", peg_groups, peg_shared ? "+shared-perm" : peg_permute ? "+perm" : "");
  std::string r = range_name(range);
  if (range == RangeMethod::kPercentile) r = fmt::format("p{}", percentile);
  return fmt::format("int{} {} per-{} {}{}", bits, symmetric ? "sym" : "asym", g, r, dynamic ? " dynamic" : "");
}

}  // namespace outq
