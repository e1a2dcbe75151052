// Machine-limit probes (machine_limits.h): each probe's loop runs on an OpenMP team, its iteration
// count doubled until the slowest thread takes at least the requested time; the rate counts the
// whole team. The per-ISA loops are in cpu/probes_*.cpp.
#include "outq/kernels/machine_limits.h"

#include <omp.h>

#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "outq/core/error.h"
#include "probes_internal.h"

namespace outq::kernels {
namespace {

struct ProbeSpec {
  const char* name;
  const char* what;
  const char* unit;
  Isa needs;
  double ops_per_iteration;  // counted ops per thread and iteration (2 per multiply-add)
};

ProbeSpec spec(Probe p) {
  switch (p) {
    case Probe::kFmaYmm: return {"fma_ymm", "fp32 vfmadd ymm", "GFLOPS", Isa::kAvx2, 12.0 * 8 * 2};
    case Probe::kFmaZmm: return {"fma_zmm", "fp32 vfmadd zmm", "GFLOPS", Isa::kAvx512Vnni, 12.0 * 16 * 2};
    case Probe::kInt8DotAvx2:
      return {"int8_dot_avx2", "int8 dot step vpmaddubsw + vpmaddwd + vpaddd ymm (saturating)", "GOPS", Isa::kAvx2,
              detail::kStepAccumulators * 32.0 * 2};
    case Probe::kInt8SignAvx2:
      return {"int8_sign_avx2", "exact int8 step vpsignb + vpmaddubsw + vpmaddwd + vpaddd ymm", "GOPS", Isa::kAvx2,
              detail::kStepAccumulators * 32.0 * 2};
    case Probe::kMaddubs: return {"maddubs_ymm", "vpmaddubsw ymm alone (int16 sums)", "GOPS", Isa::kAvx2, 12.0 * 32 * 2};
    case Probe::kMaddwd: return {"maddwd_ymm", "vpmaddwd + vpaddd ymm (int16 pairs)", "GOPS", Isa::kAvx2,
                                   detail::kStepAccumulators * 16.0 * 2};
    case Probe::kVnniYmm: return {"vnni_ymm", "int8 vpdpbusd ymm (AVX-VNNI)", "GOPS", Isa::kAvxVnni, 12.0 * 32 * 2};
    case Probe::kVnniZmm: return {"vnni_zmm", "int8 vpdpbusd zmm (AVX-512 VNNI)", "GOPS", Isa::kAvx512Vnni, 12.0 * 64 * 2};
    case Probe::kAmxInt8: return {"amx_int8", "int8 AMX tdpbsud (4 accumulator tiles)", "GOPS", Isa::kAmxInt8, 4.0 * 16 * 16 * 64 * 2};
    case Probe::kReadMemory: return {"read_memory", "read bandwidth from memory (512 MiB)", "GB/s", Isa::kAvx2, 0};
    case Probe::kReadLlc: return {"read_llc", "read bandwidth, 8 MiB per thread (last-level cache)", "GB/s", Isa::kAvx2, 0};
  }
  return {"?", "?", "?", Isa::kRef, 0};
}

int64_t run_loop(Probe p, int64_t iterations) {
  switch (p) {
    case Probe::kFmaYmm: return static_cast<int64_t>(detail::probe_fma_ymm(iterations));
    case Probe::kFmaZmm: return static_cast<int64_t>(detail::probe_fma_zmm(iterations));
    case Probe::kInt8DotAvx2: return detail::probe_int8dot_avx2(iterations);
    case Probe::kInt8SignAvx2: return detail::probe_int8sign_avx2(iterations);
    case Probe::kMaddubs: return detail::probe_maddubs_avx2(iterations);
    case Probe::kMaddwd: return detail::probe_maddwd_avx2(iterations);
    case Probe::kVnniYmm: return detail::probe_vnni_ymm(iterations);
    case Probe::kVnniZmm: return detail::probe_vnni_zmm(iterations);
    case Probe::kAmxInt8: return detail::probe_amx(iterations);
    default: return 0;
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

bool probe_supported(Probe probe) { return isa_supported(spec(probe).needs); }

ProbeResult probe_run(Probe probe, int threads, double seconds) {
  const ProbeSpec s = spec(probe);
  OUTQ_CHECK(threads >= 1, "machine probe: threads: expected >= 1, found ", threads);
  OUTQ_CHECK(probe_supported(probe), "machine probe ", s.name, ": this CPU lacks ", isa_name(s.needs));
  ProbeResult r{probe, s.name, s.what, s.unit, 0};
  volatile int64_t sink = 0;
  if (probe == Probe::kReadMemory || probe == Probe::kReadLlc) {
    const int64_t bytes = probe == Probe::kReadMemory ? (int64_t{512} << 20) / threads / 128 * 128 : int64_t{8} << 20;
    std::vector<std::vector<uint8_t>> data(threads);
#pragma omp parallel num_threads(threads)
    data[omp_get_thread_num()].assign(bytes, 1);  // each thread touches its own pages first
    for (int64_t passes = 1;; passes *= 2) {
      const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
      for (int64_t i = 0; i < passes; ++i) sink = sink + detail::probe_read_ymm(data[omp_get_thread_num()].data(), bytes);
      const double t = seconds_since(t0);
      if (t >= seconds || passes >= (int64_t{1} << 30)) {
        r.rate = static_cast<double>(bytes) * passes * threads / t / 1e9;
        return r;
      }
    }
  }
  for (int64_t it = 1 << 10;; it *= 2) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    sink = sink + run_loop(probe, it);
    const double t = seconds_since(t0);
    if (t >= seconds || it >= (int64_t{1} << 40)) {
      r.rate = s.ops_per_iteration * static_cast<double>(it) * threads / t / 1e9;
      return r;
    }
  }
}

Probe int8_peak(Isa isa) {
  switch (isa) {
    case Isa::kAmxInt8: return Probe::kAmxInt8;
    case Isa::kAvx512Vnni: return Probe::kVnniZmm;
    case Isa::kAvxVnni: return Probe::kVnniYmm;
    default: return Probe::kInt8DotAvx2;
  }
}

std::vector<ProbeResult> machine_limits(Isa isa, int threads, double seconds) {
  std::vector<Probe> probes;
  if (isa == Isa::kAvx512Vnni || isa == Isa::kAmxInt8)
    probes = {Probe::kFmaZmm, Probe::kVnniZmm};
  else if (isa != Isa::kRef)
    probes = {Probe::kFmaYmm, Probe::kInt8DotAvx2, Probe::kInt8SignAvx2, Probe::kMaddubs, Probe::kMaddwd};
  if (isa == Isa::kAvxVnni) probes.push_back(Probe::kVnniYmm);
  if (isa == Isa::kAmxInt8) probes.push_back(Probe::kAmxInt8);
  if (isa_supported(Isa::kAvx2)) probes.insert(probes.end(), {Probe::kReadMemory, Probe::kReadLlc});
  std::vector<ProbeResult> out;
  for (Probe p : probes) out.push_back(probe_run(p, threads, seconds));
  return out;
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos && colon + 2 <= line.size()) return line.substr(colon + 2);
    }
  return "unknown CPU";
}

int64_t last_level_cache_bytes() {
  int best_level = 0;
  int64_t bytes = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream level_in(dir + "level"), type_in(dir + "type"), size_in(dir + "size");
    int level = 0;
    int64_t value = 0;
    char unit = 0;  // sysfs writes sizes like "32768K"
    std::string type;
    if (!(level_in >> level) || !(type_in >> type) || !(size_in >> value) || type == "Instruction" || value <= 0) continue;
    size_in >> unit;
    const int64_t scale = unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1;
    if (level > best_level) best_level = level, bytes = value * scale;
  }
  return bytes;
}

}  // namespace outq::kernels
