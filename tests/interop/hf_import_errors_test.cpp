// Hugging Face import, bad input: a hand-assembled safetensors file (bytes written out here, not by
// outq's writer) read exactly, its mutations, and broken checkpoints (config keys outq cannot run,
// shards and index out of step, wrong or missing tensors, NaN), each one line naming the tensor,
// key or file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "hf_fixture.h"
#include "outq/core/error.h"
#include "outq/interop/hf_import.h"
#include "outq/model/tensor_io.h"

namespace outq {
namespace {

using test::HfShape;

// u64 LE header length, the header text as given, the data bytes.
void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[static_cast<size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  std::ofstream(path, std::ios::binary) << bytes << header << data;
}

// BF16 [1, -2] (0x3F80, 0xC000) and F32 [1.5] (0x3FC00000), little-endian.
const std::string kGoldenData("\x80\x3F\x00\xC0\x00\x00\xC0\x3F", 8);
const std::string kGoldenHeader =
    R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";

std::string open_error(const std::string& header, const std::string& data) {
  test::TempDir dir;
  write_raw(dir / "x.safetensors", header, data);
  return test::error_of([&] { SafetensorsFile f(dir / "x.safetensors"); });
}

TEST(SafetensorsGolden, AHandAssembledFileReadsExactly) {
  test::TempDir dir;
  write_raw(dir / "golden.safetensors", kGoldenHeader + "   ", kGoldenData);  // (padding spaces are legal)
  SafetensorsFile f(dir / "golden.safetensors");
  const auto a = tensor_from_view(f.get("a")).to(torch::kFloat32), b = tensor_from_view(f.get("b"));
  EXPECT_EQ(a[0].item<float>(), 1.0f);
  EXPECT_EQ(a[1].item<float>(), -2.0f);
  EXPECT_EQ(b[0].item<float>(), 1.5f);
}

TEST(SafetensorsGolden, EachMutationIsOneLineNamingWhatIsWrong) {
  const std::vector<std::pair<std::string, std::pair<std::string, std::string>>> cases = {
      {"data_offsets",  // truncated: the last tensor runs past the end
       {kGoldenHeader, kGoldenData.substr(0, 6)}},
      {"hole of 2 bytes before tensor 'b'",
       {R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[6,10]}})",
        kGoldenData + "xx"}},
      {"tensor 'b' at [2, 6) overlapping",
       {R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
        kGoldenData}},
      {"2 trailing bytes", {kGoldenHeader, kGoldenData + "zz"}},
      {"tensor 'a'",  // size != numel x bytes
       {R"({"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
        kGoldenData}},
      {"\"F8_E4M3\"",
       {R"({"a":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
        kGoldenData}},
      {"tensor 'a': expected each name once",
       {R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
        kGoldenData}},
      {"starting at its first byte", {" " + kGoldenHeader, kGoldenData}},
      {"invalid JSON", {kGoldenHeader.substr(0, 20), kGoldenData}},
  };
  for (const auto& [needle, file] : cases) {
    const std::string e = open_error(file.first, file.second);
    EXPECT_NE(e.find(needle), std::string::npos) << needle << " -> " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  // A header length beyond the file.
  test::TempDir dir;
  std::ofstream(dir / "long.safetensors", std::ios::binary) << std::string("\xff\xff\x00\x00\x00\x00\x00\x00", 8) << "{}";
  EXPECT_NE(test::error_of([&] { SafetensorsFile f(dir / "long.safetensors"); }).find("header length"), std::string::npos);
}

// A valid checkpoint in `dir`, then `mutate(dir)`; the import's error.
std::string checkpoint_error(const HfShape& s, const std::function<void(const test::TempDir&)>& mutate) {
  test::TempDir dir;
  test::write_hf_checkpoint(dir.path().string(), s);
  mutate(dir);
  return test::error_of([&] { HfCheckpoint(dir.path().string()).load(); });
}

std::function<void(const test::TempDir&)> config_edit(const HfShape& s, const std::function<void(nlohmann::json&)>& edit) {
  return [s, edit](const test::TempDir& dir) {
    auto c = test::hf_config(s);
    edit(c);
    test::write_text(dir / "config.json", c.dump());
  };
}

