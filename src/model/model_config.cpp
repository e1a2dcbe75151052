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
  OUTQ_CHECK(model_type == "llama" || model_type == "mistral" || model_type == "qwen2",
             "model_type: expected llama, mistral or qwen2, found \"", model_type, "\"");
  OUTQ_CHECK(sliding_window >= 0 && (sliding_window == 0 || max_position_embeddings <= sliding_window),
             "sliding_window: expected 0 (none) or at least max_position_embeddings ", max_position_embeddings, ", found ",
             sliding_window);
  const RopeScaling& r = rope_scaling;
  OUTQ_CHECK(r.type == "default" || r.type == "linear" || r.type == "llama3",
             "rope_scaling.rope_type: expected default, linear or llama3, found \"", r.type, "\"");
  if (r.enabled()) OUTQ_CHECK(r.factor >= 1.0, "rope_scaling.factor: expected >= 1, found ", r.factor);
  if (r.type == "llama3") {
    OUTQ_CHECK(r.low_freq_factor > 0 && r.high_freq_factor > r.low_freq_factor,
               "rope_scaling: expected 0 < low_freq_factor < high_freq_factor, found ", r.low_freq_factor, " and ",
               r.high_freq_factor);
    OUTQ_CHECK(r.original_max_position_embeddings > 0,
               "rope_scaling.original_max_position_embeddings: expected a positive integer, found ",
               r.original_max_position_embeddings);
  }
}

int64_t ModelConfig::parameter_count() const {
  const int64_t C = hidden_size, I = intermediate_size, V = vocab_size;
  const int64_t kv = static_cast<int64_t>(head_dim()) * num_key_value_heads;
  const int64_t per_layer = C * C * 2 + 2 * C * kv + 3 * C * I + 2 * C + (qkv_bias() ? C + 2 * kv : 0) + (o_bias() ? C : 0);
  return V * C * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer + C;
}

nlohmann::json ModelConfig::to_hf_json() const {
  const char* architecture = model_type == "qwen2"     ? "Qwen2ForCausalLM"
                             : model_type == "mistral" ? "MistralForCausalLM"
                                                       : "LlamaForCausalLM";
  nlohmann::json j = {{"architectures", {architecture}},
          {"model_type", model_type},
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
          {"attention_bias", attention_bias},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"torch_dtype", "float32"}};
  if (model_type == "qwen2") j.erase("attention_bias");  // (Qwen2's q, k and v always have biases)
  if (sliding_window > 0) j["sliding_window"] = sliding_window;
  if (rope_scaling.enabled()) {
    nlohmann::json r = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      r["low_freq_factor"] = rope_scaling.low_freq_factor;
      r["high_freq_factor"] = rope_scaling.high_freq_factor;
      r["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = r;
  }
  if (post_norm()) j["outq_norm_placement"] = norm_placement;  // (Hugging Face's LLaMA is pre-norm only)
  if (!rotated_by.empty()) j["outq_rotated_by"] = rotated_by;
  if (!imported_from.empty()) j["outq_imported_from"] = imported_from;
  return j;
}

