// SmoothQuant (Xiao et al. 2022; methods spec §6): per input channel j of a norm->linears junction,
//   s_j = max|X_j|^alpha / max_k |W_kj|^(1 - alpha)
// from calibration (X the norm's output, W the consumers' weights stacked by rows), then the norm's
// weight is divided by s and every consumer's column j multiplied by s. In real arithmetic the
// model computes the same function (x / s) (s W)^T = x W^T, so the float model is preserved up to
// rounding and the integer runtime pays nothing: the factors live in the stored weights. Settings:
//   alpha = 0.6                         migration strength in [0, 1] for every smoothed slot
//   slots = ["qkv", "gate_up"]          block-schema slots with a norm in front
//   slot_alpha = { gate_up = 0.8 }      per-slot alpha, overriding `alpha`
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>

#include "methods.h"
#include "outq/core/error.h"
#include "outq/core/log.h"
#include "outq/core/progress.h"
#include "outq/model/block_schema.h"
#include "outq/ptq/activation_quant.h"

namespace outq {
namespace {

constexpr double kDefaultAlpha = 0.6;  // chosen by the alpha sweep in docs/results.md
constexpr double kFloor = 1e-5;  // lower bound of the weight maxima and of s (as the reference code)

// Running per-channel max|x| at the first linear input of each smoothed slot of every block.
class ChannelAbsMax : public Observer {
 public:
  ChannelAbsMax(const Llama& model, const std::vector<int>& slots) {
    for (const auto& p : model->points())
      if (is_slot_input(p) && std::find(slots.begin(), slots.end(), p.slot) != slots.end()) watched_[p.index] = torch::Tensor();
  }
  torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) override {
    auto it = watched_.find(point.index);
    if (it == watched_.end()) return x;
    const auto m = x.detach().abs().reshape({-1, x.size(-1)}).amax(0).to(torch::kFloat64);
    OUTQ_CHECK(torch::isfinite(m).all().item<bool>(), "smoothquant calibration: non-finite activations at ", point.name);
    it->second = it->second.defined() ? torch::maximum(it->second, m) : m;
    return x;
  }
  /// The max over all batches at `point_index` (error if no batch reached it).
  const torch::Tensor& at(int point_index, const std::string& name) const {
    const auto& t = watched_.at(point_index);
    OUTQ_CHECK(t.defined(), "smoothquant calibration: no activations reached ", name);
    return t;
  }

 private:
  std::map<int, torch::Tensor> watched_;
};

class SmoothQuant : public QuantMethod {
 public:
  explicit SmoothQuant(const MethodEntry& entry) : QuantMethod(entry) {
    const MethodSettings settings(entry, {"alpha", "slots", "slot_alpha"});
    const BlockSchema& schema = block_schema();
    const double alpha = settings.number("alpha", kDefaultAlpha);
    check_alpha(alpha, settings.where("alpha"));
    for (const auto& name : settings.strings("slots", {"qkv", "gate_up"})) {
      const ActivationSlot& slot = schema.slot(name, settings.where("slots"));
      if (slot.norm.empty()) {
        std::string with_norm;
        for (const auto& s : schema.slots)
          if (!s.norm.empty()) with_norm += (with_norm.empty() ? "" : ", ") + s.name;
        throw Error(fmt::format("{}: slot \"{}\" ({}) has no norm in front to fold the smoothing factors into (its input "
                                "comes from the {}); expected one of the slots with a norm: {}",
                                settings.where("slots"), name, slot.linears.front(), slot.producer, with_norm));
      }
      const int index = static_cast<int>(&slot - schema.slots.data());
      OUTQ_CHECK(!smoothed(index), settings.where("slots"), ": slot \"", name, "\" is listed twice");
      slots_.emplace_back(index, alpha);
    }
    OUTQ_CHECK(!slots_.empty(), settings.where("slots"), ": expected at least one slot with a norm in front, found none");
    for (const auto& [name, a] : settings.numbers_by_key("slot_alpha")) {
      const ActivationSlot& slot = schema.slot(name, settings.where("slot_alpha"));
      check_alpha(a, settings.where("slot_alpha." + name));
      bool found = false;
      for (auto& [s, sa] : slots_)
        if (schema.slots[static_cast<size_t>(s)].name == slot.name) sa = a, found = true;
      OUTQ_CHECK(found, settings.where("slot_alpha." + name), ": slot \"", name, "\" is not smoothed (slots lists ",
                 slot_list(), ")");
    }
  }

  bool preserves_float_function() const override { return true; }
  bool needs_calibration() const override { return true; }

  void check(const Recipe& recipe, const std::vector<std::string>& modules,
             const std::vector<const QuantMethod*>&) const override {
    for (const auto& m : modules) {
      int layer = 0;
      std::string relative;
      if (!split_block_module(m, &layer, &relative) || !smoothed(block_schema().slot_of_linear(relative))) continue;
      const QuantSpec a = recipe.activation_spec(m);
      OUTQ_CHECK(!(a.enabled() && a.range == RangeMethod::kLearned), recipe.source_path, ": smoothquant changes the input of ",
                 m, ", but its activations use range = \"learned\" (clips learned for the unsmoothed input); expected a "
                 "calibrated or dynamic range there, or no smoothquant on that slot");
    }
  }

