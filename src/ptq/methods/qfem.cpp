// QFeM, quantization-free modules (Yang et al. 2024; methods spec §3.4): the linears whose input
// carries activation spikes keep float activations; their weights stay quantized (W8A16 / W4A16 on
// the runtime's weight-only kernels). Linears that share an input (q/k/v, gate/up) are excluded
// together, so the unit is a block-schema slot, ranked by its spike ratio (ptq/spike_stats.h).
// Settings (at most one of threshold / modules; neither = automatic):
//   threshold = 20        exclude every slot whose spike ratio exceeds it
//   modules = ["model.layers.1.mlp.down_proj"]   exclude these (globs; siblings follow)
//   tolerance = 0.01      automatic: the smallest exclusion set within this relative perplexity of
//                         the best candidate wins
//   search_windows = 16   automatic: held-out calibration windows the candidates are scored on
// The automatic search scores every distinct ratio as a threshold (none excluded, the top slot,
// the top two, ...) by the quantized model's perplexity on held-out calibration windows.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "methods.h"
#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/log.h"
#include "outq/core/plot.h"
#include "outq/core/progress.h"
#include "outq/core/table.h"
#include "outq/eval/perplexity.h"
#include "outq/model/block_schema.h"
#include "outq/ptq/spike_stats.h"

namespace outq {
namespace {

namespace fs = std::filesystem;

enum class Mode { kAuto, kThreshold, kModules };

struct CurvePoint {
  int64_t slots = 0;          ///< slots excluded (largest ratios first)
  double threshold = 0;       ///< the smallest excluded ratio (infinity: none excluded)
  double perplexity = 0;      ///< on the held-out calibration windows
};

class Qfem : public QuantMethod {
 public:
  explicit Qfem(const MethodEntry& entry) : QuantMethod(entry) {
    const MethodSettings settings(entry, {"threshold", "modules", "tolerance", "search_windows"});
    OUTQ_CHECK(!(settings.has("threshold") && settings.has("modules")), settings.where("threshold"),
               ": expected either threshold or modules (or neither, for the automatic search), found both");
    if (settings.has("threshold")) {
      mode_ = Mode::kThreshold;
      threshold_ = settings.number("threshold", 0);
      OUTQ_CHECK(threshold_ >= 1, settings.where("threshold"), ": expected a spike ratio >= 1 (max / median), found ",
                 threshold_);
    } else if (settings.has("modules")) {
      mode_ = Mode::kModules;
      patterns_ = settings.strings("modules", {});
      OUTQ_CHECK(!patterns_.empty(), settings.where("modules"), ": expected at least one module name or glob, found none");
    }
    tolerance_ = settings.number("tolerance", 0.01);
    OUTQ_CHECK(tolerance_ >= 0 && tolerance_ <= 1, settings.where("tolerance"), ": expected a relative tolerance in [0, 1], found ",
               tolerance_);
    search_windows_ = settings.whole_number("search_windows", 16, 1, 4096);
  }

  bool preserves_float_function() const override { return true; }
  bool needs_calibration() const override { return true; }
  int64_t holdout_windows() const override { return mode_ == Mode::kAuto ? search_windows_ : 0; }

  void check(const Recipe& recipe, const std::vector<std::string>& modules,
             const std::vector<const QuantMethod*>&) const override {
    bool any = false;
    for (const auto& m : modules) any = any || recipe.activation_spec(m).enabled();
    OUTQ_CHECK(any, recipe.source_path, ": qfem keeps spiking inputs in float, but this recipe quantizes no activations; "
               "expected a recipe with quantized activations");
    for (const auto& p : patterns_)
      OUTQ_CHECK(!glob_matches(p, modules).empty(), recipe.source_path, ": qfem.modules: '", p,
                 "' matches no linear module (they are named like ", modules.front(), ")");
  }

  void calibrate(Llama& model, const CalibrationData& data) override {
    stats_ = measure_spikes(model, data, "qfem spike calibration");
    if (mode_ == Mode::kModules) {
      const auto names = model->linear_modules();
      for (const auto& s : stats_.slots) {
        bool hit = false;
        for (const auto& p : patterns_)
          for (const auto& m : glob_matches(p, names)) hit = hit || std::find(s.modules.begin(), s.modules.end(), m) != s.modules.end();
        if (hit) excluded_slots_.push_back(&s - stats_.slots.data());
      }
    } else if (mode_ == Mode::kThreshold) {
      for (const auto& s : stats_.slots)
        if (s.ratio > threshold_) excluded_slots_.push_back(&s - stats_.slots.data());
    }
  }

