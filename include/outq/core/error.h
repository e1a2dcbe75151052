// Error reporting for outq: three levels of checking, and no abort in library code.
//   OUTQ_CHECK(cond, ...)   bad input from the user (files, config, shapes): throws outq::Error.
//   OUTQ_ASSERT(cond, ...)  a broken internal invariant (a bug): throws outq::InternalError.
//   OUTQ_DASSERT(cond, ...) like OUTQ_ASSERT, compiled out in release builds (hot loops).
// The CLI turns either exception into one line on stderr and a non-zero exit code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace outq {

/// A user error: the message says what was wrong, where, what was expected and what was found.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A bug in outq itself; the message carries the source location and asks for a report.
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
[[noreturn]] void throw_internal(const char* file, int line, const char* condition,
                                 const std::string& message);
}  // namespace detail

/// Formats the conventional message "<where>: <field>: expected <expected>, found <found>".
std::string mismatch_message(std::string_view where, std::string_view field,
                             std::string_view expected, std::string_view found);

/// Throws outq::Error with mismatch_message(...).
[[noreturn]] void fail_mismatch(std::string_view where, std::string_view field,
                                std::string_view expected, std::string_view found);

}  // namespace outq

#define OUTQ_CHECK(cond, ...)                                       \
  do {                                                              \
    if (!(cond)) throw ::outq::Error(::outq::detail::concat(__VA_ARGS__)); \
  } while (0)

#define OUTQ_ASSERT(cond, ...)                                                          \
  do {                                                                                  \
    if (!(cond))                                                                        \
      ::outq::detail::throw_internal(__FILE__, __LINE__, #cond,                         \
                                     ::outq::detail::concat(__VA_ARGS__));              \
  } while (0)

#ifdef NDEBUG
#define OUTQ_DASSERT(cond, ...) \
  do {                          \
  } while (0)
#else
#define OUTQ_DASSERT(cond, ...) OUTQ_ASSERT(cond, __VA_ARGS__)
#endif
