// QAT through observation points (see qat_observer.h).
#include "outq/qat/qat_observer.h"

#include <fmt/format.h>

#include <cmath>
#include <optional>

#include "outq/core/error.h"
#include "outq/qat/learned_clip.h"
#include "outq/qat/lsq.h"
#include "outq/quant/quantizer.h"

namespace outq {
namespace {
const std::string& slot_name(int s) { return block_schema().slots[static_cast<size_t>(s)].name; }
int num_slots() { return static_cast<int>(block_schema().slots.size()); }

// The static quantizer an LSQ range is: asymmetric, per tensor, with the first batch's range
// estimated as recipes estimate it.
QuantSpec lsq_spec(const QatConfig& c) {
  QuantSpec spec;
  spec.bits = c.bits;
  spec.range = c.lsq_init == "mse" ? RangeMethod::kMse : RangeMethod::kMinMax;
  return spec;
}
}  // namespace

QatObserver::QatObserver(const Llama& model, const QatConfig& config) : config_(config) {
  config_.validate(/*warn=*/false);  // warnings were given when the config was read
  clips_.assign(model->config().num_hidden_layers, std::vector<Clip>(block_schema().slots.size()));
  // Clamp mode keeps its fixed ranges in the same tensors (checkpointed, exported), not learned.
  const double init = config.clamps() ? config.clamp_value : config.clip_init;
  for (auto& layer : clips_)
    for (auto& c : layer) {
      if (config.learns_steps()) {
        c.step = torch::zeros({});
        c.offset = torch::zeros({});
        set_lsq_range(c, torch::full({}, static_cast<float>(-init)), torch::full({}, static_cast<float>(init)));
        c.step.requires_grad_(true);
        c.offset.requires_grad_(true);
      } else {
        c.alpha = torch::full({}, static_cast<float>(init)).requires_grad_(config.learns_clips());
        c.beta = torch::full({}, static_cast<float>(-init)).requires_grad_(config.learns_clips());
      }
      c.initialized = config.clip_init_from == "fixed" || !config.quantizes();
    }
}

void QatObserver::set_lsq_range(Clip& c, const torch::Tensor& lo, const torch::Tensor& hi) const {
  torch::NoGradGuard no_grad;
  const QParams qp = qparams_from_range(lo, hi, lsq_spec(config_));  // zero: an integer in [0, 2^b - 1]
  c.step.fill_(qp.scale.item<float>());
  c.offset.fill_(qp.zero.item<float>());
}

void QatObserver::init_from_batch(Clip& c, const torch::Tensor& local) {
  torch::NoGradGuard no_grad;
  const torch::Tensor x = gather_ ? gather_(local.detach()) : local.detach();
  if (config_.learns_steps()) {
    OUTQ_CHECK(torch::isfinite(x).all().item<bool>(), "QAT step initialisation: the first batch holds non-finite values");
    const auto [lo, hi] = observe_range(x.detach(), lsq_spec(config_));
    set_lsq_range(c, lo, hi);
    c.initialized = true;
    return;
  }
  const auto [lo, hi] = torch::aminmax(x.detach());
  float a = hi.item<float>(), b = lo.item<float>();
  OUTQ_CHECK(std::isfinite(a) && std::isfinite(b), "QAT clip initialisation: the first batch holds non-finite values");
  if (!(a > b)) a = b + 1e-3f;  // a constant input: any non-empty range
  c.alpha.fill_(a);
  c.beta.fill_(b);
  c.initialized = true;
}

int QatObserver::slot(const ObservationPoint& p) const {
  return p.slot >= 0 && config_.uses_input(p.slot) ? p.slot : -1;
}

torch::Tensor QatObserver::observe(const ObservationPoint& point, const torch::Tensor& x) {
  const int s = slot(point);
  if (s < 0) return x;
  if (point.kind == PointKind::kLinearInput) {
    if (quantizing()) {
      // q/k/v (and gate/up) see the same input tensor: quantize it once and share the result, so
      // the three linears feed one quantizer node (gradients add up exactly as for a fused GEMM).
      if (x.unsafeGetTensorImpl() == last_input_.get() && x.sizes() == last_output_.sizes()) return last_output_;
      Clip& c = clips_[point.layer][s];
      if (!c.initialized && torch::GradMode::is_enabled()) init_from_batch(c, x);
      if (config_.learns_steps()) {
        const double scale = config_.lsq_grad_scale ? lsq_grad_scale(x.numel() * ranks_, (int64_t{1} << config_.bits) - 1) : 1.0;
        last_output_ = lsq_quant(x, c.step, c.offset, config_.bits, scale);
      } else {
        last_output_ = learned_clip_quant(x, c.alpha, c.beta, config_.bits);
      }
      last_input_ = x.getIntrusivePtr();
      return last_output_;
    }
    if (config_.quantizes()) return x;  // before qat.start_step
    if (config_.clamps()) {
      const Clip& c = clips_[point.layer][s];
      return torch::clamp(x, c.beta, c.alpha);  // tensor bounds: no host read per forward
    }
    return x;
  }
  if (config_.penalizes() && torch::GradMode::is_enabled()) {  // training forward: a quantized layer's output
    torch::Tensor k = kurtosis_penalty(x);
    if (config_.kurtosis_reduction == "mean") k = k / static_cast<double>(x.numel() / x.size(-1));
    penalty_ = penalty_.defined() ? penalty_ + k : k;
  }
  return x;
}

void QatObserver::set_step(int64_t step) {
  quantizing_ = step >= config_.start_step;
  // Up to and including the first quantized step the clips are (re)set from the batch, whatever a
  // resumed checkpoint held; after it they are learned values.
  if (!config_.quantizes() || step > config_.start_step || config_.clip_init_from != "first_batch") return;
  for (auto& layer : clips_)
    for (auto& c : layer) c.initialized = false;
}

int QatObserver::constrain_clips() {
  torch::NoGradGuard no_grad;
  int changed = 0;
  for (auto& layer : clips_)
    for (auto& c : layer) {
      if (config_.learns_steps()) {
        if (!(c.step.item<double>() >= 0.99 * kMinStep)) c.step.fill_(kMinStep), ++changed;  // slack: float32 storage
        continue;
      }
      const double a = c.alpha.item<double>(), b = c.beta.item<double>();
      if (a - b >= 0.99 * kMinClipWidth) continue;  // slack for the float32 storage of a pair set here
      const double mid = 0.5 * (a + b);
      c.alpha.fill_(mid + 0.5 * kMinClipWidth);
      c.beta.fill_(mid - 0.5 * kMinClipWidth);
      ++changed;
    }
  return changed;
}

std::vector<torch::Tensor> QatObserver::parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& layer : clips_)
    for (const auto& c : layer)
      for (const auto& [name, t] : range_tensors(c)) out.push_back(t);
  return out;
}

