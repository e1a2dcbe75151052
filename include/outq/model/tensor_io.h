// Adapters between torch tensors and safetensors files (core/safetensors.h): a writer that keeps
// the tensors it was given alive until written, and conversion of a stored view to a tensor.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "outq/core/safetensors.h"

namespace outq {

class TensorFileWriter {
 public:
  /// Adds a CPU tensor (made contiguous; dtype kept: float32/16, bfloat16, int8/32/64, uint8, bool).
  void add(const std::string& name, const torch::Tensor& tensor);
  void set_metadata(const std::string& key, const std::string& value) { writer_.set_metadata(key, value); }
  void write(const std::string& path) const { writer_.write(path); }

 private:
  SafetensorsWriter writer_;
  std::vector<torch::Tensor> keep_;
};

torch::ScalarType torch_dtype(DType dtype);
DType safetensors_dtype(torch::ScalarType type);

/// A tensor holding a copy of the view's data, in the view's dtype.
torch::Tensor tensor_from_view(const TensorView& view);

/// Throws outq::Error naming `file` and tensor `name` when `t` holds NaN or infinite values (a model
/// with them evaluates to "perplexity nan" and quantizes to ordinary-looking codes).
void expect_finite(const torch::Tensor& t, const std::string& file, const std::string& name);

}  // namespace outq
