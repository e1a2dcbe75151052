// GPTQ results kept for reuse (see gptq_cache.h).
#include "outq/ptq/gptq_cache.h"

#include <fmt/format.h>

#include "outq/core/hash.h"
#include "outq/quant/spec.h"

namespace outq {
namespace {

// Continues an FNV-1a hash over a tensor's name, dtype, shape and contents.
uint64_t hash_tensor(uint64_t h, const std::string& name, const torch::Tensor& t) {
  h = fnv1a64(fmt::format("{}:{}:{}", name, static_cast<int>(t.scalar_type()), fmt::join(t.sizes(), "x")), h);
  if (!t.defined() || t.numel() == 0) return h;
  const auto c = t.detach().to(torch::kCPU).contiguous();
  return fnv1a64(std::string_view(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size()), h);
}

uint64_t hash_spec(uint64_t h, const QuantSpec& s) {
  return fnv1a64(fmt::format("{} {} {} {} {} {} {} {} {} {} {}", s.bits, s.symmetric, static_cast<int>(s.granularity),
                             s.group_size, s.peg_groups, s.peg_permute, s.peg_shared, s.integer16,
                             static_cast<int>(s.range), s.percentile, s.dynamic),
                 h);
}

int64_t entry_bytes(const GptqCache::Entry& e) {
  int64_t n = 0;
  for (const auto& [module, q] : e.weights)
    for (const auto* t : {&q.dequantized, &q.codes, &q.qp.scale, &q.qp.zero})
      if (t->defined()) n += t->numel() * t->element_size();
  return n;
}

}  // namespace

uint64_t GptqCache::key(Llama& model, const Recipe& recipe, const std::vector<QuantizedLinear>& linears,
                        const CalibrationData& data) {
  uint64_t h = fnv1a64(model->config().to_hf_json().dump());
  for (const auto& m : model->named_modules()) h = fnv1a64(m.key() + ";", h);
  for (int l = 0; l < model->config().num_hidden_layers; ++l) {  // transforms that are not modules
    const auto& hadamard = model->layer(l).mlp->down_input_hadamard;
    h = fnv1a64(fmt::format("down hadamard {}", hadamard ? hadamard->size() : 0), h);
  }
  for (const auto& p : model->named_parameters()) h = hash_tensor(h, p.key(), p.value());
  for (const auto& b : model->named_buffers()) h = hash_tensor(h, b.key(), b.value());
  for (const auto& rec : linears) {
    h = fnv1a64(rec.module, h);
    h = hash_spec(h, rec.weight_spec);
  }
  const GptqOptions& g = recipe.gptq;
  h = fnv1a64(fmt::format("gptq {} {} {} {} batch {}", g.damp, g.block_size, g.act_order, g.true_sequential, data.batch_size), h);
  h = hash_tensor(h, "windows", data.windows);
  if (data.prefix) {
    h = fnv1a64(fmt::format("prefix {}", fmt::join(data.prefix->tokens, ",")), h);
    for (size_t l = 0; l < data.prefix->cache.keys.size(); ++l) {
      h = hash_tensor(h, "k", data.prefix->cache.keys[l]);
      h = hash_tensor(h, "v", data.prefix->cache.values[l]);
    }
  }
  return h;
}

const GptqCache::Entry* GptqCache::find(uint64_t key) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->key != key) continue;
    entries_.splice(entries_.begin(), entries_, it);
    ++hits_;
    return &entries_.front().entry;
  }
  return nullptr;
}

void GptqCache::put(uint64_t key, Entry entry) {
  const int64_t n = entry_bytes(entry);
  if (n > max_bytes_) return;
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->key == key) {
      bytes_ -= it->bytes;
      entries_.erase(it);
      break;
    }
  }
  while (!entries_.empty() && bytes_ + n > max_bytes_) {
    bytes_ -= entries_.back().bytes;
    entries_.pop_back();
  }
  entries_.push_front({key, std::move(entry), n});
  bytes_ += n;
}

}  // namespace outq
