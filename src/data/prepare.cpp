// `outq data` pipeline: corpus -> clean -> split -> tokenizer -> shards -> manifest (prepare.h).
#include "outq/data/prepare.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/json_file.h"
#include "outq/core/hash.h"
#include "outq/core/log.h"
#include "outq/core/progress.h"
#include "outq/core/table.h"
#include "outq/data/brown.h"
#include "outq/data/corpus.h"
#include "outq/data/text.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

constexpr const char* kManifestFormat = "outq-data";
constexpr int kManifestVersion = 1;

// Hash of everything the outputs depend on: the documents themselves and the settings.
// `given_tokenizer`: the checksum of data.tokenizer, "" when one is trained (the key of such a
// directory is what it was before data.tokenizer existed).
std::string inputs_key(const Corpus& corpus, const DataConfig& c, const std::string& given_tokenizer) {
  uint64_t h = fnv1a64(fmt::format("{}|{}|{}|{}|{}|{}", kManifestVersion, c.vocab_size,
                                   c.val_fraction, c.test_fraction, c.tokenizer_max_lines,
                                   corpus.documents.size()));
  if (!given_tokenizer.empty()) h = fnv1a64("|tokenizer " + given_tokenizer, h);
  for (const auto& d : corpus.documents) {
    h = fnv1a64(d.id, h);
    h = fnv1a64(std::string_view("\x1f", 1), h);
    h = fnv1a64(d.text, h);
  }
  return hex64(h);
}

std::string corpus_stem(const DataConfig& c) {
  if (c.corpus == "brown") return "brown";
  std::string stem = fs::path(c.corpus).lexically_normal().filename().stem().string();
  if (stem.empty()) stem = fs::path(c.corpus).lexically_normal().parent_path().filename().string();
  return stem.empty() ? "corpus" : stem;
}

nlohmann::json split_json(const SplitStats& s) {
  return {{"documents", s.documents}, {"characters", s.characters}, {"bytes", s.bytes},
          {"tokens", s.tokens},       {"bytes_per_token", s.bytes_per_token()}};
}

DataSummary summary_from_manifest(const nlohmann::json& m, const std::string& dir) {
  DataSummary s;
  s.dir = dir;
  s.source = m.at("source").get<std::string>();
  s.tokenizer_checksum = m.at("tokenizer").at("checksum").get<std::string>();
  s.vocab_size = m.at("tokenizer").at("vocab_size").get<int>();
  s.invalid_utf8 = m.at("invalid_utf8_replaced").get<uint64_t>();
  for (const char* name : kSplitNames) {
    const auto& j = m.at("splits").at(name);
    s.splits.push_back({name, j.at("documents").get<uint64_t>(), j.at("characters").get<uint64_t>(),
                        j.at("bytes").get<uint64_t>(), j.at("tokens").get<uint64_t>()});
  }
  return s;
}

nlohmann::json read_manifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / "manifest.json").string();
  const nlohmann::json m = json_read_object(path, "data manifest");
  const std::string format = json_value<std::string>(m, "format", "none", path);
  if (format != kManifestFormat) fail_mismatch(path, "format", std::string("\"") + kManifestFormat + "\"", format);
  if (json_value<int64_t>(m, "version", 0, path) != kManifestVersion) {
    fail_mismatch(path, "version", std::to_string(kManifestVersion), m.contains("version") ? m["version"].dump() : "none");
  }
  // Every field read later, checked here: a hand-edited or corrupt manifest is one clear error.
  try {
    (void)summary_from_manifest(m, dir);
    for (const char* name : kSplitNames) (void)json_value<std::string>(m.at("splits").at(name), "file", "", path);
    (void)json_value<std::string>(m, "inputs_key", "", path);
  } catch (const nlohmann::json::exception& e) {
    fail_mismatch(path, "", "the manifest `outq data` writes (source, tokenizer, splits with their sizes)",
                  std::string("a malformed one (") + e.what() + ")");
  }
  return m;
}

Corpus load_corpus(const DataConfig& c) {
  if (c.corpus == "brown") return brown_load(c.resolved_cache_dir());
  return corpus_read(c.corpus, c.text_field);
}

}  // namespace

void DataConfig::validate() const {
  OUTQ_CHECK(!corpus.empty(), "data.corpus: expected 'brown' or a path, found an empty string");
  OUTQ_CHECK(vocab_size >= 260 && vocab_size <= (1 << 24),
             "data.vocab_size: expected an integer in [260, 16777216], found ", vocab_size);
  OUTQ_CHECK(val_fraction > 0 && val_fraction < 0.5, "data.val_fraction: expected a value in (0, 0.5), found ",
             val_fraction);
  OUTQ_CHECK(test_fraction > 0 && test_fraction < 0.5,
             "data.test_fraction: expected a value in (0, 0.5), found ", test_fraction);
  OUTQ_CHECK(tokenizer_max_lines >= 0, "data.tokenizer_max_lines: expected >= 0, found ", tokenizer_max_lines);
  OUTQ_CHECK(threads >= 1 && threads <= 256, "data.threads: expected an integer in [1, 256], found ", threads);
}

