// outq's byte-level BPE against @huggingface/tokenizers (installed from npm): for each committed
// tokenizer.json fixture, 4,000 random strings (ASCII words, digits, contractions in any case,
// runs of spaces, tabs, CR/LF, accented Latin, Cyrillic, CJK, emoji, combining marks that NFC
// composes, a ligature, the added special tokens) encode to identical ids, and decode back to the
// string (to its NFC form for the Qwen2-style fixture, which normalizes).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "outq/data/bpe_tokenizer.h"
#include "test_util.h"

namespace outq {
namespace {

const std::string kSource = OUTQ_SOURCE_DIR;

std::vector<std::string> random_strings(int n, unsigned seed) {
  const std::vector<std::string> pool = {
      "the", "The", "THE", " ", " ", "  ", "   ", "\t", "\n", "\r\n", "\r", "'s", "'S", "'ll", "'LL", "'re", "'ve", "'d", "'m",
      "'t", "'", "jury", "said", "Atlanta", "0", "1", "7", "42", "2024", "123456", "3.14", "$", ",", ".", "!?", "--", "->",
      "{", "}", "(x)", "é", "ü", "ß", "ç", "Привет", "дела", "今日", "天気", "。", "😀", "🇫🇷", "e\xCC\x81", "A\xCC\x8A", "\xEF\xAC\x81", "\xC2\xA0",
      "<|endoftext|>", "<|im_start|>", "<|endof", "a", "b", "Zz", "_", "#", "ñandú", "\xE2\x80\x94", "ab12cd", "x1y2",
  };
  std::mt19937 gen(seed);
  std::uniform_int_distribution<size_t> pick(0, pool.size() - 1);
  std::uniform_int_distribution<int> len(0, 14);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    std::string s;
    for (int k = len(gen); k > 0; --k) s += pool[pick(gen)];
    out.push_back(s);
  }
  return out;
}

TEST(BpeOracle, IdsEqualHuggingFaceTokenizersOnRandomStrings) {
  test::TempDir dir;
  const auto npm = test::run_shell("npm install --no-audit --no-fund --prefix " + dir / "npm" + " @huggingface/tokenizers@0.2.0");
  ASSERT_EQ(npm.exit_code, 0) << npm.err;
  const auto strings = random_strings(4000, 11);
  std::string lines;
  for (const auto& s : strings) lines += nlohmann::json(s).dump() + "\n";
  test::write_text(dir / "strings.jsonl", lines);
  for (const char* name : {"bpe-qwen2.json", "bpe-llama3.json", "bpe-smollm2.json"}) {
    const std::string fixture = kSource + "/tests/data/fixtures/" + name;
    const auto r = test::run_shell("node " + kSource + "/tests/data/bpe_oracle.cjs " + fixture + " " + dir / "strings.jsonl " +
                                   dir / "npm");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const ByteLevelBpe t = ByteLevelBpe::from_json(test::read_text(fixture), name);
    std::istringstream out(r.out);
    std::string line;
    size_t i = 0, mismatches = 0;
    for (; std::getline(out, line) && i < strings.size(); ++i) {
      const auto want = nlohmann::json::parse(line).get<std::vector<int32_t>>();
      const auto got = t.encode(strings[i]);
      if (got != want && ++mismatches <= 5) ADD_FAILURE() << name << ": " << nlohmann::json(strings[i]).dump();
      if (std::string(name) == "bpe-qwen2.json") EXPECT_EQ(t.encode(t.decode(got)), got) << name;  // (NFC)
      else EXPECT_EQ(t.decode(got), strings[i]) << name;
    }
    EXPECT_EQ(i, strings.size()) << name;
    EXPECT_EQ(mismatches, 0u) << name;
  }
}

}  // namespace
}  // namespace outq
