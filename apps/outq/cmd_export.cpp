// `outq export`: a float or quantized model directory as a GGUF file for llama.cpp (weights whose
// codes map exactly onto Q8_0 / Q4_0 / Q4_1 blocks carried over, see outq/interop/gguf_export.h),
// or as a Hugging Face checkpoint directory (float32, quantized weights dequantized).
#include <fmt/format.h>

#include <cstdio>

#include "command.h"
#include "model_source.h"
#include "outq/core/log.h"
#include "outq/core/table.h"
#include "outq/interop/gguf_export.h"
#include "outq/interop/hf_import.h"

namespace outq::app {
namespace {

std::string g_model, g_out, g_format = "gguf";
GgufExportOptions g_gguf;
bool g_overwrite = false;

void add_options(CLI::App& app) {
  app.add_option("--model", g_model, "model directory, float or quantized")->required();
  app.add_option("--out", g_out, "output: a .gguf file (gguf) or a directory (hf)")->required();
  app.add_option("--format", g_format, "gguf (llama.cpp) or hf (a Hugging Face checkpoint directory)")
      ->capture_default_str()->check(CLI::IsMember({"gguf", "hf"}));
  app.add_option("--float-type", g_gguf.float_type, "gguf: type of the float matrices (embedding, unquantized linears): "
                 "f16 or f32; norms are always f32")->capture_default_str()->check(CLI::IsMember({"f16", "f32"}));
  app.add_option("--name", g_gguf.name, "gguf: general.name (default: the model directory's name)");
  app.add_flag("--overwrite", g_overwrite, "hf: replace --out even when it is not an earlier export");
}

int run(const CommonOptions& common, OutqConfig&) {
  std::vector<std::string> notes;
  std::string what;
  if (g_format == "gguf") {
    OUTQ_CHECK(g_out.size() > 5 && g_out.compare(g_out.size() - 5, 5, ".gguf") == 0,
               "--out: expected a path ending in .gguf, found \"", g_out, "\"");
    const GgufExportSummary s = gguf_export(g_model, g_out, g_gguf);
    notes = s.notes;
    what = fmt::format("{} ({}, {} tensors, {:.1f} MB)", g_out, s.file_type, s.tensors, s.bytes / 1e6);
  } else {
    check_output_dir("--out", g_out, {g_model}, "config.json", g_overwrite);
    notes = hf_export(g_model, g_out);
    what = fmt::format("{} (Hugging Face checkpoint, float32)", g_out);
  }
  for (const auto& n : notes) log_info("note: {}", n);
  if (common.json) {
    std::printf("%s\n", nlohmann::json({{"model", g_model}, {"out", g_out}, {"format", g_format}, {"notes", notes}}).dump(2).c_str());
  } else {
    std::printf("wrote %s\n", what.c_str());
  }
  return 0;
}

}  // namespace

Command command_export() {
  return {"export", "write a model as GGUF for llama.cpp (Q8_0 / Q4_0 / Q4_1 from matching quantized weights) or as a "
                    "Hugging Face checkpoint",
          "outq export --model runs/q/w4a16-g32-gptq --out model.gguf", add_options, run};
}

}  // namespace outq::app
