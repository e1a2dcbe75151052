// The stage cache of `outq study` and its progress view.
//
// Each stage's output lives in <root>/<name>-<hash of its inputs>/. A stage is finished when its
// done.json (written last and atomically) holds the same inputs; anything else in the directory is
// work in progress that the stage may resume (training resumes from its checkpoints) or redo. A
// changed input gives a new hash and so a new directory; old ones stay until removed by hand.
#pragma once

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace outq {

struct Stage {
  std::string name;
  nlohmann::json key;  ///< everything the stage's output depends on
  std::string hash;    ///< 16 hex digits of the key
  std::filesystem::path dir;
};

class StageCache {
 public:
  explicit StageCache(std::filesystem::path root) : root_(std::move(root)) {}
  /// The stage `name` with inputs `key` (its directory is not created).
  Stage stage(const std::string& name, const nlohmann::json& key) const;
  /// The result recorded when the stage finished, or nothing if it has not.
  std::optional<nlohmann::json> result(const Stage& stage) const;
  /// Records the stage as finished with `result` (done.json, atomically).
  void finish(const Stage& stage, const nlohmann::json& result) const;
  const std::filesystem::path& root() const { return root_; }

 private:
  std::filesystem::path root_;
};

/// One view over the whole study: "[k/n] stage" lines with the overall ETA. The ETA comes from
/// per-stage estimates, rescaled by how the finished stages compared with theirs.
class StudyProgress {
 public:
  /// Registers a stage; cached stages count as done at no cost.
  void add(const std::string& name, double estimate_seconds, bool cached);
  /// Logs the start of stage `index` (or that it is cached).
  void begin(size_t index);
  /// Logs the end of stage `index`, which took `seconds`.
  void end(size_t index, double seconds);
  size_t size() const { return stages_.size(); }
  /// Estimated seconds left, after the rescaling (exposed for tests).
  double eta_seconds() const;

 private:
  struct Entry {
    std::string name;
    double estimate;
    bool cached, done = false;
    double seconds = 0;
  };
  std::vector<Entry> stages_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace outq
