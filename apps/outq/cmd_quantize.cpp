// `outq quantize`: apply a recipe (RTN or GPTQ weights, static or dynamic activations) to a float
// model and write a quantized model directory.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>
#include <filesystem>

#include "command.h"
#include "option_checks.h"
#include "model_source.h"
#include "outq/core/error.h"
#include "outq/core/process.h"
#include "outq/core/table.h"
#include "outq/ptq/method.h"
#include "outq/ptq/quantized_io.h"
#include "outq/quant/recipe.h"

namespace fs = std::filesystem;

namespace outq::app {
namespace {

std::string g_model, g_recipe, g_calib, g_out, g_data_dir;
int g_threads = 2;
bool g_overwrite = false;

void add_options(CLI::App& app) {
  app.add_option("--model", g_model, "float model directory")->required();
  std::string methods;
  for (const auto& [name, what] : method_catalog()) methods += fmt::format("\n  {}: {}", name, what);
  app.add_option("--recipe", g_recipe, "recipe TOML file (see recipes/); outlier methods for its `methods = [...]`:" + methods)
      ->required();
  app.add_option("--out", g_out, "output directory for the quantized model")->required();
  app.add_option("--calib", g_calib, "calibration token shard (default: the prepared data's train split)");
  app.add_option("--data-dir", g_data_dir, "a prepared data directory (default: prepare/reuse the [data] config)");
  app.add_option("--threads", g_threads, "LibTorch threads")->capture_default_str()->check(whole(1, 1024));
  app.add_flag("--overwrite", g_overwrite,
               "replace --out even when it is not an earlier quantized model directory (it is never the input)");
}

int run(const CommonOptions& common, OutqConfig& config) {
  torch::set_num_threads(g_threads);
  check_output_dir("--out", g_out, {g_model, g_calib, g_recipe, g_data_dir}, "quant_config.json", g_overwrite);
  const Recipe recipe = recipe_load(g_recipe);
  LoadedModel lm = load_model_dir(g_model);
  use_model_tokenizer(config, lm.model->config(), g_model);
  OUTQ_CHECK(!lm.quantized, g_model, ": expected a float model directory, found a quantized one (quant_config.json)");
  const std::string tokenizer_path = outq::tokenizer_path(g_model);
  std::unique_ptr<TokenShard> calib;
  if (recipe_needs_calibration_data(recipe)) {
    calib = open_calibration_shard(g_calib, g_data_dir, config, *lm.tokenizer, tokenizer_path);
  }
  const QuantizedModel q = quantize_model(lm.model, recipe, calib.get(), lm.tokenizer->bos_id(), lm.learned ? &*lm.learned : nullptr,
                     lm.learned_weights ? &*lm.learned_weights : nullptr);
  quantized_save(lm.model, q, g_out, tokenizer_path);
  const double rss = static_cast<double>(peak_rss_bytes());
  nlohmann::json prefix = nullptr;
  if (q.prefix) prefix = {{"ids", q.prefix->tokens}, {"pieces", describe_tokens(*lm.tokenizer, q.prefix->tokens)}};
  if (common.json) {
    std::printf("%s\n", nlohmann::json({{"recipe", recipe.name}, {"label", recipe.label()}, {"out", g_out},
                                        {"methods", recipe.methods_label()}, {"seconds", q.seconds},
                                        {"peak_rss_bytes", rss}, {"prefix", prefix}})
                            .dump(2)
                            .c_str());
    return 0;
  }
  if (q.prefix)
    std::printf("quantization-free prefix (QFeP): %s\n",
                fmt::format("{}", fmt::join(describe_tokens(*lm.tokenizer, q.prefix->tokens), " ")).c_str());
  Table t({"recipe", "weights", "activations", "algorithm", "methods", "time", "peak memory"});
  t.add_row({recipe.name, recipe.weights.describe(), recipe.activations.describe(),
             weight_algorithm_name(recipe.algorithm),
             recipe.methods.empty() ? "none" : recipe.methods_label(), format_duration(q.seconds), format_bytes(rss)});
  std::printf("%s\nquantized model: %s\n", t.render().c_str(), g_out.c_str());
  return 0;
}

}  // namespace

Command command_quantize() {
  return {"quantize",
          "apply a recipe (RTN/GPTQ weights, static/dynamic activations, outlier methods) and write a quantized model",
          "outq quantize --model runs/tiny/model --recipe recipes/w4a8-token-gptq.toml --out runs/tiny/w4a8", add_options,
          run};
}

}  // namespace outq::app
