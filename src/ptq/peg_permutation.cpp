// Range-based PEG permutations from calibration data (see peg_permutation.h).
#include "outq/ptq/peg_permutation.h"

#include <algorithm>
#include <optional>
#include <tuple>

#include "outq/core/error.h"
#include "outq/core/progress.h"
#include "outq/model/block_schema.h"
#include "outq/ptq/activation_quant.h"

namespace outq {
namespace {

// Running per-channel extremes of watched points.
class ChannelRangeObserver : public Observer {
 public:
  explicit ChannelRangeObserver(size_t num_points) : ranges_(num_points) {}
  void watch(int point) { watched_.push_back(point); }
  torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) override {
    if (std::find(watched_.begin(), watched_.end(), point.index) == watched_.end()) return x;
    torch::NoGradGuard no_grad;
    const auto m = x.detach().to(torch::kFloat32).reshape({-1, x.size(-1)});
    const auto lo = std::get<0>(m.min(0)), hi = std::get<0>(m.max(0));
    auto& r = ranges_[point.index];
    if (!r) {
      r = std::make_pair(lo, hi);
    } else {
      r->first = torch::minimum(r->first, lo);
      r->second = torch::maximum(r->second, hi);
    }
    return x;
  }
  const std::optional<std::pair<torch::Tensor, torch::Tensor>>& range(int point) const { return ranges_.at(point); }

 private:
  std::vector<int> watched_;
  std::vector<std::optional<std::pair<torch::Tensor, torch::Tensor>>> ranges_;
};

}  // namespace

std::string peg_permutation_source(const Llama& model, const std::string& point, const QuantSpec& spec) {
  const ObservationPoint& p = model->point(point);
  if (!spec.peg_shared || p.layer < 0) return point;
  const LinearRole role = linear_role(p);
  const bool stream = p.kind == PointKind::kResidual ||
                      (p.kind == PointKind::kLinearInput && !block_schema().slots[static_cast<size_t>(p.slot)].norm.empty()) ||
                      (p.kind == PointKind::kLinearOutput && (role == LinearRole::kAttnOut || role == LinearRole::kMlpDown));
  return stream ? block_module(p.layer, "mlp.down_proj") + ".output" : point;
}

std::map<std::string, std::pair<torch::Tensor, torch::Tensor>> channel_ranges(Llama& model,
                                                                              const std::vector<std::string>& points,
                                                                              const CalibrationData& data) {
  auto observer = std::make_shared<ChannelRangeObserver>(model->points().size());
  for (const auto& p : points) observer->watch(model->point(p).index);
  model->observers().attach_first(observer);
  try {
    Progress progress("channel ranges", data.windows.size(0), "windows");
    run_windows(model, data.windows, data.batch_size, &progress, data.prefix);
    progress.finish();
  } catch (...) {
    model->observers().detach(observer.get());
    throw;
  }
  model->observers().detach(observer.get());
  std::map<std::string, std::pair<torch::Tensor, torch::Tensor>> out;
  for (const auto& p : points) {
    const auto& r = observer->range(model->point(p).index);
    OUTQ_ASSERT(r.has_value(), "channel ranges: point ", p, " saw no data");
    out[p] = *r;
  }
  return out;
}

namespace {

bool wants_permutation(const QuantSpec& s) { return s.enabled() && s.granularity == Granularity::kPeg && s.peg_permute; }

}  // namespace

void set_peg_permutations(Llama& model, std::vector<QuantizedLinear>& linears, std::vector<QuantizedPoint>& points,
                          const CalibrationData& data) {
  // (tensor to permute, its point, its spec)
  std::vector<std::tuple<torch::Tensor*, std::string, const QuantSpec*>> wanted;
  for (auto& rec : linears)
    if (wants_permutation(rec.activation_spec)) wanted.emplace_back(&rec.activation_perm, rec.module + ".input", &rec.activation_spec);
  for (auto& p : points)
    if (wants_permutation(p.spec)) wanted.emplace_back(&p.perm, p.point, &p.spec);
  if (wanted.empty()) return;
  std::vector<std::string> sources;
  for (const auto& [perm, point, spec] : wanted) {
    const std::string src = peg_permutation_source(model, point, *spec);
    if (std::find(sources.begin(), sources.end(), src) == sources.end()) sources.push_back(src);
  }
  OUTQ_CHECK(data.windows.defined() && data.windows.size(0) > 0,
             "per-embedding-group permutation: expected calibration windows, found none");
  const auto ranges = channel_ranges(model, sources, data);
  for (const auto& [perm, point, spec] : wanted) {
    const auto& [lo, hi] = ranges.at(peg_permutation_source(model, point, *spec));
    *perm = range_permutation(lo, hi);
  }
}

}  // namespace outq
