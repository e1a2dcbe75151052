// Minimal leveled logging to stderr ("outq: ..." for info, "outq: warning: ..." for warnings).
// OUTQ_LOG=quiet suppresses info lines; warnings and errors always show. A data-parallel rank
// other than 0 logs warnings only, tagged "outq[rank N]:".
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace outq {

void log_line(std::string_view level, std::string_view message);

/// Tags this process's lines with its data-parallel rank; ranks other than 0 drop info lines.
void log_set_rank(int rank);

template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  log_line("", fmt::format(f, std::forward<Args>(args)...));
}

template <class... Args>
void log_warn(fmt::format_string<Args...> f, Args&&... args) {
  log_line("warning", fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace outq
