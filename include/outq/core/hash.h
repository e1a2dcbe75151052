// Non-cryptographic content hashing (64-bit FNV-1a) for identifying files and cache keys, e.g.
// which tokenizer a token shard was made with. Not for security; collisions are only unlikely.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace outq {

/// 64-bit FNV-1a over bytes, optionally continuing from a previous value.
uint64_t fnv1a64(std::string_view bytes, uint64_t seed = 0xcbf29ce484222325ULL);
/// 16 lower-case hex digits.
std::string hex64(uint64_t value);

}  // namespace outq
