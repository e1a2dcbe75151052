// Training checkpoint directories: staged writes, LATEST pointer, pruning, restore.
#include "train_checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/json_file.h"
#include "outq/core/safetensors.h"
#include "outq/model/checkpoint.h"
#include "outq/model/tensor_io.h"
#include "outq/data/text.h"
#include "outq/qat/qat_observer.h"
#include "outq/train/checkpoint_clips.h"

namespace fs = std::filesystem;

namespace outq::train_detail {

CheckpointPaths checkpoint_paths(const std::string& run_dir) {
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  return {dir.string(), (dir / "LATEST").string()};
}

void checkpoint_save(const std::string& run_dir, int64_t step, Llama& model, torch::optim::Optimizer& optimizer,
                     const nlohmann::json& state, const std::string& tokenizer_path, int keep,
                     const std::map<std::string, torch::Tensor>& extra) {
  const CheckpointPaths paths = checkpoint_paths(run_dir);
  const std::string name = fmt::format("step-{:07d}", step);
  {
    StagedDirectory stage(fs::path(paths.dir) / name);
    const fs::path out = stage.path();
    model_write(model, out.string(), tokenizer_path, {{"step", std::to_string(step)}});
    std::ostringstream optimizer_bytes;
    torch::save(optimizer, optimizer_bytes);
    write_file_atomic(out / "optimizer.pt", optimizer_bytes.str());
    TensorFileWriter rng;
    rng.add("torch_default_generator", at::detail::getDefaultCPUGenerator().get_state());
    rng.write((out / "rng.safetensors").string());
    write_file_atomic(out / "trainer_state.json", state.dump(2) + "\n");
    if (!extra.empty()) {
      TensorFileWriter extra_file;
      for (const auto& [key, t] : extra) extra_file.add(key, t.to(torch::kCPU));
      extra_file.write((out / "extra.safetensors").string());
    }
    stage.commit();
  }
  write_file_atomic(paths.latest_file, name + "\n");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(paths.dir)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && n.find('.') == std::string::npos) names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  for (size_t i = 0; i + keep < names.size(); ++i) fs::remove_all(fs::path(paths.dir) / names[i]);
}

std::optional<std::string> checkpoint_latest(const std::string& run_dir) {
  const CheckpointPaths paths = checkpoint_paths(run_dir);
  if (!fs::exists(paths.latest_file)) return std::nullopt;
  for (const auto& e : fs::directory_iterator(paths.dir)) {
    const std::string n = e.path().filename().string();
    if (n.find(".staging.") != std::string::npos || n.find(".old.") != std::string::npos) fs::remove_all(e.path());
  }
  const std::string name(trim(read_file(paths.latest_file, "checkpoint pointer")));
  const fs::path dir = fs::path(paths.dir) / name;
  OUTQ_CHECK(fs::is_directory(dir), paths.latest_file, ": names checkpoint '", name,
             "' which does not exist (expected a directory in ", paths.dir, ")");
  return dir.string();
}

nlohmann::json checkpoint_load(const std::string& dir, Llama& model, torch::optim::Optimizer& optimizer,
                               const torch::Device& device) {
  model_load_weights(model, SafetensorsFile((fs::path(dir) / "model.safetensors").string()));
  {
    std::istringstream in(read_file(fs::path(dir) / "optimizer.pt", "optimizer state"));
    try {
      torch::load(optimizer, in, device);
    } catch (const c10::Error& e) {
      throw Error(fmt::format("{}/optimizer.pt: cannot restore the optimizer state ({})", dir, e.what_without_backtrace()));
    }
  }
  SafetensorsFile rng((fs::path(dir) / "rng.safetensors").string());
  auto gen = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(tensor_from_view(rng.get("torch_default_generator")));
  }
  return json_read_object(fs::path(dir) / "trainer_state.json", "trainer state");
}

std::map<std::string, torch::Tensor> checkpoint_extra(const std::string& dir) {
  std::map<std::string, torch::Tensor> out;
  const fs::path path = fs::path(dir) / "extra.safetensors";
  if (!fs::exists(path)) return out;
  SafetensorsFile file(path.string());
  for (const auto& [name, view] : file.tensors()) out[name] = tensor_from_view(view);
  return out;
}

}  // namespace outq::train_detail

namespace outq {

std::optional<nlohmann::json> checkpoint_clips_json(const std::string& dir, const Llama& model) {
  const fs::path state_path = fs::path(dir) / "trainer_state.json";
  if (!fs::exists(state_path)) return std::nullopt;
  const nlohmann::json state = json_read_object(state_path, "trainer state");
  QatConfig c;
  int64_t step = 0;
  try {
    const nlohmann::json q = state.value("resume_key", nlohmann::json::object()).value("qat", nlohmann::json::object());
    c.mode = q.value("mode", c.mode);
    c.bits = q.value("bits", c.bits);
    c.clamp_value = q.value("clamp_value", c.clamp_value);
    c.inputs = q.value("inputs", c.inputs);
    c.start_step = q.value("start_step", c.start_step);
    step = state.at("step").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: expected the step and [qat] settings of a training run, found malformed ones ({})",
                            state_path.string(), e.what()));
  }
  // The step-s checkpoint follows steps 0..s-1; quantization ran from step qat.start_step on.
  if (!(c.clamps() || (c.quantizes() && step > c.start_step))) return std::nullopt;
  const auto extra = train_detail::checkpoint_extra(dir);
  OUTQ_CHECK(!extra.empty(), dir, ": a qat.mode = \"", c.mode,
             "\" checkpoint should hold its clip values (extra.safetensors), found none");
  QatObserver qat(model, c);
  qat.load_clips(extra);
  return qat.clips_json();
}

}  // namespace outq
