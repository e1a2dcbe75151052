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
  OUTQ_CHECK(eval_tokens >= 0, "study.eval_tokens: expected >= 0 (0 = all), found ", eval_tokens);
  OUTQ_CHECK(analyze_tokens > 0, "study.analyze_tokens: expected > 0, found ", analyze_tokens);
  for (const auto& s : bench_shapes)
    OUTQ_CHECK(s == "model" || s == "llama7b", "study.bench_shapes: expected model and/or llama7b, found \"", s, "\"");
  OUTQ_CHECK(runtime_prefill >= 1, "study.runtime_prefill: expected >= 1, found ", runtime_prefill);
  OUTQ_CHECK(runtime_decode >= 1, "study.runtime_decode: expected >= 1, found ", runtime_decode);
  OUTQ_CHECK(threads >= 1, "study.threads: expected >= 1, found ", threads);
}

}  // namespace outq
