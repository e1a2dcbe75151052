// Google Benchmark suite for the integer kernels and the machine's limits:
//   Peak/*      machine limits (outq/kernels/machine_limits.h; probe numbers in the order of the
//               Probe enum): fp32 FMA, int8 dot-product steps per ISA, read bandwidth (1, 2 threads)
//   Gemm/*      outq W8A8 / W4A8 / W4A4 on each ISA, with ("Linear": float in, float out,
//               the per-token activation quantizer included) and without activation quantization
//   WeightOnly/* outq W8A16 / W4A16: float activations, int8 / int4 weights dequantized in the product
//   Sgemm       OpenBLAS fp32 on the same shape;  OnednnInt8: oneDNN u8 x s8 -> f32 matmul
//   Hadamard/*  rotation's online R4 (the fast Hadamard transform of the down-projection input), next
//               to DownProj/*, the W4A4 per-token linear it precedes (quantizer + GEMM), same M and K
// Rates are counters: GOPS (2 M N K per second) and, for M = 1, weight GB/s.
// Usage: build/bench/kernels_bench --benchmark_filter=... (OMP_NUM_THREADS sets the team).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <dnnl.hpp>
#include <omp.h>
#include <random>
#include <vector>

#include "outq/kernels/gemm.h"
#include "outq/kernels/hadamard.h"
#include "outq/kernels/machine_limits.h"
#include "outq/kernels/weight_only.h"

namespace {

using namespace outq::kernels;

void set_rate(benchmark::State& state, double ops, double bytes = 0) {
  state.counters["GOPS"] = benchmark::Counter(ops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  if (bytes > 0) state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// Machine limits (outq/kernels/machine_limits.h): each probe runs on an OpenMP team of
// state.range(1) threads for 0.2 s per iteration; the counter is the team's rate.
void Peak(benchmark::State& state) {
  const auto probe = static_cast<Probe>(state.range(0));
  if (!probe_supported(probe)) return state.SkipWithError("not supported on this CPU");
  ProbeResult r;
  double total = 0;
  for (auto _ : state) total += (r = probe_run(probe, static_cast<int>(state.range(1)), 0.2)).rate;
  state.counters[r.unit] = total / static_cast<double>(state.iterations());
  state.SetLabel(r.what);
}
BENCHMARK(Peak)->ArgNames({"probe", "threads"})->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {1, 2}})->Iterations(1)
    ->UseRealTime()->Unit(benchmark::kMillisecond);

struct Operands {
  std::vector<float> x;
  PackedWeights w;
  QuantizedActivations a;
  ActivationFormat format;
  std::vector<float, CacheAligned<float>> y;  // 64-byte aligned like the outputs of LibTorch and oneDNN
};

Operands make_operands(int64_t m, int64_t n, int64_t k, int wbits, int abits) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  Operands o;
  o.x.resize(m * k);
  for (auto& v : o.x) v = normal(rng);
  std::vector<int32_t> codes(n * k), zero(n, 0);
  // Codes within +-(2^(b-1) - 1), as symmetric min-max quantization gives them (scale = max|w| /
  // qmax); a weight code of -128 with an activation code of -128 would take AVX2's slower int8 path.
  std::uniform_int_distribution<int32_t> code(-(1 << (wbits - 1)) + 1, (1 << (wbits - 1)) - 1);
  for (auto& c : codes) c = code(rng);
  std::vector<float> scale(n, 0.01f);
  o.w = pack_weights(codes.data(), n, k, wbits, true, 0, scale.data(), zero.data());
  o.format.bits = abits;
  quantize_activations(o.x.data(), m, k, k, o.format, o.w.group_size, &o.a);
  o.y.resize(m * n);
  return o;
}

// Args: M, N, K, weight bits, activation bits, ISA, quantize activations inside the loop.
void Gemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const Isa isa = static_cast<Isa>(state.range(5));
  if (!isa_supported(isa)) return state.SkipWithError("ISA not supported here");
  Operands o = make_operands(m, n, k, static_cast<int>(state.range(3)), static_cast<int>(state.range(4)));
  const bool linear = state.range(6) != 0;
  for (auto _ : state) {
    if (linear) quantize_activations(o.x.data(), m, k, k, o.format, o.w.group_size, &o.a);
    gemm({&o.a, &o.w, nullptr, o.y.data(), n}, isa);
    benchmark::ClobberMemory();
  }
  set_rate(state, 2.0 * m * n * k, m == 1 ? static_cast<double>(o.w.bytes()) : 0);
  state.SetLabel(std::string(isa_name(isa)) + (linear ? " linear" : " gemm"));
}

void gemm_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "wbits", "abits", "isa", "linear"});
  for (int isa : {1, 4, 2, 3})  // avx2, avx_vnni, avx512_vnni, amx_int8
    for (auto [wb, ab] : {std::pair{8, 8}, std::pair{4, 8}, std::pair{4, 4}}) {
      for (int linear : {0, 1}) b->Args({2048, 2048, 2048, wb, ab, isa, linear});
      b->Args({1, 4096, 4096, wb, ab, isa, 1});
      b->Args({1, 4096, 14336, wb, ab, isa, 1});  // a 7B MLP down projection (ggml test-backend-ops has the same case)
      b->Args({128, 4096, 4096, wb, ab, isa, 1});
    }
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(Gemm)->Apply(gemm_shapes);

