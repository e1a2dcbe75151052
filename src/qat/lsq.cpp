// LSQ / LSQ+ fake quantization (learned step and offset) as an autograd function.
#include "outq/qat/lsq.h"

#include <cmath>

#include "outq/core/error.h"

namespace outq {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_args(const torch::Tensor& x, const torch::Tensor& step, const torch::Tensor& offset, int bits) {
  OUTQ_CHECK(bits >= 2 && bits <= 8, "lsq: expected bits in 2..8, found ", bits);
  OUTQ_CHECK(x.scalar_type() == torch::kFloat32, "lsq: expected float32 input, found ", x.scalar_type());
  OUTQ_CHECK(step.numel() == 1 && offset.numel() == 1, "lsq: expected a scalar step and offset, found ", step.numel(),
             " and ", offset.numel(), " elements");
  const double s = step.item<double>(), o = offset.item<double>();
  OUTQ_CHECK(std::isfinite(s) && s > 0, "lsq: expected a finite step > 0, found ", s);
  OUTQ_CHECK(std::isfinite(o), "lsq: expected a finite offset, found ", o);
}

class LsqQuant : public torch::autograd::Function<LsqQuant> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& step,
                               const torch::Tensor& offset, int64_t bits, double grad_scale) {
    const double levels = static_cast<double>((int64_t{1} << bits) - 1);
    const auto s = step.reshape({}), z = torch::round(offset.reshape({}));  // torch::round: half to even
    const auto r = torch::round(x / s);
    const auto q = torch::clamp(r + z, 0.0, levels);
    ctx->save_for_backward({x, s, z, r});
    ctx->saved_data["levels"] = levels;
    ctx->saved_data["grad_scale"] = grad_scale;
    ctx->saved_data["step_sizes"] = step.sizes().vec();
    ctx->saved_data["offset_sizes"] = offset.sizes().vec();
    return (q - z) * s;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &s = saved[1], &z = saved[2], &r = saved[3];
    const double levels = ctx->saved_data["levels"].toDouble();
    const double scale = ctx->saved_data["grad_scale"].toDouble();
    const auto& g = grad_out[0];
    const auto grid = r + z;
    const auto below = grid < 0, above = grid > levels, inside = ~(below | above);
    const auto gx = g * inside.to(g.scalar_type());
    // Per element dx^/dstep, then the sums in float64 (a tensor of millions of elements).
    const auto dstep = torch::where(inside, r - x / s, torch::where(above, levels - z, -z));
    const auto g64 = g.to(torch::kFloat64);
    const auto gstep = (g64 * dstep.to(torch::kFloat64)).sum() * scale;
    const auto goffset = -(g64 * (below | above).to(torch::kFloat64)).sum() * s.to(torch::kFloat64) * scale;
    return {gx, gstep.to(s.scalar_type()).reshape(ctx->saved_data["step_sizes"].toIntVector()),
            goffset.to(s.scalar_type()).reshape(ctx->saved_data["offset_sizes"].toIntVector()), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor lsq_quant(const torch::Tensor& x, const torch::Tensor& step, const torch::Tensor& offset, int bits,
                        double grad_scale) {
  check_args(x, step, offset, bits);
  OUTQ_CHECK(std::isfinite(grad_scale) && grad_scale > 0, "lsq: expected a finite gradient scale > 0, found ", grad_scale);
  return LsqQuant::apply(x, step, offset, static_cast<int64_t>(bits), grad_scale);
}

double lsq_grad_scale(int64_t numel, int bits) {
  OUTQ_CHECK(numel > 0 && bits >= 2 && bits <= 8, "lsq gradient scale: expected numel > 0 and bits 2..8, found ", numel,
             " and ", bits);
  return 1.0 / std::sqrt(static_cast<double>(numel) * static_cast<double>((int64_t{1} << bits) - 1));
}

std::pair<double, double> lsq_init_minmax(double lo, double hi, int bits) {
  OUTQ_CHECK(std::isfinite(lo) && std::isfinite(hi), "lsq init: expected a finite range, found [", lo, ", ", hi, "]");
  lo = std::min(lo, 0.0);  // the grid holds zero exactly
  hi = std::max(hi, 0.0);
  if (hi - lo < 1e-8) hi = lo + 1e-8;
  const double step = (hi - lo) / static_cast<double>((int64_t{1} << bits) - 1);
  return {step, -lo / step};
}

}  // namespace outq
