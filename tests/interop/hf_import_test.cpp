// Hugging Face import: synthetic checkpoints of every supported family and storage form give the
// logits of an independent double-precision forward with Hugging Face's semantics; v4 and v5
// configs import identically; `hf_import` writes a directory that loads back bit for bit.
#include <gtest/gtest.h>

#include <filesystem>

#include "hf_fixture.h"
#include "outq/core/error.h"
#include "outq/data/tokenizer.h"
#include "outq/interop/hf_import.h"
#include "outq/model/checkpoint.h"

namespace outq {
namespace {

using test::HfShape;

std::vector<int64_t> some_tokens(int64_t vocab, int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto t = torch::randint(0, vocab, {n}, gen, torch::kInt64);
  return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n};
}

// max |outq - reference| relative to the largest reference logit.
double logit_error(Llama& model, const std::map<std::string, torch::Tensor>& tensors, const HfShape& s,
                   const std::vector<int64_t>& tokens) {
  torch::NoGradGuard no_grad;
  const auto ids = torch::tensor(tokens, torch::kInt64).unsqueeze(0);
  const auto got = model->forward(ids)[0].to(torch::kFloat64);
  const auto ref = test::hf_reference_logits(tensors, s, tokens);
  double err = 0, scale = 0;
  for (size_t t = 0; t < ref.size(); ++t)
    for (size_t v = 0; v < ref[t].size(); ++v) {
      err = std::max(err, std::abs(got[static_cast<int64_t>(t)][static_cast<int64_t>(v)].item<double>() - ref[t][v]));
      scale = std::max(scale, std::abs(ref[t][v]));
    }
  return err / scale;
}

struct Case {
  const char* what;
  HfShape shape;
};

std::vector<Case> cases() {
  std::vector<Case> c;
  HfShape s;  // LLaMA, GQA 3:1, head dim 16, F32, own head, v4 config
  c.push_back({"llama v4 F32 GQA 3:1", s});
  s.v5 = true, s.dtype = DType::BF16, s.tied = true, s.seed = 2;
  c.push_back({"llama v5 BF16 tied", s});
  s = HfShape{}, s.hidden = 48, s.heads = 6, s.kv_heads = 2, s.dtype = DType::F16, s.shards = true, s.inv_freq = true, s.seed = 3;
  c.push_back({"llama F16 two shards, inv_freq buffers, 6:2 heads of 8", s});
  s = HfShape{}, s.model_type = "qwen2", s.dtype = DType::BF16, s.tied = true, s.theta = 1e6, s.seed = 4;
  c.push_back({"qwen2 BF16 tied, q/k/v biases", s});
  s = HfShape{}, s.attention_bias = true, s.heads = 3, s.kv_heads = 3, s.seed = 5;
  c.push_back({"llama attention_bias (q/k/v/o), 3 heads", s});
  s = HfShape{}, s.rope_type = "linear", s.seed = 6;
  c.push_back({"llama linear RoPE scaling (v4 'type')", s});
  s = HfShape{}, s.rope_type = "llama3", s.v5 = true, s.seed = 7;
  c.push_back({"llama llama3 RoPE scaling (v5)", s});
  s = HfShape{}, s.model_type = "mistral", s.heads = 4, s.kv_heads = 2, s.hidden = 40, s.seed = 8;
  c.push_back({"mistral 4:2 heads of 10", s});
  return c;
}

// Tolerance: the fp32 forward of a 2-layer model of width <= 48 rounds at about 1e-7 relative per
// operation; 1e-5 of the largest logit leaves room for that and fails on any semantic difference
// (a RoPE pairing, a missing bias, a wrong GQA head map or scaling all move logits by O(1)).
TEST(HfImport, LogitsEqualTheDoublePrecisionReference) {
  for (const auto& [what, s] : cases()) {
    test::TempDir dir;
    const auto tensors = test::write_hf_checkpoint(dir.path().string(), s);
    HfCheckpoint checkpoint(dir.path().string());
    Llama model = checkpoint.load();
    EXPECT_EQ(model->config().model_type, s.model_type) << what;
    EXPECT_EQ(model->config().qkv_bias(), s.model_type == "qwen2" || s.attention_bias) << what;
    EXPECT_LE(logit_error(model, tensors, s, some_tokens(s.vocab, 23, s.seed)), 1e-5) << what;
  }
}

TEST(HfImport, TheReferenceSeesEachFeature) {
  // The check above must be able to fail: dropping the biases, the scaling or the GQA mapping
  // from the reference moves the logits far past the tolerance.
  HfShape s;
  s.model_type = "qwen2", s.rope_type = "llama3", s.v5 = true;
  test::TempDir dir;
  auto tensors = test::write_hf_checkpoint(dir.path().string(), s);
  Llama model = HfCheckpoint(dir.path().string()).load();
  const auto tokens = some_tokens(s.vocab, 23, 1);
  EXPECT_LE(logit_error(model, tensors, s, tokens), 1e-5);
  HfShape unscaled = s;
  unscaled.rope_type = "default";
  EXPECT_GT(logit_error(model, tensors, unscaled, tokens), 1e-3);
  auto no_bias = tensors;
  no_bias.erase("model.layers.1.self_attn.v_proj.bias");
  EXPECT_GT(logit_error(model, no_bias, s, tokens), 1e-3);
}

TEST(HfImport, V4AndV5ConfigsImportIdentically) {
  for (const char* rope : {"default", "llama3"}) {
    HfShape s;
    s.rope_type = rope;
    test::TempDir a, b;
    test::write_hf_checkpoint(a.path().string(), s);
    s.v5 = true;
    test::write_hf_checkpoint(b.path().string(), s);
    HfCheckpoint ca(a.path().string()), cb(b.path().string());
    auto ja = ca.config().to_hf_json(), jb = cb.config().to_hf_json();
    EXPECT_EQ(ja.at("outq_imported_from"), std::filesystem::absolute(a.path()).lexically_normal().string());
    ja.erase("outq_imported_from"), jb.erase("outq_imported_from");
    EXPECT_EQ(ja, jb) << rope;
    EXPECT_EQ(cb.config().rope_scaling.type, rope);
    torch::NoGradGuard no_grad;
    const auto ids = torch::tensor(some_tokens(s.vocab, 9, 3), torch::kInt64).unsqueeze(0);
    EXPECT_TRUE(torch::equal(ca.load()->forward(ids), cb.load()->forward(ids))) << rope;
  }
}

TEST(HfImport, SkipsWhatTransformersIgnoresAndSaysSo) {
  HfShape s;
  s.inv_freq = true, s.model_type = "mistral";
  test::TempDir dir;
  test::write_hf_checkpoint(dir.path().string(), s);
  auto config = test::hf_config(s);
  config["sliding_window"] = 32;  // shorter than max_position_embeddings 64
  test::write_text(dir / "config.json", config.dump());
  HfCheckpoint checkpoint(dir.path().string());
  ASSERT_EQ(checkpoint.notes().size(), 2u);
  EXPECT_NE(checkpoint.notes()[0].find("max_position_embeddings 64 lowered to sliding_window 32"), std::string::npos);
  EXPECT_NE(checkpoint.notes()[1].find("skipped 2 rotary_emb.inv_freq"), std::string::npos);
  EXPECT_EQ(checkpoint.config().max_position_embeddings, 32);
  EXPECT_EQ(checkpoint.config().to_hf_json().at("sliding_window"), 32);
}

TEST(HfImport, WritesAnOutqDirectoryThatLoadsBitForBit) {
  test::TempDir dir;
  const std::string from = dir / "hf", out = dir / "imported";
  std::filesystem::create_directories(from);
  HfShape s;
  s.vocab = 300, s.dtype = DType::BF16, s.shards = true, s.model_type = "qwen2", s.tied = true;
  test::write_hf_checkpoint(from, s);
  TokenizerTrainOptions options;
  options.vocab_size = 300;
  Tokenizer::train({test::synthetic_text(20, 3)}, options).save(from + "/tokenizer.model");
  test::write_text(from + "/tokenizer_config.json", "{\"add_bos_token\": true}");
  const ImportSummary summary = hf_import(from, out);
  EXPECT_EQ(summary.files, (std::vector<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}));
  EXPECT_EQ(summary.dtypes, "BF16");
  EXPECT_EQ(summary.copied, std::vector<std::string>{"tokenizer_config.json"});
  Llama imported = model_load(out);
  Llama direct = HfCheckpoint(from).load();
  for (const auto& p : direct->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), imported->named_parameters()[p.key()])) << p.key();
  EXPECT_EQ(imported->config().to_hf_json(), direct->config().to_hf_json());
  EXPECT_TRUE(std::filesystem::exists(out + "/tokenizer.model"));
  const auto record = nlohmann::json::parse(test::read_text(out + "/import.json"));
  EXPECT_EQ(record.at("source_config").at("model_type"), "qwen2");
  EXPECT_EQ(record.at("files").size(), 2u);
  // A checkpoint whose tokenizer has more tokens than the embedding has rows is refused.
  s.vocab = 67;
  test::write_hf_checkpoint(from, s);
  EXPECT_NE(test::error_of([&] { hf_import(from, dir / "small"); }).find("expected at most vocab_size 67"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "small"));
}

}  // namespace
}  // namespace outq
