// Rotation weight edits (see rotation.h). Notation: a linear's weight W is (out, in) and computes
// y = x W^T on row vectors.
#include "outq/ptq/rotation.h"

#include <fmt/format.h>

#include "outq/core/error.h"
#include "outq/model/block_schema.h"
#include "outq/model/online_hadamard.h"

namespace outq {
namespace {

std::string weight(int layer, const std::string& relative) { return block_module(layer, relative) + ".weight"; }
std::string bias(int layer, const std::string& relative) { return block_module(layer, relative) + ".bias"; }

}  // namespace

RotationKind rotation_kind_parse(const std::string& name, const std::string& where) {
  if (name == "none") return RotationKind::kNone;
  if (name == "hadamard") return RotationKind::kHadamard;
  if (name == "orthogonal") return RotationKind::kOrthogonal;
  throw Error(fmt::format("{}: expected \"hadamard\", \"orthogonal\" or \"none\", found \"{}\"", where, name));
}

const char* rotation_kind_name(RotationKind kind) {
  switch (kind) {
    case RotationKind::kNone: return "none";
    case RotationKind::kHadamard: return "hadamard";
    case RotationKind::kOrthogonal: return "orthogonal";
  }
  return "?";
}

torch::Tensor random_rotation(RotationKind kind, int64_t n, uint64_t seed, const std::string& what) {
  OUTQ_ASSERT(kind != RotationKind::kNone, "random_rotation of kind none");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  if (kind == RotationKind::kHadamard) {
    const torch::Tensor m = hadamard_matrix(kernels::hadamard_plan(n, what));
    const torch::Tensor signs = torch::randint(0, 2, {n, 1}, gen, torch::kFloat64) * 2 - 1;
    return signs * m;
  }
  const torch::Tensor g = torch::randn({n, n}, gen, torch::kFloat64);
  auto [q, r] = torch::linalg_qr(g);
  return q * torch::sign(r.diagonal()).unsqueeze(0);
}

WeightEdit::WeightEdit(Llama& model) : params_(model->named_parameters()) {}

torch::Tensor& WeightEdit::operator[](const std::string& name) {
  auto it = copies_.find(name);
  if (it != copies_.end()) return it->second;
  const torch::Tensor* p = params_.find(name);
  OUTQ_ASSERT(p != nullptr, "rotation: the model has no parameter ", name);
  return copies_[name] = p->detach().to(torch::kFloat64).clone();
}

void WeightEdit::commit() {
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : copies_) {
    torch::Tensor* p = params_.find(name);
    p->copy_(t.to(p->scalar_type()));
  }
  copies_.clear();
}

void fuse_norms(WeightEdit& w, const ModelConfig& c) {
  OUTQ_ASSERT(!c.tie_word_embeddings, "fuse_norms needs an untied LM head");
  auto fuse = [&](const std::string& norm, const std::vector<std::string>& readers) {
    torch::Tensor& g = w[norm];
    for (const auto& r : readers) w[r].mul_(g.unsqueeze(0));
    g.fill_(1.0);
  };
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    fuse(weight(l, "input_layernorm"),
         {weight(l, "self_attn.q_proj"), weight(l, "self_attn.k_proj"), weight(l, "self_attn.v_proj")});
    fuse(weight(l, "post_attention_layernorm"), {weight(l, "mlp.gate_proj"), weight(l, "mlp.up_proj")});
  }
  fuse("model.norm.weight", {"lm_head.weight"});
}

void rotate_residual(WeightEdit& w, const ModelConfig& c, const torch::Tensor& q) {
  OUTQ_ASSERT(q.size(0) == c.hidden_size, "rotate_residual: Q of size ", q.size(0), " for width ", c.hidden_size);
  auto reader = [&](const std::string& name) { w[name] = torch::matmul(w[name], q); };
  auto writer = [&](const std::string& name) { w[name] = torch::matmul(q.t(), w[name]); };
  // A writer's bias adds to the residual, so it turns with it (Q^T b); a reader's is after the turn.
  auto writer_bias = [&](const std::string& name) {
    if (w.has(name)) w[name] = torch::matmul(q.t(), w[name]);
  };
  reader("model.embed_tokens.weight");  // E Q: the embedding writes the first residual
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (const char* r : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"})
      reader(weight(l, r));
    writer(weight(l, "self_attn.o_proj"));
    writer_bias(bias(l, "self_attn.o_proj"));
    writer(weight(l, "mlp.down_proj"));
  }
  reader("lm_head.weight");
}

void rotate_heads(WeightEdit& w, const ModelConfig& c, const std::vector<torch::Tensor>& r2) {
  const int64_t D = c.head_dim(), K = c.num_key_value_heads, H = c.num_attention_heads;
  OUTQ_ASSERT(static_cast<int>(r2.size()) == c.num_hidden_layers, "rotate_heads: one R2 per layer");
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const torch::Tensor& r = r2[static_cast<size_t>(l)];
    torch::Tensor& v = w[weight(l, "self_attn.v_proj")];  // (K D, C): head rows R2^T W_h
    v = torch::matmul(r.t(), v.reshape({K, D, -1})).reshape({K * D, -1});
    if (w.has(bias(l, "self_attn.v_proj"))) {  // (K D): each head's R2^T b_h
      torch::Tensor& vb = w[bias(l, "self_attn.v_proj")];
      vb = torch::matmul(r.t(), vb.reshape({K, D, 1})).reshape({K * D});
    }
    torch::Tensor& o = w[weight(l, "self_attn.o_proj")];  // (C, H D): head columns W_h R2
    o = torch::matmul(o.reshape({-1, H, D}).transpose(0, 1), r).transpose(0, 1).reshape({-1, H * D});
  }
}

void fold_down_input_hadamard(WeightEdit& w, const ModelConfig& c, const torch::Tensor& m) {
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    torch::Tensor& d = w[weight(l, "mlp.down_proj")];
    d = torch::matmul(d, m.t());
  }
}

}  // namespace outq
