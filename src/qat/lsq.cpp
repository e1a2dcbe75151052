// LSQ / LSQ+ fake quantization (learned step and offset) as an autograd function.
#include "outq/qat/lsq.h"

#include <cmath>

#include "outq/core/error.h"

namespace outq {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_common(const torch::Tensor& x, const torch::Tensor& step, int bits, double grad_scale) {
  OUTQ_CHECK(bits >= 2 && bits <= 8, "lsq: expected bits in 2..8, found ", bits);
  OUTQ_CHECK(x.scalar_type() == torch::kFloat32, "lsq: expected float32 input, found ", x.scalar_type());
  OUTQ_CHECK(step.scalar_type() == torch::kFloat32, "lsq: expected a float32 step, found ", step.scalar_type());
  OUTQ_CHECK(std::isfinite(grad_scale) && grad_scale > 0, "lsq: expected a finite gradient scale > 0, found ", grad_scale);
  torch::NoGradGuard no_grad;
  const auto s = step.detach();
  OUTQ_CHECK(torch::isfinite(s).all().item<bool>() && (s > 0).all().item<bool>(), "lsq: expected finite steps > 0, found ",
             s.numel() == 1 ? std::to_string(s.item<double>()) : "a step that is not");
}

// Sums a per-element gradient (float64) to the shape of the parameter it belongs to.
torch::Tensor reduce_to(const torch::Tensor& g64, const torch::Tensor& like, double scale) {
  const auto shape = like.sizes();
  const auto summed = like.numel() == 1 ? g64.sum() : g64.sum_to_size(shape);
  return (summed * scale).to(like.scalar_type()).reshape(shape);
}

class LsqQuant : public torch::autograd::Function<LsqQuant> {
 public:
  // !has_offset: symmetric (z = 0, `offset` unused, no offset gradient).
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& step,
                               const torch::Tensor& offset, int64_t qmin, int64_t qmax, double grad_scale, bool has_offset) {
    const auto z = has_offset ? torch::round(offset.reshape({})) : torch::zeros({}, x.options());  // half to even
    const auto grid = torch::round(has_offset ? x / step + z : x / step);
    const auto q = torch::clamp(grid, static_cast<double>(qmin), static_cast<double>(qmax));
    ctx->save_for_backward({x, step, z, grid});
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    ctx->saved_data["grad_scale"] = grad_scale;
    ctx->saved_data["has_offset"] = has_offset;
    if (has_offset) ctx->saved_data["offset_sizes"] = offset.sizes().vec();
    return has_offset ? (q - z) * step : q * step;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &s = saved[1], &z = saved[2], &grid = saved[3];
    const double qmin = static_cast<double>(ctx->saved_data["qmin"].toInt());
    const double qmax = static_cast<double>(ctx->saved_data["qmax"].toInt());
    const double scale = ctx->saved_data["grad_scale"].toDouble();
    const auto& g = grad_out[0];
    const auto below = grid < qmin, above = grid > qmax, outside = below | above;
    const auto gx = g * (~outside).to(g.scalar_type());
    // Per element dx^/dstep in float32, the products and sums in float64.
    const auto dstep = torch::where(outside, torch::where(above, qmax - z, qmin - z), (grid - z) - x / s);
    const auto g64 = g.to(torch::kFloat64);
    const auto gstep = reduce_to(g64 * dstep.to(torch::kFloat64), s, scale);
    torch::Tensor goffset;
    if (ctx->saved_data["has_offset"].toBool()) {
      const auto shape = ctx->saved_data["offset_sizes"].toIntVector();
      goffset = (-(g64 * outside.to(torch::kFloat64)).sum() * s.to(torch::kFloat64) * scale).to(s.scalar_type()).reshape(shape);
    }
    return {gx, gstep, goffset, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor lsq_quant(const torch::Tensor& x, const torch::Tensor& step, const torch::Tensor& offset, int bits,
                        double grad_scale) {
  check_common(x, step, bits, grad_scale);
  OUTQ_CHECK(step.numel() == 1 && offset.defined() && offset.numel() == 1, "lsq: expected a scalar step and offset, found ",
             step.numel(), " and ", offset.defined() ? offset.numel() : 0, " elements");
  const double o = offset.item<double>();
  OUTQ_CHECK(std::isfinite(o), "lsq: expected a finite offset, found ", o);
  return LsqQuant::apply(x, step.reshape({}), offset, 0, (int64_t{1} << bits) - 1, grad_scale, true);
}

torch::Tensor lsq_quant_symmetric(const torch::Tensor& x, const torch::Tensor& step, int bits, double grad_scale) {
  check_common(x, step, bits, grad_scale);
  const int64_t half = int64_t{1} << (bits - 1);
  return LsqQuant::apply(x, step, torch::zeros({}, step.options()), -half, half - 1, grad_scale, false);
}

double lsq_grad_scale(int64_t numel, int64_t qmax) {
  OUTQ_CHECK(numel > 0 && qmax > 0, "lsq gradient scale: expected numel > 0 and qmax > 0, found ", numel, " and ", qmax);
  return 1.0 / std::sqrt(static_cast<double>(numel) * static_cast<double>(qmax));
}

}  // namespace outq
