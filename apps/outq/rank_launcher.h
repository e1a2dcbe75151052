// `outq train --nproc N`: runs this program N times on this machine as data-parallel ranks
// 0..N-1, with the variables a torchrun-style launcher sets (RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT), and supervises them: SIGINT/SIGTERM are
// passed on (the ranks agree to stop after one step and rank 0 writes a resumable checkpoint);
// when a rank fails the others are given `grace` to stop on their own, then killed. A rank whose
// launcher dies gets SIGTERM (and stops the same way).
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace outq::app {

/// Runs `arguments` (argv without the program, and without --nproc) as `nproc` ranks; returns
/// the exit code: 0 when every rank succeeded, else the first failing rank's.
int launch_local_ranks(int nproc, const std::vector<std::string>& arguments, std::chrono::seconds grace);

/// Runs this program with `arguments` (e.g. a study's training stage as `train --nproc N`) as
/// one child, its stdout into `stdout_path`, SIGINT / SIGTERM passed on; returns its exit code.
/// `what` names it in errors.
int run_self(const std::vector<std::string>& arguments, const std::string& stdout_path, const std::string& what);

/// `arguments` without "--nproc N" / "--nproc=N".
std::vector<std::string> without_nproc(const std::vector<std::string>& arguments);

}  // namespace outq::app
