// Tokenizers: SentencePiece BPE on top of the sentencepiece shim (see tokenizer.h for the settings
// and why, and spm_api.h for why sentencepiece is loaded with dlopen), or byte-level BPE from a
// tokenizer.json (bpe_tokenizer.h).
#include "outq/data/tokenizer.h"

#include <dlfcn.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <regex>
#include <thread>
#include <unordered_map>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/hash.h"
#include "outq/core/progress.h"
#include "outq/data/bpe_tokenizer.h"
#include "spm_api.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

// Candidates for liboutq_spm.so: $OUTQ_SPM_LIBRARY, next to the executable, the build tree.
std::vector<std::string> shim_candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("OUTQ_SPM_LIBRARY"); env && *env) out.push_back(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    out.push_back((exe.parent_path() / "liboutq_spm.so").string());
    out.push_back((exe.parent_path() / "../lib/liboutq_spm.so").string());
  }
  out.push_back(OUTQ_SPM_BUILD_PATH);
  return out;
}

const spm::Api& api() {
  static const spm::Api* table = [] {
    int flags = RTLD_NOW | RTLD_LOCAL;
#if !defined(__SANITIZE_ADDRESS__)
    flags |= RTLD_DEEPBIND;  // the sanitizer runtime refuses DEEPBIND; sanitized builds do not mix in LibTorch's protobuf
#endif
    std::string tried;
    for (const auto& path : shim_candidates()) {
      if (!fs::exists(path)) {
        tried += " " + path;
        continue;
      }
      void* lib = dlopen(path.c_str(), flags);
      OUTQ_CHECK(lib != nullptr, path, ": cannot load the sentencepiece shim: ", dlerror());
      auto entry = reinterpret_cast<const spm::Api* (*)()>(dlsym(lib, "outq_spm_api"));
      OUTQ_CHECK(entry != nullptr, path, ": not an outq sentencepiece shim (no outq_spm_api)");
      const spm::Api* a = entry();
      OUTQ_CHECK(a->version == spm::kApiVersion, path, ": shim API version: expected ", spm::kApiVersion, ", found ",
                 a->version, " (rebuild outq)");
      return a;
    }
    throw Error(fmt::format("liboutq_spm.so not found (tried{}); set OUTQ_SPM_LIBRARY to its path", tried));
  }();
  return *table;
}

}  // namespace

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::train(const std::vector<std::string>& lines, const TokenizerTrainOptions& options) {
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
  std::string model, error;
  if (!api().train(lines, args, &model, &error)) {
    std::smatch limit;
    if (std::regex_search(error, limit, std::regex("Vocabulary size too high.*<= ([0-9]+)"))) {
      throw Error(fmt::format("data.vocab_size: {} is larger than the training text supports "
                              "(at most {}); expected a smaller vocabulary or more text",
                              options.vocab_size, limit[1].str()));
    }
    throw Error("tokenizer training failed: " + error);
  }
  Tokenizer t = from_bytes(std::move(model), "trained tokenizer");
  OUTQ_CHECK(t.vocab_size() == options.vocab_size, "data.vocab_size: ", options.vocab_size,
             " is larger than the training text supports (sentencepiece stopped at ", t.vocab_size(),
             " pieces); expected a smaller vocabulary or more text");
  return t;
}

Tokenizer Tokenizer::load(const std::string& path) { return from_bytes(read_file(path, "tokenizer model"), path); }

Tokenizer Tokenizer::from_bytes(std::string bytes, const std::string& origin) {
  Tokenizer t;
  const size_t first = bytes.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && bytes[first] == '{') {  // a tokenizer.json
    t.bpe_ = std::make_shared<const ByteLevelBpe>(ByteLevelBpe::from_json(bytes, origin));
  } else {
    const spm::Api& a = api();
    std::string error;
    void* handle = a.load(bytes, &error);
    OUTQ_CHECK(handle != nullptr, origin, ": not a valid sentencepiece model (", error, ")");
    t.handle_ = std::shared_ptr<void>(handle, a.destroy);
  }
  t.checksum_ = hex64(fnv1a64(bytes));
  t.bytes_ = std::move(bytes);
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  if (bpe_) return bpe_->encode(text);
  std::vector<int> ids;
  std::string error;
  OUTQ_CHECK(api().encode(handle_.get(), text, &ids, &error), "tokenizer: cannot encode text: ", error);
  return {ids.begin(), ids.end()};
}

std::vector<std::vector<int32_t>> Tokenizer::encode_many(const std::vector<std::string>& texts, int threads,
                                                         Progress* progress) const {
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
  if (bpe_) return bpe_->decode(ids);
  std::string text, error;
  OUTQ_CHECK(api().decode(handle_.get(), std::vector<int>(ids.begin(), ids.end()), &text, &error),
             "tokenizer: cannot decode ids: ", error);
  return text;
}

std::string Tokenizer::piece(int32_t id) const { return bpe_ ? bpe_->piece(id) : api().piece(handle_.get(), id); }
int Tokenizer::vocab_size() const { return bpe_ ? bpe_->vocab_size() : api().vocab_size(handle_.get()); }
int32_t Tokenizer::bos_id() const { return bpe_ ? bpe_->bos_id() : api().bos_id(handle_.get()); }
int32_t Tokenizer::eos_id() const { return bpe_ ? bpe_->eos_id() : api().eos_id(handle_.get()); }
int32_t Tokenizer::unk_id() const { return bpe_ ? -1 : api().unk_id(handle_.get()); }
int32_t Tokenizer::pad_id() const { return bpe_ ? -1 : api().pad_id(handle_.get()); }
float Tokenizer::score(int32_t id) const { return bpe_ ? 0.0f : api().score(handle_.get(), id); }
int Tokenizer::piece_type(int32_t id) const {
  if (bpe_) return bpe_->is_special(id) ? 3 : 1;
  return api().piece_type(handle_.get(), id);
}
bool Tokenizer::adds_space_prefix() const {
  if (bpe_) return false;
  const auto ids = encode("x");
  return !ids.empty() && piece(ids.front()).rfind("\xE2\x96\x81", 0) == 0;  // U+2581
}
const char* Tokenizer::file_name() const { return bpe_ ? "tokenizer.json" : "tokenizer.model"; }
const char* Tokenizer::kind() const { return bpe_ ? "byte-level-bpe" : "sentencepiece-bpe"; }

std::string tokenizer_path(const std::string& dir) {
  const fs::path spm = fs::path(dir) / "tokenizer.model", json = fs::path(dir) / "tokenizer.json";
  return (!fs::exists(spm) && fs::exists(json) ? json : spm).string();
}

void Tokenizer::save(const std::string& path) const { write_file_atomic(path, bytes_); }

}  // namespace outq
