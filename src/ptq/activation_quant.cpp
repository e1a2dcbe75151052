// Activation fake quantization, range calibration, learned (QAT) ranges and calibration windows.
#include "outq/ptq/activation_quant.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <utility>

#include "outq/core/error.h"
#include "outq/core/json_file.h"
#include "outq/core/progress.h"
#include "outq/data/sampler.h"

namespace outq {

void RangeCalibrator::watch(int point, const QuantSpec& spec, const torch::Tensor& perm) {
  watched_.at(point) = Watch{spec, perm, {}, {}, 0};
}

torch::Tensor RangeCalibrator::observe(const ObservationPoint& point, const torch::Tensor& x) {
  auto& w = watched_[point.index];
  if (!w) return x;
  auto [lo, hi] = observe_range(x, w->spec, w->perm);
  if (w->batches == 0) {
    w->lo = lo;
    w->hi = hi;
  } else if (w->spec.range == RangeMethod::kMinMax) {
    w->lo = torch::minimum(w->lo, lo);
    w->hi = torch::maximum(w->hi, hi);
  } else {
    w->lo = w->lo + lo;  // summed; divided by the batch count in qparams()
    w->hi = w->hi + hi;
  }
  ++w->batches;
  return x;
}

QParams RangeCalibrator::qparams(int point) const {
  const auto& w = watched_.at(point);
  OUTQ_ASSERT(w && w->batches > 0, "calibration saw no data at point ", point);
  const bool running = w->spec.range == RangeMethod::kMinMax;
  const double n = running ? 1.0 : static_cast<double>(w->batches);
  return qparams_from_range(w->lo / n, w->hi / n, w->spec);
}

LearnedRanges learned_ranges_load(const std::string& path) {
  return learned_ranges_from_json(json_read_object(path, "learned clip values (clips.json)"), path);
}

LearnedRanges learned_ranges_from_json(const nlohmann::json& j, const std::string& path) {
  LearnedRanges out;
  for (const auto& [module, v] : j.items()) {
    const std::string where = path + ": " + module;
    OUTQ_CHECK(v.is_object() && v.contains("alpha") && v.contains("beta") && v["alpha"].is_number() &&
                   v["beta"].is_number(),
               where, ": expected an object with numbers \"alpha\" and \"beta\", found ", v.dump());
    LearnedRange r{v["alpha"].get<double>(), v["beta"].get<double>(), json_value<int>(v, "bits", 4, where)};
    const std::string kind = json_value<std::string>(v, "kind", "quantize", where);
    if (kind != "quantize" && kind != "clamp") fail_mismatch(where, "kind", "\"quantize\" or \"clamp\"", kind);
    r.clamp_only = kind == "clamp";
    if (!(std::isfinite(r.alpha) && std::isfinite(r.beta) && r.alpha > r.beta)) {
      fail_mismatch(where, "alpha, beta", "finite clip values with alpha > beta", fmt::format("{}, {}", r.alpha, r.beta));
    }
    if (r.bits < 2 || r.bits > 8) fail_mismatch(where, "bits", "2..8", std::to_string(r.bits));
    if (v.contains("step") || v.contains("zero_point")) {  // an LSQ grid: its ends must be alpha and beta
      r.step = json_value<double>(v, "step", 0.0, where);
      r.zero_point = json_value<double>(v, "zero_point", -1.0, where);
      const double levels = static_cast<double>((int64_t{1} << r.bits) - 1);
      if (!(std::isfinite(r.step) && r.step > 0 && r.zero_point >= 0 && r.zero_point <= levels &&
            r.zero_point == std::floor(r.zero_point))) {
        fail_mismatch(where, "step, zero_point", fmt::format("a step > 0 and an integer zero point in 0..{}", levels),
                      fmt::format("{}, {}", r.step, r.zero_point));
      }
      const double tol = 1e-6 * (std::abs(r.alpha) + std::abs(r.beta));
      if (std::abs(r.alpha - (levels - r.zero_point) * r.step) > tol || std::abs(r.beta + r.zero_point * r.step) > tol) {
        fail_mismatch(where, "alpha, beta", "the ends of the step's grid, (2^bits - 1 - zero_point) * step and -zero_point * step",
                      fmt::format("{}, {}", r.alpha, r.beta));
      }
    }
    out[module] = r;
  }
  OUTQ_CHECK(!out.empty(), path, ": expected learned clip values for the quantized linear layers, found none");
  return out;
}

namespace {

// Quantized inputs go through the ActivationQuantizer that recipes use; clamp-model inputs are
// clamped to their range.
class LearnedInputs : public Observer {
 public:
  explicit LearnedInputs(size_t num_points) : quantizer_(num_points), clamps_(num_points) {}
  void set(int point, const LearnedRange& r) {
    if (r.clamp_only) {
      clamps_.at(point) = std::make_pair(r.beta, r.alpha);
      return;
    }
    QuantSpec spec;
    spec.bits = r.bits;
    spec.range = RangeMethod::kLearned;
    quantizer_.set(point, ActivationTarget{spec, qparams_from_learned(r, spec), {}});
  }
  torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) override {
    if (const auto& c = clamps_[point.index]) return x.clamp(c->first, c->second);
    return quantizer_.observe(point, x);
  }

