// The work of the `outq study` stages (see study_stages.h).
#include "study_stages.h"

#include <fmt/format.h>

#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>

#include "model_source.h"
#include "outq/analysis/analyze.h"
#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/log.h"
#include "outq/eval/perplexity.h"
#include "outq/kernels/isa.h"
#include "outq/kernels/machine_limits.h"
#include "outq/model/block_schema.h"
#include "outq/ptq/method.h"
#include "outq/ptq/quantize_model.h"
#include "outq/train/trainer.h"
#include "rank_launcher.h"
#include "speed.h"
#include "train_result.h"

// Generated from recipes/*.toml (cmake/OutqEmbed.cmake).
const std::vector<std::pair<std::string, std::string>>& outq_builtin_recipes();

namespace fs = std::filesystem;

namespace outq::app {
namespace {

using json = nlohmann::json;

constexpr int64_t kBatch = 8;

// The validation curve from the run's metrics.jsonl; tokens start at base_tokens.
json read_curve(const std::string& run_dir, int64_t tokens_per_step, int64_t base_tokens) {
  json curve = {{"step", json::array()}, {"tokens", json::array()}, {"val_ppl", json::array()}};
  std::ifstream in(fs::path(run_dir) / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || j.value("type", "") != "eval") continue;
    const int64_t step = j.at("step").get<int64_t>();
    curve["step"].push_back(step);
    curve["tokens"].push_back(base_tokens + step * tokens_per_step);
    curve["val_ppl"].push_back(j.at("val_ppl").get<double>());
  }
  return curve;
}

PerplexityOptions eval_options(const LoadedModel& lm, int64_t max_tokens) {
  PerplexityOptions o;
  o.seq_len = lm.model->config().max_position_embeddings;
  o.max_tokens = max_tokens;
  o.batch_size = kBatch;
  o.bos_id = lm.tokenizer->bos_id();
  return o;
}

// The evaluation's figures; with the per-window NLL sums, so the report can pair two evaluations of
// the same windows, and the standard errors (the perplexity's to first order: ppl x that of the NLL).
json eval_json(const PerplexityResult& r) {
  const double se = r.nll_standard_error();
  json j = {{"perplexity", r.perplexity()}, {"mean_nll", r.mean_nll()},     {"nll_se", se},
            {"ppl_se", r.perplexity() * se}, {"tokens", r.tokens},          {"window", r.window},
            {"seconds", r.seconds},          {"window_nll", r.window_nll}, {"window_tokens", r.window_tokens}};
  if (r.has_reference) j.update({{"kl", r.kl_mean()}, {"top1", r.top1_agreement()}});
  return j;
}

// Quantizes lm with `recipe`, with calibration data from the train split when the recipe needs it.
QuantizedModel quantize_for_study(LoadedModel& lm, const Recipe& recipe, const std::string& model_dir,
                                  const std::string& data_dir, OutqConfig& config, GptqCache& gptq) {
  std::unique_ptr<TokenShard> calib;
  if (recipe_needs_calibration_data(recipe))
    calib = open_calibration_shard("", data_dir, config, *lm.tokenizer, tokenizer_path(model_dir));
  return quantize_model(lm.model, recipe, calib.get(), lm.tokenizer->bos_id(), lm.learned ? &*lm.learned : nullptr,
                        lm.learned_weights ? &*lm.learned_weights : nullptr, &gptq);
}

// What the spike methods found, for the report: QFeM's exclusion and largest spike ratio, QFeP's prefix.
json method_findings(const QuantizedModel& q, const Tokenizer& tokenizer) {
  json out = json::object();
  for (const auto& m : q.methods) {
    if (m.name == "qfem") {
      json top = nullptr;
      for (const auto& s : m.state.at("spikes"))
        if (top.is_null() || s.at("ratio").get<double>() > top.at("ratio").get<double>()) top = s;
      out["qfem"] = {{"excluded", m.state.at("excluded")}, {"threshold", m.state.value("threshold", json(nullptr))},
                     {"top_module", top.is_null() ? json(nullptr) : top.at("module")},
                     {"top_ratio", top.is_null() ? json(nullptr) : top.at("ratio")}};
    } else if (m.name == "qfep" && q.prefix) {
      out["qfep"] = {{"prefix", describe_tokens(tokenizer, q.prefix->tokens)}, {"ids", q.prefix->tokens},
                     {"top_module", m.state.value("top_module", json(nullptr))},
                     {"top_ratio", m.state.value("top_ratio", json(nullptr))}};
    }
  }
  return out;
}

// Trains `config` (its run_dir set) as `outq train --nproc ranks` in a child process, each rank
// with study.threads / ranks threads, from a TOML file of the configuration written beside the
// run (train-config.toml); returns the run's result as `outq train --json` printed it.
json train_on_local_ranks(OutqConfig config, int ranks, bool resume, const std::string& init_from) {
  const fs::path run_dir = config.train.run_dir;
  config.train.threads = std::max(1, config.study.threads / ranks);
  fs::create_directories(run_dir);
  const fs::path config_file = run_dir / "train-config.toml", result_file = run_dir / "train-result.json";
  write_file_atomic(config_file, "# written by outq study: this training stage's configuration\n" +
                                     config_toml(config_entries(config)));
  std::vector<std::string> args = {"train", "--config", config_file.string(), "--nproc", std::to_string(ranks), "--json"};
  if (resume) args.push_back("--resume");
  if (!init_from.empty()) args.insert(args.end(), {"--init-from", init_from});
  const int code = run_self(args, result_file.string(), fmt::format("training on {} ranks", ranks));
  if (code == 128 + SIGINT || code == 128 + SIGTERM) throw StudyInterrupted{code - 128};
  OUTQ_CHECK(code == 0, "study: the training in ", run_dir.string(), " on ", ranks, " ranks failed (exit code ", code,
             "; its messages are above)");
  const json r = json::parse(read_file(result_file.string(), "training result"), nullptr, false);
  OUTQ_CHECK(!r.is_discarded() && r.is_object() && r.contains("stopped_by_signal"), "study: ", result_file.string(),
             ": expected the JSON result of `outq train --json`");
  return r;
}

}  // namespace

