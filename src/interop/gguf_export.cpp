// Export of outq model directories to GGUF (see gguf_export.h for the mapping and what is refused).
#include "outq/interop/gguf_export.h"

#include <c10/util/Half.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>

#include "outq/core/error.h"
#include "outq/data/tokenizer.h"
#include "outq/interop/gguf.h"
#include "outq/model/checkpoint.h"
#include "outq/ptq/quantized_io.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

uint16_t fp16_bits(float x) { return c10::Half(x).x; }  // round to nearest even

std::string bytes_of(const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous();
  return {static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.nbytes())};
}

// One quantized linear as GGUF blocks (rows in `order`), or an error saying why it cannot be.
std::pair<GgmlType, std::string> weight_blocks(const QuantizedLinear& q, const std::vector<int64_t>& order) {
  const QuantSpec& spec = q.weight_spec;
  const int64_t rows = q.codes.size(0), in = q.codes.size(1);
  GgmlType type;
  if (spec.bits == 8 && spec.symmetric) type = GgmlType::Q8_0;
  else if (spec.bits == 4 && spec.symmetric) type = GgmlType::Q4_0;
  else if (spec.bits == 4) type = GgmlType::Q4_1;
  else
    OUTQ_CHECK(false, q.module, ": ", spec.describe(), " weights have no exact GGUF block type (symmetric int8 -> Q8_0, "
               "symmetric int4 -> Q4_0, asymmetric int4 -> Q4_1); quantize with such a recipe (e.g. w4a16-g32-gptq, "
               "w8a16-sym) or export the float model");
  int64_t group_cols = in;
  if (spec.granularity == Granularity::kGroup) group_cols = spec.group_size;
  OUTQ_CHECK(spec.granularity == Granularity::kChannel || spec.granularity == Granularity::kTensor ||
                 spec.granularity == Granularity::kGroup,
             q.module, ": ", spec.describe(), " weights: expected per-channel, per-tensor or grouped scales");
  OUTQ_CHECK(in % 32 == 0 && group_cols % 32 == 0, q.module, ": GGUF blocks are 32 input columns, but the layer has ", in,
             " columns in groups of ", group_cols, "; expected multiples of 32");
  const int64_t groups = in / group_cols;
  const torch::Tensor scale = q.weight_qp.scale.reshape({-1, groups}).expand({rows, groups}).contiguous();
  const torch::Tensor zero = q.weight_qp.zero.reshape({-1, groups}).expand({rows, groups}).contiguous();
  const torch::Tensor codes = q.codes.to(torch::kInt32).contiguous();
  const float* s = scale.data_ptr<float>();
  const float* z = zero.data_ptr<float>();
  const int32_t* c = codes.data_ptr<int32_t>();
  std::string out;
  out.reserve(static_cast<size_t>(rows * in / 32 * ggml_block_bytes(type)));
  auto half = [&](float v, int64_t r, const char* what) {
    const uint16_t h = fp16_bits(v);
    const float back = static_cast<float>(c10::Half(h, c10::Half::from_bits()));
    OUTQ_CHECK(std::isfinite(back) && (back != 0 || v == 0), q.module, ": row ", r, ": the ", what, " ", v,
               " does not fit fp16 (GGUF blocks store it in 16 bits: 6e-8 to 65504)");
    return h;
  };
  for (const int64_t r : order)
    for (int64_t b = 0; b < in / 32; ++b) {
      const int64_t g = b * 32 / group_cols;
      const float sc = s[r * groups + g];
      const int32_t* q32 = c + r * in + b * 32;
      const uint16_t d = half(sc, r, "scale");
      out.append(reinterpret_cast<const char*>(&d), 2);
      if (type == GgmlType::Q8_0) {
        for (int j = 0; j < 32; ++j) out.push_back(static_cast<char>(static_cast<int8_t>(q32[j])));
      } else {
        const int offset = type == GgmlType::Q4_0 ? 8 : 0;  // Q4_0 stores u = q + 8
        if (type == GgmlType::Q4_1) {
          const uint16_t m = half(-sc * z[r * groups + g], r, "offset -scale * zero");
          out.append(reinterpret_cast<const char*>(&m), 2);
        }
        // Byte j: element j in the low nibble, element j + 16 in the high one.
        for (int j = 0; j < 16; ++j)
          out.push_back(static_cast<char>((q32[j] + offset) | ((q32[j + 16] + offset) << 4)));
      }
    }
  return {type, out};
}

}  // namespace

