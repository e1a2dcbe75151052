// `outq quantize` and `outq eval` with recipes on a tiny trained model: a quantized directory
// evaluates to exactly the perplexity of the same recipe simulated on the fly (RTN and GPTQ,
// static and dynamic activations); sweeps, KL against itself; and bad recipes, group sizes,
// unmatched globs and a calibration shard from another tokenizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <random>
#include <sstream>
#include <thread>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

const std::string kOutq = OUTQ_BINARY;
const std::string kRecipes = OUTQ_SOURCE_DIR "/recipes/";

class QuantizeCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    test::write_text(*dir_ / "corpus.txt", test::synthetic_text(80, 6));
    const auto r = outq("train --set train.steps=12 --set train.eval_every=0 --set train.run_dir=" + *dir_ / "run");
    setup_error_ = r.exit_code == 0 ? "" : r.err;
  }
  void SetUp() override { ASSERT_EQ(setup_error_, "") << "training the test model failed"; }
  static void TearDownTestSuite() { delete dir_; }
  static std::string data_args(const std::string& data = "data", int vocab = 300) {
    return " --set data.corpus=" + *dir_ / "corpus.txt" + " --set data.vocab_size=" + std::to_string(vocab) +
           " --set data.out=" + *dir_ / data;
  }
  static std::string command(const std::string& args) {
    return kOutq + " " + args + data_args() +
           " --set model.hidden_size=32 --set model.intermediate_size=64"
           " --set model.num_hidden_layers=2 --set model.num_attention_heads=2"
           " --set model.num_key_value_heads=2"
           " --set model.vocab_size=300 --set model.max_position_embeddings=64"
           " --set train.seq_len=64 --set train.batch_size=4 --set train.eval_tokens=1024";
  }
  static std::map<std::string, std::string> env() {
    return {{"OUTQ_CACHE", *dir_ / "cache"}, {"OUTQ_PROGRESS", "off"}, {"OUTQ_LOG", "quiet"}};
  }
  static test::RunResult outq(const std::string& args) { return test::run_shell(command(args), env()); }
  static std::string model() { return *dir_ / "run/model"; }
  static double ppl(const test::RunResult& r) { return nlohmann::json::parse(r.out)["perplexity"].get<double>(); }
  static test::TempDir* dir_;
  static std::string setup_error_;
};
test::TempDir* QuantizeCli::dir_ = nullptr;
std::string QuantizeCli::setup_error_;

TEST_F(QuantizeCli, QuantizedDirectoryEqualsOnTheFlySimulation) {
  for (const char* recipe : {"w8a8-tensor-rtn", "w4a4-token-gptq", "w4a8-token-rtn", "w4a4-tensor-gptq-sq", "w8a8-token-rtn-sq",
                             "w4a4-tensor-gptq-rot"}) {
    const std::string out = *dir_ / (std::string("q-") + recipe);
    const auto q = outq("quantize --model " + model() + " --recipe " + kRecipes + recipe + ".toml --out " + out);
    ASSERT_EQ(q.exit_code, 0) << q.err;
    for (const char* f : {"model.safetensors", "quant_config.json", "recipe.toml", "config.json", "tokenizer.model"})
      EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
    const auto from_dir = outq("eval --model " + out + " --split val --json --simulate");
    const auto on_the_fly = outq("eval --model " + model() + " --recipe " + kRecipes + recipe + ".toml --split val --json");
    ASSERT_EQ(from_dir.exit_code, 0) << from_dir.err;
    ASSERT_EQ(on_the_fly.exit_code, 0) << on_the_fly.err;
    EXPECT_NEAR(ppl(from_dir), ppl(on_the_fly), 1e-9 * ppl(on_the_fly)) << recipe;
    // Without --simulate the linear layers run on the integer kernels: exact integer sums instead
    // of float32 ones, so the perplexity moves only in the last digits (see runtime_test).
    const auto integer = outq("eval --model " + out + " --split val --json");
    ASSERT_EQ(integer.exit_code, 0) << integer.err;
    EXPECT_NE(integer.out.find("integer kernels"), std::string::npos) << integer.out;
    EXPECT_NEAR(ppl(integer), ppl(on_the_fly), 1e-3 * ppl(on_the_fly)) << recipe;
  }
  // 4-bit weights are packed two per byte: the int4 file is smaller than the int8 one.
  EXPECT_LT(fs::file_size(*dir_ / "q-w4a8-token-rtn/model.safetensors"),
            fs::file_size(*dir_ / "q-w8a8-tensor-rtn/model.safetensors"));
  // SmoothQuant directories record the method; the quantize table names it.
  const auto qc = nlohmann::json::parse(test::read_text(*dir_ / "q-w4a4-tensor-gptq-sq/quant_config.json"));
  EXPECT_EQ(qc["version"], 2);
  EXPECT_EQ(qc["methods"][0]["name"], "smoothquant");
  EXPECT_EQ(qc["methods"][0]["tensors"].size(), 4u);  // 2 blocks x (qkv, gate_up)
  // A rotated directory records the rotation, and its config says the norms are fused.
  const auto rot = nlohmann::json::parse(test::read_text(*dir_ / "q-w4a4-tensor-gptq-rot/quant_config.json"));
  EXPECT_EQ(rot["methods"][0]["name"], "rotate");
  EXPECT_EQ(rot["methods"][0]["state"]["r4"], true);
  const auto cfg = nlohmann::json::parse(test::read_text(*dir_ / "q-w4a4-tensor-gptq-rot/config.json"));
  EXPECT_EQ(cfg["outq_rotated_by"], "rotate");
}

