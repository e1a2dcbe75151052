// The data pipeline end to end on a small corpus: outputs, statistics, decoding back to the
// documents, reuse, rebuild, deterministic split, and failures that leave nothing behind.
#include <gtest/gtest.h>

#include <filesystem>

#include "outq/core/error.h"
#include "outq/data/corpus.h"
#include "outq/data/prepare.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

DataConfig small_config(const test::TempDir& dir, int docs = 60) {
  test::write_text(dir / "corpus.txt", test::synthetic_text(docs, 4));
  DataConfig c;
  c.corpus = dir / "corpus.txt";
  c.out = dir / "prepared";
  c.cache_dir = dir / "cache";
  c.vocab_size = 300;
  c.val_fraction = 0.1;
  c.test_fraction = 0.1;
  return c;
}

TEST(SplitOfDocument, ProportionsAndDeterminism) {
  int counts[3] = {0, 0, 0};
  for (size_t i = 0; i < 10000; ++i) ++counts[split_of_document(i, 0.05, 0.05)];
  EXPECT_NEAR(counts[1], 500, 5);
  EXPECT_NEAR(counts[2], 500, 5);
  for (size_t i = 0; i < 100; ++i) EXPECT_EQ(split_of_document(i, 0.05, 0.05), split_of_document(i, 0.05, 0.05));
}

TEST(DataPrepare, WritesShardsThatDecodeToTheDocuments) {
  test::TempDir dir;
  const DataConfig c = small_config(dir);
  const DataSummary s = data_prepare(c, "{}\n", false);
  EXPECT_FALSE(s.reused);
  ASSERT_EQ(s.splits.size(), 3u);
  EXPECT_EQ(s.splits[0].documents + s.splits[1].documents + s.splits[2].documents, 60u);
  for (const auto& sp : s.splits) EXPECT_GT(sp.documents, 0u);
  for (const char* f : {"manifest.json", "summary.json", "config.json", "tokenizer.model", "train.bin",
                        "val.bin", "test.bin"}) {
    EXPECT_TRUE(fs::exists(fs::path(c.out) / f)) << f;
  }

  const Corpus corpus = corpus_read(c.corpus);
  PreparedData data(c.out);
  const TokenShard val = data.shard("val");
  EXPECT_EQ(val.size(), s.splits[1].tokens);
  std::vector<int32_t> ids(val.size());
  val.copy(0, val.size(), ids.data());
  // Documents are BOS text EOS in corpus order; decode each and compare with the source.
  const auto& doc_ids = data.manifest()["splits"]["val"]["document_ids"];
  size_t pos = 0, k = 0;
  for (const auto& d : corpus.documents) {
    if (k >= doc_ids.size() || d.id != doc_ids[k].get<std::string>()) continue;
    ASSERT_EQ(ids[pos], data.tokenizer().bos_id());
    size_t end = pos + 1;
    while (ids[end] != data.tokenizer().eos_id()) ++end;
    EXPECT_EQ(data.tokenizer().decode({ids.begin() + pos + 1, ids.begin() + end}), d.text);
    pos = end + 1;
    ++k;
  }
  EXPECT_EQ(k, doc_ids.size());
  EXPECT_EQ(pos, ids.size());
}

TEST(DataPrepare, SecondRunReusesAndForceRebuilds) {
  test::TempDir dir;
  const DataConfig c = small_config(dir);
  const DataSummary first = data_prepare(c, "{}\n", false);
  const DataSummary again = data_prepare(c, "{}\n", false);
  EXPECT_TRUE(again.reused);
  EXPECT_EQ(again.splits[0].tokens, first.splits[0].tokens);
  EXPECT_EQ(again.tokenizer_checksum, first.tokenizer_checksum);
  const DataSummary forced = data_prepare(c, "{}\n", true);
  EXPECT_FALSE(forced.reused);
  EXPECT_EQ(forced.tokenizer_checksum, first.tokenizer_checksum);  // deterministic
  DataConfig other = c;
  other.vocab_size = 310;
  EXPECT_FALSE(data_prepare(other, "{}\n", false).reused);  // settings changed: rebuilt
}

TEST(DataPrepare, DefaultOutputGoesUnderTheCache) {
  test::TempDir dir;
  DataConfig c = small_config(dir);
  c.out = "";
  const DataSummary s = data_prepare(c, "{}\n", false);
  EXPECT_EQ(fs::path(s.dir).parent_path(), fs::path(c.cache_dir) / "data");
  EXPECT_EQ(fs::path(s.dir).filename().string().rfind("corpus-", 0), 0u);
}

TEST(DataPrepare, EmptySplitIsAnErrorAndWritesNothing) {
  test::TempDir dir;
  const DataConfig c = small_config(dir, 3);
  try {
    data_prepare(c, "{}\n", false);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("split is empty"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(c.out));
}

TEST(DataPrepare, TooLargeVocabularyIsAnErrorAndWritesNothing) {
  test::TempDir dir;
  DataConfig c = small_config(dir);
  c.vocab_size = 30000;
  EXPECT_THROW(data_prepare(c, "{}\n", false), Error);
  EXPECT_FALSE(fs::exists(c.out));
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".staging"), std::string::npos);
}

TEST(DataPrepare, ShardFromAnotherTokenizerIsRejected) {
  test::TempDir dir;
  DataConfig a = small_config(dir);
  data_prepare(a, "{}\n", false);
  DataConfig b = a;
  b.out = dir / "prepared-b";
  b.vocab_size = 310;
  data_prepare(b, "{}\n", false);
  fs::copy_file(fs::path(b.out) / "val.bin", fs::path(a.out) / "val.bin", fs::copy_options::overwrite_existing);
  PreparedData data(a.out);
  EXPECT_NO_THROW(data.shard("train"));
  try {
    data.shard("val");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("made with a different tokenizer"), std::string::npos) << e.what();
  }
  EXPECT_THROW(data.shard("dev"), Error);
}

TEST(DataPrepare, RefusesToReplaceADirectoryItDidNotMake) {
  test::TempDir dir;
  DataConfig c = small_config(dir);
  test::write_text(c.out + "/precious.txt", "keep me");
  try {
    data_prepare(c, "{}\n", false);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("refusing to overwrite it"), std::string::npos) << e.what();
  }
  EXPECT_EQ(test::read_text(c.out + "/precious.txt"), "keep me");
}

TEST(DataPrepare, CorruptManifestSuggestsForce) {
  test::TempDir dir;
  const DataConfig c = small_config(dir);
  data_prepare(c, "{}\n", false);
  test::write_text(c.out + "/manifest.json", "{ truncated");
  try {
    data_prepare(c, "{}\n", false);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("use --force"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(data_prepare(c, "{}\n", true).reused);
}

TEST(DataConfigValidate, ImpossibleSettings) {
  DataConfig c;
  c.vocab_size = 100;
  EXPECT_THROW(c.validate(), Error);
  c = DataConfig{};
  c.val_fraction = 0.7;
  EXPECT_THROW(c.validate(), Error);
  c = DataConfig{};
  c.threads = 0;
  EXPECT_THROW(c.validate(), Error);
  EXPECT_NO_THROW(DataConfig{}.validate());
}

}  // namespace
}  // namespace outq