  void calibrate(Llama& model, const CalibrationData& data) override {
    OUTQ_CHECK(!model->config().post_norm(), "smoothquant: a post-norm model (model.norm_placement = \"post\"): its norms "
               "produce the residual stream itself, so factors folded into them would change the function; expected a "
               "pre-norm model");
    std::vector<int> slots;
    for (const auto& [s, a] : slots_) slots.push_back(s);
    auto observer = std::make_shared<ChannelAbsMax>(model, slots);
    model->observers().attach(observer);
    Progress progress("smoothquant calibration", data.windows.size(0), "windows");
    run_windows(model, data.windows, data.batch_size, &progress, data.prefix);
    progress.finish();
    model->observers().detach(observer.get());
    absmax_.clear();
    for (int l = 0; l < model->config().num_hidden_layers; ++l)
      for (const auto& [s, a] : slots_) {
        const auto& slot = block_schema().slots[static_cast<size_t>(s)];
        const ObservationPoint& p = model->point(block_module(l, slot.linears.front()) + ".input");
        absmax_.push_back(observer->at(p.index, p.name));
      }
    windows_ = data.windows.size(0);
  }

  void transform(Llama& model) override {
    OUTQ_ASSERT(!absmax_.empty(), "smoothquant: transform before calibration");
    torch::NoGradGuard no_grad;
    factors_.clear();
    size_t i = 0;
    for (int l = 0; l < model->config().num_hidden_layers; ++l)
      for (const auto& [s, alpha] : slots_) {
        const auto& slot = block_schema().slots[static_cast<size_t>(s)];
        DecoderLayerImpl& block = model->layer(l);
        std::vector<torch::Tensor> weights;
        for (const auto& lin : slot.linears) weights.push_back(block.linear(lin).weight);
        const torch::Tensor w_max = torch::cat(weights, 0).to(torch::kFloat64).abs().amax(0).clamp_min(kFloor);
        const torch::Tensor& a_max = absmax_[i++];
        // A channel that never fired gives no evidence to move anything: it keeps s = 1.
        torch::Tensor f = (a_max.pow(alpha) / w_max.pow(1.0 - alpha)).clamp_min(kFloor);
        f = torch::where(a_max > 0, f, torch::ones_like(f));
        torch::Tensor& g = block.norm(slot.norm).weight;
        g.copy_((g.to(torch::kFloat64) / f).to(g.scalar_type()));
        for (auto& w : weights) w.copy_((w.to(torch::kFloat64) * f.unsqueeze(0)).to(w.scalar_type()));
        factors_.push_back(f.to(torch::kFloat32));
      }
  }

  AppliedMethod record() const override {
    AppliedMethod m = QuantMethod::record();
    nlohmann::json alphas = nlohmann::json::object();
    for (const auto& [s, a] : slots_) alphas[block_schema().slots[static_cast<size_t>(s)].name] = a;
    const int layers = static_cast<int>(factors_.size() / std::max<size_t>(slots_.size(), 1));
    m.state = {{"alpha", alphas}, {"calibration_windows", windows_}, {"layers", layers}};
    size_t i = 0;
    for (int l = 0; l < layers; ++l)
      for (const auto& [s, a] : slots_) m.tensors[factor_key(l, s)] = factors_[i++];
    return m;
  }

  // The factors are folded into the saved norm and linear weights: nothing to redo, but the record
  // must be whole (one factor vector of the hidden width per block and slot).
  void replay(Llama& model, const AppliedMethod& saved) override {
    const int64_t C = model->config().hidden_size;
    for (int l = 0; l < model->config().num_hidden_layers; ++l)
      for (const auto& [s, a] : slots_) {
        const auto it = saved.tensors.find(factor_key(l, s));
        OUTQ_CHECK(it != saved.tensors.end() && it->second.dim() == 1 && it->second.size(0) == C,
                   "smoothquant record: expected methods.smoothquant.", factor_key(l, s), " of ", C, " values, found ",
                   it == saved.tensors.end() ? std::string("none") : fmt::format("shape {}", it->second.sizes()));
      }
  }

 private:
  static void check_alpha(double a, const std::string& where) {
    OUTQ_CHECK(a >= 0.0 && a <= 1.0, where, ": expected alpha in [0, 1], found ", a);
  }
  bool smoothed(int slot) const {
    for (const auto& [s, a] : slots_)
      if (s == slot) return true;
    return false;
  }
  std::string slot_list() const {
    std::string out;
    for (const auto& [s, a] : slots_) out += (out.empty() ? "" : ", ") + block_schema().slots[static_cast<size_t>(s)].name;
    return out;
  }
  static std::string factor_key(int layer, int slot) {
    return fmt::format("layers.{}.{}.factors", layer, block_schema().slots[static_cast<size_t>(slot)].name);
  }

  std::vector<std::pair<int, double>> slots_;  ///< (schema slot index, alpha)
  std::vector<torch::Tensor> absmax_;          ///< per block and slot: calibrated max|X_j| (float64)
  std::vector<torch::Tensor> factors_;         ///< per block and slot: s (float32)
  int64_t windows_ = 0;
};

}  // namespace

std::unique_ptr<QuantMethod> make_smoothquant(const MethodEntry& entry) { return std::make_unique<SmoothQuant>(entry); }

}  // namespace outq
