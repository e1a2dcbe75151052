// Implementation of the test helpers (synthetic corpus, shell runner).
#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <random>
#include <vector>

namespace outq::test {

std::string synthetic_text(int docs, int paragraphs, unsigned seed) {
  static const std::vector<std::string> words = {
      "the", "model", "quantized", "weights", "channel", "outlier", "token", "layer", "of",
      "and", "a", "to", "in", "is", "activation", "scale", "integer", "range", "clip",
      "training", "loss", "small", "large", "value", "with", "every", "sentence", "has",
      "words", "café", "naïve", "1961", "data", "(", ")", ",", "."};
  std::mt19937 rng(seed);
  std::string out;
  for (int d = 0; d < docs; ++d) {
    for (int p = 0; p < paragraphs; ++p) {
      const int n = 8 + static_cast<int>(rng() % 20);
      for (int w = 0; w < n; ++w) out += (w ? " " : "") + words[rng() % words.size()];
      out += ".\n";
    }
    out += "\n";  // blank line: document boundary
  }
  return out;
}

RunResult run_shell(const std::string& command, const std::map<std::string, std::string>& env) {
  char tmpl_out[] = "/tmp/outq-run-out-XXXXXX";
  char tmpl_err[] = "/tmp/outq-run-err-XXXXXX";
  ::close(::mkstemp(tmpl_out));
  ::close(::mkstemp(tmpl_err));
  std::string prefix;
  for (const auto& [k, v] : env) prefix += k + "='" + v + "' ";
  const std::string full = prefix + command + " </dev/null >" + tmpl_out + " 2>" + tmpl_err;
  const int status = std::system(full.c_str());
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text(tmpl_out), read_text(tmpl_err)};
  ::unlink(tmpl_out);
  ::unlink(tmpl_err);
  return r;
}

std::map<int64_t, double> metrics_by_step(const std::string& run_dir, const char* type, const char* key) {
  std::map<int64_t, double> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["type"] == type) out[j["step"].get<int64_t>()] = j[key].get<double>();
  }
  return out;
}

int spawn_shell(const std::string& command, const std::map<std::string, std::string>& env) {
  std::string prefix;
  for (const auto& [k, v] : env) prefix += k + "='" + v + "' ";
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string full = "exec env " + prefix + command + " </dev/null >/dev/null 2>&1";
    ::execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

int wait_process(int pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace outq::test