  void plan(std::vector<QuantizedLinear>& linears) const override {
    if (mode_ != Mode::kAuto) apply(linears, excluded_slots_, true);
  }

  void select(Llama& model, QuantizedModel& out, const CalibrationData& holdout) override {
    // Candidates: quantized slots by ratio, largest first; each distinct ratio is one threshold.
    std::vector<size_t> order;
    for (size_t i = 0; i < stats_.slots.size(); ++i)
      if (quantized(out.linears, stats_.slots[i].module)) order.push_back(i);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return stats_.slots[a].ratio > stats_.slots[b].ratio; });
    std::vector<size_t> cuts = {0};
    for (size_t k = 1; k <= order.size(); ++k)
      if (k == order.size() || stats_.slots[order[k]].ratio != stats_.slots[order[k - 1]].ratio) cuts.push_back(k);
    const torch::Tensor tokens = holdout.windows.slice(1, 1).to(torch::kInt32).contiguous();
    PerplexityOptions po;
    po.seq_len = holdout.windows.size(1) - 1;
    po.batch_size = holdout.batch_size;
    po.bos_id = holdout.bos_id;
    po.show_progress = false;
    po.prefix = holdout.prefix;
    const int32_t* data = tokens.data_ptr<int32_t>();
    const TokenSource source = [&](uint64_t s, uint64_t n, int32_t* dst) { std::copy_n(data + s, n, dst); };
    Progress progress("qfem threshold search", static_cast<int64_t>(cuts.size()), "candidates");
    curve_.clear();
    for (const size_t k : cuts) {
      std::vector<QuantizedLinear> trial = out.linears;
      apply(trial, std::vector<size_t>(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k)), false);
      model->observers().clear();
      attach_activation_quantizer(model, trial);
      const double ppl = evaluate_perplexity(model, source, static_cast<uint64_t>(tokens.numel()), po).perplexity();
      model->observers().clear();
      curve_.push_back({static_cast<int64_t>(k), k == 0 ? std::numeric_limits<double>::infinity()
                                                          : stats_.slots[order[k - 1]].ratio, ppl});
      progress.set_note(fmt::format("{} excluded: ppl {:.2f}", k, ppl));
      progress.advance();
    }
    progress.finish();
    double best = std::numeric_limits<double>::infinity();
    for (const auto& c : curve_) best = std::min(best, c.perplexity);
    for (const auto& c : curve_)
      if (c.perplexity <= best * (1 + tolerance_)) {
        chosen_ = c;
        break;
      }
    excluded_slots_.assign(order.begin(), order.begin() + chosen_.slots);
    apply(out.linears, excluded_slots_, true);
    Table t({"slots excluded", "threshold", "held-out ppl"});
    for (const auto& c : curve_)
      t.add_row({std::to_string(c.slots), std::isinf(c.threshold) ? "none" : fmt::format("{:.1f}", c.threshold),
                 fmt::format("{:.3f}{}", c.perplexity, c.slots == chosen_.slots ? "  <- chosen" : "")});
    log_info("qfem threshold search ({} held-out windows, tolerance {:.1f}%):\n{}", holdout.windows.size(0),
             100 * tolerance_, t.render());
  }

  AppliedMethod record() const override {
    AppliedMethod m = QuantMethod::record();
    nlohmann::json curve = nlohmann::json::array();
    for (const auto& c : curve_)
      curve.push_back({{"slots_excluded", c.slots},
                       {"threshold", std::isinf(c.threshold) ? nlohmann::json(nullptr) : nlohmann::json(c.threshold)},
                       {"perplexity", c.perplexity}});
    const char* mode = mode_ == Mode::kAuto ? "auto" : mode_ == Mode::kThreshold ? "threshold" : "modules";
    m.state = {{"mode", mode}, {"excluded", excluded_modules()}, {"spikes", stats_.to_json()},
               {"calibration_sequences", stats_.sequences}, {"curve", curve}};
    if (mode_ == Mode::kThreshold) m.state["threshold"] = threshold_;
    if (mode_ == Mode::kAuto && !curve_.empty())
      m.state["threshold"] = std::isinf(chosen_.threshold) ? nlohmann::json(nullptr) : nlohmann::json(chosen_.threshold);
    return m;
  }

  // The curve as CSV and PNG (automatic mode), next to quant_config.json.
  void report(const AppliedMethod& saved, const std::string& dir) const override {
    const auto& curve = saved.state.value("curve", nlohmann::json::array());
    if (curve.empty()) return;
    std::string csv = "slots_excluded,threshold,perplexity\n";
    PlotSeries series{"held-out perplexity", {}, {}};
    for (const auto& c : curve) {
      csv += fmt::format("{},{},{}\n", c.at("slots_excluded").get<int64_t>(),
                         c.at("threshold").is_null() ? std::string("inf") : fmt::format("{}", c.at("threshold").get<double>()),
                         c.at("perplexity").get<double>());
      series.x.push_back(c.at("slots_excluded").get<double>());
      series.y.push_back(c.at("perplexity").get<double>());
    }
    write_file_atomic(fs::path(dir) / "qfem_threshold.csv", csv);
    LinePlot plot;
    plot.title = "QFeM threshold search: inputs kept in float vs held-out perplexity";
    plot.xlabel = "activation slots excluded (largest spike ratio first)";
    plot.ylabel = "perplexity (held-out calibration windows)";
    plot.series.push_back(std::move(series));
    try {
      plot_lines(plot, (fs::path(dir) / "qfem_threshold.png").string());
    } catch (const Error& e) {
      log_warn("qfem: no threshold plot ({})", e.what());
    }
  }

  // The exclusion is in the saved activation specs; the record must name the modules it excluded.
  void replay(Llama& model, const AppliedMethod& saved) override {
    OUTQ_CHECK(saved.state.contains("excluded") && saved.state["excluded"].is_array(),
               "qfem record: expected the list of excluded modules, found ", saved.state.dump());
    const auto names = model->linear_modules();
    for (const auto& m : saved.state["excluded"])
      OUTQ_CHECK(m.is_string() && std::find(names.begin(), names.end(), m.get<std::string>()) != names.end(),
                 "qfem record: excluded module ", m.dump(), " is not a linear module of this model");
  }

 private:
  static bool quantized(const std::vector<QuantizedLinear>& linears, const std::string& module) {
    for (const auto& l : linears)
      if (l.module == module) return l.activation_spec.enabled();
    return false;
  }

  std::vector<std::string> excluded_modules() const {
    std::vector<std::string> out;
    for (const size_t i : excluded_slots_)
      for (const auto& m : stats_.slots[i].modules) out.push_back(m);
    return out;
  }

  // Float activations for every linear of the given slots; `final` prints the table and warns
  // when nothing is left quantized.
  void apply(std::vector<QuantizedLinear>& linears, const std::vector<size_t>& slots, bool final) const {
    std::vector<std::string> names;
    for (const size_t i : slots)
      for (const auto& m : stats_.slots[i].modules) names.push_back(m);
    int64_t left = 0;
    for (auto& l : linears) {
      if (std::find(names.begin(), names.end(), l.module) != names.end()) {
        l.activation_spec = QuantSpec{};  // 16 bits: not quantized
        l.activation_qp = QParams{};
      }
      left += l.activation_spec.enabled() ? 1 : 0;
    }
    if (!final) return;
    log_info("qfem: activation spike ratios ({} calibration sequences; {} linears keep float activations):\n{}",
             stats_.sequences, names.size(), stats_.table(names));
    if (left == 0 && !names.empty())
      log_warn("qfem: the exclusion covers every quantized input ({} linears): the model keeps float activations "
               "everywhere (weight-only); lower the exclusion (threshold, modules) to quantize any", names.size());
  }

  Mode mode_ = Mode::kAuto;
  double threshold_ = 0;
  std::vector<std::string> patterns_;
  double tolerance_ = 0.01;
  int64_t search_windows_ = 16;
  SpikeStats stats_;
  std::vector<size_t> excluded_slots_;
  std::vector<CurvePoint> curve_;
  CurvePoint chosen_;
};

}  // namespace

std::unique_ptr<QuantMethod> make_qfem(const MethodEntry& entry) { return std::make_unique<Qfem>(entry); }

}  // namespace outq
