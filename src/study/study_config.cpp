// StudyConfig validation.
#include "outq/study/study_config.h"

#include <algorithm>

#include "outq/core/error.h"

namespace outq {

void StudyConfig::validate() const {
  OUTQ_CHECK(!out.empty(), "study.out: expected a directory, found an empty string");
  OUTQ_CHECK(!recipes.empty(), "study.recipes: expected at least one recipe, found an empty list");
  for (size_t i = 0; i < recipes.size(); ++i) {
    OUTQ_CHECK(recipes[i] != "float", "study.recipes: \"float\" is the unquantized evaluation every study runs; expected "
               "recipe names or paths");
    OUTQ_CHECK(std::find(recipes.begin(), recipes.begin() + static_cast<std::ptrdiff_t>(i), recipes[i]) ==
                   recipes.begin() + static_cast<std::ptrdiff_t>(i),
               "study.recipes: \"", recipes[i], "\" is listed twice");
  }
  auto listed = [&](const std::string& r) { return std::find(recipes.begin(), recipes.end(), r) != recipes.end(); };
  OUTQ_CHECK(listed(headline_baseline), "study.headline_baseline: expected one of study.recipes, found \"",
             headline_baseline, "\"");
  OUTQ_CHECK(listed(headline_qat), "study.headline_qat: expected one of study.recipes, found \"", headline_qat, "\"");
  for (const auto& r : runtime_recipes)
    OUTQ_CHECK(listed(r), "study.runtime_recipes: expected each to be one of study.recipes, found \"", r, "\"");
  OUTQ_CHECK(finetune_fraction >= 0 && finetune_fraction <= 10, "study.finetune_fraction: expected 0 (no fine-tuned model) "
             "to 10, found ", finetune_fraction);
  if (finetune_fraction > 0) {
    for (const auto& r : finetune_recipes)
      OUTQ_CHECK(listed(r), "study.finetune_recipes: expected each to be one of study.recipes, found \"", r, "\"");
    OUTQ_CHECK(std::find(finetune_recipes.begin(), finetune_recipes.end(), headline_finetune) != finetune_recipes.end(),
               "study.headline_finetune: expected one of study.finetune_recipes, found \"", headline_finetune, "\"");
    for (const auto& s : finetune_set) {
      const bool section = s.rfind("train.", 0) == 0 || s.rfind("qat.", 0) == 0;
      OUTQ_CHECK(section && s.find('=') != std::string::npos, "study.finetune_set: expected train.* or qat.* settings as "
                 "section.key=value (the fine-tune keeps the baseline's data and model), found \"", s, "\"");
    }
  }
  OUTQ_CHECK(train_ranks >= 1 && train_ranks <= 256, "study.train_ranks: expected 1 to 256 data-parallel ranks, found ",
             train_ranks);
  OUTQ_CHECK(eval_tokens >= 0, "study.eval_tokens: expected >= 0 (0 = all), found ", eval_tokens);
  OUTQ_CHECK(analyze_tokens > 0, "study.analyze_tokens: expected > 0, found ", analyze_tokens);
  for (const auto& s : bench_shapes)
    OUTQ_CHECK(s == "model" || s == "llama7b", "study.bench_shapes: expected model and/or llama7b, found \"", s, "\"");
  OUTQ_CHECK(runtime_prefill >= 1, "study.runtime_prefill: expected >= 1, found ", runtime_prefill);
  OUTQ_CHECK(runtime_decode >= 1, "study.runtime_decode: expected >= 1, found ", runtime_decode);
  OUTQ_CHECK(threads >= 1, "study.threads: expected >= 1, found ", threads);
}

}  // namespace outq
