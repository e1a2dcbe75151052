// Bad input across every command (issue 23's suite): each case sets up a bad file, option or
// setting in a scratch directory, runs outq, and asserts the exit code (1: bad input, 2: bad
// command line), one clear line naming what was wrong (a fragment of it is checked), and that
// nothing under the working directory was written or changed (every file's path and bytes
// before and after). Uses a tiny model trained once for the suite, no network.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

const std::string kOutq = OUTQ_BINARY;
const std::string kRecipes = OUTQ_SOURCE_DIR "/recipes/";

// Every file under `root`, by path, with its bytes.
std::map<std::string, std::string> snapshot(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_directory()) {
      out[e.path().string() + "/"] = "";
    } else if (e.is_regular_file()) {
      out[e.path().string()] = test::read_text(e.path().string());
    }
  }
  return out;
}

void edit_json(const fs::path& file, const std::function<void(nlohmann::json&)>& edit) {
  auto j = nlohmann::json::parse(test::read_text(file.string()));
  edit(j);
  test::write_text(file.string(), j.dump());
}

// The first float of the first tensor of a safetensors file set to NaN.
void poison_first_float(const fs::path& file) {
  std::string bytes = test::read_text(file.string());
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const float nan = std::nanf("");
  std::memcpy(&bytes[8 + n], &nan, 4);
  test::write_text(file.string(), bytes);
}

// A token shard whose header claims 2^62 tokens (the byte size overflows 64 bits).
void claim_huge_shard(const fs::path& file) {
  const std::string bytes = test::read_text(file.string());
  uint32_t n = 0;
  std::memcpy(&n, bytes.data() + 12, 4);
  auto header = nlohmann::json::parse(bytes.substr(16, n));
  header["num_tokens"] = int64_t{1} << 62;
  const std::string h = header.dump();
  const uint32_t len = static_cast<uint32_t>(h.size());
  std::string out = bytes.substr(0, 12);
  out.append(reinterpret_cast<const char*>(&len), 4);
  test::write_text(file.string(), out + h + bytes.substr(16 + n));
}

struct Case {
  std::string name;
  std::function<void(const fs::path& w)> setup;  // w: this case's scratch directory
  std::function<std::string(const fs::path& w)> args;
  int exit_code;
  std::string needle;
  std::map<std::string, std::string> env = {};
};

class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    test::write_text(*dir_ / "corpus.txt", test::synthetic_text(80, 6));
    auto r = outq("train --set train.steps=12 --set train.eval_every=0 --set train.run_dir=" + *dir_ / "run");
    if (r.exit_code == 0)
      r = outq("quantize --model " + model() + " --recipe " + kRecipes + "w4a4-token-rtn.toml --out " + *dir_ / "q");
    setup_error_ = r.exit_code == 0 ? "" : r.err;
  }
  void SetUp() override { ASSERT_EQ(setup_error_, "") << "preparing the suite's model failed"; }
  static void TearDownTestSuite() { delete dir_; }
  static std::string common() {
    return " --set data.corpus=" + *dir_ / "corpus.txt" + " --set data.vocab_size=300 --set data.out=" + *dir_ / "data" +
           " --set model.hidden_size=32 --set model.intermediate_size=64 --set model.num_hidden_layers=2"
           " --set model.num_attention_heads=2 --set model.num_key_value_heads=2 --set model.vocab_size=300"
           " --set model.max_position_embeddings=64 --set train.seq_len=64 --set train.batch_size=4"
           " --set train.eval_tokens=1024";
  }
  static test::RunResult outq(const std::string& args, std::map<std::string, std::string> env = {}) {
    env.emplace("OUTQ_CACHE", *dir_ / "cache");
    env.emplace("OUTQ_PROGRESS", "off");
    env.emplace("OUTQ_LOG", "quiet");
    // The suite's settings right after the command, so a case's own --set values come later and win.
    const auto space = args.find(' ');
    const std::string command = args.substr(0, space), rest = space == std::string::npos ? "" : args.substr(space);
    return test::run_shell(kOutq + " " + command + common() + rest, env);
  }
  static std::string model() { return *dir_ / "run/model"; }
  static std::string quantized() { return *dir_ / "q"; }
  static std::string data() { return *dir_ / "data"; }
  static test::TempDir* dir_;
  static std::string setup_error_;
};
test::TempDir* BadInput::dir_ = nullptr;
std::string BadInput::setup_error_;

