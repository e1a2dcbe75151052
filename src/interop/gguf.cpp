// GGUF writer and strict reader (see gguf.h).
#include "outq/interop/gguf.h"

#include <fmt/format.h>

#include <cstring>
#include <set>

#include "outq/core/error.h"

namespace outq {
namespace {

constexpr uint32_t kVersion = 3;
constexpr uint32_t kAlignment = 32;
constexpr size_t kMaxName = 63;  // GGML_MAX_NAME - 1
constexpr int kMaxDims = 4;

uint64_t pad(uint64_t x, uint64_t n) { return (x + n - 1) / n * n; }

size_t scalar_bytes(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;
  }
}

// Little-endian appends.
template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}
void put_value(std::string& out, const GgufValue& v) {
  switch (v.type) {
    case GgufType::U32: put<uint32_t>(out, static_cast<uint32_t>(v.number)); break;
    case GgufType::I32: put<int32_t>(out, static_cast<int32_t>(v.number)); break;
    case GgufType::F32: put<float>(out, static_cast<float>(v.number)); break;
    case GgufType::BOOL: put<uint8_t>(out, v.number != 0 ? 1 : 0); break;
    case GgufType::STRING: put_string(out, v.text); break;
    case GgufType::ARRAY:
      put<uint32_t>(out, static_cast<uint32_t>(v.element));
      put<uint64_t>(out, v.items.size());
      for (const auto& item : v.items) put_value(out, item);
      break;
    default: OUTQ_ASSERT(false, "gguf writer: value type ", gguf_type_name(v.type), " is not written");
  }
}

// Bounds-checked reading of the mapped file; errors name the file and what was being read.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}
  template <class T>
  T get(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    const uint64_t len = get<uint64_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + at_), len);
    at_ += len;
    return s;
  }
  void need(uint64_t bytes, const std::string& what) const {
    if (bytes > n_ - at_)
      fail_mismatch(path_, what, fmt::format("{} more bytes", bytes), fmt::format("the file ending after {} bytes", n_));
  }
  size_t at() const { return at_; }

 private:
  const uint8_t* p_;
  size_t n_, at_ = 0;
  const std::string& path_;
};

GgufValue read_value(Cursor& c, GgufType type, const std::string& where, int depth) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufType::U8: v.number = c.get<uint8_t>(where); break;
    case GgufType::I8: v.number = c.get<int8_t>(where); break;
    case GgufType::U16: v.number = c.get<uint16_t>(where); break;
    case GgufType::I16: v.number = c.get<int16_t>(where); break;
    case GgufType::U32: v.number = c.get<uint32_t>(where); break;
    case GgufType::I32: v.number = c.get<int32_t>(where); break;
    case GgufType::F32: v.number = c.get<float>(where); break;
    case GgufType::U64: v.number = static_cast<double>(c.get<uint64_t>(where)); break;
    case GgufType::I64: v.number = static_cast<double>(c.get<int64_t>(where)); break;
    case GgufType::F64: v.number = c.get<double>(where); break;
    case GgufType::BOOL: {
      const uint8_t b = c.get<uint8_t>(where);
      if (b > 1) fail_mismatch(where, "", "a bool (0 or 1)", std::to_string(b));
      v.number = b;
      break;
    }
    case GgufType::STRING: v.text = c.string(where); break;
    case GgufType::ARRAY: {
      if (depth > 0) fail_mismatch(where, "", "an array of scalars or strings (llama.cpp reads no nested arrays)", "an array of arrays");
      const uint32_t element = c.get<uint32_t>(where);
      if (element > static_cast<uint32_t>(GgufType::F64))
        fail_mismatch(where, "element type", "a GGUF value type (0..12)", std::to_string(element));
      v.element = static_cast<GgufType>(element);
      if (v.element == GgufType::ARRAY) fail_mismatch(where, "", "an array of scalars or strings (llama.cpp reads no nested arrays)", "an array of arrays");
      const uint64_t count = c.get<uint64_t>(where);
      if (v.element != GgufType::STRING) c.need(count * scalar_bytes(v.element), where);
      v.items.reserve(static_cast<size_t>(std::min<uint64_t>(count, 1 << 20)));
      for (uint64_t i = 0; i < count; ++i) v.items.push_back(read_value(c, v.element, where, depth + 1));
      break;
    }
  }
  return v;
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                "BOOL",  "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "unknown";
}

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return "F32";
    case GgmlType::F16: return "F16";
    case GgmlType::Q4_0: return "Q4_0";
    case GgmlType::Q4_1: return "Q4_1";
    case GgmlType::Q8_0: return "Q8_0";
    case GgmlType::BF16: return "BF16";
  }
  return "unknown";
}

int64_t ggml_block_size(GgmlType t) { return t == GgmlType::Q4_0 || t == GgmlType::Q4_1 || t == GgmlType::Q8_0 ? 32 : 1; }

