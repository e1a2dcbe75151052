// Corpus readers: plain text blocks, JSONL, directories, invalid UTF-8, and bad input.
#include <gtest/gtest.h>

#include "outq/core/error.h"
#include "outq/data/corpus.h"
#include "test_util.h"

namespace outq {
namespace {

std::string error_of(const std::string& path, const std::string& field = "text") {
  try {
    corpus_read(path, field);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Corpus, PlainTextSplitsDocumentsAtBlankLines) {
  test::TempDir dir;
  test::write_text(dir / "c.txt", "first doc\nline two\n\n\n  \nsecond doc\r\n");
  const Corpus c = corpus_read(dir / "c.txt");
  ASSERT_EQ(c.documents.size(), 2u);
  EXPECT_EQ(c.documents[0].text, "first doc\nline two");
  EXPECT_EQ(c.documents[0].id, "c.txt:0");
  EXPECT_EQ(c.documents[1].text, "second doc");
}

TEST(Corpus, JsonlReadsTextFieldAndSkipsBlankLines) {
  test::TempDir dir;
  test::write_text(dir / "c.jsonl", "{\"text\": \"one\\ntwo\", \"id\": 3}\n\n{\"body\": \"x\", \"text\": \"three\"}\n");
  const Corpus c = corpus_read(dir / "c.jsonl");
  ASSERT_EQ(c.documents.size(), 2u);
  EXPECT_EQ(c.documents[0].text, "one\ntwo");
  EXPECT_EQ(c.documents[1].id, "c.jsonl:3");
  EXPECT_THROW(corpus_read(dir / "c.jsonl", "body"), Error);  // first line has no "body"
}

TEST(Corpus, DirectoryReadsEveryFileSortedSkippingHidden) {
  test::TempDir dir;
  test::write_text(dir / "b.txt", "bee\n\nstill bee");
  test::write_text(dir / "a/x.md", "ay");
  test::write_text(dir / ".hidden/y.txt", "no");
  test::write_text(dir / "c.jsonl", "{\"text\": \"see\"}\n");
  const Corpus c = corpus_read(dir.path().string());
  ASSERT_EQ(c.documents.size(), 3u);
  EXPECT_EQ(c.documents[0].id, "a/x.md");
  EXPECT_EQ(c.documents[1].text, "bee\n\nstill bee");  // a file in a directory is one document
  EXPECT_EQ(c.documents[2].text, "see");
}

TEST(Corpus, InvalidUtf8IsReplacedAndCounted) {
  test::TempDir dir;
  test::write_text(dir / "c.txt", "caf\xE9 au lait\n\nok");
  const Corpus c = corpus_read(dir / "c.txt");
  EXPECT_EQ(c.invalid_utf8, 1u);
  EXPECT_EQ(c.documents[0].text, "caf\xEF\xBF\xBD au lait");
}

TEST(Corpus, BadInputGivesClearErrors) {
  test::TempDir dir;
  EXPECT_EQ(error_of(dir / "missing.txt"),
            dir / "missing.txt" + ": corpus not found (expected a .txt/.jsonl file or a directory of them)");
  test::write_text(dir / "empty.txt", " \n\n\t\n");
  EXPECT_NE(error_of(dir / "empty.txt").find("corpus is empty"), std::string::npos);
  test::write_text(dir / "bad.jsonl", "{\"text\": \"a\"}\nnot json\n");
  EXPECT_EQ(error_of(dir / "bad.jsonl"), dir / "bad.jsonl" + ":2: expected a JSON object per line, found a line that is not valid JSON");
  test::write_text(dir / "nofield.jsonl", "{\"content\": \"a\"}\n");
  EXPECT_NE(error_of(dir / "nofield.jsonl").find(":1: text: expected a string field"), std::string::npos);
  test::write_text(dir / "num.jsonl", "{\"text\": 5}\n");
  EXPECT_NE(error_of(dir / "num.jsonl").find("text: expected a string, found number"), std::string::npos);
  std::filesystem::create_directories(dir.path() / "emptydir");
  EXPECT_NE(error_of(dir / "emptydir").find("corpus is empty"), std::string::npos);
}

}  // namespace
}  // namespace outq