std::vector<Case> cases(const std::string& model, const std::string& q, const std::string& data) {
  const std::string R = kRecipes;
  auto copy = [](const std::string& src, const fs::path& dst) { fs::copy(src, dst, fs::copy_options::recursive); };
  // A copy of `src` as the case's directory `name`, then `edit` applied to it.
  auto copy_then = [=](const std::string& src, const std::string& name) {
    return [=](std::function<void(const fs::path&)> edit) {
      return [=](const fs::path& w) {
        copy(src, w / name);
        edit(w / name);
      };
    };
  };
  auto model_copy = copy_then(model, "m"), quantized_copy = copy_then(q, "m"), data_copy = copy_then(data, "d");
  auto recipe = [](const std::string& text) { return [=](const fs::path& w) { test::write_text(w / "r.toml", text); }; };
  auto none = [](const fs::path&) {};
  auto eval_m = [](const fs::path& w) { return "eval --model " + (w / "m").string(); };
  auto eval_d = [=](const fs::path& w) { return "eval --model " + model + " --data-dir " + (w / "d").string(); };
  auto quantize_r = [=](const fs::path& w) {
    return "quantize --model " + model + " --recipe " + (w / "r.toml").string() + " --out " + (w / "out").string();
  };
  auto qcfg = [](std::function<void(nlohmann::json&)> edit) {
    return [=](const fs::path& m) { edit_json(m / "quant_config.json", edit); };
  };
  auto first_weights = [](nlohmann::json& j) -> nlohmann::json& { return j["modules"]["model.layers.0.self_attn.q_proj"]["weights"]; };
  auto fixed = [](const std::string& s) { return [=](const fs::path&) { return s; }; };
  return {
      // Model directories.
      {"model dir missing", none, fixed("eval --model /nonexistent/model"), 1, "model directory not found"},
      {"config.json missing", model_copy([](const fs::path& m) { fs::remove(m / "config.json"); }), eval_m, 1,
       "config.json: model config not found"},
      {"config.json not JSON", model_copy([](const fs::path& m) { test::write_text(m / "config.json", "{bad"); }), eval_m, 1,
       "expected model config as a JSON object"},
      {"config.json key missing", model_copy([](const fs::path& m) { edit_json(m / "config.json", [](auto& j) { j.erase("hidden_size"); }); }),
       eval_m, 1, "hidden_size: expected an integer field, found none"},
      {"config.json 64-bit layer count",
       model_copy([](const fs::path& m) { edit_json(m / "config.json", [](auto& j) { j["num_hidden_layers"] = 4294967300LL; }); }),
       eval_m, 1, "num_hidden_layers: expected an integer in [-2147483648, 2147483647], found 4294967300"},
      {"config.json shape against tensors",
       model_copy([](const fs::path& m) { edit_json(m / "config.json", [](auto& j) { j["hidden_size"] = 48; }); }), eval_m, 1,
       "expected shape [300, 48] (from config.json), found shape [300, 32]"},
      {"config.json activation", model_copy([](const fs::path& m) { edit_json(m / "config.json", [](auto& j) { j["hidden_act"] = "gelu"; }); }),
       eval_m, 1, "hidden_act: expected \"silu\""},
      {"safetensors truncated", model_copy([](const fs::path& m) { fs::resize_file(m / "model.safetensors", 1000); }), eval_m, 1,
       "not a safetensors file, or truncated"},
      {"safetensors garbage", model_copy([](const fs::path& m) { test::write_text(m / "model.safetensors", "garbagegarbage"); }),
       eval_m, 1, "header length"},
      {"weights with NaN", model_copy([](const fs::path& m) { poison_first_float(m / "model.safetensors"); }), eval_m, 1,
       "expected finite values, found 1 of"},
      {"tokenizer missing", model_copy([](const fs::path& m) { fs::remove(m / "tokenizer.model"); }), eval_m, 1,
       "tokenizer model not found"},
      {"tokenizer garbage", model_copy([](const fs::path& m) { test::write_text(m / "tokenizer.model", "junk"); }), eval_m, 1,
       "not a valid sentencepiece model"},
      {"clips.json not JSON", model_copy([](const fs::path& m) { test::write_text(m / "clips.json", "{bad"); }), eval_m, 1,
       "learned clip values (clips.json) as a JSON object"},
      {"clips.json wrong shape",
       model_copy([](const fs::path& m) { test::write_text(m / "clips.json", R"({"format":"outq-clips","clips":{"x":{"lo":1}}})"); }),
       eval_m, 1, "clips: expected an object with numbers"},
      // Quantized model directories.
      {"quant_config.json not JSON", quantized_copy([](const fs::path& m) { test::write_text(m / "quant_config.json", "{bad"); }), eval_m,
       1, "expected quantization config as a JSON object"},
      {"quant_config.json format", quantized_copy(qcfg([](auto& j) { j["format"] = "other"; })), eval_m, 1,
       "format: expected outq-quantized, found other"},
      {"quant_config.json 2-bit label on 4-bit codes", quantized_copy(qcfg([=](auto& j) { first_weights(j)["bits"] = 2; })), eval_m, 1,
       "expected codes in [0, 3]"},
      {"quant_config.json bits 0", quantized_copy(qcfg([=](auto& j) { first_weights(j)["bits"] = 0; })), eval_m, 1,
       "bits: expected 2..8, or 16 for no quantization, found 0"},
      {"quant_config.json 64-bit bits", quantized_copy(qcfg([=](auto& j) { first_weights(j)["bits"] = 4294967300LL; })), eval_m, 1,
       "bits: expected an integer in [-2147483648, 2147483647], found 4294967300"},
      {"quant_config.json key missing", quantized_copy(qcfg([=](auto& j) { first_weights(j).erase("symmetric"); })), eval_m, 1,
       "found an incomplete spec"},
      {"quant_config.json channel activations",
       quantized_copy(qcfg([](auto& j) { j["modules"]["model.layers.0.self_attn.q_proj"]["activations"]["granularity"] = "channel"; })),
       eval_m, 1, "granularity: expected tensor, token or peg for activations, found channel"},
      {"quantized safetensors truncated", quantized_copy([](const fs::path& m) { fs::resize_file(m / "model.safetensors", 2000); }),
       eval_m, 1, "not a safetensors file, or truncated"},
      // Recipes.
      {"recipe missing", none, [=](const fs::path& w) { return "quantize --model " + model + " --recipe /nonexistent.toml --out " + (w / "out").string(); },
       1, "recipe not found"},
      {"recipe unknown key", recipe("name = \"r\"\n[weights]\nbitz = 4\n"), quantize_r, 1, "unknown recipe key 'weights.bitz'"},
      {"recipe bits 0", recipe("name = \"r\"\n[weights]\nbits = 0\n"), quantize_r, 1, "bits: expected 2..8, or 16"},
      {"recipe not TOML", recipe("name = \"r\"\n[weights\nbits = 4\n"), quantize_r, 1, "not valid TOML"},
      {"recipe 64-bit bits", recipe("name = \"r\"\n[weights]\nbits = 4294967300\n"), quantize_r, 1,
       "expected an integer in [-2147483648, 2147483647], found 4294967300"},
      {"recipe granularity", recipe("name = \"r\"\n[activations]\nbits = 4\ngranularity = \"sometimes\"\n"), quantize_r, 1,
       "granularity: expected one of"},
      {"recipe group size without groups", recipe("name = \"r\"\n[weights]\nbits = 4\ngroup_size = 7\n"), quantize_r, 1,
       "group_size: expected only with granularity = \"group\""},
      {"recipe group size not dividing", recipe("name = \"r\"\n[weights]\nbits = 4\ngranularity = \"group\"\ngroup_size = 7\n"), quantize_r,
       1, "group_size: expected a divisor of the input width 32, found 7"},
      {"recipe algorithm", recipe("name = \"r\"\n[weights]\nbits = 4\nalgorithm = \"magic\"\n"), quantize_r, 1,
       "weights.algorithm: expected \"rtn\", \"gptq\" or \"learned\", found \"magic\""},
      {"recipe needs learned clips", none,
       [=](const fs::path& w) { return "quantize --model " + model + " --recipe " + R + "w4a4-learned-gptq.toml --out " + (w / "out").string(); },
       1, "expected a model trained with qat.mode"},
      // Quantize outputs and inputs.
      {"quantize out = model", none,
       fixed("quantize --model " + model + " --recipe " + R + "w8a8-token-rtn.toml --out " + model), 1,
       "would replace or write into the input"},
      {"quantize out inside model", none,
       fixed("quantize --model " + model + " --recipe " + R + "w8a8-token-rtn.toml --out " + model + "/q"), 1,
       "would replace or write into the input"},
      {"quantize out is a file", [](const fs::path& w) { test::write_text(w / "afile", "mine"); },
       [=](const fs::path& w) { return "quantize --model " + model + " --recipe " + R + "w8a8-token-rtn.toml --out " + (w / "afile").string(); },
       1, "is an existing file"},
      {"quantize out is someone's directory", [](const fs::path& w) { test::write_text(w / "notes/n.txt", "mine"); },
       [=](const fs::path& w) { return "quantize --model " + model + " --recipe " + R + "w8a8-token-rtn.toml --out " + (w / "notes").string(); },
       1, "is not an earlier output of this command"},
      {"quantize calibration data missing", none,
       [=](const fs::path& w) {
         return "quantize --model " + model + " --recipe " + R + "w8a8-tensor-rtn.toml --calib /nonexistent/data --out " + (w / "out").string();
       },
       1, "/nonexistent/data: cannot open"},
      // Data directories and token shards.
      {"shard claims 2^62 tokens", data_copy([](const fs::path& d) { claim_huge_shard(d / "test.bin"); }), eval_d, 1, "test.bin"},
      {"shard truncated", data_copy([](const fs::path& d) { fs::resize_file(d / "test.bin", 300); }), eval_d, 1,
       "(truncated, or a corrupt header)"},
      {"shard garbage", data_copy([](const fs::path& d) { test::write_text(d / "test.bin", std::string(32, 'X')); }), eval_d, 1,
       "magic: expected an outq token shard"},
      {"manifest missing", data_copy([](const fs::path& d) { fs::remove(d / "manifest.json"); }), eval_d, 1, "data manifest not found"},
      {"manifest not JSON", data_copy([](const fs::path& d) { test::write_text(d / "manifest.json", "{x"); }), eval_d, 1,
       "expected data manifest as a JSON object"},
      {"split unknown", none, fixed("eval --model " + model + " --split nope"), 1, "splits: expected train, val or test, found nope"},
      // Command lines (exit 2, the option named).
      {"threads 0", none, fixed("eval --model " + model + " --threads 0"), 2, "--threads: expected a whole number 1..1024, found 0"},
      {"max-tokens negative", none, fixed("eval --model " + model + " --max-tokens -5"), 2, "--max-tokens"},
      {"max-new-tokens negative", none, fixed("generate --model " + model + " --prompt hi --max-new-tokens -1"), 2, "--max-new-tokens"},
      {"temperature infinite", none, fixed("generate --model " + model + " --prompt hi --temperature inf"), 2, "--temperature"},
      {"bench M negative", none, fixed("bench --no-runtime --m -4"), 2, "--m"},
      {"bench min-time NaN", none, fixed("bench --no-runtime --min-time nan"), 2, "--min-time"},
      {"sensitivity tolerance negative", none,
       [=](const fs::path& w) {
         return "sensitivity --model " + model + " --recipe " + R + "w4a4-tensor-rtn.toml --tolerance -1 --out " + (w / "s").string();
       },
       2, "--tolerance"},
      {"config file missing", none, fixed("eval --model " + model + " --config /nonexistent.toml"), 2, "--config: File does not exist"},
      {"unknown option", none, fixed("eval --model " + model + " --frobnicate"), 2, "--frobnicate"},
      // Configuration (exit 1).
      {"config not TOML", [](const fs::path& w) { test::write_text(w / "c.toml", "[train\nsteps = 3\n"); },
       [=](const fs::path& w) { return "eval --model " + model + " --config " + (w / "c.toml").string(); }, 1, "not valid TOML"},
      {"config unknown key", none, fixed("eval --model " + model + " --set train.stepz=3"), 1, "unknown config key 'train.stepz'"},
      {"--set without =", none, fixed("eval --model " + model + " --set train.steps"), 1, "expected section.key=value"},
      {"--set wrong type", none, fixed("eval --model " + model + " --set train.steps=abc"), 1, "expected an integer, found string"},
      {"--set 64-bit value", none, fixed("eval --model " + model + " --set study.threads=4294967300"), 1,
       "expected an integer in [-2147483648, 2147483647], found 4294967300"},
      {"ISA unknown", none, fixed("bench --no-runtime --shapes model --m 1"), 1, "unknown ISA 'sse9'", {{"OUTQ_ISA", "sse9"}}},
      {"kernel format unknown", none, fixed("bench --no-runtime --formats w2a2"), 1, "kernel format: expected w8a8, w4a8 or w4a4"},
      {"LibTorch allocation", none,
       fixed("bench --no-kernels --prefill 8 --decode 4 --set model.hidden_size=65536 --set model.intermediate_size=1000000"
             " --set model.num_attention_heads=64 --set model.num_key_value_heads=64"),
       1, "LibTorch: "},
      // Training.
      {"resume without a checkpoint", none,
       [](const fs::path& w) { return "train --set train.steps=3 --resume --set train.run_dir=" + (w / "run").string(); }, 1,
       "--resume: expected a checkpoint in"},
      {"sequence longer than positions", none,
       [](const fs::path& w) { return "train --set train.steps=3 --set train.seq_len=128 --set train.run_dir=" + (w / "run").string(); },
       1, "train.seq_len: expected at most model.max_position_embeddings = 64, found 128"},
      {"learning rate NaN", none,
       [](const fs::path& w) { return "train --set train.steps=3 --set train.lr=nan --set train.run_dir=" + (w / "run").string(); }, 1,
       "train.lr: expected a positive number, found nan"},
      {"run directory of another run", none,
       fixed("train --set train.steps=3 --set train.run_dir=" + fs::path(model).parent_path().string()), 1,
       "holds checkpoints of an earlier run"},
      // Data preparation.
      {"vocabulary too large", none, [](const fs::path& w) { return "data --set data.vocab_size=100000000 --set data.out=" + (w / "d").string(); },
       1, "data.vocab_size: expected an integer in [260, 16777216], found 100000000"},
      {"corpus missing", none,
       [](const fs::path& w) { return "data --set data.corpus=/nonexistent.txt --set data.out=" + (w / "d").string(); }, 1,
       "corpus not found"},
      {"corpus empty", [](const fs::path& w) { test::write_text(w / "empty.txt", ""); },
       [](const fs::path& w) { return "data --set data.corpus=" + (w / "empty.txt").string() + " --set data.out=" + (w / "d").string(); }, 1,
       "corpus is empty"},
      // Analysis, study, generation.
      {"analyze point unknown", none,
       [=](const fs::path& w) { return "analyze --model " + model + " --point nope --max-tokens 500 --out " + (w / "a").string(); }, 1,
       "observation point 'nope' not found"},
      {"analyze checkpoints missing", none,
       [=](const fs::path& w) {
         return "analyze --model " + model + " --checkpoints /nonexistent/ck --max-tokens 500 --out " + (w / "a").string();
       },
       1, "checkpoint directory not found"},
      {"analyze out = model", none, fixed("analyze --model " + model + " --max-tokens 500 --out " + model), 1,
       "would replace or write into the input"},
      {"study recipes without the headline", none,
       [](const fs::path& w) { return "study --set study.recipes=[\"w8a8-token-rtn\"] --set study.out=" + (w / "st").string(); }, 1,
       "study.headline_baseline: expected one of study.recipes"},
      {"study without a QAT model", none,
       [](const fs::path& w) { return "study --set qat.mode=float --set study.out=" + (w / "st").string(); }, 1,
       "the study's second model must learn clips"},
      {"generate model missing", none, fixed("generate --model /nonexistent/model --prompt hi"), 1, "model directory not found"},
  };
}

