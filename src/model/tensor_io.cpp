// torch <-> safetensors conversions.
#include "outq/model/tensor_io.h"

#include "outq/core/error.h"

namespace outq {

torch::ScalarType torch_dtype(DType dtype) {
  switch (dtype) {
    case DType::F64: return torch::kFloat64;
    case DType::F32: return torch::kFloat32;
    case DType::F16: return torch::kFloat16;
    case DType::BF16: return torch::kBFloat16;
    case DType::I64: return torch::kInt64;
    case DType::I32: return torch::kInt32;
    case DType::I16: return torch::kInt16;
    case DType::I8: return torch::kInt8;
    case DType::U8: return torch::kUInt8;
    case DType::BOOL: return torch::kBool;
  }
  OUTQ_ASSERT(false, "unhandled dtype");
}

DType safetensors_dtype(torch::ScalarType type) {
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16,
                  DType::I8, DType::U8, DType::BOOL}) {
    if (torch_dtype(d) == type) return d;
  }
  OUTQ_ASSERT(false, "tensor dtype ", c10::toString(type), " has no safetensors equivalent");
}

void TensorFileWriter::add(const std::string& name, const torch::Tensor& tensor) {
  OUTQ_ASSERT(tensor.device().is_cpu(), "tensor ", name, " must be on the CPU to be written");
  torch::Tensor t = tensor.detach().contiguous();
  keep_.push_back(t);
  writer_.add(name, safetensors_dtype(t.scalar_type()), t.sizes().vec(), t.data_ptr(),
              static_cast<size_t>(t.numel()) * t.element_size());
}

torch::Tensor tensor_from_view(const TensorView& view) {
  auto options = torch::TensorOptions().dtype(torch_dtype(view.dtype));
  if (view.bytes == 0) return torch::empty(view.shape, options);
  return torch::from_blob(const_cast<uint8_t*>(view.data), view.shape, options).clone();
}

void expect_finite(const torch::Tensor& t, const std::string& file, const std::string& name) {
  const torch::Tensor bad = ~torch::isfinite(t);
  const int64_t n = bad.sum().item<int64_t>();
  if (n == 0) return;
  const int64_t nan = torch::isnan(t).sum().item<int64_t>();
  throw Error(detail::concat(file, ": ", name, ": expected finite values, found ", n, " of ", t.numel(), " non-finite (",
                             nan, " NaN, ", n - nan, " infinite); the model is damaged"));
}

}  // namespace outq