std::vector<int64_t> gguf_rope_row_order(int64_t heads, int64_t head_dim) {
  std::vector<int64_t> order;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < head_dim / 2; ++i) {
      order.push_back(h * head_dim + i);
      order.push_back(h * head_dim + i + head_dim / 2);
    }
  return order;
}

GgufExportSummary gguf_export(const std::string& model_dir, const std::string& out_path, const GgufExportOptions& options) {
  OUTQ_CHECK(options.float_type == "f16" || options.float_type == "f32", "--float-type: expected f16 or f32, found \"",
             options.float_type, "\"");
  const bool quantized = is_quantized_dir(model_dir);
  QuantizedModel info;
  Llama model = quantized ? quantized_load(model_dir, &info) : model_load(model_dir);
  const ModelConfig& c = model->config();
  const std::string where = model_dir + ": GGUF export";
  OUTQ_CHECK(!c.qkv_bias() && !c.o_bias(), where, ": the model's attention has biases (", c.model_type,
             "), which the llama architecture of the GGUF outq writes has no place for");
  OUTQ_CHECK(!c.post_norm(), where, ": a post-norm model; llama.cpp's llama architecture is pre-norm");
  OUTQ_CHECK(c.rope_scaling.type != "llama3", where, ": llama3 RoPE scaling (a rope_freqs tensor) is not written yet");
  OUTQ_CHECK(!model->layer(0).mlp->down_input_hadamard, where, ": rotation's online Hadamard transform on the "
             "down-projection input (r4) has no place in a GGUF; quantize with r4 = false to export a rotated model");
  OUTQ_CHECK(!info.prefix, where, ": a QFeP prefix (its cached keys and values) has no place in a GGUF");
  const Tokenizer tokenizer = Tokenizer::load(tokenizer_path(model_dir));
  OUTQ_CHECK(std::string(tokenizer.kind()) == "sentencepiece-bpe", where, ": a byte-level BPE vocabulary (tokenizer.json; "
             "GGUF's gpt2 tokenizer model with its merges and pre-tokenizer name) is not written yet; a SentencePiece one is");
  OUTQ_CHECK(tokenizer.vocab_size() <= c.vocab_size, where, ": the tokenizer has ", tokenizer.vocab_size(),
             " pieces for ", c.vocab_size, " embedding rows");

  GgufExportSummary summary;
  GgufWriter w;
  const std::string name = options.name.empty() ? fs::path(fs::absolute(model_dir).lexically_normal()).filename().string() : options.name;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", name);
  w.set_u32("general.alignment", 32);
  w.set_u32("llama.context_length", static_cast<uint32_t>(c.max_position_embeddings));
  w.set_u32("llama.embedding_length", static_cast<uint32_t>(c.hidden_size));
  w.set_u32("llama.block_count", static_cast<uint32_t>(c.num_hidden_layers));
  w.set_u32("llama.feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  w.set_u32("llama.attention.head_count", static_cast<uint32_t>(c.num_attention_heads));
  w.set_u32("llama.attention.head_count_kv", static_cast<uint32_t>(c.num_key_value_heads));
  w.set_f32("llama.attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  w.set_u32("llama.rope.dimension_count", static_cast<uint32_t>(c.head_dim()));
  w.set_f32("llama.rope.freq_base", static_cast<float>(c.rope_theta));
  w.set_u32("llama.vocab_size", static_cast<uint32_t>(c.vocab_size));
  if (c.rope_scaling.type == "linear") {
    w.set_string("llama.rope.scaling.type", "linear");
    w.set_f32("llama.rope.scaling.factor", static_cast<float>(c.rope_scaling.factor));
  }
  // The SentencePiece vocabulary, padded to the embedding's rows as unused pieces.
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (int32_t i = 0; i < c.vocab_size; ++i) {
    const bool real = i < tokenizer.vocab_size();
    tokens.push_back(real ? tokenizer.piece(i) : fmt::format("[PAD{}]", i));
    scores.push_back(real ? tokenizer.score(i) : -10000.0f);
    types.push_back(real ? tokenizer.piece_type(i) : 5);
  }
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string("tokenizer.ggml.pre", "default");
  w.set_strings("tokenizer.ggml.tokens", tokens);
  w.set_f32s("tokenizer.ggml.scores", scores);
  w.set_i32s("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(tokenizer.bos_id()));
  w.set_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(tokenizer.eos_id()));
  w.set_u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(tokenizer.unk_id()));
  if (tokenizer.pad_id() >= 0) w.set_u32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(tokenizer.pad_id()));
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_bool("tokenizer.ggml.add_eos_token", false);
  w.set_bool("tokenizer.ggml.add_space_prefix", tokenizer.adds_space_prefix());

  std::map<std::string, const QuantizedLinear*> records;
  for (const auto& rec : info.linears)
    if (rec.weight_spec.enabled() && rec.codes.defined()) records[rec.module + ".weight"] = &rec;
  std::map<std::string, int> type_counts;
  torch::NoGradGuard no_grad;
  auto float_tensor = [&](const std::string& gguf_name, torch::Tensor t, bool norm) {
    t = t.detach().to(torch::kCPU).contiguous();
    std::vector<uint64_t> ne(t.sizes().rbegin(), t.sizes().rend());
    const bool f16 = !norm && options.float_type == "f16";
    w.add_tensor(gguf_name, f16 ? GgmlType::F16 : GgmlType::F32, ne, bytes_of(t.to(f16 ? torch::kHalf : torch::kFloat32)));
    ++summary.tensors;
  };
  const auto params = model->named_parameters();
  auto linear = [&](const std::string& gguf_name, const std::string& hf_name, int64_t rope_heads) {
    const torch::Tensor weight = params[hf_name];
    std::vector<int64_t> order;
    if (rope_heads > 0) order = gguf_rope_row_order(rope_heads, c.head_dim());
    else
      for (int64_t r = 0; r < weight.size(0); ++r) order.push_back(r);
    const auto it = records.find(hf_name);
    if (it == records.end()) {
      float_tensor(gguf_name, weight.index_select(0, torch::tensor(order, torch::kInt64)), false);
      ++type_counts[options.float_type == "f16" ? "F16" : "F32"];
      return;
    }
    auto [type, bytes] = weight_blocks(*it->second, order);
    w.add_tensor(gguf_name, type, {static_cast<uint64_t>(weight.size(1)), static_cast<uint64_t>(weight.size(0))}, std::move(bytes));
    ++summary.tensors;
    ++type_counts[ggml_type_name(type)];
  };
  float_tensor("token_embd.weight", params["model.embed_tokens.weight"], false);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string hf = fmt::format("model.layers.{}.", l), g = fmt::format("blk.{}.", l);
    float_tensor(g + "attn_norm.weight", params[hf + "input_layernorm.weight"], true);
    linear(g + "attn_q.weight", hf + "self_attn.q_proj.weight", c.num_attention_heads);
    linear(g + "attn_k.weight", hf + "self_attn.k_proj.weight", c.num_key_value_heads);
    linear(g + "attn_v.weight", hf + "self_attn.v_proj.weight", 0);
    linear(g + "attn_output.weight", hf + "self_attn.o_proj.weight", 0);
    float_tensor(g + "ffn_norm.weight", params[hf + "post_attention_layernorm.weight"], true);
    linear(g + "ffn_gate.weight", hf + "mlp.gate_proj.weight", 0);
    linear(g + "ffn_up.weight", hf + "mlp.up_proj.weight", 0);
    linear(g + "ffn_down.weight", hf + "mlp.down_proj.weight", 0);
  }
  float_tensor("output_norm.weight", params["model.norm.weight"], true);
  if (!c.tie_word_embeddings) linear("output.weight", "lm_head.weight", 0);  // (tied: llama.cpp reuses token_embd)

  // general.file_type: the most common type of the linear weights.
  // (A quantized type when any linear is quantized, else the float type.)
  std::string common = options.float_type == "f16" ? "F16" : "F32";
  int best = 0;
  for (const auto& [t, n] : type_counts)
    if (t.front() == 'Q' && n > best) common = t, best = n;
  const std::map<std::string, uint32_t> file_types = {{"F32", 0}, {"F16", 1}, {"Q4_0", 2}, {"Q4_1", 3}, {"Q8_0", 7}};
  w.set_u32("general.file_type", file_types.at(common));
  if (common.front() == 'Q') w.set_u32("general.quantization_version", 2);
  summary.file_type = common;
  if (quantized && !info.linears.empty() && info.linears.front().activation_spec.enabled())
    summary.notes.push_back("activation quantization (" + info.linears.front().activation_spec.describe() +
                            ") is not part of a GGUF: llama.cpp quantizes activations its own way");
  w.write(out_path);
  summary.bytes = static_cast<int64_t>(fs::file_size(out_path));
  return summary;
}

}  // namespace outq
