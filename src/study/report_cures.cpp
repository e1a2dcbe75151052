// The report's table of cures: one row per cure of outlier activations the study evaluated (on the
// float baseline: none, per-token scales, SmoothQuant, QFeM, QFeP, PEG, mixed precision, rotation
// and their combinations, each recognised from its recipe's fields; then the QAT models), with its
// best W8A8 and W4A4 evaluations, what it costs, and the recommendation drawn from them.
#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "outq/core/table.h"
#include "outq/study/report.h"
#include "report_internal.h"

namespace outq {

using namespace study_report;

namespace {

// The cure a baseline evaluation applies, from its recipe's fields ("none": static per-tensor).
std::string cure_of(const json& e) {
  std::vector<std::string> parts;
  const std::string g = e.value("a_granularity", "");
  if (g == "token") parts.push_back("per-token scales");
  else if (e.value("a_dynamic", false)) parts.push_back("dynamic per-tensor scales");
  if (g == "peg") parts.push_back("PEG");
  const std::string methods = e.value("methods_label", "");
  const std::map<std::string, std::string> names = {
      {"smoothquant", "SmoothQuant"}, {"qfem", "QFeM"}, {"qfep", "QFeP"}, {"rotate", "rotation"}};
  for (size_t at = 0; at < methods.size();) {
    const size_t end = std::min(methods.find('+', at), methods.size());
    const std::string m = methods.substr(at, end - at);
    parts.push_back(names.count(m) ? names.at(m) : m);
    at = end + 1;
  }
  if (e.value("mixed_precision", false)) parts.push_back("mixed precision");
  if (parts.empty()) return "none";
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : " + ") + p;
  return out;
}

bool per_token_scale(const json& e) { return e.value("a_granularity", "") == "token" || e.value("a_dynamic", false); }

bool is_format(const json& e, int w, int a) { return e.value("w_bits", 0) == w && e.value("a_bits", 0) == a; }

// The lower-perplexity evaluation of two (either may be null).
const json* better(const json* a, const json* b) {
  if (a == nullptr) return b;
  if (b == nullptr) return a;
  return b->at("perplexity").get<double>() < a->at("perplexity").get<double>() ? b : a;
}

const json* runtime_of(const json& r, const std::string& model, const std::string& recipe) {
  for (const auto& x : r.at("runtime"))
    if (x.value("model", "") == model && x.value("recipe", "") == recipe) return &x;
  return nullptr;
}

std::string cell(const json* e) { return e ? fmt::format("{} ({})", ppl_se(*e), e->at("recipe").get<std::string>()) : "-"; }

}  // namespace

json study_cures(const json& r) {
  struct Row {
    std::string cure, model;
    const json* w8 = nullptr;
    const json* w4 = nullptr;
  };
  std::vector<Row> rows;
  auto row_for = [&](const std::string& cure, const std::string& model) -> Row& {
    for (auto& x : rows)
      if (x.cure == cure && x.model == model) return x;
    rows.push_back({cure, model});
    return rows.back();
  };
  row_for("none", "baseline");  // first, as the reference row
  for (const auto& e : r.at("evals")) {
    if (!e.contains("perplexity") || e.value("recipe", "") == "float") continue;
    const std::string model = e.at("model").get<std::string>();
    // The QAT models are rows of their own; on them, the best recipe with static activations.
    if (model != "baseline" && per_token_scale(e)) continue;
    Row& row = row_for(model == "baseline" ? cure_of(e)
                       : model == "qat"    ? "QAT + kurtosis from scratch"
                                           : "QAT fine-tune of the baseline",
                       model);
    if (is_format(e, 8, 8)) row.w8 = better(row.w8, &e);
    if (is_format(e, 4, 4)) row.w4 = better(row.w4, &e);
  }
  const json* base_float = find_eval(r, "baseline", "float");
  json out = json::array();
  for (const auto& row : rows) {
    if (row.w8 == nullptr && row.w4 == nullptr) continue;
    const json* model = study_model(r, row.model);
    json j = {{"cure", row.cure}, {"model", row.model}};
    for (const auto& [key, e] : {std::pair{"w8a8", row.w8}, std::pair{"w4a4", row.w4}}) {
      if (e == nullptr) {
        j[key] = nullptr;
        continue;
      }
      json x = {{"recipe", e->at("recipe")}, {"perplexity", e->at("perplexity")}, {"ppl_se", e->value("ppl_se", 0.0)},
                {"kl", e->value("kl", json(nullptr))}, {"quantize_seconds", e->value("quantize_seconds", 0.0)},
                {"per_token_scale", per_token_scale(*e)}};
      if (base_float) x["vs_float"] = e->at("perplexity").get<double>() / base_float->at("perplexity").get<double>();
      if (const json* rt = runtime_of(r, row.model, e->at("recipe").get<std::string>()))
        x["prefill_vs_float"] = rt->at("prefill_tokens_per_s").get<double>() / rt->at("float_prefill_tokens_per_s").get<double>();
      j[key] = x;
    }
    j["training_tokens"] = model && row.model != "baseline" ? model->at("train").value("tokens", 0LL) : 0LL;
    out.push_back(j);
  }
  return out;
}