// QFeM + QFeP: the directory holds the threshold curve (CSV, PNG) and the prefix's cache; evaluating
// it (simulated) equals the recipe on the fly, both continuing after the prefix with 62-token
// windows; the integer runtime runs it; generation and bench continue after the prefix.
TEST_F(QuantizeCli, SpikeMethodsRoundTripThroughTheCli) {
  const std::string recipe = kRecipes + "w8a8-tensor-rtn-qfem-qfep.toml", out = *dir_ / "q-spikes";
  const auto q = outq("quantize --model " + model() + " --recipe " + recipe + " --out " + out + " --json");
  ASSERT_EQ(q.exit_code, 0) << q.err;
  const auto qj = nlohmann::json::parse(q.out);
  ASSERT_EQ(qj["prefix"]["ids"].size(), 3u) << q.out;
  EXPECT_EQ(qj["prefix"]["pieces"][0], "<s>");
  for (const char* f : {"qfem_threshold.csv", "qfem_threshold.png"}) EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  const auto qc = nlohmann::json::parse(test::read_text(out + "/quant_config.json"));
  ASSERT_EQ(qc["methods"].size(), 2u);
  EXPECT_EQ(qc["methods"][0]["name"], "qfep");
  EXPECT_EQ(qc["methods"][1]["name"], "qfem");
  EXPECT_EQ(qc["methods"][1]["state"]["spikes"].size(), 8u);  // 2 blocks x 4 slots
  const auto from_dir = outq("eval --model " + out + " --split val --json --simulate");
  const auto on_the_fly = outq("eval --model " + model() + " --recipe " + recipe + " --split val --json");
  ASSERT_EQ(from_dir.exit_code, 0) << from_dir.err;
  ASSERT_EQ(on_the_fly.exit_code, 0) << on_the_fly.err;
  EXPECT_NEAR(ppl(from_dir), ppl(on_the_fly), 1e-9 * ppl(on_the_fly));
  EXPECT_EQ(nlohmann::json::parse(from_dir.out)["window"], 62);
  const auto integer = outq("eval --model " + out + " --split val --json");
  ASSERT_EQ(integer.exit_code, 0) << integer.err;
  EXPECT_NE(integer.out.find("continues after a 3-token float prefix"), std::string::npos) << integer.out;
  EXPECT_NEAR(ppl(integer), ppl(on_the_fly), 1e-3 * ppl(on_the_fly));
  const auto gen = outq("generate --model " + out + " --prompt hello --max-new-tokens 5 --temperature 0 --json");
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_LE(nlohmann::json::parse(gen.out)["tokens"].get<int>(), 5);
  const auto bench = outq("bench --no-kernels --model " + model() + " --prefill 8 --decode 4 --min-time 0.01 --json --quantized " + out);
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  const auto row = nlohmann::json::parse(bench.out).at("runtime").at("rows").at(1);
  EXPECT_EQ(row.at("prefix_tokens"), 3);
  EXPECT_GT(row.at("decode_tokens_per_s_without_prefix_same_context").get<double>(), 0);
}

