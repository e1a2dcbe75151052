// LLaMA-style decoder forward passes, RoPE, KV cache handling and observation points.
#include "outq/model/llama.h"

#include <fmt/format.h>

#include <cmath>

#include "outq/core/error.h"

namespace F = torch::nn::functional;

namespace outq {

LinearRole linear_role(const ObservationPoint& p) {
  return p.slot < 0 ? LinearRole::kNone : block_schema().slots[static_cast<size_t>(p.slot)].role;
}

bool is_slot_input(const ObservationPoint& p) {
  if (p.kind != PointKind::kLinearInput || p.slot < 0) return false;
  return p.module == block_module(p.layer, block_schema().slots[static_cast<size_t>(p.slot)].linears.front());
}

void ObserverList::detach(const Observer* observer) {
  observers_.erase(std::remove_if(observers_.begin(), observers_.end(),
                                  [&](const auto& o) { return o.get() == observer; }),
                   observers_.end());
}

std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t positions, int64_t head_dim, double theta,
                                                    const RopeScaling& scaling) {
  // inv_freq_i = theta^(-2i/D), i < D/2; angle(p, i) = p * inv_freq_i, repeated for both halves.
  auto inv_freq = torch::pow(theta, -torch::arange(0, head_dim, 2, torch::kFloat64) / static_cast<double>(head_dim));
  if (scaling.type == "linear") inv_freq = inv_freq / scaling.factor;  // = positions / factor
  if (scaling.type == "llama3") {
    // Wavelengths 2 pi / inv_freq above original / low_freq_factor are divided by factor, those
    // below original / high_freq_factor kept; between, s = (original / wavelength - low) / (high - low)
    // blends the two: (1 - s) inv_freq / factor + s inv_freq. Clamped to [0, 1], s is 0 (divided)
    // and 1 (kept) exactly outside the band, so one expression covers all three.
    const double original = scaling.original_max_position_embeddings;
    const auto wavelength = 2.0 * M_PI / inv_freq;
    const auto s = ((original / wavelength - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor))
                       .clamp(0.0, 1.0);
    inv_freq = (1.0 - s) * inv_freq / scaling.factor + s * inv_freq;
  }
  auto pos = torch::arange(positions, torch::kFloat64);
  auto angles = torch::outer(pos, inv_freq);           // (P, D/2)
  auto full = torch::cat({angles, angles}, -1);        // (P, D)
  return {full.cos().to(torch::kFloat32), full.sin().to(torch::kFloat32)};
}

namespace {

// (x1, x2) -> (-x2, x1) over the two halves of the last dimension.
torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}

}  // namespace

ObservedLinearImpl::ObservedLinearImpl(int64_t in, int64_t out, bool bias) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (bias) this->bias = register_parameter("bias", torch::zeros({out}));
}

void ObservedLinearImpl::set_points(const ObservationPoint* input, const ObservationPoint* output) {
  input_ = input;
  output_ = output;
}

torch::Tensor ObservedLinearImpl::product(const torch::Tensor& x) const {
  torch::Tensor y = kernel ? kernel->forward(x) : torch::matmul(x, weight.t());
  return bias.defined() ? y + bias : y;
}

torch::Tensor ObservedLinearImpl::forward(torch::Tensor x, const ObserverList& observers) {
  if (observers.empty()) return product(x);
  return observe_output(product(observe_input(x, observers)), observers);
}

torch::Tensor ObservedLinearImpl::observe_input(const torch::Tensor& x, const ObserverList& observers) const {
  return input_ ? observers(*input_, x) : x;
}

torch::Tensor ObservedLinearImpl::observe_output(const torch::Tensor& y, const ObserverList& observers) const {
  return output_ ? observers(*output_, y) : y;
}

