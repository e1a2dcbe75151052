// Token shards: a split's token ids in one versioned binary file, memory-mapped for reading.
// Layout: outq binary header (magic "OQSHARD\0", version 1, JSON metadata: split, dtype "u16" or
// "u32", num_tokens, num_documents, vocab_size, tokenizer_checksum), then num_tokens ids
// little-endian. Documents are laid end to end, each as BOS text EOS.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "outq/core/file_io.h"

namespace outq {

struct ShardInfo {
  std::string split;               ///< "train", "val", "test", ...
  std::string dtype;               ///< "u16" or "u32"
  uint64_t num_tokens = 0;
  uint64_t num_documents = 0;
  int64_t vocab_size = 0;
  std::string tokenizer_checksum;  ///< Tokenizer::checksum() of the tokenizer that made it
};

inline constexpr const char* kShardMagic = "OQSHARD";  // + '\0'
inline constexpr uint32_t kShardVersion = 1;

/// Writes tokens atomically; dtype is u16 when vocab_size <= 65536, else u32. The info's
/// num_tokens and dtype are filled in from the data.
void shard_write(const std::string& path, const std::vector<int32_t>& tokens, ShardInfo info);

class TokenShard {
 public:
  /// Opens and validates a shard (magic, version, metadata, size, every id < vocab_size).
  explicit TokenShard(const std::string& path);

  const ShardInfo& info() const { return info_; }
  uint64_t size() const { return info_.num_tokens; }
  int32_t at(uint64_t i) const;
  /// Copies tokens [start, start + n) into out; the range must be inside the shard.
  void copy(uint64_t start, uint64_t n, int32_t* out) const;
  /// Throws unless the shard was made with the tokenizer of this checksum.
  void expect_tokenizer(const std::string& checksum, const std::string& tokenizer_path) const;

 private:
  MappedFile file_;
  ShardInfo info_;
  const uint8_t* tokens_ = nullptr;
  int width_ = 2;
};

}  // namespace outq
