// Learned weight steps: file format and quantization on their grid.
#include "outq/quant/learned_weights.h"

#include "outq/core/error.h"
#include "outq/core/safetensors.h"
#include "outq/quant/quantizer.h"

namespace outq {
namespace {

int64_t required_int(const SafetensorsFile& file, const char* key, int64_t lo, int64_t hi) {
  const auto v = file.metadata_int(key, lo, hi);
  OUTQ_CHECK(v.has_value(), file.path(), ": expected metadata \"", key, "\" (a ", kLearnedWeightsFile,
             " written by outq train), found none");
  return *v;
}

}  // namespace

QuantSpec LearnedWeights::spec() const {
  QuantSpec s;
  s.bits = bits;
  s.symmetric = true;
  s.granularity = group_size > 0 ? Granularity::kGroup : Granularity::kChannel;
  s.group_size = static_cast<int>(group_size);
  return s;
}

void learned_weights_write(const LearnedWeights& w, const std::string& path) {
  SafetensorsWriter out;
  std::vector<torch::Tensor> keep;
  for (const auto& [module, steps] : w.steps) {
    keep.push_back(steps.detach().to(torch::kFloat32).contiguous());
    out.add(module, DType::F32, keep.back().sizes().vec(), keep.back().data_ptr(), keep.back().nbytes());
  }
  out.set_metadata("bits", std::to_string(w.bits));
  out.set_metadata("group_size", std::to_string(w.group_size));
  out.write(path);
}

LearnedWeights learned_weights_load(const std::string& path) {
  const SafetensorsFile file(path);
  LearnedWeights w;
  w.bits = static_cast<int>(required_int(file, "bits", 2, 8));
  w.group_size = required_int(file, "group_size", 0, int64_t{1} << 30);
  for (const auto& [name, view] : file.tensors()) {
    OUTQ_CHECK(view.dtype == DType::F32 && view.shape.size() == 2 && view.numel() > 0, path, ": ", name,
               ": expected a float32 (rows, groups) tensor of steps, found another dtype or shape");
    auto t = torch::from_blob(const_cast<uint8_t*>(view.data), view.shape, torch::kFloat32).clone();
    OUTQ_CHECK(torch::isfinite(t).all().item<bool>() && (t > 0).all().item<bool>(), path, ": ", name,
               ": expected finite steps > 0, found one that is not");
    w.steps[name] = t;
  }
  OUTQ_CHECK(!w.steps.empty(), path, ": expected learned steps for the decoder's linear layers, found none");
  return w;
}

std::pair<torch::Tensor, torch::Tensor> learned_weight_quantize(const torch::Tensor& weight, const torch::Tensor& steps,
                                                                const QuantSpec& spec, const std::string& origin) {
  const int64_t rows = weight.size(0), cols = weight.size(1);
  const int64_t groups = spec.granularity == Granularity::kGroup ? cols / spec.group_size : 1;
  OUTQ_CHECK(spec.granularity != Granularity::kGroup || cols % spec.group_size == 0, origin, ": group size ",
             spec.group_size, " does not divide the input width ", cols);
  OUTQ_CHECK(steps.dim() == 2 && steps.size(0) == rows && steps.size(1) == groups, origin, ": expected steps of shape (",
             rows, ", ", groups, "), found ", steps.sizes());
  QParams qp{steps.to(torch::kFloat32).reshape({rows, groups, 1}), torch::zeros({rows, groups, 1})};
  const auto codes = quantize(weight, qp, spec);
  return {codes, dequantize(codes, qp, spec)};
}

}  // namespace outq
