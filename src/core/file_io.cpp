// Atomic file writing, whole-file reading, memory maps and staged output directories (POSIX).
#include "outq/core/file_io.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28)
#include <fmt/format.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "outq/core/error.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

std::string errno_text() { return std::strerror(errno); }

void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: some filesystems do not allow opening directories
  ::fsync(fd);
  ::close(fd);
}

void create_parent(const fs::path& path) {
  const fs::path parent = path.parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  fs::create_directories(parent, ec);
  OUTQ_CHECK(!ec, parent.string(), ": cannot create directory: ", ec.message());
}

// Leftovers of a process killed while it wrote `final_dir` (the siblings "<name><kind><pid>":
// staging directories, replaced copies, temporary files) whose pid no longer runs are removed; a
// live process's are kept.
void remove_stale_siblings(const fs::path& final_dir, std::initializer_list<const char*> kinds) {
  std::error_code ec;
  const fs::path parent = final_dir.parent_path().empty() ? fs::path(".") : final_dir.parent_path();
  const std::string name = final_dir.filename().string();
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string f = e.path().filename().string();
    for (const std::string kind : kinds) {
      const std::string head = name + kind;
      if (f.size() <= head.size() || f.compare(0, head.size(), head) != 0) continue;
      const std::string pid_text = f.substr(head.size());
      if (pid_text.find_first_not_of("0123456789") != std::string::npos || pid_text.size() > 9) continue;
      const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
      if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
      std::error_code rm;
      fs::remove_all(e.path(), rm);
    }
  }
}

}  // namespace

AtomicWriter::AtomicWriter(fs::path path) : path_(std::move(path)) {
  create_parent(path_);
  remove_stale_siblings(path_, {".tmp."});
  tmp_ = path_;
  tmp_ += fmt::format(".tmp.{}", ::getpid());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  OUTQ_CHECK(fd_ >= 0, path_.string(), ": cannot open for writing: ", errno_text());
}

AtomicWriter::~AtomicWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicWriter::write(const void* data, size_t bytes) {
  OUTQ_ASSERT(fd_ >= 0, "write after commit to ", path_.string());
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    OUTQ_CHECK(n > 0, path_.string(), ": write failed: ", errno_text());
    p += n;
    bytes -= static_cast<size_t>(n);
    size_ += static_cast<uint64_t>(n);
  }
}

void AtomicWriter::commit() {
  OUTQ_ASSERT(fd_ >= 0, "double commit of ", path_.string());
  OUTQ_CHECK(::fsync(fd_) == 0, path_.string(), ": fsync failed: ", errno_text());
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0 || ::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp_.c_str());
    throw Error(fmt::format("{}: cannot finish writing: {}", path_.string(), why));
  }
  fsync_directory(path_.parent_path());
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  AtomicWriter writer(path);
  writer.write(contents);
  writer.commit();
}

std::string read_file(const fs::path& path, std::string_view what) {
  std::error_code ec;
  OUTQ_CHECK(fs::is_regular_file(path, ec), path.string(), ": ", what, " not found");
  std::ifstream in(path, std::ios::binary);
  OUTQ_CHECK(in.good(), path.string(), ": cannot open ", what, ": ", errno_text());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  OUTQ_CHECK(!in.bad(), path.string(), ": read error in ", what);
  return buffer.str();
}

MappedFile::MappedFile(const fs::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  OUTQ_CHECK(fd >= 0, path.string(), ": cannot open: ", errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path.string() + ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string why = errno_text();
      ::close(fd);
      throw Error(fmt::format("{}: cannot memory-map: {}", path.string(), why));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

void MappedFile::release(const uint8_t* begin, size_t bytes) const {
  if (!data_ || bytes == 0 || begin < data_ || begin + bytes > data_ + size_) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page * page;
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(begin) + bytes) / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);  // (advice: a failure changes nothing)
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

StagedDirectory::StagedDirectory(fs::path final_dir) : final_(std::move(final_dir)) {
  if (final_.filename().empty()) final_ = final_.parent_path();  // trailing slash
  stage_ = final_;
  stage_ += fmt::format(".staging.{}", ::getpid());
  remove_stale_siblings(final_, {".staging.", ".old."});
  std::error_code ec;
  fs::remove_all(stage_, ec);
  fs::create_directories(stage_, ec);
  OUTQ_CHECK(!ec, stage_.string(), ": cannot create directory: ", ec.message());
}

StagedDirectory::~StagedDirectory() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(stage_, ec);
}

void StagedDirectory::commit() {
  OUTQ_ASSERT(!committed_, "double commit of ", final_.string());
  std::error_code ec;
  const bool had_old = fs::exists(final_, ec);
  // Replacing: swap the finished stage and the previous output in one step (Linux's
  // RENAME_EXCHANGE), so a reader, or a kill at any moment, sees one or the other, never
  // neither; the previous output, now at the stage's path, is removed afterwards (or, if this
  // process dies first, by the next stage's clean-up of dead processes' stages).
  if (had_old && ::renameat2(AT_FDCWD, stage_.c_str(), AT_FDCWD, final_.c_str(), RENAME_EXCHANGE) == 0) {
    committed_ = true;
    fsync_directory(final_.parent_path());
    fs::remove_all(stage_, ec);
    return;
  }
  // No exchange (a file system without it): move the previous output aside first.
  fs::path old = final_;
  old += fmt::format(".old.{}", ::getpid());
  if (had_old) {
    fs::rename(final_, old, ec);
    OUTQ_CHECK(!ec, final_.string(), ": cannot replace existing directory: ", ec.message());
  }
  fs::rename(stage_, final_, ec);
  OUTQ_CHECK(!ec, final_.string(), ": cannot move finished output into place: ", ec.message());
  committed_ = true;
  fsync_directory(final_.parent_path());
  if (had_old) fs::remove_all(old, ec);
}

}  // namespace outq
