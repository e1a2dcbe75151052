// Kernel and model speed measurements (see speed.h).
#include "speed.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "outq/core/error.h"
#include "outq/kernels/gemm.h"
#include "outq/kernels/machine_limits.h"

namespace outq::app {
namespace {

template <class F>
double time_median(F&& fn, double min_time) {
  fn();
  std::vector<double> times;
  double total = 0;
  while (times.size() < 3 || total < min_time) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    times.push_back(s);
    total += s;
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

}  // namespace

KernelFormat parse_kernel_format(const std::string& s) {
  if (s == "w8a8") return {s, 8, 8};
  if (s == "w4a8") return {s, 4, 8};
  if (s == "w4a4") return {s, 4, 4};
  throw Error("kernel format: expected w8a8, w4a8 or w4a4, found '" + s + "'");
}

std::vector<KernelShape> kernel_shapes(const ModelConfig& c, const std::vector<std::string>& sets) {
  std::vector<KernelShape> out;
  for (const auto& set : sets) {
    if (set == "model") {
      out.push_back({"model q/k/v/o", c.hidden_size, c.hidden_size});
      out.push_back({"model gate/up", c.intermediate_size, c.hidden_size});
      out.push_back({"model down", c.hidden_size, c.intermediate_size});
    } else if (set == "llama7b") {
      out.push_back({"7B q/k/v/o", 4096, 4096});
      out.push_back({"7B gate/up", 11008, 4096});
      out.push_back({"7B down", 4096, 11008});
    } else {
      throw Error("kernel shapes: expected model, llama7b or all, found '" + set + "'");
    }
  }
  return out;
}

KernelPeaks measure_kernel_peaks(int threads) {
  KernelPeaks p;
  p.json = nlohmann::json::array();
  const kernels::Isa isa = kernels::isa_active();
  for (const auto& r : kernels::machine_limits(isa, threads, 0.1)) {
    p.json.push_back({{"name", r.name}, {"what", r.what}, {"unit", r.unit}, {"rate", r.rate}});
    if (r.probe == kernels::int8_peak(isa)) p.int8_gops = r.rate, p.int8_name = r.name;
    if (r.probe == kernels::Probe::kReadLlc) p.llc_gbs = r.rate;
    if (r.probe == kernels::Probe::kReadMemory) p.memory_gbs = r.rate;
  }
  // Weights up to the machine's last-level cache are read from it (at the LLC probe's rate);
  // without the size, the probe's own footprint.
  p.llc_bytes = kernels::last_level_cache_bytes();
  if (p.llc_bytes <= 0) p.llc_bytes = int64_t{8} * threads << 20;
  return p;
}

double KernelPeaks::percent(int64_t m, double gops, double weight_bytes, double seconds) const {
  if (m > 1) return int8_gops > 0 ? 100.0 * gops / int8_gops : 0.0;
  const double bound = weight_bytes <= static_cast<double>(llc_bytes) ? llc_gbs : memory_gbs;
  return bound > 0 ? 100.0 * weight_bytes / seconds / 1e9 / bound : 0.0;
}

std::string KernelPeaks::bound_text() const {
  return fmt::format(
      "GOPS / the {} peak for M > 1 (int4 formats can pass 100%: on AVX2 4-bit activations take one vpmaddubsw "
      "per 32 products, not an int8 step); weight bytes read per second / the read bandwidth for M = 1, from "
      "the last-level cache for weights up to its {} MiB, else from memory",
      int8_name, llc_bytes >> 20);
}

void add_peak_rows(const nlohmann::json& limits, Table* table) {
  for (const auto& l : limits)
    table->add_row({l.at("name").get<std::string>(), l.at("what").get<std::string>(),
                    fmt::format("{:.1f} {}", l.at("rate").get<double>(), l.at("unit").get<std::string>())});
}

nlohmann::json bench_kernels(const std::vector<KernelShape>& shapes, const std::vector<int64_t>& ms,
                             const std::vector<KernelFormat>& formats, double min_time, Table* table,
                             const KernelPeaks* peaks) {
  nlohmann::json rows = nlohmann::json::array();
  std::mt19937 rng(1);
  for (const auto& shape : shapes)
    for (int64_t m : ms) {
      const auto x = torch::randn({m, shape.k});
      const auto w = torch::randn({shape.n, shape.k}) * 0.02;
      const double t_float = time_median([&] { (void)torch::matmul(x, w.t()); }, min_time);
      for (const auto& f : formats) {
        std::vector<int32_t> codes(shape.n * shape.k);
        // Within +-(2^(b-1) - 1), as symmetric min-max quantization gives them: with a code of -128
        // and activations holding -128, AVX2 would time its widened int8 path, which quantized
        // models do not take (kernels/cpu/gemm_avx2.cpp).
        std::uniform_int_distribution<int32_t> code(-(1 << (f.wbits - 1)) + 1, (1 << (f.wbits - 1)) - 1);
        for (auto& c : codes) c = code(rng);
        const std::vector<float> scale(shape.n, 0.01f);
        const std::vector<int32_t> zero(shape.n, 0);
        const auto packed = kernels::pack_weights(codes.data(), shape.n, shape.k, f.wbits, true, 0, scale.data(), zero.data());
        kernels::ActivationFormat af;
        af.bits = f.abits;
        kernels::QuantizedActivations a;
        std::vector<float> y(m * shape.n);
        const float* xp = x.data_ptr<float>();
        const double t = time_median(
            [&] {
              kernels::quantize_activations(xp, m, shape.k, shape.k, af, packed.group_size, &a);
              kernels::gemm({&a, &packed, nullptr, y.data(), shape.n});
            },
            min_time);
        const double gops = 2.0 * m * shape.n * shape.k / t / 1e9;
        const double gbs = static_cast<double>(packed.bytes()) / t / 1e9;
        rows.push_back({{"shape", shape.name}, {"n", shape.n}, {"k", shape.k}, {"m", m}, {"format", f.name},
                        {"seconds", t}, {"gops", gops}, {"weight_gb_per_s", gbs}, {"float_seconds", t_float},
                        {"speedup_vs_float", t_float / t}});
        const double pct = peaks ? peaks->percent(m, gops, static_cast<double>(packed.bytes()), t) : 0.0;
        if (peaks) rows.back()["percent_of_bound"] = pct;
        if (table)
          table->add_row({shape.name, fmt::format("{}x{}", shape.n, shape.k), std::to_string(m), f.name,
                          fmt::format("{:.3f}", t * 1e3), fmt::format("{:.1f}", gops), fmt::format("{:.1f}", gbs),
                          peaks ? fmt::format("{:.0f}%", pct) : "", fmt::format("{:.3f}", t_float * 1e3),
                          fmt::format("{:.2f}x", t_float / t)});
      }
    }
  return rows;
}

ModelSpeed measure_model_speed(Llama& model, int64_t prefill, int64_t decode, double min_time,
                               const TokenPrefix* prefix, int64_t start) {
  torch::NoGradGuard no_grad;
  const int64_t vocab = model->config().vocab_size;
  const auto prompt = torch::randint(0, vocab, {1, prefill}, torch::kInt64);
  // Prefill as generation runs it: the prompt into a fresh KV cache, logits of its last position.
  const double t_prefill = time_median(
      [&] {
        KVCache cache;
        (void)model->forward(prompt, &cache, LlamaImpl::Logits::kLast);
      },
      min_time);
  KVCache start_cache = prefix ? prefix->for_batch(1) : KVCache{};
  const auto start_logits =
      model->forward(torch::randint(0, vocab, {1, start}, torch::kInt64), &start_cache, LlamaImpl::Logits::kLast);
  const double t_decode = time_median(
      [&] {
        KVCache cache = start_cache.clone();  // extending it leaves start_cache as it was
        auto logits = start_logits;
        for (int64_t i = 0; i < decode; ++i) {
          const auto next = logits.select(1, -1).argmax(-1).reshape({1, 1});
          logits = model->forward(next, &cache);
        }
      },
      min_time);
  return {static_cast<double>(prefill) / t_prefill, static_cast<double>(decode) / t_decode};
}

}  // namespace outq::app
