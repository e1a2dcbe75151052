// The shared tiny-model fixture: a LLaMA-style model small enough for unit tests, with awkward
// sizes by default (widths not multiples of the vector width), its weights drawn from a seed, and
// a random token shard for calibration. Tests that need other shapes change fields of TinyShape.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "outq/data/token_shard.h"
#include "outq/model/llama.h"

namespace outq::test {

struct TinyShape {
  int64_t hidden = 24, intermediate = 40;
  int64_t heads = 2, kv_heads = 2;
  int64_t vocab = 37, positions = 16;
  int layers = 2;
  double init = 0.3;  ///< initializer_range: large enough that attention is far from uniform
  bool tied = false;
};

inline ModelConfig tiny_config(const TinyShape& s = {}) {
  ModelConfig c;
  c.hidden_size = s.hidden;
  c.intermediate_size = s.intermediate;
  c.num_hidden_layers = s.layers;
  c.num_attention_heads = s.heads;
  c.num_key_value_heads = s.kv_heads;
  c.vocab_size = s.vocab;
  c.max_position_embeddings = s.positions;
  c.initializer_range = s.init;
  c.tie_word_embeddings = s.tied;
  return c;
}

/// A tiny model with weights drawn from `seed`.
inline Llama tiny_model(uint64_t seed, const TinyShape& s = {}) {
  Llama m(tiny_config(s));
  m->reset_parameters(seed);
  return m;
}

/// Writes `n` uniformly random token ids below `vocab` as a train shard at `path`.
inline void write_random_shard(const std::string& path, size_t n, int64_t vocab, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab) - 1);
  std::vector<int32_t> tokens(n);
  for (auto& t : tokens) t = id(gen);
  ShardInfo info;
  info.split = "train";
  info.num_documents = 1;
  info.vocab_size = vocab;
  info.tokenizer_checksum = "test";
  shard_write(path, tokens, info);
}

}  // namespace outq::test
