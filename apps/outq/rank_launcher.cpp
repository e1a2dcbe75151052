// Local launcher of data-parallel ranks (see rank_launcher.h).
#include "rank_launcher.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "outq/core/error.h"
#include "outq/core/log.h"
#include "outq/train/process_group.h"

namespace outq::app {
namespace {

std::atomic<int> g_signal{0};
extern "C" void on_launcher_signal(int sig) { g_signal = sig; }

std::string describe(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
                                  strsignal(WTERMSIG(status)) + ")";
  return "status " + std::to_string(status);
}

int exit_code_of(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

}  // namespace

std::vector<std::string> without_nproc(const std::vector<std::string>& arguments) {
  std::vector<std::string> out;
  for (size_t i = 0; i < arguments.size(); ++i) {
    if (arguments[i] == "--nproc") {
      ++i;  // and its value
    } else if (arguments[i].rfind("--nproc=", 0) != 0) {
      out.push_back(arguments[i]);
    }
  }
  return out;
}

int launch_local_ranks(int nproc, const std::vector<std::string>& arguments, std::chrono::seconds grace) {
  OUTQ_CHECK(!std::getenv("RANK") && !std::getenv("WORLD_SIZE"), "outq train --nproc: RANK / WORLD_SIZE are already set "
             "(another launcher started this process); expected either --nproc or a launcher, not both");
  const char* port_env = std::getenv("MASTER_PORT");
  const std::string port = port_env ? port_env : std::to_string(free_loopback_port());
  log_info("launching {} data-parallel ranks (rendezvous 127.0.0.1:{})", nproc, port);

  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = on_launcher_signal;
  sigemptyset(&sa.sa_mask);
  g_signal = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  std::vector<std::string> args = {"/proc/self/exe"};
  args.insert(args.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<pid_t> pids(static_cast<size_t>(nproc), -1);
  std::vector<int> status(static_cast<size_t>(nproc), -1);
  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      ::execv(argv[0], argv.data());
      std::fprintf(stderr, "outq: error: rank %d: cannot start %s: %s\n", r, argv[0], std::strerror(errno));
      std::_Exit(127);
    }
    if (pid < 0) {
      for (pid_t p : pids)
        if (p > 0) ::kill(p, SIGKILL);
      throw Error(std::string("outq train --nproc: cannot start rank ") + std::to_string(r) + ": " + std::strerror(errno));
    }
    pids[static_cast<size_t>(r)] = pid;
  }

  int first_failure = -1, forwarded = 0, running = nproc;
  std::chrono::steady_clock::time_point deadline{};
  while (running > 0) {
    const int sig = g_signal.load();
    if (sig && sig != forwarded) {  // pass Ctrl-C / SIGTERM on (a terminal's Ctrl-C reached them already)
      for (size_t r = 0; r < pids.size(); ++r)
        if (status[r] < 0) ::kill(pids[r], sig);
      forwarded = sig;
    }
    int st = 0;
    const pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid > 0) {
      for (size_t r = 0; r < pids.size(); ++r) {
        if (pids[r] != pid) continue;
        status[r] = st;
        --running;
        if (exit_code_of(st) != 0 && first_failure < 0) {
          first_failure = static_cast<int>(r);
          if (running > 0 && !forwarded) {
            log_warn("rank {} stopped ({}); waiting up to {} s for the other ranks to stop", r, describe(st), grace.count());
          }
          deadline = std::chrono::steady_clock::now() + grace;
        }
      }
      continue;
    }
    if (first_failure >= 0 && std::chrono::steady_clock::now() > deadline) {
      for (size_t r = 0; r < pids.size(); ++r) {
        if (status[r] < 0) {
          log_warn("rank {} did not stop within {} s; killing it", r, grace.count());
          ::kill(pids[r], SIGKILL);
        }
      }
      deadline = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (first_failure < 0) return 0;
  const int code = exit_code_of(status[static_cast<size_t>(first_failure)]);
  if (!forwarded) log_warn("rank {} failed ({}); the run stopped", first_failure, describe(status[static_cast<size_t>(first_failure)]));
  return code;
}

}  // namespace outq::app
