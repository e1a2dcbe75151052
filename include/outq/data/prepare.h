// Preparing a data directory (`outq data`): read and clean the corpus, split by document, train
// the tokenizer on the training split, encode every split into a token shard, and write a
// manifest. The directory is built in a staging location and moved into place complete; a
// directory whose manifest records the same input hash is reused instead of rebuilt.
//
// Layout of a data directory:
//   manifest.json      format "outq-data" v1: inputs hash, source, tokenizer, per-split stats and
//                      document ids
//   tokenizer.model    sentencepiece model
//   train.bin val.bin test.bin   token shards (token_shard.h)
//   summary.json       the statistics table as JSON;  config.json  the effective configuration
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/data/data_config.h"
#include "outq/data/token_shard.h"
#include "outq/data/tokenizer.h"

namespace outq {

inline constexpr const char* kSplitNames[] = {"train", "val", "test"};

struct SplitStats {
  std::string name;
  uint64_t documents = 0, characters = 0, bytes = 0, tokens = 0;
  double bytes_per_token() const { return tokens ? static_cast<double>(bytes) / tokens : 0.0; }
};

struct DataSummary {
  std::string dir, source, tokenizer_checksum;
  bool reused = false;
  int vocab_size = 0;
  uint64_t invalid_utf8 = 0;
  double seconds = 0;
  std::vector<SplitStats> splits;
};

/// Split of document i (in corpus order): a golden-ratio sequence spreads the validation and
/// test documents evenly through the corpus; returns 0 = train, 1 = val, 2 = test.
int split_of_document(size_t index, double val_fraction, double test_fraction);

/// Prepares (or reuses) the data directory described by `config`. `config_json` is saved as
/// config.json inside it. `force` rebuilds even when a matching directory exists.
DataSummary data_prepare(const DataConfig& config, const std::string& config_json, bool force);

std::string data_summary_table(const DataSummary& summary);
nlohmann::json data_summary_json(const DataSummary& summary);

/// A prepared data directory opened for reading; shards are checked against the tokenizer.
class PreparedData {
 public:
  explicit PreparedData(const std::string& dir);
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const nlohmann::json& manifest() const { return manifest_; }
  /// Opens a split's shard and verifies it was made with this directory's tokenizer.
  TokenShard shard(const std::string& split) const;

 private:
  std::string dir_;
  nlohmann::json manifest_;
  Tokenizer tokenizer_;
};

}  // namespace outq
