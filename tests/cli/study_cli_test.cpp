// `outq study` end to end on a miniature configuration (tiny corpus, a few training steps, small
// evaluations): every section of the report is filled from real stage results; a rerun is all
// cached and prints the same report; a removed stage is redone alone and gives the same numbers
// (determinism); a changed setting reruns only the stages that depend on it; bad study settings
// are clear errors; a study killed at random moments leaves the earlier report or a complete new one.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

const std::string kOutq = OUTQ_BINARY;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t i = text.find(what); i != std::string::npos; i = text.find(what, i + 1)) ++n;
  return n;
}

class StudyCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    test::write_text(*dir_ / "corpus.txt", test::synthetic_text(80, 6));
    first_ = new test::RunResult(study(""));
  }
  static void TearDownTestSuite() {
    delete first_;
    delete dir_;
  }
  void SetUp() override { ASSERT_EQ(first_->exit_code, 0) << first_->err; }

  // The miniature study's command line (tiny corpus, model and budgets) with `extra` settings.
  static std::string study_command(const std::string& extra) {
    const std::string d = dir_->path().string();
    return kOutq + " study --set data.corpus=" + d + "/corpus.txt --set data.vocab_size=300 --set data.out=" + d + "/data" +
           " --set model.hidden_size=32 --set model.intermediate_size=64 --set model.num_hidden_layers=2"
           " --set model.num_attention_heads=2 --set model.num_key_value_heads=2 --set model.vocab_size=300"
           " --set model.max_position_embeddings=64 --set train.seq_len=64 --set train.batch_size=4"
           " --set train.steps=8 --set train.warmup_steps=2 --set train.eval_every=4 --set train.checkpoint_every=4"
           " --set train.stats_every=4 --set train.eval_tokens=1024 --set study.out=" + d + "/study" +
           " --set study.eval_tokens=2048 --set study.analyze_tokens=1024 --set 'study.bench_shapes=[\"model\"]'"
           " --set study.runtime_prefill=16 --set study.runtime_decode=4 --set study.finetune_fraction=0.5 --set study.threads=1"
           " --set study.train_ranks=1"
           " --set 'study.finetune_recipes=[\"w4a4-tensor-gptq\", \"w4a4-learned-lw\"]' " + extra;
  }
  static std::map<std::string, std::string> study_env() {
    return {{"OUTQ_CACHE", dir_->path().string() + "/cache"}, {"OUTQ_PROGRESS", "off"}};
  }
  static test::RunResult study(const std::string& extra) { return test::run_shell(study_command(extra), study_env()); }
  // A study with `settings` stops with exit code 1 and `message` on stderr.
  static void expect_study_error(const std::string& settings, const std::string& message) {
    const auto r = study(settings);
    EXPECT_EQ(r.exit_code, 1) << settings;
    EXPECT_NE(r.err.find(message), std::string::npos) << settings << "\n" << r.err;
  }
  static fs::path out() { return dir_->path() / "study"; }
  static test::TempDir* dir_;
  static test::RunResult* first_;
};
test::TempDir* StudyCli::dir_ = nullptr;
test::RunResult* StudyCli::first_ = nullptr;