// --out never destroys what quantize did not make: the input model, a directory holding it, a
// file, a directory with other contents (unless --overwrite). An earlier quantized output is
// replaced. Each refusal is one line, exit 1, and leaves everything as it was.
TEST_F(QuantizeCli, OutputDirectoryNeverDestroysOtherData) {
  const std::string recipe = " --recipe " + kRecipes + "w8a8-token-rtn.toml";
  const std::string notes = *dir_ / "notes", file = *dir_ / "notes.txt";
  test::write_text(notes + "/keep.txt", "user data");
  test::write_text(file, "user file");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {model(), "would replace or write into the input"},
      {*dir_ / "run", "would replace or write into the input"},
      {model() + "/q", "would replace or write into the input"},
      {notes, "is not an earlier output of this command (no quant_config.json)"},
      {file, "is an existing file"},
  };
  for (const auto& [out, message] : cases) {
    const auto r = outq("quantize --model " + model() + recipe + " --out " + out);
    EXPECT_EQ(r.exit_code, 1) << out;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_EQ(test::read_text(notes + "/keep.txt"), "user data");
  EXPECT_EQ(test::read_text(file), "user file");
  EXPECT_TRUE(fs::exists(model() + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(model() + "/q"));
  // An earlier quantized output is replaced; --overwrite replaces other directories.
  const std::string q = *dir_ / "q-again";
  ASSERT_EQ(outq("quantize --model " + model() + recipe + " --out " + q).exit_code, 0);
  ASSERT_EQ(outq("quantize --model " + model() + recipe + " --out " + q).exit_code, 0);
  const auto r = outq("quantize --model " + model() + recipe + " --out " + notes + " --overwrite");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(notes + "/quant_config.json"));
  EXPECT_FALSE(fs::exists(notes + "/keep.txt"));
}

// Bad outlier-method settings: one line on stderr, exit 1, no output directory.
TEST_F(QuantizeCli, BadMethodSettings) {
  const std::string base = "[weights]\nbits = 8\nsymmetric = true\n[activations]\nbits = 8\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"methods = [\"smoothqaunt\"]\n" + base, "unknown outlier method 'smoothqaunt' (available: smoothquant"},
      {"methods = [\"smoothquant\", \"smoothquant\"]\n" + base, "\"smoothquant\" is listed twice"},
      {"methods = [\"smoothquant\"]\n" + base + "[smoothquant]\nalfa = 0.5\n", "unknown smoothquant setting 'alfa'"},
      {"methods = [\"smoothquant\"]\n" + base + "[smoothquant]\nalpha = 1.2\n", "expected alpha in [0, 1], found 1.2"},
      {"methods = [\"smoothquant\"]\n" + base + "[smoothquant]\nslots = [\"down\"]\n", "slot \"down\" (mlp.down_proj) has no norm"},
      {base + "[smoothquant]\nalpha = 0.5\n", "needs the method in `methods`"},
      {"methods = [\"qfem\"]\n" + base + "[qfem]\ntolerance = 2\n", "expected a relative tolerance in [0, 1], found 2"},
      {"methods = [\"qfem\"]\n" + base + "[qfem]\nmodules = [\"model.layers.9.mlp.down_proj\"]\n", "matches no linear module"},
      {"methods = [\"smoothquant\", \"qfep\"]\n" + base, "expected qfep listed first"},
      {"methods = [\"qfep\"]\n" + base + "[qfep]\ncandidates = 0\n", "expected a whole number in 1..64, found 0"},
      {"methods = [\"smoothquant\", \"rotate\"]\n" + base, "expected rotate first"},
      {"methods = [\"rotate\"]\n" + base + "[rotate]\nr1 = \"givens\"\n", "rotate.r1: expected \"hadamard\", \"orthogonal\" or \"none\""},
  };
  int i = 0;
  for (const auto& [text, message] : cases) {
    const std::string recipe = *dir_ / ("method-" + std::to_string(i) + ".toml"), out = *dir_ / ("om" + std::to_string(i));
    ++i;
    test::write_text(recipe, text);
    const auto r = outq("quantize --model " + model() + " --recipe " + recipe + " --out " + out);
    EXPECT_EQ(r.exit_code, 1) << text;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(out)) << text;
    // eval --sweep checks every recipe before it runs any.
    const auto sweep = outq("eval --model " + model() + " --split val --sweep " + kRecipes + "w8a8-token-rtn.toml " + recipe);
    EXPECT_EQ(sweep.exit_code, 1) << text;
    EXPECT_NE(sweep.err.find(message), std::string::npos) << sweep.err;
  }
}

