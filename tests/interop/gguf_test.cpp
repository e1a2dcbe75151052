// GGUF: the writer and the strict reader (hand-built files for each rejection), and the export:
// metadata types as llama.cpp requires them; a float export whose weights, run through an
// independent double-precision forward with llama.cpp's adjacent-pair RoPE, give outq's logits
// (so the Q/K row permutation is right); quantized exports whose blocks, decoded here with an
// independent fp16 decoder and the block layouts (nibble j low = element j, high = element j + 16),
// hold outq's codes exactly and its dequantized weights within the fp16 bound of the scales;
// refusals; and the Hugging Face export, which imports back bit for bit.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "hf_fixture.h"
#include "outq/core/error.h"
#include "outq/data/tokenizer.h"
#include "outq/interop/gguf.h"
#include "outq/interop/gguf_export.h"
#include "outq/interop/hf_import.h"
#include "outq/model/checkpoint.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/quantized_io.h"
#include "outq/quant/recipe.h"
#include "tiny_model.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

// IEEE binary16 -> float, by hand (independent of the writer's conversion).
float half_to_float(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1F, frac = h & 0x3FF;
  double v;
  if (exp == 0) v = std::ldexp(frac, -24);
  else if (exp == 31) v = frac ? NAN : INFINITY;
  else v = std::ldexp(1024 + frac, exp - 25);
  return static_cast<float>(sign ? -v : v);
}

// --- the format ---------------------------------------------------------------------------------

struct Bytes {
  std::string b;
  template <class T>
  Bytes& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& s) { return put<uint64_t>(s.size()), b += s, *this; }
};

// A file with one u32 key and one F32 tensor of 32 elements, hand-built; `edit` changes the parts.
struct Parts {
  uint32_t version = 3;
  std::string key = "general.architecture", second_key = "";
  uint32_t value_type = 8;  // STRING
  std::string tensor = "t", second_tensor = "";
  uint64_t ne0 = 32, offset = 0;
  uint32_t type = 0;  // F32
  uint64_t data_bytes = 128;
};
std::string hand_built(const Parts& p) {
  Bytes f;
  f.b = "GGUF";
  f.put<uint32_t>(p.version).put<uint64_t>(p.second_tensor.empty() ? 1 : 2).put<uint64_t>(p.second_key.empty() ? 1 : 2);
  for (const auto& k : {p.key, p.second_key}) {
    if (k.empty()) continue;
    f.str(k).put<uint32_t>(p.value_type);
    if (p.value_type == 8) f.str("llama");
    if (p.value_type == 9) f.put<uint32_t>(9).put<uint64_t>(0);  // an array of arrays
    if (p.value_type == 10) f.put<uint64_t>(32);
  }
  uint64_t offset = p.offset;
  for (const auto& t : {p.tensor, p.second_tensor}) {
    if (t.empty()) continue;
    f.str(t).put<uint32_t>(1).put<uint64_t>(p.ne0).put<uint32_t>(p.type).put<uint64_t>(offset);
    offset += 128;
  }
  f.b.resize((f.b.size() + 31) / 32 * 32, '\0');
  f.b += std::string(p.data_bytes + (p.second_tensor.empty() ? 0 : 128), '\x01');
  return f.b;
}

std::string read_error(const std::string& bytes) {
  test::TempDir dir;
  std::ofstream(dir / "x.gguf", std::ios::binary) << bytes;
  return test::error_of([&] { GgufFile f(dir / "x.gguf"); });
}