namespace {

// Linear layers that share one input (q/k/v, gate/up). When every input observer hands back the
// same tensor (always without observers, and with QAT's shared quantizer) they run as one GEMM over
// the concatenated weights and the output is split; otherwise (or with integer kernels) one GEMM
// each. Output observers see
// each layer's own output either way.
std::vector<torch::Tensor> shared_input_linears(const torch::Tensor& x, const std::vector<ObservedLinearImpl*>& linears,
                                                const ObserverList& observers) {
  std::vector<torch::Tensor> inputs, weights, biases, outputs;
  std::vector<int64_t> widths;
  bool shared = true;
  for (auto* l : linears) {
    inputs.push_back(observers.empty() ? x : l->observe_input(x, observers));
    shared = shared && inputs.back().is_same(inputs.front()) && !l->kernel &&
             l->bias.defined() == linears.front()->bias.defined();
    weights.push_back(l->weight);
    if (l->bias.defined()) biases.push_back(l->bias);
    widths.push_back(l->weight.size(0));
  }
  if (shared) {
    torch::Tensor y = torch::matmul(inputs.front(), torch::cat(weights, 0).t());
    if (!biases.empty()) y = y + torch::cat(biases, 0);
    outputs = y.split_with_sizes(widths, -1);
  } else {
    for (size_t i = 0; i < linears.size(); ++i) outputs.push_back(linears[i]->product(inputs[i]));
  }
  if (!observers.empty())
    for (size_t i = 0; i < linears.size(); ++i) outputs[i] = linears[i]->observe_output(outputs[i], observers);
  return outputs;
}

}  // namespace

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps_) * weight;
}

AttentionImpl::AttentionImpl(const ModelConfig& c)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim()) {
  const int64_t C = c.hidden_size;
  q_proj = register_module("q_proj", ObservedLinear(C, heads_ * head_dim_, c.qkv_bias()));
  k_proj = register_module("k_proj", ObservedLinear(C, kv_heads_ * head_dim_, c.qkv_bias()));
  v_proj = register_module("v_proj", ObservedLinear(C, kv_heads_ * head_dim_, c.qkv_bias()));
  o_proj = register_module("o_proj", ObservedLinear(heads_ * head_dim_, C, c.o_bias()));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, torch::Tensor* cache_k,
                                     torch::Tensor* cache_v, const ObserverList& observers) {
  const int64_t B = x.size(0), T = x.size(1);
  const auto qkv = shared_input_linears(x, {q_proj.get(), k_proj.get(), v_proj.get()}, observers);
  torch::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  q = q.reshape({B, T, heads_, head_dim_}).transpose(1, 2);     // (B, H, T, D)
  k = k.reshape({B, T, kv_heads_, head_dim_}).transpose(1, 2);  // (B, K, T, D)
  v = v.reshape({B, T, kv_heads_, head_dim_}).transpose(1, 2);  // (B, K, T, D)
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  if (cache_k) {
    if (cache_k->defined()) {
      k = torch::cat({*cache_k, k}, 2);  // (B, K, S, D)
      v = torch::cat({*cache_v, v}, 2);
    }
    *cache_k = k;
    *cache_v = v;
  }
  if (kv_heads_ != heads_) {
    k = k.repeat_interleave(heads_ / kv_heads_, 1);  // (B, H, S, D)
    v = v.repeat_interleave(heads_ / kv_heads_, 1);
  }
  const int64_t S = k.size(2);
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(head_dim_)));  // (B, H, T, S)
  if (!observers.empty() && scores_) scores = observers(*scores_, scores);
  if (T > 1) {
    // Query t sits at absolute position S - T + t and sees keys 0 .. S - T + t.
    auto mask = torch::ones({T, S}, scores.options().dtype(torch::kBool)).triu(S - T + 1);
    scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  }
  auto probs = torch::softmax(scores, -1);
  if (!observers.empty() && probs_) probs = observers(*probs_, probs);
  auto out = torch::matmul(probs, v);  // (B, H, T, D)
  out = out.transpose(1, 2).reshape({B, T, heads_ * head_dim_});
  return o_proj->forward(out, observers);
}

void AttentionImpl::set_points(const ObservationPoint* scores, const ObservationPoint* probs) {
  scores_ = scores;
  probs_ = probs;
}

