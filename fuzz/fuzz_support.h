// Shared pieces of the fuzz targets (see docs/testing.md): the input written as a file in a
// private scratch directory (the readers take paths, as outq's commands do), and the rule every
// target enforces: a reader given any bytes either succeeds or throws outq::Error. Any other
// exception (a raw JSON, TOML or LibTorch error, an outq::InternalError) aborts, so the fuzzer
// reports it like a crash, next to the sanitizers' reports, leaks and timeouts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <typeinfo>

#include "outq/core/error.h"

namespace outq::fuzz {

/// A directory private to this process (under /dev/shm when it exists), removed at exit.
const std::string& scratch_dir();

/// Writes the input to scratch_dir()/name (plain write: the fuzzer is the only reader) and
/// returns its path.
std::string write_input(const std::string& name, const uint8_t* data, size_t size);

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Runs `read`; outq::Error is the expected answer to bad bytes, anything else aborts.
template <class F>
int expect_clean(F&& read) {
  try {
    read();
  } catch (const outq::Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: a reader threw %s instead of outq::Error: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
  return 0;
}

/// A property that must hold for every input the reader accepted.
#define OUTQ_FUZZ_REQUIRE(cond)                                                    \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      std::fprintf(stderr, "fuzz: %s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                \
    }                                                                              \
  } while (0)

}  // namespace outq::fuzz
