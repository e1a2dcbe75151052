// `outq eval`: perplexity of a model directory on a split of the prepared corpus or a text file.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

#include "command.h"
#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/table.h"
#include "outq/data/prepare.h"
#include "outq/data/tokenizer.h"
#include "outq/eval/perplexity.h"
#include "outq/model/checkpoint.h"

namespace fs = std::filesystem;

namespace outq::app {
namespace {

std::string g_model, g_split = "test", g_text, g_data_dir;
int64_t g_max_tokens = 0, g_seq_len = 0, g_batch = 8;
int g_threads = 2;

void add_options(CLI::App& app) {
  app.add_option("--model", g_model, "model directory (config.json, model.safetensors, tokenizer.model)")->required();
  app.add_option("--split", g_split, "split of the prepared corpus: train, val or test")->capture_default_str();
  app.add_option("--data-dir", g_data_dir, "a prepared data directory (default: prepare/reuse the [data] config)");
  app.add_option("--text", g_text, "evaluate on this plain text file instead of a split");
  app.add_option("--max-tokens", g_max_tokens, "score at most this many tokens (0 = all)")->capture_default_str();
  app.add_option("--seq-len", g_seq_len, "window length (0 = the model's max_position_embeddings)")->capture_default_str();
  app.add_option("--batch", g_batch, "windows per forward pass")->capture_default_str();
  app.add_option("--threads", g_threads, "LibTorch threads")->capture_default_str();
}

int run(const CommonOptions& common, OutqConfig& config) {
  torch::set_num_threads(g_threads);
  Llama model = model_load(g_model);
  const Tokenizer tokenizer = Tokenizer::load((fs::path(g_model) / "tokenizer.model").string());
  OUTQ_CHECK(tokenizer.vocab_size() == model->config().vocab_size, g_model, "/tokenizer.model: vocabulary size: expected ",
             model->config().vocab_size, " (the model's), found ", tokenizer.vocab_size());
  PerplexityOptions o;
  o.seq_len = g_seq_len > 0 ? g_seq_len : model->config().max_position_embeddings;
  o.max_tokens = g_max_tokens;
  o.batch_size = g_batch;
  o.bos_id = tokenizer.bos_id();
  PerplexityResult r;
  std::string source;
  if (!g_text.empty()) {
    const std::vector<int32_t> tokens = tokenizer.encode(read_file(g_text, "text file"));
    source = g_text;
    r = evaluate_perplexity(
        model, [&](uint64_t start, uint64_t n, int32_t* out) { std::copy_n(tokens.begin() + start, n, out); },
        tokens.size(), o);
  } else {
    const std::string dir = !g_data_dir.empty() ? g_data_dir : data_prepare(config.data, config_json(config_entries(config)), false).dir;
    PreparedData data(dir);
    OUTQ_CHECK(data.tokenizer().checksum() == tokenizer.checksum(), g_model, "/tokenizer.model: expected the tokenizer of ",
               dir, " (checksum ", data.tokenizer().checksum(), "), found checksum ", tokenizer.checksum());
    source = dir + ":" + g_split;
    r = evaluate_perplexity(model, data.shard(g_split), o);
  }
  nlohmann::json j = r.to_json();
  j["model"] = g_model;
  j["source"] = source;
  j["seq_len"] = o.seq_len;
  if (common.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  Table t({"model", "source", "tokens", "perplexity", "mean NLL"});
  t.add_row({g_model, source, format_count(r.tokens), fmt::format("{:.3f}", r.perplexity()), fmt::format("{:.4f}", r.mean_nll())});
  std::printf("%s", t.render().c_str());
  return 0;
}

}  // namespace

Command command_eval() {
  return {"eval", "perplexity of a model on a split of the prepared corpus or a text file",
          "outq eval --model runs/tiny/model --split test --max-tokens 50000", add_options, run};
}

}  // namespace outq::app
