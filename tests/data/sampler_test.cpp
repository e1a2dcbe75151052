// Window sampler: determinism from the seed, exact resume from a saved state, bounds, rough
// uniformity, and sequential evaluation windows.
#include <gtest/gtest.h>

#include <numeric>

#include "outq/core/error.h"
#include "outq/data/sampler.h"
#include "test_util.h"

namespace outq {
namespace {

TEST(WindowSampler, SameSeedSameSequenceOtherSeedOther) {
  WindowSampler a(10007, 64, 42), b(10007, 64, 42), c(10007, 64, 43);
  int differ = 0;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t x = a.next();
    EXPECT_EQ(x, b.next());
    differ += x != c.next();
  }
  EXPECT_GT(differ, 990);
}

TEST(WindowSampler, ResumeContinuesExactly) {
  WindowSampler reference(5000, 16, 7);
  std::vector<uint64_t> expected;
  for (int i = 0; i < 300; ++i) expected.push_back(reference.next());

  WindowSampler first(5000, 16, 7);
  for (int i = 0; i < 123; ++i) first.next();
  const SamplerState saved = first.state();
  EXPECT_EQ(saved.drawn, 123u);

  WindowSampler resumed(5000, 16, 7);  // a fresh process
  resumed.restore(saved);
  for (int i = 123; i < 300; ++i) EXPECT_EQ(resumed.next(), expected[i]) << i;

  WindowSampler other_seed(5000, 16, 8);
  EXPECT_THROW(other_seed.restore(saved), Error);
}

TEST(WindowSampler, StartsStayInRangeAndCoverIt) {
  const uint64_t n = 101;
  const int64_t seq = 10;  // starts in [0, 90]
  WindowSampler s(n, seq, 1);
  std::vector<int> hits(n - seq, 0);
  for (int i = 0; i < 91000; ++i) {
    const uint64_t x = s.next();
    ASSERT_LE(x + seq + 1, n);
    ++hits[x];
  }
  // Each of 91 starts expects 1000 hits; a binomial sd is ~31, so 850..1150 is > 4.5 sd.
  for (size_t i = 0; i < hits.size(); ++i) {
    EXPECT_GT(hits[i], 850) << i;
    EXPECT_LT(hits[i], 1150) << i;
  }
}

TEST(WindowSampler, BatchCopiesWindowsFromTheShard) {
  test::TempDir dir;
  std::vector<int32_t> tokens(500);
  std::iota(tokens.begin(), tokens.end(), 0);
  ShardInfo info;
  info.vocab_size = 1000;
  shard_write(dir / "s.bin", tokens, info);
  TokenShard shard(dir / "s.bin");
  WindowSampler s(shard.size(), 7, 3), twin(shard.size(), 7, 3);
  std::vector<int32_t> batch(4 * 8);
  s.next_batch(shard, 4, batch.data());
  for (int b = 0; b < 4; ++b) {
    const auto start = static_cast<int32_t>(twin.next());
    for (int t = 0; t < 8; ++t) EXPECT_EQ(batch[b * 8 + t], start + t);
  }
}

TEST(WindowSampler, TooShortShardIsAnError) {
  EXPECT_THROW(WindowSampler(64, 64, 1), Error);
  EXPECT_NO_THROW(WindowSampler(65, 64, 1));
}

TEST(SequentialWindows, NonOverlappingTargets) {
  EXPECT_EQ(sequential_windows(10, 3, 3), (std::vector<uint64_t>{0, 3, 6}));
  EXPECT_EQ(sequential_windows(9, 3, 3), (std::vector<uint64_t>{0, 3}));
  EXPECT_TRUE(sequential_windows(3, 3, 3).empty());
}

}  // namespace
}  // namespace outq
