// 64-bit FNV-1a hashing and hex formatting.
#include "outq/core/hash.h"

#include <fmt/format.h>

namespace outq {

uint64_t fnv1a64(std::string_view bytes, uint64_t seed) {
  uint64_t h = seed;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::string hex64(uint64_t value) { return fmt::format("{:016x}", value); }

}  // namespace outq
