// Speed measurements shared by `outq bench` and `outq study`: the integer kernels on given shapes
// and formats against LibTorch's float32 matmul, and prefill / decode tokens per second of a model.
// Each time is the median of repeated runs (at least 3, at least min_time seconds) after a warm-up.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/core/table.h"
#include "outq/model/llama.h"
#include "outq/model/token_prefix.h"

namespace outq::app {

struct KernelFormat {
  std::string name;  ///< "w8a8", "w4a8" or "w4a4"
  int wbits, abits;
};
/// "w8a8" / "w4a8" / "w4a4"; anything else is an error naming the valid ones.
KernelFormat parse_kernel_format(const std::string& s);

struct KernelShape {
  std::string name;
  int64_t n, k;
};
/// The linear shapes of `config` ("model") and of LLaMA-7B ("llama7b").
std::vector<KernelShape> kernel_shapes(const ModelConfig& config, const std::vector<std::string>& sets);

/// The active ISA's machine limits (outq/kernels/machine_limits.h) the kernel rates are compared with.
struct KernelPeaks {
  double int8_gops = 0;        ///< the int8 dot-product probe of the active ISA
  double llc_gbs = 0, memory_gbs = 0;  ///< read bandwidth from the last-level cache and from memory
  int64_t llc_bytes = 0;       ///< weights up to this size are read from cache (the LLC's size, else the probe's footprint)
  nlohmann::json json;         ///< every probe: name, what, unit, rate
  std::string int8_name;
  /// Percent of the bound that limits a call: the int8 peak for M > 1, else read bandwidth.
  double percent(int64_t m, double gops, double weight_bytes, double seconds) const;
  /// What "of bound" means, in one sentence for tables.
  std::string bound_text() const;
};
KernelPeaks measure_kernel_peaks(int threads);
/// Rows of a table of the probes.
void add_peak_rows(const nlohmann::json& limits, Table* table);

/// Times y = x W^T on the kernels (activation quantization included) for every shape, M and format;
/// one JSON row each, and a table row each when `table` is given; with `peaks`, the percent of the
/// bound each call runs at.
nlohmann::json bench_kernels(const std::vector<KernelShape>& shapes, const std::vector<int64_t>& ms,
                             const std::vector<KernelFormat>& formats, double min_time, Table* table,
                             const KernelPeaks* peaks = nullptr);

struct ModelSpeed {
  double prefill, decode;  ///< tokens per second
};
/// Prefill of `prefill` random tokens, and greedy decode of `decode` tokens after a cache of
/// `prefix` (if any) and `start` prompt tokens (built before the timing).
ModelSpeed measure_model_speed(Llama& model, int64_t prefill, int64_t decode, double min_time,
                               const TokenPrefix* prefix = nullptr, int64_t start = 1);

}  // namespace outq::app
