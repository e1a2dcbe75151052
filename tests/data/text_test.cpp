// UTF-8 sanitising against a table of valid and invalid sequences, and the line helpers.
#include <gtest/gtest.h>

#include "outq/data/text.h"

namespace outq {
namespace {

const std::string kFFFD = "\xEF\xBF\xBD";

TEST(Utf8, ValidTextIsUntouched) {
  std::string s = "plain ASCII, café, 中文, emoji \xF0\x9F\x98\x80, U+10FFFF \xF4\x8F\xBF\xBF";
  const std::string before = s;
  EXPECT_EQ(utf8_sanitize(s), 0u);
  EXPECT_EQ(s, before);
}

TEST(Utf8, InvalidSequencesBecomeReplacementCharacters) {
  struct Case {
    std::string in, out;
    size_t replaced;
  } cases[] = {
      {"a\x80z", "a" + kFFFD + "z", 1},                       // stray continuation byte
      {"a\xC3", "a" + kFFFD, 1},                              // truncated at end
      {"\xC3(", kFFFD + "(", 1},                              // bad continuation
      {"\xC0\xAF", kFFFD + kFFFD, 2},                         // overlong '/'
      {"\xED\xA0\x80", kFFFD + kFFFD + kFFFD, 3},             // UTF-16 surrogate
      {"\xF4\x90\x80\x80", kFFFD + kFFFD + kFFFD + kFFFD, 4}, // above U+10FFFF
      {"\xFF\xFE", kFFFD + kFFFD, 2},                         // never valid
      {"ok\xE2\x82\xACok\x92", "ok\xE2\x82\xACok" + kFFFD, 1}, // Latin-1 quote after a euro sign
  };
  for (const auto& c : cases) {
    std::string s = c.in;
    EXPECT_EQ(utf8_sanitize(s), c.replaced) << c.in;
    EXPECT_EQ(s, c.out) << c.in;
  }
}

TEST(Utf8, LengthCountsCodePoints) {
  EXPECT_EQ(utf8_length("café"), 4u);
  EXPECT_EQ(utf8_length(""), 0u);
  EXPECT_EQ(utf8_length("\xF0\x9F\x98\x80!"), 2u);
}

TEST(Lines, SplitAndTrim) {
  const auto lines = split_lines("a\r\nb\n\nc");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "a");
  EXPECT_EQ(lines[2], "");
  EXPECT_EQ(lines[3], "c");
  EXPECT_EQ(split_lines("x\n").size(), 1u);
  EXPECT_EQ(trim("  \tx y \n"), "x y");
  EXPECT_EQ(trim(" \t "), "");
}

}  // namespace
}  // namespace outq
