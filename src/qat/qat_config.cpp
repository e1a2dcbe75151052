// QatConfig validation.
#include "outq/qat/qat_config.h"

#include <algorithm>
#include <iterator>

#include "outq/core/error.h"
#include "outq/core/log.h"
#include "outq/model/block_schema.h"

namespace outq {

void QatConfig::validate(bool warn) const {
  OUTQ_CHECK(mode == "float" || mode == "clamp" || mode == "kurtosis" || learns_clips() || learns_steps(),
             "qat.mode: expected one of float, clamp, kurtosis, qat, qat+kurtosis, lsq, lsq+kurtosis, found \"", mode, "\"");
  OUTQ_CHECK(bits >= 2 && bits <= 8, "qat.bits: expected 2..8, found ", bits);
  OUTQ_CHECK(clip_init > 0, "qat.clip_init: expected > 0 (alpha = +clip_init > beta = -clip_init), found ", clip_init);
  OUTQ_CHECK(clamp_value > 0, "qat.clamp_value: expected > 0, found ", clamp_value);
  OUTQ_CHECK(kurtosis_lambda >= 0, "qat.kurtosis_lambda: expected >= 0, found ", kurtosis_lambda);
  OUTQ_CHECK(kurtosis_reduction == "sum" || kurtosis_reduction == "mean",
             "qat.kurtosis_reduction: expected \"sum\" or \"mean\", found \"", kurtosis_reduction, "\"");
  OUTQ_CHECK(clip_lr_scale >= 0, "qat.clip_lr_scale: expected >= 0, found ", clip_lr_scale);
  OUTQ_CHECK(clip_init_from == "fixed" || clip_init_from == "first_batch",
             "qat.clip_init_from: expected \"fixed\" or \"first_batch\", found \"", clip_init_from, "\"");
  OUTQ_CHECK(start_step >= 0, "qat.start_step: expected >= 0, found ", start_step);
  OUTQ_CHECK(lsq_init == "minmax" || lsq_init == "mse", "qat.lsq_init: expected \"minmax\" or \"mse\", found \"", lsq_init, "\"");
  OUTQ_CHECK(weight_bits == 0 || (weight_bits >= 2 && weight_bits <= 8), "qat.weight_bits: expected 0 (off) or 2..8, found ",
             weight_bits);
  OUTQ_CHECK(weight_group_size >= 0, "qat.weight_group_size: expected 0 (per output channel) or a group width > 0, found ",
             weight_group_size);
  OUTQ_CHECK(weight_lr_scale >= 0, "qat.weight_lr_scale: expected >= 0, found ", weight_lr_scale);
  OUTQ_CHECK(weight_init == "minmax" || weight_init == "mse", "qat.weight_init: expected \"minmax\" or \"mse\", found \"",
             weight_init, "\"");
  const BlockSchema& schema = block_schema();
  OUTQ_CHECK(!inputs.empty(), "qat.inputs: expected at least one of ", schema.slot_names(), ", found an empty list");
  for (size_t i = 0; i < inputs.size(); ++i) {
    schema.slot(inputs[i], "qat.inputs");
    OUTQ_CHECK(std::find(inputs.begin(), inputs.begin() + static_cast<std::ptrdiff_t>(i), inputs[i]) ==
                   inputs.begin() + static_cast<std::ptrdiff_t>(i),
               "qat.inputs: \"", inputs[i], "\" is listed twice");
  }
  if (!warn) return;
  const QatConfig defaults;
  if (!quantizes() && (bits != defaults.bits || clip_init != defaults.clip_init || clip_init_from != defaults.clip_init_from)) {
    log_warn("qat.bits / qat.clip_init / qat.clip_init_from have no effect in mode \"{}\" (only qat and lsq modes quantize activations)", mode);
  }
  if (!quantizes() && clip_lr_scale != defaults.clip_lr_scale) {
    log_warn("qat.clip_lr_scale has no effect in mode \"{}\" (only qat and lsq modes learn activation ranges)", mode);
  }
  if (!learns_ranges() && start_step != defaults.start_step) {
    log_warn("qat.start_step has no effect in mode \"{}\" without qat.weight_bits (nothing is fake-quantized)", mode);
  }
  if (!learns_steps() && !quantizes_weights() && lsq_grad_scale != defaults.lsq_grad_scale) {
    log_warn("qat.lsq_grad_scale has no effect in mode \"{}\" without qat.weight_bits (only LSQ steps use it)", mode);
  }
  if (!learns_steps() && lsq_init != defaults.lsq_init) log_warn("qat.lsq_init has no effect in mode \"{}\" (only lsq modes)", mode);
  if (!quantizes_weights() && (weight_group_size != defaults.weight_group_size || weight_init != defaults.weight_init ||
                               weight_lr_scale != defaults.weight_lr_scale)) {
    log_warn("qat.weight_group_size / qat.weight_init / qat.weight_lr_scale have no effect with qat.weight_bits = 0");
  }
  if (!penalizes() && (kurtosis_lambda != defaults.kurtosis_lambda || kurtosis_reduction != defaults.kurtosis_reduction)) {
    log_warn("qat.kurtosis_lambda / qat.kurtosis_reduction have no effect in mode \"{}\"", mode);
  }
  if (!clamps() && (clamp_value != defaults.clamp_value || !clamp_clips.empty())) {
    log_warn("qat.clamp_value / qat.clamp_clips have no effect in mode \"{}\" (only clamp mode uses them)", mode);
  }
  if (clamps() && !clamp_clips.empty() && clamp_value != defaults.clamp_value) {
    log_warn("qat.clamp_value has no effect with qat.clamp_clips (each input is clamped to its range in {})", clamp_clips);
  }
}

bool QatConfig::uses_input(int slot) const {
  const std::string& name = block_schema().slots.at(static_cast<size_t>(slot)).name;
  return std::find(inputs.begin(), inputs.end(), name) != inputs.end();
}

}  // namespace outq