// bench --quantized times quantized directories as they are (here with SmoothQuant) in alternating
// rounds next to the float model; a float directory is refused.
TEST_F(QuantizeCli, BenchTimesQuantizedDirectories) {
  const std::string q = *dir_ / "bench-sq";
  auto r = outq("quantize --model " + model() + " --recipe " + kRecipes + "w8a8-token-rtn-sq.toml --out " + q);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string args = "bench --no-kernels --model " + model() + " --prefill 8 --decode 4 --min-time 0.01 --json";
  r = outq(args + " --quantized " + q + " --rounds 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = nlohmann::json::parse(r.out).at("runtime").at("rows");
  ASSERT_EQ(rows.size(), 3u);  // float + 2 rounds
  for (int i = 1; i <= 2; ++i) {
    EXPECT_EQ(rows[i].at("recipe"), "w8a8-token-rtn-sq");
    EXPECT_EQ(rows[i].at("methods"), "smoothquant");
    EXPECT_EQ(rows[i].at("round"), i);
    EXPECT_GT(rows[i].at("decode_tokens_per_s").get<double>(), 0);
  }
  r = outq(args + " --quantized " + model());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("expected a quantized model directory"), std::string::npos) << r.err;
}

TEST_F(QuantizeCli, QatModelClipsBecomeStaticRanges) {
  // A QAT model's clips.json gives the static A4 ranges of the "learned" recipes; the quantized
  // directory (which stores them) evaluates like the on-the-fly simulation.
  const std::string run = *dir_ / "qat-run";
  auto r = outq("train --set train.steps=6 --set train.eval_every=0 --set qat.mode=qat --set train.run_dir=" + run);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(fs::exists(run + "/model/clips.json"));
  const std::string out = *dir_ / "q-learned";
  r = outq("quantize --model " + run + "/model --recipe " + kRecipes + "w4a4-learned-gptq.toml --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto from_dir = outq("eval --model " + out + " --split val --json --simulate");
  const auto on_the_fly = outq("eval --model " + run + "/model --recipe " + kRecipes + "w4a4-learned-gptq.toml --split val --json");
  ASSERT_EQ(from_dir.exit_code, 0) << from_dir.err;
  ASSERT_EQ(on_the_fly.exit_code, 0) << on_the_fly.err;
  EXPECT_NEAR(ppl(from_dir), ppl(on_the_fly), 1e-9 * ppl(on_the_fly));
  // A model trained without QAT has no clips: one clear error.
  r = outq("eval --model " + model() + " --recipe " + kRecipes + "w16a4-learned.toml --split val");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("learned clips"), std::string::npos) << r.err;
}

