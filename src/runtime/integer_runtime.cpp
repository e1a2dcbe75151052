// Integer linear layers on the kernels (see integer_runtime.h). The codes, scales and zero points
// are the quantized directory's own, so the runtime computes what the fake-quant simulation
// computes, except that its dot products are exact integers rather than float32 sums.
#include "outq/runtime/integer_runtime.h"

#include <fmt/format.h>

#include <cmath>

#include "outq/core/error.h"
#include "outq/kernels/gemm.h"
#include "outq/kernels/weight_only.h"

namespace outq {
namespace {

class IntegerLinear : public LinearKernel {
 public:
  IntegerLinear(kernels::PackedWeights w, kernels::ActivationFormat format)
      : w_(std::move(w)), format_(format) {}

  torch::Tensor forward(const torch::Tensor& x_in) const override {
    OUTQ_CHECK(x_in.size(-1) == w_.k, "integer linear: input width ", x_in.size(-1), ", expected ", w_.k);
    const auto x = x_in.to(torch::kFloat32).contiguous();
    const int64_t m = x.numel() / w_.k;
    thread_local kernels::QuantizedActivations a;  // reused buffers (one forward at a time per thread)
    kernels::quantize_activations(x.data_ptr<float>(), m, w_.k, w_.k, format_, w_.group_size, &a);
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = w_.n;
    auto y = torch::empty(shape, torch::kFloat32);
    kernels::gemm({&a, &w_, nullptr, y.data_ptr<float>(), w_.n});
    return y;
  }
  size_t bytes() const { return w_.bytes(); }

 private:
  kernels::PackedWeights w_;
  kernels::ActivationFormat format_;
};

// Float activations times packed int8 / int4 weights (QFeM's modules, W8A16 / W4A16 recipes).
class WeightOnlyLinear : public LinearKernel {
 public:
  explicit WeightOnlyLinear(kernels::PackedWeights w) : w_(std::move(w)) {}

  torch::Tensor forward(const torch::Tensor& x_in) const override {
    OUTQ_CHECK(x_in.size(-1) == w_.k, "weight-only linear: input width ", x_in.size(-1), ", expected ", w_.k);
    const auto x = x_in.to(torch::kFloat32).contiguous();
    const int64_t m = x.numel() / w_.k;
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = w_.n;
    auto y = torch::empty(shape, torch::kFloat32);
    kernels::gemm_weight_only({x.data_ptr<float>(), m, w_.k, &w_, nullptr, y.data_ptr<float>(), w_.n});
    return y;
  }
  size_t bytes() const { return w_.bytes(); }

 private:
  kernels::PackedWeights w_;
};

kernels::PackedWeights pack_linear(const QuantizedLinear& rec) {
  const QuantSpec& ws = rec.weight_spec;
  const auto codes = rec.codes.to(torch::kInt32).contiguous();
  const int64_t n = codes.size(0), k = codes.size(1);
  // Scales and zeros as (n, groups): a per-tensor weight scale is repeated for every channel.
  const int64_t group = ws.granularity == Granularity::kGroup ? ws.group_size : 0;
  const int64_t groups = group == 0 ? 1 : k / group;
  const auto scale_full = rec.weight_qp.scale.numel() == 1 ? rec.weight_qp.scale.reshape({1}).expand({n * groups}).contiguous()
                                                             : rec.weight_qp.scale.reshape({n * groups}).contiguous();
  const auto zero_full = (rec.weight_qp.zero.numel() == 1 ? rec.weight_qp.zero.reshape({1}).expand({n * groups})
                                                           : rec.weight_qp.zero.reshape({n * groups}))
                             .to(torch::kInt32)
                             .contiguous();
  return kernels::pack_weights(codes.data_ptr<int32_t>(), n, k, ws.bits <= 4 ? 4 : 8, ws.symmetric, group,
                               scale_full.data_ptr<float>(), zero_full.data_ptr<int32_t>());
}

std::shared_ptr<IntegerLinear> make_integer_linear(const QuantizedLinear& rec) {
  const QuantSpec& as = rec.activation_spec;
  kernels::PackedWeights w = pack_linear(rec);
  kernels::ActivationFormat f;
  f.bits = as.bits;
  f.symmetric = as.symmetric;
  f.dynamic = as.dynamic;
  if (!as.dynamic) {
    f.static_scale = rec.activation_qp.scale.reshape({-1})[0].item<float>();
    f.static_zero = rec.activation_qp.zero.reshape({-1})[0].item<float>();
  }
  return std::make_shared<IntegerLinear>(std::move(w), f);
}

}  // namespace

std::string weight_only_unsupported(const QuantizedLinear& rec) {
  const QuantSpec& ws = rec.weight_spec;
  if (!ws.enabled() || !rec.codes.defined()) return "weights are not quantized";
  if (ws.granularity == Granularity::kGroup && ws.group_size % 8 != 0)
    return fmt::format("weight groups of {} columns (the kernels need a multiple of 8)", ws.group_size);
  if (rec.codes.size(1) > 65536) return "more than 65536 input columns";
  return "";
}

std::string integer_kernel_unsupported(const QuantizedLinear& rec) {
  const QuantSpec& as = rec.activation_spec;
  if (const std::string why = weight_only_unsupported(rec); !why.empty()) return why;
  if (!as.enabled()) return "activations are not quantized";
  if (as.granularity == Granularity::kPeg) return "per-embedding-group activations";
  if (as.granularity == Granularity::kTensor && as.dynamic) return "dynamic per-tensor activations";
  if (as.granularity == Granularity::kToken && !as.dynamic) return "static per-token activations";
  return "";
}

IntegerRuntimeReport attach_integer_runtime(Llama& model, const QuantizedModel& info) {
  IntegerRuntimeReport report;
  for (const auto& m : info.methods)
    OUTQ_CHECK(m.runtime_unsupported.empty(), "integer runtime: the outlier method ", m.name,
               " needs what the kernels cannot do yet (", m.runtime_unsupported, "); evaluate it simulated instead");
  for (const auto& rec : info.linears) {
    if (!rec.activation_spec.enabled() && weight_only_unsupported(rec).empty()) {
      auto kernel = std::make_shared<WeightOnlyLinear>(pack_linear(rec));
      report.packed_bytes += kernel->bytes();
      model->linear(rec.module)->kernel = kernel;
      ++report.weight_only_layers;
      continue;
    }
    const std::string why = integer_kernel_unsupported(rec);
    if (!why.empty()) {
      report.float_layers.push_back(rec.module + ": " + why);
      continue;
    }
    auto kernel = make_integer_linear(rec);
    report.packed_bytes += kernel->bytes();
    model->linear(rec.module)->kernel = kernel;
    if (info.activations) info.activations->set(model->point(rec.module + ".input").index, ActivationTarget{});
    ++report.integer_layers;
  }
  return report;
}

}  // namespace outq
