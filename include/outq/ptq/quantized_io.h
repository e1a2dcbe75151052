// Quantized model directories (format "outq-quantized", version 2; version 1 had no methods and
// still loads):
//   model.safetensors   float tensors of the unquantized parts (embeddings, norms, LM head, and
//                       any linear left at 16 bits as "<module>.weight"), and per quantized linear:
//                         <module>.qweight  U8  codes minus qmin; two per byte (low nibble = even
//                                           column) when bits <= 4, else one per byte; (out, ceil(in/2)) or (out, in)
//                         <module>.scales   F32 (out, groups)   <module>.zeros  F32 (out, groups), integers
//                         <module>.input_scale / .input_zero   F32 static activation ranges (grouped shape, flat)
//                         methods.<method>.<key>  tensors an outlier method saved (e.g. SmoothQuant's factors)
//                       safetensors metadata: format, version, recipe name, the recipe text
//   quant_config.json   every linear's weight and activation spec (what to unpack and simulate), and
//                       "methods": per applied method in order its name, settings, state (JSON), the
//                       keys of its tensors and why the integer runtime cannot run it ("" = it can);
//                       each is replayed on load
//   recipe.toml         the recipe as given;  config.json, tokenizer.model as in a float model
#pragma once

#include <string>

#include "outq/ptq/quantize_model.h"

namespace outq {

/// Packs int32 codes (out, in) into bytes as described above.
torch::Tensor pack_codes(const torch::Tensor& codes, const QuantSpec& spec);
/// Inverse of pack_codes; `in` is the number of input columns.
torch::Tensor unpack_codes(const torch::Tensor& packed, const QuantSpec& spec, int64_t in);

/// Writes a quantized model directory atomically.
void quantized_save(Llama& model, const QuantizedModel& q, const std::string& dir, const std::string& tokenizer_path);

/// True if `dir` holds a quantized model (quant_config.json present).
bool is_quantized_dir(const std::string& dir);

/// Loads a quantized directory into a float model with dequantized weights and the activation
/// quantizer attached, so that running it simulates the quantized model.
Llama quantized_load(const std::string& dir, QuantizedModel* info = nullptr);

}  // namespace outq