std::vector<std::string> builtin_recipe_names() {
  std::vector<std::string> out;
  for (const auto& [name, text] : outq_builtin_recipes()) out.push_back(name);
  return out;
}

Recipe study_recipe(const std::string& entry) {
  auto checked = [](Recipe r) {
    make_methods(r);  // the methods' settings are checked when the study is planned
    return r;
  };
  if (fs::is_regular_file(entry)) return checked(recipe_load(entry));
  for (const auto& [name, text] : outq_builtin_recipes())
    if (name == entry) return checked(recipe_parse(text, "built-in recipe " + name));
  std::string names;
  for (const auto& n : builtin_recipe_names()) names += (names.empty() ? "" : ", ") + n;
  throw Error(fmt::format("study.recipes: \"{}\" is neither a recipe file nor a built-in recipe (built-in: {})", entry, names));
}

json study_train(OutqConfig config, const std::string& run_dir, const std::string& init_from) {
  config.train.run_dir = run_dir;
  const bool resume = train_has_checkpoint(run_dir);
  if (resume) log_info("resuming the training in {}", run_dir);
  const int ranks = config.study.train_ranks;
  json r;
  if (ranks == 1) {
    const TrainOptions options{config.data, config.model, config.train, config.qat, config_json(config_entries(config)),
                               resume, init_from};
    r = train_result_json(train_run(options));
  } else {
    r = train_on_local_ranks(config, ranks, resume, init_from);
  }
  if (const int sig = r.at("stopped_by_signal").get<int>()) throw StudyInterrupted{sig};
  const int64_t tokens_per_step = config.train.batch_size * config.train.seq_len;
  json out;
  for (const char* k : {"steps", "tokens", "base_tokens", "train_loss", "val_loss", "val_ppl", "seconds", "tokens_per_second",
                        "model_dir", "ranks"})
    out[k] = r.at(k);
  out["curve"] = read_curve(run_dir, tokens_per_step, r.at("base_tokens").get<int64_t>());
  return out;
}

