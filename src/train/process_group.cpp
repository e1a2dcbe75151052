// c10d process groups for data-parallel training (see process_group.h): TCPStore rendezvous,
// ProcessGroupGloo collectives, and every c10d/Gloo failure turned into one outq::Error.
#define USE_C10D_GLOO 1
#include "outq/train/process_group.h"

#include <fmt/format.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <thread>

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "outq/core/error.h"

namespace outq {
namespace {

// An environment variable as an integer in [lo, hi]; `fallback` when unset.
int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || errno != 0 || x < lo || x > hi) {
    fail_mismatch("environment", name, fmt::format("an integer in [{}, {}]", lo, hi), fmt::format("\"{}\"", v));
  }
  return static_cast<int>(x);
}

// The first line of an exception's message (c10::Error without its backtrace).
std::string first_line(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string m = c10 ? c10->what_without_backtrace() : e.what();
  const auto nl = m.find('\n');
  return nl == std::string::npos ? m : m.substr(0, nl);
}

c10d::ReduceOp reduce_op(ProcessGroup::Op op) {
  switch (op) {
    case ProcessGroup::Op::kSum: return c10d::ReduceOp::SUM;
    case ProcessGroup::Op::kMin: return c10d::ReduceOp::MIN;
    case ProcessGroup::Op::kMax: return c10d::ReduceOp::MAX;
  }
  return c10d::ReduceOp::SUM;
}

bool is_loopback(const std::string& addr) { return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1"; }

}  // namespace

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  OUTQ_CHECK(fd >= 0, "cannot open a socket to find a free port: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  OUTQ_CHECK(ok, "cannot find a free TCP port on 127.0.0.1 (set MASTER_PORT)");
  return ntohs(a.sin_port);
}

RankInfo rank_info_from_environment() {
  RankInfo r;
  r.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  if (r.world_size == 1) return r;
  OUTQ_CHECK(std::getenv("RANK"), "environment: WORLD_SIZE=", r.world_size, " is set but RANK is not; expected both "
             "(as torchrun or `outq train --nproc N` set them)");
  r.rank = env_int("RANK", 0, 0, r.world_size - 1);
  r.local_rank = env_int("LOCAL_RANK", r.rank, 0, r.world_size - 1);
  const char* addr = std::getenv("MASTER_ADDR");
  OUTQ_CHECK(addr && *addr, "environment: MASTER_ADDR: expected the address of rank 0's machine, found it unset");
  r.master_addr = addr;
  OUTQ_CHECK(std::getenv("MASTER_PORT"), "environment: MASTER_PORT: expected the rendezvous port, found it unset");
  r.master_port = env_int("MASTER_PORT", 0, 1, 65535);
  return r;
}

struct PendingCollective::Impl {
  c10::intrusive_ptr<c10d::Work> work;
  std::string what;
  const ProcessGroup* group;
};

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
};

namespace {
[[noreturn]] void fail_collective(const ProcessGroup& g, const std::string& what, const std::exception& e) {
  throw Error(fmt::format("distributed training: {} failed on rank {} of {}: {}. Expected every rank to take part: a rank "
                          "exited or was killed, the network failed, or a rank did not get there within "
                          "train.dist_timeout_s = {}", what, g.rank(), g.size(), first_line(e),
                          std::chrono::duration<double>(g.timeout()).count()));
}
}  // namespace

