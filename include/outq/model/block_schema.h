// The block schema: what one decoder block of the LLaMA-style model is made of, as data. For each
// activation slot (the tensor that one or more linears read) it names the norm that produces it
// (or none), the linears that consume it (they share that input) and their role; it also names the
// residual-stream points. The model builds its observation points from it; QAT, PTQ (GPTQ's
// sub-steps, SmoothQuant's norm->linears junctions), analysis and the study ask it instead of
// restating module lists. No LibTorch here.
#pragma once

#include <string>
#include <vector>

namespace outq {

/// The role of a linear layer in its block; q/k/v share their input, as do gate/up.
enum class LinearRole { kQkv, kAttnOut, kMlpIn, kMlpDown, kNone };

/// One activation slot of a block: a tensor read by `linears` (relative module names).
struct ActivationSlot {
  std::string name;                  ///< "qkv", "o", "gate_up", "down"
  LinearRole role = LinearRole::kNone;
  std::string norm;                  ///< relative name of the norm producing it ("input_layernorm"), "" if none
  std::string producer;              ///< what produces it when no norm does ("attention", "swiglu")
  std::vector<std::string> linears;  ///< "self_attn.q_proj", ... (all read the same tensor)
};

struct BlockSchema {
  std::vector<ActivationSlot> slots;   ///< in forward order
  std::vector<std::string> residuals;  ///< residual-stream points in forward order ("residual_attn", ...)

  /// The slot called `name`, or an error that lists the slot names (`where` prefixes it).
  const ActivationSlot& slot(const std::string& name, const std::string& where) const;
  /// Index of the slot a relative linear name ("mlp.up_proj") reads, or -1.
  int slot_of_linear(const std::string& relative) const;
  /// "qkv, o, gate_up, down".
  std::string slot_names() const;
  /// Every linear of a block in forward order.
  std::vector<std::string> linears() const;
};

/// The schema of this project's decoder block (pre-norm attention + SwiGLU MLP).
const BlockSchema& block_schema();

/// "model.layers.<layer>".
std::string block_prefix(int layer);
/// "model.layers.<layer>.<relative>".
std::string block_module(int layer, const std::string& relative);
/// Splits "model.layers.3.mlp.down_proj" into 3 and "mlp.down_proj"; false for other names.
bool split_block_module(const std::string& module, int* layer, std::string* relative);

}  // namespace outq