std::string DataConfig::resolved_cache_dir() const {
  if (!cache_dir.empty()) return cache_dir;
  if (const char* env = std::getenv("OUTQ_CACHE"); env && *env) return env;
  const char* home = std::getenv("HOME");
  OUTQ_CHECK(home && *home, "data.cache_dir: expected a cache directory, found none ($OUTQ_CACHE "
             "and $HOME are unset); set data.cache_dir or OUTQ_CACHE");
  return (fs::path(home) / ".cache" / "outq").string();
}

int split_of_document(size_t index, double val_fraction, double test_fraction) {
  constexpr double kGoldenFraction = 0.6180339887498949;
  const double r = std::fmod(static_cast<double>(index + 1) * kGoldenFraction, 1.0);
  if (r < val_fraction) return 1;
  if (r < val_fraction + test_fraction) return 2;
  return 0;
}

DataSummary data_prepare(const DataConfig& config, const std::string& config_json, bool force) {
  const auto t0 = std::chrono::steady_clock::now();
  Corpus corpus = load_corpus(config);
  OUTQ_CHECK(!corpus.documents.empty(), config.corpus, ": corpus is empty (expected at least one non-blank document)");
  if (corpus.invalid_utf8 > 0) {
    log_warn("{}: replaced {} invalid UTF-8 byte(s) with U+FFFD", corpus.source, corpus.invalid_utf8);
  }
  std::optional<Tokenizer> given;
  if (!config.tokenizer.empty()) given = Tokenizer::load(config.tokenizer);
  const std::string key = inputs_key(corpus, config, given ? given->checksum() : "");
  const std::string dir = !config.out.empty()
      ? config.out
      : (fs::path(config.resolved_cache_dir()) / "data" / (corpus_stem(config) + "-" + key.substr(0, 8))).string();

  const bool is_data_dir = fs::exists(fs::path(dir) / "manifest.json");
  if (!is_data_dir && fs::exists(dir) && !(fs::is_directory(dir) && fs::is_empty(dir))) {
    fail_mismatch("data.out", dir, "a new directory or one made by `outq data` (it is replaced)",
                  "an existing path without manifest.json (refusing to overwrite it)");
  }
  if (!force && is_data_dir) {
    nlohmann::json m;
    try {
      m = read_manifest(dir);
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + " (use --force to rebuild the directory)");
    }
    if (m.value("inputs_key", "") == key) {
      log_info("reusing prepared data in {} (same corpus and settings)", dir);
      DataSummary s = summary_from_manifest(m, dir);
      s.reused = true;
      return s;
    }
    log_info("{} was prepared from other inputs; rebuilding it", dir);
  }

  // Split by document.
  std::vector<std::vector<const Document*>> split_docs(3);
  for (size_t i = 0; i < corpus.documents.size(); ++i) {
    split_docs[split_of_document(i, config.val_fraction, config.test_fraction)].push_back(&corpus.documents[i]);
  }
  for (int s = 0; s < 3; ++s) {
    OUTQ_CHECK(!split_docs[s].empty(), config.corpus, ": the ", kSplitNames[s], " split is empty (",
               corpus.documents.size(), " documents with val_fraction ", config.val_fraction,
               " and test_fraction ", config.test_fraction,
               "); expected more documents or larger fractions");
  }

  // Tokenizer on the training split's lines (paragraphs), unless data.tokenizer gives one.
  const Tokenizer tokenizer = given ? std::move(*given) : [&] {
    std::vector<std::string> lines;
    for (const Document* d : split_docs[0])
      for (std::string_view l : split_lines(d->text))
        if (!trim(l).empty()) lines.emplace_back(l);
    log_info("training BPE tokenizer (vocab {}) on {} lines of the train split", config.vocab_size, lines.size());
    TokenizerTrainOptions topt;
    topt.vocab_size = config.vocab_size;
    topt.threads = config.threads;
    topt.max_sentences = config.tokenizer_max_lines;
    return Tokenizer::train(lines, topt);
  }();
  if (!config.tokenizer.empty()) log_info("tokenizing with {} (vocab {})", config.tokenizer, tokenizer.vocab_size());

  StagedDirectory stage(dir);
  const fs::path out = stage.path();
  tokenizer.save((out / tokenizer.file_name()).string());

  DataSummary summary;
  summary.dir = dir;
  summary.source = corpus.source;
  summary.tokenizer_checksum = tokenizer.checksum();
  summary.vocab_size = tokenizer.vocab_size();
  summary.invalid_utf8 = corpus.invalid_utf8;
  nlohmann::json splits_json = nlohmann::json::object();
  Progress progress("encoding", static_cast<int64_t>(corpus.documents.size()), "docs");
  for (int s = 0; s < 3; ++s) {
    std::vector<std::string> texts;
    for (const Document* d : split_docs[s]) texts.push_back(d->text);
    const auto encoded = tokenizer.encode_many(texts, config.threads, &progress);
    SplitStats st{kSplitNames[s]};
    std::vector<int32_t> tokens;
    nlohmann::json ids = nlohmann::json::array();
    for (size_t i = 0; i < texts.size(); ++i) {
      tokens.push_back(tokenizer.bos_id());
      tokens.insert(tokens.end(), encoded[i].begin(), encoded[i].end());
      tokens.push_back(tokenizer.eos_id());
      st.characters += utf8_length(texts[i]);
      st.bytes += texts[i].size();
      ids.push_back(split_docs[s][i]->id);
    }
    st.documents = texts.size();
    st.tokens = tokens.size();
    ShardInfo info;
    info.split = st.name;
    info.num_documents = st.documents;
    info.vocab_size = tokenizer.vocab_size();
    info.tokenizer_checksum = tokenizer.checksum();
    shard_write((out / (st.name + ".bin")).string(), tokens, info);
    nlohmann::json sj = split_json(st);
    sj["file"] = st.name + ".bin";
    sj["document_ids"] = std::move(ids);
    splits_json[st.name] = std::move(sj);
    summary.splits.push_back(st);
  }
  progress.finish();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  nlohmann::json manifest = {
      {"format", kManifestFormat},
      {"version", kManifestVersion},
      {"inputs_key", key},
      {"source", corpus.source},
      {"invalid_utf8_replaced", corpus.invalid_utf8},
      {"split_rule", {{"val_fraction", config.val_fraction}, {"test_fraction", config.test_fraction},
                      {"method", "golden-ratio sequence over documents in corpus order"}}},
      {"tokenizer", {{"file", tokenizer.file_name()}, {"type", tokenizer.kind()},
                     {"checksum", tokenizer.checksum()}, {"vocab_size", tokenizer.vocab_size()},
                     {"bos_id", tokenizer.bos_id()}, {"eos_id", tokenizer.eos_id()}}},
      {"splits", splits_json}};
  write_file_atomic(out / "manifest.json", manifest.dump(2) + "\n");
  write_file_atomic(out / "summary.json", data_summary_json(summary).dump(2) + "\n");
  write_file_atomic(out / "config.json", config_json);
  stage.commit();
  return summary;
}

