// Integer linear layers on the kernels (see integer_runtime.h). The codes, scales and zero points
// are the quantized directory's own, so the runtime computes what the fake-quant simulation
// computes, except that its dot products are exact integers rather than float32 sums.
#include "outq/runtime/integer_runtime.h"

#include <fmt/format.h>

#include <cmath>

#include "outq/core/error.h"
#include "outq/kernels/gemm.h"
#include "outq/kernels/gemm_i16.h"
#include "outq/kernels/weight_only.h"
#include "outq/quant/quantizer.h"

namespace outq {
namespace {

class IntegerLinear : public LinearKernel {
 public:
  IntegerLinear(kernels::PackedWeights w, kernels::ActivationFormat format, std::vector<float> bias = {})
      : w_(std::move(w)), format_(std::move(format)), bias_(std::move(bias)) {}

  torch::Tensor forward(const torch::Tensor& x_in) const override {
    OUTQ_CHECK(x_in.size(-1) == w_.k, "integer linear: input width ", x_in.size(-1), ", expected ", w_.k);
    const auto x = x_in.to(torch::kFloat32).contiguous();
    const int64_t m = x.numel() / w_.k;
    thread_local kernels::QuantizedActivations a;  // reused buffers (one forward at a time per thread)
    kernels::quantize_activations(x.data_ptr<float>(), m, w_.k, w_.k, format_, w_.group_size, &a);
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = w_.n;
    auto y = torch::empty(shape, torch::kFloat32);
    kernels::gemm({&a, &w_, bias_.empty() ? nullptr : bias_.data(), y.data_ptr<float>(), w_.n});
    return y;
  }
  size_t bytes() const { return w_.bytes(); }

 private:
  kernels::PackedWeights w_;
  kernels::ActivationFormat format_;
  std::vector<float> bias_;  ///< PEG: the zero-point term folded out of the groups (else empty)
};

// 16-bit integer activations (mixed-precision recipes) times int8 / int4 weight codes.
class Integer16Linear : public LinearKernel {
 public:
  Integer16Linear(kernels::PackedWeights16 w, kernels::ActivationFormat format) : w_(std::move(w)), format_(format) {}

  torch::Tensor forward(const torch::Tensor& x_in) const override {
    OUTQ_CHECK(x_in.size(-1) == w_.k, "int16 linear: input width ", x_in.size(-1), ", expected ", w_.k);
    const auto x = x_in.to(torch::kFloat32).contiguous();
    const int64_t m = x.numel() / w_.k;
    thread_local kernels::Activations16 a;
    kernels::quantize_activations16(x.data_ptr<float>(), m, w_.k, w_.k, format_, &a);
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = w_.n;
    auto y = torch::empty(shape, torch::kFloat32);
    kernels::gemm_i16(a, w_, nullptr, y.data_ptr<float>(), w_.n);
    return y;
  }
  size_t bytes() const { return w_.bytes(); }

