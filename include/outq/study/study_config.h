// The [study] config section: what `outq study` runs after training (which recipes, which of them
// make the headline and run on the integer kernels, how many tokens analysis and evaluation use)
// and where it writes. The [data], [model], [train] and [qat] sections of the same file describe
// the models: a float baseline (qat.mode = "float"), the QAT model trained from scratch ([qat] as
// given) and, unless finetune_fraction = 0, a QAT fine-tune of the baseline (those sections plus
// finetune_set, for finetune_fraction of train.steps).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace outq {

struct StudyConfig {
  static constexpr const char* kSection = "study";

  std::string out = "runs/study";
  std::vector<std::string> recipes = {"w8a8-tensor-rtn", "w8a8-token-rtn",  "w4a4-tensor-rtn", "w4a4-tensor-gptq",
                                      "w4a4-token-rtn",  "w4a4-token-gptq", "w4a4-learned-rtn", "w4a4-learned-gptq",
                                      "w4a4-learned-lw"};
  std::string headline_baseline = "w4a4-tensor-gptq";
  std::string headline_qat = "w4a4-learned-gptq";
  std::vector<std::string> runtime_recipes = {"w8a8-tensor-rtn", "w4a4-tensor-gptq", "w4a4-learned-gptq"};
  double finetune_fraction = 0.1;
  std::vector<std::string> finetune_set = {"qat.mode=lsq+kurtosis", "qat.lsq_init=mse",      "qat.weight_bits=4",
                                           "qat.weight_init=mse",   "train.lr=5e-4",         "qat.clip_lr_scale=4"};
  std::vector<std::string> finetune_recipes = {"w8a8-tensor-rtn", "w4a4-tensor-gptq", "w4a4-learned-gptq", "w4a4-learned-lw"};
  std::string headline_finetune = "w4a4-learned-lw";
  int64_t eval_tokens = 0;
  int64_t analyze_tokens = 32768;
  std::vector<std::string> bench_shapes = {"model", "llama7b"};
  int64_t runtime_prefill = 128;
  int64_t runtime_decode = 32;
  int threads = 2;
  int train_ranks = 1;

  template <class V>
  void visit(V& v) {
    v("out", out, "directory of the study: stages/ (cached work), report/ (report.md, report.json, plots/)");
    v("recipes", recipes, "recipes applied to both models: built-in names (recipes/*.toml) or .toml paths");
    v("headline_baseline", headline_baseline, "the baseline's W4A4 recipe in the headline table");
    v("headline_qat", headline_qat, "the QAT model's W4A4 recipe in the headline table");
    v("runtime_recipes", runtime_recipes, "recipes also run on the integer kernels (accuracy and tokens/s)");
    v("finetune_fraction", finetune_fraction,
      "QAT fine-tune of the baseline: its steps as a fraction of train.steps, warm-up 10% of them (0 = no such model)");
    v("finetune_set", finetune_set, "the fine-tune's train.* / qat.* settings over the study's (section.key=value each)");
    v("finetune_recipes", finetune_recipes, "the recipes (of study.recipes) the fine-tuned model is evaluated with");
    v("headline_finetune", headline_finetune, "the fine-tuned model's W4A4 recipe in the headline table");
    v("eval_tokens", eval_tokens, "test tokens scored per evaluation (0 = the whole test split)");
    v("analyze_tokens", analyze_tokens, "validation tokens of the outlier analysis per model");
    v("bench_shapes", bench_shapes, "kernel shapes timed: model and/or llama7b");
    v("runtime_prefill", runtime_prefill, "prompt tokens of the runtime's prefill measurement");
    v("runtime_decode", runtime_decode, "tokens generated in the runtime's decode measurement");
    v("threads", threads, "threads for training, evaluation and the kernels");
    v("train_ranks", train_ranks,
      "data-parallel ranks of each training stage (run as `outq train --nproc N`, study.threads split over them; "
      "1 = in this process). Not part of the stages' cache keys: the ranks reproduce one process");
  }
  void validate() const;
};

}  // namespace outq
