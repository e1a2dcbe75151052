// The [train] config section: optimiser, schedule, batch, evaluation and checkpoint settings.
#pragma once

#include <cstdint>
#include <string>

namespace outq {

struct TrainConfig {
  static constexpr const char* kSection = "train";
  /// Keys that change how data-parallel ranks communicate, never what a run computes: left out of
  /// resume checks and cache keys.
  static constexpr const char* kCommunicationKeys[] = {"dist_timeout_s", "dist_bucket_mb", "dist_overlap"};

  std::string run_dir = "runs/train";
  int64_t steps = 500;
  int seq_len = 256;
  int batch_size = 16;  ///< global: with N data-parallel ranks each takes batch_size / N windows
  int grad_accum = 1;
  double lr = 2e-3;
  double min_lr_ratio = 0.1;
  int64_t warmup_steps = 50;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double adam_eps = 1e-8;
  double grad_clip = 1.0;
  bool decay_embeddings_and_norms = false;
  int64_t seed = 1;
  int64_t log_every = 10;
  int64_t eval_every = 100;
  int64_t eval_tokens = 65536;
  int64_t stats_every = 50;
  int64_t stats_tokens = 4096;
  int64_t checkpoint_every = 100;
  int keep_checkpoints = 2;
  int threads = 2;
  std::string device = "cpu";
  int64_t dist_timeout_s = 300;
  double dist_bucket_mb = 25;
  bool dist_overlap = true;

  template <class V>
  void visit(V& v) {
    v("run_dir", run_dir, "directory for checkpoints, metrics.jsonl and the final model");
    v("steps", steps, "optimizer steps");
    v("seq_len", seq_len, "tokens per training window (BOS + seq_len - 1 text tokens)");
    v("batch_size", batch_size, "windows per micro-batch (over all data-parallel ranks together)");
    v("grad_accum", grad_accum, "micro-batches per optimizer step");
    v("lr", lr, "peak learning rate");
    v("min_lr_ratio", min_lr_ratio, "final learning rate as a fraction of lr (cosine decay)");
    v("warmup_steps", warmup_steps, "linear warm-up steps");
    v("weight_decay", weight_decay, "AdamW weight decay (matrices only, see next key)");
    v("beta1", beta1, "AdamW beta1");
    v("beta2", beta2, "AdamW beta2");
    v("adam_eps", adam_eps, "AdamW epsilon");
    v("grad_clip", grad_clip, "clip the global gradient norm to this (0 = off)");
    v("decay_embeddings_and_norms", decay_embeddings_and_norms, "apply weight decay to embeddings and norms too");
    v("seed", seed, "seed for initialisation and batch sampling");
    v("log_every", log_every, "steps between log lines / metrics records");
    v("eval_every", eval_every, "steps between validation evaluations (0 = only at the end)");
    v("eval_tokens", eval_tokens, "validation tokens per evaluation (0 = whole split)");
    v("stats_every", stats_every, "steps between light outlier statistics in metrics.jsonl (0 = off)");
    v("stats_tokens", stats_tokens, "validation tokens the light statistics look at");
    v("checkpoint_every", checkpoint_every, "steps between checkpoints (0 = only at the end)");
    v("keep_checkpoints", keep_checkpoints, "how many recent checkpoints to keep");
    v("threads", threads, "intra-op threads for LibTorch");
    v("device", device, "\"cpu\", or \"cuda\" / \"cuda:N\" with a CUDA build of LibTorch");
    v("dist_timeout_s", dist_timeout_s,
      "data-parallel ranks: seconds to wait for the rendezvous and for any collective before stopping with an error");
    v("dist_bucket_mb", dist_bucket_mb, "data-parallel ranks: gradient bytes per all-reduce bucket (MiB)");
    v("dist_overlap", dist_overlap, "data-parallel ranks: start each bucket's all-reduce during the backward pass");
  }
  void validate() const;

  /// Learning rate at `step` (0-based): linear warm-up to lr, then cosine to lr * min_lr_ratio.
  double lr_at(int64_t step) const;
};

}  // namespace outq