TEST_F(QuantizeCli, BenchRunsEveryIsaAndTheRuntime) {
  const std::string args = " bench --json --shapes model --m 1 3 --prefill 8 --decode 4 --min-time 0 --threads 1"
                           " --set model.hidden_size=32 --set model.intermediate_size=64 --set model.num_hidden_layers=2"
                           " --set model.num_attention_heads=2 --set model.num_key_value_heads=2 --set model.vocab_size=300"
                           " --set model.max_position_embeddings=64";
  for (const char* isa : {"ref", "avx2", "avx_vnni", "avx512_vnni", "amx_int8"}) {
    const auto r = test::run_shell(kOutq + args, {{"OUTQ_ISA", isa}, {"OUTQ_LOG", "quiet"}});
    if (r.exit_code != 0 && r.err.find("does not support") != std::string::npos) continue;  // CPU lacks it
    ASSERT_EQ(r.exit_code, 0) << isa << ": " << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["isa"], isa);
    EXPECT_EQ(j["kernels"].size(), 3u * 2u * 3u);  // shapes x M x formats
    if (std::string(isa) != "ref") {  // the machine limits of that ISA, and each row's percent of its bound
      ASSERT_GE(j["machine_limits"].size(), 3u) << isa;
      for (const auto& l : j["machine_limits"]) EXPECT_GT(l["rate"].get<double>(), 0.0) << l["name"];
      for (const auto& row : j["kernels"]) EXPECT_GT(row["percent_of_bound"].get<double>(), 0.0);
    }
    EXPECT_EQ(j["runtime"]["rows"].size(), 4u);     // float + three formats
    for (const auto& row : j["runtime"]["rows"]) EXPECT_GT(row["decode_tokens_per_s"].get<double>(), 0.0);
  }
  const auto bad = test::run_shell(kOutq + args, {{"OUTQ_ISA", "sse9"}});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("expected ref, avx2, avx_vnni, avx512_vnni or amx_int8"), std::string::npos) << bad.err;
  const auto fmt_bad = test::run_shell(kOutq + args + " --formats w2a2", {});
  EXPECT_EQ(fmt_bad.exit_code, 1);
  EXPECT_NE(fmt_bad.err.find("kernel format: expected w8a8, w4a8 or w4a4, found 'w2a2'"), std::string::npos) << fmt_bad.err;
}

TEST_F(QuantizeCli, SweepTableAndKlAgainstItself) {
  const auto s = outq("eval --model " + model() + " --split val --sweep " + kRecipes + "w8a8-token-rtn.toml " + kRecipes +
                      "w4a4-tensor-rtn.toml");
  ASSERT_EQ(s.exit_code, 0) << s.err;
  for (const char* needle : {"float", "w8a8-token-rtn", "w4a4-tensor-rtn", "Δ% vs float", "KL", "top-1 agree"})
    EXPECT_NE(s.out.find(needle), std::string::npos) << needle << "\n" << s.out;
  const auto self = outq("eval --model " + model() + " --kl-base " + model() + " --split val --json");
  ASSERT_EQ(self.exit_code, 0) << self.err;
  const auto j = nlohmann::json::parse(self.out);
  EXPECT_NEAR(j["kl_mean"].get<double>(), 0.0, 1e-9);
  EXPECT_DOUBLE_EQ(j["top1_agreement"].get<double>(), 1.0);
}

TEST_F(QuantizeCli, BadRecipesAndInputs) {
  test::write_text(*dir_ / "bad-key.toml", "[weights]\nbits = 4\nmode = \"x\"\n");
  auto r = outq("quantize --model " + model() + " --recipe " + *dir_ / "bad-key.toml --out " + *dir_ / "o1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown recipe key 'weights.mode'"), std::string::npos) << r.err;

  test::write_text(*dir_ / "group.toml", "[weights]\nbits = 4\ngranularity = \"group\"\ngroup_size = 5\n");
  r = outq("quantize --model " + model() + " --recipe " + *dir_ / "group.toml --out " + *dir_ / "o2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("weights.group_size: expected a divisor of the input width 32, found 5"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(*dir_ / "o2"));

  test::write_text(*dir_ / "glob.toml", "[weights]\nbits = 8\nsymmetric = true\n[[override]]\nmodules = \"layers.*.mlp\"\n"
                                        "weights = { bits = 4 }\n");
  r = test::run_shell(kOutq + " quantize --model " + model() + " --recipe " + *dir_ / "glob.toml --out " + *dir_ / "o3",
                      {{"OUTQ_CACHE", *dir_ / "cache"}, {"OUTQ_PROGRESS", "off"}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: recipe glob: override 'layers.*.mlp' matches no module (modules are named like "
                       "model.layers.0.self_attn.q_proj"), std::string::npos) << r.err;

  // Per-embedding groups beyond the width and an unknown tensor name: one line, exit 1, nothing written.
  test::write_text(*dir_ / "peg.toml", "[activations]\nbits = 8\ngranularity = \"peg\"\npeg_groups = 40\ndynamic = true\n");
  r = outq("quantize --model " + model() + " --recipe " + *dir_ / "peg.toml --out " + *dir_ / "o6");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("activations.peg_groups: expected at most the input width 32 (one channel per group), found 40"),
            std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(*dir_ / "o6"));
  test::write_text(*dir_ / "tensors.toml", "full_integer = true\n[activations]\nbits = 8\ndynamic = true\n"
                                           "[[tensors]]\npoints = \"model.layers.*.residual_ffn\"\nactivations = { bits = 16 }\n");
  r = outq("quantize --model " + model() + " --recipe " + *dir_ / "tensors.toml --out " + *dir_ / "o7");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tensors.points: expected a glob on tensor names such as"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'model.layers.*.residual_ffn' names none"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(*dir_ / "o7"));

  // A calibration shard made with another tokenizer.
  const auto other = test::run_shell(kOutq + " data" + data_args("data-other", 310),
                                     {{"OUTQ_CACHE", *dir_ / "cache"}, {"OUTQ_PROGRESS", "off"}});
  ASSERT_EQ(other.exit_code, 0) << other.err;
  r = outq("quantize --model " + model() + " --recipe " + kRecipes + "w8a8-tensor-rtn.toml --calib " + *dir_ /
           "data-other/train.bin --out " + *dir_ / "o4");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("made with a different tokenizer"), std::string::npos) << r.err;

  ASSERT_EQ(outq("quantize --model " + model() + " --recipe " + kRecipes + "w8a8-token-rtn.toml --out " + *dir_ / "q8").exit_code, 0);
  r = outq("quantize --model " + *dir_ / "q8 --recipe " + kRecipes + "w8a8-tensor-rtn.toml --out " + *dir_ / "o5");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("expected a float model directory"), std::string::npos) << r.err;
}