TEST(GgufFormat, WriterAndReaderAgree) {
  test::TempDir dir;
  GgufWriter w;
  w.set_u32("a.count", 7);
  w.set_f32("a.eps", 1e-5f);
  w.set_bool("a.flag", true);
  w.set_string("a.name", "tiny");
  w.set_strings("a.tokens", {"<s>", "\xE2\x96\x81x", ""});
  w.set_f32s("a.scores", {0.5f, -1.0f});
  w.set_i32s("a.types", {1, 3, 6});
  std::string f32(64 * 4, '\x02'), q8(2 * 34, '\x03');
  w.add_tensor("x.weight", GgmlType::F32, {32, 2}, f32);
  w.add_tensor("y.weight", GgmlType::Q8_0, {64, 1}, q8);
  w.write(dir / "w.gguf");
  GgufFile f(dir / "w.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get("a.count").type, GgufType::U32);
  EXPECT_EQ(f.get("a.count").number, 7);
  EXPECT_EQ(f.get("a.eps").type, GgufType::F32);
  EXPECT_FLOAT_EQ(static_cast<float>(f.get("a.eps").number), 1e-5f);
  EXPECT_EQ(f.get("a.flag").type, GgufType::BOOL);
  EXPECT_EQ(f.get("a.name").text, "tiny");
  EXPECT_EQ(f.get("a.tokens").element, GgufType::STRING);
  EXPECT_EQ(f.get("a.tokens").items[1].text, "\xE2\x96\x81x");
  EXPECT_EQ(f.get("a.scores").element, GgufType::F32);
  EXPECT_EQ(f.get("a.types").element, GgufType::I32);
  EXPECT_EQ(f.get("a.types").items[2].number, 6);
  const auto& y = f.tensor("y.weight");
  EXPECT_EQ(y.offset, 256u);  // 256 bytes of x, already a multiple of 32
  EXPECT_EQ(y.bytes, 68u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(y.data), y.bytes), q8);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.tensor("x.weight").data), 256), f32);
  // The data section starts at a multiple of 32 and each tensor at a padded offset.
  EXPECT_EQ((f.tensor("x.weight").data - f.tensor("x.weight").data) % 32, 0);
}

TEST(GgufFormat, TheReaderRefusesWhatLlamaCppRefuses) {
  EXPECT_EQ(read_error(hand_built({})), "");
  std::vector<std::pair<std::string, std::string>> cases;
  auto with = [&](const std::string& needle, const std::function<void(Parts&)>& edit) {
    Parts p;
    edit(p);
    cases.emplace_back(needle, hand_built(p));
  };
  with("version: expected 2 or 3, found 1", [](Parts& p) { p.version = 1; });
  with("general.architecture: expected each key once", [](Parts& p) { p.second_key = p.key; });
  with("expected an array of scalars or strings", [](Parts& p) { p.value_type = 9; });
  with("general.alignment: expected a UINT32 power of two, found UINT64", [](Parts& p) { p.key = "general.alignment", p.value_type = 10; });
  with("tensor 't': expected each tensor name once", [](Parts& p) { p.second_tensor = "t"; });
  with("tensor 't': offset: expected 0 (packed", [](Parts& p) { p.offset = 32; });
  with("ne[0]: expected a multiple of the Q8_0 block (32)", [](Parts& p) { p.type = 8, p.ne0 = 48; });
  with("expected F32, F16, BF16, Q4_0, Q4_1 or Q8_0", [](Parts& p) { p.type = 12; });
  with("(truncated?)", [](Parts& p) { p.data_bytes = 100; });
  cases.emplace_back("magic: expected \"GGUF\"", "GGML" + hand_built({}).substr(4));
  for (const auto& [needle, bytes] : cases) {
    const std::string e = read_error(bytes);
    EXPECT_NE(e.find(needle), std::string::npos) << needle << " -> " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

// --- the export ---------------------------------------------------------------------------------

class GgufExport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    TokenizerTrainOptions options;
    options.vocab_size = 300;
    Tokenizer::train({test::synthetic_text(30, 4)}, options).save(*dir_ / "tokenizer.model");
  }
  static void TearDownTestSuite() { delete dir_; }
  // A float model directory: width 64, 4 query heads of 16 over 2 key-value heads, vocabulary 310
  // (10 rows more than the tokenizer: padding), random norms.
  static std::string float_model(const std::string& name, bool tied = false, bool biases = false) {
    ModelConfig c = test::tiny_config({64, 128, 4, 2, 310, 32, 2, 0.1, tied});
    c.attention_bias = biases;
    Llama m(c);
    m->reset_parameters(3);
    torch::NoGradGuard no_grad;
    auto gen = at::detail::createCPUGenerator(4);
    for (auto& p : m->named_parameters())
      if (p.key().find("norm") != std::string::npos) p.value().copy_(torch::rand(p.value().sizes(), gen) + 0.5);
    const std::string dir = *dir_ / name;
    model_save(m, dir, *dir_ / "tokenizer.model");
    return dir;
  }
  static std::string quantized_model(const std::string& name, const std::string& weights) {
    const std::string source = float_model(name + "-float");
    Llama m = model_load(source);
    const Recipe r = recipe_parse("name = \"" + name + "\"\n[weights]\n" + weights + "\n[activations]\nbits = 8\n"
                                  "granularity = \"token\"\ndynamic = true\n", "r.toml");
    const QuantizedModel q = quantize_model(m, r, nullptr, 1);
    quantized_save(m, q, *dir_ / name, *dir_ / "tokenizer.model");
    return *dir_ / name;
  }
  static test::TempDir* dir_;
};
test::TempDir* GgufExport::dir_ = nullptr;

