// Attaches QAT to a model through its observation points: learned-clip (qat modes) or LSQ (lsq
// modes: learned step and offset) fake quantization of the four quantized inputs per block (q/k/v
// input with one shared range, attention-output input, gate/up input shared, down-projection
// input), clamping in clamp mode, and the kurtosis penalty on the outputs of those linear layers.
// Embeddings, LM head, attention scores and the KV cache stay in float.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "outq/model/llama.h"
#include "outq/qat/qat_config.h"

namespace outq {

class QatObserver : public Observer {
 public:
  QatObserver(const Llama& model, const QatConfig& config);
  torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) override;

  /// The learned range values (alpha, beta or step, offset per block and input type), for the optimizer.
  std::vector<torch::Tensor> parameters() const;
  /// lambda x the penalty accumulated since the last call (a zero tensor if none), then reset.
  /// Only forward passes with gradients enabled (training) add to it.
  torch::Tensor take_penalty();
  /// Named range tensors ("layers.0.qkv.alpha" / "layers.0.qkv.step", ...) for checkpoints, and their restoration.
  std::map<std::string, torch::Tensor> named_clips() const;
  void load_clips(const std::map<std::string, torch::Tensor>& clips);
  /// {"model.layers.0.self_attn.q_proj": {"alpha": .., "beta": ..}, ...} for every quantized linear
  /// (in clamp mode the clamp ranges, so a clamp-trained model can be quantized with them). LSQ
  /// ranges are written as their grid's ends, alpha = (N - z) step and beta = -z step, plus
  /// "step" and "zero_point", which static quantization uses as they are (the trained grid exactly).
  nlohmann::json clips_json() const;
  /// The inverse: sets every used input's range from a clips.json (`origin` names it in errors),
  /// e.g. the clamp ranges of a clamp run from the clips a QAT run learned. Every module of a used
  /// input must be there with finite alpha > beta, and the modules sharing an input (q/k/v,
  /// gate/up) must share one range.
  void load_clips_json(const nlohmann::json& clips, const std::string& origin);
  /// Keeps every clip pair a valid range after an optimizer step: where alpha - beta fell below
  /// kMinClipWidth (a gradient step can even swap them on a narrow input), both move apart
  /// symmetrically about their midpoint to that width; an LSQ step below kMinStep is raised to
  /// it. Returns how many ranges were changed.
  int constrain_clips();
  static constexpr double kMinClipWidth = 1e-3;
  static constexpr double kMinStep = 1e-6;
  /// Tells the observer the training step about to run: quantization is off (inputs pass through
  /// in float) before qat.start_step. Up to and including that step the clips are unset, to be set
  /// from the first quantized batch (clip_init_from = first_batch), also after a resume.
  void set_step(int64_t step);
  /// Whether the fake quantizers are on (always outside training unless set_step said otherwise).
  bool quantizing() const { return config_.quantizes() && quantizing_; }
  /// Data-parallel ranks, each holding 1/ranks of the global batch: `gather` returns an input's
  /// rows from every rank (in rank order), so that ranges set from the first batch are those of
  /// the global batch, and the LSQ gradient scale counts the global batch's elements.
  void set_data_parallel(int ranks, std::function<torch::Tensor(const torch::Tensor&)> gather) {
    ranks_ = ranks;
    gather_ = std::move(gather);
  }
  /// Mean clip range over layers per quantized input type: {"qkv": [beta, alpha], ...}.
  nlohmann::json clip_summary() const;

 private:
  struct Clip {
    torch::Tensor alpha, beta;   ///< qat and clamp modes
    torch::Tensor step, offset;  ///< lsq modes
    bool initialized = true;  ///< false until the first training batch sets it (clip_init_from = first_batch)
  };
  void init_from_batch(Clip& c, const torch::Tensor& x);
  void set_lsq_range(Clip& c, const torch::Tensor& lo, const torch::Tensor& hi) const;
  /// [beta, alpha] of a range: the clip pair, or the ends of an LSQ grid.
  std::pair<double, double> range_of(const Clip& c) const;
  /// The learned tensors of a range by name: {"alpha", "beta"} or {"step", "offset"}.
  std::vector<std::pair<std::string, torch::Tensor>> range_tensors(const Clip& c) const;
  int slot(const ObservationPoint& point) const;  ///< the point's schema slot if QAT uses it, else -1
  QatConfig config_;
  std::vector<std::vector<Clip>> clips_;  ///< per layer, per schema slot
  torch::Tensor penalty_;
  c10::intrusive_ptr<c10::TensorImpl> last_input_;  ///< the input quantized last (kept alive so its
  torch::Tensor last_output_;                       ///< address cannot be reused by another tensor)
  bool quantizing_ = true;
  std::function<torch::Tensor(const torch::Tensor&)> gather_;
  int ranks_ = 1;
};

}  // namespace outq
