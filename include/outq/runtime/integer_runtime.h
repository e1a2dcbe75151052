// The integer runtime: a loaded quantized model whose linear layers run on the integer kernels
// (weights packed once, activations quantized per call by the kernels' fused quantizer), with
// embeddings, norms, attention, the KV cache and the LM head in LibTorch float32.
#pragma once

#include <string>
#include <vector>

#include "outq/model/llama.h"
#include "outq/quant/quantized_model.h"

namespace outq {

struct IntegerRuntimeReport {
  int integer_layers = 0;
  int weight_only_layers = 0;             ///< float activations, packed weights (W8A16 / W4A16)
  std::vector<std::string> float_layers;  ///< "module: reason" for layers the kernels cannot run
  int simulated_points = 0;               ///< quantized tensors other than linear inputs (full-integer mode): simulated
  size_t packed_bytes = 0;                ///< packed weights, scales and sums
};

/// Why the integer kernels cannot run this layer ("" when they can): weights of 2..8 bits per
/// tensor, channel or group of a multiple of 8 columns; activations of 2..8 bits per token
/// (dynamic), per tensor (static) or per embedding group (static, per-channel weights, group
/// boundaries on multiples of 8 columns); 16-bit integer activations per token (dynamic) or per
/// tensor (static) with per-channel or per-tensor weights (the int16 kernel).
std::string integer_kernel_unsupported(const QuantizedLinear& linear);
/// Why the weight-only kernels cannot run this layer's weights ("" when they can).
std::string weight_only_unsupported(const QuantizedLinear& linear);

/// Sets an integer kernel on every linear of `model` that `info` (from quantized_load) quantizes
/// and the kernels support, and removes the simulating activation quantizer from those layers
/// (the kernels quantize the activations themselves). Linears with quantized weights and float
/// activations (QFeM's, W8A16 / W4A16) run on the weight-only kernels. Layers left in float keep
/// simulating.
IntegerRuntimeReport attach_integer_runtime(Llama& model, const QuantizedModel& info);

}  // namespace outq