TEST_F(StudyCli, ReportSectionsAreFilledFromStageResults) {
  const std::string md = slurp(out() / "report" / "report.md");
  for (const char* section : {"## Headline", "## Setup", "## Training", "## Outliers", "## All recipes", "## Integer runtime",
                              "## Kernel speeds", "## Stages"})
    EXPECT_NE(md.find(section), std::string::npos) << section;
  // The SmoothQuant rows are compared with the same recipes without it, per model.
  EXPECT_NE(md.find("SmoothQuant on the float baseline model (perplexity without -> with): w8a8-tensor-rtn "),
            std::string::npos);
  // The rotation rows next to their base recipe, and the post-training vs QAT comparison.
  EXPECT_NE(md.find("Rotation on the float baseline model (perplexity without -> with): w4a4-tensor-rtn "), std::string::npos);
  EXPECT_NE(md.find("The best post-training static per-tensor W4A4 on the float baseline, w4a4-tensor-"), std::string::npos);
  // Per-embedding groups and mixed precision next to the per-tensor recipe.
  EXPECT_NE(md.find("Per-embedding-group activations on the float baseline model (per tensor -> PEG): w4a4-tensor-gptq "),
            std::string::npos);
  EXPECT_NE(md.find("Mixed precision (16-bit integer down-projection input) on the float baseline model (perplexity without "
                    "-> with): w4a4-tensor-gptq "),
            std::string::npos);
  // The spike methods' findings and rows next to their base recipe.
  EXPECT_NE(md.find("Activation spikes on the float baseline model: largest spike ratio "), std::string::npos);
  EXPECT_NE(md.find("QFeP prefix <s> "), std::string::npos);
  EXPECT_NE(md.find("w4a4-tensor-gptq "), std::string::npos);
  EXPECT_NE(md.find(" -> qfem "), std::string::npos);
  const auto r = nlohmann::json::parse(slurp(out() / "report" / "report.json"));
  const auto& recipes = r.at("study").at("recipes");
  ASSERT_EQ(r.at("models").size(), 3u);
  // Every model has trained, been analysed and has a validation curve; the fine-tune (half the
  // baseline's 8 steps, evaluated every step) started from the baseline's weights: the trainer read
  // the baseline's token count from its model, and the curve continues from there.
  const int64_t base_tokens = 8 * 4 * 64;
  for (const auto& m : r.at("models")) {
    const bool ft = m.at("id") == "finetune";
    EXPECT_EQ(m.at("train").at("steps").get<int>(), ft ? 4 : 8);
    EXPECT_EQ(m.at("train").at("tokens").get<int64_t>(), ft ? base_tokens / 2 : base_tokens);
    EXPECT_EQ(m.at("train").at("base_tokens").get<int64_t>(), ft ? base_tokens : 0);
    EXPECT_EQ(m.at("curve").at("val_ppl").size(), ft ? 4u : 2u);
    EXPECT_EQ(m.at("curve").at("tokens").back().get<int64_t>(), ft ? base_tokens * 3 / 2 : base_tokens);
    EXPECT_EQ(m.at("weight_bits").get<int>(), ft ? 4 : 0);
    EXPECT_GT(m.at("analysis").at("tokens").get<int>(), 0);
    EXPECT_GT(m.at("analysis").at("max_abs").get<double>(), 0);
  }
  EXPECT_EQ(r.at("models").at(2).at("mode"), "lsq+kurtosis");
  // One evaluation per model and recipe (plus float), the fine-tune's only with study.finetune_recipes;
  // the learned-clip recipes are skipped on the float baseline, learned weights on both models without weight QAT.
  const std::vector<std::string> finetune_recipes = {"w4a4-tensor-gptq", "w4a4-learned-lw"};  // as the command sets
  EXPECT_EQ(r.at("setup").at("finetune").at("recipes").get<std::vector<std::string>>(), finetune_recipes);
  EXPECT_EQ(r.at("evals").size(), 2 * (recipes.size() + 1) + finetune_recipes.size() + 1);
  for (const auto& e : r.at("evals")) {
    const std::string recipe = e.at("recipe");
    const bool learned = recipe.find("learned") != std::string::npos;
    if ((e.at("model") == "baseline" && learned) || (e.at("model") != "finetune" && recipe == "w4a4-learned-lw")) {
      EXPECT_TRUE(e.contains("skipped")) << recipe;
      continue;
    }
    if (e.at("model") == "finetune") {
      EXPECT_TRUE(recipe == "float" ||
                  std::find(finetune_recipes.begin(), finetune_recipes.end(), recipe) != finetune_recipes.end())
          << recipe;
    }
    ASSERT_TRUE(e.contains("perplexity")) << e.dump();
    EXPECT_TRUE(std::isfinite(e.at("perplexity").get<double>())) << recipe;
    EXPECT_EQ(e.at("tokens"), r.at("setup").at("test_tokens")) << recipe;
    if (recipe != "float") {
      EXPECT_GE(e.at("kl").get<double>(), 0.0) << recipe;
      EXPECT_LE(e.at("top1").get<double>(), 1.0) << recipe;
    }
  }
  // The integer runtime ran every runtime recipe that applies (learned ones on the QAT model only),
  // and its perplexity is the simulation's up to the epilogue's float rounding.
  // Default runtime recipes: five plain ones (one with SmoothQuant, one with rotation, one with 16-bit
  // integer down-projection inputs) on the baseline and the QAT model, the learned-clip one on the QAT
  // model; on the fine-tune those of its recipes: W4A4 GPTQ and its learned weights.
  EXPECT_EQ(r.at("runtime").size(), 5u + 6u + 2u);
  for (const auto& x : r.at("runtime")) {
    EXPECT_NEAR(x.at("perplexity").get<double>(), x.at("simulated_perplexity").get<double>(),
                1e-3 * x.at("simulated_perplexity").get<double>());
    EXPECT_GT(x.at("decode_tokens_per_s").get<double>(), 0);
  }
  EXPECT_EQ(r.at("kernels").at("rows").size(), 3u * 2 * 2);  // 3 model shapes x M {1, 128} x {w8a8, w4a4}
  // The machine's limits are in the record and the report, and every kernel row has its percent.
  ASSERT_GE(r.at("kernels").at("machine_limits").size(), 3u);
  for (const auto& x : r.at("kernels").at("rows")) EXPECT_GT(x.at("percent_of_bound").get<double>(), 0.0);
  EXPECT_NE(md.find("Machine limits on"), std::string::npos);
  // The headline's numbers are the evaluations' numbers.
  // The headline's numbers are the evaluations' numbers, and each row says what its training cost.
  const std::regex headline(
      R"(\| float baseline \| 2,048 tokens, [0-9.ms]+ \| ([0-9.]+) ± [0-9.]+ \(W16A16\) \| w4a4-tensor-gptq \| ([0-9.]+) ± [0-9.]+ \|)");
  const std::regex ft_headline(
      R"(\| QAT fine-tune of the baseline \| \+1,024 tokens \(50% more\), [0-9.ms]+ \| ([0-9.]+) ± [0-9.]+ \| w4a4-learned-lw \| ([0-9.]+) ± [0-9.]+ \|)");
  std::smatch m, f;
  ASSERT_TRUE(std::regex_search(md, m, headline)) << md.substr(0, 2000);
  ASSERT_TRUE(std::regex_search(md, f, ft_headline)) << md.substr(0, 2000);
  int matched = 0;
  for (const auto& e : r.at("evals")) {
    const double p = e.contains("perplexity") ? e.at("perplexity").get<double>() : 0.0;
    if (e.at("model") == "baseline" && e.at("recipe") == "w4a4-tensor-gptq") matched += std::fabs(std::stod(m[2].str()) - p) < 0.01 * p;
    if (e.at("model") == "finetune" && e.at("recipe") == "float") matched += std::fabs(std::stod(f[1].str()) - p) < 0.01 * p;
    if (e.at("model") == "finetune" && e.at("recipe") == "w4a4-learned-lw") matched += std::fabs(std::stod(f[2].str()) - p) < 0.01 * p;
  }
  EXPECT_EQ(matched, 3);
  EXPECT_NE(md.find("- QAT fine-tuning of the float baseline (+1,024 tokens (50% more), "), std::string::npos);
  // Conclusions are sentences with numbers in them, and plots exist where the report links them.
  EXPECT_GE(count(md.substr(md.find("## Headline"), md.find("## Setup") - md.find("## Headline")), "\n- "), 5);
  if (test::run_shell("command -v gnuplot").exit_code == 0) {
    for (const char* p : {"curves", "recipes", "baseline-heatmap", "qat-heatmap", "qat-emergence"}) {
      ASSERT_TRUE(r.at("plots").contains(p)) << p;
      EXPECT_GT(fs::file_size(out() / "report" / r.at("plots").at(p).get<std::string>()), 1000u) << p;
    }
  }
  EXPECT_NE(first_->out.find("report: "), std::string::npos);
}

