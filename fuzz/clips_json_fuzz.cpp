// Fuzz target: a QAT model's clips.json (learned_ranges_load), read by quantize, eval and the
// integer runtime for learned activation ranges. Accepted ranges must be finite, alpha > beta,
// bits within 2..8, as the reader promises.
#include <cmath>

#include "fuzz_support.h"
#include "outq/ptq/activation_quant.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = outq::fuzz::write_input("clips.json", data, size);
  return outq::fuzz::expect_clean([&] {
    for (const auto& [module, r] : outq::learned_ranges_load(path)) {
      OUTQ_FUZZ_REQUIRE(std::isfinite(r.alpha) && std::isfinite(r.beta) && r.alpha > r.beta);
      OUTQ_FUZZ_REQUIRE(r.bits >= 2 && r.bits <= 8);
    }
  });
}