TEST_F(BadInput, EveryCaseIsOneClearLineAndWritesNothing) {
  const auto all = cases(model(), quantized(), data());
  ASSERT_GE(all.size(), 60u);
  int i = 0;
  for (const auto& c : all) {
    SCOPED_TRACE(c.name);
    const fs::path w = *dir_ / ("case-" + std::to_string(i++));
    fs::create_directories(w);
    c.setup(w);
    const auto before = snapshot(*dir_ / "");
    const auto r = outq(c.args(w), c.env);
    EXPECT_EQ(r.exit_code, c.exit_code) << r.err;
    if (c.exit_code == 1) {
      // Exactly one error line, the last thing on stderr (the configuration table may precede it).
      const auto start = r.err.rfind("outq: error: ");
      ASSERT_NE(start, std::string::npos) << r.err;
      const std::string line = r.err.substr(start);
      EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << line;
      EXPECT_EQ(r.err.find("outq: error: "), start) << "more than one error line: " << r.err;
      EXPECT_NE(line.find(c.needle), std::string::npos) << line;
    } else {
      EXPECT_NE(r.err.find(c.needle), std::string::npos) << r.err;
      EXPECT_EQ(r.err.find("frame #"), std::string::npos) << r.err;
    }
    const auto after = snapshot(*dir_ / "");
    for (const auto& [path, bytes] : after) {
      const auto it = before.find(path);
      EXPECT_TRUE(it != before.end()) << "written: " << path;
      if (it != before.end()) {
        EXPECT_TRUE(it->second == bytes) << "changed: " << path;
      }
    }
    for (const auto& [path, bytes] : before) EXPECT_TRUE(after.count(path)) << "removed: " << path;
  }
}

}  // namespace
}  // namespace outq