// The cures table leads the report; every cell is the record of the evaluation stage it names
// (perplexity and standard error read back from stages/*/done.json), the expected cures are
// there, the recommendation names the best static W4A4 cure, and every perplexity of the report's
// recipe table carries its standard error, computed over the evaluation's windows.
TEST_F(StudyCli, CuresTableAndRecommendationComeFromStageRecords) {
  const std::string md = slurp(out() / "report" / "report.md");
  ASSERT_NE(md.find("## Cures"), std::string::npos);
  EXPECT_LT(md.find("## Cures"), md.find("## Headline"));
  const auto r = nlohmann::json::parse(slurp(out() / "report" / "report.json"));
  // The stage record of an evaluation: stages/eval-<model>-<recipe>-<hash>/done.json.
  auto record = [&](const std::string& model, const std::string& recipe) {
    const std::string prefix = "eval-" + model + "-" + recipe + "-";
    for (const auto& e : fs::directory_iterator(out() / "stages")) {
      const std::string name = e.path().filename().string();
      if (name.rfind(prefix, 0) == 0 && name.find('-', prefix.size()) == std::string::npos)
        return nlohmann::json::parse(slurp(e.path() / "done.json")).at("result");
    }
    return nlohmann::json();
  };
  std::set<std::string> cures;
  double best_static = 1e30;
  std::string best_cure;
  for (const auto& c : r.at("cures")) {
    cures.insert(c.at("cure").get<std::string>());
    for (const char* format : {"w8a8", "w4a4"}) {
      if (c.at(format).is_null()) continue;
      const auto& cell = c.at(format);
      const auto rec = record(c.at("model"), cell.at("recipe"));
      ASSERT_TRUE(rec.is_object()) << c.dump();
      EXPECT_EQ(cell.at("perplexity"), rec.at("perplexity")) << c.dump();
      EXPECT_EQ(cell.at("ppl_se"), rec.at("ppl_se")) << c.dump();
      EXPECT_GT(rec.at("ppl_se").get<double>(), 0.0);
      char text[64];
      std::snprintf(text, sizeof text, "%.2f ± %.2f (%s)", rec.at("perplexity").get<double>(), rec.at("ppl_se").get<double>(),
                    cell.at("recipe").get<std::string>().c_str());
      EXPECT_NE(md.find(text), std::string::npos) << text;
      if (std::string(format) == "w4a4" && !cell.at("per_token_scale").get<bool>() &&
          rec.at("perplexity").get<double>() < best_static)
        best_static = rec.at("perplexity").get<double>(), best_cure = c.at("cure").get<std::string>();
    }
  }
  for (const char* cure : {"none", "per-token scales", "SmoothQuant", "QFeM", "QFeP", "rotation", "PEG", "mixed precision",
                           "QAT + kurtosis from scratch", "QAT fine-tune of the baseline"})
    EXPECT_TRUE(cures.count(cure)) << cure;
  EXPECT_NE(md.find("For static W4A4 on this model use **" + best_cure + "**"), std::string::npos) << best_cure;
  // The recipe table: every evaluated perplexity with its standard error; the windows are recorded.
  const size_t rows = md.find("\n|", md.find("## All recipes"));  // the table, after its introduction
  const std::string table = md.substr(rows, md.find("## Integer runtime") - rows);
  int evaluated = 0;
  for (const auto& e : r.at("evals")) {
    if (!e.contains("perplexity")) continue;
    ++evaluated;
    EXPECT_EQ(e.at("window_nll").size(), e.at("window_tokens").size());
    EXPECT_GE(e.at("window_nll").size(), 2u);
  }
  EXPECT_EQ(count(table, " ± "), evaluated);
}