// `outq sensitivity` end to end on the tiny model: ranking, files, a suggested recipe that
// `quantize` accepts; 16-bit integer activations with grouped weights run simulated, said so.
TEST_F(QuantizeCli, SensitivityWritesRankingAndARecipe) {
  test::write_text(*dir_ / "full.toml", "name = \"full\"\nfull_integer = true\n[weights]\nbits = 8\nsymmetric = true\n"
                                        "granularity = \"channel\"\n[activations]\nbits = 4\n[calibration]\nwindows = 8\nseq_len = 32\n");
  const std::string out = *dir_ / "sens";
  auto r = outq("sensitivity --model " + model() + " --recipe " + *dir_ / "full.toml --out " + out +
                " --max-tokens 512 --per-layer-types 1 --max-16bit 2 --tolerance 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ranking (most sensitive first"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("residual_mlp"), std::string::npos) << r.out;
  for (const char* f : {"sensitivity.json", "sensitivity.csv", "full-mp.toml"}) EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  const auto j = nlohmann::json::parse(test::read_text(out + "/sensitivity.json"));
  EXPECT_EQ(j["leave_one_out"].size(), 15u);
  EXPECT_EQ(j["per_layer_leave_one_out"].size(), 2u);
  const auto q = outq("quantize --model " + model() + " --recipe " + out + "/full-mp.toml --out " + *dir_ / "q-mp");
  EXPECT_EQ(q.exit_code, 0) << q.err;
  r = outq("sensitivity --model " + model() + " --recipe " + *dir_ / "full.toml --out " + out + " --tolerance nan");
  EXPECT_EQ(r.exit_code, 2);  // a usage error (the option's range)
  // int16 activations with grouped weights: the layers stay simulated and the compute line says why.
  test::write_text(*dir_ / "i16g.toml", "[weights]\nbits = 4\ngranularity = \"group\"\ngroup_size = 16\n"
                                        "[activations]\nbits = 16\ninteger = true\ngranularity = \"token\"\ndynamic = true\n");
  ASSERT_EQ(outq("quantize --model " + model() + " --recipe " + *dir_ / "i16g.toml --out " + *dir_ / "q-i16g").exit_code, 0);
  r = outq("eval --model " + *dir_ / "q-i16g --split val --max-tokens 256");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("on 0 linear layers; 14 simulated in float (first: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(": 16-bit integer activations with grouped weights"), std::string::npos) << r.out;
}

TEST_F(QuantizeCli, AnalyzeWritesStatisticsPlotsAndEmergence) {
  const std::string out = *dir_ / "analysis";
  const auto r = outq("analyze --model " + model() + " --max-tokens 4000 --out " + out + " --run-dir " + *dir_ / "run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"analysis.json", "summary.txt", "heatmap.png", "weights.png", "spikes.png", "emergence.png"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  const auto j = nlohmann::json::parse(test::read_text(out + "/analysis.json"));
  EXPECT_EQ(j["format"], "outq-analysis");
  EXPECT_GT(j["points"].size(), 20u);
  EXPECT_EQ(j["weights"].size(), 14u);  // 7 linears x 2 layers
  EXPECT_FALSE(j["emergence"].empty());
  EXPECT_NE(r.out.find("largest activations"), std::string::npos) << r.out;
}

TEST_F(QuantizeCli, AnalyzeOutputDirectoryPolicy) {
  // --out replaces only an earlier analysis (built aside, moved into place complete), never an input
  // or someone's directory unless --overwrite; no staging directory is left next to it.
  const std::string args = "analyze --model " + model() + " --max-tokens 2000 --data-dir " + *dir_ / "data";
  const std::string foreign = *dir_ / "notes";
  fs::create_directories(foreign);
  test::write_text(foreign + "/mine.txt", "keep me");
  auto r = outq(args + " --out " + foreign);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is not an earlier output of this command (no analysis.json)"), std::string::npos) << r.err;
  EXPECT_EQ(test::read_text(foreign + "/mine.txt"), "keep me");
  EXPECT_FALSE(fs::exists(foreign + "/analysis.json"));
  r = outq(args + " --out " + model());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("would replace or write into the input"), std::string::npos) << r.err;
  const std::string out = *dir_ / "analysis-again";
  ASSERT_EQ(outq(args + " --out " + out).exit_code, 0);
  test::write_text(out + "/stale.txt", "from before");
  r = outq(args + " --out " + out);  // an earlier analysis: replaced as a whole
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out + "/analysis.json"));
  EXPECT_FALSE(fs::exists(out + "/stale.txt"));
  r = outq(args + " --out " + foreign + " --overwrite");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(foreign + "/mine.txt"));
  for (const auto& e : fs::directory_iterator(fs::path(*dir_ / "")))
    EXPECT_EQ(e.path().filename().string().find(".staging."), std::string::npos) << e.path();
}