MLPImpl::MLPImpl(const ModelConfig& c) {
  gate_proj = register_module("gate_proj", ObservedLinear(c.hidden_size, c.intermediate_size));
  up_proj = register_module("up_proj", ObservedLinear(c.hidden_size, c.intermediate_size));
  down_proj = register_module("down_proj", ObservedLinear(c.intermediate_size, c.hidden_size));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x, const ObserverList& observers) {
  const auto gate_up = shared_input_linears(x, {gate_proj.get(), up_proj.get()}, observers);
  const torch::Tensor h = F::silu(gate_up[0]) * gate_up[1];
  return down_proj->forward(down_input_hadamard ? down_input_hadamard->forward(h) : h, observers);
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c) : post_norm_(c.post_norm()) {
  self_attn = register_module("self_attn", Attention(c));
  mlp = register_module("mlp", MLP(c));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

ObservedLinearImpl& DecoderLayerImpl::linear(const std::string& relative) {
  for (const auto& m : named_modules()) {
    if (m.key() != relative) continue;
    if (auto* l = dynamic_cast<ObservedLinearImpl*>(m.value().get())) return *l;
  }
  throw Error("decoder block: no linear module named '" + relative + "'");
}

RMSNormImpl& DecoderLayerImpl::norm(const std::string& relative) {
  for (const auto& m : named_modules()) {
    if (m.key() != relative) continue;
    if (auto* n = dynamic_cast<RMSNormImpl*>(m.value().get())) return *n;
  }
  throw Error("decoder block: no norm named '" + relative + "'");
}

void DecoderLayerImpl::set_residual_points(const ObservationPoint* after_attn, const ObservationPoint* after_mlp) {
  after_attn_ = after_attn;
  after_mlp_ = after_mlp;
}

torch::Tensor DecoderLayerImpl::forward(torch::Tensor x, const torch::Tensor& cos, const torch::Tensor& sin,
                                        torch::Tensor* cache_k, torch::Tensor* cache_v,
                                        const ObserverList& observers) {
  if (post_norm_) {  // norm after each residual sum: input_layernorm after attention, the other after the MLP
    x = x + self_attn->forward(x, cos, sin, cache_k, cache_v, observers);
    if (!observers.empty()) x = observers(*after_attn_, x);
    x = input_layernorm->forward(x);
    x = x + mlp->forward(x, observers);
    if (!observers.empty()) x = observers(*after_mlp_, x);
    return post_attention_layernorm->forward(x);
  }
  x = x + self_attn->forward(input_layernorm->forward(x), cos, sin, cache_k, cache_v, observers);
  if (!observers.empty()) x = observers(*after_attn_, x);
  x = x + mlp->forward(post_attention_layernorm->forward(x), observers);
  if (!observers.empty()) x = observers(*after_mlp_, x);
  return x;
}

LlamaBodyImpl::LlamaBodyImpl(const ModelConfig& c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < c.num_hidden_layers; ++i) layers->push_back(DecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

LlamaImpl::LlamaImpl(const ModelConfig& config) : config_(config) {
  config_.validate();
  model = register_module("model", LlamaBody(config_));
  if (!config_.tie_word_embeddings) {
    lm_head = register_module("lm_head", ObservedLinear(config_.hidden_size, config_.vocab_size));
  }
  auto [cos, sin] = rope_tables(config_.max_position_embeddings, config_.head_dim(), config_.rope_theta,
                                  config_.rope_scaling);
  rope_cos_ = register_buffer("rope_cos", cos);  // buffers follow the model across devices
  rope_sin_ = register_buffer("rope_sin", sin);
  build_points();
  reset_parameters(0);
}

void LlamaImpl::build_points() {
  const BlockSchema& schema = block_schema();
  points_.clear();
  const int L = config_.num_hidden_layers;
  const size_t per_block = 2 * schema.linears().size() + schema.residuals.size() + 2;
  points_.reserve(static_cast<size_t>(L) * per_block);  // never resized again: the modules keep pointers
  auto add = [&](const std::string& module, PointKind kind, int layer, int slot, const std::string& suffix) {
    ObservationPoint p;
    p.index = static_cast<int>(points_.size());
    p.module = module;
    p.kind = kind;
    p.layer = layer;
    p.slot = slot;
    p.name = module + "." + suffix;
    points_.push_back(std::move(p));
    return &points_.back();
  };
  for (int l = 0; l < L; ++l) {
    DecoderLayerImpl& block = layer(l);
    for (size_t s = 0; s < schema.slots.size(); ++s) {
      for (const auto& lin : schema.slots[s].linears) {
        const std::string module = block_module(l, lin);
        const auto* in = add(module, PointKind::kLinearInput, l, static_cast<int>(s), "input");
        const auto* out = add(module, PointKind::kLinearOutput, l, static_cast<int>(s), "output");
        block.linear(lin).set_points(in, out);
      }
    }
    OUTQ_ASSERT(schema.residuals.size() == 2, "the decoder block has two residual points");
    const auto* after_attn = add(block_prefix(l), PointKind::kResidual, l, -1, schema.residuals[0]);
    const auto* after_mlp = add(block_prefix(l), PointKind::kResidual, l, -1, schema.residuals[1]);
    block.set_residual_points(after_attn, after_mlp);
    const std::string attn = block_module(l, "self_attn");
    const auto* scores = add(attn, PointKind::kAttention, l, -1, "scores");
    const auto* probs = add(attn, PointKind::kAttention, l, -1, "probs");
    block.self_attn->set_points(scores, probs);
  }
}

const ObservationPoint& LlamaImpl::point(const std::string& name) const {
  for (const auto& p : points_)
    if (p.name == name) return p;
  OUTQ_CHECK(false, "observation point '", name, "' not found (expected e.g. ", points_.front().name, ", ",
             points_[1].name, ", ", points_.back().name, ")");
}

void LlamaImpl::reset_parameters(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& p : named_parameters()) {
    if (p.key().find("norm") != std::string::npos) {
      p.value().fill_(1.0);
    } else if (p.value().dim() == 1) {  // biases
      p.value().zero_();
    } else {
      p.value().normal_(0.0, config_.initializer_range, gen);
    }
  }
}

std::pair<torch::Tensor, torch::Tensor> LlamaImpl::rope(int64_t start, int64_t T) const {
  return {rope_cos_.slice(0, start, start + T), rope_sin_.slice(0, start, start + T)};
}

std::vector<std::string> LlamaImpl::linear_modules() const {
  std::vector<std::string> out;
  for (const auto& p : points_)
    if (p.kind == PointKind::kLinearInput) out.push_back(p.module);
  return out;
}

torch::Tensor LlamaImpl::linear_weight(const std::string& module) {
  const auto params = named_parameters();
  const auto* w = params.find(module + ".weight");
  OUTQ_CHECK(w != nullptr, "model: no linear module named '", module, "'");
  return *w;
}

ObservedLinear LlamaImpl::linear(const std::string& module) {
  for (const auto& m : named_modules()) {
    if (m.key() != module) continue;
    if (auto l = std::dynamic_pointer_cast<ObservedLinearImpl>(m.value())) return ObservedLinear(l);
  }
  throw Error("model: no linear module named '" + module + "'");
}

torch::Tensor LlamaImpl::lm_head_weight() const {
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

void LlamaImpl::untie_lm_head() {
  if (lm_head) return;
  torch::NoGradGuard no_grad;
  const auto& e = model->embed_tokens->weight;
  lm_head = register_module("lm_head", ObservedLinear(config_.hidden_size, config_.vocab_size));
  lm_head->to(e.device(), e.scalar_type());
  lm_head->weight.copy_(e);
  config_.tie_word_embeddings = false;
}

void LlamaImpl::set_down_input_hadamard(const std::shared_ptr<const OnlineHadamard>& transform) {
  OUTQ_CHECK(!transform || transform->size() == config_.intermediate_size, "model: a Hadamard transform of length ",
             transform ? transform->size() : 0, " on the down-projection input; expected intermediate_size = ",
             config_.intermediate_size);
  for (int l = 0; l < config_.num_hidden_layers; ++l) layer(l).mlp->down_input_hadamard = transform;
}

torch::Tensor LlamaImpl::forward(const torch::Tensor& tokens, KVCache* cache, Logits logits) {
  OUTQ_CHECK(tokens.dim() == 2, "model input: expected token ids of shape (B, T), found ", tokens.sizes());
  const int64_t T = tokens.size(1);
  const int64_t start = cache ? cache->length : 0;
  OUTQ_CHECK(start + T <= config_.max_position_embeddings, "model input: expected at most max_position_embeddings = ",
             config_.max_position_embeddings, " positions, found ", start + T);
  const int L = config_.num_hidden_layers;
  if (cache && cache->keys.empty()) {
    cache->keys.resize(L);
    cache->values.resize(L);
  }
  auto [cos, sin] = rope(start, T);  // (T, D) each
  auto x = model->embed_tokens->forward(tokens);    // (B, T, C)
  for (int l = 0; l < L; ++l) {
    x = model->layers[l]->as<DecoderLayerImpl>()->forward(x, cos, sin, cache ? &cache->keys[l] : nullptr,
                                                          cache ? &cache->values[l] : nullptr, observers_);
  }
  if (logits == Logits::kLast) x = x.slice(1, T - 1, T);  // norm and head per position: the last alone
  x = model->norm->forward(x);
  if (cache) cache->length += T;
  if (lm_head) return lm_head->forward(x, observers_);
  return torch::matmul(x, model->embed_tokens->weight.t());  // (B, T, V)
}

torch::Tensor LlamaImpl::loss(const torch::Tensor& windows) {
  const int64_t T = windows.size(1) - 1;
  auto logits = forward(windows.slice(1, 0, T));
  return F::cross_entropy(logits.reshape({-1, logits.size(-1)}), windows.slice(1, 1).reshape({-1}));
}

}  // namespace outq