std::string data_summary_table(const DataSummary& s) {
  Table t({"split", "documents", "characters", "tokens", "bytes/token"});
  SplitStats total{"total"};
  for (const auto& sp : s.splits) {
    t.add_row({sp.name, format_count(sp.documents), format_count(sp.characters),
               format_count(sp.tokens), fmt::format("{:.2f}", sp.bytes_per_token())});
    total.documents += sp.documents, total.characters += sp.characters;
    total.bytes += sp.bytes, total.tokens += sp.tokens;
  }
  t.add_row({"total", format_count(total.documents), format_count(total.characters),
             format_count(total.tokens), fmt::format("{:.2f}", total.bytes_per_token())});
  return t.render();
}

nlohmann::json data_summary_json(const DataSummary& s) {
  nlohmann::json splits = nlohmann::json::object();
  for (const auto& sp : s.splits) splits[sp.name] = split_json(sp);
  return {{"dir", s.dir},           {"source", s.source},
          {"reused", s.reused},     {"vocab_size", s.vocab_size},
          {"tokenizer_checksum", s.tokenizer_checksum},
          {"invalid_utf8_replaced", s.invalid_utf8},
          {"seconds", s.seconds},   {"splits", splits}};
}

PreparedData::PreparedData(const std::string& dir)
    : dir_(dir), manifest_(read_manifest(dir)),
      tokenizer_(Tokenizer::load(tokenizer_path(dir))) {
  const std::string expected = manifest_.at("tokenizer").value("checksum", "");
  if (tokenizer_.checksum() != expected) {
    fail_mismatch(tokenizer_path(dir), "checksum",
                  expected + " (from manifest.json)", tokenizer_.checksum());
  }
}

TokenShard PreparedData::shard(const std::string& split) const {
  const auto& splits = manifest_.at("splits");
  if (!splits.contains(split)) {
    fail_mismatch((fs::path(dir_) / "manifest.json").string(), "splits", "train, val or test", split);
  }
  TokenShard shard((fs::path(dir_) / splits.at(split).value("file", split + ".bin")).string());
  shard.expect_tokenizer(tokenizer_.checksum(), tokenizer_path(dir_));
  return shard;
}

}  // namespace outq
