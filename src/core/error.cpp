// Out-of-line parts of the error helpers (message formatting for mismatches and internal errors).
#include "outq/core/error.h"

#include <fmt/format.h>

namespace outq {

namespace detail {
void throw_internal(const char* file, int line, const char* condition,
                    const std::string& message) {
  throw InternalError(fmt::format("internal error at {}:{}: ({}) {} — this is a bug in outq, "
                                  "please report it",
                                  file, line, condition, message));
}
}  // namespace detail

std::string mismatch_message(std::string_view where, std::string_view field,
                             std::string_view expected, std::string_view found) {
  if (field.empty()) return fmt::format("{}: expected {}, found {}", where, expected, found);
  return fmt::format("{}: {}: expected {}, found {}", where, field, expected, found);
}

void fail_mismatch(std::string_view where, std::string_view field, std::string_view expected,
                   std::string_view found) {
  throw Error(mismatch_message(where, field, expected, found));
}

}  // namespace outq