 private:
  ActivationQuantizer quantizer_;
  std::vector<std::optional<std::pair<double, double>>> clamps_;  ///< [beta, alpha] of clamped inputs
};

}  // namespace

std::shared_ptr<Observer> learned_input_observer(Llama& model, const LearnedRanges& ranges) {
  auto out = std::make_shared<LearnedInputs>(model->points().size());
  const std::vector<std::string> modules = model->linear_modules();
  for (const auto& [module, range] : ranges) {
    OUTQ_CHECK(std::find(modules.begin(), modules.end(), module) != modules.end(), "clips.json: ", module,
               ": expected a linear module of this model (like ", modules.front(), "), found no such module");
    out->set(model->point(module + ".input").index, range);
  }
  return out;
}

QParams qparams_from_learned(const LearnedRange& range, const QuantSpec& spec) {
  if (range.step > 0 && range.bits == spec.bits && !spec.symmetric) {  // an LSQ grid, as trained
    return {torch::full({1, 1, 1}, static_cast<float>(range.step)), torch::full({1, 1, 1}, static_cast<float>(range.zero_point))};
  }
  const double levels = static_cast<double>(spec.qmax() - spec.qmin());
  const float scale = static_cast<float>((range.alpha - range.beta) / levels);
  const float zero = static_cast<float>(-range.beta / static_cast<double>(scale));
  return {torch::full({1, 1, 1}, scale), torch::full({1, 1, 1}, zero)};
}

torch::Tensor calibration_windows(const TokenShard& shard, const CalibrationOptions& o, int32_t bos_id) {
  OUTQ_CHECK(o.seq_len >= 3, "calibration seq_len: expected >= 3, found ", o.seq_len);
  WindowSampler sampler(shard.size(), o.seq_len - 2, static_cast<uint64_t>(o.seed));  // windows of seq_len - 1 tokens
  std::vector<int32_t> buffer(static_cast<size_t>(o.windows * o.seq_len));
  for (int64_t w = 0; w < o.windows; ++w) {
    int32_t* row = buffer.data() + w * o.seq_len;
    row[0] = bos_id;
    shard.copy(sampler.next(), static_cast<uint64_t>(o.seq_len - 1), row + 1);
  }
  return torch::from_blob(buffer.data(), {o.windows, o.seq_len}, torch::kInt32).to(torch::kInt64);
}

void run_windows(Llama& model, const torch::Tensor& windows, int64_t batch_size, Progress* progress,
                 const TokenPrefix* prefix) {
  torch::NoGradGuard no_grad;
  const torch::Device device = model->parameters().front().device();
  for (int64_t b = 0; b < windows.size(0); b += batch_size) {
    const auto batch = windows.slice(0, b, std::min(b + batch_size, windows.size(0)));
    if (prefix) {
      forward_after_prefix(model, batch.to(device), *prefix);
    } else {
      model->forward(batch.to(device));
    }
    if (progress) progress->advance(batch.size(0));
  }
}

}  // namespace outq
