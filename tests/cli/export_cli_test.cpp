// `outq export` end to end: a synthetic Hugging Face LLaMA checkpoint (F16, own head, GQA 3:1) is
// imported, quantized with the shipped GGUF-exact recipes and exported; every GGUF file is read by
// @huggingface/gguf (an independent parser, installed from npm) and must show the typed metadata
// llama.cpp needs (counts UINT32, scores FLOAT32, token types INT32) and the tensors outq's reader
// sees; the Hugging Face export imports back to the same weights; bad requests are one line.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "hf_fixture.h"
#include "outq/data/tokenizer.h"
#include "outq/interop/gguf.h"
#include "outq/model/checkpoint.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

const std::string kOutq = OUTQ_BINARY;
const std::string kSource = OUTQ_SOURCE_DIR;

class ExportCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    setup_error_ = test::error_of(prepare);  // (thrown here, it would only skip the tests)
  }
  static void prepare() {
    fs::create_directories(*dir_ / "hf");
    test::write_text(*dir_ / "corpus.txt", test::synthetic_text(60, 5));
    TokenizerTrainOptions options;
    options.vocab_size = 320;
    Tokenizer::train({test::synthetic_text(30, 4, 7)}, options).save(*dir_ / "hf/tokenizer.model");
    test::HfShape s;
    s.hidden = 64, s.heads = 4, s.kv_heads = 2, s.ffn = 128, s.vocab = 336, s.dtype = DType::F16, s.embed_scale = 0.1;
    test::write_hf_checkpoint(*dir_ / "hf", s);
    const auto r = outq("import --from " + *dir_ / "hf" + " --out " + *dir_ / "model");
    if (r.exit_code != 0) throw std::runtime_error("import: " + r.err);
    // The independent parser.
    const auto npm = test::run_shell("npm install --no-audit --no-fund --prefix " + *dir_ / "npm" + " @huggingface/gguf@0.4.6");
    if (npm.exit_code != 0) throw std::runtime_error("npm install @huggingface/gguf: " + npm.err);
  }
  void SetUp() override { ASSERT_EQ(setup_error_, "") << "preparing the test failed"; }
  static void TearDownTestSuite() { delete dir_; }
  static test::RunResult outq(const std::string& args) {
    return test::run_shell(kOutq + " " + args + " --set data.corpus=" + *dir_ / "corpus.txt" + " --set data.out=" + *dir_ / "data",
                           {{"OUTQ_CACHE", *dir_ / "cache"}, {"OUTQ_PROGRESS", "off"}, {"OUTQ_LOG", "quiet"}});
  }
  // What @huggingface/gguf reads from `file`, checked against outq's strict reader.
  static void expect_npm_agrees(const std::string& file) {
    const auto r = test::run_shell("node " + kSource + "/tests/interop/gguf_check.cjs " + file + " " + *dir_ / "npm");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto js = nlohmann::json::parse(r.out);
    GgufFile f(file);
    for (const auto& [key, v] : f.metadata()) {
      ASSERT_TRUE(js.at("types").contains(key)) << key;
      EXPECT_EQ(js["types"][key][0], static_cast<int>(v.type)) << key;
      if (v.type == GgufType::ARRAY) {
        EXPECT_EQ(js["types"][key][1], static_cast<int>(v.element)) << key;
      }
    }
    EXPECT_EQ(js["types"].size(), f.metadata().size());
    for (const char* key : {"llama.context_length", "llama.block_count", "llama.attention.head_count", "llama.vocab_size",
                            "tokenizer.ggml.bos_token_id", "general.file_type"})
      EXPECT_EQ(js["types"][key][0], 4) << key;  // UINT32
    EXPECT_EQ(js["types"]["llama.attention.layer_norm_rms_epsilon"][0], 6);  // FLOAT32
    EXPECT_EQ(js["types"]["tokenizer.ggml.scores"], nlohmann::json({9, 6}));  // ARRAY of FLOAT32
    EXPECT_EQ(js["types"]["tokenizer.ggml.token_type"], nlohmann::json({9, 5}));  // ARRAY of INT32
    EXPECT_EQ(js["tokens"], 336);
    ASSERT_EQ(js["tensors"].size(), f.tensors().size());
    for (size_t i = 0; i < f.tensors().size(); ++i) {
      const auto& t = f.tensors()[i];
      EXPECT_EQ(js["tensors"][i]["name"], t.name);
      EXPECT_EQ(js["tensors"][i]["dtype"], static_cast<int>(t.type)) << t.name;
      EXPECT_EQ(js["tensors"][i]["offset"], std::to_string(t.offset)) << t.name;
      std::vector<std::string> shape;
      for (uint64_t d : t.ne) shape.push_back(std::to_string(d));
      EXPECT_EQ(js["tensors"][i]["shape"], nlohmann::json(shape)) << t.name;
    }
    EXPECT_EQ(js["tensorDataOffset"], std::to_string(f.data_offset()));
  }
  static test::TempDir* dir_;
  static std::string setup_error_;
};
test::TempDir* ExportCli::dir_ = nullptr;
std::string ExportCli::setup_error_;

