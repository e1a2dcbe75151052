// GPTQ and RTN weight quantization (see gptq.h).
#include "outq/ptq/gptq.h"

#include <fmt/format.h>

#include "outq/core/error.h"

namespace outq {
namespace {

// Row-wise parameters (rows, 1, 1) of a column slice w (rows, k) under the weight spec's range
// method, treating the slice as one group per row.
QParams row_params(const torch::Tensor& w, const QuantSpec& spec) {
  QuantSpec s = spec;
  s.granularity = Granularity::kChannel;
  auto [lo, hi] = observe_range(w, s);
  return qparams_from_range(lo, hi, s);
}

}  // namespace

void HessianAccumulator::add(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  const auto m = x.detach().reshape({-1, x.size(-1)}).to(torch::kFloat32);
  const auto xtx = torch::matmul(m.t(), m);
  sum = sum.defined() ? sum + xtx : xtx;
  tokens += m.size(0);
}

torch::Tensor HessianAccumulator::hessian() const {
  OUTQ_ASSERT(tokens > 0, "Hessian of no calibration tokens");
  return sum * (2.0 / static_cast<double>(tokens));
}

QuantizedWeight rtn_quantize(const torch::Tensor& weight, const QuantSpec& spec) {
  torch::NoGradGuard no_grad;
  const auto w = weight.detach().to(torch::kFloat32);
  auto [lo, hi] = observe_range(w, spec);
  QuantizedWeight q;
  q.qp = qparams_from_range(lo, hi, spec);
  q.codes = quantize(w, q.qp, spec);
  q.dequantized = dequantize(q.codes, q.qp, spec);
  return q;
}

QuantizedWeight gptq_quantize(const torch::Tensor& weight, const torch::Tensor& hessian, const QuantSpec& spec,
                              const GptqOptions& o, const std::string& name) {
  torch::NoGradGuard no_grad;
  OUTQ_CHECK(spec.granularity == Granularity::kChannel || spec.granularity == Granularity::kGroup ||
                 spec.granularity == Granularity::kTensor,
             name, ": GPTQ weight granularity: expected channel, group or tensor, found ", granularity_name(spec.granularity));
  auto W = weight.detach().to(torch::kFloat64).clone();  // (r, c); the sweep runs in float64
  const int64_t rows = W.size(0), cols = W.size(1);
  OUTQ_CHECK(hessian.size(0) == cols && hessian.size(1) == cols, name, ": Hessian shape: expected (", cols, ", ", cols,
             "), found ", hessian.sizes());
  const bool grouped = spec.granularity == Granularity::kGroup;
  const int64_t g = grouped ? spec.group_size : cols;
  OUTQ_CHECK(cols % g == 0, name, ": group_size: expected a divisor of the input width ", cols, ", found ", g);
  const int64_t n_groups = cols / g;

  auto H = hessian.to(torch::kFloat64).clone();
  const auto dead = H.diagonal() == 0;
  H.diagonal().masked_fill_(dead, 1.0);
  W.index_put_({torch::indexing::Slice(), dead}, 0.0);

  // Quantizer parameters that are fixed before the sweep: per tensor, per channel, or static groups.
  torch::Tensor fixed_scale, fixed_zero;  // (r, n_groups)
  const bool static_groups = grouped && o.act_order;
  if (spec.granularity == Granularity::kTensor) {
    auto [lo, hi] = observe_range(W, spec);
    const QParams qp = qparams_from_range(lo, hi, spec);
    fixed_scale = qp.scale.reshape({1, 1}).expand({rows, 1}).contiguous();
    fixed_zero = qp.zero.reshape({1, 1}).expand({rows, 1}).contiguous();
  } else if (!grouped || static_groups) {
    fixed_scale = torch::empty({rows, n_groups});
    fixed_zero = torch::empty({rows, n_groups});
    for (int64_t k = 0; k < n_groups; ++k) {
      const QParams qp = row_params(W.slice(1, k * g, (k + 1) * g), spec);
      fixed_scale.select(1, k).copy_(qp.scale.flatten());
      fixed_zero.select(1, k).copy_(qp.zero.flatten());
    }
  }
  auto scale = fixed_scale.defined() ? fixed_scale.clone() : torch::empty({rows, n_groups});
  auto zero = fixed_zero.defined() ? fixed_zero.clone() : torch::empty({rows, n_groups});

  torch::Tensor perm;
  if (o.act_order) {
    perm = torch::argsort(H.diagonal(), 0, /*descending=*/true);
    W = W.index_select(1, perm);
    H = H.index_select(0, perm).index_select(1, perm);
  }
  H.diagonal().add_(o.damp * H.diagonal().mean().item<double>());
  torch::Tensor U;
  try {
    const auto L = torch::linalg::cholesky(H);
    U = torch::linalg::cholesky(torch::cholesky_inverse(L)).t().contiguous();  // upper, float64
  } catch (const c10::Error&) {
    throw Error(fmt::format("{}: GPTQ: the input Hessian is not positive definite after dampening with {} of its mean "
                            "diagonal; expected a positive definite matrix: raise gptq.damp (e.g. to 0.1) or use more "
                            "calibration windows", name, o.damp));
  }
  if (!torch::isfinite(U).all().item<bool>()) {
    throw Error(fmt::format("{}: GPTQ: the inverse Hessian is not finite; raise gptq.damp (found {})", name, o.damp));
  }

  const double qmin = static_cast<double>(spec.qmin()), qmax = static_cast<double>(spec.qmax());
  auto Q = torch::zeros_like(W);
  auto codes = torch::zeros({rows, cols}, torch::kInt32);
  int64_t block = std::max<int64_t>(1, o.block_size);
  if (grouped && !static_groups) block = std::max<int64_t>(g, block / g * g);
  for (int64_t i1 = 0; i1 < cols; i1 += block) {
    const int64_t i2 = std::min(i1 + block, cols), count = i2 - i1;
    auto W1 = W.slice(1, i1, i2).clone();
    auto Err1 = torch::zeros_like(W1);
    const auto U1 = U.slice(0, i1, i2).slice(1, i1, i2);
    torch::Tensor s, z;  // (r) parameters for the current column
    for (int64_t i = 0; i < count; ++i) {
      const int64_t col = i1 + i;
      const int64_t orig = perm.defined() ? perm[col].item<int64_t>() : col;
      const int64_t group = orig / g;
      if (grouped && !static_groups && col % g == 0) {
        const QParams qp = row_params(W1.slice(1, i, i + g), spec);  // the fully updated columns of this group
        scale.select(1, group).copy_(qp.scale.flatten());
        zero.select(1, group).copy_(qp.zero.flatten());
      }
      s = scale.select(1, spec.granularity == Granularity::kTensor ? 0 : group);
      z = zero.select(1, spec.granularity == Granularity::kTensor ? 0 : group);
      const auto w = W1.select(1, i);
      const auto q_int = torch::clamp(torch::round(w / s) + z, qmin, qmax);
      const auto q = (q_int - z) * s;
      codes.select(1, col).copy_(q_int.to(torch::kInt32));
      Q.select(1, col).copy_(q);
      const auto err = (w - q) / U1[i][i];
      W1.slice(1, i).sub_(torch::outer(err, U1[i].slice(0, i)));
      Err1.select(1, i).copy_(err);
    }
    if (i2 < cols) W.slice(1, i2).sub_(torch::matmul(Err1, U.slice(0, i1, i2).slice(1, i2)));
  }
  if (perm.defined()) {
    const auto inv = torch::argsort(perm);
    Q = Q.index_select(1, inv);
    codes = codes.index_select(1, inv);
  }
  QuantizedWeight out;
  out.dequantized = Q.to(torch::kFloat32);
  out.codes = codes;
  if (spec.granularity == Granularity::kTensor) {
    out.qp = {scale.slice(0, 0, 1).reshape({1, 1, 1}), zero.slice(0, 0, 1).reshape({1, 1, 1})};
  } else {
    out.qp = {scale.unsqueeze(-1), zero.unsqueeze(-1)};
  }
  return out;
}

}  // namespace outq
