// Hugging Face checkpoints (a LLaMA, Mistral or Qwen2 directory as transformers saves it) opened,
// checked and converted to an outq model directory:
//   config.json          LlamaConfig / MistralConfig / Qwen2Config, transformers v4 or v5 spellings
//   model.safetensors    or model-0000i-of-0000n.safetensors shards + model.safetensors.index.json
//   tokenizer.model      SentencePiece, or tokenizer.json (byte-level BPE) when there is no
//                        tokenizer.model; the other tokenizer files are copied along
// Tensors are read from the memory-mapped files (F32, F16, BF16; each converted to float32 once,
// exactly); names, shapes and the index are checked against config.json, every problem named by
// file, tensor or key. Tensors transformers itself ignores are skipped with a note: the RoPE
// inv_freq buffers (recomputed) and lm_head.weight of a tied model.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "outq/core/safetensors.h"
#include "outq/model/checkpoint.h"
#include "outq/model/llama.h"

namespace outq {

class HfCheckpoint {
 public:
  /// Opens and checks `dir`: config.json, the weight files and their index (every tensor named by
  /// the index in its shard, none in two shards, none unlisted, shard names plain file names).
  explicit HfCheckpoint(const std::string& dir);
  HfCheckpoint(HfCheckpoint&&) noexcept;
  ~HfCheckpoint();

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  /// Things the import changed or skipped (one line each).
  const std::vector<std::string>& notes() const { return notes_; }
  /// The weight files read (one, or the shards in index order).
  std::vector<std::string> files() const;
  /// Bytes of tensor data the model reads.
  int64_t tensor_bytes() const;
  /// The weight file storage dtypes ("BF16", "F32 and F16", ...).
  std::string dtypes() const;
  /// The tokenizer file outq reads: dir/tokenizer.model, else dir/tokenizer.json; an error when
  /// there is neither.
  std::string tokenizer_model() const;

  /// A float32 model with every weight loaded and checked (shapes, dtypes, finite values);
  /// `progress`, when given, advances by the bytes read.
  Llama load(class Progress* progress = nullptr) const;

 private:
  std::string dir_;
  ModelConfig config_;
  std::vector<std::string> notes_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, StoredTensor> tensors_;  ///< the tensors the model reads
};

struct ImportSummary {
  ModelConfig config;
  std::vector<std::string> notes, files, copied;  ///< copied: tokenizer files brought along
  std::string dtypes, tokenizer;  ///< tokenizer: the file written (tokenizer.model or tokenizer.json)
  int64_t tensor_bytes = 0;
  double seconds = 0;
};

/// Converts the checkpoint in `from` into the outq model directory `out` (written atomically:
/// staged, then renamed into place): config.json, model.safetensors (float32), the tokenizer and
/// the other tokenizer files, import.json (the source, its files and the notes).
ImportSummary hf_import(const std::string& from, const std::string& out);

/// Writes `model_dir` (float, or quantized: its fake-quant dequantized weights) as a Hugging Face
/// checkpoint directory `out` (config.json, model.safetensors in float32, the tokenizer and the
/// tokenizer files imported with it), atomically; importing it gives the same tensors bit for bit.
/// Refused for what a Hugging Face LLaMA cannot compute: an online Hadamard transform, a float
/// prefix, post-norm blocks. Returns notes on what was left out (quantization, learned clips).
std::vector<std::string> hf_export(const std::string& model_dir, const std::string& out);

}  // namespace outq
