// Data-parallel pieces in one process, ranks as threads over real c10d Gloo groups on loopback:
// the bucketed gradient reducer (with and without overlap, one or two micro-batches, tensors
// without gradients, awkward shapes, tiny buckets) against an independent double-precision mean
// of the ranks' gradients; the group's collectives; the environment parsing; and a rendezvous
// that cannot complete failing within its timeout with a clear error.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <thread>

#include "outq/core/error.h"
#include "outq/train/gradient_reducer.h"
#include "outq/train/process_group.h"

namespace outq {
namespace {

// Runs body(group) on `world` threads, one rank each; rethrows the first failure.
void run_ranks(int world, const std::function<void(ProcessGroup&)>& body, int timeout_s = 30) {
  const int port = free_loopback_port();
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        RankInfo info;
        info.rank = r;
        info.local_rank = r;
        info.world_size = world;
        info.master_port = port;
        auto group = ProcessGroup::connect(info, std::chrono::seconds(timeout_s), torch::kCPU);
        body(*group);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Parameters of awkward shapes; the loss of rank r on micro-batch m is a rank-dependent function.
struct Toy {
  std::vector<torch::Tensor> params;
  explicit Toy(uint64_t seed) {
    // The same start on every rank, as training requires. A generator of its own: the ranks are
    // threads here, and seeding and drawing from the global generator would interleave between them.
    auto gen = at::detail::createCPUGenerator(seed);
    for (auto shape : std::vector<std::vector<int64_t>>{{7, 3}, {13}, {1}, {5, 5, 2}, {3, 11}, {4}}) {
      params.push_back(torch::randn(shape, gen).requires_grad_(true));
    }
  }
  // params[4] takes no part (no gradient on any rank), like QAT ranges before qat.start_step.
  torch::Tensor loss(int rank, int micro) const {
    torch::Tensor l = torch::zeros({});
    for (size_t k = 0; k < params.size(); ++k) {
      if (k == 4) continue;
      const auto c = torch::full_like(params[k], 0.3 * (rank + 1) + 0.1 * micro + 0.07 * static_cast<double>(k));
      l = l + (params[k] * c).sin().sum() + (params[k].pow(2) * (rank - 0.5)).sum();
    }
    return l;
  }
};

void check_reducer(int world, int micro_batches, bool overlap, int64_t bucket_bytes) {
  // Reference: every rank's gradient computed separately, averaged in double.
  std::vector<std::vector<torch::Tensor>> per_rank;
  for (int r = 0; r < world; ++r) {
    Toy toy(7);
    for (int m = 0; m < micro_batches; ++m) toy.loss(r, m).backward();
    std::vector<torch::Tensor> g;
    for (auto& p : toy.params) g.push_back(p.grad().defined() ? p.grad().to(torch::kFloat64) : torch::Tensor());
    per_rank.push_back(g);
  }
  std::vector<std::vector<torch::Tensor>> reduced(static_cast<size_t>(world));
  run_ranks(world, [&](ProcessGroup& group) {
    Toy toy(7);
    GradientReducer reducer(toy.params, group, bucket_bytes, overlap);
    for (int m = 0; m < micro_batches; ++m) {
      if (m + 1 == micro_batches) reducer.arm();
      toy.loss(group.rank(), m).backward();
    }
    reducer.finish();
    for (auto& p : toy.params) reduced[static_cast<size_t>(group.rank())].push_back(p.grad());
  });
  for (size_t k = 0; k < per_rank[0].size(); ++k) {
    if (!per_rank[0][k].defined()) {
      for (int r = 0; r < world; ++r) EXPECT_FALSE(reduced[static_cast<size_t>(r)][k].defined()) << "tensor " << k;
      continue;
    }
    torch::Tensor mean = torch::zeros_like(per_rank[0][k]);
    for (int r = 0; r < world; ++r) mean += per_rank[static_cast<size_t>(r)][k];
    mean /= world;
    for (int r = 0; r < world; ++r) {
      const auto got = reduced[static_cast<size_t>(r)][k].to(torch::kFloat64);
      // Two ranks: a float sum of two floats is the double sum rounded once, and halving is exact,
      // so the result is the double mean rounded to float (the tolerance is that one rounding).
      // More ranks round at each partial sum: a few float ulps of the largest term.
      const double tol = world == 2 ? 0 : 4e-7 * (mean.abs().max().item<double>() + 1);
      EXPECT_LE((got - mean.to(torch::kFloat32).to(torch::kFloat64)).abs().max().item<double>(), tol)
          << "tensor " << k << " rank " << r << " world " << world << " overlap " << overlap;
    }
  }
}

TEST(GradientReducer, TwoRanksGiveTheMeanGradientExactly) {
  for (bool overlap : {false, true})
    for (int micro : {1, 2}) check_reducer(2, micro, overlap, 64);  // 64 bytes: many buckets, some of one tensor
}

TEST(GradientReducer, ThreeRanksOneBucketAndOverlap) {
  check_reducer(3, 2, true, 1 << 20);
  check_reducer(3, 1, false, 100);
}

TEST(ProcessGroup, CollectivesOverRanks) {
  run_ranks(3, [](ProcessGroup& g) {
    auto x = torch::tensor({1.0 * g.rank(), 2.0}, torch::kFloat64);
    g.all_reduce(x, ProcessGroup::Op::kSum, "test sum");
    EXPECT_DOUBLE_EQ(x[0].item<double>(), 3.0);
    EXPECT_DOUBLE_EQ(x[1].item<double>(), 6.0);
    auto m = torch::tensor({static_cast<int64_t>(g.rank())});
    g.all_reduce(m, ProcessGroup::Op::kMax, "test max");
    EXPECT_EQ(m.item<int64_t>(), 2);
    const auto rows = g.all_gather_rows(torch::full({2, 3}, static_cast<float>(g.rank())), "test gather");
    ASSERT_EQ(rows.sizes(), (std::vector<int64_t>{6, 3}));
    for (int r = 0; r < 3; ++r) EXPECT_EQ(rows[2 * r + 1][2].item<float>(), static_cast<float>(r));
    g.check_same(42, "the answer");
    try {
      g.check_same(static_cast<uint64_t>(g.rank()), "their rank");
      ADD_FAILURE() << "different values passed check_same";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("the ranks differ in their rank"), std::string::npos) << e.what();
    }
  });
}

TEST(ProcessGroup, ARankThatNeverComesIsAnErrorWithinTheTimeout) {
  RankInfo info;
  info.world_size = 2;
  info.master_port = free_loopback_port();
  const auto t0 = std::chrono::steady_clock::now();
  try {
    ProcessGroup::connect(info, std::chrono::seconds(2), torch::kCPU);
    ADD_FAILURE() << "joined a group of two alone";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0 of 2 could not join the group"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
}

TEST(ProcessGroup, APeerThatLeavesFailsTheCollectiveWithinTheTimeout) {
  std::string message;
  const auto t0 = std::chrono::steady_clock::now();
  run_ranks(2, [&](ProcessGroup& g) {
    if (g.rank() == 1) return;  // leaves: its group is destroyed, closing its connections
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto x = torch::ones({4});
    try {
      g.all_reduce(x, ProcessGroup::Op::kSum, "the test all-reduce");
    } catch (const Error& e) {
      message = e.what();
    }
  }, 5);
  EXPECT_NE(message.find("the test all-reduce failed on rank 0 of 2"), std::string::npos) << message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15));
}

struct EnvGuard {
  std::vector<std::string> names{"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"};
  ~EnvGuard() {
    for (auto& n : names) ::unsetenv(n.c_str());
  }
};

TEST(RankInfo, ReadsTheLauncherVariablesAndNamesABadOne) {
  EnvGuard guard;
  for (auto& n : guard.names) ::unsetenv(n.c_str());
  EXPECT_FALSE(rank_info_from_environment().distributed());
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("RANK", "3", 1);
  ::setenv("MASTER_ADDR", "10.0.0.1", 1);
  ::setenv("MASTER_PORT", "29511", 1);
  const RankInfo r = rank_info_from_environment();
  EXPECT_EQ(r.rank, 3);
  EXPECT_EQ(r.world_size, 4);
  EXPECT_EQ(r.local_rank, 3);
  EXPECT_EQ(r.master_addr, "10.0.0.1");
  EXPECT_EQ(r.master_port, 29511);
  auto expect_error = [](const char* name, const char* value, const char* needle) {
    const char* old = std::getenv(name);
    const std::string saved = old ? old : "";
    ::setenv(name, value, 1);
    try {
      rank_info_from_environment();
      ADD_FAILURE() << name << "=" << value << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    if (old) ::setenv(name, saved.c_str(), 1);
  };
  expect_error("RANK", "4", "RANK: expected an integer in [0, 3], found \"4\"");
  expect_error("RANK", "x1", "RANK: expected an integer");
  expect_error("MASTER_PORT", "70000", "MASTER_PORT: expected an integer in [1, 65535]");
  expect_error("WORLD_SIZE", "0", "WORLD_SIZE: expected an integer in [1,");
  ::unsetenv("MASTER_ADDR");
  try {
    rank_info_from_environment();
    ADD_FAILURE() << "no MASTER_ADDR accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MASTER_ADDR"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace outq
