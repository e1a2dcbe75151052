// Atomic writes, reads, memory maps and staged directories: complete-or-absent outputs.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/json_file.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

size_t entries_in(const fs::path& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

// A pid that surely ran and ended: a child that has exited and been reaped ("" if fork failed).
std::string ended_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  if (child < 0) return "";
  ::waitpid(child, nullptr, 0);
  return std::to_string(child);
}

TEST(AtomicWriter, CommitReplacesTheFile) {
  test::TempDir dir;
  write_file_atomic(dir / "a/b/f.txt", "first");
  write_file_atomic(dir / "a/b/f.txt", "second");
  EXPECT_EQ(read_file(dir / "a/b/f.txt"), "second");
  EXPECT_EQ(entries_in(dir.path() / "a/b"), 1u);  // no temporary left behind
}

TEST(AtomicWriter, AbandonedWriteLeavesOldFileAndNoTemp) {
  test::TempDir dir;
  write_file_atomic(dir / "f.bin", "old");
  {
    AtomicWriter w(dir / "f.bin");
    w.write("partial new content");
    EXPECT_EQ(w.size(), 19u);
    // destroyed without commit, as when an exception unwinds
  }
  EXPECT_EQ(read_file(dir / "f.bin"), "old");
  EXPECT_EQ(entries_in(dir.path()), 1u);
}

TEST(AtomicWriter, UnwritableLocationIsAnError) {
  test::TempDir dir;
  write_file_atomic(dir / "file", "x");
  EXPECT_THROW(AtomicWriter(dir / "file/child"), Error);  // parent is a file
}

