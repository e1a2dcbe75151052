// `outq study`: the main job. Prepares the corpus, trains a float baseline, a QAT model from
// scratch and a QAT fine-tune of the baseline, analyses them, quantizes and evaluates them with
// the study's recipes, runs the integer runtime and the kernels, and writes report.md / report.json with plots. Every stage is cached
// in <study.out>/stages under a hash of its inputs, so a rerun skips finished work and a killed
// study resumes (training from its last checkpoint).
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>

#include "command.h"
#include "model_source.h"
#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/log.h"
#include "outq/core/table.h"
#include "outq/kernels/isa.h"
#include "outq/model/checkpoint.h"
#include "outq/study/report.h"
#include "outq/study/stage_cache.h"
#include "study_stages.h"

namespace fs = std::filesystem;

namespace outq::app {
namespace {

using json = nlohmann::json;

constexpr int kStudyVersion = 1;  // bump when a stage's output changes meaning: every stage reruns
constexpr int kEvalVersion = 2;   // the evaluations' (2: per-window NLL and standard errors)
int g_nproc = 0;                  // --nproc: study.train_ranks

struct Planned {
  Stage stage;
  double estimate;
  std::function<json()> work;
};

struct ModelPlan {
  std::string id, label;
  OutqConfig config;  ///< with this model's [train] and [qat] sections
  Stage train;
  std::string headline;              ///< its W4A4 recipe in the headline (study.headline_<id>)
  std::string init_from;             ///< the model directory a fine-tune starts from ("" = from scratch)
  std::vector<std::string> recipes;  ///< the study recipes evaluated on this model (empty = all)

