// safetensors files (the Hugging Face tensor container), without LibTorch:
//   u64 LE header length N | N bytes JSON header | byte buffer
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end)} relative
// to the buffer, plus an optional "__metadata__" object of string values. outq pads the header
// with spaces so the buffer starts 8-byte aligned, and writes tensors in the order added.
// Reading memory-maps the file and validates every entry (dtype, shape, offsets in bounds,
// sizes matching shape x dtype, the tensors tiling the buffer without overlap, hole or trailing
// bytes, each name once, the header starting with "{") with messages naming file, tensor and field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "outq/core/file_io.h"

namespace outq {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  ///< the safetensors spelling: "F32", "BF16", "I8", ...
/// Parses a safetensors dtype name; `where` names the file and tensor in the error.
DType dtype_parse(const std::string& name, const std::string& where);

struct TensorView {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  int64_t numel() const;
};

/// Collects tensors (by pointer: the data must stay alive until write()) and writes the file
/// atomically.
class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
           size_t bytes);
  void set_metadata(const std::string& key, const std::string& value);
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    TensorView view;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  /// The tensor `name`, or an error naming the file and the missing tensor.
  const TensorView& get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// Drops the tensor's pages from resident memory once it has been read (see MappedFile::release).
  void release(const TensorView& view) const { file_.release(view.data, view.bytes); }
  /// The metadata value `key` as an integer in lo..hi; nullopt when absent, an error naming the
  /// file and key when it is not such an integer.
  std::optional<int64_t> metadata_int(const std::string& key, int64_t lo, int64_t hi) const;

 private:
  std::string path_;
  MappedFile file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace outq
