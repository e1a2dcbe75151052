// stderr logging with an optional quiet mode.
#include "outq/core/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace outq {

void log_line(std::string_view level, std::string_view message) {
  static const bool quiet = [] {
    const char* env = std::getenv("OUTQ_LOG");
    return env && std::strcmp(env, "quiet") == 0;
  }();
  if (level.empty()) {
    if (quiet) return;
    std::fprintf(stderr, "outq: %.*s\n", static_cast<int>(message.size()), message.data());
  } else {
    std::fprintf(stderr, "outq: %.*s: %.*s\n", static_cast<int>(level.size()), level.data(),
                 static_cast<int>(message.size()), message.data());
  }
  std::fflush(stderr);
}

}  // namespace outq
