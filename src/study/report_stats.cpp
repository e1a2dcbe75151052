// The report's shared lookups and its uncertainty arithmetic (see report_internal.h).
#include <fmt/format.h>

#include "outq/core/error.h"
#include "outq/core/window_stats.h"
#include "report_internal.h"

namespace outq::study_report {

const json* find_eval(const json& results, const std::string& id, const std::string& recipe) {
  for (const auto& e : results.at("evals"))
    if (e.at("model") == id && e.at("recipe") == recipe && e.contains("perplexity")) return &e;
  return nullptr;
}

double eval_ppl(const json& results, const std::string& id, const std::string& recipe) {
  const json* e = find_eval(results, id, recipe);
  OUTQ_CHECK(e != nullptr, "study results: expected a perplexity of \"", recipe, "\" on the ", id, " model, found none");
  return e->at("perplexity").get<double>();
}

std::string pct(double ratio) { return fmt::format("{:+.1f}%", 100.0 * (ratio - 1.0)); }
std::string ppl(double x) { return x >= 1000 ? fmt::format("{:.0f}", x) : fmt::format("{:.2f}", x); }

std::string ppl_se(const json& e) {
  const double p = e.at("perplexity").get<double>();
  if (!e.contains("ppl_se")) return ppl(p);
  const double se = e.at("ppl_se").get<double>();
  return p >= 1000 ? fmt::format("{:.0f} ± {:.0f}", p, se) : fmt::format("{:.2f} ± {:.2f}", p, se);
}

Difference difference(const json& a, const json& b) {
  Difference d;
  d.ratio = a.at("perplexity").get<double>() / b.at("perplexity").get<double>();
  d.nll = std::log(d.ratio);
  if (a.contains("window_nll") && b.contains("window_nll")) {
    d.paired = a.at("window_tokens") == b.at("window_tokens");
    d.se = nll_difference_standard_error(a.at("window_nll").get<std::vector<double>>(), a.at("window_tokens").get<std::vector<int64_t>>(),
                                         b.at("window_nll").get<std::vector<double>>(), b.at("window_tokens").get<std::vector<int64_t>>());
  } else {  // records without their windows: the stored errors, combined as independent
    const double sa = a.value("nll_se", 0.0), sb = b.value("nll_se", 0.0);
    d.se = std::sqrt(sa * sa + sb * sb);
  }
  return d;
}

std::string compare_words(const Difference& d) {
  if (!d.real()) return "indistinguishable from";
  return d.nll < 0 ? "better than" : "worse than";
}

}  // namespace outq::study_report
