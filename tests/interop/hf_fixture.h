// Synthetic Hugging Face checkpoints written by the tests (config.json in the transformers v4 or v5
// spelling, one safetensors file or two shards with an index, F32 / F16 / BF16 storage) and an
// independent double-precision forward pass with Hugging Face's semantics in plain loops
// (RMSNorm, rotate_half RoPE with linear / llama3 scaling, repeat_kv GQA, SwiGLU, biases), or with
// llama.cpp's RoPE pairing of adjacent values.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/core/safetensors.h"
#include "outq/model/tensor_io.h"
#include "test_util.h"

namespace outq::test {

struct HfShape {
  std::string model_type = "llama";
  int hidden = 48, heads = 3, kv_heads = 1, ffn = 80, layers = 2, vocab = 67, max_pos = 64;
  double eps = 1e-6, theta = 10000.0;
  bool tied = false, attention_bias = false;
  std::string rope_type = "default";  // or "linear", "llama3"
  double rope_factor = 4.0;
  bool v5 = false;                     // rope_parameters / dtype spellings
  DType dtype = DType::F32;
  bool shards = false;                 // two shards + model.safetensors.index.json
  bool inv_freq = false;               // add the old rotary_emb.inv_freq buffers
  uint64_t seed = 1;
  double embed_scale = 1.0;            // 0.1: logits of about unit size, perplexity near the vocabulary's
  bool interleaved_rope = false;       // reference only: rotate pairs (2i, 2i + 1) as llama.cpp does
};

// The stored tensors, as float32 values exactly representable in the storage dtype.
inline std::map<std::string, torch::Tensor> hf_tensors(const HfShape& s) {
  auto gen = at::detail::createCPUGenerator(s.seed);
  const int64_t hd = s.hidden / s.heads;
  std::map<std::string, torch::Tensor> t;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double scale, double offset = 0.0) {
    auto x = torch::randn(shape, gen) * scale + offset;
    t[name] = x.to(torch_dtype(s.dtype)).to(torch::kFloat32);
  };
  add("model.embed_tokens.weight", {s.vocab, s.hidden}, s.embed_scale);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {s.hidden}, 0.2, 1.0);
    add(p + "post_attention_layernorm.weight", {s.hidden}, 0.2, 1.0);
    add(p + "self_attn.q_proj.weight", {s.heads * hd, s.hidden}, 0.15);
    add(p + "self_attn.k_proj.weight", {s.kv_heads * hd, s.hidden}, 0.15);
    add(p + "self_attn.v_proj.weight", {s.kv_heads * hd, s.hidden}, 0.15);
    add(p + "self_attn.o_proj.weight", {s.hidden, s.heads * hd}, 0.15);
    if (s.model_type == "qwen2" || s.attention_bias) {
      add(p + "self_attn.q_proj.bias", {s.heads * hd}, 0.5);
      add(p + "self_attn.k_proj.bias", {s.kv_heads * hd}, 0.5);
      add(p + "self_attn.v_proj.bias", {s.kv_heads * hd}, 0.5);
    }
    if (s.attention_bias) add(p + "self_attn.o_proj.bias", {s.hidden}, 0.5);
    add(p + "mlp.gate_proj.weight", {s.ffn, s.hidden}, 0.15);
    add(p + "mlp.up_proj.weight", {s.ffn, s.hidden}, 0.15);
    add(p + "mlp.down_proj.weight", {s.hidden, s.ffn}, 0.1);
  }
  add("model.norm.weight", {s.hidden}, 0.2, 1.0);
  if (!s.tied) add("lm_head.weight", {s.vocab, s.hidden}, 0.15);
  return t;
}

inline nlohmann::json hf_config(const HfShape& s) {
  const char* arch = s.model_type == "qwen2" ? "Qwen2ForCausalLM" : s.model_type == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM";
  nlohmann::json c = {{"architectures", {arch}}, {"model_type", s.model_type}, {"hidden_size", s.hidden},
                      {"intermediate_size", s.ffn}, {"num_hidden_layers", s.layers}, {"num_attention_heads", s.heads},
                      {"num_key_value_heads", s.kv_heads}, {"vocab_size", s.vocab}, {"max_position_embeddings", s.max_pos},
                      {"rms_norm_eps", s.eps}, {"hidden_act", "silu"}, {"tie_word_embeddings", s.tied},
                      {"initializer_range", 0.02}, {"use_cache", true}, {"bos_token_id", 1}, {"eos_token_id", 2},
                      {"transformers_version", s.v5 ? "5.0.0" : "4.46.0"}};
  if (s.model_type == "llama") c["attention_bias"] = s.attention_bias;
  nlohmann::json scaling = nullptr;
  if (s.rope_type == "linear") scaling = {{"factor", s.rope_factor}};
  if (s.rope_type == "llama3")
    scaling = {{"factor", s.rope_factor}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
               {"original_max_position_embeddings", 64}};  // with D = 16: kept, blended and divided frequencies
  if (s.v5) {
    nlohmann::json params = {{"rope_theta", s.theta}, {"rope_type", s.rope_type}};
    if (!scaling.is_null()) params.update(scaling);
    c["rope_parameters"] = params;
    c["dtype"] = s.dtype == DType::BF16 ? "bfloat16" : s.dtype == DType::F16 ? "float16" : "float32";
  } else {
    c["rope_theta"] = s.theta;
    if (!scaling.is_null()) scaling["type"] = s.rope_type;  // (the older key; rope_type is read too)
    c["rope_scaling"] = scaling;
    c["torch_dtype"] = s.dtype == DType::BF16 ? "bfloat16" : s.dtype == DType::F16 ? "float16" : "float32";
  }
  return c;
}

