// Byte-level BPE tokenizers read from a Hugging Face tokenizer.json (the LLaMA-3, Qwen2 and
// SmolLM2 kind): added tokens split off first; the rest normalized (NFC, NFD, NFKC, NFKD or a
// Sequence of them, by ICU) when the file has a normalizer; the pre-tokenizer (Split with a regex, Digits,
// ByteLevel with or without the GPT-2 regex, or a Sequence of them) cuts the text into words,
// with the regexes run by PCRE2 in Unicode mode (\p{L}, \p{N}, lookahead, case-insensitive
// groups); each word's bytes become the byte-level alphabet (printable bytes themselves, the rest
// U+0100 onwards) and are merged pair by pair in merge-rank order (or taken whole when the
// vocabulary has them and ignore_merges is set); decoding maps the characters back to bytes.
// What the format allows and outq does not implement (other normalizers, other models, other split
// behaviours, byte fallback, stripped added tokens) is an error naming the key.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace outq {

class ByteLevelBpe {
 public:
  /// Parses tokenizer.json text; `origin` names it in errors.
  static ByteLevelBpe from_json(const std::string& text, const std::string& origin);
  ByteLevelBpe(ByteLevelBpe&&) noexcept;
  ByteLevelBpe& operator=(ByteLevelBpe&&) noexcept;
  ~ByteLevelBpe();

  /// Ids of `text` (no special tokens added; added tokens in the text are matched).
  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  /// The token's string (byte-level characters; an added token's content); "" for an unused id.
  std::string piece(int32_t id) const;
  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  /// The id of `token`, or -1.
  int32_t id_of(const std::string& token) const;
  bool is_special(int32_t id) const;
  /// The begin-of-text id: the first special token of the post-processor's template (LLaMA-3's
  /// <|begin_of_text|>), else the end-of-text id (Qwen2 and SmolLM2 have no BOS of their own).
  int32_t bos_id() const { return bos_; }
  /// The end-of-text id: <|end_of_text|>, <|endoftext|>, </s>, <|im_end|> or <|eot_id|>.
  int32_t eos_id() const { return eos_; }
  /// The merges as "a b" strings in rank order (what GGUF's tokenizer.ggml.merges holds).
  std::vector<std::string> merges() const;

 private:
  ByteLevelBpe();
  struct Step;  // one pre-tokenizer
  struct Regex;
  void pre_tokenize(std::string_view text, std::vector<std::string>* words) const;
  std::string normalize(std::string_view text) const;
  void bpe(const std::string& word, std::vector<int32_t>* out) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> pieces_;                       ///< by id
  std::map<std::pair<std::string, std::string>, int> ranks_;
  std::vector<std::pair<std::string, std::string>> merge_list_;
  std::vector<std::pair<std::string, int32_t>> added_;   ///< content, id (longest first)
  std::vector<char> kind_;  ///< by id: 0 vocabulary token, 1 added token, 2 added special token
  std::vector<Step> steps_;
  std::vector<std::string> normalizers_;  ///< "NFC", "NFD", "NFKC", "NFKD", applied in order
  bool ignore_merges_ = false;
  int32_t bos_ = -1, eos_ = -1;
};

}  // namespace outq
