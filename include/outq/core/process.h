// Running an external program (npm, tar, sha256sum) without a shell: arguments are passed as a
// vector, stdout and stderr are captured together, and a program that cannot be started is
// reported as such (exit code 127) rather than as a crash. Also this process's peak memory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace outq {

struct ProcessResult {
  int exit_code = -1;  ///< 127 when the program was not found
  std::string output;  ///< stdout and stderr, interleaved
};

/// Runs argv[0] (looked up on PATH) with the given arguments and waits for it.
ProcessResult process_run(const std::vector<std::string>& argv);

/// True if `program` is found on PATH.
bool program_on_path(const std::string& program);

/// Peak resident set size of this process so far, in bytes.
int64_t peak_rss_bytes();

}  // namespace outq
