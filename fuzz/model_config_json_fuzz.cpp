// Fuzz target: a model directory's config.json (model_config_read). An accepted config must be
// valid and round-trip: written back as config.json and read again, it is the same config.
#include <filesystem>

#include "fuzz_support.h"
#include "outq/model/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = outq::fuzz::scratch_dir() + "/model";
  std::filesystem::create_directories(dir);
  outq::fuzz::write_input("model/config.json", data, size);
  return outq::fuzz::expect_clean([&] {
    const outq::ModelConfig c = outq::model_config_read(dir);
    c.validate();
    OUTQ_FUZZ_REQUIRE(c.parameter_count() > 0);
    const outq::ModelConfig back = outq::ModelConfig::from_hf_json(c.to_hf_json(), "round trip");
    OUTQ_FUZZ_REQUIRE(back.to_hf_json() == c.to_hf_json());
  });
}
