// Rotation (QuaRot, SpinQuant; spec research/rotation.md): the RMSNorm weights are fused into the
// linears that read them, then seeded random rotations are folded into the weights: R1 on the
// residual stream, R2 per head on value -> output, and the offline half of R4, whose online half
// (a Hadamard transform of the down-projection input) the model applies at run time. The float
// function is preserved (ptq/rotation.h); outliers are spread over all channels of the rotated
// tensors. Settings:
//   r1 = "hadamard"     residual stream: "hadamard" (random signs times M), "orthogonal", "none"
//   r2 = "hadamard"     per head (one matrix per layer), same choices
//   r4 = true           online Hadamard on the down-projection input
//   seed = 0            R1 uses seed, layer l's R2 seed + 1 + l
// Listed first: every other method observes or edits the rotated model. On a post-norm model the
// norms stay (they are the residual stream) and only R2 and R4 apply (r1 must be "none").
#include <fmt/format.h>

#include "methods.h"
#include "outq/core/error.h"
#include "outq/core/log.h"
#include "outq/model/block_schema.h"
#include "outq/ptq/rotation.h"

namespace outq {
namespace {

class Rotate : public QuantMethod {
 public:
  explicit Rotate(const MethodEntry& entry) : QuantMethod(entry) {
    const MethodSettings settings(entry, {"r1", "r2", "r4", "seed"});
    r1_ = rotation_kind_parse(settings.string("r1", "hadamard"), settings.where("r1"));
    r2_ = rotation_kind_parse(settings.string("r2", "hadamard"), settings.where("r2"));
    r4_ = settings.boolean("r4", true);
    seed_ = static_cast<uint64_t>(settings.whole_number("seed", 0, 0, int64_t{1} << 40));
  }

  bool preserves_float_function() const override { return true; }

  void check(const Recipe& recipe, const std::vector<std::string>& modules,
             const std::vector<const QuantMethod*>& earlier) const override {
    for (const QuantMethod* m : earlier) {
      OUTQ_CHECK(m->name() != "rotate", recipe.source_path, ": rotate is listed twice; the first already fused the "
                 "norm weights and rotated the model, expected it once");
      OUTQ_CHECK(false, recipe.source_path, ": rotate is listed after ", m->name(), "; expected rotate first (", m->name(),
                 " observes or edits the model rotation changes, and fusing the norms would undo or invalidate it)");
    }
    for (const auto& m : modules) {
      int layer = 0;
      std::string relative;
      if (!split_block_module(m, &layer, &relative)) continue;
      const LinearRole role = block_schema().slots[static_cast<size_t>(block_schema().slot_of_linear(relative))].role;
      const bool changed = role == LinearRole::kQkv || role == LinearRole::kMlpIn ||
                           (role == LinearRole::kAttnOut && r2_ != RotationKind::kNone) ||
                           (role == LinearRole::kMlpDown && r4_);
      const QuantSpec a = recipe.activation_spec(m);
      OUTQ_CHECK(!(changed && a.enabled() && a.range == RangeMethod::kLearned), recipe.source_path, ": rotate changes ",
                 "the input of ", m, ", but its activations use range = \"learned\" (clips learned for the unrotated "
                 "input); expected a calibrated or dynamic range there");
    }
  }

