// TrainConfig validation and the learning-rate schedule.
#include "outq/train/train_config.h"

#include <cmath>

#include "outq/core/error.h"

namespace outq {

void TrainConfig::validate() const {
  OUTQ_CHECK(!run_dir.empty(), "train.run_dir: expected a directory, found an empty string");
  OUTQ_CHECK(steps >= 1, "train.steps: expected >= 1, found ", steps);
  OUTQ_CHECK(seq_len >= 2, "train.seq_len: expected >= 2, found ", seq_len);
  OUTQ_CHECK(batch_size >= 1, "train.batch_size: expected >= 1, found ", batch_size);
  OUTQ_CHECK(grad_accum >= 1, "train.grad_accum: expected >= 1, found ", grad_accum);
  OUTQ_CHECK(lr > 0 && std::isfinite(lr), "train.lr: expected a positive number, found ", lr);
  OUTQ_CHECK(min_lr_ratio >= 0 && min_lr_ratio <= 1, "train.min_lr_ratio: expected a value in [0, 1], found ", min_lr_ratio);
  OUTQ_CHECK(warmup_steps >= 0, "train.warmup_steps: expected >= 0, found ", warmup_steps);
  OUTQ_CHECK(weight_decay >= 0, "train.weight_decay: expected >= 0, found ", weight_decay);
  OUTQ_CHECK(beta1 >= 0 && beta1 < 1, "train.beta1: expected a value in [0, 1), found ", beta1);
  OUTQ_CHECK(beta2 >= 0 && beta2 < 1, "train.beta2: expected a value in [0, 1), found ", beta2);
  OUTQ_CHECK(adam_eps > 0, "train.adam_eps: expected > 0, found ", adam_eps);
  OUTQ_CHECK(grad_clip >= 0, "train.grad_clip: expected >= 0 (0 = off), found ", grad_clip);
  OUTQ_CHECK(log_every >= 1, "train.log_every: expected >= 1, found ", log_every);
  OUTQ_CHECK(eval_every >= 0, "train.eval_every: expected >= 0, found ", eval_every);
  OUTQ_CHECK(eval_tokens >= 0, "train.eval_tokens: expected >= 0, found ", eval_tokens);
  OUTQ_CHECK(stats_every >= 0, "train.stats_every: expected >= 0, found ", stats_every);
  OUTQ_CHECK(stats_tokens >= seq_len, "train.stats_tokens: expected at least train.seq_len = ", seq_len, ", found ", stats_tokens);
  OUTQ_CHECK(checkpoint_every >= 0, "train.checkpoint_every: expected >= 0, found ", checkpoint_every);
  OUTQ_CHECK(keep_checkpoints >= 1, "train.keep_checkpoints: expected >= 1, found ", keep_checkpoints);
  OUTQ_CHECK(threads >= 1 && threads <= 256, "train.threads: expected an integer in [1, 256], found ", threads);
  OUTQ_CHECK(device == "cpu" || device == "cuda" || device.rfind("cuda:", 0) == 0,
             "train.device: expected \"cpu\", \"cuda\" or \"cuda:N\", found \"", device, "\"");
  OUTQ_CHECK(dist_timeout_s >= 1, "train.dist_timeout_s: expected >= 1, found ", dist_timeout_s);
  OUTQ_CHECK(dist_bucket_mb > 0 && std::isfinite(dist_bucket_mb), "train.dist_bucket_mb: expected a positive size, found ",
             dist_bucket_mb);
}

double TrainConfig::lr_at(int64_t step) const {
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const int64_t decay_steps = steps - warmup_steps;
  if (decay_steps <= 0) return lr;
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine);
}

}  // namespace outq
