// Standard errors over windows (see window_stats.h).
#include "outq/core/window_stats.h"

#include <cmath>

#include "outq/core/error.h"

namespace outq {

double ratio_standard_error(const std::vector<double>& d, const std::vector<int64_t>& n) {
  const size_t w = d.size();
  OUTQ_CHECK(n.size() == w, "standard error: expected a token count per window, found ", n.size(), " for ", w, " windows");
  if (w < 2) return 0.0;
  double sum_d = 0, sum_n = 0;
  for (size_t i = 0; i < w; ++i) sum_d += d[i], sum_n += static_cast<double>(n[i]);
  const double mean = sum_d / sum_n;
  double ss = 0;
  for (size_t i = 0; i < w; ++i) {
    const double r = d[i] - mean * static_cast<double>(n[i]);
    ss += r * r;
  }
  return std::sqrt(static_cast<double>(w) / static_cast<double>(w - 1) * ss) / sum_n;
}

double paired_nll_standard_error(const std::vector<double>& nll_a, const std::vector<double>& nll_b,
                                 const std::vector<int64_t>& tokens) {
  OUTQ_CHECK(nll_a.size() == nll_b.size() && nll_a.size() == tokens.size(), "paired standard error: expected the same ",
             "windows on both sides, found ", nll_a.size(), " and ", nll_b.size(), " windows (", tokens.size(), " sizes)");
  std::vector<double> d(nll_a.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = nll_a[i] - nll_b[i];
  return ratio_standard_error(d, tokens);
}

double nll_difference_standard_error(const std::vector<double>& nll_a, const std::vector<int64_t>& tokens_a,
                                     const std::vector<double>& nll_b, const std::vector<int64_t>& tokens_b) {
  if (tokens_a == tokens_b) return paired_nll_standard_error(nll_a, nll_b, tokens_a);
  return std::hypot(ratio_standard_error(nll_a, tokens_a), ratio_standard_error(nll_b, tokens_b));
}

}  // namespace outq
