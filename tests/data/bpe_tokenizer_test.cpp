// Byte-level BPE (tokenizer.json): the committed fixtures (Qwen2-style with its NFC normalizer,
// LLaMA-3- and SmolLM2-style pre-tokenizers; tests/data/fixtures/make_bpe_fixtures.py) encode the golden strings to exactly
// the ids @huggingface/tokenizers gave for them (bpe-golden.jsonl), decode back to the text, and
// what outq does not implement is refused by key. The comparison on thousands of random strings
// against the npm package itself is tests/cli/bpe_oracle_test.cpp.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "outq/core/error.h"
#include "outq/data/bpe_tokenizer.h"
#include "test_util.h"

namespace outq {
namespace {

const std::string kFixtures = OUTQ_SOURCE_DIR "/tests/data/fixtures/";

TEST(ByteLevelBpe, GoldenIdsOfTheReferenceEncoder) {
  std::map<std::string, ByteLevelBpe> tokenizers;
  std::ifstream in(kFixtures + "bpe-golden.jsonl");
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    const std::string name = j.at("tokenizer");
    if (!tokenizers.count(name))
      tokenizers.emplace(name, ByteLevelBpe::from_json(test::read_text(kFixtures + name), name));
    const ByteLevelBpe& t = tokenizers.at(name);
    const std::string text = j.at("text");
    EXPECT_EQ(t.encode(text), j.at("ids").get<std::vector<int32_t>>()) << name << ": " << text;
    // (NFC may recompose the text: Qwen2's fixture decodes to the normalized string, which encodes alike.)
    if (name == "bpe-qwen2.json") EXPECT_EQ(t.encode(t.decode(t.encode(text))), t.encode(text)) << name;
    else EXPECT_EQ(t.decode(t.encode(text)), text) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 45);
  const ByteLevelBpe& q = tokenizers.at("bpe-qwen2.json");
  EXPECT_EQ(q.vocab_size(), 571);
  EXPECT_EQ(q.id_of("<|endoftext|>"), 569);
  EXPECT_TRUE(q.is_special(569));
  EXPECT_FALSE(q.is_special(100));
  EXPECT_EQ(q.piece(32), "\xC4\xA0");  // the space byte: U+0120
  EXPECT_EQ(q.piece(65), "A");
  EXPECT_EQ(q.merges().front(), "t h");
}

TEST(ByteLevelBpe, WhatIsNotImplementedIsRefusedByKey) {
  const auto base = nlohmann::json::parse(test::read_text(kFixtures + "bpe-qwen2.json"));
  const std::vector<std::pair<std::string, std::function<void(nlohmann::json&)>>> cases = {
      {"normalizer.type: expected NFC, NFD, NFKC, NFKD", [](auto& j) { j["normalizer"] = {{"type", "Lowercase"}}; }},
      {"model.type: expected \"BPE\"", [](auto& j) { j["model"]["type"] = "WordPiece"; }},
      {"model.byte_fallback", [](auto& j) { j["model"]["byte_fallback"] = true; }},
      {"pre_tokenizer[0].behavior", [](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }},
      {"pre_tokenizer[1].type: expected Split, Digits or ByteLevel", [](auto& j) { j["pre_tokenizer"]["pretokenizers"][1]["type"] = "Metaspace"; }},
      {"pre_tokenizer[0]: pattern: expected a regular expression PCRE2 compiles",
       [](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; }},
      {"added_tokens.<|endoftext|>.lstrip", [](auto& j) { j["added_tokens"][0]["lstrip"] = true; }},
      {"pre_tokenizer: expected a ByteLevel step", [](auto& j) { j["pre_tokenizer"]["pretokenizers"].erase(1); }},
      {"model.merges", [](auto& j) { j["model"]["merges"][0] = "nospace"; }},
  };
  for (const auto& [needle, edit] : cases) {
    auto j = base;
    edit(j);
    const std::string e = test::error_of([&] { ByteLevelBpe::from_json(j.dump(), "tok.json"); });
    EXPECT_NE(e.find(needle), std::string::npos) << needle << " -> " << e;
    EXPECT_NE(e.find("tok.json"), std::string::npos) << e;
  }
  EXPECT_NE(test::error_of([] { ByteLevelBpe::from_json("{not json", "x.json"); }).find("invalid JSON"), std::string::npos);
}

}  // namespace
}  // namespace outq
