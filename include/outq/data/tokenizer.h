// Tokenizers: BPE backed by the sentencepiece library (reached through liboutq_spm.so, see
// src/data/spm_api.h): training from in-memory text, loading from a model file, and encoding on
// several threads. Settings follow LLaMA's tokenizer: BPE with
// byte fallback (no text is ever unknown), identity normalisation (decode(encode(s)) == s),
// digits split, ids unk = 0, bos = 1, eos = 2. Or, loaded from a Hugging Face tokenizer.json,
// byte-level BPE (bpe_tokenizer.h): its begin-of-text id is the post-processor template's first
// special token, else its end-of-text token (<|end_of_text|>, <|endoftext|>, </s>, ...), which
// then also separates documents.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace outq {

class Progress;
class ByteLevelBpe;

struct TokenizerTrainOptions {
  int vocab_size = 4096;
  int threads = 2;
  /// Upper bound on training lines sampled by sentencepiece (0 = all).
  int64_t max_sentences = 0;
};

class Tokenizer {
 public:
  /// Trains a BPE model on `lines` (each a sentence or paragraph) and returns it loaded.
  static Tokenizer train(const std::vector<std::string>& lines, const TokenizerTrainOptions& options);
  /// Loads a serialized model file.
  static Tokenizer load(const std::string& path);
  /// Loads a model from its serialized bytes (a tokenizer.json when they are a JSON object);
  /// `origin` names it in errors.
  static Tokenizer from_bytes(std::string bytes, const std::string& origin);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(std::string_view text) const;
  /// Encodes many texts on `threads` threads; result i belongs to texts[i]. `progress`, if
  /// given, advances by one per text.
  std::vector<std::vector<int32_t>> encode_many(const std::vector<std::string>& texts,
                                                int threads, Progress* progress = nullptr) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;

  int vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t unk_id() const;
  int32_t pad_id() const;  ///< -1: none
  /// The piece's score (the merge priority of a BPE model).
  float score(int32_t id) const;
  /// The piece's kind as GGUF numbers it: 1 normal, 2 unknown, 3 control, 5 unused, 6 byte.
  int piece_type(int32_t id) const;
  /// Whether encoding puts a word-boundary mark (U+2581) before the text (SentencePiece's
  /// add_dummy_prefix), seen from how a single letter encodes.
  bool adds_space_prefix() const;
  /// The file it is saved as in model and data directories: tokenizer.model or tokenizer.json.
  const char* file_name() const;
  /// "sentencepiece-bpe" or "byte-level-bpe".
  const char* kind() const;
  /// Serialized model bytes (what save() writes).
  const std::string& bytes() const { return bytes_; }
  /// 16 hex digits identifying the model (hash of its bytes); shards record it.
  const std::string& checksum() const { return checksum_; }
  void save(const std::string& path) const;

 private:
  Tokenizer() = default;
  std::shared_ptr<void> handle_;  ///< the shim's processor (SentencePiece)
  std::shared_ptr<const ByteLevelBpe> bpe_;  ///< a tokenizer.json (else null)
  std::string bytes_, checksum_;
};

/// The tokenizer file of a model or data directory: tokenizer.model, else tokenizer.json (a
/// byte-level BPE); dir/tokenizer.model when there is neither (so the error names it).
std::string tokenizer_path(const std::string& dir);

}  // namespace outq
