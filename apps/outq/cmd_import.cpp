// `outq import`: a Hugging Face LLaMA-family checkpoint directory (LLaMA, TinyLlama, Mistral,
// Qwen2; one safetensors file or shards; F32, F16 or BF16; a SentencePiece or byte-level BPE
// tokenizer) converted into an outq model directory
// that every other command reads (see outq/interop/hf_import.h).
#include <fmt/format.h>

#include <cstdio>

#include "command.h"
#include "model_source.h"
#include "outq/core/log.h"
#include "outq/core/table.h"
#include "outq/interop/hf_import.h"

namespace outq::app {
namespace {

std::string g_from, g_out;
bool g_overwrite = false;

void add_options(CLI::App& app) {
  app.add_option("--from", g_from, "Hugging Face checkpoint directory (config.json, model.safetensors or its shards, "
                                   "tokenizer.model or tokenizer.json)")->required();
  app.add_option("--out", g_out, "output model directory")->required();
  app.add_flag("--overwrite", g_overwrite, "replace --out if it is an earlier import (or any directory)");
}

int run(const CommonOptions& common, OutqConfig&) {
  check_output_dir("--out", g_out, {g_from}, "import.json", g_overwrite);
  const ImportSummary s = hf_import(g_from, g_out);
  const ModelConfig& c = s.config;
  for (const auto& note : s.notes) log_info("note: {}", note);
  if (common.json) {
    std::printf("%s\n", nlohmann::json({{"from", g_from}, {"out", g_out}, {"model_type", c.model_type},
                                        {"parameters", c.parameter_count()}, {"files", s.files}, {"dtypes", s.dtypes},
                                        {"tensor_bytes", s.tensor_bytes}, {"copied", s.copied}, {"notes", s.notes},
                                        {"seconds", s.seconds}})
                            .dump(2)
                            .c_str());
    return 0;
  }
  Table t({"", ""});
  t.add_row({"model", fmt::format("{} ({}), {:.1f}M parameters", c.model_type, c.tie_word_embeddings ? "tied head" : "own head",
                                  c.parameter_count() / 1e6)});
  t.add_row({"shape", fmt::format("{} layers, width {}, MLP {}, {} heads / {} key-value heads, vocabulary {}",
                                  c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads,
                                  c.num_key_value_heads, c.vocab_size)});
  t.add_row({"read", fmt::format("{} ({}), {:.1f} MB of {}", fmt::join(s.files, ", "), s.files.size() == 1 ? "one file" : "shards",
                                 s.tensor_bytes / 1e6, s.dtypes)});
  t.add_row({"wrote", fmt::format("{} (float32; {}{}{})", g_out, s.tokenizer, s.copied.empty() ? "" : ", ",
                                  fmt::join(s.copied, ", "))});
  t.add_row({"time", fmt::format("{:.1f} s", s.seconds)});
  std::printf("%s", t.render().c_str());
  return 0;
}

}  // namespace

Command command_import() {
  return {"import", "convert a Hugging Face LLaMA-family checkpoint (LLaMA, Mistral, Qwen2) into an outq model directory",
          "outq import --from ~/models/TinyLlama-1.1B --out runs/tinyllama", add_options, run};
}

}  // namespace outq::app