// Writes the checkpoint into `dir`; returns the tensors written (float32 values).
inline std::map<std::string, torch::Tensor> write_hf_checkpoint(const std::string& dir, const HfShape& s) {
  auto tensors = hf_tensors(s);
  write_text(dir + "/config.json", hf_config(s).dump(2));
  std::vector<torch::Tensor> keep;
  auto stored = [&](const torch::Tensor& x) {
    keep.push_back(x.to(torch_dtype(s.dtype)).contiguous());
    return keep.back();
  };
  SafetensorsWriter first, second;
  nlohmann::json weight_map = nlohmann::json::object();
  int i = 0;
  for (const auto& [name, x] : tensors) {
    const torch::Tensor y = stored(x);
    const bool in_second = s.shards && (i++ % 2 == 1);
    (in_second ? second : first).add(name, s.dtype, y.sizes().vec(), y.data_ptr(), y.nbytes());
    weight_map[name] = in_second ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  }
  std::vector<float> inv(static_cast<size_t>(s.hidden / s.heads / 2), 1.0f);
  if (s.inv_freq)
    for (int l = 0; l < s.layers; ++l) {
      const std::string name = "model.layers." + std::to_string(l) + ".self_attn.rotary_emb.inv_freq";
      first.add(name, DType::F32, {static_cast<int64_t>(inv.size())}, inv.data(), inv.size() * 4);
      weight_map[name] = "model-00001-of-00002.safetensors";
    }
  first.set_metadata("format", "pt");
  if (s.shards) {
    first.write(dir + "/model-00001-of-00002.safetensors");
    second.write(dir + "/model-00002-of-00002.safetensors");
    write_text(dir + "/model.safetensors.index.json",
               nlohmann::json({{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}).dump(2));
  } else {
    first.write(dir + "/model.safetensors");
  }
  return tensors;
}

// Logits (T, V) of the token sequence, in double, with Hugging Face's LLaMA / Qwen2 semantics.
inline std::vector<std::vector<double>> hf_reference_logits(const std::map<std::string, torch::Tensor>& tensors,
                                                            const HfShape& s, const std::vector<int64_t>& tokens) {
  auto get = [&](const std::string& name) { return tensors.at(name).to(torch::kFloat64).contiguous(); };
  auto has = [&](const std::string& name) { return tensors.count(name) > 0; };
  const int64_t T = static_cast<int64_t>(tokens.size()), C = s.hidden, D = C / s.heads, G = s.heads / s.kv_heads;
  using Mat = std::vector<std::vector<double>>;
  auto linear = [&](const Mat& x, const std::string& w_name, const std::string& b_name) {
    const torch::Tensor w = get(w_name);
    const double* wp = w.data_ptr<double>();
    const int64_t out = w.size(0), in = w.size(1);
    std::vector<double> bias(static_cast<size_t>(out), 0.0);
    if (has(b_name)) {
      const torch::Tensor b = get(b_name);
      for (int64_t o = 0; o < out; ++o) bias[static_cast<size_t>(o)] = b.data_ptr<double>()[o];
    }
    Mat y(x.size(), std::vector<double>(static_cast<size_t>(out)));
    for (size_t t = 0; t < x.size(); ++t)
      for (int64_t o = 0; o < out; ++o) {
        double acc = bias[static_cast<size_t>(o)];
        for (int64_t i = 0; i < in; ++i) acc += wp[o * in + i] * x[t][static_cast<size_t>(i)];
        y[t][static_cast<size_t>(o)] = acc;
      }
    return y;
  };
  auto rms_norm = [&](const Mat& x, const std::string& g_name) {
    const torch::Tensor g = get(g_name);
    Mat y = x;
    for (auto& row : y) {
      double ms = 0;
      for (double v : row) ms += v * v;
      const double r = 1.0 / std::sqrt(ms / static_cast<double>(row.size()) + s.eps);
      for (size_t i = 0; i < row.size(); ++i) row[i] *= r * g.data_ptr<double>()[i];
    }
    return y;
  };
  // Frequencies: theta^(-2i/D), scaled.
  std::vector<double> inv_freq(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i) {
    double f = std::pow(s.theta, -2.0 * static_cast<double>(i) / static_cast<double>(D));
    if (s.rope_type == "linear") f /= s.rope_factor;
    if (s.rope_type == "llama3") {
      const double original = 64, low = 1.0, high = 4.0, wavelength = 2 * M_PI / f;
      if (wavelength > original / low) {
        f /= s.rope_factor;
      } else if (wavelength >= original / high) {
        const double smooth = (original / wavelength - low) / (high - low);
        f = (1 - smooth) * f / s.rope_factor + smooth * f;
      }
    }
    inv_freq[static_cast<size_t>(i)] = f;
  }
  auto rope = [&](Mat& x, int64_t heads) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < D / 2; ++i) {
          const double a = static_cast<double>(t) * inv_freq[static_cast<size_t>(i)];
          const int64_t i1 = s.interleaved_rope ? 2 * i : i, i2 = s.interleaved_rope ? 2 * i + 1 : i + D / 2;
          double& x1 = x[static_cast<size_t>(t)][static_cast<size_t>(h * D + i1)];
          double& x2 = x[static_cast<size_t>(t)][static_cast<size_t>(h * D + i2)];
          const double y1 = x1 * std::cos(a) - x2 * std::sin(a), y2 = x2 * std::cos(a) + x1 * std::sin(a);
          x1 = y1;
          x2 = y2;
        }
  };
  const torch::Tensor embed = get("model.embed_tokens.weight");
  Mat x(static_cast<size_t>(T), std::vector<double>(static_cast<size_t>(C)));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) x[static_cast<size_t>(t)][static_cast<size_t>(c)] = embed.data_ptr<double>()[tokens[static_cast<size_t>(t)] * C + c];
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const Mat h = rms_norm(x, p + "input_layernorm.weight");
    Mat q = linear(h, p + "self_attn.q_proj.weight", p + "self_attn.q_proj.bias");
    Mat k = linear(h, p + "self_attn.k_proj.weight", p + "self_attn.k_proj.bias");
    const Mat v = linear(h, p + "self_attn.v_proj.weight", p + "self_attn.v_proj.bias");
    rope(q, s.heads);
    rope(k, s.kv_heads);
    Mat attn(static_cast<size_t>(T), std::vector<double>(static_cast<size_t>(s.heads * D), 0.0));
    for (int64_t head = 0; head < s.heads; ++head) {
      const int64_t kv = head / G;  // repeat_kv: kv head j serves query heads j G .. j G + G - 1
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> score(static_cast<size_t>(t + 1));
        double mx = -1e300;
        for (int64_t u = 0; u <= t; ++u) {
          double d = 0;
          for (int64_t i = 0; i < D; ++i) d += q[static_cast<size_t>(t)][static_cast<size_t>(head * D + i)] * k[static_cast<size_t>(u)][static_cast<size_t>(kv * D + i)];
          score[static_cast<size_t>(u)] = d / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, score[static_cast<size_t>(u)]);
        }
        double z = 0;
        for (auto& e : score) z += (e = std::exp(e - mx));
        for (int64_t u = 0; u <= t; ++u)
          for (int64_t i = 0; i < D; ++i)
            attn[static_cast<size_t>(t)][static_cast<size_t>(head * D + i)] += score[static_cast<size_t>(u)] / z * v[static_cast<size_t>(u)][static_cast<size_t>(kv * D + i)];
      }
    }
    const Mat o = linear(attn, p + "self_attn.o_proj.weight", p + "self_attn.o_proj.bias");
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) x[static_cast<size_t>(t)][static_cast<size_t>(c)] += o[static_cast<size_t>(t)][static_cast<size_t>(c)];
    const Mat h2 = rms_norm(x, p + "post_attention_layernorm.weight");
    Mat gate = linear(h2, p + "mlp.gate_proj.weight", "");
    const Mat up = linear(h2, p + "mlp.up_proj.weight", "");
    for (size_t t = 0; t < gate.size(); ++t)
      for (size_t i = 0; i < gate[t].size(); ++i) gate[t][i] = gate[t][i] / (1.0 + std::exp(-gate[t][i])) * up[t][i];
    const Mat down = linear(gate, p + "mlp.down_proj.weight", "");
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) x[static_cast<size_t>(t)][static_cast<size_t>(c)] += down[static_cast<size_t>(t)][static_cast<size_t>(c)];
  }
  return linear(rms_norm(x, "model.norm.weight"), s.tied ? "model.embed_tokens.weight" : "lm_head.weight", "");
}

}  // namespace outq::test