// Args: M, N, K, weight bits, ISA. The GEMV's weight GB/s counts the packed bytes read.
void WeightOnly(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const Isa isa = static_cast<Isa>(state.range(4));
  if (!isa_supported(isa)) return state.SkipWithError("ISA not supported here");
  Operands o = make_operands(m, n, k, static_cast<int>(state.range(3)), 8);
  for (auto _ : state) {
    gemm_weight_only({o.x.data(), m, k, &o.w, nullptr, o.y.data(), n}, isa);
    benchmark::ClobberMemory();
  }
  set_rate(state, 2.0 * m * n * k, m == 1 ? static_cast<double>(o.w.bytes()) : 0);
  state.SetLabel(isa_name(isa));
}

void weight_only_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "wbits", "isa"});
  for (int isa : {1, 2})  // avx2, avx512_vnni (amx_int8 runs the AVX-512 path)
    for (int wb : {8, 4}) {
      b->Args({1, 4096, 4096, wb, isa});
      b->Args({2048, 2048, 2048, wb, isa});
    }
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(WeightOnly)->Apply(weight_only_shapes);

// Down-projection shapes (K = intermediate, N = hidden): the study model, configs/gpu-100m.toml and
// a Mistral-7B / LLaMA-3-8B-sized block (14336 = 28 x 512: a Paley II factor).
constexpr int64_t kDownShapes[][2] = {{1024, 256}, {2048, 768}, {14336, 4096}};

// Args: M, K, ISA. Counts 1 op per element per butterfly stage plus the k x k mix.
void Hadamard(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1);
  const Isa isa = static_cast<Isa>(state.range(2));
  if (!isa_supported(isa)) return state.SkipWithError("ISA not supported here");
  const HadamardPlan plan = hadamard_plan(k);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(m * k);
  for (auto& v : x) v = normal(rng);
  for (auto _ : state) {
    hadamard_transform(plan, x.data(), m, k, isa);
    benchmark::ClobberMemory();
  }
  int64_t stages = 0;
  for (int64_t h = 1; h < plan.m; h *= 2) ++stages;
  set_rate(state, static_cast<double>(m) * k * (stages + plan.k));
  state.SetLabel(std::string(isa_name(isa)) + " k=" + std::to_string(plan.k));
}

void hadamard_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "isa"});
  for (int isa : {1, 2})
    for (const auto& s : kDownShapes)
      for (int64_t m : {1, 128}) b->Args({m, s[0], isa});
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(Hadamard)->Apply(hadamard_shapes);

void down_proj_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "wbits", "abits", "isa", "linear"});
  for (int isa : {1, 2})
    for (const auto& s : kDownShapes)
      for (int64_t m : {1, 128}) b->Args({m, s[1], s[0], 4, 4, isa, 1});
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(Gemm)->Name("DownProj")->Apply(down_proj_shapes);

void Sgemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<float> a(m * k, 0.5f), w(n * k, 0.25f), y(m * n);
  for (auto _ : state) {
    if (m == 1)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w.data(), k, a.data(), 1, 0.0f, y.data(), 1);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a.data(), k, w.data(), k, 0.0f, y.data(), n);
    benchmark::ClobberMemory();
  }
  set_rate(state, 2.0 * m * n * k, m == 1 ? 4.0 * n * k : 0);
}
BENCHMARK(Sgemm)->Args({2048, 2048, 2048})->Args({128, 4096, 4096})->Args({1, 4096, 4096})->Args({1, 4096, 14336})->UseRealTime()->Unit(benchmark::kMillisecond);

void OnednnInt8(benchmark::State& state) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  const dnnl::memory::desc a_md({m, k}, dt::u8, tag::ab), w_any({k, n}, dt::s8, tag::any), y_md({m, n}, dt::f32, tag::ab);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, w_any, y_md), eng);
  dnnl::memory a(pd.src_desc(), eng), w(pd.weights_desc(), eng), y(pd.dst_desc(), eng);
  dnnl::memory w_plain({{k, n}, dt::s8, tag::ab}, eng);
  std::fill_n(static_cast<int8_t*>(w_plain.get_data_handle()), k * n, int8_t{3});
  std::fill_n(static_cast<uint8_t*>(a.get_data_handle()), m * k, uint8_t{7});
  dnnl::reorder(w_plain, w).execute(s, w_plain, w);
  const dnnl::matmul prim(pd);
  for (auto _ : state) {
    prim.execute(s, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, y}});
    s.wait();
  }
  set_rate(state, 2.0 * m * n * k, m == 1 ? 1.0 * n * k : 0);
  state.SetLabel(pd.impl_info_str());
}
BENCHMARK(OnednnInt8)->Args({2048, 2048, 2048})->Args({128, 4096, 4096})->Args({1, 4096, 4096})->Args({1, 4096, 14336})->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
