// `outq import` end to end: a synthetic Hugging Face Qwen2 checkpoint (q/k/v biases, tied head,
// two BF16 shards, GQA 3:1) with a SentencePiece tokenizer is imported, then evaluated, analysed,
// QAT fine-tuned, quantized (GPTQ, SmoothQuant, rotation), run on the integer kernels and sampled
// from, the corpus
// encoded with the imported tokenizer without being told; and the command's errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "hf_fixture.h"
#include "outq/data/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

const std::string kOutq = OUTQ_BINARY;
const std::string kRecipes = OUTQ_SOURCE_DIR "/recipes/";

class ImportCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    setup_error_ = test::error_of(make_checkpoint);  // (thrown here, it would only skip the tests)
  }
  static void make_checkpoint() {
    fs::create_directories(*dir_ / "hf");
    test::write_text(*dir_ / "corpus.txt", test::synthetic_text(60, 5));
    TokenizerTrainOptions options;
    options.vocab_size = 320;
    Tokenizer::train({test::synthetic_text(30, 4, 7)}, options).save(*dir_ / "hf/tokenizer.model");
    test::HfShape s;
    s.model_type = "qwen2", s.vocab = 336, s.tied = true, s.dtype = DType::BF16, s.shards = true, s.v5 = true, s.embed_scale = 0.1;
    test::write_hf_checkpoint(*dir_ / "hf", s);
  }
  void SetUp() override { ASSERT_EQ(setup_error_, "") << "writing the checkpoint failed"; }
  static void TearDownTestSuite() { delete dir_; }
  // `data`: the prepared data directory's name (one per tokenizer).
  static test::RunResult outq(const std::string& args, const std::string& data = "data") {
    return test::run_shell(kOutq + " " + args + " --set data.corpus=" + *dir_ / "corpus.txt" + " --set data.out=" + *dir_ / data,
                           {{"OUTQ_CACHE", *dir_ / "cache"}, {"OUTQ_PROGRESS", "off"}, {"OUTQ_LOG", "quiet"}});
  }
  static double ppl(const test::RunResult& r) { return nlohmann::json::parse(r.out).at("perplexity").get<double>(); }
  static test::TempDir* dir_;
  static std::string setup_error_;
};
test::TempDir* ImportCli::dir_ = nullptr;
std::string ImportCli::setup_error_;

TEST_F(ImportCli, ImportedModelGoesThroughEveryCommand) {
  const std::string model = *dir_ / "imported";
  auto r = outq("import --json --from " + *dir_ / "hf" + " --out " + model);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary.at("model_type"), "qwen2");
  EXPECT_EQ(summary.at("files").size(), 2u);
  EXPECT_EQ(summary.at("dtypes"), "BF16");
  // An earlier import is replaced; another directory only with --overwrite.
  ASSERT_EQ(outq("import --from " + *dir_ / "hf" + " --out " + model).exit_code, 0);
  fs::create_directories(*dir_ / "other");
  test::write_text(*dir_ / "other/notes.txt", "mine");
  r = outq("import --from " + *dir_ / "hf" + " --out " + *dir_ / "other");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("exists and is not an earlier output of this command (no import.json)"), std::string::npos) << r.err;
  EXPECT_EQ(test::read_text(*dir_ / "other/notes.txt"), "mine");

  // Evaluation prepares the corpus with the model's own tokenizer.
  r = outq("eval --json --model " + model + " --max-tokens 2000");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const double float_ppl = ppl(r);
  EXPECT_TRUE(float_ppl > 50 && float_ppl < 5000) << r.out;  // a random model: about the vocabulary's size
  const auto manifest = nlohmann::json::parse(test::read_text(*dir_ / "data/manifest.json"));
  EXPECT_EQ(manifest.at("tokenizer").at("checksum"), Tokenizer::load(*dir_ / "hf/tokenizer.model").checksum());
  EXPECT_EQ(manifest.at("tokenizer").at("vocab_size"), 320);

  r = outq("analyze --model " + model + " --max-tokens 512 --out " + *dir_ / "analysis");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = outq("generate --json --model " + model + " --prompt abc --max-new-tokens 5");
  EXPECT_EQ(r.exit_code, 0) << r.err;

  // QAT fine-tuning from it: the run takes the imported architecture (biases included) and tokenizer.
  r = outq("train --init-from " + model + " --set qat.mode=lsq --set train.steps=3 --set train.eval_every=0"
           " --set train.seq_len=32 --set train.batch_size=2 --set train.eval_tokens=256 --set train.threads=2"
           " --set train.run_dir=" + *dir_ / "ft");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto tuned = outq("eval --json --model " + *dir_ / "ft/model" + " --max-tokens 2000");
  ASSERT_EQ(tuned.exit_code, 0) << tuned.err;
  EXPECT_NE(ppl(tuned), float_ppl);
  EXPECT_NE(test::read_text(*dir_ / "ft/model/config.json").find("Qwen2ForCausalLM"), std::string::npos);

  // Quantized with GPTQ (+ SmoothQuant, + rotation, whose v and o biases turn), on the integer
  // kernels and in simulation: the same model within the kernels' rounding.
  for (const char* recipe : {"w8a8-tensor-gptq", "w4a8-token-gptq-sq", "w4a4-token-gptq-rot"}) {
    const std::string out = *dir_ / (std::string("q-") + recipe);
    r = outq("quantize --model " + model + " --recipe " + kRecipes + recipe + ".toml --out " + out);
    ASSERT_EQ(r.exit_code, 0) << recipe << ": " << r.err;
    const auto kernels = outq("eval --json --model " + out + " --max-tokens 2000");
    const auto simulated = outq("eval --json --simulate --model " + out + " --max-tokens 2000");
    ASSERT_EQ(kernels.exit_code, 0) << recipe << ": " << kernels.err;
    ASSERT_EQ(simulated.exit_code, 0) << recipe << ": " << simulated.err;
    EXPECT_NEAR(ppl(kernels), ppl(simulated), 2e-3 * ppl(simulated)) << recipe;
    EXPECT_NE(ppl(simulated), float_ppl) << recipe;
  }
}

