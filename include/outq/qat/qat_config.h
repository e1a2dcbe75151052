// The [qat] config section: the training mode and the QAT / kurtosis settings (methods §2).
//   float         plain training (the baseline)
//   clamp         no quantization; every quantized-layer input is clamped to +-clamp_value, or to
//                 its own range from a clips.json (clamp_clips: e.g. the clips a QAT run learned)
//   kurtosis      float training plus the kurtosis penalty on quantized layers' outputs
//   qat           learned-clip fake quantization of the four inputs per block
//   qat+kurtosis  both (the paper's method)
//   lsq           LSQ+ fake quantization of the same inputs: a learned step and offset per input
//                 (asymmetric, per tensor, static; methods §4.8)
//   lsq+kurtosis  LSQ plus the kurtosis penalty
// and in any mode, weight QAT (weight_bits > 0): every decoder linear's weights fake-quantized with
// learned per-channel (or per-group) steps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace outq {

struct QatConfig {
  static constexpr const char* kSection = "qat";

  std::string mode = "float";
  int bits = 4;
  double clip_init = 4.0;
  double clamp_value = 4.0;
  std::string clamp_clips;
  double kurtosis_lambda = 1e-3;
  std::string kurtosis_reduction = "mean";
  double clip_lr_scale = 1.0;
  std::string clip_init_from = "first_batch";
  std::vector<std::string> inputs = {"qkv", "o", "gate_up", "down"};
  int64_t start_step = 0;
  std::string lsq_init = "minmax";
  bool lsq_grad_scale = false;
  int weight_bits = 0;
  int64_t weight_group_size = 0;
  std::string weight_init = "minmax";
  double weight_lr_scale = 0.01;

  template <class V>
  void visit(V& v) {
    v("mode", mode, "float | clamp | kurtosis | qat | qat+kurtosis | lsq | lsq+kurtosis");
    v("bits", bits, "activation bits of the learned-clip or LSQ quantizers (2..8)");
    v("clip_init", clip_init, "initial clip values alpha = +clip_init, beta = -clip_init");
    v("clamp_value", clamp_value, "clamp mode: inputs clamped to [-clamp_value, clamp_value]");
    v("clamp_clips", clamp_clips,
      "clamp mode: a clips.json (e.g. a QAT run's model/clips.json) whose per-input [beta, alpha] replace +-clamp_value");
    v("kurtosis_lambda", kurtosis_lambda, "weight of the kurtosis penalty");
    v("kurtosis_reduction", kurtosis_reduction, "sum or mean of the per-token kurtosis over tokens (summed over layers)");
    v("clip_lr_scale", clip_lr_scale, "clip learning rate as a multiple of train.lr (Adam with beta1 = 0, no decay)");
    v("clip_init_from", clip_init_from,
      "first_batch (the min and max of each input in the first training batch) | fixed (+-clip_init)");
    v("inputs", inputs, "the quantized linear inputs per block: any of qkv, o, gate_up, down");
    v("start_step", start_step,
      "training step at which fake quantization starts (float before it; first_batch clips come from that step's batch)");
    v("lsq_init", lsq_init,
      "lsq modes: the range the first quantized batch gives each step and offset: minmax | mse (the recipes' estimators)");
    v("lsq_grad_scale", lsq_grad_scale,
      "lsq modes and weight QAT: scale step and offset gradients by 1 / sqrt(elements x qmax) (LSQ's gradient scale)");
    v("weight_bits", weight_bits,
      "weight QAT: fake-quantize every decoder linear's weights to this many bits (symmetric, learned steps); 0 = off");
    v("weight_group_size", weight_group_size, "weight QAT: columns per learned step (0 = one step per output channel)");
    v("weight_init", weight_init, "weight QAT: initial steps from the weights at the first quantized step: minmax | mse");
    v("weight_lr_scale", weight_lr_scale,
      "weight QAT: learning rate of the weight steps as a multiple of train.lr (Adam with beta1 = 0, no decay)");
  }
  /// Impossible settings are errors; settings the mode ignores are warnings (unless !warn: for
  /// settings already checked once, as when the config was read).
  void validate(bool warn = true) const;

  /// Activations fake-quantized: learned clips (qat modes) or LSQ steps and offsets (lsq modes).
  bool quantizes() const { return learns_clips() || learns_steps(); }
  bool learns_clips() const { return mode == "qat" || mode == "qat+kurtosis"; }
  bool learns_steps() const { return mode == "lsq" || mode == "lsq+kurtosis"; }
  bool quantizes_weights() const { return weight_bits > 0; }
  /// Anything learned besides the model's weights (clips, steps, offsets, weight steps).
  bool learns_ranges() const { return quantizes() || quantizes_weights(); }
  bool clamps() const { return mode == "clamp"; }
  bool penalizes() const { return mode == "kurtosis" || mode == "qat+kurtosis" || mode == "lsq+kurtosis"; }
  bool active() const { return mode != "float" || quantizes_weights(); }
  /// Whether the block's activation slot `slot` (an index in block_schema().slots: qkv, o, gate_up,
  /// down) is quantized, clamped and penalised.
  bool uses_input(int slot) const;
};

}  // namespace outq
