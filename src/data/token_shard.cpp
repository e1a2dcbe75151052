// Token shard writing and validated, memory-mapped reading.
#include "outq/data/token_shard.h"

#include <fmt/format.h>

#include <cstring>

#include "outq/core/binary_format.h"
#include "outq/core/error.h"

namespace outq {
namespace {
const std::string kMagic(kShardMagic, 8);  // includes the trailing '\0'
}

void shard_write(const std::string& path, const std::vector<int32_t>& tokens, ShardInfo info) {
  info.num_tokens = tokens.size();
  info.dtype = info.vocab_size <= 65536 ? "u16" : "u32";
  const nlohmann::json meta = {{"split", info.split},
                               {"dtype", info.dtype},
                               {"num_tokens", info.num_tokens},
                               {"num_documents", info.num_documents},
                               {"vocab_size", info.vocab_size},
                               {"tokenizer_checksum", info.tokenizer_checksum}};
  AtomicWriter out(path);
  out.write(binary_header_encode(kMagic, kShardVersion, meta));
  std::vector<uint8_t> buffer;
  const int width = info.dtype == "u16" ? 2 : 4;
  buffer.reserve(tokens.size() * width);
  for (int32_t id : tokens) {
    OUTQ_ASSERT(id >= 0 && id < info.vocab_size, "token id ", id, " outside vocabulary");
    const uint32_t v = static_cast<uint32_t>(id);
    for (int b = 0; b < width; ++b) buffer.push_back(static_cast<uint8_t>(v >> (8 * b)));
  }
  out.write(buffer.data(), buffer.size());
  out.commit();
}

TokenShard::TokenShard(const std::string& path) : file_(path) {
  const BinaryHeader h =
      binary_header_decode(file_.data(), file_.size(), path, kMagic, "token shard", kShardVersion);
  info_.split = binary_meta_get<std::string>(h, path, "split");
  info_.dtype = binary_meta_get<std::string>(h, path, "dtype");
  info_.num_tokens = binary_meta_get<uint64_t>(h, path, "num_tokens");
  info_.num_documents = binary_meta_get<uint64_t>(h, path, "num_documents");
  info_.vocab_size = binary_meta_get<int64_t>(h, path, "vocab_size");
  info_.tokenizer_checksum = binary_meta_get<std::string>(h, path, "tokenizer_checksum");
  if (info_.dtype != "u16" && info_.dtype != "u32") fail_mismatch(path, "dtype", "\"u16\" or \"u32\"", info_.dtype);
  if (info_.vocab_size <= 0) fail_mismatch(path, "vocab_size", "a positive integer", std::to_string(info_.vocab_size));
  width_ = info_.dtype == "u16" ? 2 : 4;
  // num_tokens comes from the file: compare it with what the file holds by division, never by a
  // product that a huge header value would overflow (a "valid" size check, then reads past the end).
  const uint64_t payload = file_.size() > h.payload_offset ? file_.size() - h.payload_offset : 0;
  if (info_.num_tokens > payload / width_ || payload != info_.num_tokens * width_) {
    const bool short_file = info_.num_tokens > payload / width_;
    fail_mismatch(path, "size",
                  short_file && info_.num_tokens > (uint64_t{1} << 40)
                      ? fmt::format("a payload of num_tokens = {} {} tokens", info_.num_tokens, info_.dtype)
                      : fmt::format("{} bytes for {} tokens", h.payload_offset + info_.num_tokens * width_, info_.num_tokens),
                  fmt::format("{} bytes ({})", file_.size(), short_file ? "truncated, or a corrupt header" : "trailing data"));
  }
  tokens_ = file_.data() + h.payload_offset;
  for (uint64_t i = 0; i < info_.num_tokens; ++i) {
    const int32_t id = at(i);
    if (id < 0 || id >= info_.vocab_size) {
      fail_mismatch(path, fmt::format("token {}", i), fmt::format("an id below vocab_size {}", info_.vocab_size),
                    std::to_string(id));
    }
  }
}

int32_t TokenShard::at(uint64_t i) const {
  OUTQ_DASSERT(i < info_.num_tokens, "token index out of range");
  const uint8_t* p = tokens_ + i * width_;
  if (width_ == 2) return static_cast<int32_t>(p[0] | p[1] << 8);
  return static_cast<int32_t>(p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24);
}

void TokenShard::copy(uint64_t start, uint64_t n, int32_t* out) const {
  OUTQ_ASSERT(start + n <= info_.num_tokens, "shard range [", start, ", ", start + n,
              ") outside ", info_.num_tokens, " tokens");
  for (uint64_t i = 0; i < n; ++i) out[i] = at(start + i);
}

void TokenShard::expect_tokenizer(const std::string& checksum, const std::string& tokenizer_path) const {
  if (info_.tokenizer_checksum != checksum) {
    fail_mismatch(file_.path().string(), "tokenizer_checksum",
                  fmt::format("{} (the tokenizer {})", checksum, tokenizer_path),
                  fmt::format("{} (the shard was made with a different tokenizer)", info_.tokenizer_checksum));
  }
}

}  // namespace outq
