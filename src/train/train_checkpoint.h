// Training checkpoints (private to train/): writing a complete checkpoint directory atomically,
// pruning old ones, finding the latest, and restoring model, optimizer, RNG and trainer state.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <map>
#include <optional>
#include <string>

#include "outq/model/llama.h"

namespace outq::train_detail {

struct CheckpointPaths {
  std::string dir;          ///< run_dir/checkpoints
  std::string latest_file;  ///< run_dir/checkpoints/LATEST
};

CheckpointPaths checkpoint_paths(const std::string& run_dir);

/// Writes checkpoints/step-NNNNNNN (staged), updates LATEST, keeps the newest `keep`.
/// `extra` tensors (e.g. QAT clip values) go to extra.safetensors when not empty.
void checkpoint_save(const std::string& run_dir, int64_t step, Llama& model, torch::optim::Optimizer& optimizer,
                     const nlohmann::json& state, const std::string& tokenizer_path, int keep,
                     const std::map<std::string, torch::Tensor>& extra = {});

/// The extra tensors of a checkpoint (empty if it has none).
std::map<std::string, torch::Tensor> checkpoint_extra(const std::string& dir);

/// The newest complete checkpoint directory, if any (stale staging directories are removed).
std::optional<std::string> checkpoint_latest(const std::string& run_dir);

/// Restores weights, optimizer state and the global RNG; returns trainer_state.json.
nlohmann::json checkpoint_load(const std::string& dir, Llama& model, torch::optim::Optimizer& optimizer,
                               const torch::Device& device);

}  // namespace outq::train_detail
