// sentencepiece-backed BPE tokenizer (see tokenizer.h for the settings and why).
#include "outq/data/tokenizer.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <regex>
#include <thread>
#include <unordered_map>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/hash.h"
#include "outq/core/progress.h"

namespace outq {
namespace {

// Feeds in-memory lines to the sentencepiece trainer (no temporary text file needed).
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& lines) : lines_(lines) {}
  bool done() const override { return index_ >= lines_.size(); }
  void Next() override { ++index_; }
  const std::string& value() const override { return lines_[index_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& lines_;
  size_t index_ = 0;
};

}  // namespace

Tokenizer::Tokenizer() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::train(const std::vector<std::string>& lines,
                           const TokenizerTrainOptions& options) {
  OUTQ_CHECK(options.vocab_size >= 260, "data.vocab_size: expected at least 260 (256 byte "
             "pieces + 3 special ids + 1), found ", options.vocab_size);
  OUTQ_CHECK(!lines.empty(), "tokenizer training: expected training text, found none");
  size_t longest = 0;
  for (const auto& l : lines) longest = std::max(longest, l.size());
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", "0.9999"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"split_digits", "true"},
      {"add_dummy_prefix", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"num_threads", std::to_string(std::max(1, options.threads))},
      {"max_sentence_length", std::to_string(std::max<size_t>(longest + 1, 4192))},
      {"input_sentence_size", std::to_string(options.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"minloglevel", "2"},
  };
  LineIterator iterator(lines);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &iterator, &model);
  if (!status.ok()) {
    const std::string msg = status.ToString();
    std::smatch limit;
    if (std::regex_search(msg, limit, std::regex("Vocabulary size too high.*<= ([0-9]+)"))) {
      throw Error(fmt::format("data.vocab_size: {} is larger than the training text supports "
                              "(at most {}); expected a smaller vocabulary or more text",
                              options.vocab_size, limit[1].str()));
    }
    throw Error("tokenizer training failed: " + msg);
  }
  Tokenizer t = from_bytes(std::move(model), "trained tokenizer");
  OUTQ_CHECK(t.vocab_size() == options.vocab_size, "data.vocab_size: ", options.vocab_size,
             " is larger than the training text supports (sentencepiece stopped at ", t.vocab_size(),
             " pieces); expected a smaller vocabulary or more text");
  return t;
}

Tokenizer Tokenizer::load(const std::string& path) {
  return from_bytes(read_file(path, "tokenizer model"), path);
}

Tokenizer Tokenizer::from_bytes(std::string bytes, const std::string& origin) {
  Tokenizer t;
  const auto status = t.sp_->LoadFromSerializedProto(bytes);
  OUTQ_CHECK(status.ok(), origin, ": not a valid sentencepiece model (", status.ToString(), ")");
  t.checksum_ = hex64(fnv1a64(bytes));
  t.bytes_ = std::move(bytes);
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(absl::string_view(text.data(), text.size()), &ids);
  OUTQ_CHECK(status.ok(), "tokenizer: cannot encode text: ", status.ToString());
  return {ids.begin(), ids.end()};
}

std::vector<std::vector<int32_t>> Tokenizer::encode_many(const std::vector<std::string>& texts,
                                                         int threads, Progress* progress) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  const size_t n_threads = std::clamp<size_t>(threads, 1, std::max<size_t>(1, texts.size()));
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(n_threads);
  for (size_t t = 0; t < n_threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (size_t i = t; i < texts.size(); i += n_threads) {
          out[i] = encode(texts[i]);
          if (progress) progress->advance();
        }
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  const std::vector<int> v(ids.begin(), ids.end());
  const auto status = sp_->Decode(v, &text);
  OUTQ_CHECK(status.ok(), "tokenizer: cannot decode ids: ", status.ToString());
  return text;
}

std::string Tokenizer::piece(int32_t id) const { return sp_->IdToPiece(id); }
int Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int32_t Tokenizer::bos_id() const { return sp_->bos_id(); }
int32_t Tokenizer::eos_id() const { return sp_->eos_id(); }

void Tokenizer::save(const std::string& path) const { write_file_atomic(path, bytes_); }

}  // namespace outq