// A SmolLM2-style checkpoint (LLaMA, tied head) whose tokenizer is a byte-level BPE tokenizer.json:
// the corpus is encoded with it, the model evaluates, quantizes, runs and samples; GGUF export
// says what it does not write yet; the Hugging Face export keeps tokenizer.json.
TEST_F(ImportCli, AByteLevelBpeCheckpointWorksEndToEnd) {
  const std::string hf = *dir_ / "smol", model = *dir_ / "smol-imported";
  fs::create_directories(hf);
  test::HfShape s;
  s.vocab = 576, s.tied = true, s.embed_scale = 0.1, s.dtype = DType::BF16;
  test::write_hf_checkpoint(hf, s);
  test::write_text(hf + "/tokenizer.json", test::read_text(OUTQ_SOURCE_DIR "/tests/data/fixtures/bpe-smollm2.json"));
  auto r = outq("import --from " + hf + " --out " + model);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(model + "/tokenizer.json"));
  EXPECT_FALSE(fs::exists(model + "/tokenizer.model"));
  const std::string data = "smol-data";
  r = outq("eval --json --model " + model + " --max-tokens 2000", data);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_FALSE(r.out.empty()) << r.err;
  const double float_ppl = ppl(r);
  const auto manifest = nlohmann::json::parse(test::read_text(*dir_ / "smol-data/manifest.json"));
  EXPECT_EQ(manifest.at("tokenizer").at("type"), "byte-level-bpe");
  EXPECT_EQ(manifest.at("tokenizer").at("file"), "tokenizer.json");
  EXPECT_EQ(manifest.at("tokenizer").at("bos_id"), 569);  // <|endoftext|> (no BOS of its own)
  r = outq("quantize --model " + model + " --recipe " + kRecipes + "w4a8-token-gptq.toml --out " + *dir_ / "smol-q", data);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = outq("eval --json --model " + *dir_ / "smol-q" + " --max-tokens 2000", data);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(ppl(r), float_ppl);
  r = outq("generate --json --model " + *dir_ / "smol-q" + " --prompt \"The jury\" --max-new-tokens 4");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = outq("export --model " + model + " --out " + *dir_ / "smol.gguf");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("byte-level BPE vocabulary"), std::string::npos) << r.err;
  r = outq("export --format hf --model " + model + " --out " + *dir_ / "smol-hf");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_text(*dir_ / "smol-hf/tokenizer.json"), test::read_text(hf + "/tokenizer.json"));
  const auto config = nlohmann::json::parse(test::read_text(*dir_ / "smol-hf/config.json"));
  EXPECT_EQ(config.at("bos_token_id"), 569);  // <|endoftext|>, not SentencePiece's 1
  EXPECT_EQ(config.at("eos_token_id"), 569);
}

TEST_F(ImportCli, ErrorsAreOneLineNamingTheProblem) {
  auto r = outq("import --from " + *dir_ / "nowhere" + " --out " + *dir_ / "x");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("nowhere: checkpoint directory not found"), std::string::npos) << r.err;
  // A tokenizer.json that is not a tokenizer is refused before anything is written.
  fs::create_directories(*dir_ / "bpe");
  test::write_hf_checkpoint(*dir_ / "bpe", test::HfShape{});
  test::write_text(*dir_ / "bpe/tokenizer.json", "{}");
  r = outq("import --from " + *dir_ / "bpe" + " --out " + *dir_ / "y");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("tokenizer.json: model: expected an object"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(*dir_ / "y"));
  // --out inside --from.
  r = outq("import --from " + *dir_ / "hf" + " --out " + *dir_ / "hf/inner");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("would replace or write into the input"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace outq
