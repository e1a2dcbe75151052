// The machine's limits the kernels are measured against: register-only loops of the instructions
// each ISA path is built on (fp32 FMA, int8 dot products, vpmaddubsw / vpmaddwd on AVX2, AMX
// tiles) and read bandwidth, run by an OpenMP team for a given time. Used by `outq bench`, the
// study's runtime stage and kernels_bench, so "% of peak" means the same everywhere.
#pragma once

#include <string>
#include <vector>

#include "outq/kernels/isa.h"

namespace outq::kernels {

enum class Probe {
  kFmaYmm,       ///< fp32 vfmadd on ymm (GFLOPS, 2 per lane)
  kFmaZmm,       ///< fp32 vfmadd on zmm
  kInt8DotAvx2,  ///< vpmaddubsw + vpmaddwd + vpaddd: AVX2's int8 -> int32 dot-product step (GOPS, 2 per
                 ///< multiply-add; it saturates for u8 x s8 pairs over 32767, as oneDNN's AVX2 int8 GEMM uses it)
  kMaddubs,      ///< vpmaddubsw alone (int16 results: the int4 path's inner step)
  kMaddwd,       ///< vpmaddwd + vpaddd (int16 pairs -> int32: the AVX2 widened int8 path's step)
  kVnniYmm,      ///< 256-bit vpdpbusd (AVX-VNNI)
  kVnniZmm,      ///< 512-bit vpdpbusd (AVX-512 VNNI)
  kAmxInt8,      ///< AMX tdpbsud on four accumulator tiles
  kReadMemory,   ///< read bandwidth from memory: 512 MiB over the team (GB/s)
  kReadLlc,      ///< read bandwidth from the last-level cache: 8 MiB per thread (where a 4096 x 4096 int8 matrix fits)
  kInt8SignAvx2, ///< vpsignb + vpmaddubsw + vpmaddwd + vpaddd: the exact signed-byte step of AVX2's W8A8 path
};

struct ProbeResult {
  Probe probe;
  std::string name;  ///< short key, e.g. "int8_dot_avx2"
  std::string what;  ///< one line for tables
  std::string unit;  ///< "GOPS", "GFLOPS" or "GB/s"
  double rate = 0;
};

/// Whether this CPU can run the probe.
bool probe_supported(Probe probe);
/// Runs the probe on `threads` threads for about `seconds`; throws outq::Error if unsupported.
ProbeResult probe_run(Probe probe, int threads, double seconds = 0.1);
/// The probes that bound the kernels of `isa` (its widest FMA, its int8 instruction steps, read
/// bandwidth); int8_peak() picks the one its int8 GEMM is measured against.
std::vector<ProbeResult> machine_limits(Isa isa, int threads, double seconds = 0.1);
/// The int8 dot-product probe of `isa`: AVX2's three-instruction step, 256- or 512-bit vpdpbusd, AMX.
Probe int8_peak(Isa isa);
/// "model name" from /proc/cpuinfo (or "unknown CPU").
std::string cpu_model_name();
/// Size of the outermost data cache of CPU 0 from /sys/devices/system/cpu/cpu0/cache (the cache
/// the core shares, e.g. one CCD's L3 on AMD: sysconf reports the whole package there), or 0 when
/// it cannot be read.
int64_t last_level_cache_bytes();

}  // namespace outq::kernels
