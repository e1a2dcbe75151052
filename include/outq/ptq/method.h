// Outlier methods as plug-ins. A recipe lists methods by name (`methods = ["smoothquant"]`), each
// with an optional table of settings named after it; quantize_model applies them in that order.
// A method may hook, in pipeline order:
//   check       reject a recipe (or a combination with the methods before it) it cannot honour
//   calibrate   run its own observers over the calibration windows on the float model (with the
//               earlier methods' transforms applied)
//   transform   change the float model (weights, norms); each method documents whether the float
//               function is preserved (preserves_float_function)
//   plan        change the per-linear plan (specs) before the weights are quantized
//   select      after weights and static ranges: choose among alternatives by evaluating the
//               quantized model on held-out calibration windows (QFeM's threshold search)
//   record      the state saved with the quantized model (JSON + tensors), and whether the
//               integer runtime can run the result
//   report      files written into the quantized directory (tables, plots)
//   replay      on load, redo what the saved weights do not carry
// A method may also hand later steps a token prefix (QFeP): every later calibration, the
// selection and evaluation continue after its KV cache instead of starting at BOS.
// Adding a method: one file in src/ptq/methods/, one line in methods/registry.cpp, a recipe, docs
// and tests (docs/design.md, "Adding an outlier method").
#pragma once

#include <torch/torch.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/model/llama.h"
#include "outq/model/token_prefix.h"
#include "outq/quant/quantized_model.h"
#include "outq/quant/recipe.h"

namespace outq {

/// Calibration windows (n, T) with BOS first, run in batches of `batch_size`, after `prefix` when
/// a method earlier in the recipe set one (the prefix then replaces the BOS column).
struct CalibrationData {
  torch::Tensor windows;
  int64_t batch_size = 8;
  int32_t bos_id = 1;  ///< < 0: the tokenizer has no BOS token
  const TokenPrefix* prefix = nullptr;
};

class QuantMethod {
 public:
  explicit QuantMethod(MethodEntry entry) : entry_(std::move(entry)) {}
  virtual ~QuantMethod() = default;
  const std::string& name() const { return entry_.name; }
  const MethodEntry& entry() const { return entry_; }

  /// Whether transform() leaves the float model's function unchanged (up to rounding).
  virtual bool preserves_float_function() const = 0;
  /// Throws outq::Error for a recipe the method cannot honour; `modules` are the model's linear
  /// modules, `earlier` the methods listed before this one.
  virtual void check(const Recipe& recipe, const std::vector<std::string>& modules,
                     const std::vector<const QuantMethod*>& earlier) const;
  virtual bool needs_calibration() const { return false; }
  virtual void calibrate(Llama& model, const CalibrationData& data);
  virtual void transform(Llama& model);
  virtual void plan(std::vector<QuantizedLinear>& linears) const;
  /// Held-out calibration windows select() needs (0: select() is not used).
  virtual int64_t holdout_windows() const { return 0; }
  /// `model` has quantized weights and no activation quantizer; `out` the plan and static ranges.
  virtual void select(Llama& model, QuantizedModel& out, const CalibrationData& holdout);
  /// The prefix later steps continue after (null: none).
  virtual const TokenPrefix* prefix() const { return nullptr; }
  /// What is saved with the quantized model; the base fills name and settings.
  virtual AppliedMethod record() const;
  /// Writes the method's report files for `saved` into `dir` (default: none).
  virtual void report(const AppliedMethod& saved, const std::string& dir) const;
  /// `saved` as read back from a quantized directory; `model` holds the saved weights.
  virtual void replay(Llama& model, const AppliedMethod& saved);

 private:
  MethodEntry entry_;
};

/// The registered method `entry.name` with its settings checked (unknown names and keys, values
/// out of range: one-line errors naming the recipe line).
std::unique_ptr<QuantMethod> make_method(const MethodEntry& entry);
/// Every method a recipe lists, in order.
std::vector<std::unique_ptr<QuantMethod>> make_methods(const Recipe& recipe);
/// Registered method names with one-line descriptions.
std::vector<std::pair<std::string, std::string>> method_catalog();
/// Whether quantizing with `recipe` needs calibration windows (GPTQ, static activation ranges, or
/// a method that calibrates); checks the methods' settings on the way.
bool recipe_needs_calibration_data(const Recipe& recipe);

/// Typed access to a method's settings table; keys not in `valid` are errors listing the valid ones.
class MethodSettings {
 public:
  MethodSettings(const MethodEntry& entry, std::vector<std::string> valid);
  bool has(const std::string& key) const { return entry_.settings.contains(key); }
  double number(const std::string& key, double fallback) const;
  /// A whole number in [lo, hi] (counts: windows, candidates).
  int64_t whole_number(const std::string& key, int64_t fallback, int64_t lo, int64_t hi) const;
  std::vector<std::string> strings(const std::string& key, const std::vector<std::string>& fallback) const;
  std::string string(const std::string& key, const std::string& fallback) const;
  bool boolean(const std::string& key, bool fallback) const;
  /// A table of numbers ({ qkv = 0.8 }) as (key, value) pairs; empty when absent.
  std::vector<std::pair<std::string, double>> numbers_by_key(const std::string& key) const;
  /// "recipe.toml:7: smoothquant.alpha" for error messages.
  std::string where(const std::string& key) const;

 private:
  const MethodEntry& entry_;
};

}  // namespace outq