 private:
  kernels::PackedWeights16 w_;
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

// Static per-embedding-group activations: the weight columns permuted like the gathered codes,
// packed in the PEG groups, each group's activation scale folded into the weight scales and its
// zero-point term into a bias (see kernels/gemm.h). Gathering the input while quantizing costs
// one indexed load per element in a pass that reads every element anyway; permuting the producer
// instead would mean permuting the residual stream (or, for the attention output, the value
// heads) and is not possible for every input.
std::shared_ptr<IntegerLinear> make_peg_linear(const QuantizedLinear& rec) {
  const QuantSpec& as = rec.activation_spec;
  const QuantSpec& ws = rec.weight_spec;
  const int64_t n = rec.codes.size(0), k = rec.codes.size(1);
  const std::vector<int64_t> bounds = peg_bounds(k, as.peg_groups);
  const int64_t G = as.peg_groups;
  const auto perm = rec.activation_perm.defined() ? rec.activation_perm.to(torch::kInt64).contiguous()
                                                  : torch::arange(k, torch::kInt64);
  const auto codes = rec.codes.to(torch::kInt32).index_select(1, perm).contiguous();
  const auto sx = rec.activation_qp.scale.reshape({G}).to(torch::kFloat32).contiguous();
  const auto zx = rec.activation_qp.zero.reshape({G}).to(torch::kFloat32).contiguous();
  const auto sw = rec.weight_qp.scale.reshape({-1}).expand({n}).contiguous();  // per channel or per tensor
  const auto zw = rec.weight_qp.zero.reshape({-1}).expand({n}).to(torch::kInt32).contiguous();
  const auto scale = (sw.reshape({n, 1}) * sx.reshape({1, G})).contiguous();  // sw[n] * sx_g, float32
  const auto zero = zw.reshape({n, 1}).expand({n, G}).contiguous();
  kernels::PackedWeights w = kernels::pack_weights(codes.data_ptr<int32_t>(), n, k, ws.bits <= 4 ? 4 : 8, ws.symmetric,
                                                   bounds, scale.data_ptr<float>(), zero.data_ptr<int32_t>());
  kernels::ActivationFormat f;
  f.bits = as.bits;
  f.symmetric = as.symmetric;
  f.dynamic = false;
  f.peg_bounds = bounds;
  f.gather.assign(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + k);
  f.peg_scale.assign(sx.data_ptr<float>(), sx.data_ptr<float>() + G);
  f.peg_zero.assign(zx.data_ptr<float>(), zx.data_ptr<float>() + G);
  // za_g in the kernels' int8 code space (asymmetric 8-bit codes are stored shifted by -128).
  const double shift = !as.symmetric && as.bits == 8 ? -128.0 : 0.0;
  std::vector<float> bias(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) {
    double b = 0;
    for (int64_t g = 0; g < G; ++g)
      b -= static_cast<double>(w.scale[w.at(c, g)]) * (f.peg_zero[g] + shift) * static_cast<double>(w.sum[w.at(c, g)]);
    bias[static_cast<size_t>(c)] = static_cast<float>(b);
  }
  return std::make_shared<IntegerLinear>(std::move(w), std::move(f), std::move(bias));
}

std::shared_ptr<Integer16Linear> make_integer16_linear(const QuantizedLinear& rec) {
  const QuantSpec& as = rec.activation_spec;
  const QuantSpec& ws = rec.weight_spec;
  const auto codes = rec.codes.to(torch::kInt32).contiguous();
  const int64_t n = codes.size(0), k = codes.size(1);
  const auto scale = rec.weight_qp.scale.reshape({-1}).expand({n}).contiguous();
  const auto zero = rec.weight_qp.zero.reshape({-1}).expand({n}).to(torch::kInt32).contiguous();
  kernels::ActivationFormat f(16, as.symmetric, as.dynamic);
  if (!as.dynamic) {
    f.static_scale = rec.activation_qp.scale.reshape({-1})[0].item<float>();
    f.static_zero = rec.activation_qp.zero.reshape({-1})[0].item<float>();
  }
  return std::make_shared<Integer16Linear>(
      kernels::pack_weights16(codes.data_ptr<int32_t>(), n, k, ws.bits, ws.symmetric, scale.data_ptr<float>(),
                              zero.data_ptr<int32_t>()),
      f);
}

std::shared_ptr<IntegerLinear> make_integer_linear(const QuantizedLinear& rec) {
  const QuantSpec& as = rec.activation_spec;
  if (as.granularity == Granularity::kPeg) return make_peg_linear(rec);
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
  if (as.integer16) {
    if (as.granularity == Granularity::kPeg) return "16-bit integer activations per embedding group";
    if (rec.weight_spec.granularity == Granularity::kGroup)
      return "16-bit integer activations with grouped weights (the int16 kernel takes per-channel or per-tensor weights)";
  }
  if (as.granularity == Granularity::kPeg) {
    if (as.dynamic) return "dynamic per-embedding-group activations (the kernels fold static group ranges into the weights)";
    if (rec.weight_spec.granularity == Granularity::kGroup)
      return "per-embedding-group activations with grouped weights (the kernels need per-channel or per-tensor weights)";
    const auto b = peg_bounds(rec.codes.size(1), as.peg_groups);
    for (size_t i = 1; i + 1 < b.size(); ++i)
      if (b[i] % 8 != 0)
        return fmt::format("per-embedding-group boundaries that are not multiples of 8 columns ({} groups of {} "
                           "columns)", as.peg_groups, rec.codes.size(1));
  }
  if (as.granularity == Granularity::kTensor && as.dynamic) return "dynamic per-tensor activations";
  if (as.granularity == Granularity::kToken && !as.dynamic) return "static per-token activations";
  return "";
}

IntegerRuntimeReport attach_integer_runtime(Llama& model, const QuantizedModel& info) {
  IntegerRuntimeReport report;
  for (const auto& m : info.methods)
    OUTQ_CHECK(m.runtime_unsupported.empty(), "integer runtime: the outlier method ", m.name,
               " needs what the kernels cannot do yet (", m.runtime_unsupported, "); evaluate it simulated instead");
  for (const auto& p : info.points) report.simulated_points += p.spec.enabled() ? 1 : 0;
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
    if (rec.activation_spec.integer16) {
      auto kernel = make_integer16_linear(rec);
      report.packed_bytes += kernel->bytes();
      model->linear(rec.module)->kernel = kernel;
    } else {
      auto kernel = make_integer_linear(rec);
      report.packed_bytes += kernel->bytes();
      model->linear(rec.module)->kernel = kernel;
    }
    if (info.activations) info.activations->set(model->point(rec.module + ".input").index, ActivationTarget{});
    ++report.integer_layers;
  }
  return report;
}

}  // namespace outq