torch::Tensor QatObserver::take_penalty() {
  torch::Tensor p = penalty_.defined() ? penalty_ * config_.kurtosis_lambda : torch::zeros({});
  penalty_ = torch::Tensor();
  return p;
}

std::map<std::string, torch::Tensor> QatObserver::named_clips() const {
  std::map<std::string, torch::Tensor> out;
  for (size_t l = 0; l < clips_.size(); ++l)
    for (int s = 0; s < num_slots(); ++s)
      for (const auto& [name, t] : range_tensors(clips_[l][s]))
        out[fmt::format("layers.{}.{}.{}", l, slot_name(s), name)] = t.detach().reshape({1});
  return out;
}

void QatObserver::load_clips(const std::map<std::string, torch::Tensor>& clips) {
  torch::NoGradGuard no_grad;
  for (size_t l = 0; l < clips_.size(); ++l)
    for (int s = 0; s < num_slots(); ++s) {
      for (auto& [which, t] : range_tensors(clips_[l][s])) {
        const std::string name = fmt::format("layers.{}.{}.{}", l, slot_name(s), which);
        auto it = clips.find(name);
        OUTQ_CHECK(it != clips.end() && it->second.numel() == 1, "QAT ranges: expected one value for ", name, ", found ",
                   it == clips.end() ? "none" : std::to_string(it->second.numel()));
        t.copy_(it->second.reshape({}));
      }
      clips_[l][s].initialized = true;
    }
}

