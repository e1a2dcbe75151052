// Range checks for numeric command-line options, as CLI11 validators: a bad value is a usage
// error (exit 2) naming the option, the expected range and the value. `finite` also refuses nan
// and inf, which a plain CLI::Range lets through (every comparison with NaN is false).
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

namespace outq::app {

/// A whole number in [lo, hi].
inline CLI::Validator whole(int64_t lo, int64_t hi = std::numeric_limits<int64_t>::max()) {
  const std::string range = hi == std::numeric_limits<int64_t>::max() ? ">= " + std::to_string(lo)
                                                                        : std::to_string(lo) + ".." + std::to_string(hi);
  return CLI::Validator(
      [lo, hi, range](std::string& s) -> std::string {
        errno = 0;
        char* end = nullptr;
        const long long v = std::strtoll(s.c_str(), &end, 10);
        if (s.empty() || *end != '\0' || errno == ERANGE || v < lo || v > hi)
          return "expected a whole number " + range + ", found " + s;
        return "";
      },
      "INT " + range);
}

/// A finite number in [lo, hi].
inline CLI::Validator finite(double lo, double hi) {
  const std::string range = fmt::format("{}..{}", lo, hi);
  return CLI::Validator(
      [lo, hi, range](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi)
          return "expected a finite number in " + range + ", found " + s;
        return "";
      },
      "NUMBER " + range);
}

}  // namespace outq::app