namespace {

std::string recommendation(const json& r, const json& cures) {
  const json* best = nullptr;  // the static W4A4 cure with the lowest perplexity
  for (const auto& c : cures)
    if (!c.at("w4a4").is_null() && !c.at("w4a4").at("per_token_scale").get<bool>() &&
        (best == nullptr || c.at("w4a4").at("perplexity").get<double>() < best->at("w4a4").at("perplexity").get<double>()))
      best = &c;
  if (best == nullptr) return "";
  auto eval_of = [&](const json& c, const char* key) {
    return find_eval(r, c.at("model").get<std::string>(), c.at(key).at("recipe").get<std::string>());
  };
  const json& bw = *eval_of(*best, "w4a4");
  std::string ties, dynamic;
  for (const auto& c : cures) {
    if (&c == best || c.at("w4a4").is_null()) continue;
    const Difference d = difference(*eval_of(c, "w4a4"), bw);
    if (!c.at("w4a4").at("per_token_scale").get<bool>() && !d.real())
      ties += fmt::format("{}{} ({})", ties.empty() ? "" : ", ", c.at("cure").get<std::string>(), ppl_se(*eval_of(c, "w4a4")));
    if (c.at("w4a4").at("per_token_scale").get<bool>() && d.real() && d.nll < 0 && dynamic.empty())
      dynamic = fmt::format(" A scale per token at run time does better: {} ({}).", c.at("cure").get<std::string>(),
                            cell(eval_of(c, "w4a4")));
  }
  std::string out = fmt::format("For static W4A4 on this model use **{}** ({}, {} against the float baseline).",
                                best->at("cure").get<std::string>(), cell(&bw), pct(best->at("w4a4").at("vs_float").get<double>()));
  if (!ties.empty()) out += fmt::format(" Within its uncertainty (differences under twice their standard error): {}; "
                                        "take the cheapest of them.", ties);
  out += dynamic;
  // W8A8: is the plain static recipe already as good as float?
  for (const auto& c : cures)
    if (c.at("cure") == "none" && !c.at("w8a8").is_null()) {
      const json& e = *eval_of(c, "w8a8");
      const Difference d = difference(e, *find_eval(r, "baseline", "float"));
      out += d.real() ? fmt::format(" At W8A8 plain static per-tensor quantization ({}) costs {}; see the table for "
                                    "the cures that recover it.", cell(&e), pct(d.ratio))
                      : fmt::format(" At W8A8 no cure is needed: {} is indistinguishable from float.", cell(&e));
    }
  return out;
}

}  // namespace

std::string study_recommendation(const json& r) { return recommendation(r, study_cures(r)); }

std::string study_cures_section(const json& r) {
  const json cures = study_cures(r);
  Table t({"cure", "model", "W8A8 perplexity", "W4A4 perplexity", "W4A4 vs float", "W4A4 KL", "training tokens",
           "calibration", "integer prefill vs float", "scale per token"});
  for (const auto& c : cures) {
    const json& w4 = c.at("w4a4");
    const json* e8 = c.at("w8a8").is_null() ? nullptr : find_eval(r, c.at("model"), c.at("w8a8").at("recipe"));
    const json* e4 = w4.is_null() ? nullptr : find_eval(r, c.at("model"), w4.at("recipe"));
    auto either = [&](const char* k) -> const json* { return !w4.is_null() && w4.contains(k) ? &w4.at(k) : nullptr; };
    const long long tokens = c.at("training_tokens").get<long long>();
    t.add_row({c.at("cure").get<std::string>(), c.at("model").get<std::string>(), cell(e8), cell(e4),
               either("vs_float") ? pct(either("vs_float")->get<double>()) : "-",
               either("kl") && !either("kl")->is_null()
                   ? fmt::format(either("kl")->get<double>() >= 1e-3 ? "{:.4f}" : "{:.1e}", either("kl")->get<double>())
                   : "-",
               tokens ? format_count(tokens) : "-",
               either("quantize_seconds") ? format_duration(either("quantize_seconds")->get<double>()) : "-",
               either("prefill_vs_float") ? fmt::format("{:.2f}x", either("prefill_vs_float")->get<double>()) : "-",
               w4.is_null() ? "-" : w4.at("per_token_scale").get<bool>() ? "yes" : "no"});
  }
  return "## Cures\n\nEach cure's best evaluated W8A8 and W4A4 recipe (perplexity ± its standard error over the test "
         "windows); QAT rows are the models trained with the cure, at their best recipe with static activations. "
         "Costs: the QAT models' training tokens (the float baseline's budget is the same for all), the time to "
         "quantize and calibrate the W4A4 model, and its integer-kernel prefill speed against the float model where "
         "the study ran it.\n\n" +
         t.render_markdown() + "\n" + recommendation(r, cures) + "\n";
}

}  // namespace outq