int64_t ggml_block_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return 4;
    case GgmlType::F16: case GgmlType::BF16: return 2;
    case GgmlType::Q4_0: return 18;
    case GgmlType::Q4_1: return 20;
    case GgmlType::Q8_0: return 34;
  }
  return 0;
}

int64_t GgufTensorInfo::elements() const {
  int64_t n = 1;
  for (uint64_t d : ne) n *= static_cast<int64_t>(d);
  return n;
}

void GgufWriter::set(const std::string& key, GgufValue v) {
  OUTQ_ASSERT(!key.empty(), "gguf writer: empty key");
  for (auto& [k, old] : kv_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  kv_.emplace_back(key, std::move(v));
}

void GgufWriter::set_u32(const std::string& key, uint32_t v) { set(key, {GgufType::U32, GgufType::U8, static_cast<double>(v), {}, {}}); }
void GgufWriter::set_f32(const std::string& key, float v) { set(key, {GgufType::F32, GgufType::U8, v, {}, {}}); }
void GgufWriter::set_bool(const std::string& key, bool v) { set(key, {GgufType::BOOL, GgufType::U8, v ? 1.0 : 0.0, {}, {}}); }
void GgufWriter::set_string(const std::string& key, const std::string& v) { set(key, {GgufType::STRING, GgufType::U8, 0, v, {}}); }

void GgufWriter::set_strings(const std::string& key, const std::vector<std::string>& v) {
  GgufValue a{GgufType::ARRAY, GgufType::STRING, 0, {}, {}};
  for (const auto& s : v) a.items.push_back({GgufType::STRING, GgufType::U8, 0, s, {}});
  set(key, std::move(a));
}

void GgufWriter::set_f32s(const std::string& key, const std::vector<float>& v) {
  GgufValue a{GgufType::ARRAY, GgufType::F32, 0, {}, {}};
  for (float x : v) a.items.push_back({GgufType::F32, GgufType::U8, x, {}, {}});
  set(key, std::move(a));
}

void GgufWriter::set_i32s(const std::string& key, const std::vector<int32_t>& v) {
  GgufValue a{GgufType::ARRAY, GgufType::I32, 0, {}, {}};
  for (int32_t x : v) a.items.push_back({GgufType::I32, GgufType::U8, static_cast<double>(x), {}, {}});
  set(key, std::move(a));
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, std::vector<uint64_t> ne, std::string bytes) {
  OUTQ_ASSERT(!name.empty() && name.size() <= kMaxName, "gguf writer: tensor name '", name, "' is empty or over 63 bytes");
  OUTQ_ASSERT(!ne.empty() && ne.size() <= kMaxDims, "gguf writer: ", name, ": 1 to 4 dimensions");
  for (const auto& [t, b] : tensors_) OUTQ_ASSERT(t.name != name, "gguf writer: tensor ", name, " added twice");
  GgufTensorInfo info;
  info.name = name;
  info.ne = std::move(ne);
  info.type = type;
  OUTQ_ASSERT(static_cast<int64_t>(info.ne[0]) % ggml_block_size(type) == 0, "gguf writer: ", name, ": rows of ", info.ne[0],
              " do not divide into ", ggml_type_name(type), " blocks");
  info.bytes = static_cast<uint64_t>(info.elements() / ggml_block_size(type) * ggml_block_bytes(type));
  OUTQ_ASSERT(info.bytes == bytes.size(), "gguf writer: ", name, ": ", bytes.size(), " bytes for ", info.bytes);
  tensors_.emplace_back(std::move(info), std::move(bytes));
}

void GgufWriter::write(const std::string& path) const {
  std::string head = "GGUF";
  put<uint32_t>(head, kVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kv_.size());
  for (const auto& [key, v] : kv_) {
    put_string(head, key);
    put<uint32_t>(head, static_cast<uint32_t>(v.type));
    put_value(head, v);
  }
  uint64_t offset = 0;
  for (const auto& [info, bytes] : tensors_) {
    put_string(head, info.name);
    put<uint32_t>(head, static_cast<uint32_t>(info.ne.size()));
    for (uint64_t d : info.ne) put<uint64_t>(head, d);
    put<uint32_t>(head, static_cast<uint32_t>(info.type));
    put<uint64_t>(head, offset);
    offset += pad(info.bytes, kAlignment);
  }
  head.resize(pad(head.size(), kAlignment), '\0');
  AtomicWriter out(path);
  out.write(head);
  const std::string zeros(kAlignment, '\0');
  for (const auto& [info, bytes] : tensors_) {
    out.write(bytes);
    out.write(zeros.data(), pad(bytes.size(), kAlignment) - bytes.size());
  }
  out.commit();
}

GgufFile::GgufFile(const std::string& path) : path_(path), file_(path) {
  Cursor c(file_.data(), file_.size(), path_);
  c.need(4, "magic");
  if (std::memcmp(file_.data(), "GGUF", 4) != 0) fail_mismatch(path_, "magic", "\"GGUF\"", "other bytes (not a GGUF file)");
  (void)c.get<uint32_t>("magic");
  version_ = c.get<uint32_t>("version");
  if (version_ != 2 && version_ != 3) fail_mismatch(path_, "version", "2 or 3", std::to_string(version_));
  const uint64_t n_tensors = c.get<uint64_t>("tensor count"), n_kv = c.get<uint64_t>("key-value count");
  c.need(n_kv * 12, "key-values");  // (each at least a key length and a type)
  std::set<std::string> keys;
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = c.string(fmt::format("key {}", i));
    if (key.empty()) fail_mismatch(path_, fmt::format("key {}", i), "a non-empty key", "an empty one");
    if (!keys.insert(key).second) fail_mismatch(path_, key, "each key once", "it twice");
    const uint32_t type = c.get<uint32_t>(key);
    if (type > static_cast<uint32_t>(GgufType::F64)) fail_mismatch(path_, key, "a GGUF value type (0..12)", std::to_string(type));
    kv_.emplace_back(key, read_value(c, static_cast<GgufType>(type), path_ + ": " + key, 0));
  }
  if (contains("general.alignment")) {
    const GgufValue& a = get("general.alignment");
    if (a.type != GgufType::U32 || a.number == 0 || (static_cast<uint32_t>(a.number) & (static_cast<uint32_t>(a.number) - 1)) != 0)
      fail_mismatch(path_, "general.alignment", "a UINT32 power of two", fmt::format("{} {}", gguf_type_name(a.type), a.number));
    alignment_ = static_cast<uint32_t>(a.number);
  }
  c.need(n_tensors * 24, "tensor infos");
  std::set<std::string> names;
  uint64_t expected_offset = 0;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.string(fmt::format("tensor {}", i));
    const std::string where = path_ + ": tensor '" + t.name + "'";
    if (t.name.empty() || t.name.size() > kMaxName) fail_mismatch(where, "name", "1 to 63 bytes", std::to_string(t.name.size()));
    if (!names.insert(t.name).second) fail_mismatch(where, "", "each tensor name once", "it twice");
    const uint32_t dims = c.get<uint32_t>(where);
    if (dims < 1 || dims > kMaxDims) fail_mismatch(where, "dimensions", "1 to 4", std::to_string(dims));
    for (uint32_t d = 0; d < dims; ++d) {
      const uint64_t v = c.get<uint64_t>(where);
      if (v == 0 || v > (uint64_t{1} << 40)) fail_mismatch(where, "ne", "sizes in 1..2^40", std::to_string(v));
      t.ne.push_back(v);
    }
    const uint32_t type = c.get<uint32_t>(where);
    const std::set<uint32_t> known = {0, 1, 2, 3, 8, 30};
    if (!known.count(type)) fail_mismatch(where, "type", "F32, F16, BF16, Q4_0, Q4_1 or Q8_0 (the types outq reads)", std::to_string(type));
    t.type = static_cast<GgmlType>(type);
    if (static_cast<int64_t>(t.ne[0]) % ggml_block_size(t.type) != 0)
      fail_mismatch(where, "ne[0]", fmt::format("a multiple of the {} block ({})", ggml_type_name(t.type), ggml_block_size(t.type)),
                    std::to_string(t.ne[0]));
    t.offset = c.get<uint64_t>(where);
    if (t.offset != expected_offset)
      fail_mismatch(where, "offset", fmt::format("{} (packed after the previous tensors, each padded to {})", expected_offset, alignment_),
                    std::to_string(t.offset));
    t.bytes = static_cast<uint64_t>(t.elements() / ggml_block_size(t.type) * ggml_block_bytes(t.type));
    expected_offset += pad(t.bytes, alignment_);
    tensors_.push_back(std::move(t));
  }
  const uint64_t data_start = pad(c.at(), alignment_);
  data_offset_ = data_start;
  for (auto& t : tensors_) {
    if (data_start + t.offset + t.bytes > file_.size())
      fail_mismatch(path_ + ": tensor '" + t.name + "'", "data", fmt::format("{} bytes within the file", t.bytes),
                    fmt::format("the file ending after {} bytes (truncated?)", file_.size()));
    t.data = file_.data() + data_start + t.offset;
  }
}

bool GgufFile::contains(const std::string& key) const {
  for (const auto& [k, v] : kv_)
    if (k == key) return true;
  return false;
}

const GgufValue& GgufFile::get(const std::string& key) const {
  for (const auto& [k, v] : kv_)
    if (k == key) return v;
  fail_mismatch(path_, key, "a metadata key", "none");
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return t;
  fail_mismatch(path_, "tensor '" + name + "'", "a tensor of the file", "none");
}

}  // namespace outq
