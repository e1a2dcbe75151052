// The versioned header every binary file outq writes starts with:
//
//   offset 0   8 bytes   magic, ASCII, names the format ("OQSHARD\0")
//   offset 8   u32 LE    format version
//   offset 12  u32 LE    length L of the JSON metadata
//   offset 16  L bytes   JSON metadata (UTF-8), format-specific fields
//   ...        zeros     padding so the payload starts at a multiple of 64 bytes
//
// Decoding checks each part and says which file, which field, what was expected and found.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace outq {

struct BinaryHeader {
  uint32_t version = 0;
  nlohmann::json meta;
  uint64_t payload_offset = 0;  ///< multiple of kBinaryAlignment
};

inline constexpr size_t kBinaryMagicBytes = 8;
inline constexpr size_t kBinaryAlignment = 64;

/// Serialises a header; `magic` must be exactly 8 bytes.
std::string binary_header_encode(std::string_view magic, uint32_t version,
                                 const nlohmann::json& meta);

/// Parses and checks a header. `what` describes the file kind ("token shard") for messages;
/// versions above `max_version` are rejected with a hint to upgrade outq.
BinaryHeader binary_header_decode(const uint8_t* data, size_t size, std::string_view path,
                                  std::string_view magic, std::string_view what,
                                  uint32_t max_version);

/// Reads a required metadata field with a clear error if missing or of the wrong type.
template <class T>
T binary_meta_get(const BinaryHeader& header, std::string_view path, const char* key);

}  // namespace outq
