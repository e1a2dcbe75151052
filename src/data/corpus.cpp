// Corpus readers for JSONL, plain text and directories of files (see corpus.h for the rules).
#include "outq/data/corpus.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/data/text.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

bool is_jsonl(const fs::path& p) { return p.extension() == ".jsonl"; }

void read_jsonl(const fs::path& path, const std::string& field, std::vector<Document>& out) {
  const std::string content = read_file(path, "JSONL corpus");
  const auto lines = split_lines(content);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (trim(lines[i]).empty()) continue;
    const std::string where = fmt::format("{}:{}", path.string(), i + 1);
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(lines[i]);
    } catch (const nlohmann::json::exception&) {
      fail_mismatch(where, "", "a JSON object per line", "a line that is not valid JSON");
    }
    if (!obj.is_object()) fail_mismatch(where, "", "a JSON object", obj.type_name());
    auto it = obj.find(field);
    if (it == obj.end()) {
      fail_mismatch(where, field, "a string field (set data.text_field to use another)", "none");
    }
    if (!it->is_string()) fail_mismatch(where, field, "a string", it->type_name());
    out.push_back({fmt::format("{}:{}", path.filename().string(), i + 1), it->get<std::string>()});
  }
}

// Plain text: documents separated by blank lines; lines within one are kept with '\n'.
void read_text_blocks(const fs::path& path, std::vector<Document>& out) {
  const std::string content = read_file(path, "text corpus");
  std::string current;
  int index = 0;
  auto flush = [&] {
    if (current.empty()) return;
    out.push_back({fmt::format("{}:{}", path.filename().string(), index++), current});
    current.clear();
  };
  for (std::string_view line : split_lines(content)) {
    if (trim(line).empty()) {
      flush();
      continue;
    }
    if (!current.empty()) current += '\n';
    current += line;
  }
  flush();
}

}  // namespace

Corpus corpus_read(const std::string& path, const std::string& text_field) {
  std::error_code ec;
  OUTQ_CHECK(fs::exists(path, ec), path,
             ": corpus not found (expected a .txt/.jsonl file or a directory of them)");
  Corpus corpus;
  corpus.source = fs::absolute(path).lexically_normal().string();
  if (fs::is_directory(path)) {
    std::vector<fs::path> files;
    for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::end(it);
         it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (!name.empty() && name[0] == '.') {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) files.push_back(it->path());
    }
    OUTQ_CHECK(!ec, path, ": cannot list directory: ", ec.message());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      if (is_jsonl(f)) {
        read_jsonl(f, text_field, corpus.documents);
      } else {
        corpus.documents.push_back(
            {fs::relative(f, path).string(), read_file(f, "corpus file")});
      }
    }
  } else if (is_jsonl(path)) {
    read_jsonl(path, text_field, corpus.documents);
  } else {
    read_text_blocks(path, corpus.documents);
  }
  corpus_clean(corpus);
  OUTQ_CHECK(!corpus.documents.empty(), path,
             ": corpus is empty (expected at least one non-blank document)");
  return corpus;
}

void corpus_clean(Corpus& corpus) {
  std::vector<Document> kept;
  kept.reserve(corpus.documents.size());
  for (auto& doc : corpus.documents) {
    corpus.invalid_utf8 += utf8_sanitize(doc.text);
    if (!trim(doc.text).empty()) kept.push_back(std::move(doc));
  }
  corpus.documents = std::move(kept);
}

}  // namespace outq
