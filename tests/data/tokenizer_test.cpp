// Tokenizer: lossless round trip (newlines, accents, characters never seen in training via
// byte fallback), special ids, parallel encoding equal to serial, save/load, and bad input.
#include <gtest/gtest.h>

#include "outq/core/error.h"
#include "outq/data/text.h"
#include "outq/data/tokenizer.h"
#include "test_util.h"

namespace outq {
namespace {

std::vector<std::string> training_lines() {
  std::vector<std::string> lines;
  const std::string text = test::synthetic_text(40, 6);
  for (auto l : split_lines(text))
    if (!l.empty()) lines.emplace_back(l);
  return lines;
}

const Tokenizer& small_tokenizer() {
  static const Tokenizer t = [] {
    TokenizerTrainOptions o;
    o.vocab_size = 320;
    return Tokenizer::train(training_lines(), o);
  }();
  return t;
}

TEST(Tokenizer, SpecialIdsAndSize) {
  const Tokenizer& t = small_tokenizer();
  EXPECT_EQ(t.vocab_size(), 320);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.checksum().size(), 16u);
}

TEST(Tokenizer, RoundTripIsLossless) {
  const Tokenizer& t = small_tokenizer();
  for (const std::string text :
       {"the model quantized weights.", "two\nlines\n\nand a blank", "café naïve 1961",
        "never seen: 日本語 \xF0\x9F\x98\x80 ~|{}", "  leading and  double  spaces"}) {
    const auto ids = t.encode(text);
    for (int32_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, t.vocab_size());
      EXPECT_NE(id, 0) << "unknown piece for: " << text;  // byte fallback: nothing is <unk>
    }
    EXPECT_EQ(t.decode(ids), text);
  }
}

TEST(Tokenizer, ParallelEncodingEqualsSerial) {
  const Tokenizer& t = small_tokenizer();
  std::vector<std::string> texts;
  const std::string text = test::synthetic_text(5, 20, 9);
  for (auto l : split_lines(text)) texts.emplace_back(l);
  const auto parallel = t.encode_many(texts, 2);
  ASSERT_EQ(parallel.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(parallel[i], t.encode(texts[i]));
}

TEST(Tokenizer, SaveAndLoadKeepModelAndChecksum) {
  test::TempDir dir;
  small_tokenizer().save(dir / "tok.model");
  const Tokenizer loaded = Tokenizer::load(dir / "tok.model");
  EXPECT_EQ(loaded.checksum(), small_tokenizer().checksum());
  EXPECT_EQ(loaded.encode("the outlier channel"), small_tokenizer().encode("the outlier channel"));
}

TEST(Tokenizer, BadInput) {
  test::TempDir dir;
  test::write_text(dir / "junk.model", "not a model");
  EXPECT_THROW(Tokenizer::load(dir / "junk.model"), Error);
  EXPECT_THROW(Tokenizer::load(dir / "missing.model"), Error);
  TokenizerTrainOptions too_small;
  too_small.vocab_size = 100;
  EXPECT_THROW(Tokenizer::train(training_lines(), too_small), Error);
}

TEST(Tokenizer, VocabularyLargerThanTextSupportsIsAnError) {
  TokenizerTrainOptions o;
  o.vocab_size = 50000;
  try {
    Tokenizer::train({"a tiny text", "with hardly any words"}, o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.vocab_size: 50000 is larger than the training text supports"),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace outq
