// Token-wise absmax of every slot's input over calibration sequences, and the spike ratios.
#include "outq/ptq/spike_stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "outq/core/error.h"
#include "outq/core/progress.h"
#include "outq/core/table.h"
#include "outq/ptq/activation_quant.h"
#include "outq/model/block_schema.h"

namespace outq {
namespace {

// Collects (B, T) token-wise absmax rows at the first linear input of every slot.
class TokenAbsMax : public Observer {
 public:
  explicit TokenAbsMax(const Llama& model) {
    for (const auto& p : model->points())
      if (is_slot_input(p)) rows_[p.index];
  }
  torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) override {
    auto it = rows_.find(point.index);
    if (it == rows_.end()) return x;
    const auto a = x.detach().abs().amax(-1).to(torch::kFloat32);  // (B, T)
    OUTQ_CHECK(torch::isfinite(a).all().item<bool>(), "spike calibration: non-finite activations at ", point.name);
    it->second.push_back(a);
    return x;
  }
  torch::Tensor rows(int point) const { return torch::cat(rows_.at(point), 0); }

 private:
  std::map<int, std::vector<torch::Tensor>> rows_;
};

}  // namespace

torch::Tensor spike_ratio_per_sequence(const torch::Tensor& absmax) {
  OUTQ_CHECK(absmax.dim() == 2 && absmax.size(1) >= 1, "spike ratio: expected (sequences, tokens), found ",
             absmax.sizes());
  const auto a = absmax.to(torch::kFloat64);
  const auto median = std::get<0>(a.median(1));
  const auto peak = std::get<0>(a.max(1));
  // An all-zero row (a dead input) has no spike: ratio 1.
  return torch::where(median > 0, peak / median.clamp_min(1e-300), torch::ones_like(peak));
}

const SlotSpikes& SpikeStats::top() const {
  OUTQ_CHECK(!slots.empty(), "spike statistics: no slots measured");
  return *std::max_element(slots.begin(), slots.end(),
                           [](const SlotSpikes& a, const SlotSpikes& b) { return a.ratio < b.ratio; });
}

nlohmann::json SpikeStats::to_json() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : slots)
    out.push_back({{"module", s.module}, {"modules", s.modules}, {"layer", s.layer},
                   {"slot", block_schema().slots[static_cast<size_t>(s.slot)].name}, {"ratio", s.ratio},
                   {"peak", s.peak}, {"median", s.median}});
  return out;
}

std::string SpikeStats::table(const std::vector<std::string>& excluded) const {
  std::vector<const SlotSpikes*> order;
  for (const auto& s : slots) order.push_back(&s);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) { return a->ratio > b->ratio; });
  Table t({"input of", "slot", "spike ratio", "peak |x|", "median |x|", "activations"});
  for (const auto* s : order) {
    const bool ex = std::find(excluded.begin(), excluded.end(), s->module) != excluded.end();
    t.add_row({s->module, block_schema().slots[static_cast<size_t>(s->slot)].name, fmt::format("{:.1f}", s->ratio),
               fmt::format("{:.2f}", s->peak), fmt::format("{:.3f}", s->median), ex ? "float (QFeM)" : "quantized"});
  }
  return t.render();
}

SpikeStats measure_spikes(Llama& model, const CalibrationData& data, const std::string& label) {
  OUTQ_CHECK(data.windows.defined() && data.windows.size(0) > 0, label, ": expected calibration windows, found none");
  auto observer = std::make_shared<TokenAbsMax>(model);
  model->observers().attach(observer);
  Progress progress(label, data.windows.size(0), "windows");
  try {
    run_windows(model, data.windows, data.batch_size, &progress, data.prefix);
  } catch (...) {
    model->observers().detach(observer.get());
    throw;
  }
  progress.finish();
  model->observers().detach(observer.get());
  SpikeStats out;
  out.sequences = data.windows.size(0);
  out.tokens = data.prefix ? tokens_after_prefix(model, data.windows, *data.prefix) : data.windows;
  for (const auto& p : model->points()) {
    if (!is_slot_input(p)) continue;
    const auto& slot = block_schema().slots[static_cast<size_t>(p.slot)];
    SlotSpikes s;
    s.module = p.module;
    for (const auto& lin : slot.linears) s.modules.push_back(block_module(p.layer, lin));
    s.layer = p.layer;
    s.slot = p.slot;
    s.absmax = observer->rows(p.index);
    s.ratio = spike_ratio_per_sequence(s.absmax).mean().item<double>();
    s.peak = s.absmax.max().item<double>();
    s.median = std::get<0>(s.absmax.to(torch::kFloat64).median(1)).mean().item<double>();
    out.slots.push_back(std::move(s));
  }
  return out;
}

}  // namespace outq
