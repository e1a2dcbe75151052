// Machine-limit probes: every probe this CPU supports runs and reports a positive rate in its
// unit; the int8 peak of each ISA is the probe of the instruction its GEMM uses; an unsupported
// probe or a team of 0 threads is one clear error. (Rates themselves are measurements, recorded in
// docs/benchmarks.md, not asserted.)
#include <gtest/gtest.h>

#include <fstream>

#include "outq/core/error.h"
#include "outq/kernels/machine_limits.h"

namespace outq::kernels {
namespace {

TEST(MachineLimits, EverySupportedProbeRuns) {
  int ran = 0;
  for (int p = 0; p <= static_cast<int>(Probe::kInt8SignAvx2); ++p) {
    const auto probe = static_cast<Probe>(p);
    if (!probe_supported(probe)) {
      EXPECT_THROW(probe_run(probe, 1, 0.001), Error);
      continue;
    }
    const ProbeResult r = probe_run(probe, 1, 0.001);
    EXPECT_GT(r.rate, 0.0) << r.name;
    EXPECT_TRUE(r.unit == "GOPS" || r.unit == "GFLOPS" || r.unit == "GB/s") << r.unit;
    ++ran;
  }
  if (isa_supported(Isa::kAvx2)) {
    EXPECT_GE(ran, 7);
  }
  EXPECT_THROW(probe_run(Probe::kFmaYmm, 0, 0.001), Error);
}

TEST(MachineLimits, Int8PeakFollowsTheIsa) {
  EXPECT_EQ(int8_peak(Isa::kAvx2), Probe::kInt8DotAvx2);
  EXPECT_EQ(int8_peak(Isa::kAvxVnni), Probe::kVnniYmm);
  EXPECT_EQ(int8_peak(Isa::kAvx512Vnni), Probe::kVnniZmm);
  EXPECT_EQ(int8_peak(Isa::kAmxInt8), Probe::kAmxInt8);
  for (Isa isa : isa_available()) {
    if (isa == Isa::kRef) continue;
    bool has_peak = false;
    for (const auto& r : machine_limits(isa, 1, 0.001)) has_peak |= r.probe == int8_peak(isa);
    EXPECT_TRUE(has_peak) << isa_name(isa);
  }
  EXPECT_NE(cpu_model_name(), "");
}

TEST(MachineLimits, LastLevelCacheSizeComesFromSysfs) {
  // Where Linux describes CPU 0's caches, the outermost data cache has a size in whole KiB.
  const int64_t bytes = last_level_cache_bytes();
  if (std::ifstream("/sys/devices/system/cpu/cpu0/cache/index0/size")) {
    EXPECT_GT(bytes, 0);
    EXPECT_EQ(bytes % 1024, 0);
  } else {
    EXPECT_EQ(bytes, 0);
  }
}

}  // namespace
}  // namespace outq::kernels
