// Stage directories keyed by input hashes, and the study-wide progress view.
#include "outq/study/stage_cache.h"

#include <fmt/format.h>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/hash.h"
#include "outq/core/json_file.h"
#include "outq/core/log.h"
#include "outq/core/table.h"

namespace fs = std::filesystem;

namespace outq {

Stage StageCache::stage(const std::string& name, const nlohmann::json& key) const {
  const std::string hash = hex64(fnv1a64(key.dump()));
  return {name, key, hash, root_ / (name + "-" + hash)};
}

std::optional<nlohmann::json> StageCache::result(const Stage& stage) const {
  const fs::path done = stage.dir / "done.json";
  if (!fs::exists(done)) return std::nullopt;
  const nlohmann::json j = json_read_object(done, "study stage record");
  // A record of other inputs (a hash collision, or a directory copied by hand) is not this stage's.
  if (!j.contains("key") || j.at("key") != stage.key || !j.contains("result")) return std::nullopt;
  return j.at("result");
}

void StageCache::finish(const Stage& stage, const nlohmann::json& result) const {
  fs::create_directories(stage.dir);
  write_file_atomic(stage.dir / "done.json",
                    nlohmann::json({{"format", "outq-study-stage"}, {"version", 1}, {"stage", stage.name},
                                    {"key", stage.key}, {"result", result}})
                            .dump(1) +
                        "\n");
}

void StudyProgress::add(const std::string& name, double estimate_seconds, bool cached) {
  stages_.push_back({name, estimate_seconds, cached});
}

double StudyProgress::eta_seconds() const {
  double est_done = 0, took = 0, left = 0;
  for (const auto& s : stages_) {
    if (s.cached) continue;
    if (s.done) {
      est_done += s.estimate;
      took += s.seconds;
    } else {
      left += s.estimate;
    }
  }
  // Rescale by the finished stages' actual / estimated time, within 1/4..4 so one odd stage
  // cannot swing the estimate wildly.
  const double scale = est_done > 0 ? std::clamp(took / est_done, 0.25, 4.0) : 1.0;
  return left * scale;
}

void StudyProgress::begin(size_t index) {
  OUTQ_ASSERT(index < stages_.size(), "study progress: no stage ", index);
  const Entry& s = stages_[index];
  if (s.cached) {
    log_info("study [{}/{}] {}: done earlier (cached)", index + 1, stages_.size(), s.name);
    return;
  }
  log_info("study [{}/{}] {}: starting; study ETA {}", index + 1, stages_.size(), s.name,
           format_duration(eta_seconds()));
}

void StudyProgress::end(size_t index, double seconds) {
  OUTQ_ASSERT(index < stages_.size(), "study progress: no stage ", index);
  Entry& s = stages_[index];
  if (s.cached) return;
  s.done = true;
  s.seconds = seconds;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  log_info("study [{}/{}] {}: done in {}; elapsed {}, ETA {}", index + 1, stages_.size(), s.name,
           format_duration(seconds), format_duration(elapsed), format_duration(eta_seconds()));
}

}  // namespace outq
