// Progress: the status line shows done/total, percentage, rate, elapsed and (mid-way) an ETA;
// concurrent advances are all counted.
#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>
#include <vector>

#include "outq/core/progress.h"

namespace outq {
namespace {

TEST(Progress, StatusLineHasCountsRateElapsedAndEta) {
  ::setenv("OUTQ_PROGRESS", "off", 1);
  Progress p("encoding", 1000, "docs");
  p.advance(250);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const std::string line = p.status_line();
  EXPECT_NE(line.find("encoding: 250/1,000 docs (25%)"), std::string::npos) << line;
  EXPECT_NE(line.find("docs/s"), std::string::npos) << line;
  EXPECT_NE(line.find("elapsed"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA"), std::string::npos) << line;
  p.advance(750);
  EXPECT_EQ(p.status_line().find("ETA"), std::string::npos);  // done: no ETA
}

TEST(Progress, UnknownTotalHasNoEta) {
  ::setenv("OUTQ_PROGRESS", "off", 1);
  Progress p("reading", 0, "lines");
  p.advance(5);
  EXPECT_EQ(p.status_line().find("ETA"), std::string::npos);
  EXPECT_NE(p.status_line().find("reading: 5 lines"), std::string::npos);
}

TEST(Progress, ConcurrentAdvancesAreAllCounted) {
  ::setenv("OUTQ_PROGRESS", "off", 1);
  Progress p("work", 40000);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) p.advance();
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(p.done(), 40000);
}

}  // namespace
}  // namespace outq
