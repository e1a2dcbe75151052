// Test helpers: a temporary directory that removes itself, file writing, and running the outq
// binary with captured stdout/stderr and extra environment variables.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>

namespace outq::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "outq-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline void write_text(const std::string& path, const std::string& content) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << content;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The message of the exception `f` throws ("" if it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

/// A deterministic English-like corpus: `docs` documents of `paragraphs` paragraphs each.
std::string synthetic_text(int docs, int paragraphs, unsigned seed = 1);

struct RunResult {
  int exit_code;
  std::string out, err;
};

/// Runs `command` (a shell command line) with `env` prepended as VAR=value assignments.
RunResult run_shell(const std::string& command, const std::map<std::string, std::string>& env = {});

/// step -> `key` of the records of `type` ("train", "eval", ...) in run_dir/metrics.jsonl.
std::map<int64_t, double> metrics_by_step(const std::string& run_dir, const char* type, const char* key);

/// Starts `command` in the background (output discarded) and returns its pid; the shell execs the
/// command, so signals sent to the pid reach it.
int spawn_shell(const std::string& command, const std::map<std::string, std::string>& env = {});
/// Waits for a spawned process; returns its exit code, or 128 + signal if it was killed.
int wait_process(int pid);

}  // namespace outq::test
