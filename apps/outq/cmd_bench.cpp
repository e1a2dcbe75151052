// `outq bench`: speed of the integer kernels and of the integer runtime.
//   kernels: y = x W^T (activation quantization included) for the model's linear shapes and
//            LLaMA-7B-like shapes at several M, per format, against LibTorch's float32 matmul
//   runtime: prefill and decode tokens/s of a model (the [model] config with random weights, or
//            --model) in float32 and on the integer kernels for each format (RTN weights,
//            per-token activations: no calibration data needed)
// Each time is the median of repeated runs after a warm-up run.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <cstdio>
#include <random>

#include "command.h"
#include "model_source.h"
#include "outq/core/error.h"
#include "outq/core/table.h"
#include "outq/kernels/gemm.h"
#include "outq/model/checkpoint.h"
#include "outq/runtime/integer_runtime.h"

namespace outq::app {
namespace {

std::string g_model, g_shapes = "all";
std::vector<std::string> g_formats = {"w8a8", "w4a8", "w4a4"};
std::vector<int64_t> g_m = {1, 16, 128, 512};
int64_t g_prefill = 128, g_decode = 32;
double g_min_time = 0.3;
int g_threads = 2;
bool g_skip_runtime = false, g_skip_kernels = false;

void add_options(CLI::App& app) {
  app.add_option("--model", g_model, "model directory for the runtime benchmark (default: the [model] config, random weights)");
  app.add_option("--shapes", g_shapes, "kernel shapes: model, llama7b or all")->capture_default_str();
  app.add_option("--formats", g_formats, "weight/activation formats: w8a8 w4a8 w4a4")->take_all()->capture_default_str();
  app.add_option("--m", g_m, "rows (tokens) per kernel call")->take_all()->capture_default_str();
  app.add_option("--prefill", g_prefill, "prompt tokens for the prefill measurement")->capture_default_str();
  app.add_option("--decode", g_decode, "tokens generated for the decode measurement")->capture_default_str();
  app.add_option("--min-time", g_min_time, "seconds each measurement repeats for at least")->capture_default_str();
  app.add_option("--threads", g_threads, "threads (LibTorch and the kernels' OpenMP team)")->capture_default_str();
  app.add_flag("--no-runtime", g_skip_runtime, "only the kernel shapes");
  app.add_flag("--no-kernels", g_skip_kernels, "only the runtime");
}

struct Format {
  std::string name;
  int wbits, abits;
};

Format parse_format(const std::string& s) {
  if (s == "w8a8") return {s, 8, 8};
  if (s == "w4a8") return {s, 4, 8};
  if (s == "w4a4") return {s, 4, 4};
  throw Error("--formats: unknown format '" + s + "'; expected w8a8, w4a8 or w4a4");
}

// Median seconds of fn() over repetitions lasting at least g_min_time (and 3 runs), after one warm-up.
template <class F>
double time_median(F&& fn) {
  fn();
  std::vector<double> times;
  double total = 0;
  while (times.size() < 3 || total < g_min_time) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    times.push_back(s);
    total += s;
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

struct Shape {
  std::string name;
  int64_t n, k;
};

std::vector<Shape> kernel_shapes(const ModelConfig& c) {
  std::vector<Shape> out;
  if (g_shapes == "model" || g_shapes == "all") {
    out.push_back({"model q/k/v/o", c.hidden_size, c.hidden_size});
    out.push_back({"model gate/up", c.intermediate_size, c.hidden_size});
    out.push_back({"model down", c.hidden_size, c.intermediate_size});
  }
  if (g_shapes == "llama7b" || g_shapes == "all") {
    out.push_back({"7B q/k/v/o", 4096, 4096});
    out.push_back({"7B gate/up", 11008, 4096});
    out.push_back({"7B down", 4096, 11008});
  }
  OUTQ_CHECK(!out.empty(), "--shapes: expected model, llama7b or all, found '", g_shapes, "'");
  return out;
}

nlohmann::json bench_kernels(const ModelConfig& config, const std::vector<Format>& formats, Table* table) {
  nlohmann::json rows = nlohmann::json::array();
  std::mt19937 rng(1);
  for (const auto& shape : kernel_shapes(config))
    for (int64_t m : g_m) {
      const auto x = torch::randn({m, shape.k});
      const auto w = torch::randn({shape.n, shape.k}) * 0.02;
      const double t_float = time_median([&] { (void)torch::matmul(x, w.t()); });
      for (const auto& f : formats) {
        std::vector<int32_t> codes(shape.n * shape.k);
        std::uniform_int_distribution<int32_t> code(-(1 << (f.wbits - 1)), (1 << (f.wbits - 1)) - 1);
        for (auto& c : codes) c = code(rng);
        const std::vector<float> scale(shape.n, 0.01f);
        const std::vector<int32_t> zero(shape.n, 0);
        const auto packed = kernels::pack_weights(codes.data(), shape.n, shape.k, f.wbits, true, 0, scale.data(), zero.data());
        kernels::ActivationFormat af;
        af.bits = f.abits;
        kernels::QuantizedActivations a;
        std::vector<float> y(m * shape.n);
        const float* xp = x.data_ptr<float>();
        const double t = time_median([&] {
          kernels::quantize_activations(xp, m, shape.k, shape.k, af, packed.group_size, &a);
          kernels::gemm({&a, &packed, nullptr, y.data(), shape.n});
        });
        const double gops = 2.0 * m * shape.n * shape.k / t / 1e9;
        const double gbs = static_cast<double>(packed.bytes()) / t / 1e9;
        rows.push_back({{"shape", shape.name}, {"n", shape.n}, {"k", shape.k}, {"m", m}, {"format", f.name},
                        {"seconds", t}, {"gops", gops}, {"weight_gb_per_s", gbs}, {"float_seconds", t_float},
                        {"speedup_vs_float", t_float / t}});
        table->add_row({shape.name, fmt::format("{}x{}", shape.n, shape.k), std::to_string(m), f.name,
                        fmt::format("{:.3f}", t * 1e3), fmt::format("{:.1f}", gops), fmt::format("{:.1f}", gbs),
                        fmt::format("{:.3f}", t_float * 1e3), fmt::format("{:.2f}x", t_float / t)});
      }
    }
  return rows;
}

struct Speed {
  double prefill, decode;  // tokens per second
};

Speed measure_model(Llama& model, int64_t vocab) {
  torch::NoGradGuard no_grad;
  const auto prompt = torch::randint(0, vocab, {1, g_prefill}, torch::kInt64);
  const double t_prefill = time_median([&] { (void)model->forward(prompt); });
  const double t_decode = time_median([&] {
    KVCache cache;
    auto logits = model->forward(prompt.narrow(1, 0, 1), &cache);
    for (int64_t i = 0; i < g_decode; ++i) {
      const auto next = logits.select(1, -1).argmax(-1).reshape({1, 1});
      logits = model->forward(next, &cache);
    }
  });
  return {static_cast<double>(g_prefill) / t_prefill, static_cast<double>(g_decode + 1) / t_decode};
}

nlohmann::json bench_runtime(OutqConfig& config, const std::vector<Format>& formats, Table* table) {
  auto make_float = [&] {
    if (!g_model.empty()) return load_model_dir(g_model).model;
    Llama m(config.model);
    m->reset_parameters(1);
    return m;
  };
  Llama base = make_float();
  const ModelConfig mc = base->config();
  OUTQ_CHECK(g_prefill >= 1 && g_prefill + g_decode + 1 <= mc.max_position_embeddings, "--prefill / --decode: expected ",
             "prefill + decode + 1 <= max_position_embeddings (", mc.max_position_embeddings, "), found ", g_prefill, " + ",
             g_decode);
  int64_t params = 0;
  for (const auto& p : base->parameters()) params += p.numel();
  const Speed f = measure_model(base, mc.vocab_size);
  nlohmann::json rows = nlohmann::json::array();
  rows.push_back({{"format", "float32"}, {"prefill_tokens_per_s", f.prefill}, {"decode_tokens_per_s", f.decode}});
  table->add_row({"float32 (LibTorch)", fmt::format("{:.0f}", f.prefill), fmt::format("{:.1f}", f.decode), "1.00x", "1.00x"});
  for (const auto& fm : formats) {
    Llama model = make_float();
    const Recipe recipe = recipe_parse(fmt::format("name = \"{}-rtn\"\n[weights]\nbits = {}\nsymmetric = true\n"
                                                   "[activations]\nbits = {}\ngranularity = \"token\"\ndynamic = true\n",
                                                   fm.name, fm.wbits, fm.abits),
                                       "bench");
    const QuantizedModel q = quantize_model(model, recipe, nullptr, 1);
    const IntegerRuntimeReport report = attach_integer_runtime(model, q);
    OUTQ_ASSERT(report.float_layers.empty(), "bench: a layer fell back to float: ", report.float_layers.front());
    const Speed s = measure_model(model, mc.vocab_size);
    rows.push_back({{"format", fm.name}, {"prefill_tokens_per_s", s.prefill}, {"decode_tokens_per_s", s.decode},
                    {"packed_weight_bytes", report.packed_bytes}});
    table->add_row({fm.name + " (integer kernels)", fmt::format("{:.0f}", s.prefill), fmt::format("{:.1f}", s.decode),
                    fmt::format("{:.2f}x", s.prefill / f.prefill), fmt::format("{:.2f}x", s.decode / f.decode)});
  }
  return {{"parameters", params}, {"prefill_tokens", g_prefill}, {"decode_tokens", g_decode}, {"rows", rows}};
}

int run(const CommonOptions& common, OutqConfig& config) {
  torch::set_num_threads(g_threads);
  std::vector<Format> formats;
  for (const auto& s : g_formats) formats.push_back(parse_format(s));
  nlohmann::json out = {{"isa", kernels::isa_name(kernels::isa_active())}, {"threads", g_threads}};
  Table kt({"shape", "N x K", "M", "format", "ms", "GOPS", "weight GB/s", "float32 ms", "vs float32"});
  Table rt({"model", "prefill tok/s", "decode tok/s", "prefill vs float", "decode vs float"});
  if (!g_skip_kernels) out["kernels"] = bench_kernels(config.model, formats, &kt);
  if (!g_skip_runtime) out["runtime"] = bench_runtime(config, formats, &rt);
  if (common.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("integer kernels: %s, %d threads\n", kernels::isa_name(kernels::isa_active()), g_threads);
  if (!g_skip_kernels) std::printf("\n%s", kt.render().c_str());
  if (!g_skip_runtime)
    std::printf("\nruntime: %.1fM parameters, prefill %lld tokens, decode %lld tokens\n%s",
                out["runtime"]["parameters"].get<double>() / 1e6, static_cast<long long>(g_prefill),
                static_cast<long long>(g_decode), rt.render().c_str());
  return 0;
}

}  // namespace

Command command_bench() {
  return {"bench", "speed of the integer kernels (per shape and format) and of the integer runtime (prefill / decode)",
          "outq bench --config configs/gpu-100m.toml --shapes llama7b", add_options, run};
}

}  // namespace outq::app