TEST_F(StudyCli, RerunIsCachedAndIdentical) {
  const std::string before = slurp(out() / "report" / "report.md");
  const auto again = study("");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(count(again.err, ": starting;"), 0) << again.err;
  EXPECT_GT(count(again.err, "(cached)"), 20);
  EXPECT_EQ(slurp(out() / "report" / "report.md"), before);
  // Without the fine-tune: the other models' stages are the same (all cached), the report has two models.
  const auto without = study("--set study.finetune_fraction=0");
  ASSERT_EQ(without.exit_code, 0) << without.err;
  EXPECT_EQ(count(without.err, ": starting;"), 0) << without.err;
  const auto r = nlohmann::json::parse(slurp(out() / "report" / "report.json"));
  EXPECT_EQ(r.at("models").size(), 2u);
  EXPECT_TRUE(r.at("study").at("headline_finetune").is_null());
  EXPECT_EQ(slurp(out() / "report" / "report.md").find("QAT fine-tune"), std::string::npos);
  ASSERT_EQ(study("").exit_code, 0);  // the report back as the other tests expect it
  EXPECT_EQ(slurp(out() / "report" / "report.md"), before);
}

TEST_F(StudyCli, RemovedStageIsRedoneAloneWithTheSameNumbers) {
  const auto before = nlohmann::json::parse(slurp(out() / "report" / "report.json"));
  int removed = 0;
  const std::string stage = "eval-qat-w4a4-tensor-rtn-";  // then the hash (not "rot-<hash>")
  for (const auto& e : fs::directory_iterator(out() / "stages")) {
    const std::string name = e.path().filename().string();
    if (name.rfind(stage, 0) == 0 && name.find('-', stage.size()) == std::string::npos)
      removed += fs::remove(e.path() / "done.json");
  }
  ASSERT_EQ(removed, 1);
  const auto again = study("");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(count(again.err, ": starting;"), 1) << again.err;
  // The same figures; only the measured times differ.
  auto figures = [](nlohmann::json evals) {
    for (auto& e : evals)
      for (const char* t : {"seconds", "stage_seconds", "quantize_seconds"}) e.erase(t);
    return evals;
  };
  const auto after = nlohmann::json::parse(slurp(out() / "report" / "report.json"));
  EXPECT_EQ(figures(after.at("evals")), figures(before.at("evals")));
}

