// The versioned binary header: round trip, alignment, and each way a file can be wrong.
#include <gtest/gtest.h>

#include "outq/core/binary_format.h"
#include "outq/core/error.h"

namespace outq {
namespace {

const std::string kMagic("OQTEST\0\0", 8);

std::string error_of(const std::string& bytes, uint32_t max_version = 2) {
  try {
    binary_header_decode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "f.bin",
                         kMagic, "test file", max_version);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(BinaryHeader, RoundTripAndAlignment) {
  const nlohmann::json meta = {{"count", 3}, {"name", "x"}};
  const std::string h = binary_header_encode(kMagic, 2, meta);
  EXPECT_EQ(h.size() % kBinaryAlignment, 0u);
  const BinaryHeader d = binary_header_decode(reinterpret_cast<const uint8_t*>(h.data()), h.size(),
                                              "f.bin", kMagic, "test file", 2);
  EXPECT_EQ(d.version, 2u);
  EXPECT_EQ(d.meta, meta);
  EXPECT_EQ(d.payload_offset, h.size());
  EXPECT_EQ(binary_meta_get<int64_t>(d, "f.bin", "count"), 3);
  EXPECT_THROW(binary_meta_get<std::string>(d, "f.bin", "count"), Error);
  EXPECT_THROW(binary_meta_get<std::string>(d, "f.bin", "missing"), Error);
}

TEST(BinaryHeader, RejectsForeignTruncatedAndNewerFiles) {
  const std::string good = binary_header_encode(kMagic, 1, {{"a", 1}});
  EXPECT_EQ(error_of("short"), "f.bin: header: expected an outq test file (magic \"OQTEST\\x00\\x00\"), found a file of 5 bytes");
  EXPECT_NE(error_of("GIF89a......................").find("f.bin: magic: expected an outq test file"), std::string::npos);
  EXPECT_NE(error_of(good.substr(0, 20)).find("header length"), std::string::npos);
  EXPECT_NE(error_of(good, 0).find("version: expected 1..0"), std::string::npos);
  std::string bad_json = good;
  bad_json[16] = '#';
  EXPECT_NE(error_of(bad_json).find("metadata: expected valid JSON"), std::string::npos);
  const std::string array_meta = binary_header_encode(kMagic, 1, nlohmann::json::array());
  EXPECT_NE(error_of(array_meta).find("expected a JSON object"), std::string::npos);
}

}  // namespace
}  // namespace outq