// The contents of `names` under `dir` ("" for a missing file), without the lines that state how
// long the command took (`"seconds":`, "analysed ... in 2.8 s").
std::vector<std::string> contents(const std::string& dir, const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const auto& n : names) {
    std::istringstream in(fs::exists(dir + "/" + n) ? test::read_text(dir + "/" + n) : "");
    std::string kept, line;
    while (std::getline(in, line))
      if (line.find("\"seconds\":") == std::string::npos && line.rfind("analysed ", 0) != 0) kept += line + "\n";
    out.push_back(kept);
  }
  return out;
}

// `args` writes `out`; it runs `times` times killed with SIGKILL at a random moment of a run's
// duration, alternately with no `out` yet and with a complete earlier output there (of
// `before_args`). After each kill `out` must be what was there before (nothing, or the earlier
// output) or wholly the new output (`compared` byte for byte, `files` present), never a mix or a
// partial directory; a last normal run succeeds and leaves no staging or replaced copy next to
// `out` (those of the killed processes are cleaned up).
template <class Run, class Command>
void expect_kills_leave_complete_outputs(Run run, Command command, const std::map<std::string, std::string>& env,
                                         const std::string& before_args, const std::string& args, const std::string& out,
                                         const std::vector<std::string>& files, const std::vector<std::string>& compared,
                                         int times) {
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run(args).exit_code, 0);
  const double full = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto fresh = contents(out, compared);
  ASSERT_EQ(run(before_args).exit_code, 0);
  const auto before = contents(out, compared);
  ASSERT_NE(before, fresh) << "the two outputs must differ for the test to tell them apart";
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> moment(0.0, full);
  for (int i = 0; i < times; ++i) {
    const bool from_nothing = i % 2 == 0;
    if (from_nothing) {
      fs::remove_all(out);
    } else if (contents(out, compared) != before) {
      ASSERT_EQ(run(before_args).exit_code, 0);
    }
    const int pid = test::spawn_shell(command(args), env);
    std::this_thread::sleep_for(std::chrono::duration<double>(moment(rng)));
    ::kill(pid, SIGKILL);
    test::wait_process(pid);
    if (from_nothing && !fs::exists(out)) continue;  // killed before the move: still nothing
    for (const auto& f : files) ASSERT_TRUE(fs::exists(out + "/" + f)) << "kill " << i << ": " << f << " missing";
    const auto now = contents(out, compared);
    std::string differs;
    for (size_t f = 0; f < compared.size(); ++f)
      differs += compared[f] + (now[f] == before[f] ? " = earlier, " : now[f] == fresh[f] ? " = new, " : " = neither, ");
    ASSERT_TRUE(now == fresh || (!from_nothing && now == before))
        << "kill " << i << (from_nothing ? " (no earlier output)" : "") << ": a partial or mixed output: " << differs;
  }
  ASSERT_EQ(run(args).exit_code, 0);
  EXPECT_EQ(contents(out, compared), fresh);
  for (const auto& e : fs::directory_iterator(fs::path(out).parent_path())) {
    const std::string name = e.path().filename().string();
    EXPECT_TRUE(name.find(".staging.") == std::string::npos && name.find(".old.") == std::string::npos) << name;
  }
}

