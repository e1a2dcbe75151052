// Model analysis: activation and weight statistics, summaries, JSON, plots and emergence.
#include "outq/analysis/analyze.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "outq/core/error.h"
#include "outq/core/plot.h"
#include "outq/core/progress.h"
#include "outq/core/table.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

double max_over_median(std::vector<double> v) {
  if (v.empty()) return 0;
  const double mx = *std::max_element(v.begin(), v.end());
  std::nth_element(v.begin(), v.begin() + (v.size() - 1) / 2, v.end());
  const double med = v[(v.size() - 1) / 2];
  return med > 0 ? mx / med : 0.0;
}

std::vector<double> to_vector(const torch::Tensor& t) {
  const auto c = t.to(torch::kFloat64).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

std::string token_text(const Tokenizer* tok, int32_t id) {
  if (!tok || id < 0) return std::to_string(id);
  std::string p = tok->piece(id);
  for (auto& c : p)
    if (c == '\n') c = ' ';
  return p;
}

const char* kLayerTypes[] = {"qkv_input", "attn_out_input", "mlp_input", "mlp_down_input"};

}  // namespace

std::vector<WeightStats> weight_stats(Llama& model) {
  torch::NoGradGuard no_grad;
  std::vector<WeightStats> out;
  for (const auto& m : model->linear_modules()) {
    const auto w = model->linear_weight(m).detach().to(torch::kCPU, torch::kFloat64);
    WeightStats s;
    s.name = m;
    s.rows = w.size(0);
    s.cols = w.size(1);
    s.in_magnitude = to_vector(w.abs().mean(0));
    s.out_magnitude = to_vector(w.abs().mean(1));
    s.in_max_median = max_over_median(s.in_magnitude);
    s.out_max_median = max_over_median(s.out_magnitude);
    const auto d = w - w.mean();
    const double var = (d * d).mean().item<double>();
    s.kurtosis = var > 0 ? (d * d * d * d).mean().item<double>() / (var * var) : 0.0;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<int> analysis_points(Llama& model) {
  std::vector<int> out;
  for (const auto& p : model->points()) {
    const bool dup_input = p.kind == PointKind::kLinearInput &&
                           (p.module.find("k_proj") != std::string::npos || p.module.find("v_proj") != std::string::npos ||
                            p.module.find("up_proj") != std::string::npos);
    if (!dup_input && p.kind != PointKind::kAttention) out.push_back(p.index);  // (B, H, T, S) has no channels
  }
  return out;
}

AnalysisResult analyze_model(Llama& model, const TokenShard& shard, const AnalyzeOptions& o) {
  OUTQ_CHECK(o.seq_len >= 2 && o.seq_len <= model->config().max_position_embeddings,
             "analysis seq_len: expected 2 .. max_position_embeddings = ", model->config().max_position_embeddings,
             ", found ", o.seq_len);
  const auto t0 = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  model->eval();
  AnalysisResult r;
  const std::vector<int> points = analysis_points(model);
  // Heat-map point: as given, else decided after a first look (the linear input with the largest |x|).
  int heat = -1;
  if (!o.heatmap_point.empty()) heat = model->point(o.heatmap_point).index;
  const int64_t text = o.seq_len - 1;  // BOS + text tokens per window
  const uint64_t usable = std::min<uint64_t>(shard.size(), o.max_tokens > 0 ? static_cast<uint64_t>(o.max_tokens) : shard.size());
  const int64_t windows = static_cast<int64_t>(usable / static_cast<uint64_t>(text));
  OUTQ_CHECK(windows >= 1, "analysis: expected at least one window of ", text, " tokens, found ", usable, " tokens");
  auto windows_tensor = torch::empty({windows, o.seq_len}, torch::kInt64);
  {
    std::vector<int32_t> buf(static_cast<size_t>(text));
    for (int64_t w = 0; w < windows; ++w) {
      shard.copy(static_cast<uint64_t>(w * text), static_cast<uint64_t>(text), buf.data());
      windows_tensor[w][0] = o.bos_id;
      windows_tensor[w].slice(0, 1).copy_(torch::from_blob(buf.data(), {text}, torch::kInt32));
    }
  }
  if (heat < 0 && o.heatmap) {
    // A cheap first look at window 0 picks the linear input with the largest |x|.
    ActivationStats probe(model->points(), points, 1);
    probe.begin_batch(windows_tensor.slice(0, 0, 1), 0);
    model->observers().attach_first(std::shared_ptr<Observer>(&probe, [](Observer*) {}));
    model->forward(windows_tensor.slice(0, 0, 1));
    model->observers().detach(&probe);
    // The linear input whose loudest channel stands out most from the rest (outlier channels show
    // as stripes in the heat map).
    double best = -1;
    for (const auto& s : probe.finish()) {
      if (s.kind != PointKind::kLinearInput || s.mean_abs.empty() || s.layer_mean_abs <= 0) continue;
      const double ratio = *std::max_element(s.mean_abs.begin(), s.mean_abs.end()) / s.layer_mean_abs;
      if (ratio > best) best = ratio, heat = model->point(s.name).index;
    }
  }
  if (heat >= 0) r.heatmap_point = model->points()[heat].name;
  auto stats = std::make_shared<ActivationStats>(model->points(), points, 5, heat);
  model->observers().attach_first(stats);  // statistics of the tensors before any quantizer
  std::unique_ptr<Progress> progress;
  if (o.show_progress) progress = std::make_unique<Progress>("analyze", windows * text, "tok");
  const torch::Device device = model->parameters().front().device();
  for (int64_t w = 0; w < windows; w += o.batch_size) {
    const auto batch = windows_tensor.slice(0, w, std::min(w + o.batch_size, windows));
    stats->begin_batch(batch, w);
    model->forward(batch.to(device));
    if (progress) progress->advance(batch.size(0) * text);
  }
  if (progress) progress->finish();
  model->observers().detach(stats.get());
  r.points = stats->finish();
  r.heatmap = stats->heatmap();
  const auto first = windows_tensor[0].to(torch::kInt32).contiguous();
  r.first_window_tokens.assign(first.data_ptr<int32_t>(), first.data_ptr<int32_t>() + first.numel());
  r.weights = weight_stats(model);
  r.tokens = windows * text;
  r.state_bytes = stats->state_bytes();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

nlohmann::json layer_type_summary(const std::vector<PointStats>& points) {
  nlohmann::json out = nlohmann::json::object();
  for (const char* type : kLayerTypes) out[type] = {{"outliers", nlohmann::json::array()}, {"kurtosis_max", nlohmann::json::array()}};
  for (const auto& s : points) {
    const std::string type = point_layer_type(s.kind, s.role);
    if (type.empty()) continue;
    out[type]["outliers"].push_back(s.outlier_channels.size());
    out[type]["kurtosis_max"].push_back(s.kurtosis_max);
  }
  return out;
}

nlohmann::json analysis_json(const AnalysisResult& r, const Tokenizer* tok) {
  nlohmann::json points = nlohmann::json::array();
  for (const auto& s : r.points) {
    auto j = point_stats_json(s, true);
    for (auto& t : j["top_values"]) t["token_text"] = token_text(tok, t["token"].get<int32_t>());
    j["spike"]["token_text"] = token_text(tok, s.spike_token);
    points.push_back(j);
  }
  nlohmann::json weights = nlohmann::json::array();
  for (const auto& w : r.weights) {
    weights.push_back({{"name", w.name}, {"rows", w.rows}, {"cols", w.cols}, {"in_max_median", w.in_max_median},
                       {"out_max_median", w.out_max_median}, {"kurtosis", w.kurtosis},
                       {"in_magnitude", w.in_magnitude}, {"out_magnitude", w.out_magnitude}});
  }
  return {{"format", "outq-analysis"}, {"version", 1},       {"tokens", r.tokens},
          {"seconds", r.seconds},      {"heatmap_point", r.heatmap_point},
          {"by_layer_type", layer_type_summary(r.points)}, {"points", points}, {"weights", weights}};
}

std::string analysis_summary(const AnalysisResult& r, const Tokenizer* tok) {
  std::string out = fmt::format("analysed {} tokens in {:.1f} s ({} points)\n\n", format_count(r.tokens), r.seconds, r.points.size());
  Table t({"point", "mean|x|", "max|x|", "outlier ch.", "top channels (x mean|x|)", "kurtosis mean/max", "spike max/median"});
  for (const auto& s : r.points) {
    if (s.kind == PointKind::kLinearOutput) continue;  // inputs and residuals in the summary
    std::string top;
    for (size_t i = 0; i < std::min<size_t>(3, s.outlier_channels.size()); ++i) {
      const int64_t c = s.outlier_channels[i];
      top += fmt::format("{}{} ({:.0f}x)", i ? ", " : "", c, s.mean_abs[c] / s.layer_mean_abs);
    }
    const double mx = s.max_abs.empty() ? 0 : *std::max_element(s.max_abs.begin(), s.max_abs.end());
    t.add_row({s.name, fmt::format("{:.3f}", s.layer_mean_abs), fmt::format("{:.2f}", mx),
               std::to_string(s.outlier_channels.size()), top.empty() ? "-" : top,
               fmt::format("{:.1f} / {:.0f}", s.kurtosis_mean, s.kurtosis_max),
               fmt::format("{:.1f} at '{}'", s.spike_ratio_max, token_text(tok, s.spike_token))});
  }
  out += t.render();
  // The largest values anywhere, with context.
  std::vector<std::pair<const PointStats*, TopValue>> all;
  for (const auto& s : r.points)
    for (const auto& v : s.top) all.emplace_back(&s, v);
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.second.value > b.second.value; });
  out += "\nlargest activations:\n";
  for (size_t i = 0; i < std::min<size_t>(5, all.size()); ++i) {
    const auto& [s, v] = all[i];
    out += fmt::format("  |x| = {:.2f} at {} channel {} (window {}, position {}, token '{}')\n", v.value, s->name,
                       v.channel, v.window, v.position, token_text(tok, v.token));
  }
  Table w({"weight", "in-channel max/median", "out-channel max/median", "kurtosis"});
  for (const auto& ws : r.weights)
    w.add_row({ws.name, fmt::format("{:.2f}", ws.in_max_median), fmt::format("{:.2f}", ws.out_max_median), fmt::format("{:.2f}", ws.kurtosis)});
  out += "\n" + w.render();
  return out;
}

void analysis_plots(const AnalysisResult& r, const std::string& dir) {
  if (r.heatmap.defined()) {
    HeatMap h;
    h.title = "|x| at " + r.heatmap_point + " (one sequence)";
    h.xlabel = "channel";
    h.ylabel = "token position";
    h.cblabel = "|x| (log scale)";
    h.rows = r.heatmap.size(0);
    h.cols = r.heatmap.size(1);
    h.log_color = true;  // a few large values next to many small ones: log colours show both
    const auto c = torch::clamp_min(r.heatmap, 1e-3).contiguous();
    h.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
    plot_heatmap(h, (fs::path(dir) / "heatmap.png").string());
  }
  const std::string module = r.heatmap_point.substr(0, r.heatmap_point.rfind('.'));
  for (const auto& w : r.weights) {
    if (w.name != module) continue;
    LinePlot p;
    p.title = "per-input-channel weight magnitude, " + w.name;
    p.xlabel = "input channel";
    p.ylabel = "mean |W[:, i]|";
    PlotSeries s{"mean |W[:, i]|", {}, w.in_magnitude};
    for (size_t i = 0; i < w.in_magnitude.size(); ++i) s.x.push_back(static_cast<double>(i));
    p.series = {s};
    plot_lines(p, (fs::path(dir) / "weights.png").string());
  }
  LinePlot spikes;
  spikes.title = "token-wise max |x| along one sequence (MLP down-projection inputs)";
  spikes.xlabel = "token position";
  spikes.ylabel = "max over channels of |x| (log scale)";
  spikes.log_y = true;
  for (const auto& s : r.points) {
    if (s.kind != PointKind::kLinearInput || s.role != LinearRole::kMlpDown || s.first_window_token_absmax.empty()) continue;
    PlotSeries ps{fmt::format("layer {} (max/median {:.1f})", s.layer, s.spike_ratio_max), {}, {}};
    for (size_t t = 0; t < s.first_window_token_absmax.size(); ++t) {
      ps.x.push_back(static_cast<double>(t));
      ps.y.push_back(std::max(1e-6, static_cast<double>(s.first_window_token_absmax[t])));
    }
    spikes.series.push_back(std::move(ps));
  }
  if (!spikes.series.empty()) plot_lines(spikes, (fs::path(dir) / "spikes.png").string());
}

std::vector<std::pair<int64_t, nlohmann::json>> emergence_from_metrics(const std::string& run_dir) {
  std::vector<std::pair<int64_t, nlohmann::json>> out;
  const fs::path path = fs::path(run_dir) / "metrics.jsonl";
  OUTQ_CHECK(fs::exists(path), path.string(), ": not found (expected the metrics of an `outq train` run)");
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    try {
      const auto j = nlohmann::json::parse(line);
      if (j.value("type", "") == "stats") out.emplace_back(j.at("step").get<int64_t>(), j.at("by_layer_type"));
    } catch (const nlohmann::json::exception&) {
      // an incomplete last line of a killed run
    }
  }
  return out;
}

