// Reading a text corpus into documents. Sources:
//   - a JSONL file: one document per line, text in a string field (default "text");
//   - a plain text file: documents separated by one or more blank lines;
//   - a directory: every regular file below it (sorted by path, hidden files skipped), each
//     plain-text file one document, each .jsonl file read as above.
// Invalid UTF-8 is replaced (U+FFFD) and counted, not fatal. Empty documents are dropped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace outq {

struct Document {
  std::string id;    ///< stable name: "<file>" or "<file>:<line or index>"
  std::string text;  ///< paragraphs separated by '\n'
};

struct Corpus {
  std::string source;              ///< what was read, for messages and manifests
  std::vector<Document> documents;
  uint64_t invalid_utf8 = 0;       ///< bytes replaced by U+FFFD
};

/// Reads a corpus from a file or directory; `text_field` names the JSONL field.
Corpus corpus_read(const std::string& path, const std::string& text_field = "text");

/// Sanitises UTF-8 in place, drops empty documents, and accumulates the replacement count.
void corpus_clean(Corpus& corpus);

}  // namespace outq
