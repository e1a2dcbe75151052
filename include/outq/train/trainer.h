// Pretraining loop: AdamW with parameter groups, warm-up + cosine schedule, gradient clipping and
// accumulation, validation every N steps, metrics.jsonl, atomic checkpoints (keep last K),
// bit-exact resume, clean stop on SIGINT/SIGTERM, and a clear stop on a NaN/Inf loss.
//
// Run directory:
//   config.json                effective configuration (all sections)
//   metrics.jsonl              one JSON record per log/eval event
//   checkpoints/step-NNNNNNN/  model.safetensors config.json tokenizer.model optimizer.pt
//                              rng.safetensors trainer_state.json (QAT and clamp:
//                              extra.safetensors, the clip values and their optimizer)
//   checkpoints/LATEST         name of the newest complete checkpoint
//   model/                     the final model directory (what `outq eval` reads); QAT modes add
//                              clips.json (the learned clip values or LSQ grids per quantized
//                              linear), weight QAT weight_steps.safetensors
//   curve.png                  training and validation perplexity by step
#pragma once

#include <cstdint>
#include <string>

#include "outq/data/data_config.h"
#include "outq/model/model_config.h"
#include "outq/qat/qat_config.h"
#include "outq/train/train_config.h"

namespace outq {

struct TrainOptions {
  DataConfig data;
  ModelConfig model;
  TrainConfig train;
  QatConfig qat;
  std::string config_json;  ///< effective configuration, saved in the run directory
  bool resume = false;
  /// A trained model directory whose weights start this run (fine-tuning: fresh optimizer and
  /// schedule); its shapes and vocabulary must be this run's.
  std::string init_from;
};

struct TrainResult {
  int64_t steps_done = 0;
  double final_train_loss = 0;
  double final_val_loss = 0;
  double final_val_ppl = 0;
  double seconds = 0;
  double tokens_per_second = 0;
  int64_t peak_rss_bytes = 0;
  /// Mean wall time per optimizer step in each phase (seconds): forward incl. loss, backward,
  /// gradient clipping + AdamW update.
  double forward_s = 0, backward_s = 0, optimizer_s = 0;
  /// Data-parallel ranks: mean seconds per step spent finishing the gradient all-reduce (what the
  /// backward pass did not hide), and the number of ranks.
  double allreduce_s = 0;
  int ranks = 1;
  std::string model_dir;
  int64_t tokens = 0;       ///< training tokens of this run (all its steps, resumed ones included)
  int64_t base_tokens = 0;  ///< those the --init-from model had been trained on (0 without it)
  int stopped_by_signal = 0;  ///< signal number if stopped early, else 0
};

/// Trains (or resumes) as configured. Throws outq::Error on bad input and on a non-finite loss.
TrainResult train_run(const TrainOptions& options);

/// Whether `run_dir` holds a checkpoint that train_run can resume from.
bool train_has_checkpoint(const std::string& run_dir);

}  // namespace outq
