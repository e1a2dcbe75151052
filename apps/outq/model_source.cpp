// Model and data loading helpers shared by eval, quantize and generate.
#include "model_source.h"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "outq/core/config.h"
#include "outq/core/error.h"
#include "outq/model/checkpoint.h"
#include "outq/kernels/isa.h"
#include "outq/ptq/quantized_io.h"

namespace fs = std::filesystem;

namespace outq::app {

LoadedModel load_model_dir(const std::string& dir, bool simulate) {
  LoadedModel out;
  out.quantized = is_quantized_dir(dir);
  if (out.quantized) {
    QuantizedModel info;
    out.model = quantized_load(dir, &info);
    if (!simulate) out.runtime = attach_integer_runtime(out.model, info);
    out.prefix = info.prefix;
  } else {
    out.model = model_load(dir);
  }
  out.tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(tokenizer_path(dir)));
  // (Imported checkpoints may have more embedding rows than tokens: padding no text ever reaches.)
  OUTQ_CHECK(out.tokenizer->vocab_size() <= out.model->config().vocab_size, dir,
             "/", out.tokenizer->file_name(), ": vocabulary size: expected at most ", out.model->config().vocab_size, " (the model's), found ",
             out.tokenizer->vocab_size());
  const fs::path clips = fs::path(dir) / "clips.json";
  if (fs::exists(clips)) out.learned = learned_ranges_load(clips.string());
  const fs::path steps = fs::path(dir) / kLearnedWeightsFile;
  if (fs::exists(steps)) out.learned_weights = learned_weights_load(steps.string());
  return out;
}

void use_model_tokenizer(OutqConfig& config, const ModelConfig& model, const std::string& model_dir) {
  if (model.imported_from.empty() || !config.data.tokenizer.empty()) return;
  config.data.tokenizer = tokenizer_path(model_dir);
}

void check_output_dir(const std::string& option, const std::string& out, const std::vector<std::string>& inputs,
                      const std::string& marker, bool overwrite) {
  OUTQ_CHECK(!out.empty(), option, ": expected a directory path, found an empty one");
  const fs::path o = fs::weakly_canonical(fs::absolute(out));
  auto within = [](const fs::path& inner, const fs::path& outer) {  // inner == outer or below it
    const fs::path rel = inner.lexically_relative(outer);
    return !rel.empty() && *rel.begin() != "..";
  };
  for (const auto& in : inputs) {
    if (in.empty()) continue;
    const fs::path i = fs::weakly_canonical(fs::absolute(in));
    OUTQ_CHECK(!within(i, o) && !within(o, i), option, " ", out, ": would replace or write into the input ", in,
               "; expected a separate output directory");
  }
  std::error_code ec;
  if (!fs::exists(o, ec)) return;
  OUTQ_CHECK(fs::is_directory(o, ec) || overwrite, option, " ", out,
             ": is an existing file; expected a new directory path (or --overwrite to replace it)");
  OUTQ_CHECK(fs::exists(o / marker, ec) || overwrite || fs::is_empty(o, ec), option, " ", out,
             ": exists and is not an earlier output of this command (no ", marker,
             "); expected a new directory path, or --overwrite to replace it and everything in it");
}

std::vector<std::string> describe_tokens(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (const int32_t id : ids) out.push_back(id == tokenizer.bos_id() ? "<s>" : nlohmann::json(tokenizer.piece(id)).dump());
  return out;
}

std::string describe_compute(const LoadedModel& lm) {
  if (!lm.quantized) return "float32";
  if (!lm.runtime) return "fake-quant simulation (float32)";
  std::string s = fmt::format("integer kernels ({}) on {} linear layers", kernels::isa_name(kernels::isa_active()),
                              lm.runtime->integer_layers);
  if (lm.runtime->weight_only_layers > 0)
    s += fmt::format(", weight-only kernels on {} (float activations)", lm.runtime->weight_only_layers);
  if (lm.prefix) s += fmt::format("; continues after a {}-token float prefix", lm.prefix->length());
  if (!lm.runtime->float_layers.empty())
    s += fmt::format("; {} simulated in float (first: {})", lm.runtime->float_layers.size(), lm.runtime->float_layers.front());
  if (lm.runtime->simulated_points > 0)
    s += fmt::format("; {} other quantized tensors (full-integer mode) simulated", lm.runtime->simulated_points);
  return s;
}

std::string resolve_data_dir(const std::string& data_dir, OutqConfig& config) {
  if (!data_dir.empty()) return data_dir;
  return data_prepare(config.data, config_json(config_entries(config)), false).dir;
}

TokenShard open_eval_shard(const std::string& dir, const std::string& split, const Tokenizer& tokenizer,
                           const std::string& model_dir) {
  PreparedData data(dir);
  OUTQ_CHECK(data.tokenizer().checksum() == tokenizer.checksum(), model_dir, "/tokenizer.model: expected the tokenizer of ",
             dir, " (checksum ", data.tokenizer().checksum(), "), found checksum ", tokenizer.checksum());
  return data.shard(split);
}

std::unique_ptr<TokenShard> open_calibration_shard(const std::string& calib_path, const std::string& data_dir,
                                                   OutqConfig& config, const Tokenizer& tokenizer,
                                                   const std::string& tokenizer_path) {
  std::unique_ptr<TokenShard> shard;
  if (!calib_path.empty()) {
    shard = std::make_unique<TokenShard>(calib_path);
  } else {
    PreparedData data(resolve_data_dir(data_dir, config));
    shard = std::make_unique<TokenShard>(data.shard("train"));
  }
  shard->expect_tokenizer(tokenizer.checksum(), tokenizer_path);
  return shard;
}

}  // namespace outq::app
