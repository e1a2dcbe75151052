// The whole outq configuration: one section per layer, loaded from TOML plus --set overrides.
// Adding a section here makes it loadable, overridable, printable and listed in --help.
#pragma once

#include <string>
#include <vector>

#include "outq/core/config.h"
#include "outq/data/data_config.h"
#include "outq/model/model_config.h"
#include "outq/qat/qat_config.h"
#include "outq/study/study_config.h"
#include "outq/train/train_config.h"

namespace outq::app {

struct OutqConfig {
  DataConfig data;
  ModelConfig model;
  TrainConfig train;
  QatConfig qat;
  StudyConfig study;

  template <class F>
  void visit_sections(F&& f) {
    f(data);
    f(model);
    f(train);
    f(qat);
    f(study);
  }
};

/// Defaults, then the TOML file (or, without one, `default_toml` if given), then each
/// "section.key=value" override, validated.
OutqConfig config_load(const std::string& file, const std::vector<std::string>& overrides,
                       const std::string& default_toml = "");

}  // namespace outq::app