json study_analyze(const std::string& model_dir, const std::string& run_dir, const std::string& data_dir, int64_t tokens,
                   const std::string& out_dir) {
  LoadedModel lm = load_model_dir(model_dir);
  const TokenShard shard = open_eval_shard(data_dir, "val", *lm.tokenizer, model_dir);
  AnalyzeOptions o;
  o.max_tokens = tokens;
  o.seq_len = lm.model->config().max_position_embeddings;
  o.batch_size = kBatch;
  o.bos_id = lm.tokenizer->bos_id();
  const AnalysisResult r = analyze_model(lm.model, shard, o);
  fs::create_directories(out_dir);
  json full = analysis_json(r, lm.tokenizer.get());
  const auto series = emergence_from_metrics(run_dir);
  write_file_atomic(fs::path(out_dir) / "analysis.json", full.dump(1) + "\n");
  write_file_atomic(fs::path(out_dir) / "summary.txt", analysis_summary(r, lm.tokenizer.get()));

  // Summary over the quantized layers' inputs (q/k/v, o, gate/up, down), by input type too.
  json by_type = json::object();
  int64_t outliers = 0;
  double max_abs = 0, kurt_sum = 0, kurt_max = 0, spike_max = 0;
  int n = 0;
  for (const auto& p : r.points) {
    if (p.kind != PointKind::kLinearInput) continue;
    const double pmax = p.max_abs.empty() ? 0.0 : *std::max_element(p.max_abs.begin(), p.max_abs.end());
    outliers += static_cast<int64_t>(p.outlier_channels.size());
    max_abs = std::max(max_abs, pmax);
    kurt_sum += p.kurtosis_mean;
    kurt_max = std::max(kurt_max, p.kurtosis_max);
    spike_max = std::max(spike_max, p.spike_ratio_max);
    ++n;
    std::string type;  // "self_attn.q_proj.input": the point's name within its block
    split_block_module(p.name, nullptr, &type);
    json& t = by_type[type];
    if (t.is_null()) t = {{"outlier_channels", 0}, {"max_abs", 0.0}};
    t["outlier_channels"] = t["outlier_channels"].get<int64_t>() + static_cast<int64_t>(p.outlier_channels.size());
    t["max_abs"] = std::max(t["max_abs"].get<double>(), pmax);
  }
  double weight_spread = 0;
  for (const auto& w : r.weights) weight_spread = std::max(weight_spread, w.in_max_median);
  json plots = json::object();
  try {
    analysis_plots(r, out_dir);
    for (const char* p : {"heatmap", "spikes", "weights"}) plots[p] = (fs::path(out_dir) / (std::string(p) + ".png")).string();
    if (!series.empty()) {
      emergence_plot(series, (fs::path(out_dir) / "emergence.png").string());
      plots["emergence"] = (fs::path(out_dir) / "emergence.png").string();
    }
  } catch (const Error& e) {
    log_warn("analysis plots not drawn: {}", e.what());
  }
  return {{"outlier_channels", outliers}, {"max_abs", max_abs}, {"kurtosis_mean", n ? kurt_sum / n : 0.0},
          {"kurtosis_max", kurt_max}, {"spike_ratio_max", spike_max}, {"weight_in_max_median", weight_spread},
          {"by_input", by_type}, {"tokens", r.tokens}, {"plots", plots}};
}