TEST(HfImportErrors, ConfigKeysOutqCannotRunAreNamed) {
  const HfShape s;
  const std::vector<std::pair<std::string, std::function<void(nlohmann::json&)>>> cases = {
      {"model_type: expected llama, mistral or qwen2", [](auto& c) { c["model_type"] = "gpt2"; }},
      {"architectures", [](auto& c) { c["architectures"] = {"GPT2LMHeadModel"}; }},
      {"head_dim: expected hidden_size / num_attention_heads = 16", [](auto& c) { c["head_dim"] = 32; }},
      {"hidden_act", [](auto& c) { c["hidden_act"] = "gelu"; }},
      {"mlp_bias", [](auto& c) { c["mlp_bias"] = true; }},
      {"rope_scaling.type: expected default, linear or llama3", [](auto& c) { c["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}}; }},
      {"rope_parameters.rope_type", [](auto& c) {
         c.erase("rope_scaling");
         c["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 1e4}};
       }},
      {"rope_scaling.original_max_position_embeddings", [](auto& c) {
         c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0}};
       }},
      {"num_attention_heads: expected a divisor of hidden_size 48", [](auto& c) { c["num_attention_heads"] = 5; }},
      {"num_key_value_heads: expected a divisor of num_attention_heads 3", [](auto& c) { c["num_key_value_heads"] = 2; }},
      {"use_sliding_window", [](auto& c) {
         c["model_type"] = "qwen2";
         c["architectures"] = {"Qwen2ForCausalLM"};
         c["use_sliding_window"] = true;
       }},
      {"hidden_size: expected an integer field", [](auto& c) { c.erase("hidden_size"); }},
  };
  for (const auto& [needle, edit] : cases) {
    const std::string e = checkpoint_error(s, config_edit(s, edit));
    EXPECT_NE(e.find(needle), std::string::npos) << needle << " -> " << e;
    EXPECT_NE(e.find("config.json"), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST(HfImportErrors, TensorsAndShardsOutOfStepAreNamed) {
  HfShape s;
  const std::string down = "model.layers.1.mlp.down_proj.weight";
  // Rewrites the single file with the tensors `edit` leaves.
  auto retensor = [&](const std::function<void(std::map<std::string, torch::Tensor>&)>& edit) {
    return [=](const test::TempDir& dir) {
      auto t = test::hf_tensors(s);
      edit(t);
      SafetensorsWriter w;
      for (auto& [name, x] : t) w.add(name, DType::F32, x.sizes().vec(), x.data_ptr(), x.nbytes());
      w.write(dir / "model.safetensors");
    };
  };
  std::vector<std::pair<std::string, std::function<void(const test::TempDir&)>>> cases = {
      {"1 missing: model.norm.weight", retensor([](auto& t) { t.erase("model.norm.weight"); })},
      {"1 unexpected: model.layers.0.mlp.extra.weight", retensor([](auto& t) { t["model.layers.0.mlp.extra.weight"] = torch::ones({2}); })},
      {down + ": expected shape [48, 80] (from config.json), found shape [48, 81]", retensor([&](auto& t) { t[down] = torch::ones({48, 81}); })},
      {down + ": expected finite values, found 1 of 3840 non-finite (1 NaN", retensor([&](auto& t) {
         t[down] = t[down].clone();
         t[down][3][7] = std::nanf("");
       })},
      {down + ": expected dtype F32, F16 or BF16", [&](const test::TempDir& dir) {
         auto t = test::hf_tensors(s);
         const auto d = t[down].to(torch::kFloat64);
         t.erase(down);
         SafetensorsWriter w;
         for (auto& [name, x] : t) w.add(name, DType::F32, x.sizes().vec(), x.data_ptr(), x.nbytes());
         w.add(down, DType::F64, d.sizes().vec(), d.data_ptr(), d.nbytes());
         w.write(dir / "model.safetensors");
       }},
      {"pytorch_model.bin", [](const test::TempDir& dir) {
         std::filesystem::remove(dir / "model.safetensors");
         test::write_text(dir / "pytorch_model.bin", "pickle");
       }},
      {"config.json", [](const test::TempDir& dir) { std::filesystem::remove(dir / "config.json"); }},
  };
  HfShape sharded = s;
  sharded.shards = true;
  const std::string index = "model.safetensors.index.json";
  auto edit_index = [&](const std::function<void(nlohmann::json&)>& edit) {
    return [=](const test::TempDir& dir) {
      auto j = nlohmann::json::parse(test::read_text(dir / index));
      edit(j);
      test::write_text(dir / index, j.dump());
    };
  };
  std::vector<std::pair<std::string, std::function<void(const test::TempDir&)>>> shard_cases = {
      {"shard model-00002-of-00002.safetensors (of tensor", [](const test::TempDir& dir) {
         std::filesystem::remove(dir / "model-00002-of-00002.safetensors");
       }},
      {"weight_map.model.norm.weight: expected a tensor of model-00002-of-00002.safetensors",
       edit_index([](auto& j) { j["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors"; })},
      {"does not list", edit_index([](auto& j) { j["weight_map"].erase("model.norm.weight"); })},
      {"a .safetensors file name in the checkpoint directory",
       edit_index([](auto& j) { j["weight_map"]["model.norm.weight"] = "../model-00001-of-00002.safetensors"; })},
      {"weight_map: expected an object", edit_index([](auto& j) { j.erase("weight_map"); })},
      {"each tensor in one shard", [&](const test::TempDir& dir) {
         // The second shard also holds model.norm.weight (the index names the first).
         auto t = test::hf_tensors(sharded);
         auto j = nlohmann::json::parse(test::read_text(dir / index));
         SafetensorsWriter w;
         for (auto& [name, x] : t)
           if (j["weight_map"][name] == "model-00002-of-00002.safetensors" || name == "model.norm.weight")
             w.add(name, DType::F32, x.sizes().vec(), x.data_ptr(), x.nbytes());
         w.write(dir / "model-00002-of-00002.safetensors");
       }},
  };
  for (const auto& [needle, mutate] : cases) {
    const std::string e = checkpoint_error(s, mutate);
    EXPECT_NE(e.find(needle), std::string::npos) << needle << " -> " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  for (const auto& [needle, mutate] : shard_cases) {
    const std::string e = checkpoint_error(sharded, mutate);
    EXPECT_NE(e.find(needle), std::string::npos) << needle << " -> " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST(HfImportErrors, ATokenizerOutqCannotReadIsNamed) {
  test::TempDir dir;
  test::write_hf_checkpoint(dir.path().string(), HfShape{});
  HfCheckpoint checkpoint(dir.path().string());
  EXPECT_NE(test::error_of([&] { checkpoint.tokenizer_model(); }).find("found neither"), std::string::npos);
  // A tokenizer.json with a normalizer outq does not implement: refused before anything is written.
  auto json = nlohmann::json::parse(test::read_text(OUTQ_SOURCE_DIR "/tests/data/fixtures/bpe-qwen2.json"));
  json["normalizer"] = {{"type", "Replace"}};
  test::write_text(dir / "tokenizer.json", json.dump());
  const std::string e = test::error_of([&] { hf_import(dir.path().string(), dir / "out"); });
  EXPECT_NE(e.find("tokenizer.json: normalizer.type: expected NFC"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(dir / "out"));
}

}  // namespace
}  // namespace outq