TEST_F(ExportCli, ShippedRecipesExportExactlyAndAnIndependentParserAgrees) {
  const std::string model = *dir_ / "model";
  auto r = outq("export --model " + model + " --out " + *dir_ / "float.gguf");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_npm_agrees(*dir_ / "float.gguf");
  EXPECT_EQ(GgufFile(*dir_ / "float.gguf").get("general.file_type").number, 1);
  for (const auto& [recipe, type] : std::vector<std::pair<std::string, GgmlType>>{{"w4a16-g32-gptq", GgmlType::Q4_1},
                                                                                    {"w8a16-sym", GgmlType::Q8_0}}) {
    const std::string q = *dir_ / recipe, file = *dir_ / (recipe + ".gguf");
    r = outq("quantize --model " + model + " --recipe " + kSource + "/recipes/" + recipe + ".toml --out " + q);
    ASSERT_EQ(r.exit_code, 0) << recipe << ": " << r.err;
    r = outq("export --json --model " + q + " --out " + file);
    ASSERT_EQ(r.exit_code, 0) << recipe << ": " << r.err;
    const GgufFile f(file);
    EXPECT_EQ(f.tensor("blk.1.ffn_down.weight").type, type) << recipe;
    EXPECT_EQ(f.tensor("blk.0.attn_q.weight").type, type) << recipe;
    EXPECT_EQ(f.get("general.quantization_version").number, 2) << recipe;
    expect_npm_agrees(file);
  }
}

TEST_F(ExportCli, HuggingFaceExportImportsBackToTheSameWeights) {
  const std::string model = *dir_ / "model";
  auto r = outq("export --format hf --model " + model + " --out " + *dir_ / "hf-out");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = outq("import --from " + *dir_ / "hf-out" + " --out " + *dir_ / "back");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Llama a = model_load(model), b = model_load(*dir_ / "back");
  for (const auto& p : a->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), b->named_parameters()[p.key()])) << p.key();
  EXPECT_TRUE(fs::exists(*dir_ / "hf-out/tokenizer.model"));
}

TEST_F(ExportCli, BadRequestsAreOneLine) {
  auto r = outq("export --model " + *dir_ / "model" + " --out " + *dir_ / "x.bin");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--out: expected a path ending in .gguf"), std::string::npos) << r.err;
  r = outq("export --model " + *dir_ / "missing" + " --out " + *dir_ / "x.gguf");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(*dir_ / "x.gguf"));
  r = outq("quantize --model " + *dir_ / "model" + " --recipe " + kSource + "/recipes/w3a4-tensor-gptq.toml --out " + *dir_ / "a4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = outq("export --model " + *dir_ / "a4" + " --out " + *dir_ / "a4.gguf");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no exact GGUF block type"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace outq
