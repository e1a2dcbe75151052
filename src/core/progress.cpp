// Progress line rendering (see progress.h for the policy on terminals versus logs).
#include "outq/core/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "outq/core/table.h"

namespace outq {

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
  const char* env = std::getenv("OUTQ_PROGRESS");
  enabled_ = !(env && std::strcmp(env, "off") == 0);
  tty_ = isatty(fileno(stderr)) && !(env && std::strcmp(env, "plain") == 0);
}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n) {
  done_ += n;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const auto interval = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(10000);
  std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock() || finished_ || now - last_draw_ < interval) return;
  last_draw_ = now;
  render(false);
}

void Progress::set_note(std::string note) {
  std::lock_guard<std::mutex> lock(mutex_);
  note_ = std::move(note);
}

void Progress::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  finished_ = true;
  if (enabled_) render(true);
}

std::string Progress::status_line() const {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t done = done_.load();
  const double rate = elapsed > 0 ? done / elapsed : 0.0;
  std::string line = label_ + ": " + format_count(done);
  if (total_ > 0) {
    line += fmt::format("/{} {} ({:.0f}%)", format_count(total_), unit_,
                        100.0 * static_cast<double>(done) / static_cast<double>(total_));
  } else {
    line += " " + unit_;
  }
  line += fmt::format("  {:.1f} {}/s  elapsed {}", rate, unit_, format_duration(elapsed));
  if (total_ > 0 && done > 0 && done < total_) {
    line += "  ETA " + format_duration(static_cast<double>(total_ - done) / rate);
  }
  if (!note_.empty()) line += "  " + note_;
  return line;
}

void Progress::render(bool final) {
  const std::string line = status_line();
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

}  // namespace outq