void emergence_plot(const std::vector<std::pair<int64_t, nlohmann::json>>& series, const std::string& png) {
  LinePlot p;
  p.title = "outlier channels (6x rule) by training step, summed over depth";
  p.xlabel = "step";
  p.ylabel = "outlier channels";
  for (const char* type : kLayerTypes) {
    PlotSeries s{type, {}, {}};
    for (const auto& [step, summary] : series) {
      double total = 0;
      for (const auto& v : summary.at(type).at("outliers")) total += v.get<double>();
      s.x.push_back(static_cast<double>(step));
      s.y.push_back(total);
    }
    p.series.push_back(std::move(s));
  }
  plot_lines(p, png);
}

std::string emergence_table(const std::vector<std::pair<int64_t, nlohmann::json>>& series) {
  std::vector<std::string> header = {"step"};
  for (const char* type : kLayerTypes) header.push_back(std::string(type) + " (by depth)");
  Table t(header);
  for (const auto& [step, summary] : series) {
    std::vector<std::string> row = {std::to_string(step)};
    for (const char* type : kLayerTypes) {
      std::string cell;
      for (const auto& v : summary.at(type).at("outliers")) cell += (cell.empty() ? "" : " ") + std::to_string(v.get<int64_t>());
      row.push_back(cell);
    }
    t.add_row(row);
  }
  return t.render();
}

}  // namespace outq
