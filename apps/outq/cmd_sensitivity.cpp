// `outq sensitivity`: which activation tensors of a recipe hurt most (leave-one-in and
// leave-one-out by tensor type, and per layer for the worst types), a ranking table, a bar chart,
// and a suggested mixed-precision recipe that keeps the fewest types at 16-bit integer activations
// within a perplexity tolerance (see ptq/sensitivity.h).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "command.h"
#include "model_source.h"
#include "option_checks.h"
#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/log.h"
#include "outq/core/plot.h"
#include "outq/core/table.h"
#include "outq/eval/perplexity.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/method.h"
#include "outq/ptq/sensitivity.h"

namespace fs = std::filesystem;

namespace outq::app {
namespace {

std::string g_model, g_recipe, g_out, g_data_dir, g_calib, g_split = "val";
int64_t g_max_tokens = 32768, g_seq_len = 0, g_batch = 8;
double g_tolerance = 0.02;
int g_per_layer = 3, g_max_16 = 0, g_threads = 2;
bool g_overwrite = false;

void add_options(CLI::App& app) {
  app.add_option("--model", g_model, "float model directory")->required();
  app.add_option("--recipe", g_recipe, "the recipe to analyse (with full_integer = true, every tensor of the block)")->required();
  app.add_option("--out", g_out, "output directory: sensitivity.json / .csv / .png and the suggested recipe")->required();
  app.add_option("--split", g_split, "split scored for each selection (the test split stays unseen by default)")
      ->capture_default_str();
  app.add_option("--data-dir", g_data_dir, "a prepared data directory (default: prepare/reuse the [data] config)");
  app.add_option("--calib", g_calib, "calibration token shard (default: the prepared data's train split)");
  app.add_option("--max-tokens", g_max_tokens, "tokens scored per selection (0 = the whole split)")
      ->capture_default_str()->check(whole(0));
  app.add_option("--seq-len", g_seq_len, "window length (0 = the model's max_position_embeddings)")->capture_default_str()->check(whole(0));
  app.add_option("--batch", g_batch, "windows per forward pass")->capture_default_str()->check(whole(1));
  app.add_option("--tolerance", g_tolerance,
                 "suggestion target: perplexity within this fraction of the weights-only model (float activations)")
      ->capture_default_str()->check(finite(0.0, 10.0));
  app.add_option("--per-layer-types", g_per_layer, "leave-one-out per layer for this many of the most sensitive types")
      ->capture_default_str()->check(whole(0, 64));
  app.add_option("--max-16bit", g_max_16, "at most this many types at 16 bits in the suggestion (0 = as needed)")
      ->capture_default_str()->check(whole(0, 64));
  app.add_option("--threads", g_threads, "LibTorch threads")->capture_default_str()->check(whole(1, 1024));
  app.add_flag("--overwrite", g_overwrite, "replace --out even when it is not an earlier sensitivity output");
}

std::string pct(double ppl, double base) { return fmt::format("{:+.2f}%", 100.0 * (ppl / base - 1.0)); }

void write_outputs(const SensitivityResult& r, const std::string& recipe_name) {
  StagedDirectory stage(g_out);
  const fs::path dir = stage.path();
  write_file_atomic(dir / "sensitivity.json", r.to_json().dump(2) + "\n");
  std::string csv = "mode,type,layer,perplexity\n";
  for (const auto& x : r.leave_one_in) csv += fmt::format("leave_one_in,{},{},{:.6f}\n", x.type, x.layer, x.perplexity);
  for (const auto& x : r.leave_one_out) csv += fmt::format("leave_one_out,{},{},{:.6f}\n", x.type, x.layer, x.perplexity);
  for (const auto& x : r.per_layer_out) csv += fmt::format("leave_one_out,{},{},{:.6f}\n", x.type, x.layer, x.perplexity);
  write_file_atomic(dir / "sensitivity.csv", csv);
  write_file_atomic(dir / (recipe_name + "-mp.toml"), r.suggested_recipe);
  BarPlot p;
  p.title = fmt::format("{}: perplexity by tensor type (float {:.2f}, weights only {:.2f}, all {:.2f})", recipe_name,
                        r.float_perplexity, r.weights_only_perplexity, r.all_perplexity);
  p.ylabel = "perplexity";
  p.log_y = true;
  p.categories = r.types;
  p.series_names = {"only this type quantized (leave-one-in)", "all but this type (leave-one-out)"};
  p.values.resize(2);
  for (size_t i = 0; i < r.types.size(); ++i) {
    p.values[0].push_back(r.leave_one_in[i].perplexity);
    p.values[1].push_back(r.leave_one_out[i].perplexity);
  }
  try {
    plot_bars(p, (dir / "sensitivity.png").string());
  } catch (const Error& e) {
    log_warn("sensitivity: no plot ({})", e.what());
  }
  stage.commit();
}

int run(const CommonOptions& common, OutqConfig& config) {
  torch::set_num_threads(g_threads);
  check_output_dir("--out", g_out, {g_model, g_calib, g_recipe, g_data_dir}, "sensitivity.json", g_overwrite);
  const Recipe recipe = recipe_load(g_recipe);
  LoadedModel lm = load_model_dir(g_model);
  use_model_tokenizer(config, lm.model->config(), g_model);
  OUTQ_CHECK(!lm.quantized, g_model, ": expected a float model directory, found a quantized one (quant_config.json)");
  const std::string tokenizer_path = outq::tokenizer_path(g_model);
  std::unique_ptr<TokenShard> calib;
  if (recipe_needs_calibration_data(recipe))  // (the suggestion's 16-bit tensors are static exactly when these are)
    calib = open_calibration_shard(g_calib, g_data_dir, config, *lm.tokenizer, tokenizer_path);
  const std::string data_dir = resolve_data_dir(g_data_dir, config);
  const TokenShard eval = open_eval_shard(data_dir, g_split, *lm.tokenizer, g_model);
  PerplexityOptions po;
  po.seq_len = g_seq_len > 0 ? g_seq_len : lm.model->config().max_position_embeddings;
  po.max_tokens = g_max_tokens;
  po.batch_size = g_batch;
  po.bos_id = lm.tokenizer->bos_id();
  po.show_progress = false;
  const PerplexityFn perplexity = [&](Llama& model, const TokenPrefix* prefix) {
    PerplexityOptions o = po;
    o.prefix = prefix;
    return evaluate_perplexity(model, eval, o).perplexity();
  };
  const QuantizeFn quantize = [&](const Recipe& r) {
    LoadedModel fresh = load_model_dir(g_model);
    QuantizedModel q = quantize_model(fresh.model, r, calib.get(), fresh.tokenizer->bos_id(),
                                      fresh.learned ? &*fresh.learned : nullptr,
                     fresh.learned_weights ? &*fresh.learned_weights : nullptr);
    return std::make_pair(fresh.model, std::move(q));
  };
  SensitivityOptions so;
  so.tolerance = g_tolerance;
  so.per_layer_types = g_per_layer;
  so.max_suggested = g_max_16;
  const SensitivityResult r = sensitivity_analysis(lm.model, recipe, quantize, perplexity, so);
  write_outputs(r, recipe.name);
  if (common.json) {
    std::printf("%s\n", r.to_json().dump(2).c_str());
    return 0;
  }
  Table t({"tensor type", "BERT", "only this quantized", "Δ vs weights-only", "all but this", "Δ vs all"});
  const auto types = tensor_types();
  std::vector<size_t> order(r.types.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return r.leave_one_out[a].perplexity < r.leave_one_out[b].perplexity; });
  for (size_t i : order) {
    std::string letter;
    for (const auto& ty : types)
      if (ty.name == r.types[i]) letter = ty.paper;
    t.add_row({r.types[i], letter, fmt::format("{:.3f}", r.leave_one_in[i].perplexity),
               pct(r.leave_one_in[i].perplexity, r.weights_only_perplexity), fmt::format("{:.3f}", r.leave_one_out[i].perplexity),
               pct(r.leave_one_out[i].perplexity, r.all_perplexity)});
  }
  std::printf("%s: float %.3f, weights only %.3f, everything quantized %.3f (%s of %s, %lld tokens per selection)\n",
              recipe.name.c_str(), r.float_perplexity, r.weights_only_perplexity, r.all_perplexity, g_split.c_str(),
              data_dir.c_str(), static_cast<long long>(g_max_tokens));
  std::printf("ranking (most sensitive first: leaving it out helps most)\n%s", t.render().c_str());
  if (!r.per_layer_out.empty()) {
    Table pl({"tensor", "layer", "all but this one", "Δ vs all"});
    for (const auto& x : r.per_layer_out)
      pl.add_row({x.type, std::to_string(x.layer), fmt::format("{:.3f}", x.perplexity), pct(x.perplexity, r.all_perplexity)});
    std::printf("per layer\n%s", pl.render().c_str());
  }
  std::printf("suggestion (target %.3f = weights only + %.1f%%): %s at 16-bit integer -> %s\n", r.target, 100 * g_tolerance,
              r.suggested.empty() ? "nothing" : fmt::format("{}", fmt::join(r.suggested, ", ")).c_str(),
              r.suggested.empty() ? "already within the target"
              : r.reached ? fmt::format("perplexity {:.3f}", r.suggested_perplexity).c_str()
                          : fmt::format("perplexity {:.3f}, target NOT reached", r.suggested_perplexity).c_str());
  if (!r.suggested_steps.empty()) {
    std::string steps;
    for (size_t i = 0; i < r.suggested.size(); ++i)
      steps += fmt::format("{}+{} {:.3f}", i ? ", " : "", r.suggested[i], r.suggested_steps[i]);
    std::printf("selection steps (chosen types in float): %s\n", steps.c_str());
  }
  std::printf("outputs: %s/sensitivity.{json,csv,png}, %s/%s-mp.toml\n", g_out.c_str(), g_out.c_str(), recipe.name.c_str());
  return 0;
}

}  // namespace

Command command_sensitivity() {
  return {"sensitivity",
          "leave-one-in / leave-one-out perplexity by activation tensor, ranking, plot and a suggested mixed-precision recipe",
          "outq sensitivity --model runs/tiny/model --recipe recipes/w8a8-tensor-rtn-full.toml --out runs/tiny/sensitivity",
          add_options, run};
}

}  // namespace outq::app