TEST_F(StudyCli, ChangedEvaluationSettingKeepsTheTrainedModels) {
  const auto again = study("--set study.out=" + (*dir_ / "study") + " --set study.eval_tokens=1024");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.err.find("train-baseline: done earlier (cached)"), std::string::npos) << again.err;
  EXPECT_NE(again.err.find("train-qat: done earlier (cached)"), std::string::npos);
  EXPECT_NE(again.err.find("train-finetune: done earlier (cached)"), std::string::npos);
  EXPECT_NE(again.err.find("eval-baseline-float: starting"), std::string::npos);
  // Put the report back as the other tests expect it.
  ASSERT_EQ(study("").exit_code, 0);
}

// Every file under `dir` by relative path, with its bytes.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> files;
  if (!fs::exists(dir)) return files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files[fs::relative(e.path(), dir).string()] = slurp(e.path());
  return files;
}

// The figures of the evaluations, without the measured times.
nlohmann::json eval_figures(const fs::path& report_json) {
  nlohmann::json evals = nlohmann::json::parse(slurp(report_json)).at("evals");
  for (auto& e : evals)
    for (const char* t : {"seconds", "stage_seconds", "quantize_seconds"}) e.erase(t);
  return evals;
}

// Removes the records of stages that redo work on the QAT model (its analysis, which writes plots,
// and three of its evaluations, which quantize and save models), so that a run spends its time in
// real stage work, not only in the report, yet stays short (20 of them run in CI).
int forget_qat_stages(const fs::path& stages) {
  std::vector<fs::path> evals;
  int n = 0;
  for (const auto& e : fs::directory_iterator(stages)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("analyze-qat-", 0) == 0) n += fs::remove(e.path() / "done.json");
    if (name.rfind("eval-qat-", 0) == 0) evals.push_back(e.path());
  }
  std::sort(evals.begin(), evals.end());
  for (size_t i = 0; i < evals.size() && i < 3; ++i) n += fs::remove(evals[i] / "done.json");
  return n;
}