json study_eval(const std::string& model_dir, const Recipe* recipe, const std::string& data_dir, OutqConfig& config,
                int64_t max_tokens, StudyMemory& memory) {
  LoadedModel lm = load_model_dir(model_dir);
  const TokenShard shard = open_eval_shard(data_dir, "test", *lm.tokenizer, model_dir);
  json out = json::object();
  if (recipe != nullptr) {
    const QuantizedModel q = quantize_for_study(lm, *recipe, model_dir, data_dir, config, memory.gptq);
    // What the recipe costs on its own: a GPTQ run shared with an earlier recipe counts its time.
    out["quantize_seconds"] = q.gptq_reused ? q.seconds + q.gptq_seconds : q.seconds;
    if (recipe->algorithm == WeightAlgorithm::kGptq) out["gptq_shared"] = q.gptq_reused;
    out.update({{"weights", recipe->weights.describe()}, {"activations", recipe->activations.describe()},
                {"label", recipe->label()}, {"w_bits", recipe->weights.enabled() ? recipe->weights.bits : 16},
                {"a_bits", recipe->activations.enabled() ? recipe->activations.bits : 16},
                {"a_granularity", granularity_name(recipe->activations.granularity)},
                {"a_dynamic", recipe->activations.dynamic}, {"methods_label", recipe->methods_label()},
                {"mixed_precision", std::any_of(recipe->overrides.begin(), recipe->overrides.end(),
                                                [&](const ModuleOverride& o) {
                                                  return o.has_activations && o.activations.bits > recipe->activations.bits;
                                                })}});
    if (!q.methods.empty()) out["methods"] = method_findings(q, *lm.tokenizer);
    // The same model unquantized, for KL / top-1; after a QFeP prefix both continue after it.
    // Its logits are kept for the model's next evaluations when they take at most 1 GiB.
    PerplexityOptions o = eval_options(lm, max_tokens);
    o.prefix = q.prefix.get();
    const int64_t tokens = max_tokens > 0 ? std::min<int64_t>(max_tokens, shard.size()) : shard.size();
    const bool keep = tokens * lm.model->config().vocab_size * 4 <= (int64_t{1} << 30);
    if (memory.reference_model != model_dir) {
      memory.reference_model = model_dir;
      memory.reference = {};
    }
    ReferenceLogits* kept = keep ? &memory.reference : nullptr;
    std::optional<LoadedModel> reference;
    if (o.prefix || !kept || !kept->complete) reference = load_model_dir(model_dir);
    out.update(eval_json(evaluate_perplexity(lm.model, shard, o, reference ? &reference->model : nullptr, kept)));
  } else {
    out.update({{"weights", "off"}, {"activations", "off"}, {"label", "W16A16"}, {"w_bits", 16}, {"a_bits", 16}});
    out.update(eval_json(evaluate_perplexity(lm.model, shard, eval_options(lm, max_tokens))));
  }
  return out;
}

json study_runtime(const std::string& model_dir, const Recipe& recipe, const std::string& data_dir, OutqConfig& config,
                   int64_t max_tokens, StudyMemory& memory) {
  const StudyConfig& sc = config.study;
  LoadedModel lm = load_model_dir(model_dir);
  const TokenShard shard = open_eval_shard(data_dir, "test", *lm.tokenizer, model_dir);
  const ModelSpeed f = measure_model_speed(lm.model, sc.runtime_prefill, sc.runtime_decode, 0.3);
  const QuantizedModel q = quantize_for_study(lm, recipe, model_dir, data_dir, config, memory.gptq);
  const IntegerRuntimeReport report = attach_integer_runtime(lm.model, q);
  OUTQ_CHECK(report.float_layers.empty(), "study.runtime_recipes: ", recipe.name, " cannot run on the integer kernels: ",
             report.float_layers.empty() ? "" : report.float_layers.front());
  PerplexityOptions o = eval_options(lm, max_tokens);
  o.prefix = q.prefix.get();
  const PerplexityResult integer = evaluate_perplexity(lm.model, shard, o);
  const ModelSpeed s = measure_model_speed(lm.model, sc.runtime_prefill, sc.runtime_decode, 0.3, q.prefix.get());
  return {{"perplexity", integer.perplexity()}, {"tokens", integer.tokens},
          {"prefill_tokens_per_s", s.prefill}, {"decode_tokens_per_s", s.decode}, {"float_prefill_tokens_per_s", f.prefill},
          {"float_decode_tokens_per_s", f.decode}, {"integer_layers", report.integer_layers},
          {"weight_only_layers", report.weight_only_layers}, {"packed_bytes", report.packed_bytes}, {"isa", kernels::isa_name(kernels::isa_active())}};
}

json study_kernels(const OutqConfig& config) {
  const auto shapes = kernel_shapes(config.model, config.study.bench_shapes);
  const KernelPeaks peaks = measure_kernel_peaks(config.study.threads);
  const json rows =
      bench_kernels(shapes, {1, 128}, {parse_kernel_format("w8a8"), parse_kernel_format("w4a4")}, 0.1, nullptr, &peaks);
  return {{"isa", kernels::isa_name(kernels::isa_active())}, {"threads", config.study.threads}, {"rows", rows},
          {"machine_limits", peaks.json}, {"int8_peak", peaks.int8_name}, {"bound", peaks.bound_text()},
          {"cpu", kernels::cpu_model_name()}};
}

}  // namespace outq::app
