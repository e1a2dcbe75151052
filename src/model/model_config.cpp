// ModelConfig validation and Hugging Face config.json conversion.
#include "outq/model/model_config.h"

#include <fmt/format.h>

#include "outq/core/error.h"
#include "outq/core/json_file.h"

namespace outq {

void ModelConfig::validate() const {
  auto positive = [](const char* key, int64_t v) {
    OUTQ_CHECK(v > 0, "model.", key, ": expected a positive integer, found ", v);
  };
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("vocab_size", vocab_size);
  positive("max_position_embeddings", max_position_embeddings);
  OUTQ_CHECK(hidden_size % num_attention_heads == 0, "model.num_attention_heads: expected a divisor of hidden_size ",
             hidden_size, ", found ", num_attention_heads);
  OUTQ_CHECK(head_dim() % 2 == 0, "model.num_attention_heads: expected an even head dimension for RoPE, found ",
             "hidden_size / heads = ", head_dim());
  OUTQ_CHECK(num_attention_heads % num_key_value_heads == 0,
             "model.num_key_value_heads: expected a divisor of num_attention_heads ", num_attention_heads,
             ", found ", num_key_value_heads);
  OUTQ_CHECK(rms_norm_eps > 0, "model.rms_norm_eps: expected > 0, found ", rms_norm_eps);
  OUTQ_CHECK(rope_theta > 1, "model.rope_theta: expected > 1, found ", rope_theta);
  OUTQ_CHECK(initializer_range > 0, "model.initializer_range: expected > 0, found ", initializer_range);
  OUTQ_CHECK(norm_placement == "pre" || norm_placement == "post", "model.norm_placement: expected \"pre\" or \"post\", "
             "found \"", norm_placement, "\"");
}

int64_t ModelConfig::parameter_count() const {
  const int64_t C = hidden_size, I = intermediate_size, V = vocab_size;
  const int64_t kv = static_cast<int64_t>(head_dim()) * num_key_value_heads;
  const int64_t per_layer = C * C * 2 + 2 * C * kv + 3 * C * I + 2 * C;
  return V * C * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer + C;
}

nlohmann::json ModelConfig::to_hf_json() const {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_act", "silu"},
          {"hidden_size", hidden_size},
          {"intermediate_size", intermediate_size},
          {"num_hidden_layers", num_hidden_layers},
          {"num_attention_heads", num_attention_heads},
          {"num_key_value_heads", num_key_value_heads},
          {"vocab_size", vocab_size},
          {"max_position_embeddings", max_position_embeddings},
          {"rms_norm_eps", rms_norm_eps},
          {"rope_theta", rope_theta},
          {"tie_word_embeddings", tie_word_embeddings},
          {"initializer_range", initializer_range},
          {"attention_bias", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"torch_dtype", "float32"}};
  if (post_norm()) j["outq_norm_placement"] = norm_placement;  // (Hugging Face's LLaMA is pre-norm only)
  if (!rotated_by.empty()) j["outq_rotated_by"] = rotated_by;
  return j;
}

ModelConfig ModelConfig::from_hf_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail_mismatch(where, "", "a JSON object", j.type_name());
  ModelConfig c;
  auto get_int = [&](const char* key, int& out) {
    if (!j.contains(key)) fail_mismatch(where, key, "an integer field", "none");
    out = json_int32(j[key], where, key);
  };
  auto get_double = [&](const char* key, double& out, bool required) {
    if (!j.contains(key)) {
      if (required) fail_mismatch(where, key, "a number field", "none");
      return;
    }
    if (!j[key].is_number()) fail_mismatch(where, key, "a number", j[key].dump());
    out = j[key].get<double>();
  };
  get_int("hidden_size", c.hidden_size);
  get_int("intermediate_size", c.intermediate_size);
  get_int("num_hidden_layers", c.num_hidden_layers);
  get_int("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = c.num_attention_heads;
  if (j.contains("num_key_value_heads")) get_int("num_key_value_heads", c.num_key_value_heads);
  get_int("vocab_size", c.vocab_size);
  get_int("max_position_embeddings", c.max_position_embeddings);
  get_double("rms_norm_eps", c.rms_norm_eps, true);
  get_double("rope_theta", c.rope_theta, false);
  get_double("initializer_range", c.initializer_range, false);
  if (j.contains("tie_word_embeddings")) {
    if (!j["tie_word_embeddings"].is_boolean()) fail_mismatch(where, "tie_word_embeddings", "a boolean", j["tie_word_embeddings"].dump());
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  auto get_string = [&](const char* key, std::string& out, const char* expected) {
    if (!j.contains(key)) return;
    if (!j[key].is_string()) fail_mismatch(where, key, expected, j[key].dump());
    out = j[key].get<std::string>();
  };
  get_string("outq_norm_placement", c.norm_placement, "\"pre\" or \"post\"");
  get_string("outq_rotated_by", c.rotated_by, "a string (the method that rotated the weights)");
  if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
    fail_mismatch(where, "hidden_act", "\"silu\" (SwiGLU)", j["hidden_act"].dump());
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  }
  return c;
}

}  // namespace outq
