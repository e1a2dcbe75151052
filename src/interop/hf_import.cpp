// Opening, checking and converting Hugging Face LLaMA-family checkpoints (see hf_import.h).
#include "outq/interop/hf_import.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <filesystem>
#include <set>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/json_file.h"
#include "outq/core/progress.h"
#include "outq/data/tokenizer.h"
#include "outq/model/checkpoint.h"
#include "outq/ptq/quantized_io.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

constexpr const char* kIndexFile = "model.safetensors.index.json";
// Tokenizer files copied along (outq reads tokenizer.model or tokenizer.json; the rest keep the
// directory whole).
constexpr const char* kTokenizerFiles[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                           "generation_config.json"};

// Copies the tokenizer files `from` has into `to`, except those already there; returns their names.
std::vector<std::string> copy_tokenizer_files(const fs::path& from, const fs::path& to) {
  std::vector<std::string> copied;
  for (const char* name : kTokenizerFiles) {
    if (!fs::exists(from / name) || fs::exists(to / name)) continue;
    write_file_atomic(to / name, read_file(from / name, name));
    copied.push_back(name);
  }
  return copied;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The shard names of an index, checked: plain file names of .safetensors files, in order of first use.
std::vector<std::string> index_shards(const nlohmann::json& index, const std::string& where) {
  if (!index.contains("weight_map") || !index["weight_map"].is_object())
    fail_mismatch(where, "weight_map", "an object mapping tensor names to shard files",
                  index.contains("weight_map") ? index["weight_map"].dump() : "none");
  std::vector<std::string> shards;
  std::set<std::string> seen;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) fail_mismatch(where, "weight_map." + name, "a shard file name", shard.dump());
    const std::string s = shard.get<std::string>();
    if (s.empty() || s.find('/') != std::string::npos || s.find('\\') != std::string::npos || s == "." || s == ".." ||
        !ends_with(s, ".safetensors"))
      fail_mismatch(where, "weight_map." + name, "a .safetensors file name in the checkpoint directory", "\"" + s + "\"");
    if (seen.insert(s).second) shards.push_back(s);
  }
  if (shards.empty()) fail_mismatch(where, "weight_map", "at least one tensor", "an empty map");
  return shards;
}

}  // namespace

HfCheckpoint::HfCheckpoint(HfCheckpoint&&) noexcept = default;
HfCheckpoint::~HfCheckpoint() = default;

HfCheckpoint::HfCheckpoint(const std::string& dir) : dir_(dir) {
  OUTQ_CHECK(fs::is_directory(dir), dir, ": checkpoint directory not found (expected config.json and model.safetensors "
             "or its shards)");
  const fs::path config_path = fs::path(dir) / "config.json";
  config_ = ModelConfig::from_hf_json(json_read_object(config_path, "model config"), config_path.string(), &notes_);
  config_.imported_from = fs::absolute(dir).lexically_normal().string();

  const fs::path single = fs::path(dir) / "model.safetensors", index_path = fs::path(dir) / kIndexFile;
  if (fs::exists(single)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single.string()));
    for (const auto& [name, view] : files_.back()->tensors()) tensors_[name] = {&view, files_.back().get()};
  } else if (fs::exists(index_path)) {
    const std::string where = index_path.string();
    const nlohmann::json index = json_read_object(index_path, "safetensors index");
    const std::vector<std::string> shards = index_shards(index, where);
    const auto& map = index.at("weight_map");
    std::map<std::string, const SafetensorsFile*> by_name;
    for (const auto& shard : shards) {
      const fs::path path = fs::path(dir) / shard;
      OUTQ_CHECK(fs::exists(path), where, ": shard ", shard, " (of tensor ",
                 [&] {
                   for (const auto& [name, s] : map.items())
                     if (s == shard) return name;
                   return std::string();
                 }(),
                 ") not found in ", dir);
      files_.push_back(std::make_unique<SafetensorsFile>(path.string()));
      by_name[shard] = files_.back().get();
    }
    for (const auto& [name, shard] : map.items()) {
      const SafetensorsFile* file = by_name.at(shard.get<std::string>());
      if (!file->contains(name))
        fail_mismatch(where, "weight_map." + name, fmt::format("a tensor of {}", shard.get<std::string>()),
                      "a name that shard does not hold");
      tensors_[name] = {&file->get(name), file};
    }
    for (const auto& file : files_)
      for (const auto& [name, view] : file->tensors()) {
        const auto it = tensors_.find(name);
        if (it == tensors_.end())
          fail_mismatch(file->path(), "tensor '" + name + "'", "only tensors the index lists",
                        fmt::format("a tensor {} does not list", kIndexFile));
        if (it->second.source != file.get())
          fail_mismatch(file->path(), "tensor '" + name + "'", "each tensor in one shard",
                        fmt::format("it in {} as well (the index names that one)", it->second.source->path()));
      }
  } else {
    const bool pickle = fs::exists(fs::path(dir) / "pytorch_model.bin") || fs::exists(fs::path(dir) / "pytorch_model.bin.index.json");
    OUTQ_CHECK(false, dir, ": expected model.safetensors or ", kIndexFile, " with its shards, found ",
               pickle ? "a PyTorch pickle checkpoint (pytorch_model.bin), which outq does not read: save it as safetensors"
                      : "neither");
  }
  // What transformers itself ignores: RoPE buffers of older checkpoints, a tied model's head.
  int inv_freq = 0;
  for (auto it = tensors_.begin(); it != tensors_.end();) {
    if (ends_with(it->first, ".rotary_emb.inv_freq")) {
      ++inv_freq;
      it = tensors_.erase(it);
    } else {
      ++it;
    }
  }
  if (inv_freq > 0)
    notes_.push_back(fmt::format("skipped {} rotary_emb.inv_freq buffers (the RoPE tables are computed from config.json)", inv_freq));
  if (config_.tie_word_embeddings && tensors_.erase("lm_head.weight"))
    notes_.push_back("skipped lm_head.weight: tie_word_embeddings is true, so the head is the embedding (as transformers does)");
}

