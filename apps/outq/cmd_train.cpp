// `outq train`: pretrain a LLaMA-style decoder on the prepared corpus (see train/trainer.h).
#include <fmt/format.h>

#include <cstdio>

#include "command.h"
#include "model_source.h"
#include "outq/core/error.h"
#include "outq/core/table.h"
#include "outq/model/checkpoint.h"
#include "outq/train/process_group.h"
#include "outq/train/trainer.h"
#include "rank_launcher.h"
#include "train_result.h"

namespace outq::app {
namespace {

bool g_resume = false;
std::string g_init_from;
int g_nproc = 1;

void add_options(CLI::App& app) {
  app.add_flag("--resume", g_resume, "continue the run in train.run_dir from its latest checkpoint");
  app.add_option("--init-from", g_init_from,
                 "fine-tune: start from this trained model directory's weights (same shapes and tokenizer) with a fresh "
                 "optimizer and schedule, in any qat.mode");
  app.add_option("--nproc", g_nproc,
                 "data-parallel ranks on this machine (processes of train.threads threads each; train.batch_size is "
                 "their global batch). Across machines, start one outq per rank with torchrun's variables instead "
                 "(docs/distributed.md)")
      ->check(CLI::Range(1, 256));
}

int run(const CommonOptions& common, OutqConfig& config) {
  if (g_nproc > 1) {
    OUTQ_CHECK(config.train.batch_size % g_nproc == 0, "train.batch_size: expected a multiple of --nproc ", g_nproc,
               " (it is the global batch, split evenly over the ranks), found ", config.train.batch_size);
    const auto& argv = process_arguments();
    return launch_local_ranks(g_nproc, without_nproc({argv.begin() + 1, argv.end()}),
                              std::chrono::seconds(config.train.dist_timeout_s + 30));
  }
  if (!g_init_from.empty()) {
    // An imported checkpoint brings its own architecture (family, biases, RoPE, norms) and
    // tokenizer: the [model] keys cannot describe all of it, so the run takes it from there.
    const ModelConfig base = model_config_read(g_init_from);
    if (!base.imported_from.empty()) config.model = base;
    use_model_tokenizer(config, base, g_init_from);
  }
  const bool lead = rank_info_from_environment().rank == 0;
  if (lead) print_effective_config(config);
  TrainOptions options{config.data, config.model, config.train, config.qat, config_json(config_entries(config)), g_resume,
                       g_init_from};
  const TrainResult r = train_run(options);
  if (!lead) return r.stopped_by_signal ? 128 + r.stopped_by_signal : 0;  // rank 0 reports for all
  if (common.json) {
    std::printf("%s\n", train_result_json(r).dump(2).c_str());
  } else {
    Table t({"steps", "train loss", "val loss", "val ppl", "time", "tokens/s", "peak memory"});
    t.add_row({std::to_string(r.steps_done), fmt::format("{:.4f}", r.final_train_loss), fmt::format("{:.4f}", r.final_val_loss),
               fmt::format("{:.2f}", r.final_val_ppl), format_duration(r.seconds), fmt::format("{:.0f}", r.tokens_per_second),
               format_bytes(static_cast<double>(r.peak_rss_bytes))});
    std::printf("%s", t.render().c_str());
    const double total = r.forward_s + r.backward_s + r.optimizer_s;
    if (total > 0) {
      std::printf("time per step: forward %.0f ms (%.0f%%), backward %.0f ms (%.0f%%), clip + AdamW %.0f ms (%.0f%%)\n",
                  1e3 * r.forward_s, 100 * r.forward_s / total, 1e3 * r.backward_s, 100 * r.backward_s / total,
                  1e3 * r.optimizer_s, 100 * r.optimizer_s / total);
    }
    if (r.ranks > 1) {
      std::printf("%d data-parallel ranks: gradient all-reduce not hidden by the backward pass %.1f ms per step\n", r.ranks,
                  1e3 * r.allreduce_s);
    }
    if (!r.model_dir.empty()) std::printf("\nmodel: %s\n", r.model_dir.c_str());
  }
  return r.stopped_by_signal ? 128 + r.stopped_by_signal : 0;
}

}  // namespace

nlohmann::json train_result_json(const TrainResult& r) {
  return {{"steps", r.steps_done},
          {"train_loss", r.final_train_loss},
          {"val_loss", r.final_val_loss},
          {"val_ppl", r.final_val_ppl},
          {"seconds", r.seconds},
          {"tokens_per_second", r.tokens_per_second},
          {"peak_rss_bytes", r.peak_rss_bytes},
          {"model_dir", r.model_dir},
          {"tokens", r.tokens},
          {"base_tokens", r.base_tokens},
          {"stopped_by_signal", r.stopped_by_signal},
          {"ranks", r.ranks},
          {"step_seconds", {{"forward", r.forward_s}, {"backward", r.backward_s},
                            {"optimizer", r.optimizer_s}, {"allreduce", r.allreduce_s}}}};
}

Command command_train() {
  return {"train", "pretrain (or with --init-from fine-tune) a LLaMA-style decoder on the prepared corpus (checkpoints, resume, metrics.jsonl)",
          "outq train --config configs/tiny.toml --set train.run_dir=runs/tiny   (2 ranks: add --nproc 2)", add_options, run};
}

}  // namespace outq::app
