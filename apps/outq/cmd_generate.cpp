// `outq generate`: sample text from a model directory (KV-cached; greedy, temperature, top-k, top-p).
#include <cstdio>

#include "command.h"
#include "option_checks.h"
#include "model_source.h"
#include "outq/eval/generate.h"

namespace outq::app {
namespace {

std::string g_model, g_prompt;
SamplingOptions g_sampling;
bool g_simulate = false;

void add_options(CLI::App& app) {
  app.add_option("--model", g_model, "model directory")->required();
  app.add_option("--prompt", g_prompt, "text to continue")->capture_default_str();
  app.add_option("--max-new-tokens", g_sampling.max_new_tokens, "tokens to generate at most")->capture_default_str()->check(whole(0, 1 << 20));
  app.add_option("--temperature", g_sampling.temperature, "sampling temperature (0 = greedy)")->capture_default_str()->check(finite(0, 100));
  app.add_option("--top-k", g_sampling.top_k, "keep the k most likely tokens (0 = off)")->capture_default_str()->check(whole(0));
  app.add_option("--top-p", g_sampling.top_p, "keep the smallest set with this probability mass (1 = off)")->capture_default_str()->check(finite(0, 1));
  app.add_option("--seed", g_sampling.seed, "random seed")->capture_default_str();
  app.add_flag("--simulate", g_simulate,
               "quantized model: run the fake-quant simulation in float instead of the integer kernels");
}

int run(const CommonOptions& common, OutqConfig&) {
  LoadedModel lm = load_model_dir(g_model, g_simulate);  // float, or quantized on the integer kernels
  Llama& model = lm.model;
  const Tokenizer& tokenizer = *lm.tokenizer;
  std::vector<int32_t> prompt = {tokenizer.bos_id()};
  for (int32_t id : tokenizer.encode(g_prompt)) prompt.push_back(id);
  g_sampling.eos_id = tokenizer.eos_id();
  std::vector<int32_t> produced;
  std::string printed;
  if (!common.json) std::printf("%s", g_prompt.c_str());
  auto on_token = [&](int32_t id) {
    produced.push_back(id);
    if (common.json) return;
    // Print the newly completed text (pieces can join into multi-byte characters).
    const std::string text = tokenizer.decode(produced);
    if (text.size() > printed.size()) {
      std::fwrite(text.data() + printed.size(), 1, text.size() - printed.size(), stdout);
      std::fflush(stdout);
      printed = text;
    }
  };
  const auto out = generate(model, prompt, g_sampling, on_token, lm.prefix.get());
  if (common.json) {
    std::printf("%s\n", nlohmann::json({{"prompt", g_prompt}, {"completion", tokenizer.decode(out)},
                                        {"tokens", out.size()}, {"seed", g_sampling.seed}})
                            .dump(2, ' ', false, nlohmann::json::error_handler_t::replace)  // (a cut UTF-8 sequence)
                            .c_str());
  } else {
    std::printf("\n");
  }
  return 0;
}

}  // namespace

Command command_generate() {
  return {"generate", "sample text from a model (greedy, temperature, top-k, top-p; seeded)",
          "outq generate --model runs/tiny/model --prompt \"The jury said\" --max-new-tokens 60", add_options, run};
}

}  // namespace outq::app
