// Fuzz target: a quantized model directory's quant_config.json (quantized_load), the metadata that
// says how to unpack model.safetensors and which methods to replay. At start-up, tiny models are
// quantized with several shipped recipes (static and dynamic activations, 4- and 8-bit codes,
// SmoothQuant, PEG with permutation, rotation, QFeM + QFeP); each input is then tried as the
// quant_config.json of every one of them. A config that loads must give a model that runs: the
// logits of a few tokens have the vocabulary's width. OUTQ_FUZZ_SEED_DIR=DIR writes the genuine
// configs there (the seed corpus).
#include <filesystem>
#include <fstream>
#include <vector>

#include "fuzz_support.h"
#include "outq/ptq/quantize_model.h"
#include "outq/ptq/quantized_io.h"
#include "tiny_model.h"

namespace fs = std::filesystem;

namespace {

const char* const kRecipes[] = {"w4a4-tensor-rtn", "w8a8-token-rtn-sq", "w8a8-peg6perm-rtn", "w4a4-tensor-rtn-rot",
                                "w8a8-tensor-rtn-qfem-qfep"};

std::vector<std::string>& model_dirs() {
  static std::vector<std::string> dirs;
  return dirs;
}

void prepare_models() {
  const std::string root = outq::fuzz::scratch_dir();
  const std::string calib_path = root + "/calib.bin";
  outq::test::write_random_shard(calib_path, 4096, outq::test::TinyShape{}.vocab, 5);
  const outq::TokenShard calib(calib_path);
  for (const char* name : kRecipes) {
    outq::Recipe recipe = outq::recipe_load(std::string(OUTQ_SOURCE_DIR) + "/recipes/" + name + ".toml");
    recipe.calibration.windows = 8;
    recipe.calibration.seq_len = 16;
    recipe.calibration.batch_size = 4;
    outq::Llama model = outq::test::tiny_model(11);
    const outq::QuantizedModel q = outq::quantize_model(model, recipe, &calib, /*bos_id=*/1);
    const std::string dir = root + "/" + name;
    outq::quantized_save(model, q, dir, "");
    model_dirs().push_back(dir);
    if (const char* seeds = std::getenv("OUTQ_FUZZ_SEED_DIR")) {
      fs::create_directories(seeds);
      fs::copy_file(dir + "/quant_config.json", fs::path(seeds) / (std::string(name) + ".json"),
                    fs::copy_options::overwrite_existing);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  try {
    prepare_models();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: preparing the quantized models failed: %s\n", e.what());
    std::abort();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (const std::string& dir : model_dirs()) {
    {
      std::ofstream out(dir + "/quant_config.json", std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    }
    outq::fuzz::expect_clean([&] {
      outq::QuantizedModel info;
      outq::Llama model = outq::quantized_load(dir, &info);
      torch::NoGradGuard no_grad;
      const torch::Tensor logits = model->forward(torch::tensor({{1, 2, 3, 4}}, torch::kLong));
      OUTQ_FUZZ_REQUIRE(logits.dim() == 3 && logits.size(1) == 4);
      OUTQ_FUZZ_REQUIRE(logits.size(2) == outq::test::TinyShape{}.vocab);
    });
  }
  return 0;
}
