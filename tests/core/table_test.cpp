// Table rendering and the number formatters.
#include <gtest/gtest.h>

#include "outq/core/table.h"

namespace outq {
namespace {

TEST(Table, AlignsColumnsAndRightAlignsNumbers) {
  Table t({"split", "tokens", "note"});
  t.add_row({"train", "1,524,651", "most"});
  t.add_row({"val", "87", "few"});
  EXPECT_EQ(t.render(),
            "split  tokens     note\n"
            "-----  ---------  ----\n"
            "train  1,524,651  most\n"
            "val           87  few\n");
  EXPECT_EQ(t.render_markdown(),
            "| split | tokens | note |\n|---|---|---|\n| train | 1,524,651 | most |\n| val | 87 | few |\n");
}

TEST(Formatters, CountsDurationsBytes) {
  EXPECT_EQ(format_count(0), "0");
  EXPECT_EQ(format_count(999), "999");
  EXPECT_EQ(format_count(1000), "1,000");
  EXPECT_EQ(format_count(-1234567), "-1,234,567");
  EXPECT_EQ(format_duration(12.34), "12.3s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3720), "1h02m");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
}

}  // namespace
}  // namespace outq