namespace {
// The linear modules that read slot s (one range per input, shared by them).
const std::vector<std::string>& slot_linears(int s) { return block_schema().slots[static_cast<size_t>(s)].linears; }
}  // namespace

nlohmann::json QatObserver::clips_json() const {
  nlohmann::json out = nlohmann::json::object();
  for (size_t l = 0; l < clips_.size(); ++l)
    for (int s = 0; s < num_slots(); ++s)
      for (const auto& m : config_.uses_input(s) ? slot_linears(s) : std::vector<std::string>{}) {
        const Clip& c = clips_[l][s];
        const auto [beta, alpha] = range_of(c);
        nlohmann::json entry = {{"alpha", alpha}, {"beta", beta}, {"bits", config_.bits},
                                {"kind", config_.clamps() ? "clamp" : "quantize"}};
        if (config_.learns_steps()) {
          entry["step"] = c.step.item<double>();  // exact: float32 values in doubles
          entry["zero_point"] = std::nearbyint(c.offset.item<double>());
        }
        out[block_module(static_cast<int>(l), m)] = entry;
      }
  return out;
}

void QatObserver::load_clips_json(const nlohmann::json& clips, const std::string& origin) {
  OUTQ_CHECK(clips.is_object(), origin, ": expected a JSON object of clip ranges per linear module, found ", clips.type_name());
  torch::NoGradGuard no_grad;
  for (size_t l = 0; l < clips_.size(); ++l)
    for (int s = 0; s < num_slots(); ++s) {
      if (!config_.uses_input(s)) continue;
      std::optional<std::pair<double, double>> range;
      for (const auto& m : slot_linears(s)) {
        const std::string module = block_module(static_cast<int>(l), m);
        OUTQ_CHECK(clips.contains(module), origin, ": expected a range for ", module, ", found none");
        const auto& v = clips[module];
        OUTQ_CHECK(v.is_object() && v.contains("alpha") && v.contains("beta") && v["alpha"].is_number() &&
                       v["beta"].is_number(),
                   origin, ": ", module, ": expected an object with numbers \"alpha\" and \"beta\", found ", v.dump());
        const double a = v["alpha"].get<double>(), b = v["beta"].get<double>();
        OUTQ_CHECK(std::isfinite(a) && std::isfinite(b) && a > b, origin, ": ", module,
                   ": expected finite alpha > beta, found alpha = ", a, ", beta = ", b);
        if (!range) range.emplace(a, b);
        OUTQ_CHECK(range->first == a && range->second == b, origin, ": ", module, ": expected the range of ",
                   block_module(static_cast<int>(l), slot_linears(s)[0]), " (the modules share one input), found another");
      }
      clips_[l][s].alpha.fill_(range->first);
      clips_[l][s].beta.fill_(range->second);
      clips_[l][s].initialized = true;
    }
}

}  // namespace outq

namespace outq {

nlohmann::json QatObserver::clip_summary() const {
  nlohmann::json out = nlohmann::json::object();
  if (!config_.quantizes()) return out;
  for (int s = 0; s < num_slots(); ++s) {
    if (!config_.uses_input(s)) continue;
    double a = 0, b = 0;
    for (const auto& layer : clips_) {
      const auto [lo, hi] = range_of(layer[s]);
      a += hi, b += lo;
    }
    const double n = static_cast<double>(clips_.size());
    out[slot_name(s)] = {b / n, a / n};
  }
  return out;
}

}  // namespace outq

namespace outq {

std::pair<double, double> QatObserver::range_of(const Clip& c) const {
  if (!config_.learns_steps()) return {c.beta.item<double>(), c.alpha.item<double>()};
  // The grid's ends, as the forward computes them: (0 - z) * step and (N - z) * step in float32.
  const float step = c.step.item<float>(), z = std::nearbyint(c.offset.item<float>());
  const float levels = static_cast<float>((1 << config_.bits) - 1);
  return {(0.0f - z) * step, (levels - z) * step};
}

std::vector<std::pair<std::string, torch::Tensor>> QatObserver::range_tensors(const Clip& c) const {
  if (config_.learns_steps()) return {{"step", c.step}, {"offset", c.offset}};
  return {{"alpha", c.alpha}, {"beta", c.beta}};
}

}  // namespace outq
