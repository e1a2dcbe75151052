// The range-based channel permutation of per-embedding-group (PEG) activation quantization
// (methods §4.7): per-channel ranges measured over the calibration windows, channels sorted by
// range so each of the K groups holds channels of similar range. With peg_shared, the tensors of a
// layer's residual stream (the norm outputs that q/k/v and gate/up read) share one permutation,
// computed from the ranges of that layer's down-projection output, where the stream's outlier
// channels are written (the paper shares the FFN output's permutation the same way). The residual
// stream's tensors: the norm outputs, the residual sums and the o_proj / down_proj outputs.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "outq/model/llama.h"
#include "outq/ptq/method.h"
#include "outq/quant/quantized_model.h"

namespace outq {

/// The point whose channel ranges define the permutation of the tensor at `point` quantized with
/// `spec`: the point itself, or the layer's "mlp.down_proj.output" for a shared permutation of a
/// residual-stream tensor.
std::string peg_permutation_source(const Llama& model, const std::string& point, const QuantSpec& spec);

/// Per-channel (min, max) of the named points over the calibration windows (one pass, no gradients).
std::map<std::string, std::pair<torch::Tensor, torch::Tensor>> channel_ranges(Llama& model,
                                                                              const std::vector<std::string>& points,
                                                                              const CalibrationData& data);

/// Sets the permutation of every linear input and quantized point whose spec asks for one.
void set_peg_permutations(Llama& model, std::vector<QuantizedLinear>& linears, std::vector<QuantizedPoint>& points,
                          const CalibrationData& data);

}  // namespace outq
