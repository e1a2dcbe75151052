// Fuzz target: token shards (outq::TokenShard), read by training, eval --data-dir and quantize
// --calib. An accepted shard must hold exactly num_tokens ids below vocab_size: every id is read
// through at() and copy() (AddressSanitizer sees a read past the mapping).
#include <vector>

#include "fuzz_support.h"
#include "outq/data/token_shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = outq::fuzz::write_input("train.bin", data, size);
  return outq::fuzz::expect_clean([&] {
    const outq::TokenShard shard(path);
    const uint64_t n = shard.size();
    std::vector<int32_t> ids(static_cast<size_t>(n));
    if (n > 0) shard.copy(0, n, ids.data());
    for (uint64_t i = 0; i < n; ++i) {
      OUTQ_FUZZ_REQUIRE(ids[i] == shard.at(i));
      OUTQ_FUZZ_REQUIRE(ids[i] >= 0 && ids[i] < shard.info().vocab_size);
    }
    shard.expect_tokenizer(shard.info().tokenizer_checksum, "(fuzz)");
  });
}
