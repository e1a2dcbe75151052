// Helpers shared by the report's files: finding an evaluation in the results, perplexities with
// their standard errors, and whether two evaluations differ by more than their uncertainty.
#pragma once

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

namespace outq::study_report {

using json = nlohmann::json;

/// The evaluation of `recipe` on model `id` ("float" = unquantized), or null if absent/skipped.
const json* find_eval(const json& results, const std::string& id, const std::string& recipe);
/// Its perplexity; a missing one is an error naming it.
double eval_ppl(const json& results, const std::string& id, const std::string& recipe);

std::string pct(double ratio);  ///< "+3.2%"
std::string ppl(double x);      ///< "12.34", or "1234" from 1000 up
/// An evaluation's perplexity with its standard error: "12.34 ± 0.05" (the bare number for a
/// record without one).
std::string ppl_se(const json& eval);

/// Evaluation a against b: the perplexity ratio, the difference of their mean NLLs and its
/// standard error, paired over the windows when both scored the same windows (else the two errors
/// combined as independent). A difference counts as real when it exceeds twice its error.
struct Difference {
  double ratio = 1, nll = 0, se = 0;
  bool paired = false;
  bool real() const { return std::fabs(nll) > 2 * se; }
};
Difference difference(const json& a, const json& b);

/// "better than" / "worse than" / "indistinguishable from" for a (lower is better) against b.
std::string compare_words(const Difference& d);

}  // namespace outq::study_report
