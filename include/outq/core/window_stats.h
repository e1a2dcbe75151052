// Standard errors of a mean over windows of tokens (the evaluation's units: tokens inside a window
// are not independent, windows nearly are): the ratio estimator's error of sum d / sum n, and the
// paired error of the difference of two such means scored on the same windows. No LibTorch, so
// the study report (JSON in, Markdown out) uses the same arithmetic as the evaluation.
#pragma once

#include <cstdint>
#include <vector>

namespace outq {

/// sqrt(W / (W - 1) sum_w (d_w - m n_w)^2) / sum_w n_w, m = sum d / sum n: for equal windows, the
/// sample standard deviation of the window means over sqrt(W). 0 for fewer than 2 windows.
double ratio_standard_error(const std::vector<double>& d, const std::vector<int64_t>& n);

/// The same over the per-window differences a_w - b_w of two sums scored on the same windows (the
/// same tokens, window by window): much smaller than either error alone when both err on the same
/// windows. Throws outq::Error when the window counts differ.
double paired_nll_standard_error(const std::vector<double>& nll_a, const std::vector<double>& nll_b,
                                 const std::vector<int64_t>& tokens);

/// Standard error of mean(a) - mean(b) for two evaluations given by their per-window sums and
/// token counts: paired (above) when they scored the same windows, else the two ratio errors
/// combined as independent.
double nll_difference_standard_error(const std::vector<double>& nll_a, const std::vector<int64_t>& tokens_a,
                                     const std::vector<double>& nll_b, const std::vector<int64_t>& tokens_b);

}  // namespace outq
