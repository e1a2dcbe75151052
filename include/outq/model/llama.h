// LLaMA-style decoder in LibTorch: token embedding, pre-norm (or post-norm, model.norm_placement)
// RMSNorm blocks with rotary
// multi-head attention (optionally grouped-query) and a SwiGLU MLP (optionally with an online
// Hadamard transform on the down-projection input, set by rotation), final norm, LM head (tied or
// not), no biases except those of the imported families (q/k/v for Qwen2, q/k/v/o for LLaMA's
// attention_bias). Parameter names are Hugging Face's ("model.layers.0.self_attn.q_proj.weight"),
// so named_parameters() is the checkpoint's tensor list. Shapes: B batch, T new tokens, S cached
// + new tokens, C hidden, H query heads, K key/value heads, D head dim, V vocabulary.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "outq/model/model_config.h"
#include "outq/model/observe.h"
#include "outq/model/online_hadamard.h"

namespace outq {

/// Keys and values of every layer for incremental decoding. Positions of new tokens continue
/// after `length`, so a precomputed prefix (e.g. a quantization-free prefix) can be reused.
struct KVCache {
  std::vector<torch::Tensor> keys, values;  ///< per layer (B, K, S, D), RoPE already applied
  int64_t length = 0;
  /// A copy that can be extended without changing this one (tensors are immutable when cat'ed).
  KVCache clone() const { return *this; }
};

/// y = x W^T with observation points around it; W is (out, in).
/// Replaces a linear layer's float GEMM (the integer runtime plugs in here): gets the layer's
/// input (..., in) and returns its output (..., out).
class LinearKernel {
 public:
  virtual ~LinearKernel() = default;
  virtual torch::Tensor forward(const torch::Tensor& x) const = 0;
};

class ObservedLinearImpl : public torch::nn::Module {
 public:
  ObservedLinearImpl(int64_t in, int64_t out, bool bias = false);
  void set_points(const ObservationPoint* input, const ObservationPoint* output);
  torch::Tensor forward(torch::Tensor x, const ObserverList& observers);
  /// The observers' view of this layer's input / output (x itself when the point is unset).
  torch::Tensor observe_input(const torch::Tensor& x, const ObserverList& observers) const;
  torch::Tensor observe_output(const torch::Tensor& y, const ObserverList& observers) const;
  /// x W^T (+ bias), or the kernel's result (+ bias) when one is set.
  torch::Tensor product(const torch::Tensor& x) const;
  torch::Tensor weight;
  torch::Tensor bias;  ///< (out), undefined when the layer has none; never quantized
  std::shared_ptr<const LinearKernel> kernel;  ///< null: float GEMM with `weight`

 private:
  const ObservationPoint* input_ = nullptr;
  const ObservationPoint* output_ = nullptr;
};
TORCH_MODULE(ObservedLinear);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelConfig& c);
  /// x (B, T, C); cos/sin (T, D) for the new positions; cache entries updated in place.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        torch::Tensor* cache_k, torch::Tensor* cache_v, const ObserverList& observers);
  /// The points of the attention scores (scaled, before the causal mask) and probabilities.
  void set_points(const ObservationPoint* scores, const ObservationPoint* probs);
  ObservedLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;
  const ObservationPoint* scores_ = nullptr;
  const ObservationPoint* probs_ = nullptr;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const ModelConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const ObserverList& observers);
  ObservedLinear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  /// Applied to the down-projection input before it is observed (rotation's online R4); null: none.
  std::shared_ptr<const OnlineHadamard> down_input_hadamard;
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const ModelConfig& c);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& cos, const torch::Tensor& sin,
                        torch::Tensor* cache_k, torch::Tensor* cache_v, const ObserverList& observers);
  void set_residual_points(const ObservationPoint* after_attn, const ObservationPoint* after_mlp);
  /// A linear or norm by its name relative to the block ("mlp.up_proj", "input_layernorm"), as the
  /// block schema names them; error if there is none.
  ObservedLinearImpl& linear(const std::string& relative);
  RMSNormImpl& norm(const std::string& relative);
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};

 private:
  const ObservationPoint* after_attn_ = nullptr;
  const ObservationPoint* after_mlp_ = nullptr;
  bool post_norm_ = false;
};
TORCH_MODULE(DecoderLayer);

/// The "model." part: embeddings, blocks, final norm.
class LlamaBodyImpl : public torch::nn::Module {
 public:
  explicit LlamaBodyImpl(const ModelConfig& c);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaBody);

/// The whole causal LM (Hugging Face LlamaForCausalLM).
class LlamaImpl : public torch::nn::Module {
 public:
  explicit LlamaImpl(const ModelConfig& config);

  /// Which positions get logits: every one (training, evaluation), or only the last (a prompt's
  /// prefill, where only the next token is wanted: the LM head on T rows would be wasted work).
  enum class Logits { kAll, kLast };
  /// tokens (B, T) int64 -> logits (B, T, V), or (B, 1, V) for Logits::kLast. With a cache,
  /// positions start at cache->length and the cache is extended; without, positions start at 0.
  torch::Tensor forward(const torch::Tensor& tokens, KVCache* cache = nullptr, Logits logits = Logits::kAll);
  /// Mean next-token cross entropy of a (B, T+1) window batch (inputs = [:, :-1]).
  torch::Tensor loss(const torch::Tensor& windows);

  /// Re-draws all weights: normal(0, initializer_range) for matrices, ones for norms.
  void reset_parameters(uint64_t seed);

  const ModelConfig& config() const { return config_; }
  const std::vector<ObservationPoint>& points() const { return points_; }
  /// The point called `name`, or an error listing a few valid names.
  const ObservationPoint& point(const std::string& name) const;
  ObserverList& observers() { return observers_; }

  /// The LM head weight (V, C): the embedding when tied.
  torch::Tensor lm_head_weight() const;
  /// Gives a tied model its own LM head (a copy of the embedding); the config says untied after.
  void untie_lm_head();
  /// Records in the config that `method` rotated the weights.
  void mark_rotated(const std::string& method) { config_.rotated_by = method; }
  /// Sets (or clears, with null) the online Hadamard on every block's down-projection input.
  void set_down_input_hadamard(const std::shared_ptr<const OnlineHadamard>& transform);
  /// RoPE cos/sin rows for positions [start, start + T): each (T, D).
  std::pair<torch::Tensor, torch::Tensor> rope(int64_t start, int64_t T) const;
  /// Decoder block l.
  DecoderLayerImpl& layer(int l) { return *model->layers[l]->as<DecoderLayerImpl>(); }
  /// Names of the linear modules fed by observation points ("model.layers.0.self_attn.q_proj", ...).
  std::vector<std::string> linear_modules() const;
  /// The weight parameter of a linear module, by name.
  torch::Tensor linear_weight(const std::string& module);
  /// The linear layer itself (e.g. to set an integer kernel); error if there is none.
  ObservedLinear linear(const std::string& module);

  LlamaBody model{nullptr};
  ObservedLinear lm_head{nullptr};  ///< "lm_head.weight"; null when tied to the embedding

 private:
  void build_points();
  ModelConfig config_;
  std::vector<ObservationPoint> points_;
  ObserverList observers_;
  torch::Tensor rope_cos_, rope_sin_;  ///< (max_position_embeddings, D), registered buffers
};
TORCH_MODULE(Llama);

/// Rotary embedding tables (Hugging Face layout: the two halves of D rotate together), with the
/// frequencies scaled as `scaling` says.
std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t positions, int64_t head_dim, double theta,
                                                    const RopeScaling& scaling = {});

}  // namespace outq
