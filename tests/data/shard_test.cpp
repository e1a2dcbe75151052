// Token shards: round trip in both widths, and truncated, foreign, out-of-vocabulary,
// wrong-tokenizer and huge-token-count files rejected with messages naming the problem.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "outq/core/binary_format.h"
#include "outq/core/error.h"
#include "outq/data/token_shard.h"
#include "test_util.h"

namespace outq {
namespace {

ShardInfo info_for(int64_t vocab) {
  ShardInfo info;
  info.split = "train";
  info.num_documents = 3;
  info.vocab_size = vocab;
  info.tokenizer_checksum = "0123456789abcdef";
  return info;
}

std::vector<int32_t> random_tokens(size_t n, int32_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  t[0] = vocab - 1;  // the extreme ids are always in the test
  t[1] = 0;
  return t;
}

std::string error_of(const std::string& path) {
  try {
    TokenShard s(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TokenShard, RoundTripU16AndU32) {
  test::TempDir dir;
  for (int32_t vocab : {65536, 70001}) {
    const auto tokens = random_tokens(1237, vocab, vocab);
    shard_write(dir / "s.bin", tokens, info_for(vocab));
    TokenShard s(dir / "s.bin");
    EXPECT_EQ(s.info().dtype, vocab <= 65536 ? "u16" : "u32");
    EXPECT_EQ(s.info().num_tokens, tokens.size());
    EXPECT_EQ(s.info().num_documents, 3u);
    EXPECT_EQ(s.info().split, "train");
    std::vector<int32_t> back(tokens.size() - 5);
    s.copy(5, back.size(), back.data());
    EXPECT_TRUE(std::equal(back.begin(), back.end(), tokens.begin() + 5));
    EXPECT_EQ(s.at(0), vocab - 1);
  }
}

TEST(TokenShard, EmptyShardIsValid) {
  test::TempDir dir;
  shard_write(dir / "e.bin", {}, info_for(300));
  EXPECT_EQ(TokenShard(dir / "e.bin").size(), 0u);
}

TEST(TokenShard, TruncatedFileIsRejected) {
  test::TempDir dir;
  shard_write(dir / "s.bin", random_tokens(100, 300, 1), info_for(300));
  std::filesystem::resize_file(dir / "s.bin", std::filesystem::file_size(dir / "s.bin") - 3);
  const std::string e = error_of(dir / "s.bin");
  EXPECT_NE(e.find("size: expected"), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  std::filesystem::resize_file(dir / "s.bin", 30);
  EXPECT_NE(error_of(dir / "s.bin").find("header length"), std::string::npos);
}

// A header claiming 2^63 (or 2^62 + 1) tokens: num_tokens * 2 wraps around 2^64 to a small number,
// so a size check by multiplication passes and the reader runs past the mapping.
TEST(TokenShard, HugeTokenCountInTheHeaderIsRejected) {
  test::TempDir dir;
  for (const uint64_t n : {uint64_t{1} << 63, (uint64_t{1} << 63) + 2, (uint64_t{1} << 62) + 1}) {
    const nlohmann::json meta = {{"split", "train"}, {"dtype", "u16"}, {"num_tokens", n}, {"num_documents", 1},
                                 {"vocab_size", 300}, {"tokenizer_checksum", "0123456789abcdef"}};
    const std::string payload_bytes((n * 2) % (uint64_t{1} << 20), '\0');  // what the wrapped product "expects"
    test::write_text(dir / "h.bin", binary_header_encode(std::string(kShardMagic, 8), kShardVersion, meta) + payload_bytes);
    const std::string e = error_of(dir / "h.bin");
    EXPECT_NE(e.find("size: expected a payload of num_tokens = " + std::to_string(n) + " u16 tokens"), std::string::npos) << e;
    EXPECT_NE(e.find("truncated, or a corrupt header"), std::string::npos) << e;
  }
}

TEST(TokenShard, ForeignFileIsRejected) {
  test::TempDir dir;
  test::write_text(dir / "f.bin", "\x89PNG\r\n\x1a\n and then some image bytes here");
  const std::string e = error_of(dir / "f.bin");
  EXPECT_NE(e.find("magic: expected an outq token shard"), std::string::npos) << e;
  EXPECT_NE(error_of(dir / "missing.bin").find("cannot open"), std::string::npos);
}

TEST(TokenShard, OutOfVocabularyIdIsRejected) {
  test::TempDir dir;
  shard_write(dir / "s.bin", random_tokens(10, 300, 2), info_for(300));
  std::string bytes = test::read_text(dir / "s.bin");
  bytes[bytes.size() - 1] = '\x7f';  // last id becomes >= 32512
  test::write_text(dir / "s.bin", bytes);
  EXPECT_NE(error_of(dir / "s.bin").find("token 9: expected an id below vocab_size 300"), std::string::npos);
}

TEST(TokenShard, DifferentTokenizerIsRejected) {
  test::TempDir dir;
  shard_write(dir / "s.bin", random_tokens(10, 300, 3), info_for(300));
  TokenShard s(dir / "s.bin");
  EXPECT_NO_THROW(s.expect_tokenizer("0123456789abcdef", "tok.model"));
  try {
    s.expect_tokenizer("fedcba9876543210", "tok.model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_checksum: expected fedcba9876543210 (the tokenizer tok.model), "
                                         "found 0123456789abcdef (the shard was made with a different tokenizer)"),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace outq
