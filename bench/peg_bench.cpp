// Google Benchmark cases for per-embedding-group (PEG) activations and 16-bit integer activations,
// each against its per-tensor 8-bit counterpart on the same shape in the same run:
//   PegLinear/*    static PEG (K groups, channels gathered in permuted order while quantizing, the
//                  group scales folded into the weights, the zero-point terms into a bias) vs K = 0:
//                  static per-tensor activations through the same quantizer + GEMM
//   Int16Linear/*  16-bit integer activations x int8 weights (quantizer + int16 GEMM)
// Rates are GOPS (2 M N K per second).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <random>
#include <vector>

#include "outq/kernels/gemm.h"
#include "outq/kernels/gemm_i16.h"

namespace {

using namespace outq::kernels;

// PEG group boundaries as quant/quantizer.h's peg_bounds: equal groups when K divides C, else
// whole octets.
std::vector<int64_t> bounds(int64_t c, int64_t k) {
  std::vector<int64_t> b(k + 1);
  const int64_t unit = c % k != 0 && c % 8 == 0 && c / 8 >= k ? 8 : 1;
  for (int64_t i = 0; i <= k; ++i) b[i] = unit * (i * (c / unit) / k);
  return b;
}

// Args: M, N, K, PEG groups (0 = static per-tensor), weight bits, ISA.
void PegLinear(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2), groups = state.range(3);
  const int wbits = static_cast<int>(state.range(4));
  const Isa isa = static_cast<Isa>(state.range(5));
  if (!isa_supported(isa)) return state.SkipWithError("ISA not supported here");
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(m * k);
  for (auto& v : x) v = normal(rng);
  std::vector<int32_t> codes(n * k);
  std::uniform_int_distribution<int32_t> code(-(1 << (wbits - 1)), (1 << (wbits - 1)) - 1);
  for (auto& c : codes) c = code(rng);
  ActivationFormat f(8, false, false, 0.03f, 128.0f);
  PackedWeights w;
  const int64_t g = std::max<int64_t>(groups, 1);
  std::vector<float> bias(n, 0.0f), scale(n * g, 0.01f);
  std::vector<int32_t> zero(n * g, 0);
  if (groups > 0) {
    f.peg_bounds = bounds(k, groups);
    f.gather.resize(k);
    std::iota(f.gather.begin(), f.gather.end(), 0);
    std::shuffle(f.gather.begin(), f.gather.end(), rng);
    for (int64_t i = 0; i < groups; ++i) f.peg_scale.push_back(0.02f + 0.01f * i), f.peg_zero.push_back(128.0f - i);
    w = pack_weights(codes.data(), n, k, wbits, true, f.peg_bounds, scale.data(), zero.data());
  } else {
    w = pack_weights(codes.data(), n, k, wbits, true, 0, scale.data(), zero.data());
  }
  QuantizedActivations a;
  std::vector<float, CacheAligned<float>> y(m * n);
  for (auto _ : state) {
    quantize_activations(x.data(), m, k, k, f, w.group_size, &a);
    gemm({&a, &w, bias.data(), y.data(), n}, isa);
    benchmark::ClobberMemory();
  }
  state.counters["GOPS"] = benchmark::Counter(2e-9 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(isa_name(isa)) + (groups > 0 ? " peg" : " per-tensor"));
}

void peg_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "groups", "wbits", "isa"});
  // The tiny model's q/k/v input (256 wide: uneven octet groups), a 4096-wide layer, the GPU configs'.
  for (int isa : {1, 2})
    for (const auto& s : {std::array<int64_t, 3>{128, 768, 256}, std::array<int64_t, 3>{128, 4096, 4096},
                          std::array<int64_t, 3>{2048, 2048, 2048}})
      for (int64_t groups : {0, 6}) b->Args({s[0], s[1], s[2], groups, 8, isa});
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(PegLinear)->Apply(peg_shapes);

// Args: M, N, K, ISA (the int16 kernel has a reference and an AVX2 path).
void Int16Linear(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const Isa isa = static_cast<Isa>(state.range(3));
  if (!isa_supported(isa)) return state.SkipWithError("ISA not supported here");
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(m * k);
  for (auto& v : x) v = normal(rng);
  std::vector<int32_t> codes(n * k), zero(n, 0);
  std::uniform_int_distribution<int32_t> code(-128, 127);
  for (auto& c : codes) c = code(rng);
  std::vector<float> scale(n, 0.01f);
  const PackedWeights16 w = pack_weights16(codes.data(), n, k, 8, true, scale.data(), zero.data());
  const ActivationFormat f(16, false, false, 1e-4f, 32768.0f);
  Activations16 a;
  std::vector<float> y(m * n);
  for (auto _ : state) {
    quantize_activations16(x.data(), m, k, k, f, &a);
    gemm_i16(a, w, nullptr, y.data(), n, isa);
    benchmark::ClobberMemory();
  }
  state.counters["GOPS"] = benchmark::Counter(2e-9 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(isa_name(isa));
}
BENCHMARK(Int16Linear)
    ->ArgNames({"M", "N", "K", "isa"})
    ->Args({128, 768, 256, 1})
    ->Args({128, 4096, 4096, 1})
    ->Args({2048, 2048, 2048, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
