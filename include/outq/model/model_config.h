// The [model] config section: LLaMA hyper-parameters under Hugging Face LlamaConfig names, their
// validation, and conversion to and from a Hugging Face style config.json (the LLaMA, Mistral and
// Qwen2 families, transformers v4 and v5 spellings; what outq cannot run is refused by key).
// No LibTorch here.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace outq {

/// RoPE frequency scaling (config.json rope_scaling / rope_parameters): "default" (none), "linear"
/// (positions divided by factor) or "llama3" (long wavelengths divided by factor, short ones kept,
/// a smooth blend between).
struct RopeScaling {
  std::string type = "default";
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  ///< llama3
  int original_max_position_embeddings = 0;               ///< llama3
  bool enabled() const { return type != "default"; }
};

struct ModelConfig {
  static constexpr const char* kSection = "model";

  int hidden_size = 256;
  int intermediate_size = 1024;
  int num_hidden_layers = 4;
  int num_attention_heads = 4;
  int num_key_value_heads = 4;
  int vocab_size = 4096;
  int max_position_embeddings = 256;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;
  std::string norm_placement = "pre";
  /// The method that rotated the weights ("rotate"), "" if none. Not a [model] key: set by that
  /// method, kept in config.json as "outq_rotated_by" so that a rotated model (its norms fused, its
  /// down projection expecting the online transform) is never rotated again.
  std::string rotated_by;
  // Set from config.json only (imported checkpoints), not [model] keys:
  std::string model_type = "llama";  ///< "llama", "mistral" or "qwen2" (q, k and v have biases)
  bool attention_bias = false;       ///< LLaMA's attention_bias: q, k, v and o have biases
  int sliding_window = 0;            ///< Mistral's window (0: none); max_position_embeddings <= it
  RopeScaling rope_scaling;
  /// The Hugging Face checkpoint `outq import` read ("" for models outq trained); kept in
  /// config.json as "outq_imported_from", so quantized directories of the model know it too.
  std::string imported_from;

  template <class V>
  void visit(V& v) {
    v("hidden_size", hidden_size, "width of the residual stream (C)");
    v("intermediate_size", intermediate_size, "SwiGLU MLP width");
    v("num_hidden_layers", num_hidden_layers, "decoder blocks");
    v("num_attention_heads", num_attention_heads, "query heads (H); hidden_size / H = head dim");
    v("num_key_value_heads", num_key_value_heads, "key/value heads (grouped-query attention when < heads)");
    v("vocab_size", vocab_size, "vocabulary size (must equal the tokenizer's)");
    v("max_position_embeddings", max_position_embeddings, "longest sequence (RoPE table length)");
    v("rms_norm_eps", rms_norm_eps, "RMSNorm epsilon");
    v("rope_theta", rope_theta, "RoPE base frequency");
    v("tie_word_embeddings", tie_word_embeddings, "share the LM head with the token embedding");
    v("initializer_range", initializer_range, "std of the normal weight initialisation");
    v("norm_placement", norm_placement,
      "\"pre\" (LLaMA: RMSNorm before attention and MLP) or \"post\" (after each residual sum, as BERT)");
  }
  /// Impossible shapes (heads not dividing hidden size, odd head dim, ...) -> outq::Error.
  void validate() const;

  int head_dim() const { return hidden_size / num_attention_heads; }
  bool qkv_bias() const { return attention_bias || model_type == "qwen2"; }
  bool o_bias() const { return attention_bias; }
  bool post_norm() const { return norm_placement == "post"; }
  /// Number of parameters (embeddings and head included).
  int64_t parameter_count() const;

  /// Hugging Face style config.json contents (LlamaForCausalLM).
  nlohmann::json to_hf_json() const;
  /// Reads a config.json (outq's or a Hugging Face checkpoint's: LlamaForCausalLM,
  /// MistralForCausalLM, Qwen2ForCausalLM; transformers v4 and v5 spellings); `where` names the
  /// file in errors. Unknown fields are ignored; a setting outq cannot run (another architecture or
  /// activation, head_dim other than hidden_size / heads, MLP biases, a RoPE scaling type other than
  /// linear or llama3, Qwen2's sliding window) is an error naming the key. A Mistral sliding window
  /// shorter than max_position_embeddings lowers max_position_embeddings to it (outq then never
  /// attends past the window, so the model is exact); `notes`, when given, says so.
  static ModelConfig from_hf_json(const nlohmann::json& j, const std::string& where,
                                  std::vector<std::string>* notes = nullptr);
};

}  // namespace outq
