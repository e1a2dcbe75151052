// A quantized directory's quant_config.json is checked against its tensors, not trusted: a W8 model
// relabelled 4-bit, 4-bit codes relabelled 2-bit, impossible bit widths and granularities, missing
// keys, a quantized flag on a float module and non-finite tensors are one-line errors naming the
// file and the field.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <limits>

#include "outq/core/error.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/quantized_io.h"
#include "test_util.h"
#include "tiny_model.h"

namespace outq {
namespace {

using json = nlohmann::json;

// Saves `weights` bits per-channel with dynamic per-token 8-bit activations into dir/name.
std::string save(const test::TempDir& dir, const std::string& name, int weights) {
  Llama model = test::tiny_model(3);
  const Recipe r = recipe_parse(fmt::format("name = \"{}\"\n[weights]\nbits = {}\ngranularity = \"channel\"\n"
                                            "[activations]\nbits = 8\ngranularity = \"token\"\ndynamic = true\n",
                                            name, weights),
                                "r.toml");
  const QuantizedModel q = quantize_model(model, r, nullptr, 1);
  quantized_save(model, q, dir / name, "");
  return dir / name;
}

// The error of loading `path` after `edit` changed its quant_config.json ("" if it loads).
std::string load_edited(const std::string& path, const std::function<void(json&)>& edit) {
  const std::string qc_path = path + "/quant_config.json", original = test::read_text(qc_path);
  json qc = json::parse(original);
  edit(qc);
  test::write_text(qc_path, qc.dump(2));
  const std::string e = test::error_of([&] { quantized_load(path, nullptr); });
  test::write_text(qc_path, original);
  return e;
}

const char* kModule = "model.layers.0.mlp.down_proj";

TEST(QuantizedDirectory, MetadataIsCheckedAgainstTheTensors) {
  test::TempDir dir;
  const std::string w8 = save(dir, "w8", 8), w4 = save(dir, "w4", 4);
  EXPECT_EQ(load_edited(w8, [](json&) {}), "");
  EXPECT_EQ(load_edited(w4, [](json&) {}), "");
  struct Case {
    std::string dir, what;
    std::function<void(json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {w8, "W8 relabelled 4-bit", [](json& qc) { qc["modules"][kModule]["weights"]["bits"] = 4; },
       fmt::format("{}.qweight: expected U8 of shape [24, 20] (4-bit codes for 40 input columns", kModule)},
      {w4, "4-bit codes relabelled 2-bit", [](json& qc) { qc["modules"][kModule]["weights"]["bits"] = 2; },
       fmt::format("{}.qweight: expected codes in [0, 3] (2-bit asymmetric", kModule)},
      {w8, "bits = 0", [](json& qc) { qc["modules"][kModule]["weights"]["bits"] = 0; }, "bits: expected 2..8, or 16"},
      {w8, "per-channel activations", [](json& qc) { qc["modules"][kModule]["activations"]["granularity"] = "channel"; },
       "granularity: expected tensor, token or peg for activations"},
      {w8, "float relabel of a quantized module", [](json& qc) { qc["modules"][kModule]["weights"]["bits"] = 16; },
       "bits = 16 (not quantized), but"},
      {w4, "per-channel weights relabelled per-tensor", [](json& qc) { qc["modules"][kModule]["weights"]["granularity"] = "tensor"; },
       fmt::format("{}.scales: expected F32 of shape [1, 1] (tensor weights", kModule)},
      {w4, "per-channel weights relabelled in groups of 8", [](json& qc) {
         qc["modules"][kModule]["weights"]["granularity"] = "group";
         qc["modules"][kModule]["weights"]["group_size"] = 8;
       }, fmt::format("{}.scales: expected F32 of shape [24, 5] (group weights", kModule)},
      {w8, "format of another type", [](json& qc) { qc["format"] = 7; }, "quant_config.json: format: expected a string, found 7"},
      {w8, "version beyond 32 bits", [](json& qc) { qc["version"] = 4294967298; }, "quant_config.json: version: expected 1 to 2"},
      {w8, "no modules", [](json& qc) { qc.erase("modules"); }, "quant_config.json: modules: expected an object"},
      {w8, "module without activations", [](json& qc) { qc["modules"][kModule].erase("activations"); },
       fmt::format("quant_config.json: modules.{}: expected \"weights\" and \"activations\" specs", kModule)},
  };
  for (const auto& c : cases) {
    const std::string e = load_edited(c.dir, c.edit);
    EXPECT_NE(e.find(c.message), std::string::npos) << c.what << ": " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << c.what;
  }
}

// Non-finite values in a float tensor of a quantized directory are refused on load too.
TEST(QuantizedDirectory, NonFiniteTensorsAreRefused) {
  test::TempDir dir;
  Llama model = test::tiny_model(3);
  {
    torch::NoGradGuard g;
    model->model->norm->weight[1] = std::numeric_limits<float>::quiet_NaN();
  }
  const Recipe r = recipe_parse("name = \"n\"\n[weights]\nbits = 8\n[activations]\nbits = 8\ngranularity = \"token\"\n"
                                "dynamic = true\n", "r.toml");
  quantized_save(model, quantize_model(model, r, nullptr, 1), dir / "n", "");
  const std::string e = test::error_of([&] { quantized_load(dir / "n", nullptr); });
  EXPECT_NE(e.find("model.safetensors: model.norm.weight: expected finite values, found 1 of 24 non-finite (1 NaN"),
            std::string::npos) << e;
}

}  // namespace
}  // namespace outq
