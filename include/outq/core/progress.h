// Progress reporting for long work: done/total, rate, elapsed and ETA on stderr.
// On a terminal one line is redrawn in place (at most every 100 ms); otherwise (logs, CI) a plain
// line is printed at most every 10 s and at the end. OUTQ_PROGRESS=off silences it entirely.
// advance() is thread-safe, so worker threads may report directly.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace outq {

class Progress {
 public:
  /// `total` <= 0 means unknown (no ETA); `unit` names what is counted ("docs", "tokens").
  Progress(std::string label, int64_t total, std::string unit = "it");
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t n = 1);
  /// A short note appended to the line, e.g. a running metric ("ppl 152.3").
  void set_note(std::string note);
  /// Prints the final line (idempotent; also done by the destructor).
  void finish();
  int64_t done() const { return done_.load(); }

  /// The line that would be shown now, without the carriage return (exposed for tests).
  std::string status_line() const;

 private:
  void render(bool final);

  std::string label_, unit_, note_;
  int64_t total_;
  std::atomic<int64_t> done_{0};
  std::chrono::steady_clock::time_point start_, last_draw_;
  mutable std::mutex mutex_;
  bool tty_, enabled_, finished_ = false;
};

}  // namespace outq
