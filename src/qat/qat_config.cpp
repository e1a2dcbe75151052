// QatConfig validation.
#include "outq/qat/qat_config.h"

#include <algorithm>
#include <iterator>

#include "outq/core/error.h"
#include "outq/core/log.h"
#include "outq/model/block_schema.h"

namespace outq {

void QatConfig::validate(bool warn) const {
  OUTQ_CHECK(mode == "float" || mode == "clamp" || mode == "kurtosis" || mode == "qat" || mode == "qat+kurtosis",
             "qat.mode: expected one of float, clamp, kurtosis, qat, qat+kurtosis, found \"", mode, "\"");
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
  if (!quantizes() && (bits != defaults.bits || clip_init != defaults.clip_init || clip_lr_scale != defaults.clip_lr_scale ||
                       clip_init_from != defaults.clip_init_from || start_step != defaults.start_step)) {
    log_warn("qat.bits / qat.clip_init / qat.clip_init_from / qat.clip_lr_scale / qat.start_step have no effect in mode \"{}\" (only qat modes learn clips)", mode);
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