// A study killed with SIGKILL at 20 random moments while it redoes stages and writes its report
// leaves, each time, the report that was there before or a complete new one (report.md and
// report.json of the same run, every plot the report names), and every stage record whole. The
// run after the kills gives the same figures as before them and leaves no staging directory or
// temporary file behind (those of the killed processes are cleaned up).
TEST_F(StudyCli, KilledStudyLeavesTheEarlierOrACompleteReport) {
  const fs::path report = out() / "report", stages = out() / "stages";
  const auto figures = eval_figures(report / "report.json");
  // How long a run that redoes the QAT model's stages takes, to draw kill moments within it.
  ASSERT_EQ(forget_qat_stages(stages), 4);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(study("").exit_code, 0);
  const double full = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> moment(0.0, 1.2 * full);  // some kills land after the report is in place
  int replaced = 0;
  for (int i = 0; i < 12; ++i) {  // 12 random moments (20 cost CI half a minute more)
    const auto before = snapshot(report);
    forget_qat_stages(stages);
    const int pid = test::spawn_shell(study_command(""), study_env());
    // Kill at the drawn moment, unless the run has finished by then (then it simply completed).
    const auto kill_at = std::chrono::steady_clock::now() + std::chrono::duration<double>(moment(rng));
    int status = 0;
    bool exited = false;
    while (!exited && std::chrono::steady_clock::now() < kill_at) {
      exited = ::waitpid(pid, &status, WNOHANG) == pid;
      if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!exited) {
      ::kill(pid, SIGKILL);
      test::wait_process(pid);
    }
    const auto now = snapshot(report);
    if (now == before) continue;
    ++replaced;
    // A new report: complete, and of one run (its markdown made from its JSON).
    ASSERT_TRUE(now.count("report.md") && now.count("report.json")) << "kill " << i << ": report/ incomplete";
    const auto r = nlohmann::json::parse(now.at("report.json"));
    EXPECT_EQ(r.at("format"), "outq-study-report");
    const std::string& md = now.at("report.md");
    EXPECT_NE(md.find("Reproduce: `"), std::string::npos) << "kill " << i;
    for (const auto& x : r.at("runtime")) {
      char tps[64];  // as the report prints it
      std::snprintf(tps, sizeof tps, "%.1f", x.at("decode_tokens_per_s").get<double>());
      EXPECT_NE(md.find(tps), std::string::npos) << "kill " << i << ": report.md is not of report.json's run";
    }
    for (const auto& [name, rel] : r.at("plots").items()) EXPECT_TRUE(now.count(rel.get<std::string>())) << rel;
    // Every stage record that exists is whole.
    for (const auto& e : fs::directory_iterator(stages)) {
      if (!fs::exists(e.path() / "done.json")) continue;
      EXPECT_NO_THROW(nlohmann::json::parse(slurp(e.path() / "done.json"))) << e.path();
    }
  }
  ASSERT_EQ(study("").exit_code, 0);
  EXPECT_EQ(eval_figures(report / "report.json"), figures);
  std::vector<std::string> leftovers;
  for (const auto& e : fs::recursive_directory_iterator(out())) {
    const std::string name = e.path().filename().string();
    if (name.find(".staging.") != std::string::npos || name.find(".old.") != std::string::npos ||
        name.find(".tmp.") != std::string::npos)
      leftovers.push_back(e.path().string());
  }
  EXPECT_TRUE(leftovers.empty()) << leftovers.front();
  std::printf("study killed 12 times (runs of %.1f s); %d kills came after the new report was in place\n", full, replaced);
}

// The pids of the processes whose command line contains `text`.
std::vector<int> processes_with(const std::string& text) {
  std::vector<int> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = slurp(e.path() / "cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(text) != std::string::npos) out.push_back(std::stoi(name));
  }
  return out;
}

