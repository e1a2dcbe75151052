// GGUF files (the container llama.cpp reads), without LibTorch: a writer and a strict reader.
//   "GGUF" | u32 version 3 | u64 tensor count | u64 key-value count | key-values | tensor infos |
//   zero padding to the alignment | tensor data, each tensor padded to the alignment
// Strings are a u64 byte length and UTF-8 bytes; a key-value is its key, a u32 value type and the
// value (an array: element type, u64 count, elements). A tensor info is its name, u32 dimension
// count, u64 dimensions (ne[0], the contiguous one, first), u32 ggml type and u64 offset into the
// data. The reader refuses what llama.cpp's loader refuses (bad magic or version, empty or
// repeated keys and names, arrays of arrays, an alignment that is not a power-of-two u32, a row
// not divisible into blocks, offsets other than the packed ones, data past the end) and names the
// key or tensor.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "outq/core/file_io.h"

namespace outq {

enum class GgufType : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 };
const char* gguf_type_name(GgufType t);

/// The ggml tensor types outq writes and reads.
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, BF16 = 30 };
const char* ggml_type_name(GgmlType t);
int64_t ggml_block_size(GgmlType t);  ///< elements per block (1 for float types)
int64_t ggml_block_bytes(GgmlType t);

/// A metadata value. Scalars live in `number` (integers exactly up to 2^53 are enough for GGUF's
/// counts) or `text`; arrays in `items` with `element` their type.
struct GgufValue {
  GgufType type = GgufType::U32;
  GgufType element = GgufType::U8;  ///< arrays
  double number = 0;                ///< integers, floats, bool (0 / 1)
  std::string text;                 ///< STRING
  std::vector<GgufValue> items;     ///< ARRAY
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  ///< ne[0] contiguous
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  ///< into the data section
  uint64_t bytes = 0;
  const uint8_t* data = nullptr;  ///< reader only
  int64_t elements() const;
};

class GgufWriter {
 public:
  void set_u32(const std::string& key, uint32_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_string(const std::string& key, const std::string& v);
  void set_strings(const std::string& key, const std::vector<std::string>& v);
  void set_f32s(const std::string& key, const std::vector<float>& v);
  void set_i32s(const std::string& key, const std::vector<int32_t>& v);
  /// A tensor (dimensions ne[0] first) and its bytes (kept until write()).
  void add_tensor(const std::string& name, GgmlType type, std::vector<uint64_t> ne, std::string bytes);
  /// Writes the file atomically; alignment 32.
  void write(const std::string& path) const;

 private:
  void set(const std::string& key, GgufValue v);
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<std::pair<GgufTensorInfo, std::string>> tensors_;
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);
  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  /// Where the tensor data starts in the file (the tensor offsets count from here).
  uint64_t data_offset() const { return data_offset_; }
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  /// The value of `key`, or an error naming the file and key.
  const GgufValue& get(const std::string& key) const;
  bool contains(const std::string& key) const;
  const GgufTensorInfo& tensor(const std::string& name) const;

 private:
  std::string path_;
  MappedFile file_;
  uint32_t version_ = 0, alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace outq
