// `outq bench`: speed of the integer kernels and of the integer runtime.
//   kernels: the machine's limits (int8 / fp32 peaks of the active ISA, read bandwidth), then
//            y = x W^T (activation quantization included) for the model's linear shapes and
//            LLaMA-7B-like shapes at several M, per format, against LibTorch's float32 matmul and
//            as a percent of the bound that limits it
//   runtime: prefill and decode tokens/s of a model (the [model] config with random weights, or
//            --model) in float32 and on the integer kernels for each format (RTN weights,
//            per-token activations: no calibration data needed)
// Each time is the median of repeated runs after a warm-up run.
#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "command.h"
#include "option_checks.h"
#include "model_source.h"
#include "outq/core/error.h"
#include "outq/core/table.h"
#include "outq/kernels/isa.h"
#include "outq/kernels/machine_limits.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/quantized_io.h"
#include "outq/runtime/integer_runtime.h"
#include "speed.h"

namespace outq::app {
namespace {

std::string g_model, g_shapes = "all";
std::vector<std::string> g_formats = {"w8a8", "w4a8", "w4a4"};
std::vector<int64_t> g_m = {1, 16, 128, 512};
int64_t g_prefill = 128, g_decode = 32;
double g_min_time = 0.3;
int g_threads = 2, g_rounds = 1;
bool g_skip_runtime = false, g_skip_kernels = false;
std::vector<std::string> g_quantized;

void add_options(CLI::App& app) {
  app.add_option("--model", g_model, "model directory for the runtime benchmark (default: the [model] config, random weights)");
  app.add_option("--shapes", g_shapes, "kernel shapes: model, llama7b or all")->capture_default_str();
  app.add_option("--formats", g_formats, "weight/activation formats: w8a8 w4a8 w4a4")->take_all()->capture_default_str();
  app.add_option("--m", g_m, "rows (tokens) per kernel call")->take_all()->capture_default_str()->check(whole(1, 1 << 20));
  app.add_option("--prefill", g_prefill, "prompt tokens for the prefill measurement")->capture_default_str()->check(whole(1));
  app.add_option("--decode", g_decode, "tokens generated for the decode measurement")->capture_default_str()->check(whole(1));
  app.add_option("--min-time", g_min_time, "seconds each measurement repeats for at least")->capture_default_str()->check(finite(0, 3600));
  app.add_option("--threads", g_threads, "threads (LibTorch and the kernels' OpenMP team)")->capture_default_str()->check(whole(1, 1024));
  app.add_option("--quantized", g_quantized,
                 "quantized model directories to time on the integer runtime instead of the --formats (RTN, random "
                 "calibration-free), next to the float model")
      ->take_all();
  app.add_option("--rounds", g_rounds, "--quantized: alternating rounds over the directories (paired comparison)")
      ->capture_default_str()
      ->check(whole(1, 1000));
  app.add_flag("--no-runtime", g_skip_runtime, "only the kernel shapes");
  app.add_flag("--no-kernels", g_skip_kernels, "only the runtime");
}

nlohmann::json bench_runtime(OutqConfig& config, const std::vector<KernelFormat>& formats, Table* table) {
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
  const ModelSpeed f = measure_model_speed(base, g_prefill, g_decode, g_min_time);
  nlohmann::json rows = nlohmann::json::array();
  rows.push_back({{"format", "float32"}, {"prefill_tokens_per_s", f.prefill}, {"decode_tokens_per_s", f.decode}});
  table->add_row({"float32 (LibTorch)", fmt::format("{:.0f}", f.prefill), fmt::format("{:.1f}", f.decode), "1.00x", "1.00x"});
  // Quantized directories as they are (any recipe and methods), in alternating rounds.
  OUTQ_CHECK(g_rounds >= 1, "--rounds: expected >= 1, found ", g_rounds);
  for (int round = 0; round < (g_quantized.empty() ? 0 : g_rounds); ++round)
    for (const auto& dir : g_quantized) {
      QuantizedModel info;
      OUTQ_CHECK(is_quantized_dir(dir), "--quantized ", dir, ": expected a quantized model directory (quant_config.json), found none");
      Llama model = quantized_load(dir, &info);
      OUTQ_CHECK(model->config().hidden_size == mc.hidden_size && model->config().num_hidden_layers == mc.num_hidden_layers,
                 "--quantized ", dir, ": expected the shape of the float model (--model), found another");
      const IntegerRuntimeReport report = attach_integer_runtime(model, info);
      OUTQ_CHECK(report.float_layers.empty(), "--quantized ", dir, ": a layer cannot run on the kernels: ",
                 report.float_layers.empty() ? "" : report.float_layers.front());
      if (info.prefix)
        OUTQ_CHECK(info.prefix->length() + 1 + g_decode <= mc.max_position_embeddings, "--decode: ", dir, " continues after a ",
                   info.prefix->length(), "-token prefix; expected prefix + 1 + decode <= max_position_embeddings (",
                   mc.max_position_embeddings, "), found ", info.prefix->length(), " + 1 + ", g_decode);
      const ModelSpeed s = measure_model_speed(model, g_prefill, g_decode, g_min_time, info.prefix.get());
      const std::string name = info.recipe.name + (g_rounds > 1 ? fmt::format(" (round {})", round + 1) : "");
      rows.push_back({{"format", info.recipe.label()}, {"recipe", info.recipe.name}, {"methods", info.recipe.methods_label()},
                      {"dir", dir}, {"round", round + 1}, {"prefill_tokens_per_s", s.prefill},
                      {"decode_tokens_per_s", s.decode}, {"packed_weight_bytes", report.packed_bytes},
                      {"weight_only_layers", report.weight_only_layers}});
      table->add_row({name, fmt::format("{:.0f}", s.prefill), fmt::format("{:.1f}", s.decode),
                      fmt::format("{:.2f}x", s.prefill / f.prefill), fmt::format("{:.2f}x", s.decode / f.decode)});
      if (info.prefix) {
        // The prefix's cost is that of a context longer by its length: the same model decoding
        // from a cache of as many ordinary tokens, without the prefix.
        const int64_t P = info.prefix->length();
        const ModelSpeed n = measure_model_speed(model, g_prefill, g_decode, g_min_time, nullptr, P + 1);
        rows.back()["prefix_tokens"] = P;
        rows.back()["decode_tokens_per_s_without_prefix_same_context"] = n.decode;
        table->add_row({name + " without prefix, " + std::to_string(P + 1) + "-token context", fmt::format("{:.0f}", n.prefill),
                        fmt::format("{:.1f}", n.decode), fmt::format("{:.2f}x", n.prefill / f.prefill),
                        fmt::format("{:.2f}x", n.decode / f.decode)});
      }
    }
  for (const auto& fm : g_quantized.empty() ? formats : std::vector<KernelFormat>{}) {
    Llama model = make_float();
    const Recipe recipe = recipe_parse(fmt::format("name = \"{}-rtn\"\n[weights]\nbits = {}\nsymmetric = true\n"
                                                   "[activations]\nbits = {}\ngranularity = \"token\"\ndynamic = true\n",
                                                   fm.name, fm.wbits, fm.abits),
                                       "bench");
    const QuantizedModel q = quantize_model(model, recipe, nullptr, 1);
    const IntegerRuntimeReport report = attach_integer_runtime(model, q);
    OUTQ_ASSERT(report.float_layers.empty(), "bench: a layer fell back to float: ", report.float_layers.front());
    const ModelSpeed s = measure_model_speed(model, g_prefill, g_decode, g_min_time);
    rows.push_back({{"format", fm.name}, {"prefill_tokens_per_s", s.prefill}, {"decode_tokens_per_s", s.decode},
                    {"packed_weight_bytes", report.packed_bytes}});
    table->add_row({fm.name + " (integer kernels)", fmt::format("{:.0f}", s.prefill), fmt::format("{:.1f}", s.decode),
                    fmt::format("{:.2f}x", s.prefill / f.prefill), fmt::format("{:.2f}x", s.decode / f.decode)});
  }
  return {{"parameters", params}, {"prefill_tokens", g_prefill}, {"decode_tokens", g_decode}, {"rows", rows}};
}

int run(const CommonOptions& common, OutqConfig& config) {
  torch::set_num_threads(g_threads);
  std::vector<KernelFormat> formats;
  for (const auto& s : g_formats) formats.push_back(parse_kernel_format(s));
  nlohmann::json out = {{"isa", kernels::isa_name(kernels::isa_active())}, {"threads", g_threads},
                        {"cpu", kernels::cpu_model_name()}};
  Table kt({"shape", "N x K", "M", "format", "ms", "GOPS", "weight GB/s", "of bound", "float32 ms", "vs float32"});
  Table lt({"probe", "what", "rate"});
  KernelPeaks peaks;
  Table rt({"model", "prefill tok/s", "decode tok/s", "prefill vs float", "decode vs float"});
  if (!g_skip_kernels) {
    OUTQ_CHECK(g_shapes == "model" || g_shapes == "llama7b" || g_shapes == "all",
               "--shapes: expected model, llama7b or all, found '", g_shapes, "'");
    const auto shapes = kernel_shapes(config.model, g_shapes == "all" ? std::vector<std::string>{"model", "llama7b"}
                                                                       : std::vector<std::string>{g_shapes});
    peaks = measure_kernel_peaks(g_threads);
    out["machine_limits"] = peaks.json;
    add_peak_rows(peaks.json, &lt);
    out["kernels"] = bench_kernels(shapes, g_m, formats, g_min_time, &kt, &peaks);
  }
  if (!g_skip_runtime) out["runtime"] = bench_runtime(config, formats, &rt);
  if (common.json) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("integer kernels: %s, %d threads, %s\n", kernels::isa_name(kernels::isa_active()), g_threads,
              kernels::cpu_model_name().c_str());
  if (!g_skip_kernels)
    std::printf("\nmachine limits (register-only loops and streaming reads, %d threads)\n%s\nkernels (\"of bound\": "
                "%s)\n%s",
                g_threads, lt.render().c_str(), peaks.bound_text().c_str(), kt.render().c_str());
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
