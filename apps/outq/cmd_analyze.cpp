// `outq analyze`: per-layer / per-channel / per-token activation statistics, weight statistics,
// outlier emergence over training, a summary, JSON and PNG plots.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

#include "command.h"
#include "option_checks.h"
#include "model_source.h"
#include "outq/analysis/analyze.h"
#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/log.h"
#include "outq/model/checkpoint.h"
#include "outq/ptq/activation_quant.h"
#include "outq/train/checkpoint_clips.h"

namespace fs = std::filesystem;

namespace outq::app {
namespace {

std::string g_model, g_split = "val", g_data_dir, g_out, g_point, g_checkpoints, g_run_dir;
int64_t g_max_tokens = 100000, g_seq_len = 0, g_batch = 8, g_emergence_tokens = 16384;
int g_threads = 2;
bool g_unclipped = false, g_overwrite = false;

void add_options(CLI::App& app) {
  app.add_option("--model", g_model, "model directory, float or quantized")->required();
  app.add_option("--split", g_split, "split of the prepared corpus to analyse")->capture_default_str();
  app.add_option("--data-dir", g_data_dir, "a prepared data directory (default: prepare/reuse the [data] config)");
  app.add_option("--max-tokens", g_max_tokens, "tokens to analyse")->capture_default_str()->check(whole(1));
  app.add_option("--seq-len", g_seq_len, "window length (0 = the model's max_position_embeddings)")->capture_default_str()->check(whole(0));
  app.add_option("--batch", g_batch, "windows per forward pass")->capture_default_str()->check(whole(1));
  app.add_option("--point", g_point, "observation point for the heat map (default: the linear input with the most prominent outlier channel)");
  app.add_option("--out", g_out,
                 "output directory (default: <model>/analysis); built aside and moved into place complete, replacing "
                 "only an earlier analysis (analysis.json) unless --overwrite");
  app.add_flag("--overwrite", g_overwrite, "replace --out even when it is not an earlier analysis output");
  app.add_option("--checkpoints", g_checkpoints, "emergence: a directory of model/checkpoint directories (e.g. RUN/checkpoints)");
  app.add_option("--emergence-tokens", g_emergence_tokens, "tokens analysed per checkpoint for emergence")->capture_default_str()->check(whole(1));
  app.add_option("--run-dir", g_run_dir, "emergence: an `outq train` run directory whose metrics.jsonl has light statistics");
  app.add_option("--threads", g_threads, "LibTorch threads")->capture_default_str()->check(whole(1, 1024));
  app.add_flag("--unclipped", g_unclipped,
               "a QAT model (with clips.json): analyse the float network without its clips (default: as trained, "
               "each linear input quantized or clamped at its learned range; statistics are of the inputs before "
               "that); the same for --checkpoints of a QAT or clamp run, with each checkpoint's clips");
}

int run(const CommonOptions& common, OutqConfig& config) {
  torch::set_num_threads(g_threads);
  // The default <model>/analysis lives inside the model directory by design; any other --out must
  // not be (or hold) an input, and replaces only an earlier analysis.
  const fs::path default_out = fs::path(g_model) / "analysis";
  const std::string out = g_out.empty() ? default_out.string() : g_out;
  const bool in_model = fs::weakly_canonical(fs::absolute(out)) == fs::weakly_canonical(fs::absolute(default_out));
  check_output_dir("--out", out, {in_model ? "" : g_model, g_data_dir, g_checkpoints, g_run_dir}, "analysis.json",
                   g_overwrite);
  LoadedModel lm = load_model_dir(g_model);
  use_model_tokenizer(config, lm.model->config(), g_model);
  const std::string dir = resolve_data_dir(g_data_dir, config);
  const TokenShard shard = open_eval_shard(dir, g_split, *lm.tokenizer, g_model);
  AnalyzeOptions o;
  o.max_tokens = g_max_tokens;
  o.seq_len = g_seq_len > 0 ? g_seq_len : lm.model->config().max_position_embeddings;
  o.batch_size = g_batch;
  o.bos_id = lm.tokenizer->bos_id();
  o.heatmap_point = g_point;
  // A QAT model runs as it was trained unless asked otherwise (its float network alone is a
  // different model: inputs it never saw beyond its clips flow on through the layers).
  std::string clips = "none";
  if (lm.learned && !lm.quantized) {
    clips = g_unclipped ? "ignored" : "applied";
    if (!g_unclipped) lm.model->observers().attach(learned_input_observer(lm.model, *lm.learned));
    log_info("{}/clips.json: {}", g_model,
             g_unclipped ? "not applied (--unclipped): the float network alone"
                         : "applied: the model as trained, statistics of each linear input before its clip");
  } else if (g_unclipped) {
    log_warn("--unclipped: {} has no learned clips (clips.json); the flag changes nothing", g_model);
  }
  const AnalysisResult r = analyze_model(lm.model, shard, o);

  // Emergence: a series of checkpoints, or the light statistics of a training run.
  std::vector<std::pair<int64_t, nlohmann::json>> series;
  std::string emergence_clips;
  if (!g_checkpoints.empty()) {
    OUTQ_CHECK(fs::is_directory(g_checkpoints), g_checkpoints, ": checkpoint directory not found");
    std::vector<fs::path> dirs;
    for (const auto& e : fs::directory_iterator(g_checkpoints))
      if (e.is_directory() && fs::exists(e.path() / "config.json") && e.path().filename().string().find('.') == std::string::npos)
        dirs.push_back(e.path());
    std::sort(dirs.begin(), dirs.end());
    OUTQ_CHECK(!dirs.empty(), g_checkpoints, ": expected checkpoint directories (with config.json), found none");
    const nlohmann::json want = lm.model->config().to_hf_json();
    AnalyzeOptions eo = o;
    eo.max_tokens = g_emergence_tokens;
    eo.heatmap = false;
    eo.show_progress = false;
    int clipped = 0;
    for (const auto& d : dirs) {
      const ModelConfig c = model_config_read(d.string());
      if (c.to_hf_json() != want) {
        fail_mismatch((d / "config.json").string(), "model config", "the configuration of " + g_model,
                      "a different one (all checkpoints must be of the same model)");
      }
      Llama m = model_load(d.string());
      // A QAT (or clamp) checkpoint runs with the clips it had reached, as trained.
      const auto checkpoint_clips = g_unclipped ? std::nullopt : checkpoint_clips_json(d.string(), m);
      if (checkpoint_clips) {
        m->observers().attach(learned_input_observer(m, learned_ranges_from_json(*checkpoint_clips, d.string())));
        ++clipped;
      }
      const std::string name = d.filename().string();
      const int64_t step = name.rfind("step-", 0) == 0 ? std::stoll(name.substr(5)) : static_cast<int64_t>(series.size());
      series.emplace_back(step, layer_type_summary(analyze_model(m, shard, eo).points));
      log_info("emergence: {} analysed{}", d.string(), checkpoint_clips ? " (with its clips)" : "");
    }
    emergence_clips = fmt::format("applied to {} of {} checkpoints", clipped, dirs.size());
  } else if (!g_run_dir.empty()) {
    series = emergence_from_metrics(g_run_dir);
    OUTQ_CHECK(!series.empty(), g_run_dir, "/metrics.jsonl: expected light statistics (train.stats_every > 0), found none");
  }

  StagedDirectory stage(out);
  const fs::path staged = stage.path();
  nlohmann::json j = analysis_json(r, lm.tokenizer.get());
  j["model"] = g_model;
  j["source"] = dir + ":" + g_split;
  j["clips"] = clips;
  if (!series.empty()) {
    nlohmann::json e = nlohmann::json::array();
    for (const auto& [step, summary] : series) e.push_back({{"step", step}, {"by_layer_type", summary}});
    j["emergence"] = e;
    if (!emergence_clips.empty()) j["emergence_clips"] = emergence_clips;
  }
  write_file_atomic(staged / "analysis.json", j.dump(1) + "\n");
  std::string summary = analysis_summary(r, lm.tokenizer.get());
  if (!series.empty()) summary += "\noutlier channels by training step (per depth):\n" + emergence_table(series);
  write_file_atomic(staged / "summary.txt", summary);
  std::string plot_error;
  try {
    analysis_plots(r, staged.string());
    if (!series.empty()) emergence_plot(series, (staged / "emergence.png").string());
  } catch (const Error& e) {
    plot_error = e.what();
  }
  stage.commit();  // statistics (and the plots, when they could be drawn) appear together
  if (common.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s\nwritten: %s/analysis.json, summary.txt\n", summary.c_str(), out.c_str());
  }
  if (!plot_error.empty()) throw Error(fmt::format("statistics written to {}, but no plots: {}", out, plot_error));
  if (!common.json) std::printf("plots: %s/{heatmap,weights,spikes%s}.png\n", out.c_str(), series.empty() ? "" : ",emergence");
  return 0;
}

}  // namespace

Command command_analyze() {
  return {"analyze", "per-layer/channel/token activation statistics, outlier channels, spikes, emergence, plots",
          "outq analyze --model runs/tiny/model --max-tokens 100000 --run-dir runs/tiny", add_options, run};
}

}  // namespace outq::app