TEST(ReadFile, MissingFileNamesPathAndKind) {
  try {
    read_file("/nonexistent/x.model", "tokenizer model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "/nonexistent/x.model: tokenizer model not found");
  }
}

TEST(MappedFile, MapsContentsAndEmptyFiles) {
  test::TempDir dir;
  write_file_atomic(dir / "f", std::string("abc\0def", 7));
  MappedFile m(dir / "f");
  ASSERT_EQ(m.size(), 7u);
  EXPECT_EQ(m.data()[4], 'd');
  write_file_atomic(dir / "empty", "");
  MappedFile e(dir / "empty");
  EXPECT_EQ(e.size(), 0u);
  EXPECT_THROW(MappedFile(dir / "missing"), Error);
  EXPECT_THROW(MappedFile(dir.path().string()), Error);  // a directory
}

TEST(StagedDirectory, CommitMovesIntoPlaceReplacingOld) {
  test::TempDir dir;
  const fs::path target = dir.path() / "out";
  fs::create_directories(target);
  test::write_text((target / "stale").string(), "x");
  {
    StagedDirectory stage(target);
    write_file_atomic(stage.path() / "new", "y");
    EXPECT_FALSE(fs::exists(target / "new"));
    stage.commit();
  }
  EXPECT_TRUE(fs::exists(target / "new"));
  EXPECT_FALSE(fs::exists(target / "stale"));
  EXPECT_EQ(entries_in(dir.path()), 1u);
}

// Replacing an output swaps it in one step: a reader polling the path while it is replaced 300
// times never finds it missing (with two renames, the old moved aside and then the new moved in,
// it does within a few hundred replacements).
TEST(StagedDirectory, ReplacingNeverLeavesThePathMissing) {
  test::TempDir dir;
  const fs::path target = dir.path() / "out";
  fs::create_directories(target);
  std::atomic<bool> done{false};
  std::atomic<int> missing{0}, polls{0};
  std::thread reader([&] {
    while (!done) {
      if (!fs::exists(target)) ++missing;
      ++polls;
    }
  });
  for (int i = 0; i < 300; ++i) {
    StagedDirectory stage(target);
    write_file_atomic(stage.path() / "f", std::to_string(i));
    stage.commit();
  }
  done = true;
  reader.join();
  EXPECT_GT(polls.load(), 300);
  EXPECT_EQ(missing.load(), 0) << "of " << polls.load() << " polls";
  EXPECT_EQ(test::read_text((target / "f").string()), "299");
  EXPECT_EQ(entries_in(dir.path()), 1u);
}

TEST(StagedDirectory, UncommittedStageIsRemoved) {
  test::TempDir dir;
  {
    StagedDirectory stage(dir.path() / "out");
    write_file_atomic(stage.path() / "half", "y");
  }
  EXPECT_EQ(entries_in(dir.path()), 0u);
}

TEST(StagedDirectory, LeftoversOfKilledProcessesAreRemovedOthersKept) {
  test::TempDir dir;
  const std::string dead = ended_pid(), live = std::to_string(::getppid());
  ASSERT_FALSE(dead.empty());
  const fs::path target = dir.path() / "out";
  for (const std::string& name : {"out.staging." + dead, "out.old." + dead, "out.staging." + live, "other.staging." + dead})
    test::write_text((dir.path() / name / "f").string(), "x");
  {
    StagedDirectory stage(target);
    stage.commit();
  }
  EXPECT_FALSE(fs::exists(dir.path() / ("out.staging." + dead)));
  EXPECT_FALSE(fs::exists(dir.path() / ("out.old." + dead)));
  EXPECT_TRUE(fs::exists(dir.path() / ("out.staging." + live)));  // a running process's stage
  EXPECT_TRUE(fs::exists(dir.path() / ("other.staging." + dead)));  // another output's
  EXPECT_TRUE(fs::exists(target));
}

TEST(AtomicWriter, TemporaryFilesOfKilledProcessesAreRemovedOthersKept) {
  test::TempDir dir;
  const std::string dead = ended_pid(), live = std::to_string(::getppid());
  ASSERT_FALSE(dead.empty());
  for (const std::string& name : {"f.tmp." + dead, "f.tmp." + live, "g.tmp." + dead})
    test::write_text((dir.path() / name).string(), "x");
  write_file_atomic(dir.path() / "f", "new");
  EXPECT_FALSE(fs::exists(dir.path() / ("f.tmp." + dead)));
  EXPECT_TRUE(fs::exists(dir.path() / ("f.tmp." + live)));  // a running process's
  EXPECT_TRUE(fs::exists(dir.path() / ("g.tmp." + dead)));  // another file's
  EXPECT_EQ(test::read_text((dir.path() / "f").string()), "new");
}

// Optional JSON fields read with their types checked: the fallback when absent, the value when of
// the right type, and an outq::Error naming the file and key otherwise (nlohmann's value() throws
// its own type_error, which the fuzzers found in clips.json).
TEST(JsonValue, TypesAreCheckedAndAbsentKeysFallBack) {
  const auto j = nlohmann::json::parse(R"({"b": true, "i": 7, "big": 4294967300, "x": 2.5, "s": "t", "n": null})");
  EXPECT_EQ(json_value<bool>(j, "b", false, "f.json"), true);
  EXPECT_EQ(json_value<int>(j, "i", 0, "f.json"), 7);
  EXPECT_EQ(json_value<int64_t>(j, "big", 0, "f.json"), 4294967300);
  EXPECT_EQ(json_value<double>(j, "i", 0.0, "f.json"), 7.0);
  EXPECT_EQ(json_value<std::string>(j, "s", "", "f.json"), "t");
  EXPECT_EQ(json_value<std::string>(j, "absent", "fallback", "f.json"), "fallback");
  EXPECT_EQ(test::error_of([&] { json_value<int>(j, "big", 0, "f.json"); }),
            "f.json: big: expected an integer in [-2147483648, 2147483647], found 4294967300");
  EXPECT_EQ(test::error_of([&] { json_value<std::string>(j, "i", "", "f.json"); }), "f.json: i: expected a string, found 7");
  EXPECT_EQ(test::error_of([&] { json_value<bool>(j, "s", false, "f.json"); }),
            "f.json: s: expected true or false, found \"t\"");
  EXPECT_EQ(test::error_of([&] { json_value<double>(j, "n", 0.0, "f.json"); }), "f.json: n: expected a number, found null");
  EXPECT_EQ(test::error_of([&] { json_value<int64_t>(j, "x", 0, "f.json"); }), "f.json: x: expected an integer, found 2.5");
  EXPECT_THROW(json_value<int>(nlohmann::json::array(), "i", 0, "f.json"), Error);
}

}  // namespace
}  // namespace outq