ModelConfig ModelConfig::from_hf_json(const nlohmann::json& j, const std::string& where, std::vector<std::string>* notes) {
  if (!j.is_object()) fail_mismatch(where, "", "a JSON object", j.type_name());
  ModelConfig c;
  auto present = [&](const nlohmann::json& o, const char* key) { return o.contains(key) && !o[key].is_null(); };
  auto get_int = [&](const char* key, int& out) {
    if (!present(j, key)) fail_mismatch(where, key, "an integer field", "none");
    out = json_int32(j[key], where, key);
  };
  auto get_number = [&](const nlohmann::json& o, const std::string& key, double& out, bool required) {
    if (!present(o, key.c_str())) {
      if (required) fail_mismatch(where, key, "a number field", "none");
      return;
    }
    if (!o[key].is_number()) fail_mismatch(where, key, "a number", o[key].dump());
    out = o[key].get<double>();
  };
  auto get_bool = [&](const char* key, bool& out) {
    if (!present(j, key)) return;
    if (!j[key].is_boolean()) fail_mismatch(where, key, "a boolean", j[key].dump());
    out = j[key].get<bool>();
  };
  auto get_string = [&](const char* key, std::string& out, const char* expected) {
    if (!present(j, key)) return;
    if (!j[key].is_string()) fail_mismatch(where, key, expected, j[key].dump());
    out = j[key].get<std::string>();
  };
  // The family: LLaMA and the decoders that share its tensors (Mistral; Qwen2 with q/k/v biases).
  get_string("model_type", c.model_type, "a string");
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2")
    fail_mismatch(where, "model_type", "llama, mistral or qwen2 (the LLaMA-family decoders outq runs)",
                  "\"" + c.model_type + "\"");
  if (present(j, "architectures")) {
    if (!j["architectures"].is_array()) fail_mismatch(where, "architectures", "a list of class names", j["architectures"].dump());
    for (const auto& a : j["architectures"])
      if (a != "LlamaForCausalLM" && a != "MistralForCausalLM" && a != "Qwen2ForCausalLM")
        fail_mismatch(where, "architectures", "LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM", a.dump());
  }
  get_int("hidden_size", c.hidden_size);
  get_int("intermediate_size", c.intermediate_size);
  get_int("num_hidden_layers", c.num_hidden_layers);
  get_int("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = c.num_attention_heads;
  if (present(j, "num_key_value_heads")) get_int("num_key_value_heads", c.num_key_value_heads);
  get_int("vocab_size", c.vocab_size);
  get_int("max_position_embeddings", c.max_position_embeddings);
  if (present(j, "head_dim") && c.num_attention_heads > 0) {
    const int hd = json_int32(j["head_dim"], where, "head_dim");
    if (hd != c.hidden_size / c.num_attention_heads)
      fail_mismatch(where, "head_dim",
                    fmt::format("hidden_size / num_attention_heads = {} (outq's attention derives the head width)",
                                c.hidden_size / c.num_attention_heads),
                    std::to_string(hd));
  }
  c.rms_norm_eps = 1e-6;  // LlamaConfig's default
  get_number(j, "rms_norm_eps", c.rms_norm_eps, false);
  get_number(j, "initializer_range", c.initializer_range, false);
  get_bool("tie_word_embeddings", c.tie_word_embeddings);
  if (present(j, "hidden_act") && j["hidden_act"] != "silu")
    fail_mismatch(where, "hidden_act", "\"silu\" (SwiGLU)", j["hidden_act"].dump());
  get_bool("attention_bias", c.attention_bias);
  if (c.model_type == "qwen2") c.attention_bias = false;  // Qwen2: q, k and v biases, whatever this says
  bool mlp_bias = false;
  get_bool("mlp_bias", mlp_bias);
  if (mlp_bias) fail_mismatch(where, "mlp_bias", "false (outq's MLP has no biases)", "true");
  // RoPE: transformers v4 has rope_theta and rope_scaling at the top level, v5 both in rope_parameters.
  const char* scaling_key = present(j, "rope_scaling") ? "rope_scaling" : "rope_parameters";
  if (present(j, "rope_parameters") && !j["rope_parameters"].is_object())
    fail_mismatch(where, "rope_parameters", "an object", j["rope_parameters"].dump());
  get_number(j, "rope_theta", c.rope_theta, false);
  if (!present(j, "rope_theta") && present(j, "rope_parameters"))
    get_number(j["rope_parameters"], "rope_theta", c.rope_theta, false);
  if (present(j, scaling_key)) {
    const nlohmann::json& r = j[scaling_key];
    if (!r.is_object()) fail_mismatch(where, scaling_key, "an object", r.dump());
    const char* type_key = r.contains("rope_type") ? "rope_type" : "type";
    if (r.contains(type_key)) {
      if (!r[type_key].is_string()) fail_mismatch(where, fmt::format("{}.{}", scaling_key, type_key), "a string", r[type_key].dump());
      c.rope_scaling.type = r[type_key].get<std::string>();
    }
    const std::string prefix = std::string(scaling_key) + ".";
    auto number = [&](const char* key, double& out) { get_number(r, key, out, true); };
    if (c.rope_scaling.type == "linear" || c.rope_scaling.type == "llama3") {
      get_number(r, "factor", c.rope_scaling.factor, true);
    } else if (c.rope_scaling.type != "default") {
      fail_mismatch(where, prefix + type_key, "default, linear or llama3 (the RoPE scalings outq implements)",
                    "\"" + c.rope_scaling.type + "\"");
    }
    if (c.rope_scaling.type == "llama3") {
      number("low_freq_factor", c.rope_scaling.low_freq_factor);
      number("high_freq_factor", c.rope_scaling.high_freq_factor);
      if (!present(r, "original_max_position_embeddings"))
        fail_mismatch(where, prefix + "original_max_position_embeddings", "an integer field", "none");
      c.rope_scaling.original_max_position_embeddings =
          json_int32(r["original_max_position_embeddings"], where, prefix + "original_max_position_embeddings");
    }
  }
  // Sliding windows: Qwen2's only when use_sliding_window (refused); Mistral's on every layer, which
  // outq keeps exact by never running a longer context.
  if (c.model_type == "qwen2") {
    bool use = false;
    get_bool("use_sliding_window", use);
    if (use) fail_mismatch(where, "use_sliding_window", "false (outq attends to the whole context)", "true");
  } else if (c.model_type == "mistral" && present(j, "sliding_window")) {
    c.sliding_window = json_int32(j["sliding_window"], where, "sliding_window");
    if (c.sliding_window > 0 && c.sliding_window < c.max_position_embeddings) {
      if (notes)
        notes->push_back(fmt::format("{}: max_position_embeddings {} lowered to sliding_window {}: outq attends to "
                                     "the whole context, which equals the window for sequences up to its length",
                                     where, c.max_position_embeddings, c.sliding_window));
      c.max_position_embeddings = c.sliding_window;
    }
  }
  get_string("outq_norm_placement", c.norm_placement, "\"pre\" or \"post\"");
  get_string("outq_rotated_by", c.rotated_by, "a string (the method that rotated the weights)");
  get_string("outq_imported_from", c.imported_from, "a string (the checkpoint directory it was imported from)");
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  }
  return c;
}

}  // namespace outq
