// Local launcher of data-parallel ranks (see rank_launcher.h).
#include "rank_launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
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

namespace {

using Environment = std::vector<std::pair<std::string, std::string>>;

// Starts this program with `arguments` and the variables `env` added, its stdout into
// `stdout_path` when given. The child gets SIGTERM when this process dies (a killed launcher or
// study leaves no training behind: SIGTERM makes it stop after a step with a checkpoint).
pid_t spawn_self(const std::vector<std::string>& arguments, const Environment& env, const std::string& stdout_path,
                 const std::string& what) {
  std::vector<std::string> args = {"/proc/self/exe"};
  args.insert(args.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) std::_Exit(128 + SIGTERM);  // the parent died before prctl
    for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
    if (!stdout_path.empty()) {
      const int fd = ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0 || ::dup2(fd, STDOUT_FILENO) < 0) {
        std::fprintf(stderr, "outq: error: %s: cannot write %s: %s\n", what.c_str(), stdout_path.c_str(), std::strerror(errno));
        std::_Exit(127);
      }
    }
    ::execv(argv[0], argv.data());
    std::fprintf(stderr, "outq: error: %s: cannot start %s: %s\n", what.c_str(), argv[0], std::strerror(errno));
    std::_Exit(127);
  }
  if (pid < 0) throw Error(what + ": cannot start: " + std::strerror(errno));
  return pid;
}

// Waits for the children `pids` (named `names`), passing SIGINT / SIGTERM on. When one fails the
// others get `grace` to stop on their own, then are killed. Returns the exit code: 0 when all
// succeeded, else the first failing child's.
int supervise(const std::vector<pid_t>& pids, const std::vector<std::string>& names, std::chrono::seconds grace) {
  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = on_launcher_signal;
  sigemptyset(&sa.sa_mask);
  g_signal = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  std::vector<int> status(pids.size(), -1);
  int first_failure = -1, forwarded = 0;
  size_t running = pids.size();
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
            log_warn("{} stopped ({}); waiting up to {} s for the others to stop", names[r], describe(st), grace.count());
          }
          deadline = std::chrono::steady_clock::now() + grace;
        }
      }
      continue;
    }
    if (first_failure >= 0 && std::chrono::steady_clock::now() > deadline) {
      for (size_t r = 0; r < pids.size(); ++r) {
        if (status[r] < 0) {
          log_warn("{} did not stop within {} s; killing it", names[r], grace.count());
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
  if (!forwarded && pids.size() > 1)
    log_warn("{} failed ({}); the run stopped", names[static_cast<size_t>(first_failure)],
             describe(status[static_cast<size_t>(first_failure)]));
  return code;
}

}  // namespace

int launch_local_ranks(int nproc, const std::vector<std::string>& arguments, std::chrono::seconds grace) {
  OUTQ_CHECK(!std::getenv("RANK") && !std::getenv("WORLD_SIZE"), "outq train --nproc: RANK / WORLD_SIZE are already set "
             "(another launcher started this process); expected either --nproc or a launcher, not both");
  const char* port_env = std::getenv("MASTER_PORT");
  const std::string port = port_env ? port_env : std::to_string(free_loopback_port());
  log_info("launching {} data-parallel ranks (rendezvous 127.0.0.1:{})", nproc, port);
  std::vector<pid_t> pids;
  std::vector<std::string> names;
  for (int r = 0; r < nproc; ++r) {
    const Environment env = {{"RANK", std::to_string(r)},          {"LOCAL_RANK", std::to_string(r)},
                             {"WORLD_SIZE", std::to_string(nproc)}, {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
                             {"MASTER_ADDR", "127.0.0.1"},          {"MASTER_PORT", port}};
    names.push_back("rank " + std::to_string(r));
    try {
      pids.push_back(spawn_self(arguments, env, "", "outq train --nproc: " + names.back()));
    } catch (const Error&) {
      for (pid_t p : pids) ::kill(p, SIGKILL);
      for (pid_t p : pids) ::waitpid(p, nullptr, 0);
      throw;
    }
  }
  return supervise(pids, names, grace);
}

int run_self(const std::vector<std::string>& arguments, const std::string& stdout_path, const std::string& what) {
  return supervise({spawn_self(arguments, {}, stdout_path, what)}, {what}, std::chrono::seconds(0));
}

}  // namespace outq::app