// study.train_ranks=2: the three training stages run as `outq train --nproc 2` children and
// reproduce the one-process models (their stage keys do not change, so the evaluations stay
// cached); a study killed while its ranks train leaves no rank behind, and the rerun resumes.
// Tolerance on the final losses 1e-3 relative: 2-row vs 4-row float sums, amplified in the LSQ
// fine-tune's ranges (train_dist_test measures 5.8e-5 on such losses).
TEST_F(StudyCli, TrainingStagesRunOnDataParallelRanks) {
  const fs::path copy = *dir_ / "study-ranks";
  fs::remove_all(copy);
  fs::copy(out(), copy, fs::copy_options::recursive);
  int removed = 0;
  for (const auto& e : fs::directory_iterator(copy / "stages"))
    if (e.path().filename().string().rfind("train-", 0) == 0) removed += fs::remove_all(e.path()) > 0;
  ASSERT_EQ(removed, 3);
  const std::string settings = "--set study.out=" + copy.string() + " --set study.train_ranks=2";

  // Killed (SIGKILL) while its ranks train: they get SIGTERM, stop, and none is left running.
  const int pid = test::spawn_shell(study_command(settings), study_env());
  const std::string marker = (copy / "stages").string();
  std::vector<int> ranks;
  for (int i = 0; i < 6000 && ranks.size() < 3; ++i) {  // the launcher and its two ranks
    ranks = processes_with(marker);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(ranks.size(), 3u) << "the training children were not seen";
  ::kill(pid, SIGKILL);
  test::wait_process(pid);
  for (int i = 0; i < 600 && !processes_with(marker).empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(processes_with(marker).empty()) << "training processes outlived the killed study";
  for (const auto& e : fs::directory_iterator(copy / "stages"))  // stopped, not left to finish on their own
    EXPECT_FALSE(fs::exists(e.path() / "model")) << e.path();

  const auto r = study(settings);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count(r.err, "launching 2 data-parallel ranks"), 3) << r.err;
  EXPECT_EQ(count(r.err, ": starting;"), 3) << r.err;  // the trainings only
  const auto one = nlohmann::json::parse(slurp(out() / "report" / "report.json"));
  const auto two = nlohmann::json::parse(slurp(copy / "report" / "report.json"));
  ASSERT_EQ(two.at("models").size(), one.at("models").size());
  for (size_t i = 0; i < one.at("models").size(); ++i) {
    const auto& a = one.at("models")[i].at("train");
    const auto& b = two.at("models")[i].at("train");
    EXPECT_EQ(b.at("ranks"), 2);
    EXPECT_EQ(b.at("steps"), a.at("steps"));
    for (const char* k : {"train_loss", "val_loss"})
      EXPECT_NEAR(b.at(k).get<double>(), a.at(k).get<double>(), 1e-3 * a.at(k).get<double>()) << i << " " << k;
  }
  EXPECT_NE(slurp(copy / "report" / "report.md").find(" (2 ranks)"), std::string::npos);
  expect_study_error("--set study.out=" + copy.string() + " --set study.train_ranks=3",
                     "study.train_ranks: expected a divisor of the float baseline model's train.batch_size 4");
}

TEST_F(StudyCli, BadSettingsAreClearErrors) {
  expect_study_error("--set study.headline_qat=w4a4-nothing", "study.headline_qat: expected one of study.recipes");
  expect_study_error("--set 'study.recipes=[\"w4a4-tensor-gptq\", \"no-such-recipe\"]' --set 'study.runtime_recipes=[]'"
                     " --set study.headline_qat=w4a4-tensor-gptq --set study.finetune_fraction=0",
                     "\"no-such-recipe\" is neither a recipe file nor a built-in recipe");
  expect_study_error("--set 'study.recipes=[\"w4a4-tensor-gptq\", \"w4a4-learned-gptq\", \"w4a4-tensor-gptq\"]'",
                     "\"w4a4-tensor-gptq\" is listed twice");
  expect_study_error("--set 'study.finetune_set=[\"model.hidden_size=64\"]'",
                     "study.finetune_set: expected train.* or qat.* settings");
  expect_study_error("--set 'study.finetune_set=[\"qat.mode=lsq\"]'",  // no weight QAT: no learned weights to headline
                     "study.headline_finetune: \"w4a4-learned-lw\" cannot run on the QAT fine-tune model: it needs "
                     "learned weight steps");
  expect_study_error("--set 'study.finetune_set=[\"qat.mode=float\"]'",
                     "study.finetune_set: the fine-tune must learn activation ranges");
  expect_study_error("--set 'study.finetune_recipes=[\"w8a8-tensor-rtn-sq\"]'",
                     "study.headline_finetune: expected one of study.finetune_recipes");
  expect_study_error("--set qat.mode=float", "expected qat or qat+kurtosis");
}

}  // namespace
}  // namespace outq
