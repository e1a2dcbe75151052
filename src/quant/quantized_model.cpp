// The simulating activation quantizer of a quantized model (see quantized_model.h).
#include "outq/quant/quantized_model.h"

#include "outq/core/error.h"

namespace outq {

torch::Tensor ActivationQuantizer::observe(const ObservationPoint& point, const torch::Tensor& x) {
  const auto& t = targets_[point.index];
  if (!t || !t->spec.enabled()) return x;
  if (t->spec.dynamic) return fake_quant_dynamic(x, t->spec, t->perm);
  OUTQ_ASSERT(t->qp.scale.defined(), "static activation quantizer at ", point.name, " was never calibrated");
  return fake_quant(x, t->qp, t->spec, t->perm);
}

std::shared_ptr<ActivationQuantizer> attach_activation_quantizer(Llama& model, const std::vector<QuantizedLinear>& linears,
                                                                 const std::vector<QuantizedPoint>& points) {
  auto aq = std::make_shared<ActivationQuantizer>(model->points().size());
  for (const auto& rec : linears) {
    if (!rec.activation_spec.enabled()) continue;
    const ObservationPoint& p = model->point(rec.module + ".input");
    aq->set(p.index, ActivationTarget{rec.activation_spec, rec.activation_qp, rec.activation_perm});
  }
  for (const auto& p : points)
    if (p.spec.enabled()) aq->set(model->point(p.point).index, ActivationTarget{p.spec, p.qp, p.perm});
  model->observers().attach(aq);
  return aq;
}

}  // namespace outq
