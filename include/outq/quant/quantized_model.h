// A quantized model in memory: per linear module its weight and activation specs, integer weight
// codes and parameters and static activation ranges; the outlier methods applied, with the state
// they saved; and the activation quantizer that makes the float model simulate it. Written and
// read by ptq/quantized_io, produced by ptq/quantize_model, run by runtime/ on the integer kernels.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "outq/model/llama.h"
#include "outq/model/token_prefix.h"
#include "outq/quant/quantizer.h"
#include "outq/quant/recipe.h"

namespace outq {

struct ActivationTarget {
  QuantSpec spec;
  QParams qp;          ///< static ranges (undefined for dynamic specs)
  torch::Tensor perm;  ///< PEG channel permutation (undefined = identity)
};

/// Replaces each targeted point's tensor with its fake-quantized version.
class ActivationQuantizer : public Observer {
 public:
  explicit ActivationQuantizer(size_t num_points) : targets_(num_points) {}
  void set(int point, ActivationTarget target) { targets_.at(point) = std::move(target); }
  const std::optional<ActivationTarget>& target(int point) const { return targets_.at(point); }
  torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) override;

 private:
  std::vector<std::optional<ActivationTarget>> targets_;
};

struct QuantizedLinear {
  std::string module;
  QuantSpec weight_spec, activation_spec;
  torch::Tensor codes;  ///< int32 (out, in); undefined when weights are not quantized
  QParams weight_qp;
  QParams activation_qp;  ///< static ranges; undefined for dynamic or disabled
  torch::Tensor activation_perm;  ///< PEG range-based channel permutation (int64, in); undefined = identity
};

/// A quantized observation point other than a linear input (full-integer mode, [[tensors]]):
/// residual sums, linear outputs, attention scores and probabilities. Always simulated.
struct QuantizedPoint {
  std::string point;  ///< "model.layers.0.residual_mlp"
  QuantSpec spec;
  QParams qp;          ///< static ranges; undefined for dynamic
  torch::Tensor perm;  ///< PEG permutation (int64); undefined = identity
};

/// What an outlier method left with the quantized model (see ptq/method.h).
struct AppliedMethod {
  std::string name;
  nlohmann::json settings = nlohmann::json::object();  ///< as given in the recipe
  nlohmann::json state = nlohmann::json::object();     ///< the method's own record (saved, replayed)
  std::map<std::string, torch::Tensor> tensors;        ///< saved as "methods.<name>.<key>"
  /// Why the integer runtime cannot run a model with this method ("" = the stored weights and
  /// specs are all it needs, as for a transform folded into the weights).
  std::string runtime_unsupported;
};

struct QuantizedModel {
  Recipe recipe;
  std::vector<QuantizedLinear> linears;
  std::vector<QuantizedPoint> points;                 ///< the other quantized tensors (empty unless full-integer)
  std::vector<AppliedMethod> methods;                 ///< in the order applied
  std::shared_ptr<ActivationQuantizer> activations;  ///< attached to the model
  /// The quantization-free prefix evaluation and generation continue after (QFeP); null if none.
  std::shared_ptr<const TokenPrefix> prefix;
  double seconds = 0;       ///< this quantization's wall time
  double gptq_seconds = 0;  ///< the GPTQ run's time (the earlier run's when it was reused)
  bool gptq_reused = false;  ///< GPTQ's weights came from an identical earlier run (GptqCache)
};

/// Builds and attaches the activation quantizer from per-module specs and static ranges, and the
/// other quantized points (used by quantize_model and when loading a quantized model directory).
std::shared_ptr<ActivationQuantizer> attach_activation_quantizer(Llama& model, const std::vector<QuantizedLinear>& linears,
                                                                 const std::vector<QuantizedPoint>& points = {});

}  // namespace outq
