// A training run's result as JSON: what `outq train --json` prints and what the study's training
// stages read back from it (when they train on several ranks in a child process) or build in process.
#pragma once

#include <nlohmann/json.hpp>

namespace outq {
struct TrainResult;
}

namespace outq::app {

/// steps, losses, val_ppl, seconds, tokens_per_second, peak_rss_bytes, model_dir, tokens,
/// base_tokens, stopped_by_signal, ranks and step_seconds {forward, backward, optimizer, allreduce}.
nlohmann::json train_result_json(const TrainResult& r);

}  // namespace outq::app
