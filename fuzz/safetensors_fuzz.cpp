// Fuzz target: the safetensors reader (outq::SafetensorsFile), which every model directory goes
// through. Accepted files must describe tensors that lie inside the mapping: every byte of every
// tensor is read (AddressSanitizer sees a read past the end), and sizes must agree with shapes.
#include "fuzz_support.h"
#include "outq/core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = outq::fuzz::write_input("model.safetensors", data, size);
  return outq::fuzz::expect_clean([&] {
    const outq::SafetensorsFile file(path);
    unsigned checksum = 0;
    for (const auto& [name, view] : file.tensors()) {
      OUTQ_FUZZ_REQUIRE(view.bytes == static_cast<size_t>(view.numel()) * outq::dtype_size(view.dtype));
      for (size_t i = 0; i < view.bytes; ++i) checksum += view.data[i];
      OUTQ_FUZZ_REQUIRE(&file.get(name) == &view);
    }
    for (const auto& [key, value] : file.metadata()) checksum += static_cast<unsigned>(key.size() + value.size());
    volatile unsigned sink = checksum;
    (void)sink;
  });
}
