// Quantizer math (see quantizer.h): grouped views, range estimators, codes, fake quant with STE.
#include "outq/quant/quantizer.h"

#include <cmath>
#include <tuple>
#include <vector>

#include "outq/core/error.h"

namespace outq {
namespace {

int64_t last_dim(const torch::Tensor& x) { return x.dim() == 0 ? 1 : x.size(-1); }

// Fake-quantized grouped values and the inside-the-clipping-range mask, without gradient.
// The fake-quantized values and, when `with_inside`, the mask of values within the range (the
// straight-through estimator's; left undefined otherwise, as inference does not need it).
std::pair<torch::Tensor, torch::Tensor> fake_quant_grouped(const torch::Tensor& g, const QParams& qp, const QuantSpec& spec,
                                                           bool with_inside) {
  torch::NoGradGuard no_grad;
  const double qmin = static_cast<double>(spec.qmin()), qmax = static_cast<double>(spec.qmax());
  auto q = torch::clamp(torch::round(g / qp.scale + qp.zero), qmin, qmax);
  auto out = (q - qp.zero) * qp.scale;
  if (!with_inside) return {out, torch::Tensor()};
  auto inside = (g >= (qmin - qp.zero) * qp.scale) & (g <= (qmax - qp.zero) * qp.scale);
  return {out, inside};
}

}  // namespace

std::vector<int64_t> peg_bounds(int64_t channels, int64_t groups) {
  OUTQ_CHECK(groups >= 1 && groups <= channels, "per-embedding-group quantization: peg_groups: expected 1..", channels,
             " (the channel count), found ", groups);
  // Equal groups when K divides C; else balanced groups of whole octets (so the integer kernels,
  // which step over 8 columns, can split the product at the group boundaries); else balanced
  // groups of single channels.
  const int64_t unit = channels % groups != 0 && channels % 8 == 0 && channels / 8 >= groups ? 8 : 1;
  std::vector<int64_t> b(groups + 1);
  for (int64_t k = 0; k <= groups; ++k) b[k] = unit * (k * (channels / unit) / groups);
  return b;
}

torch::Tensor range_permutation(const torch::Tensor& lo, const torch::Tensor& hi) {
  const auto r = (hi.to(torch::kFloat64) - lo.to(torch::kFloat64)).flatten();
  return torch::argsort(r, /*stable=*/true, /*dim=*/0, /*descending=*/false);
}

namespace {

bool peg_equal_groups(int64_t C, int64_t K) { return K >= 1 && C % K == 0; }

// (rows, C) matrix of x with the channels in permuted order.
torch::Tensor peg_matrix(const torch::Tensor& x, const torch::Tensor& perm) {
  auto m = x.reshape({-1, last_dim(x)});
  return perm.defined() ? m.index_select(1, perm) : m;
}

torch::Tensor peg_unpermute(const torch::Tensor& m, const torch::IntArrayRef& shape, const torch::Tensor& perm) {
  return (perm.defined() ? m.index_select(1, torch::argsort(perm)) : m).reshape(shape);
}

// Per-group parameters (1, K, 1) spread over the permuted channels: (1, C).
torch::Tensor per_channel(const torch::Tensor& p, const std::vector<int64_t>& b) {
  std::vector<int64_t> sizes(b.size() - 1);
  for (size_t k = 0; k + 1 < b.size(); ++k) sizes[k] = b[k + 1] - b[k];
  return p.reshape({-1}).repeat_interleave(torch::tensor(sizes), 0).reshape({1, -1});
}

}  // namespace

torch::Tensor grouped_view(const torch::Tensor& x, const QuantSpec& spec, const torch::Tensor& perm) {
  const int64_t C = last_dim(x);
  switch (spec.granularity) {
    case Granularity::kTensor:
      return x.reshape({1, 1, -1});
    case Granularity::kToken:
    case Granularity::kChannel:
      return x.reshape({-1, 1, C});
    case Granularity::kGroup: {
      OUTQ_CHECK(C % spec.group_size == 0, "quantizer group_size: expected a divisor of the input width ", C,
                 ", found ", spec.group_size);
      return x.reshape({-1, C / spec.group_size, spec.group_size});
    }
    case Granularity::kPeg: {
      const int64_t K = spec.peg_groups;
      OUTQ_CHECK(peg_equal_groups(C, K), "quantizer grouped view of peg_groups: expected a divisor of the channel count ",
                 C, ", found ", K, " (uneven groups have no grouped view)");
      return peg_matrix(x, perm).reshape({-1, K, C / K}).permute({1, 0, 2}).reshape({1, K, -1});
    }
  }
  OUTQ_ASSERT(false, "unhandled granularity");
}

torch::Tensor ungrouped(const torch::Tensor& g, const torch::IntArrayRef& shape, const QuantSpec& spec,
                        const torch::Tensor& perm) {
  if (spec.granularity != Granularity::kPeg) return g.reshape(shape);
  const int64_t C = shape.empty() ? 1 : shape.back();
  const int64_t K = spec.peg_groups;
  return peg_unpermute(g.reshape({K, -1, C / K}).permute({1, 0, 2}).reshape({-1, C}), shape, perm);
}

namespace {

// The range estimator on a grouped view (rows, groups, items): one (lo, hi) per (row, group).
std::pair<torch::Tensor, torch::Tensor> range_of_grouped(const torch::Tensor& g, const QuantSpec& spec) {
  const int64_t n = g.size(-1);
  torch::Tensor lo, hi;
  switch (spec.range) {
    case RangeMethod::kMinMax:
    case RangeMethod::kLearned:  // not estimated from data (clips.json gives them); min-max if asked
      lo = g.amin(-1, true);
      hi = g.amax(-1, true);
      break;
    case RangeMethod::kPercentile: {
      const int64_t k_hi = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(spec.percentile / 100.0 * n - 1e-9)), 1, n);
      if (spec.symmetric) {
        hi = std::get<0>(g.abs().kthvalue(k_hi, -1, true));
        lo = -hi;
      } else {
        hi = std::get<0>(g.kthvalue(k_hi, -1, true));
        lo = std::get<0>(g.kthvalue(n - k_hi + 1, -1, true));
      }
      break;
    }
    case RangeMethod::kMse: {
      // Shrink the min-max range by factors 1.00, 0.98, ..., 0.30 and keep, per (row, group),
      // the factor with the smallest squared quantization error.
      const auto lo0 = torch::clamp_max(g.amin(-1, true), 0.0), hi0 = torch::clamp_min(g.amax(-1, true), 0.0);
      torch::Tensor best_err, best_f;
      for (int i = 0; i <= 35; ++i) {
        const double f = 1.0 - 0.02 * i;
        const QParams qp = qparams_from_range(lo0 * f, hi0 * f, spec);
        const auto err = (fake_quant_grouped(g, qp, spec, false).first - g).pow(2).sum(-1, true);
        if (i == 0) {
          best_err = err;
          best_f = torch::ones_like(err);
        } else {
          const auto better = err < best_err;
          best_err = torch::where(better, err, best_err);
          best_f = torch::where(better, torch::full_like(err, f), best_f);
        }
      }
      lo = lo0 * best_f;
      hi = hi0 * best_f;
      break;
    }
  }
  return {lo, hi};
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> observe_range(const torch::Tensor& x, const QuantSpec& spec,
                                                      const torch::Tensor& perm) {
  torch::NoGradGuard no_grad;
  const auto xf = x.detach().to(torch::kFloat32);
  torch::Tensor lo, hi;
  const int64_t C = last_dim(x);
  if (spec.granularity == Granularity::kPeg && !peg_equal_groups(C, spec.peg_groups)) {
    // Uneven groups: each group's channels on their own (K is small whenever it does not divide C).
    const auto m = peg_matrix(xf, perm);
    const auto b = peg_bounds(C, spec.peg_groups);
    std::vector<torch::Tensor> los, his;
    for (size_t k = 0; k + 1 < b.size(); ++k) {
      auto [l, h] = range_of_grouped(m.narrow(1, b[k], b[k + 1] - b[k]).reshape({1, 1, -1}), spec);
      los.push_back(l), his.push_back(h);
    }
    lo = torch::cat(los, 1), hi = torch::cat(his, 1);
  } else {
    std::tie(lo, hi) = range_of_grouped(grouped_view(xf, spec, perm), spec);
  }
  return {torch::clamp_max(lo, 0.0), torch::clamp_min(hi, 0.0)};
}

QParams qparams_from_range(const torch::Tensor& lo_in, const torch::Tensor& hi_in, const QuantSpec& spec) {
  torch::NoGradGuard no_grad;
  const auto lo = torch::clamp_max(lo_in.to(torch::kFloat32), 0.0), hi = torch::clamp_min(hi_in.to(torch::kFloat32), 0.0);
  QParams qp;
  if (spec.symmetric) {
    const double levels = static_cast<double>(spec.qmax());  // 2^(b-1) - 1
    qp.scale = torch::maximum(lo.abs(), hi) / levels;
    qp.scale = torch::where(qp.scale > 0, qp.scale, torch::ones_like(qp.scale));
    qp.zero = torch::zeros_like(qp.scale);
  } else {
    const double levels = static_cast<double>(spec.qmax() - spec.qmin());  // 2^b - 1
    qp.scale = (hi - lo) / levels;
    qp.scale = torch::where(qp.scale > 0, qp.scale, torch::ones_like(qp.scale));
    qp.zero = torch::clamp(torch::round(-lo / qp.scale), 0.0, levels);
  }
  return qp;
}

namespace {

// The view the elementwise quantizer works on, with parameters that broadcast over it: the
// grouped view, or for per-embedding-group specs the (rows, C) matrix of permuted channels with
// per-channel copies of the group parameters (even or uneven groups alike).
struct ElementView {
  torch::Tensor values;
  QParams qp;
};

ElementView element_view(const torch::Tensor& x, const QParams& qp, const QuantSpec& spec, const torch::Tensor& perm) {
  if (spec.granularity != Granularity::kPeg) return {grouped_view(x, spec, perm), qp};
  const int64_t C = last_dim(x);
  const auto b = peg_bounds(C, spec.peg_groups);
  OUTQ_CHECK(qp.scale.numel() == spec.peg_groups, "per-embedding-group quantizer: expected ", spec.peg_groups,
             " scales (one per group), found ", qp.scale.numel());
  return {peg_matrix(x, perm), {per_channel(qp.scale, b), per_channel(qp.zero, b)}};
}

torch::Tensor from_element_view(const torch::Tensor& v, const torch::IntArrayRef& shape, const QuantSpec& spec,
                                const torch::Tensor& perm) {
  return spec.granularity == Granularity::kPeg ? peg_unpermute(v, shape, perm) : ungrouped(v, shape, spec, perm);
}

}  // namespace

torch::Tensor quantize(const torch::Tensor& x, const QParams& qp, const QuantSpec& spec, const torch::Tensor& perm) {
  torch::NoGradGuard no_grad;
  const auto v = element_view(x.to(torch::kFloat32), qp, spec, perm);
  const auto q = torch::clamp(torch::round(v.values / v.qp.scale + v.qp.zero), static_cast<double>(spec.qmin()),
                              static_cast<double>(spec.qmax()));
  return from_element_view(q, x.sizes(), spec, perm).to(torch::kInt32);
}

torch::Tensor dequantize(const torch::Tensor& codes, const QParams& qp, const QuantSpec& spec, const torch::Tensor& perm) {
  torch::NoGradGuard no_grad;
  const auto v = element_view(codes.to(torch::kFloat32), qp, spec, perm);
  return from_element_view((v.values - v.qp.zero) * v.qp.scale, codes.sizes(), spec, perm);
}

torch::Tensor fake_quant(const torch::Tensor& x, const QParams& qp, const QuantSpec& spec, const torch::Tensor& perm) {
  if (!spec.enabled()) return x;
  const auto v = element_view(x, qp, spec, perm);
  auto [out, inside] = fake_quant_grouped(v.values, v.qp, spec, x.requires_grad());
  if (x.requires_grad()) out = out + (v.values - v.values.detach()) * inside;  // straight-through inside the range
  return from_element_view(out, x.sizes(), spec, perm);
}

torch::Tensor fake_quant_dynamic(const torch::Tensor& x, const QuantSpec& spec, const torch::Tensor& perm) {
  if (!spec.enabled()) return x;
  const auto [lo, hi] = observe_range(x, spec, perm);
  return fake_quant(x, qparams_from_range(lo, hi, spec), spec, perm);
}

}  // namespace outq
