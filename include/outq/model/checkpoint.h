// Model directories: model.safetensors (Hugging Face tensor names), config.json (Hugging Face
// LlamaConfig fields) and tokenizer.model. Loading validates every tensor's name, dtype and shape
// against the config and says exactly which tensors are missing, unexpected or mis-shaped.
#pragma once

#include <map>
#include <string>

#include "outq/core/safetensors.h"
#include "outq/model/llama.h"

namespace outq {

/// Writes model.safetensors (float32) and config.json into `dir` (which must exist), and copies
/// `tokenizer_path` to dir/tokenizer.model when given. `metadata` goes into the safetensors header.
void model_write(Llama& model, const std::string& dir, const std::string& tokenizer_path,
                 const std::map<std::string, std::string>& metadata = {});

/// Copies a tokenizer file into `dir` under its kind's name: a byte-level BPE keeps its
/// tokenizer.json name, a SentencePiece model is tokenizer.model.
void tokenizer_copy(const std::string& tokenizer_path, const std::string& dir);

/// Writes a complete model directory atomically (staged, then renamed into place).
void model_save(Llama& model, const std::string& dir, const std::string& tokenizer_path,
                const std::map<std::string, std::string>& metadata = {});

/// Reads dir/config.json.
ModelConfig model_config_read(const std::string& dir);

/// Loads a model directory (config.json + model.safetensors). F32, F16 and BF16 weights are
/// accepted and converted to float32.
Llama model_load(const std::string& dir);

/// Copies the tensors of `file` into `model`'s parameters, checking that the names match exactly
/// and every shape and dtype fits.
void model_load_weights(Llama& model, const SafetensorsFile& file);

/// A stored tensor and the file it is in (named in errors; its pages are released once copied).
struct StoredTensor {
  const TensorView* view = nullptr;
  const SafetensorsFile* source = nullptr;
};
/// The same from tensors spread over several files (a sharded checkpoint); `where` names them all
/// in errors about missing or unexpected tensors. `progress` advances by the bytes read.
void model_load_weights(Llama& model, const std::map<std::string, StoredTensor>& tensors, const std::string& where,
                        class Progress* progress = nullptr);

}  // namespace outq
