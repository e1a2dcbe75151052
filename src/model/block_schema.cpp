// The decoder block's schema (see block_schema.h).
#include "outq/model/block_schema.h"

#include <fmt/format.h>

#include "outq/core/error.h"

namespace outq {

const BlockSchema& block_schema() {
  static const BlockSchema schema{
      {
          {"qkv", LinearRole::kQkv, "input_layernorm", "", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}},
          {"o", LinearRole::kAttnOut, "", "attention", {"self_attn.o_proj"}},
          {"gate_up", LinearRole::kMlpIn, "post_attention_layernorm", "", {"mlp.gate_proj", "mlp.up_proj"}},
          {"down", LinearRole::kMlpDown, "", "swiglu", {"mlp.down_proj"}},
      },
      {"residual_attn", "residual_mlp"},
  };
  return schema;
}

const ActivationSlot& BlockSchema::slot(const std::string& name, const std::string& where) const {
  for (const auto& s : slots)
    if (s.name == name) return s;
  throw Error(fmt::format("{}: unknown activation slot \"{}\" (expected one of {})", where, name, slot_names()));
}

int BlockSchema::slot_of_linear(const std::string& relative) const {
  for (size_t i = 0; i < slots.size(); ++i)
    for (const auto& l : slots[i].linears)
      if (l == relative) return static_cast<int>(i);
  return -1;
}

std::string BlockSchema::slot_names() const {
  std::string out;
  for (const auto& s : slots) out += (out.empty() ? "" : ", ") + s.name;
  return out;
}

std::vector<std::string> BlockSchema::linears() const {
  std::vector<std::string> out;
  for (const auto& s : slots) out.insert(out.end(), s.linears.begin(), s.linears.end());
  return out;
}

std::string block_prefix(int layer) { return fmt::format("model.layers.{}", layer); }

std::string block_module(int layer, const std::string& relative) { return block_prefix(layer) + "." + relative; }

bool split_block_module(const std::string& module, int* layer, std::string* relative) {
  static const std::string kPrefix = "model.layers.";
  if (module.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  const size_t dot = module.find('.', kPrefix.size());
  if (dot == std::string::npos || dot == kPrefix.size()) return false;
  int l = 0;
  for (size_t i = kPrefix.size(); i < dot; ++i) {
    if (module[i] < '0' || module[i] > '9') return false;
    l = l * 10 + (module[i] - '0');
  }
  if (layer) *layer = l;
  if (relative) *relative = module.substr(dot + 1);
  return true;
}

}  // namespace outq
