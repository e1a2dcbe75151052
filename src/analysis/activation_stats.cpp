// Streaming activation statistics (see activation_stats.h).
#include "outq/analysis/activation_stats.h"

#include <algorithm>
#include <cmath>

#include "outq/core/error.h"

namespace outq {

std::string point_layer_type(PointKind kind, LinearRole role) {
  if (kind != PointKind::kLinearInput) return "";
  switch (role) {
    case LinearRole::kQkv: return "qkv_input";
    case LinearRole::kAttnOut: return "attn_out_input";
    case LinearRole::kMlpIn: return "mlp_input";
    case LinearRole::kMlpDown: return "mlp_down_input";
    case LinearRole::kNone: return "";
  }
  return "";
}

ActivationStats::ActivationStats(const std::vector<ObservationPoint>& all_points, const std::vector<int>& points,
                                 int keep_top, int heatmap_point)
    : slot_of_point_(all_points.size(), -1), keep_top_(keep_top), heatmap_point_(heatmap_point) {
  for (int p : points) {
    OUTQ_ASSERT(p >= 0 && p < static_cast<int>(all_points.size()), "bad point index ", p);
    slot_of_point_[p] = static_cast<int>(acc_.size());
    Acc a;
    a.point = all_points[p];
    a.top.reserve(2 * static_cast<size_t>(keep_top));  // kept + one batch's candidates: fixed size
    acc_.push_back(std::move(a));
  }
}

void ActivationStats::begin_batch(const torch::Tensor& tokens, int64_t first_window) {
  tokens_ = tokens.to(torch::kCPU, torch::kInt64);
  first_window_ = first_window;
}

torch::Tensor ActivationStats::observe(const ObservationPoint& point, const torch::Tensor& x_in) {
  const int slot = slot_of_point_[point.index];
  if (slot < 0) return x_in;
  torch::NoGradGuard no_grad;
  Acc& a = acc_[slot];
  const auto x3 = x_in.detach().to(torch::kCPU, torch::kFloat64);  // (B, T, C)
  const int64_t B = x3.size(0), T = x3.size(1), C = x3.size(2);
  const auto x = x3.reshape({B * T, C});
  const auto ax = x.abs();
  if (!a.sum_abs.defined()) {
    a.sum_abs = torch::zeros({C}, torch::kFloat64);
    a.sum = torch::zeros({C}, torch::kFloat64);
    a.sum_sq = torch::zeros({C}, torch::kFloat64);
    a.max_abs = torch::zeros({C}, torch::kFloat64);
  }
  a.sum_abs += ax.sum(0);
  a.sum += x.sum(0);
  a.sum_sq += (x * x).sum(0);
  a.max_abs = torch::maximum(a.max_abs, ax.amax(0));
  a.tokens += B * T;

  // Kurtosis of each token's vector over channels: E[(v - mean)^4] / Var^2 (a Gaussian gives 3).
  const auto d = x - x.mean(-1, true);
  const auto var = (d * d).mean(-1);
  const auto kurt = torch::where(var > 0, (d * d * d * d).mean(-1) / (var * var), torch::zeros_like(var));
  a.kurt_sum += kurt.sum().item<double>();
  a.kurt_max = std::max(a.kurt_max, kurt.max().item<double>());

  // Token-wise absmax and spike ratio per sequence (max over tokens / median over tokens).
  const auto tok_absmax = ax.amax(-1).reshape({B, T});
  const auto med = std::get<0>(tok_absmax.median(-1));
  const auto [mx, arg] = tok_absmax.max(-1);
  const auto ratio = torch::where(med > 0, mx / med, torch::zeros_like(mx));
  for (int64_t b = 0; b < B; ++b) {
    const double r = ratio[b].item<double>();
    a.spike_sum += r;
    if (r > a.spike_max) {
      a.spike_max = r;
      a.spike_window = first_window_ + b;
      a.spike_position = arg[b].item<int64_t>();
      a.spike_token = tokens_.defined() ? static_cast<int32_t>(tokens_[b][a.spike_position].item<int64_t>()) : -1;
    }
  }
  if (a.sequences == 0 && first_window_ == 0) {
    const auto first = tok_absmax[0].to(torch::kFloat32).contiguous();
    a.first_absmax.assign(first.data_ptr<float>(), first.data_ptr<float>() + T);
  }
  a.sequences += B;
  if (point.index == heatmap_point_ && first_window_ == 0 && !heatmap_.defined()) {
    heatmap_ = ax.reshape({B, T, C})[0].to(torch::kFloat32).clone();
  }

  // Largest values: merge this batch's top-k into the kept list.
  const auto flat = ax.flatten();
  const int64_t k = std::min<int64_t>(keep_top_, flat.numel());
  const auto [vals, idx] = flat.topk(k);
  for (int64_t i = 0; i < k; ++i) {
    const int64_t f = idx[i].item<int64_t>();
    TopValue t;
    t.value = vals[i].item<double>();
    t.window = first_window_ + f / (T * C);
    t.position = (f / C) % T;
    t.channel = f % C;
    t.token = tokens_.defined() ? static_cast<int32_t>(tokens_[t.window - first_window_][t.position].item<int64_t>()) : -1;
    a.top.push_back(t);
  }
  std::sort(a.top.begin(), a.top.end(), [](const TopValue& l, const TopValue& r) { return l.value > r.value; });
  if (static_cast<int>(a.top.size()) > keep_top_) a.top.resize(keep_top_);
  return x_in;
}

std::vector<PointStats> ActivationStats::finish() const {
  std::vector<PointStats> out;
  for (const Acc& a : acc_) {
    PointStats s;
    s.name = a.point.name;
    s.kind = a.point.kind;
    s.layer = a.point.layer;
    s.role = linear_role(a.point);
    s.tokens = a.tokens;
    s.sequences = a.sequences;
    if (a.tokens == 0) {
      out.push_back(std::move(s));
      continue;
    }
    const double n = static_cast<double>(a.tokens);
    const auto mean_abs = a.sum_abs / n, mean = a.sum / n;
    const auto std = torch::sqrt(torch::clamp_min(a.sum_sq / n - mean * mean, 0.0));
    auto to_vec = [](const torch::Tensor& t) {
      const auto c = t.contiguous();
      return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
    };
    s.channels = mean_abs.numel();
    s.mean_abs = to_vec(mean_abs);
    s.mean = to_vec(mean);
    s.std = to_vec(std);
    s.max_abs = to_vec(a.max_abs);
    s.layer_mean_abs = mean_abs.mean().item<double>();
    for (int64_t c = 0; c < s.channels; ++c)
      if (s.mean_abs[c] > 6.0 * s.layer_mean_abs) s.outlier_channels.push_back(c);
    std::sort(s.outlier_channels.begin(), s.outlier_channels.end(),
              [&](int64_t l, int64_t r) { return s.mean_abs[l] > s.mean_abs[r]; });
    s.kurtosis_mean = a.kurt_sum / n;
    s.kurtosis_max = a.kurt_max;
    s.spike_ratio_mean = a.spike_sum / static_cast<double>(a.sequences);
    s.spike_ratio_max = a.spike_max;
    s.spike_window = a.spike_window;
    s.spike_position = a.spike_position;
    s.spike_token = a.spike_token;
    s.top = a.top;
    s.first_window_token_absmax = a.first_absmax;
    out.push_back(std::move(s));
  }
  return out;
}

size_t ActivationStats::state_bytes() const {
  size_t bytes = 0;
  for (const Acc& a : acc_) {
    if (a.sum_abs.defined()) bytes += 4 * static_cast<size_t>(a.sum_abs.numel()) * sizeof(double);
    bytes += a.top.capacity() * sizeof(TopValue) + a.first_absmax.capacity() * sizeof(float);
  }
  return bytes;
}

nlohmann::json point_stats_json(const PointStats& s, bool with_channels) {
  nlohmann::json top = nlohmann::json::array();
  for (const auto& t : s.top)
    top.push_back({{"abs", t.value}, {"window", t.window}, {"position", t.position}, {"channel", t.channel}, {"token", t.token}});
  nlohmann::json j = {{"name", s.name},
                      {"layer", s.layer},
                      {"channels", s.channels},
                      {"tokens", s.tokens},
                      {"layer_mean_abs", s.layer_mean_abs},
                      {"outlier_channels", s.outlier_channels},
                      {"max_abs", s.max_abs.empty() ? 0.0 : *std::max_element(s.max_abs.begin(), s.max_abs.end())},
                      {"kurtosis_mean", s.kurtosis_mean},
                      {"kurtosis_max", s.kurtosis_max},
                      {"spike_ratio_mean", s.spike_ratio_mean},
                      {"spike_ratio_max", s.spike_ratio_max},
                      {"spike", {{"window", s.spike_window}, {"position", s.spike_position}, {"token", s.spike_token}}},
                      {"top_values", top}};
  if (with_channels) {
    j["per_channel"] = {{"mean_abs", s.mean_abs}, {"mean", s.mean}, {"std", s.std}, {"max_abs", s.max_abs}};
  }
  return j;
}

}  // namespace outq