std::vector<std::string> HfCheckpoint::files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(fs::path(f->path()).filename().string());
  return out;
}

int64_t HfCheckpoint::tensor_bytes() const {
  int64_t n = 0;
  for (const auto& [name, e] : tensors_) n += static_cast<int64_t>(e.view->bytes);
  return n;
}

std::string HfCheckpoint::dtypes() const {
  std::set<std::string> names;
  for (const auto& [name, e] : tensors_) names.insert(dtype_name(e.view->dtype));
  return fmt::format("{}", fmt::join(names, " and "));
}

std::string HfCheckpoint::tokenizer_model() const {
  const std::string path = tokenizer_path(dir_);
  OUTQ_CHECK(fs::exists(path), dir_, ": tokenizer: expected tokenizer.model (SentencePiece, as LLaMA-2, TinyLlama and "
             "Mistral ship) or tokenizer.json (byte-level BPE, as LLaMA-3, Qwen2 and SmolLM2 ship), found neither");
  return path;
}

Llama HfCheckpoint::load(Progress* progress) const {
  Llama model(config_);
  model_load_weights(model, tensors_, files_.size() == 1 ? files_.front()->path() : dir_ + " (its shards)", progress);
  return model;
}

ImportSummary hf_import(const std::string& from, const std::string& out) {
  const auto t0 = std::chrono::steady_clock::now();
  HfCheckpoint checkpoint(from);
  const std::string tokenizer_path = checkpoint.tokenizer_model();
  const Tokenizer tokenizer = Tokenizer::load(tokenizer_path);
  OUTQ_CHECK(tokenizer.vocab_size() <= checkpoint.config().vocab_size, tokenizer_path, ": vocabulary size: expected at "
             "most vocab_size ", checkpoint.config().vocab_size, " (config.json: the embedding's rows), found ",
             tokenizer.vocab_size());
  ImportSummary summary;
  summary.config = checkpoint.config();
  summary.notes = checkpoint.notes();
  summary.files = checkpoint.files();
  summary.dtypes = checkpoint.dtypes();
  summary.tensor_bytes = checkpoint.tensor_bytes();
  summary.tokenizer = tokenizer.file_name();
  Llama model = [&] {
    Progress progress("reading weights", summary.tensor_bytes, "bytes");
    Llama m = checkpoint.load(&progress);
    progress.finish();
    return m;
  }();
  StagedDirectory stage(out);
  model_write(model, stage.path().string(), tokenizer_path);
  summary.copied = copy_tokenizer_files(from, stage.path());  // (model_write wrote the tokenizer itself)
  const nlohmann::ordered_json record = {{"format", "outq-import"},
                                         {"version", 1},
                                         {"source", fs::absolute(from).string()},
                                         {"files", summary.files},
                                         {"dtypes", summary.dtypes},
                                         {"tensor_bytes", summary.tensor_bytes},
                                         {"tokenizer", tokenizer.file_name()},
                                         {"copied", summary.copied},
                                         {"notes", summary.notes},
                                         {"source_config", json_read_object(fs::path(from) / "config.json", "model config")}};
  write_file_atomic(stage.path() / "import.json", record.dump(2) + "\n");
  stage.commit();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

std::vector<std::string> hf_export(const std::string& model_dir, const std::string& out) {
  const bool quantized = is_quantized_dir(model_dir);
  QuantizedModel info;
  Llama model = quantized ? quantized_load(model_dir, &info) : model_load(model_dir);
  const std::string where = model_dir + ": Hugging Face export";
  OUTQ_CHECK(!model->config().post_norm(), where, ": a post-norm model; Hugging Face's LLaMA is pre-norm");
  OUTQ_CHECK(!model->layer(0).mlp->down_input_hadamard, where, ": rotation's online Hadamard transform on the "
             "down-projection input (r4) is not part of a Hugging Face LLaMA; quantize with r4 = false to export it");
  OUTQ_CHECK(!info.prefix, where, ": a QFeP prefix (its cached keys and values) is not part of a checkpoint");
  std::vector<std::string> notes;
  if (quantized)
    notes.push_back("the weights are the quantized ones, dequantized to float32; the activation quantization and the "
                    "integer formats are not part of a Hugging Face checkpoint");
  if (fs::exists(fs::path(model_dir) / "clips.json"))
    notes.push_back("the learned activation clips (clips.json) are not part of a Hugging Face checkpoint");
  StagedDirectory stage(out);
  model_write(model, stage.path().string(), tokenizer_path(model_dir));
  copy_tokenizer_files(model_dir, stage.path());
  // The begin- and end-of-text ids transformers reads from config.json are the tokenizer's.
  const Tokenizer tokenizer = Tokenizer::load(tokenizer_path(model_dir));
  nlohmann::json config = model->config().to_hf_json();
  config["bos_token_id"] = tokenizer.bos_id();
  config["eos_token_id"] = tokenizer.eos_id();
  write_file_atomic(stage.path() / "config.json", config.dump(2) + "\n");
  stage.commit();
  return notes;
}

}  // namespace outq
