// File helpers: atomic writes (temporary file + fsync + rename, so a reader never sees a half
// written file), whole-file reads and read-only memory maps, each failing with a message that
// names the path and the reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace outq {

/// Writes a file atomically. Data goes to "<path>.tmp.<pid>" and is renamed over `path` only by
/// commit(); if the writer is destroyed without commit() the temporary file is removed.
class AtomicWriter {
 public:
  explicit AtomicWriter(std::filesystem::path path);
  ~AtomicWriter();
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;

  void write(const void* data, size_t bytes);
  void write(std::string_view s) { write(s.data(), s.size()); }
  /// Bytes written so far.
  uint64_t size() const { return size_; }
  /// fsync, close, rename into place, fsync the directory.
  void commit();

 private:
  std::filesystem::path path_, tmp_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

/// Atomically replaces `path` with `contents`, creating parent directories.
void write_file_atomic(const std::filesystem::path& path, std::string_view contents);

/// Reads a whole file; `what` describes it in errors ("tokenizer model").
std::string read_file(const std::filesystem::path& path, std::string_view what = "file");

/// A read-only memory map of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&&) = delete;
  MappedFile(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  /// Tells the kernel the whole pages within [begin, begin + bytes) are not needed for now: they
  /// leave this process's resident memory and are read from the file again if touched.
  void release(const uint8_t* begin, size_t bytes) const;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

/// Builds a directory in a staging location next to `final_dir` and moves it into place on
/// commit(), replacing any previous one; an uncommitted stage is removed. So an output directory
/// is either complete or absent. Stages and replaced copies left next to `final_dir` by a process
/// that was killed (their pid no longer runs) are removed when the next stage starts.
class StagedDirectory {
 public:
  explicit StagedDirectory(std::filesystem::path final_dir);
  ~StagedDirectory();
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;

  const std::filesystem::path& path() const { return stage_; }
  void commit();

 private:
  std::filesystem::path final_, stage_;
  bool committed_ = false;
};

}  // namespace outq
