// Fuzz target: quantization recipes (recipe_parse, what `outq quantize --recipe` reads). An
// accepted recipe must answer every question the quantizer asks of it for the modules and
// observation points of a model.
#include "fuzz_support.h"
#include "outq/quant/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(outq::fuzz::as_text(data, size));
  return outq::fuzz::expect_clean([&] {
    const outq::Recipe r = outq::recipe_parse(text, "fuzz.toml");
    const std::vector<std::string> modules = {"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj",
                                              "model.layers.1.mlp.gate_proj", "lm_head"};
    for (const std::string& m : modules) {
      r.weight_spec(m).validate(m, true);
      r.activation_spec(m).validate(m, false);
    }
    r.point_spec("model.layers.0.residual_mlp").validate("residual_mlp", false);
    for (const auto& o : r.overrides) (void)outq::glob_matches(o.pattern, modules);
    OUTQ_FUZZ_REQUIRE(!r.label().empty());
    (void)r.methods_label();
    (void)r.needs_calibration();
    (void)r.needs_learned_ranges();
  });
}
