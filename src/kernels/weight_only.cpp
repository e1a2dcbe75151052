// Weight-only GEMM driver (argument checks, group sums of x, column blocks over the OpenMP team)
// and the scalar reference implementation every vector path must match bit for bit.
#include "outq/kernels/weight_only.h"

#include <omp.h>

#include <cmath>
#include <sstream>
#include <vector>

#include "outq/core/error.h"
#include "weight_only_internal.h"

namespace outq::kernels {
namespace detail {

void weight_only_blocks_ref(const WeightOnlyArguments& args, const float* xsum, int64_t b0, int64_t b1) {
  const PackedWeights& w = *args.w;
  const int64_t groups = w.groups();
  for (int64_t b = b0; b < b1; ++b) {
    for (int64_t lane = 0; lane < PackedWeights::kBlock; ++lane) {
      const int64_t c = b * PackedWeights::kBlock + lane;
      if (c >= w.n) break;
      for (int64_t r = 0; r < args.m; ++r) {
        const float* x = args.x + r * args.ldx;
        float out = 0;
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t k0 = g * w.group_size, k1 = std::min(w.k, k0 + w.group_size);
          float d = 0;
          for (int64_t k = k0; k < k1; ++k) d = std::fma(x[k], static_cast<float>(packed_weight_code(w, b, lane, k)), d);
          const float t = std::fma(-static_cast<float>(w.zero[w.at(c, g)]), xsum[r * groups + g], d);
          out = std::fma(w.scale[w.at(c, g)], t, out);
        }
        args.y[r * args.ldy + c] = out + (args.bias ? args.bias[c] : 0.0f);
      }
    }
  }
}

}  // namespace detail

std::string can_implement(const WeightOnlyArguments& args) {
  std::ostringstream why;
  if (!args.x || !args.w || !args.y) return "expected activations, weights and an output buffer (one is null)";
  const auto& w = *args.w;
  if (w.version != PackedWeights::kVersion)
    why << "packed weights format version " << w.version << ", expected " << PackedWeights::kVersion;
  else if (w.bits != 8 && w.bits != 4)
    why << "weight bits " << w.bits << ", expected 8 or 4";
  else if (!w.bounds.empty())
    why << "uneven weight groups (packed for per-embedding-group activations), expected uniform groups";
  else if (w.data.size() != static_cast<size_t>(w.blocks() * w.block_bytes()) ||
           w.scale.size() != static_cast<size_t>(w.blocks() * PackedWeights::kBlock * w.groups()))
    why << "packed weights of " << w.n << " x " << w.k << " have inconsistent buffer sizes";
  else if (args.m < 0 || args.ldx < w.k)
    why << "activations: expected m >= 0 and a row stride of at least k = " << w.k << ", found m = " << args.m
        << ", stride " << args.ldx;
  else if (args.ldy < w.n)
    why << "output row stride " << args.ldy << " is smaller than n = " << w.n;
  return why.str();
}

void gemm_weight_only(const WeightOnlyArguments& args, Isa isa) {
  const std::string problem = can_implement(args);
  OUTQ_CHECK(problem.empty(), "weight-only GEMM: ", problem);
  OUTQ_CHECK(isa_supported(isa), "weight-only GEMM: this CPU cannot run the ", isa_name(isa), " kernels");
  if (args.m == 0) return;
  const PackedWeights& w = *args.w;
  // Group sums of x (the zero-point term), once per call, in increasing k as every path expects.
  const int64_t groups = w.groups();
  thread_local std::vector<float> xsum;
  xsum.assign(static_cast<size_t>(args.m * groups), 0.0f);
  for (int64_t r = 0; r < args.m; ++r) {
    const float* x = args.x + r * args.ldx;
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0;
      for (int64_t k = g * w.group_size; k < std::min(w.k, (g + 1) * w.group_size); ++k) s += x[k];
      OUTQ_CHECK(std::isfinite(s), "weight-only GEMM: row ", r, " holds NaN or infinite values; expected finite activations");
      xsum[static_cast<size_t>(r * groups + g)] = s;
    }
  }
  auto* fn = isa == Isa::kAmxInt8 || isa == Isa::kAvx512Vnni ? detail::weight_only_blocks_avx512
             : isa == Isa::kAvx2 || isa == Isa::kAvxVnni   ? detail::weight_only_blocks_avx2
                                                             : detail::weight_only_blocks_ref;
  const float* sums = xsum.data();
  const int64_t blocks = w.blocks();
  const bool parallel = blocks > 1 && args.m * w.n * w.k >= (int64_t{1} << 18);
#pragma omp parallel if (parallel)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
    if (b0 < b1) fn(args, sums, b0, b1);
  }
}

}  // namespace outq::kernels