PendingCollective::PendingCollective(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PendingCollective::~PendingCollective() = default;
PendingCollective::PendingCollective(PendingCollective&&) noexcept = default;

void PendingCollective::wait() {
  try {
    impl_->work->wait();
  } catch (const std::exception& e) {
    fail_collective(*impl_->group, impl_->what, e);
  }
}

ProcessGroup::ProcessGroup(RankInfo info, std::chrono::milliseconds timeout, std::unique_ptr<Impl> impl)
    : info_(std::move(info)), timeout_(timeout), impl_(std::move(impl)) {}
ProcessGroup::~ProcessGroup() = default;

std::unique_ptr<ProcessGroup> ProcessGroup::connect(const RankInfo& info, std::chrono::milliseconds timeout,
                                                    const torch::Device& device) {
  OUTQ_CHECK(!device.is_cuda(), "train.device = \"", device.str(), "\" with ", info.world_size, " ranks: expected "
             "NCCL, which needs a CUDA build of LibTorch (this one is CPU-only); use train.device = \"cpu\" (Gloo)");
  auto impl = std::make_unique<Impl>();
  const std::string where = fmt::format("{}:{}", info.master_addr, info.master_port);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(info.master_port);
    so.isServer = info.rank == 0;
    so.numWorkers = static_cast<size_t>(info.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    impl->store = c10::make_intrusive<c10d::TCPStore>(info.master_addr, so);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME")) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (is_loopback(info.master_addr)) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    impl->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, info.rank, info.world_size, options);
  } catch (const std::exception& e) {
    throw Error(fmt::format("distributed training: rank {} of {} could not join the group at {} within {} s: {}. "
                            "Expected all {} ranks to start and reach MASTER_ADDR:MASTER_PORT (rank 0 listens there)",
                            info.rank, info.world_size, where, std::chrono::duration<double>(timeout).count(),
                            first_line(e), info.world_size));
  }
  return std::unique_ptr<ProcessGroup>(new ProcessGroup(info, timeout, std::move(impl)));
}

void ProcessGroup::all_reduce(torch::Tensor& t, Op op, const char* what) {
  std::vector<torch::Tensor> ts{t};
  try {
    impl_->pg->allreduce(ts, c10d::AllreduceOptions{reduce_op(op)})->wait();
  } catch (const std::exception& e) {
    fail_collective(*this, what, e);
  }
}

PendingCollective ProcessGroup::all_reduce_async(torch::Tensor& t, const char* what) {
  std::vector<torch::Tensor> ts{t};
  auto p = std::make_unique<PendingCollective::Impl>();
  p->what = what;
  p->group = this;
  try {
    p->work = impl_->pg->allreduce(ts);
  } catch (const std::exception& e) {
    fail_collective(*this, what, e);
  }
  return PendingCollective(std::move(p));
}

torch::Tensor ProcessGroup::all_gather_rows(const torch::Tensor& t, const char* what) {
  std::vector<torch::Tensor> in{t.contiguous()};
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < size(); ++r) out[0].push_back(torch::empty_like(in[0]));
  try {
    impl_->pg->allgather(out, in)->wait();
  } catch (const std::exception& e) {
    fail_collective(*this, what, e);
  }
  return torch::cat(out[0], 0);
}

void ProcessGroup::barrier(const char* what) {
  try {
    impl_->pg->barrier()->wait();
  } catch (const std::exception& e) {
    fail_collective(*this, what, e);
  }
}

void ProcessGroup::check_same(uint64_t value, const std::string& what) {
  auto lo = torch::tensor({static_cast<int64_t>(value)}, torch::kInt64), hi = lo.clone();
  all_reduce(lo, Op::kMin, "checking that every rank has the same settings");
  all_reduce(hi, Op::kMax, "checking that every rank has the same settings");
  OUTQ_CHECK(lo.item<int64_t>() == hi.item<int64_t>(), "distributed training: the ranks differ in ", what,
             "; expected every rank to run with the same configuration, data and checkpoint");
}

void ProcessGroup::store_set(const std::string& key, const std::string& value) {
  try {
    impl_->store->set(key, std::vector<uint8_t>(value.begin(), value.end()));
  } catch (const std::exception& e) {
    fail_collective(*this, "setting " + key + " in the rendezvous store", e);
  }
}

std::string ProcessGroup::store_get(const std::string& key) {
  try {
    const auto v = impl_->store->get(key);
    return std::string(v.begin(), v.end());
  } catch (const std::exception& e) {
    fail_collective(*this, "reading " + key + " from the rendezvous store", e);
  }
}

size_t ProcessGroup::store_wait_any(const std::vector<std::string>& keys, std::chrono::milliseconds timeout,
                                    const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  try {
    for (;;) {
      for (size_t i = 0; i < keys.size(); ++i) {
        if (impl_->store->check({keys[i]})) return i;
      }
      if (std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  } catch (const std::exception& e) {
    fail_collective(*this, what, e);
  }
  throw Error(fmt::format("distributed training: rank {} of {} waited {} s for {} (expected it within that time)", rank(),
                          size(), std::chrono::duration<double>(timeout).count(), what));
}

}  // namespace outq