  void transform(Llama& model) override {
    torch::NoGradGuard no_grad;
    OUTQ_CHECK(model->config().rotated_by.empty(), "rotate: this model was already rotated by ", model->config().rotated_by,
               " (config.json: outq_rotated_by; its norms fused, its down projection expecting the online transform); "
               "rotating it again would fold the transforms twice; expected the unrotated float model");
    // Post-norm: each norm's output is the residual stream itself, so its weight cannot move into
    // the linears, and a non-uniform weight does not commute with a rotation of that stream.
    const bool post = model->config().post_norm();
    OUTQ_CHECK(!post || r1_ == RotationKind::kNone, "rotate: r1 = \"", rotation_kind_name(r1_), "\" on a post-norm model "
               "(model.norm_placement = \"post\"): the norm after each residual sum scales the residual stream itself by "
               "its weight, which does not commute with a rotation of that stream; expected r1 = \"none\" there (R2 and R4 "
               "still apply)");
    fused_ = !post;
    if (fused_) {
      tied_ = model->config().tie_word_embeddings;
      model->untie_lm_head();
    }
    const ModelConfig& c = model->config();
    WeightEdit w(model);
    if (fused_) fuse_norms(w, c);
    if (r1_ != RotationKind::kNone)
      rotate_residual(w, c, random_rotation(r1_, c.hidden_size, seed_, "rotate: R1 on the residual stream (hidden_size)"));
    if (r2_ != RotationKind::kNone) {
      std::vector<torch::Tensor> r2;
      for (int l = 0; l < c.num_hidden_layers; ++l)
        r2.push_back(random_rotation(r2_, c.head_dim(), seed_ + 1 + static_cast<uint64_t>(l), "rotate: R2 per head (head_dim)"));
      rotate_heads(w, c, r2);
    }
    std::shared_ptr<const OnlineHadamard> r4;
    if (r4_) {
      r4 = std::make_shared<OnlineHadamard>(c.intermediate_size, "rotate: R4 on the down-projection input (intermediate_size)");
      fold_down_input_hadamard(w, c, r4->matrix());
      hadamard_k_ = r4->plan().k;
    }
    w.commit();
    model->mark_rotated("rotate");
    model->set_down_input_hadamard(r4);
    if (tied_) log_info("rotate: the LM head was tied to the embedding; the rotated model has its own (untied)");
    log_info("rotate: {}; R1 {}; R2 {}; R4 {}", fused_ ? "norm weights fused into the linears" : "post-norm: norms kept",
             r1_ == RotationKind::kNone ? "none" : fmt::format("{} on the residual stream ({})", rotation_kind_name(r1_), c.hidden_size),
             r2_ == RotationKind::kNone ? "none" : fmt::format("{} per head ({}, one per layer)", rotation_kind_name(r2_), c.head_dim()),
             r4 ? fmt::format("online Hadamard on the down-projection input ({} = {} x {})", r4->size(), r4->plan().k, r4->plan().m)
                : std::string("none"));
  }

  AppliedMethod record() const override {
    AppliedMethod m = QuantMethod::record();
    m.state = {{"r1", rotation_kind_name(r1_)}, {"r2", rotation_kind_name(r2_)}, {"r4", r4_}, {"seed", seed_},
               {"norms_fused", fused_}, {"untied_head", tied_}, {"r4_hadamard_k", hadamard_k_}};
    return m;
  }

  // R1, R2 and R4's offline half are in the saved weights; R4's online half is set again here,
  // after checking that the weights are the fused ones the record describes.
  void replay(Llama& model, const AppliedMethod& saved) override {
    const ModelConfig& c = model->config();
    OUTQ_CHECK(c.rotated_by == "rotate", "rotate record: the model's config.json says outq_rotated_by = \"", c.rotated_by,
               "\"; expected \"rotate\" for a rotated model (the directory was edited or mixed)");
    const nlohmann::json fused = saved.state.value("norms_fused", nlohmann::json());
    OUTQ_CHECK(fused.is_boolean() && fused.get<bool>() == !c.post_norm(), "rotate record: expected norms_fused = ",
               !c.post_norm(), " for a ", c.norm_placement, "-norm model, found ", fused.dump());
    if (fused.get<bool>()) {
      // (Only the final norm: a later method may put factors into the block norms, as SmoothQuant does.)
      OUTQ_CHECK(!c.tie_word_embeddings && model->model->norm->weight.eq(1.0).all().item<bool>(), "rotate record: the "
                 "norms were fused into the linears, but the LM head is tied or model.norm.weight is not all ones (the "
                 "directory was edited or mixed)");
    }
    model->set_down_input_hadamard(
        r4_ ? std::make_shared<OnlineHadamard>(c.intermediate_size, "rotate record: R4 (intermediate_size)") : nullptr);
  }

 private:
  RotationKind r1_ = RotationKind::kHadamard, r2_ = RotationKind::kHadamard;
  bool r4_ = true;
  uint64_t seed_ = 0;
  bool tied_ = false;
  bool fused_ = true;
  int64_t hadamard_k_ = 0;
};

}  // namespace

std::unique_ptr<QuantMethod> make_rotate(const MethodEntry& entry) { return std::make_unique<Rotate>(entry); }

}  // namespace outq
