// Machine-limit probes (see peak_probes.cpp): each returns a value so the work cannot be elided.
#pragma once

#include <cstdint>

namespace outq::bench {

/// 12 x iterations 512-bit vpdpbusd (64 int8 multiply-adds each).
int64_t probe_vnni(int64_t iterations);
/// 4 x iterations AMX tdpbsud (16 x 16 x 64 int8 multiply-adds each).
int64_t probe_amx(int64_t iterations);
/// 12 x iterations 512-bit fp32 FMAs (16 each).
float probe_fma(int64_t iterations);
/// Reads `bytes` (a multiple of 256) with 512-bit loads.
int64_t probe_read(const uint8_t* data, int64_t bytes);

}  // namespace outq::bench
