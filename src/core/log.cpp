// stderr logging with an optional quiet mode.
#include "outq/core/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace outq {
namespace {
std::atomic<int> g_rank{0};
}

void log_set_rank(int rank) { g_rank = rank; }

void log_line(std::string_view level, std::string_view message) {
  static const bool quiet = [] {
    const char* env = std::getenv("OUTQ_LOG");
    return env && std::strcmp(env, "quiet") == 0;
  }();
  const int rank = g_rank.load();
  char tag[32] = "outq";
  if (rank > 0) std::snprintf(tag, sizeof tag, "outq[rank %d]", rank);
  if (level.empty()) {
    if (quiet || rank > 0) return;
    std::fprintf(stderr, "%s: %.*s\n", tag, static_cast<int>(message.size()), message.data());
  } else {
    std::fprintf(stderr, "%s: %.*s: %.*s\n", tag, static_cast<int>(level.size()), level.data(),
                 static_cast<int>(message.size()), message.data());
  }
  std::fflush(stderr);
}

}  // namespace outq
