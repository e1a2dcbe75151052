// Model directories and safetensors: bit-exact round trip, Hugging Face names, spec details, and
// missing / extra / mis-shaped / wrong-dtype / non-finite tensors and bad files rejected with exact messages.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "outq/core/error.h"
#include "outq/core/safetensors.h"
#include "outq/model/checkpoint.h"
#include "outq/model/tensor_io.h"
#include "test_util.h"

namespace fs = std::filesystem;

#include "tiny_model.h"

namespace outq {
namespace {

ModelConfig small(bool tied = false) { return test::tiny_config({16, 24, 2, 1, 300, 32, 2, 0.02, tied}); }

using test::error_of;

TEST(Checkpoint, RoundTripIsBitExact) {
  for (bool tied : {false, true}) {
    test::TempDir dir;
    Llama m(small(tied));
    m->reset_parameters(7);
    model_save(m, dir / "model", "", {{"note", "x"}});
    Llama back = model_load(dir / "model");
    EXPECT_EQ(back->config().to_hf_json(), m->config().to_hf_json());
    const auto a = m->named_parameters(), b = back->named_parameters();
    ASSERT_EQ(a.size(), b.size());
    for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
    SafetensorsFile f(dir / "model/model.safetensors");
    EXPECT_EQ(f.metadata().at("note"), "x");
    EXPECT_EQ(f.contains("lm_head.weight"), !tied);
    EXPECT_TRUE(f.contains("model.layers.1.self_attn.k_proj.weight"));
    EXPECT_EQ(f.get("model.layers.1.self_attn.k_proj.weight").shape, (std::vector<int64_t>{8, 16}));
  }
}

// NaN or infinite weights are refused on load, naming the file and tensor (a model with them would
// evaluate to "perplexity nan" with exit 0, and quantize to ordinary-looking codes).
TEST(Checkpoint, NonFiniteWeightsAreRefusedOnLoad) {
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    test::TempDir dir;
    Llama m(small());
    m->reset_parameters(7);
    {
      torch::NoGradGuard g;
      m->layer(1).mlp->down_proj->weight[2][3] = bad;
    }
    model_save(m, dir / "model", "");
    const std::string e = error_of([&] { model_load(dir / "model"); });
    EXPECT_NE(e.find("model.safetensors: model.layers.1.mlp.down_proj.weight: expected finite values, found 1 of 384 "
                     "non-finite (" + std::string(std::isnan(bad) ? "1 NaN, 0 infinite" : "0 NaN, 1 infinite") + ")"),
              std::string::npos) << e;
  }
}

TEST(Safetensors, LayoutFollowsTheSpec) {
  test::TempDir dir;
  TensorFileWriter w;
  w.add("a", torch::arange(6, torch::kInt32).reshape({2, 3}));
  w.add("b", torch::tensor({1.5f}, torch::kFloat32).to(torch::kBFloat16));
  w.add("empty", torch::empty({0, 4}, torch::kInt8));
  w.write(dir / "t.safetensors");
  const std::string bytes = test::read_text(dir / "t.safetensors");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  EXPECT_EQ((8 + n) % 8, 0u);                              // buffer aligned
  EXPECT_EQ(bytes.size(), 8 + n + 24 + 2);                 // 6 x I32 + 1 x BF16 + nothing
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["a"]["dtype"], "I32");
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(header["b"]["dtype"], "BF16");
  SafetensorsFile f(dir / "t.safetensors");
  EXPECT_TRUE(torch::equal(tensor_from_view(f.get("a")), torch::arange(6, torch::kInt32).reshape({2, 3})));
  EXPECT_EQ(tensor_from_view(f.get("b")).to(torch::kFloat32).item<float>(), 1.5f);
  EXPECT_EQ(f.get("empty").numel(), 0);
}

TEST(Safetensors, CorruptFilesAreRejected) {
  test::TempDir dir;
  auto write_raw = [&](const std::string& header, const std::string& buffer) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
    test::write_text(dir / "f.safetensors", s + header + buffer);
    return error_of([&] { SafetensorsFile f(dir / "f.safetensors"); });
  };
  EXPECT_NE(write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "1234").find("file truncated"),
            std::string::npos);
  EXPECT_NE(write_raw("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", "1234").find("dtype: expected one of F64"),
            std::string::npos);
  EXPECT_NE(write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", "1234").find("8 bytes for shape [2] of F32"),
            std::string::npos);
  EXPECT_NE(write_raw("{\"a\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[2,4]}}", "1234").find("overlapping"),
            std::string::npos);
  EXPECT_NE(write_raw("not json", "").find("header: expected a JSON object"), std::string::npos);
  test::write_text(dir / "g.safetensors", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}");
  EXPECT_NE(error_of([&] { SafetensorsFile f(dir / "g.safetensors"); }).find("header length"), std::string::npos);
}

// Writes a copy of a valid model dir whose safetensors has one tensor changed by `edit`.
std::string load_error_after(const std::function<void(std::map<std::string, torch::Tensor>&)>& edit) {
  test::TempDir dir;
  Llama m(small());
  model_save(m, dir / "model", "");
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& p : m->named_parameters()) tensors[p.key()] = p.value().detach();
  edit(tensors);
  TensorFileWriter w;
  for (const auto& [k, v] : tensors) w.add(k, v);
  w.write(dir / "model/model.safetensors");
  return error_of([&] { model_load(dir / "model"); });
}

TEST(Checkpoint, MissingExtraMisshapedAndWrongDtypeTensors) {
  const std::string missing = load_error_after([](auto& t) { t.erase("model.layers.1.mlp.up_proj.weight"); });
  EXPECT_NE(missing.find("tensors: expected every tensor of the model in config.json, found 1 missing: "
                         "model.layers.1.mlp.up_proj.weight"), std::string::npos) << missing;
  const std::string extra = load_error_after([](auto& t) { t["model.layers.2.mlp.up_proj.weight"] = torch::zeros({1}); });
  EXPECT_NE(extra.find("1 unexpected: model.layers.2.mlp.up_proj.weight"), std::string::npos) << extra;
  const std::string shape = load_error_after([](auto& t) { t["model.norm.weight"] = torch::ones({17}); });
  EXPECT_NE(shape.find("model.norm.weight: expected shape [16] (from config.json), found shape [17]"), std::string::npos)
      << shape;
  const std::string dtype = load_error_after([](auto& t) { t["model.norm.weight"] = torch::ones({16}, torch::kInt32); });
  EXPECT_NE(dtype.find("model.norm.weight: expected dtype F32, F16 or BF16, found I32"), std::string::npos) << dtype;
  EXPECT_EQ(load_error_after([](auto& t) { t["model.norm.weight"] = t["model.norm.weight"].to(torch::kBFloat16); }), "");
}

TEST(Checkpoint, BadConfigJson) {
  test::TempDir dir;
  Llama m(small());
  model_save(m, dir / "model", "");
  auto j = nlohmann::json::parse(test::read_text(dir / "model/config.json"));
  j["num_attention_heads"] = 3;
  test::write_text(dir / "model/config.json", j.dump());
  EXPECT_NE(error_of([&] { model_load(dir / "model"); }).find("expected a divisor of hidden_size 16, found 3"),
            std::string::npos);
  j.erase("num_attention_heads");
  test::write_text(dir / "model/config.json", j.dump());
  EXPECT_NE(error_of([&] { model_load(dir / "model"); }).find("num_attention_heads: expected an integer field, found none"),
            std::string::npos);
  EXPECT_NE(error_of([&] { model_load(dir / "nothing"); }).find("model directory not found"), std::string::npos);
}

}  // namespace
}  // namespace outq
