// Data-parallel ranks on c10d, the process groups PyTorch's DDP is built on: rendezvous through a
// TCPStore at MASTER_ADDR:MASTER_PORT (rank 0 serves it), collectives over ProcessGroupGloo on
// CPU (NCCL where LibTorch has CUDA; see docs/distributed.md). Every failure of a peer (a rank that
// died, a network error, a collective that did not complete within the timeout) becomes one
// outq::Error naming the operation, so no rank hangs past the timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace outq {

/// Where this process sits among the ranks, as torchrun-style launchers describe it.
struct RankInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool distributed() const { return world_size > 1; }
};

/// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without WORLD_SIZE (or with
/// WORLD_SIZE=1) this is a single process. A malformed or inconsistent value is an outq::Error
/// naming the variable.
RankInfo rank_info_from_environment();

/// A TCP port free on 127.0.0.1 now (the kernel's choice), for a rendezvous on this machine.
int free_loopback_port();

/// One in-flight collective.
class PendingCollective {
 public:
  struct Impl;
  explicit PendingCollective(std::unique_ptr<Impl> impl);
  ~PendingCollective();
  PendingCollective(PendingCollective&&) noexcept;
  /// Waits for completion; a failed or timed-out collective throws outq::Error.
  void wait();

 private:
  std::unique_ptr<Impl> impl_;
};

class ProcessGroup {
 public:
  enum class Op { kSum, kMin, kMax };

  /// Joins the group described by `info` (all ranks must call it). `timeout` bounds the
  /// rendezvous and every collective. `device` is "cpu" (Gloo) or a CUDA device (NCCL, only with
  /// a CUDA build of LibTorch).
  static std::unique_ptr<ProcessGroup> connect(const RankInfo& info, std::chrono::milliseconds timeout,
                                               const torch::Device& device);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return info_.rank; }
  int size() const { return info_.world_size; }
  const RankInfo& info() const { return info_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  /// In place over all ranks; `what` names the operation in errors.
  void all_reduce(torch::Tensor& t, Op op, const char* what);
  /// Starts a sum all-reduce of `t` in place (t must stay alive until the wait).
  PendingCollective all_reduce_async(torch::Tensor& t, const char* what);
  /// Rows of every rank's `t` (the same shape everywhere), concatenated in rank order.
  torch::Tensor all_gather_rows(const torch::Tensor& t, const char* what);
  void barrier(const char* what);
  /// Throws outq::Error unless every rank passed the same `value` (a hash of its settings, say).
  void check_same(uint64_t value, const std::string& what);

  /// The rendezvous store, for one-off coordination (e.g. one rank per machine preparing data).
  void store_set(const std::string& key, const std::string& value);
  /// Waits until one of `keys` is set and returns its index; a peer lost or `timeout` reached throws.
  size_t store_wait_any(const std::vector<std::string>& keys, std::chrono::milliseconds timeout, const std::string& what);
  std::string store_get(const std::string& key);

  struct Impl;

 private:
  ProcessGroup(RankInfo info, std::chrono::milliseconds timeout, std::unique_ptr<Impl> impl);
  RankInfo info_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace outq