  bool evaluates(const std::string& entry) const {
    return recipes.empty() || std::find(recipes.begin(), recipes.end(), entry) != recipes.end();
  }
  /// Why `recipe` cannot run on this model ("" if it can).
  std::string inapplicable(const Recipe& recipe) const {
    if (recipe.needs_learned_ranges() && !config.qat.quantizes()) return "needs learned clip ranges (QAT models only)";
    if (recipe.needs_learned_weights() && config.qat.weight_bits == 0) return "needs learned weight steps (weight-QAT models only)";
    return "";
  }
};

// The configuration entries that decide a stage's output, as JSON: all of [data], [model],
// [train] (but where it is written) and [qat].
json training_key(OutqConfig c, const std::string& data_dir) {
  c.train.run_dir = "";
  c.study = StudyConfig{};
  json config = json::parse(config_json(config_entries(c)));
  for (const char* k : TrainConfig::kCommunicationKeys) config["train"].erase(k);
  return {{"version", kStudyVersion}, {"data", fs::path(data_dir).filename().string()}, {"config", config}};
}

// The fine-tune's configuration: the study's, for study.finetune_fraction of its steps (warm-up,
// evaluations and statistics at a tenth / a quarter of them), then study.finetune_set.
OutqConfig finetune_config(const OutqConfig& config) {
  const StudyConfig& sc = config.study;
  const int64_t steps = std::max<int64_t>(1, std::llround(sc.finetune_fraction * static_cast<double>(config.train.steps)));
  const std::string origin = "study.finetune_fraction";
  ConfigValues values = {{"train.steps", {steps, origin}},
                         {"train.warmup_steps", {std::max<int64_t>(1, steps / 10), origin}},
                         {"train.eval_every", {std::max<int64_t>(1, steps / 4), origin}},
                         {"train.stats_every", {std::max<int64_t>(1, steps / 4), origin}}};
  for (const auto& assignment : sc.finetune_set) {
    auto [key, value] = config_parse_override(assignment);
    value.origin = "study.finetune_set";
    values[key] = value;
  }
  OutqConfig ft = config;
  config_apply(ft, values);
  OUTQ_CHECK(ft.qat.quantizes(), "study.finetune_set: the fine-tune must learn activation ranges; expected qat.mode qat, "
             "qat+kurtosis, lsq or lsq+kurtosis, found \"", ft.qat.mode, "\"");
  return ft;
}

// A recipe entry as part of a stage name: a path's characters other than letters, digits, '.',
// '-' and '_' become '_' (so "my recipes/x.toml" names one directory).
std::string stage_label(const std::string& entry) {
  std::string out = entry;
  for (char& ch : out)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != '_') ch = '_';
  return out;
}

double train_estimate(const OutqConfig& c) {
  const double tokens = static_cast<double>(c.train.steps * c.train.batch_size * c.train.seq_len);
  double rate = c.qat.quantizes() ? 2200.0 : 2500.0;  // tokens/s of the tiny model on 2 AVX2 cores (2 ranks)
  if (c.train.device != "cpu") rate *= 100;                // a GPU: a rough guess, rescaled as stages finish
  const double scale = static_cast<double>(c.model.hidden_size) / 256.0 * c.model.num_hidden_layers / 4.0;
  return tokens / rate * std::max(scale, 0.05);
}


// Copies a stage's plot into <report dir>/plots/<name>.png and records it in report["plots"].
void copy_plot(json& report, const fs::path& out, const std::string& from, const std::string& name) {
  if (from.empty() || !fs::exists(from)) return;
  const std::string rel = "plots/" + name + ".png";
  write_file_atomic(out / rel, read_file(from, "plot"));
  report["plots"][name] = rel;
}

// A report of the layout before report/ (report.md, report.json and plots/ at the top of the
// study directory) would sit stale beside the new one: it is removed, once, with a note.
void remove_legacy_report(const fs::path& out) {
  std::error_code ec;
  if (!fs::exists(out / "report.md") || !fs::exists(out / "report.json")) return;
  for (const char* name : {"report.md", "report.json", "plots"}) fs::remove_all(out / name, ec);
  log_info("the report is now in {}/report/; the earlier report.md, report.json and plots/ beside stages/ were removed",
           out.string());
}

json assemble_report(OutqConfig& config, const std::vector<ModelPlan>& models, const fs::path& report_dir,
                     const std::map<std::string, json>& results, const std::string& data_dir,
                     const json& stage_times, const std::string& config_source) {
  const StudyConfig& sc = config.study;
  json r;
  r["format"] = "outq-study-report";
  r["version"] = kStudyVersion;
  r["config_source"] = config_source;
  r["command"] = config_source == "embedded default" ? "outq study" : "outq study --config " + config_source;
  r["study"] = {{"recipes", sc.recipes}, {"headline_baseline", sc.headline_baseline}, {"headline_qat", sc.headline_qat},
                {"headline_finetune", sc.finetune_fraction > 0 ? json(sc.headline_finetune) : json(nullptr)},
                {"runtime_recipes", sc.runtime_recipes}, {"eval_tokens", sc.eval_tokens},
                {"analyze_tokens", sc.analyze_tokens}, {"runtime_prefill", sc.runtime_prefill},
                {"runtime_decode", sc.runtime_decode}};
  r["config"] = json::parse(config_json(config_entries(config)));
  const ModelConfig& mc = config.model;
  r["setup"] = {{"parameters", config.model.parameter_count()}, {"hidden_size", mc.hidden_size}, {"layers", mc.num_hidden_layers},
                {"heads", mc.num_attention_heads}, {"intermediate_size", mc.intermediate_size},
                {"vocab_size", mc.vocab_size}, {"corpus", config.data.corpus + " (" + fs::path(data_dir).filename().string() + ")"},
                {"steps", config.train.steps}, {"tokens_per_step", config.train.batch_size * config.train.seq_len},
                {"train_tokens", config.train.steps * config.train.batch_size * config.train.seq_len},
                {"seed", config.train.seed}, {"qat_mode", config.qat.mode}, {"qat_bits", config.qat.bits},
                {"clip_init_from", config.qat.clip_init_from == "fixed" ? fmt::format("+-{}", config.qat.clip_init)
                                                                        : config.qat.clip_init_from},
                {"kurtosis_lambda", config.qat.kurtosis_lambda}, {"kurtosis_reduction", config.qat.kurtosis_reduction},
                {"test_tokens", results.at("eval-baseline-float").at("tokens")}, {"seq_len", mc.max_position_embeddings},
                {"threads", sc.threads}, {"isa", kernels::isa_name(kernels::isa_active())}};
  {  // the evaluation sample's uncertainty, and the GPTQ runs recipes shared (work not repeated)
    const json& f = results.at("eval-baseline-float");
    int gptq = 0, shared = 0;
    for (const auto& [name, res] : results) {  // GPTQ evaluations record whether their run was shared
      if (name.rfind("eval-", 0) != 0 || !res.contains("gptq_shared")) continue;
      ++gptq;
      shared += res.at("gptq_shared").get<bool>() ? 1 : 0;
    }
    r["setup"]["float_ppl_se"] = f.value("ppl_se", 0.0);
    r["setup"]["float_ppl"] = f.at("perplexity");
    r["setup"]["gptq_evaluations"] = gptq;
    r["setup"]["gptq_shared"] = shared;
  }
  for (const auto& m : models)
    if (!m.init_from.empty())
      r["setup"]["finetune"] = {{"fraction", sc.finetune_fraction}, {"steps", m.config.train.steps},
                                {"tokens", m.config.train.steps * m.config.train.batch_size * m.config.train.seq_len},
                                {"set", sc.finetune_set}, {"recipes", sc.finetune_recipes}, {"mode", m.config.qat.mode},
                                {"weight_bits", m.config.qat.weight_bits}, {"lr", m.config.train.lr}};
  r["models"] = json::array();
  r["evals"] = json::array();
  r["runtime"] = json::array();
  r["plots"] = json::object();
  for (const auto& m : models) {
    json train = results.at("train-" + m.id);
    const json curve = train.at("curve");
    train.erase("curve");
    const json& analysis = results.at("analyze-" + m.id);
    r["models"].push_back({{"id", m.id}, {"label", m.label}, {"mode", m.config.qat.mode},
                           {"weight_bits", m.config.qat.weight_bits}, {"init_from", m.init_from.empty() ? "" : "baseline"},
                           {"train", train}, {"curve", curve}, {"analysis", analysis}});
    for (const auto& [name, path] : analysis.at("plots").items()) copy_plot(r, report_dir, path.get<std::string>(), m.id + "-" + name);
    json e = results.at("eval-" + m.id + "-float");
    e.update({{"model", m.id}, {"recipe", "float"}});
    r["evals"].push_back(e);
    for (const auto& entry : sc.recipes) {
      const auto it = results.find("eval-" + m.id + "-" + stage_label(entry));
      if (it == results.end()) continue;  // not one of this model's recipes
      json x = it->second;
      x.update({{"model", m.id}, {"recipe", entry}});
      r["evals"].push_back(x);
    }
    for (const auto& entry : sc.runtime_recipes) {
      const auto it = results.find("runtime-" + m.id + "-" + stage_label(entry));
      if (it == results.end()) continue;
      json x = it->second;
      x.update({{"model", m.id}, {"recipe", entry},
                {"simulated_perplexity", results.at("eval-" + m.id + "-" + stage_label(entry)).at("perplexity")}});
      r["runtime"].push_back(x);
    }
  }
  r["kernels"] = results.at("kernels");
  r["cures"] = study_cures(r);
  double total = 0;
  for (const auto& s : stage_times) total += s.at("seconds").get<double>();
  r["stages"] = stage_times;
  r["total_seconds"] = total;
  return r;
}

}  // namespace

