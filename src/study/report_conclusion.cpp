// The study's plain-language conclusions: each sentence is chosen and filled from the numbers.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "outq/study/report.h"
#include "report_internal.h"

namespace outq {

using namespace study_report;

namespace {

// " (within noise)" when a differs from b by less than twice the standard error of the difference.
std::string noise_note(const json& a, const json& b) { return difference(a, b).real() ? "" : " (within noise)"; }

std::string verdict(double ratio) {
  if (ratio <= 1.02) return "essentially lossless";
  if (ratio <= 1.05) return "within 5%";
  if (ratio <= 1.15) return "close";
  if (ratio <= 1.5) return "a clear loss";
  return "far from usable";
}

std::string above(double ratio) {
  return fmt::format("{:.1f}% {}", 100.0 * std::fabs(ratio - 1.0), ratio >= 1.0 ? "above" : "below");
}

// The model's name in a sentence ("the {} model").
std::string model_name(const std::string& id) {
  return id == "qat" ? "QAT" : id == "finetune" ? "QAT fine-tune" : "float baseline";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "<base> p -> p'" for every evaluation of model `id` named <base><suffix> whose base recipe was
// evaluated too, comma-separated in evaluation order.
// "base p -> p, ..." for every evaluation of model `id` whose recipe has a base recipe (base_of
// gives its name, "" for none) evaluated on the same model.
std::string pairs_with_base(const json& r, const std::string& id, const std::function<std::string(const std::string&)>& base_of) {
  std::string pairs;
  for (const auto& e : r.at("evals")) {
    const std::string name = e.value("recipe", "");
    const std::string base_name = base_of(name);
    if (e.value("model", "") != id || !e.contains("perplexity") || base_name.empty()) continue;
    for (const auto& base : r.at("evals"))
      if (base.value("model", "") == id && base.value("recipe", "") == base_name && base.contains("perplexity"))
        pairs += fmt::format("{}{} {:.2f} -> {:.2f}{}", pairs.empty() ? "" : ", ", base.at("recipe").get<std::string>(),
                             base.at("perplexity").get<double>(), e.at("perplexity").get<double>(), noise_note(e, base));
  }
  return pairs;
}

std::string pairs_with_base(const json& r, const std::string& id, const std::string& suffix) {
  return pairs_with_base(r, id, [&](const std::string& n) {
    return ends_with(n, suffix) ? n.substr(0, n.size() - suffix.size()) : std::string();
  });
}

// "w4a4-peg6perm-gptq" -> "w4a4-tensor-gptq": a per-embedding-group recipe's per-tensor twin.
std::string per_tensor_twin(const std::string& name) {
  const auto at = name.find("-peg");
  if (at == std::string::npos) return "";
  const auto end = name.find('-', at + 1);
  return name.substr(0, at) + "-tensor" + (end == std::string::npos ? "" : name.substr(end));
}

}  // namespace

std::vector<std::string> study_conclusions(const json& r) {
  const StudyHeadline h = study_headline(r);
  std::vector<std::string> out;
  out.push_back(fmt::format(
      "Static per-tensor W4A4 ({}) takes the float baseline from perplexity {:.2f} to {:.2f}, {:.2f}x its float value: {}.",
      h.baseline_recipe, h.baseline_float, h.baseline_w4a4, h.baseline_ratio(), verdict(h.baseline_ratio())));

  std::string q = fmt::format("The QAT + kurtosis model at W4A4 ({}) reaches {:.2f}", h.qat_recipe, h.qat_w4a4);
  if (h.has_native) q += fmt::format(", {} its own perplexity with float weights ({:.2f}, {})", above(h.qat_ratio()),
                                     h.qat_native, verdict(h.qat_ratio()));
  q += fmt::format(", and {} the float baseline's {:.2f}", above(h.qat_vs_baseline_float()), h.baseline_float);
  const double gap = h.baseline_w4a4 - h.baseline_float;
  if (gap > 0.05 * h.baseline_float) {
    const double recovered = (h.baseline_w4a4 - h.qat_w4a4) / gap;
    q += recovered >= 0 ? fmt::format("; it closes {:.0f}% of the gap that static 4-bit activations open on the baseline",
                                      100.0 * std::min(recovered, 1.0))
                        : "; it does not close the gap that static 4-bit activations open on the baseline";
  }
  out.push_back(q + ".");

  // The two training paths side by side: what each cost and what it reached.
  const json* ft = study_model(r, "finetune");
  const json* qm = study_model(r, "qat");
  if (h.has_finetune && ft != nullptr && qm != nullptr) {
    const double ft_s = ft->at("train").at("seconds").get<double>(), qat_s = qm->at("train").at("seconds").get<double>();
    const Difference d = difference(*find_eval(r, "finetune", h.finetune_recipe), *find_eval(r, "qat", h.qat_recipe));
    const bool better = d.nll < 0;
    out.push_back(fmt::format(
        "QAT fine-tuning of the float baseline ({}) reaches {:.2f} at W4A4 ({}), {} the baseline's float {:.2f}: {} "
        "QAT from scratch ({:.2f}, {}) at {:.0f}% of its training time. For static W4A4 on this model, fine-tune "
        "the float model with QAT{}.",
        study_training_cost(*ft), h.finetune_w4a4, h.finetune_recipe, above(h.finetune_vs_baseline_float()), h.baseline_float,
        compare_words(d), h.qat_w4a4, study_training_cost(*qm), 100.0 * ft_s / std::max(qat_s, 1e-9),
        !d.real() ? ": it gives the same accuracy for less training"
                  : better ? "" : " only if training from scratch is out of reach; here from-scratch QAT is more accurate"));
  }

  // The best dynamic per-token recipe on the baseline, if the study has one.
  const json* best = nullptr;
  for (const auto& e : r.at("evals"))
    if (e.at("model") == "baseline" && e.contains("perplexity") && e.value("a_granularity", "") == "token" &&
        e.value("a_bits", 0) == 4 && e.value("w_bits", 0) == 4 &&
        (best == nullptr || e.at("perplexity").get<double>() < best->at("perplexity").get<double>()))
      best = &e;
  if (best != nullptr) {
    const double p = best->at("perplexity").get<double>();
    out.push_back(fmt::format(
        "Dynamic per-token W4A4 ({}) keeps the baseline at {:.2f} ({} its float value), {} the QAT model's "
        "static W4A4; it needs a scale computed per token at run time, the QAT model's fixed clips do not.",
        best->at("recipe").get<std::string>(), p, above(p / h.baseline_float),
        compare_words(difference(*best, *find_eval(r, "qat", h.qat_recipe)))));
  }

  const json* b = study_model(r, "baseline");
  if (b && qm) {
    const json& ab = b->at("analysis");
    const json& aq = qm->at("analysis");
    out.push_back(fmt::format(
        "Outlier channels at the quantized inputs: {} in the baseline and {} in the QAT model; largest |x| {:.1f} vs {:.1f}; "
        "mean kurtosis {:.1f} vs {:.1f}.",
        ab.at("outlier_channels").get<long long>(), aq.at("outlier_channels").get<long long>(), ab.at("max_abs").get<double>(),
        aq.at("max_abs").get<double>(), ab.at("kurtosis_mean").get<double>(), aq.at("kurtosis_mean").get<double>()));
    if (h.has_native && h.qat_float > 1.5 * h.qat_native)
      out.push_back(fmt::format(
          "The QAT model depends on its clipping: run with unclipped float activations (W16A16) its perplexity is {:.0f} "
          "against {:.2f} at its learned clips, so it should always be deployed with them.",
          h.qat_float, h.qat_native));
    const double wb = ab.at("weight_in_max_median").get<double>(), wq = aq.at("weight_in_max_median").get<double>();
    out.push_back(fmt::format(
        "Weight magnitude spread across input channels (max/median, largest layer): {:.2f} in the baseline, {:.2f} in the "
        "QAT model — {}.",
        wb, wq,
        wq > 1.2 * wb ? "QAT moved part of the difficulty into the weights"
                      : "no noticeable difficulty moved into the weights"));
    const double tb = b->at("train").at("tokens_per_second").get<double>(), tq = qm->at("train").at("tokens_per_second").get<double>();
    out.push_back(fmt::format("Training cost: the QAT model trained at {:.0f} tokens/s against {:.0f} for float ({:.2f}x per step).",
                              tq, tb, tb / tq));
  }

  // SmoothQuant and rotation next to the same recipe without them (recipes named <base>-sq and
  // <base>-rot), per model.
  for (const auto& [suffix, method] : {std::pair{"-sq", "SmoothQuant"}, std::pair{"-rot", "Rotation"},
                                       std::pair{"-mp", "Mixed precision (16-bit integer down-projection input)"}})
    for (const char* id : {"baseline", "qat", "finetune"}) {
      const std::string pairs = pairs_with_base(r, id, suffix);
      if (!pairs.empty())
        out.push_back(fmt::format("{} on the {} model (perplexity without -> with): {}.", method, model_name(id), pairs));
    }
  for (const char* id : {"baseline", "qat", "finetune"}) {
    const std::string pairs = pairs_with_base(r, id, per_tensor_twin);
    if (!pairs.empty())
      out.push_back(fmt::format("Per-embedding-group activations on the {} model (per tensor -> PEG): {}.", model_name(id),
                                pairs));
  }
  // The compass question: the best rotated static per-tensor W4A4 on the baseline against the QAT model.
  const json* best_rot = nullptr;
  for (const auto& e : r.at("evals"))
    if (e.value("model", "") == "baseline" && e.contains("perplexity") && ends_with(e.value("recipe", ""), "-rot") &&
        e.value("a_granularity", "") == "tensor" && e.value("a_bits", 0) == 4 && e.value("w_bits", 0) == 4 &&
        (best_rot == nullptr || e.at("perplexity").get<double>() < best_rot->at("perplexity").get<double>()))
      best_rot = &e;
  if (best_rot != nullptr) {
    const double p = best_rot->at("perplexity").get<double>();
    out.push_back(fmt::format(
        "The best post-training static per-tensor W4A4 on the float baseline, {} at {:.2f} ({} its float value: {}), "
        "against the QAT + kurtosis model's {:.2f} at the same training budget: {}.",
        best_rot->at("recipe").get<std::string>(), p, above(p / h.baseline_float), verdict(p / h.baseline_float), h.qat_w4a4,
        [&] {
          const Difference d = difference(*best_rot, *find_eval(r, "qat", h.qat_recipe));
          return !d.real() ? std::string("indistinguishable within their uncertainty")
                 : d.nll < 0 ? std::string("rotation without training wins")
                             : std::string("training with the cure still wins");
        }()));
  }

  // Activation spikes: what QFeM and QFeP found, and each spike method next to its base recipe
  // (recipes named <base>-qfem, <base>-qfep, <base>-qfem-qfep, <base>-sq-qfem-qfep).
  for (const char* id : {"baseline", "qat", "finetune"}) {
    std::string found, pairs;
    bool have_ratio = false, have_prefix = false;  // each finding stated once per model
    for (const auto& e : r.at("evals")) {
      if (e.value("model", "") != id || !e.contains("perplexity")) continue;
      if (!have_ratio && e.contains("methods") && e.at("methods").contains("qfem") &&
          !e.at("methods").at("qfem").at("top_ratio").is_null()) {
        have_ratio = true;
        const json& f = e.at("methods").at("qfem");
        found += fmt::format("largest spike ratio {:.1f} at {} ({}); ", f.at("top_ratio").get<double>(),
                             f.at("top_module").get<std::string>(),
                             f.at("excluded").empty() ? "QFeM's search kept every input quantized"
                                                      : fmt::format("QFeM kept {} linears in float", f.at("excluded").size()));
      }
      if (!have_prefix && e.contains("methods") && e.at("methods").contains("qfep")) {
        have_prefix = true;
        std::string text;
        for (const auto& p : e.at("methods").at("qfep").at("prefix")) text += (text.empty() ? "" : " ") + p.get<std::string>();
        found += fmt::format("QFeP prefix {}; ", text);
      }
      const std::string name = e.value("recipe", "");
      for (const char* suffix : {"-qfem-qfep", "-qfem", "-qfep"}) {
        const std::string sfx = suffix;
        if (!ends_with(name, sfx)) continue;
        const std::string base_name = name.substr(0, name.size() - sfx.size());
        for (const auto& base : r.at("evals"))
          if (base.value("model", "") == id && base.value("recipe", "") == base_name && base.contains("perplexity"))
            pairs += fmt::format("{}{} {:.2f} -> {} {:.2f}{}", pairs.empty() ? "" : ", ", base_name,
                                 base.at("perplexity").get<double>(), sfx.substr(1), e.at("perplexity").get<double>(),
                                 noise_note(e, base));
        break;
      }
    }
    if (found.empty() && pairs.empty()) continue;
    if (found.size() >= 2) found.resize(found.size() - 2);
    out.push_back(fmt::format("Activation spikes on the {} model: {}{}{}.", model_name(id), found, !found.empty() && !pairs.empty() ? ". With the spike methods (perplexity): " : "",
                              pairs));
  }

  // Speed next to accuracy: the fastest W4A4 runtime row.
  const json* fast = nullptr;
  for (const auto& x : r.at("runtime"))
    if (fast == nullptr || x.at("decode_tokens_per_s").get<double>() > fast->at("decode_tokens_per_s").get<double>()) fast = &x;
  if (fast != nullptr) {
    const double sim = fast->at("simulated_perplexity").get<double>(), real = fast->at("perplexity").get<double>();
    out.push_back(fmt::format(
        "On the integer kernels ({}) the {} model with {} decodes {:.1f} tokens/s, {:.2f}x the float LibTorch model, at "
        "perplexity {:.2f} ({:+.3f}% from the simulation).",
        r.at("setup").at("isa").get<std::string>(), fast->at("model").get<std::string>(), fast->at("recipe").get<std::string>(),
        fast->at("decode_tokens_per_s").get<double>(),
        fast->at("decode_tokens_per_s").get<double>() / fast->at("float_decode_tokens_per_s").get<double>(), real,
        100.0 * (real / sim - 1.0)));
  }
  return out;
}

}  // namespace outq
