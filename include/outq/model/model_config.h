// The [model] config section: LLaMA hyper-parameters under Hugging Face LlamaConfig names, their
// validation, and conversion to and from a Hugging Face style config.json. No LibTorch here.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace outq {

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
  bool post_norm() const { return norm_placement == "post"; }
  /// Number of parameters (embeddings and head included).
  int64_t parameter_count() const;

  /// Hugging Face style config.json contents (LlamaForCausalLM).
  nlohmann::json to_hf_json() const;
  /// Reads a config.json; `where` names the file in errors. Unknown HF fields are ignored, the
  /// fields above are required.
  static ModelConfig from_hf_json(const nlohmann::json& j, const std::string& where);
};

}  // namespace outq
