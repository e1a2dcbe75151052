// `outq eval`: perplexity (and KL divergence / top-1 agreement against a reference) of a float or
// quantized model, or of a float model with recipes simulated on the fly (`--recipe`, `--sweep`).
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "command.h"
#include "option_checks.h"
#include "model_source.h"
#include "outq/core/error.h"
#include "outq/core/log.h"
#include "outq/core/file_io.h"
#include "outq/core/table.h"
#include "outq/eval/perplexity.h"
#include "outq/ptq/method.h"
#include "outq/ptq/quantize_model.h"
#include "outq/quant/recipe.h"

namespace fs = std::filesystem;

namespace outq::app {
namespace {

std::string g_model, g_split = "test", g_text, g_data_dir, g_recipe, g_kl_base, g_calib;
std::vector<std::string> g_sweep;
int64_t g_max_tokens = 0, g_seq_len = 0, g_batch = 8;
int g_threads = 2;
bool g_simulate = false;

void add_options(CLI::App& app) {
  app.add_option("--model", g_model, "model directory, float or quantized")->required();
  app.add_option("--split", g_split, "split of the prepared corpus: train, val or test")->capture_default_str();
  app.add_option("--data-dir", g_data_dir, "a prepared data directory (default: prepare/reuse the [data] config)");
  app.add_option("--text", g_text, "evaluate on this plain text file instead of a split");
  app.add_option("--recipe", g_recipe, "quantize the float model with this recipe on the fly first");
  app.add_option("--sweep", g_sweep, "evaluate the float model and each of these recipes; one table")->take_all();
  app.add_option("--kl-base", g_kl_base, "reference model directory for KL divergence and top-1 agreement");
  app.add_option("--calib", g_calib, "calibration token shard for --recipe/--sweep (default: the train split)");
  app.add_option("--max-tokens", g_max_tokens, "score at most this many tokens (0 = all)")->capture_default_str()->check(whole(0));
  app.add_option("--seq-len", g_seq_len, "window length (0 = the model's max_position_embeddings)")->capture_default_str()->check(whole(0));
  app.add_option("--batch", g_batch, "windows per forward pass")->capture_default_str()->check(whole(1));
  app.add_option("--threads", g_threads, "LibTorch threads")->capture_default_str()->check(whole(1, 1024));
  app.add_flag("--simulate", g_simulate,
               "quantized model: run the fake-quant simulation in float instead of the integer kernels");
}

struct Row {
  std::string name, weights, activations;
  PerplexityResult r;
};

int run(const CommonOptions& common, OutqConfig& config) {
  torch::set_num_threads(g_threads);
  OUTQ_CHECK(g_recipe.empty() || g_sweep.empty(), "--recipe and --sweep: expected one of them, found both");
  LoadedModel lm = load_model_dir(g_model, g_simulate);
  use_model_tokenizer(config, lm.model->config(), g_model);
  const Tokenizer& tokenizer = *lm.tokenizer;
  const std::string tokenizer_path = outq::tokenizer_path(g_model);
  OUTQ_CHECK(!lm.quantized || (g_recipe.empty() && g_sweep.empty()), g_model,
             ": --recipe/--sweep: expected a float model directory, found a quantized one");

  PerplexityOptions o;
  o.seq_len = g_seq_len > 0 ? g_seq_len : lm.model->config().max_position_embeddings;
  o.max_tokens = g_max_tokens;
  o.batch_size = g_batch;
  o.bos_id = tokenizer.bos_id();

  // The tokens to score.
  std::vector<int32_t> text_tokens;
  std::unique_ptr<TokenShard> shard;
  std::string source;
  if (!g_text.empty()) {
    text_tokens = tokenizer.encode(read_file(g_text, "text file"));
    source = g_text;
  } else {
    const std::string dir = resolve_data_dir(g_data_dir, config);
    shard = std::make_unique<TokenShard>(open_eval_shard(dir, g_split, tokenizer, g_model));
    source = dir + ":" + g_split;
  }
  // A model with a QFeP prefix continues every window after it (the reference model too).
  auto evaluate = [&](Llama& model, Llama* reference, const TokenPrefix* prefix) {
    PerplexityOptions po = o;
    po.prefix = prefix;
    if (const int64_t window = effective_window(model, po); window < o.seq_len)
      log_info("{} continues after a {}-token prefix: windows of {} tokens", g_model, prefix->length(), window);
    if (shard) return evaluate_perplexity(model, *shard, po, reference);
    return evaluate_perplexity(
        model, [&](uint64_t s, uint64_t n, int32_t* out) { std::copy_n(text_tokens.begin() + s, n, out); },
        text_tokens.size(), po, reference);
  };

  LoadedModel reference;
  if (!g_kl_base.empty()) reference = load_model_dir(g_kl_base);
  std::vector<std::string> recipes = g_sweep;
  if (!g_recipe.empty()) recipes = {g_recipe};
  std::unique_ptr<TokenShard> calib;
  std::vector<Row> rows;

  if (g_sweep.empty()) {
    if (!g_recipe.empty()) {
      const Recipe recipe = recipe_load(g_recipe);
      if (recipe_needs_calibration_data(recipe))
        calib = open_calibration_shard(g_calib, g_data_dir, config, tokenizer, tokenizer_path);
      const QuantizedModel q =
          quantize_model(lm.model, recipe, calib.get(), tokenizer.bos_id(), lm.learned ? &*lm.learned : nullptr,
                     lm.learned_weights ? &*lm.learned_weights : nullptr);
      lm.prefix = q.prefix;
      rows.push_back({recipe.name, recipe.weights.describe(), recipe.activations.describe(), {}});
    } else {
      rows.push_back({g_model, lm.quantized ? "quantized" : "float", lm.quantized ? "quantized" : "float", {}});
    }
    rows.back().r = evaluate(lm.model, reference.model ? &reference.model : nullptr, lm.prefix.get());
  } else {
    // Every recipe (and its methods' settings) is checked before anything runs.
    std::vector<Recipe> sweep;
    for (const auto& path : g_sweep) sweep.push_back(recipe_load(path));
    for (const auto& recipe : sweep) make_methods(recipe);
    // Float first; it is the KL reference unless --kl-base names another.
    Llama* ref = reference.model ? &reference.model : &lm.model;
    rows.push_back({"float", "off", "off", evaluate(lm.model, reference.model ? ref : nullptr, nullptr)});
    for (const auto& recipe : sweep) {
      if (!calib && recipe_needs_calibration_data(recipe))
        calib = open_calibration_shard(g_calib, g_data_dir, config, tokenizer, tokenizer_path);
      LoadedModel fresh = load_model_dir(g_model);
      const QuantizedModel q =
          quantize_model(fresh.model, recipe, calib.get(), tokenizer.bos_id(), fresh.learned ? &*fresh.learned : nullptr,
                     fresh.learned_weights ? &*fresh.learned_weights : nullptr);
      rows.push_back({recipe.name, recipe.weights.describe(), recipe.activations.describe(),
                      evaluate(fresh.model, ref, q.prefix.get())});
    }
  }

  if (common.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& row : rows) {
      nlohmann::json j = row.r.to_json();
      j["name"] = row.name;
      j["weights"] = row.weights;
      j["activations"] = row.activations;
      j["source"] = source;
      j["seq_len"] = o.seq_len;
      j["compute"] = describe_compute(lm);
      out.push_back(j);
    }
    std::printf("%s\n", (rows.size() == 1 ? out[0] : out).dump(2).c_str());
    return 0;
  }
  const double float_ppl = g_sweep.empty() ? 0.0 : rows.front().r.perplexity();
  const bool kl = rows.back().r.has_reference;
  std::vector<std::string> header = {"model / recipe", "weights", "activations", "tokens", "perplexity"};
  if (!g_sweep.empty()) header.push_back("Δ% vs float");
  if (kl) header.insert(header.end(), {"KL", "top-1 agree"});
  Table t(header);
  for (const auto& row : rows) {
    // ± the standard error over windows; the change against float ± the paired error of the two
    // evaluations' per-window differences (the same windows unless a prefix shortened them).
    std::vector<std::string> cells = {row.name, row.weights, row.activations, format_count(row.r.tokens),
                                      fmt::format("{:.3f} ± {:.3f}", row.r.perplexity(),
                                                  row.r.perplexity() * row.r.nll_standard_error())};
    if (!g_sweep.empty()) {
      const PerplexityResult& f = rows.front().r;
      const double se = nll_difference_standard_error(row.r.window_nll, row.r.window_tokens, f.window_nll, f.window_tokens);
      cells.push_back(&row == &rows.front() ? std::string()
                                            : fmt::format("{:+.2f}% ± {:.2f}%", 100.0 * (row.r.perplexity() / float_ppl - 1.0),
                                                          100.0 * se));
    }
    if (row.r.window != o.seq_len) cells[0] += fmt::format(" (after a prefix: {}-token windows)", row.r.window);
    if (kl) {
      cells.push_back(row.r.has_reference ? fmt::format("{:.5f}", row.r.kl_mean()) : "-");
      cells.push_back(row.r.has_reference ? fmt::format("{:.2f}%", 100.0 * row.r.top1_agreement()) : "-");
    }
    t.add_row(cells);
  }
  std::printf("source: %s (windows of %lld tokens)\ncompute: %s\n%s", source.c_str(), static_cast<long long>(o.seq_len),
              describe_compute(lm).c_str(), t.render().c_str());
  return 0;
}

}  // namespace

Command command_eval() {
  return {"eval", "perplexity, KL divergence and top-1 agreement of float, quantized or recipe-simulated models",
          "outq eval --model runs/tiny/model --sweep recipes/w8a8-token-rtn.toml recipes/w4a4-token-gptq.toml", add_options,
          run};
}

}  // namespace outq::app