TEST_F(QuantizeCli, KilledQuantizeAndAnalyzeLeaveCompleteOutputs) {
  const std::string root = *dir_ / "kills";
  fs::create_directories(root);
  auto run = [](const std::string& a) { return outq(a); };
  auto cmd = [](const std::string& a) { return command(a); };
  const std::string q = "quantize --model " + model() + " --out " + root + "/q --recipe " + kRecipes;
  expect_kills_leave_complete_outputs(run, cmd, env(), q + "w4a8-token-rtn.toml", q + "w8a8-token-rtn.toml", root + "/q",
                                      {"model.safetensors", "config.json", "tokenizer.model"},
                                      {"quant_config.json", "recipe.toml", "model.safetensors"}, 20);
  const std::string a = "analyze --model " + model() + " --data-dir " + *dir_ / "data" + " --out " + root + "/a";
  expect_kills_leave_complete_outputs(run, cmd, env(), a + " --max-tokens 1000", a + " --max-tokens 2000", root + "/a",
                                      {"heatmap.png", "weights.png", "spikes.png"}, {"analysis.json", "summary.txt"}, 20);
}

TEST_F(QuantizeCli, AnalyzeBadInputs) {
  // Statistics are written even without gnuplot; the missing plots are an error that says so.
  fs::create_directories(*dir_ / "nobin");
  auto r = test::run_shell(kOutq + " analyze --model " + model() + " --max-tokens 2000 --data-dir " + *dir_ / "data" +
                               " --out " + *dir_ / "a-noplot",
                           {{"PATH", *dir_ / "nobin"}, {"OUTQ_PROGRESS", "off"}, {"OUTQ_LOG", "quiet"}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("statistics written to"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("gnuplot not found"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(*dir_ / "a-noplot/analysis.json"));

  // An evaluation shard made with another tokenizer.
  ASSERT_EQ(test::run_shell(kOutq + " data" + data_args("data-other2", 310), {{"OUTQ_CACHE", *dir_ / "cache"}}).exit_code, 0);
  r = outq("analyze --model " + model() + " --data-dir " + *dir_ / "data-other2 --max-tokens 2000");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("expected the tokenizer of"), std::string::npos) << r.err;

  // A checkpoint series whose configurations differ.
  fs::create_directories(*dir_ / "series");
  fs::copy(model(), *dir_ / "series/step-0000001", fs::copy_options::recursive);
  fs::copy(model(), *dir_ / "series/step-0000002", fs::copy_options::recursive);
  auto cfg = nlohmann::json::parse(test::read_text(*dir_ / "series/step-0000002/config.json"));
  cfg["num_attention_heads"] = 4;
  test::write_text(*dir_ / "series/step-0000002/config.json", cfg.dump());
  r = outq("analyze --model " + model() + " --max-tokens 2000 --checkpoints " + *dir_ / "series");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("all checkpoints must be of the same model"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace outq