int run_study(const CommonOptions& common, OutqConfig& config) {
  if (g_nproc > 0) config.study.train_ranks = g_nproc;
  const StudyConfig& sc = config.study;
  torch::set_num_threads(sc.threads);
  config.train.threads = sc.threads;
  const auto t_start = std::chrono::steady_clock::now();
  print_effective_config(config);
  const StageCache cache(fs::path(sc.out) / "stages");

  log_info("study: preparing the corpus and tokenizer");
  const std::string data_dir = resolve_data_dir("", config);

  // The two models: the baseline is the same configuration in float mode.
  std::vector<ModelPlan> models;
  OutqConfig base = config;
  base.qat = QatConfig{};
  OUTQ_CHECK(config.qat.quantizes(), "qat.mode: the study's second model must learn clips; expected qat or qat+kurtosis, "
             "found \"", config.qat.mode, "\"");
  models.push_back({"baseline", "float baseline", base, cache.stage("train-baseline", training_key(base, data_dir)),
                    sc.headline_baseline, "", {}});
  models.push_back({"qat", config.qat.mode == "qat" ? "QAT" : "QAT + kurtosis", config,
                    cache.stage("train-qat", training_key(config, data_dir)), sc.headline_qat, "", {}});
  if (sc.finetune_fraction > 0) {
    const OutqConfig ft = finetune_config(config);
    json key = training_key(ft, data_dir);
    key["init_from"] = models.front().train.hash;
    models.push_back({"finetune", "QAT fine-tune", ft, cache.stage("train-finetune", key), sc.headline_finetune,
                      (models.front().train.dir / "model").string(), sc.finetune_recipes});
  }

  for (const auto& m : models)  // the ranks split each global batch evenly
    OUTQ_CHECK(m.config.train.batch_size % sc.train_ranks == 0, "study.train_ranks: expected a divisor of the ", m.label,
               " model's train.batch_size ", m.config.train.batch_size, " (the global batch, split evenly over the ranks), "
               "found ", sc.train_ranks);
  std::vector<std::pair<std::string, Recipe>> recipes;
  for (const auto& entry : sc.recipes) recipes.emplace_back(entry, study_recipe(entry));
  // A listed recipe by its entry (StudyConfig::validate checks that headline and runtime recipes are listed).
  auto recipe_of = [&](const std::string& entry) -> const Recipe& {
    return std::find_if(recipes.begin(), recipes.end(), [&](const auto& r) { return r.first == entry; })->second;
  };
  for (const auto& m : models) {  // a headline recipe that cannot run on its model is found before any work
    const std::string why = m.inapplicable(recipe_of(m.headline));
    OUTQ_CHECK(why.empty(), "study.headline_", m.id, ": \"", m.headline, "\" cannot run on the ", m.label, " model: it ", why,
               m.id == "finetune" ? " (see study.finetune_set)" : "");
  }
  const int64_t eval_tokens = sc.eval_tokens;

  // Seconds of the tiny model's stages on 2 cores (GPTQ runs shared) scale with their tokens per 16k
  // (0 = the whole split, about 40k of Brown); a first guess the progress view rescales as stages finish.
  auto per_16k = [](int64_t tokens) { return static_cast<double>(tokens > 0 ? tokens : 40000) / 16384.0; };

  // Plan every stage; results are filled in as they finish (or read from the cache).
  StudyMemory memory;
  std::vector<Planned> plan;
  std::map<std::string, json> results;
  auto model_dir = [&](const ModelPlan& m) { return (m.train.dir / "model").string(); };
  for (const auto& m : models)
    plan.push_back({m.train, train_estimate(m.config),
                    [m] { return study_train(m.config, m.train.dir.string(), m.init_from); }});
  for (const auto& m : models) {
    const Stage s = cache.stage("analyze-" + m.id, {{"train", m.train.hash}, {"tokens", sc.analyze_tokens}});
    plan.push_back({s, 6.0 * per_16k(sc.analyze_tokens), [&, m, s] {
                      return study_analyze(model_dir(m), m.train.dir.string(), data_dir, sc.analyze_tokens, s.dir.string());
                    }});
  }
  for (const auto& m : models) {
    const json base_key = {{"train", m.train.hash}, {"tokens", eval_tokens}, {"version", kStudyVersion},
                           {"eval_version", kEvalVersion}};
    plan.push_back({cache.stage("eval-" + m.id + "-float", base_key), 2.0 * per_16k(eval_tokens),
                    [&, m] { return study_eval(model_dir(m), nullptr, data_dir, config, eval_tokens, memory); }});
    for (const auto& [entry, recipe] : recipes) {
      if (!m.evaluates(entry)) continue;
      json key = base_key;
      key["recipe"] = recipe.source_text;
      const bool gptq = recipe.algorithm == WeightAlgorithm::kGptq;
      const Recipe* rp = &recipe;
      const std::string why = m.inapplicable(recipe);
      plan.push_back({cache.stage("eval-" + m.id + "-" + stage_label(entry), key), why.empty() ? (gptq ? 15.0 : 0.0) + 5.0 * per_16k(eval_tokens) : 0.0,
                      [&, m, rp, why] {
                        if (!why.empty()) return json{{"skipped", why}};
                        return study_eval(model_dir(m), rp, data_dir, config, eval_tokens, memory);
                      }});
    }
  }
  for (const auto& m : models)
    for (const auto& entry : sc.runtime_recipes) {
      const Recipe* rp = &recipe_of(entry);
      if (!m.evaluates(entry) || !m.inapplicable(*rp).empty()) continue;
      json key = {{"train", m.train.hash}, {"tokens", eval_tokens}, {"recipe", rp->source_text},
                  {"prefill", sc.runtime_prefill}, {"decode", sc.runtime_decode}, {"threads", sc.threads},
                  {"isa", kernels::isa_name(kernels::isa_active())}, {"version", kStudyVersion}};
      plan.push_back({cache.stage("runtime-" + m.id + "-" + stage_label(entry), key), 8.0 + 2.0 * per_16k(eval_tokens),
                      [&, m, rp] { return study_runtime(model_dir(m), *rp, data_dir, config, eval_tokens, memory); }});
    }
  {
    const json key = {{"model", json::parse(config.model.to_hf_json().dump())}, {"shapes", sc.bench_shapes},
                      {"threads", sc.threads}, {"isa", kernels::isa_name(kernels::isa_active())}, {"version", kStudyVersion}};
    plan.push_back({cache.stage("kernels", key), 45.0, [&] { return study_kernels(config); }});
  }

  // Each stage's record is read once: it decides the progress view and supplies the result.
  StudyProgress progress;
  std::vector<std::optional<json>> cached;
  for (const auto& p : plan) {
    cached.push_back(cache.result(p.stage));
    progress.add(p.stage.name, p.estimate, cached.back().has_value());
  }
  json stage_times = json::array();
  for (size_t i = 0; i < plan.size(); ++i) {
    const Planned& p = plan[i];
    progress.begin(i);
    json result;
    if (cached[i]) {
      result = std::move(*cached[i]);
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      try {
        result = p.work();
      } catch (const StudyInterrupted& s) {
        std::fprintf(stderr, "outq: study interrupted; run the same command again to resume\n");
        return 128 + s.signal;
      }
      result["stage_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      cache.finish(p.stage, result);
    }
    progress.end(i, result.value("stage_seconds", 0.0));
    stage_times.push_back({{"name", p.stage.name}, {"seconds", result.value("stage_seconds", 0.0)}});
    results[p.stage.name] = result;
  }

  // The report, from the stage results: rebuilt on every run (it is cheap), identical when
  // every stage was cached.
  // It goes to <out>/report/ (report.md, report.json, plots/) as one staged directory, so a
  // kill at any moment leaves the previous report or the new one, never a mix of the two.
  StagedDirectory report_dir(fs::path(sc.out) / "report");
  remove_legacy_report(sc.out);
  json report = assemble_report(config, models, report_dir.path(), results, data_dir, stage_times,
                                common.config_file.empty() ? "embedded default" : common.config_file);
  study_report_plots(report, report_dir.path());
  study_report_write(report, report_dir.path());
  report_dir.commit();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  if (common.json) {
    std::printf("%s\n", report.dump(2).c_str());
    return 0;
  }
  std::printf("\n%s\n", study_headline_table(report).render().c_str());
  for (const auto& c : study_conclusions(report)) std::printf("- %s\n", c.c_str());
  std::printf("\nreport: %s/report/report.md (and report.json, plots/ there); this run took %s\n", sc.out.c_str(),
              format_duration(wall).c_str());
  return 0;
}

namespace {

void add_options(CLI::App& app) {
  app.add_option("--nproc", g_nproc,
                 "train each model on this many data-parallel ranks (study.train_ranks; study.threads are split over them)")
      ->check(CLI::Range(1, 256));
}

}  // namespace

Command command_study() {
  return {"study",
          "the main job: train a float model, a QAT model and a QAT fine-tune of the float one, analyse, quantize "
          "with every recipe, evaluate, run the integer kernels, write report.md (cached stages, resumable)",
          "outq study   (or: outq study --config configs/study-long.toml --set study.out=runs/study-long)", add_options,
          run_study, builtin_config("study")};
}

}  // namespace outq::app
