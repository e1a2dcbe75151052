// Model directory writing and validated loading.
#include "outq/model/checkpoint.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <set>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/json_file.h"
#include "outq/core/progress.h"
#include "outq/model/tensor_io.h"

namespace fs = std::filesystem;

namespace outq {

void model_write(Llama& model, const std::string& dir, const std::string& tokenizer_path,
                 const std::map<std::string, std::string>& metadata) {
  TensorFileWriter writer;
  writer.set_metadata("format", "pt");
  writer.set_metadata("producer", "outq");
  for (const auto& [k, v] : metadata) writer.set_metadata(k, v);
  for (const auto& p : model->named_parameters()) writer.add(p.key(), p.value().to(torch::kCPU, torch::kFloat32));
  writer.write((fs::path(dir) / "model.safetensors").string());
  write_file_atomic(fs::path(dir) / "config.json", model->config().to_hf_json().dump(2) + "\n");
  if (!tokenizer_path.empty()) tokenizer_copy(tokenizer_path, dir);
}

void tokenizer_copy(const std::string& tokenizer_path, const std::string& dir) {
  const bool json = fs::path(tokenizer_path).filename() == "tokenizer.json";
  write_file_atomic(fs::path(dir) / (json ? "tokenizer.json" : "tokenizer.model"), read_file(tokenizer_path, "tokenizer"));
}

void model_save(Llama& model, const std::string& dir, const std::string& tokenizer_path,
                const std::map<std::string, std::string>& metadata) {
  StagedDirectory stage(dir);
  model_write(model, stage.path().string(), tokenizer_path, metadata);
  stage.commit();
}

ModelConfig model_config_read(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  OUTQ_CHECK(fs::is_directory(dir), dir, ": model directory not found (expected config.json and model.safetensors)");
  return ModelConfig::from_hf_json(json_read_object(path, "model config"), path);
}

Llama model_load(const std::string& dir) {
  const ModelConfig config = model_config_read(dir);
  Llama model(config);
  SafetensorsFile file((fs::path(dir) / "model.safetensors").string());
  model_load_weights(model, file);
  return model;
}

void model_load_weights(Llama& model, const SafetensorsFile& file) {
  std::map<std::string, StoredTensor> tensors;
  for (const auto& [name, view] : file.tensors()) tensors[name] = {&view, &file};
  model_load_weights(model, tensors, file.path());
}

void model_load_weights(Llama& model, const std::map<std::string, StoredTensor>& tensors, const std::string& where,
                        Progress* progress) {
  torch::NoGradGuard no_grad;
  const auto params = model->named_parameters();
  std::vector<std::string> missing, unexpected;
  std::set<std::string> expected_names;
  for (const auto& p : params) {
    expected_names.insert(p.key());
    if (!tensors.count(p.key())) missing.push_back(p.key());
  }
  for (const auto& [name, stored] : tensors)
    if (!expected_names.count(name)) unexpected.push_back(name);
  auto listing = [](const std::vector<std::string>& names) {
    const size_t shown = std::min<size_t>(names.size(), 4);
    std::string s = fmt::format("{}", fmt::join(names.begin(), names.begin() + shown, ", "));
    if (names.size() > shown) s += fmt::format(" and {} more", names.size() - shown);
    return s;
  };
  if (!missing.empty()) {
    fail_mismatch(where, "tensors", "every tensor of the model in config.json",
                  fmt::format("{} missing: {}", missing.size(), listing(missing)));
  }
  if (!unexpected.empty()) {
    fail_mismatch(where, "tensors", "only the tensors of the model in config.json",
                  fmt::format("{} unexpected: {}", unexpected.size(), listing(unexpected)));
  }
  for (const auto& p : params) {
    const StoredTensor& stored = tensors.at(p.key());
    const TensorView& view = *stored.view;
    const std::string& file = stored.source->path();
    if (view.shape != p.value().sizes().vec()) {
      fail_mismatch(file, p.key(), fmt::format("shape {} (from config.json)", p.value().sizes()),
                    fmt::format("shape [{}]", fmt::join(view.shape, ", ")));
    }
    if (view.dtype != DType::F32 && view.dtype != DType::F16 && view.dtype != DType::BF16) {
      fail_mismatch(file, p.key(), "dtype F32, F16 or BF16", dtype_name(view.dtype));
    }
    p.value().copy_(tensor_from_view(view).to(p.value().device(), torch::kFloat32));
    expect_finite(p.value(), file, p.key());  // (after the cast: an F16 value can overflow to inf)
    stored.source->release(view);  // (one copy resident, not two)
    if (progress) progress->advance(static_cast<int64_t>(view.bytes));
  }
}

}  // namespace outq