// Tensor `name` of a GGUF file as a float (out, in) tensor (F32 / F16 only).
torch::Tensor float_tensor(const GgufFile& f, const std::string& name) {
  const auto& t = f.tensor(name);
  std::vector<int64_t> shape(t.ne.rbegin(), t.ne.rend());
  if (t.type == GgmlType::F32) return torch::from_blob(const_cast<uint8_t*>(t.data), shape, torch::kFloat32).clone();
  std::vector<float> v(static_cast<size_t>(t.elements()));
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, t.data + 2 * i, 2);
    v[i] = half_to_float(h);
  }
  return torch::tensor(v).reshape(shape);
}

TEST_F(GgufExport, MetadataHasTheTypesLlamaCppRequires) {
  const std::string model = float_model("meta");
  gguf_export(model, *dir_ / "meta.gguf", {});
  GgufFile f(*dir_ / "meta.gguf");
  for (const char* key : {"llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                          "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count",
                          "llama.vocab_size", "general.alignment", "general.file_type", "tokenizer.ggml.bos_token_id",
                          "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id"})
    EXPECT_EQ(f.get(key).type, GgufType::U32) << key;
  for (const char* key : {"llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base"})
    EXPECT_EQ(f.get(key).type, GgufType::F32) << key;
  EXPECT_EQ(f.get("general.architecture").text, "llama");
  EXPECT_EQ(f.get("tokenizer.ggml.model").text, "llama");
  EXPECT_EQ(f.get("tokenizer.ggml.scores").element, GgufType::F32);
  EXPECT_EQ(f.get("tokenizer.ggml.token_type").element, GgufType::I32);
  const auto& tokens = f.get("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.items.size(), 310u);
  const Tokenizer tok = Tokenizer::load(*dir_ / "tokenizer.model");
  EXPECT_EQ(tokens.items[1].text, "<s>");
  EXPECT_EQ(f.get("tokenizer.ggml.token_type").items[1].number, 3);   // control
  EXPECT_EQ(f.get("tokenizer.ggml.token_type").items[0].number, 2);   // unknown
  EXPECT_EQ(tokens.items[3 + 10].text, "<0x0A>");                     // byte pieces, newline among them
  EXPECT_EQ(f.get("tokenizer.ggml.token_type").items[13].number, 6);
  EXPECT_EQ(tokens.items[305].text, "[PAD305]");
  EXPECT_EQ(f.get("tokenizer.ggml.token_type").items[305].number, 5);
  EXPECT_EQ(tokens.items[299].text, tok.piece(299));
  EXPECT_EQ(f.get("tokenizer.ggml.scores").items[299].number, tok.score(299));
  EXPECT_TRUE(f.get("tokenizer.ggml.add_space_prefix").number == 1);
  EXPECT_EQ(f.get("general.file_type").number, 1);  // mostly F16
  EXPECT_EQ(f.tensor("blk.1.ffn_down.weight").ne, (std::vector<uint64_t>{128, 64}));
  EXPECT_EQ(f.tensor("blk.0.attn_norm.weight").type, GgmlType::F32);
  EXPECT_EQ(f.tensor("token_embd.weight").type, GgmlType::F16);
  EXPECT_EQ(f.tensors().size(), 2u + 2 * 9 + 1);
}

TEST_F(GgufExport, AFloatExportRunWithAdjacentPairRopeGivesTheModelsLogits) {
  for (bool tied : {false, true}) {
    const std::string model = float_model(tied ? "f32-tied" : "f32", tied);
    gguf_export(model, *dir_ / "f32.gguf", {"f32", ""});
    GgufFile f(*dir_ / "f32.gguf");
    EXPECT_EQ(f.contains("general.quantization_version"), false);
    EXPECT_EQ(f.tensors().size(), (tied ? 2u : 3u) + 2 * 9);
    // The GGUF tensors under Hugging Face names, through a forward with llama.cpp's RoPE pairs.
    std::map<std::string, torch::Tensor> t;
    const std::map<std::string, std::string> names = {
        {"attn_norm", "input_layernorm"}, {"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"},
        {"attn_v", "self_attn.v_proj"},   {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
        {"ffn_gate", "mlp.gate_proj"},    {"ffn_up", "mlp.up_proj"},        {"ffn_down", "mlp.down_proj"}};
    t["model.embed_tokens.weight"] = float_tensor(f, "token_embd.weight");
    t["model.norm.weight"] = float_tensor(f, "output_norm.weight");
    if (!tied) t["lm_head.weight"] = float_tensor(f, "output.weight");
    for (int l = 0; l < 2; ++l)
      for (const auto& [g, hf] : names)
        t["model.layers." + std::to_string(l) + "." + hf + ".weight"] = float_tensor(f, "blk." + std::to_string(l) + "." + g + ".weight");
    test::HfShape s;
    s.hidden = 64, s.heads = 4, s.kv_heads = 2, s.ffn = 128, s.vocab = 310, s.eps = 1e-5, s.tied = tied, s.interleaved_rope = true;
    Llama m = model_load(model);
    const std::vector<int64_t> tokens = {1, 17, 250, 3, 99, 42, 7, 308, 150, 64, 5, 200, 11};
    torch::NoGradGuard no_grad;
    const auto got = m->forward(torch::tensor(tokens).unsqueeze(0))[0].to(torch::kFloat64);
    const auto ref = test::hf_reference_logits(t, s, tokens);
    double err = 0, scale = 0;
    for (size_t i = 0; i < ref.size(); ++i)
      for (size_t v = 0; v < ref[i].size(); ++v) {
        err = std::max(err, std::abs(got[static_cast<int64_t>(i)][static_cast<int64_t>(v)].item<double>() - ref[i][v]));
        scale = std::max(scale, std::abs(ref[i][v]));
      }
    EXPECT_LE(err, 1e-5 * scale) << "tied " << tied;  // (fp32 forward vs double; see hf_import_test)
    // Without the permutation the same forward is far off: the check can fail.
    s.interleaved_rope = false;
    const auto wrong = test::hf_reference_logits(t, s, tokens);
    double off = 0;
    for (size_t i = 0; i < ref.size(); ++i)
      for (size_t v = 0; v < ref[i].size(); ++v) off = std::max(off, std::abs(wrong[i][v] - ref[i][v]));
    EXPECT_GT(off, 1e-3 * scale);
  }
}

// Decodes every quantized tensor independently and compares it with outq's codes and weights.
void expect_blocks_hold_the_codes(const std::string& model_dir, const std::string& gguf, GgmlType want) {
  QuantizedModel info;
  Llama m = quantized_load(model_dir, &info);
  GgufFile f(gguf);
  const auto params = m->named_parameters();
  int checked = 0;
  for (const auto& rec : info.linears) {
    // model.layers.L.self_attn.q_proj -> blk.L.attn_q.weight
    const std::string rest = rec.module.substr(rec.module.find('.', 13) + 1);
    const int layer = std::stoi(rec.module.substr(13));
    const std::map<std::string, std::string> names = {
        {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"},
        {"self_attn.o_proj", "attn_output"}, {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"}, {"mlp.down_proj", "ffn_down"}};
    const auto& t = f.tensor("blk." + std::to_string(layer) + "." + names.at(rest) + ".weight");
    ASSERT_EQ(t.type, want) << rec.module;
    const int64_t rows = rec.codes.size(0), in = rec.codes.size(1), heads = rest == "self_attn.q_proj" ? 4 : rest == "self_attn.k_proj" ? 2 : 0;
    const torch::Tensor w = params[rec.module + ".weight"];
    const torch::Tensor scale = rec.weight_qp.scale.reshape({-1, rec.weight_qp.scale.numel() / std::max<int64_t>(1, rec.weight_qp.scale.size(0))});
    for (int64_t r = 0; r < rows; ++r) {
      // Row r of the file is outq's row `src`: within a head of 16, 2i <- i and 2i + 1 <- i + 8.
      const int64_t src = heads ? (r / 16) * 16 + (r % 16) / 2 + (r % 2) * 8 : r;
      for (int64_t b = 0; b < in / 32; ++b) {
        const uint8_t* blk = t.data + (r * in / 32 + b) * ggml_block_bytes(want);
        uint16_t dh, mh = 0;
        std::memcpy(&dh, blk, 2);
        if (want == GgmlType::Q4_1) std::memcpy(&mh, blk + 2, 2);
        const float d = half_to_float(dh), mo = half_to_float(mh);
        const uint8_t* qs = blk + (want == GgmlType::Q4_1 ? 4 : 2);
        for (int j = 0; j < 32; ++j) {
          int u;
          if (want == GgmlType::Q8_0) u = static_cast<int8_t>(qs[j]);
          else u = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);  // element j: low nibble of byte j, j + 16: high
          const int code = rec.codes[src][b * 32 + j].item<int>();
          ASSERT_EQ(u, want == GgmlType::Q4_0 ? code + 8 : code) << rec.module << " row " << r << " col " << b * 32 + j;
          const double x = want == GgmlType::Q4_0 ? (u - 8) * static_cast<double>(d)
                           : want == GgmlType::Q4_1 ? u * static_cast<double>(d) + mo
                                                    : u * static_cast<double>(d);
          const double s = std::abs(rec.weight_qp.scale.numel() == 1 ? rec.weight_qp.scale.item<float>()
                                                                     : scale[scale.size(0) == 1 ? 0 : src][(b * 32 + j) * scale.size(1) / in].item<float>());
          // fp16 d and m: |dw| <= u |s - fp16(s)| + |m - fp16(m)| <= (15 + |q_lo - z|) s 2^-11 <= 0.016 s
          // for a zero point within the codes (gguf.md section 8); Q8_0: 128 s 2^-11 = 0.0625 s.
          const double bound = (want == GgmlType::Q8_0 ? 0.0625 : 0.016) * s + 1e-12;
          ASSERT_LE(std::abs(x - w[src][b * 32 + j].item<double>()), bound) << rec.module << " row " << r;
        }
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

TEST_F(GgufExport, QuantizedBlocksHoldTheCodesExactly) {
  const std::vector<std::tuple<std::string, std::string, GgmlType>> cases = {
      {"q8", "bits = 8\nsymmetric = true\ngranularity = \"channel\"", GgmlType::Q8_0},
      {"q4sym", "bits = 4\nsymmetric = true\ngranularity = \"channel\"", GgmlType::Q4_0},
      {"q4g32", "bits = 4\ngranularity = \"group\"\ngroup_size = 32", GgmlType::Q4_1},
      {"q4g64", "bits = 4\ngranularity = \"group\"\ngroup_size = 64", GgmlType::Q4_1},
      {"q4ch", "bits = 4\ngranularity = \"channel\"", GgmlType::Q4_1},
  };
  for (const auto& [name, weights, type] : cases) {
    const std::string dir = quantized_model(name, weights);
    const auto summary = gguf_export(dir, *dir_ / (name + ".gguf"), {});
    EXPECT_EQ(summary.file_type, ggml_type_name(type)) << name;
    ASSERT_EQ(summary.notes.size(), 1u) << name;  // the activation quantization is left out
    expect_blocks_hold_the_codes(dir, *dir_ / (name + ".gguf"), type);
    GgufFile f(*dir_ / (name + ".gguf"));
    EXPECT_EQ(f.get("general.quantization_version").number, 2);
    EXPECT_EQ(f.tensor("output.weight").type, GgmlType::F16) << name;  // the LM head is not quantized
  }
}

TEST_F(GgufExport, FormatsAndModelsWithoutAGgufFormAreRefused) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bits = 3\ngranularity = \"channel\"", "no exact GGUF block type"},
      {"bits = 8\ngranularity = \"channel\"", "no exact GGUF block type"},
      {"bits = 4\ngranularity = \"group\"\ngroup_size = 16", "expected multiples of 32"},
  };
  int i = 0;
  for (const auto& [weights, needle] : cases) {
    const std::string dir = quantized_model("bad" + std::to_string(i++), weights);
    const std::string e = test::error_of([&] { gguf_export(dir, *dir_ / "bad.gguf", {}); });
    EXPECT_NE(e.find(needle), std::string::npos) << weights << " -> " << e;
    EXPECT_NE(e.find("model.layers.0."), std::string::npos) << e;
  }
  EXPECT_FALSE(fs::exists(*dir_ / "bad.gguf"));
  const std::string biased = float_model("biased", false, true);
  EXPECT_NE(test::error_of([&] { gguf_export(biased, *dir_ / "b.gguf", {}); }).find("attention has biases"), std::string::npos);
}

TEST_F(GgufExport, AHuggingFaceExportImportsBackBitForBit) {
  for (const std::string& source : {float_model("hf-src"), quantized_model("hf-q", "bits = 4\ngranularity = \"channel\"")}) {
    const std::string hf = source + "-hf", back = source + "-back";
    hf_export(source, hf);
    hf_import(hf, back);
    QuantizedModel info;
    Llama a = is_quantized_dir(source) ? quantized_load(source, &info) : model_load(source), b = model_load(back);
    for (const auto& p : a->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), b->named_parameters()[p.key()])) << p.key();
  }
}

}  // namespace
}  // namespace outq
