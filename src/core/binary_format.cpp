// Encoding and checked decoding of outq's versioned binary file header (see binary_format.h).
#include "outq/core/binary_format.h"

#include <fmt/format.h>

#include <cstring>

#include "outq/core/error.h"

namespace outq {
namespace {

uint32_t read_u32_le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

void append_u32_le(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

std::string printable(std::string_view bytes) {
  std::string out;
  for (unsigned char c : bytes) out += (c >= 32 && c < 127) ? std::string(1, c) : fmt::format("\\x{:02x}", c);
  return out;
}

}  // namespace

std::string binary_header_encode(std::string_view magic, uint32_t version,
                                 const nlohmann::json& meta) {
  OUTQ_ASSERT(magic.size() == kBinaryMagicBytes, "binary magic must be 8 bytes: ", magic);
  const std::string json = meta.dump();
  std::string out(magic);
  append_u32_le(out, version);
  append_u32_le(out, static_cast<uint32_t>(json.size()));
  out += json;
  out.resize((out.size() + kBinaryAlignment - 1) / kBinaryAlignment * kBinaryAlignment, '\0');
  return out;
}

BinaryHeader binary_header_decode(const uint8_t* data, size_t size, std::string_view path,
                                  std::string_view magic, std::string_view what,
                                  uint32_t max_version) {
  OUTQ_ASSERT(magic.size() == kBinaryMagicBytes, "binary magic must be 8 bytes");
  const std::string kind = fmt::format("an outq {} (magic \"{}\")", what, printable(magic));
  if (size < 16) fail_mismatch(path, "header", kind, fmt::format("a file of {} bytes", size));
  const std::string_view found(reinterpret_cast<const char*>(data), kBinaryMagicBytes);
  if (found != magic) {
    fail_mismatch(path, "magic", kind, fmt::format("\"{}\"", printable(found)));
  }
  BinaryHeader header;
  header.version = read_u32_le(data + 8);
  if (header.version == 0 || header.version > max_version) {
    fail_mismatch(path, "version", fmt::format("1..{} (a newer version needs a newer outq)", max_version),
                  std::to_string(header.version));
  }
  const uint64_t json_bytes = read_u32_le(data + 12);
  if (16 + json_bytes > size) {
    fail_mismatch(path, "header length",
                  fmt::format("{} bytes of metadata within the file", json_bytes),
                  fmt::format("a file of {} bytes (truncated?)", size));
  }
  try {
    header.meta = nlohmann::json::parse(data + 16, data + 16 + json_bytes);
  } catch (const nlohmann::json::exception& e) {
    fail_mismatch(path, "metadata", "valid JSON", fmt::format("a parse error ({})", e.what()));
  }
  if (!header.meta.is_object()) fail_mismatch(path, "metadata", "a JSON object", header.meta.type_name());
  header.payload_offset = (16 + json_bytes + kBinaryAlignment - 1) / kBinaryAlignment * kBinaryAlignment;
  if (header.payload_offset > size) {
    fail_mismatch(path, "payload", fmt::format("data from byte {}", header.payload_offset),
                  fmt::format("a file of {} bytes (truncated?)", size));
  }
  return header;
}

template <class T>
T binary_meta_get(const BinaryHeader& header, std::string_view path, const char* key) {
  auto it = header.meta.find(key);
  if (it == header.meta.end()) fail_mismatch(path, key, "a metadata field", "none");
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    fail_mismatch(path, key, "a value of the right type", it->dump());
  }
}

template std::string binary_meta_get<std::string>(const BinaryHeader&, std::string_view, const char*);
template uint64_t binary_meta_get<uint64_t>(const BinaryHeader&, std::string_view, const char*);
template int64_t binary_meta_get<int64_t>(const BinaryHeader&, std::string_view, const char*);

}  // namespace outq
