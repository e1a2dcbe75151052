// safetensors writing and validated, memory-mapped reading (see safetensors.h).
#include "outq/core/safetensors.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <set>
#include <tuple>
#include <charconv>
#include <nlohmann/json.hpp>

#include "outq/core/error.h"

namespace outq {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2}, {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
};

const DTypeInfo& info(DType d) {
  for (const auto& i : kDTypes)
    if (i.dtype == d) return i;
  OUTQ_ASSERT(false, "unknown dtype");
}

constexpr uint64_t kMaxHeaderBytes = 100u << 20;

}  // namespace

size_t dtype_size(DType dtype) { return info(dtype).size; }
const char* dtype_name(DType dtype) { return info(dtype).name; }

DType dtype_parse(const std::string& name, const std::string& where) {
  for (const auto& i : kDTypes)
    if (name == i.name) return i.dtype;
  std::vector<std::string> names;
  for (const auto& i : kDTypes) names.push_back(i.name);
  fail_mismatch(where, "dtype", fmt::format("one of {}", fmt::join(names, ", ")), "\"" + name + "\"");
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            const void* data, size_t bytes) {
  OUTQ_ASSERT(name != "__metadata__", "reserved tensor name");
  TensorView v{dtype, std::move(shape), static_cast<const uint8_t*>(data), bytes};
  OUTQ_ASSERT(static_cast<size_t>(v.numel()) * dtype_size(dtype) == bytes, "tensor ", name,
              ": ", bytes, " bytes do not match its shape");
  for (const auto& e : entries_) OUTQ_ASSERT(e.name != name, "duplicate tensor ", name);
  entries_.push_back({name, std::move(v)});
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

void SafetensorsWriter::write(const std::string& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const auto& e : entries_) {
    header[e.name] = {{"dtype", dtype_name(e.view.dtype)},
                      {"shape", e.view.shape},
                      {"data_offsets", {offset, offset + e.view.bytes}}};
    offset += e.view.bytes;
  }
  std::string json = header.dump();
  json.resize((json.size() + 8 + 7) / 8 * 8 - 8, ' ');  // buffer starts 8-byte aligned
  AtomicWriter out(path);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(json.size()) >> (8 * i));
  out.write(len, 8);
  out.write(json);
  for (const auto& e : entries_) out.write(e.view.data, e.view.bytes);
  out.commit();
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path), file_(path) {
  const uint8_t* p = file_.data();
  const size_t size = file_.size();
  if (size < 8) fail_mismatch(path, "header", "a safetensors file (8-byte header length first)",
                              fmt::format("a file of {} bytes", size));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(p[i]) << (8 * i);
  if (n > kMaxHeaderBytes || n > size - 8) {
    fail_mismatch(path, "header length", fmt::format("at most {} bytes within the file", std::min<uint64_t>(kMaxHeaderBytes, size - 8)),
                  fmt::format("{} (not a safetensors file, or truncated)", n));
  }
  if (n == 0 || p[8] != '{') fail_mismatch(path, "header", "a JSON object starting at its first byte", n == 0 ? "an empty header" : fmt::format("first byte 0x{:02x}", p[8]));
  nlohmann::json header;
  std::set<std::string> names;
  std::string duplicate;
  try {
    // A name given twice would silently keep one of the two: refused, as the format says.
    header = nlohmann::json::parse(p + 8, p + 8 + n, [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      if (depth == 1 && event == nlohmann::json::parse_event_t::key && !names.insert(parsed.get<std::string>()).second &&
          duplicate.empty())
        duplicate = parsed.get<std::string>();
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    fail_mismatch(path, "header", "a JSON object", std::string("invalid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) fail_mismatch(path, "header", "a JSON object", header.type_name());
  if (!duplicate.empty()) fail_mismatch(path, "tensor '" + duplicate + "'", "each name once in the header", "it twice");
  const uint8_t* buffer = p + 8 + n;
  const uint64_t buffer_bytes = size - 8 - n;
  struct Range {
    uint64_t begin, end;
    std::string name;
    bool operator<(const Range& o) const { return std::tie(begin, end, name) < std::tie(o.begin, o.end, o.name); }
  };
  std::vector<Range> ranges;
  for (const auto& [name, entry] : header.items()) {
    const std::string where = fmt::format("{}: tensor '{}'", path, name);
    if (name == "__metadata__") {
      if (!entry.is_object()) fail_mismatch(path, "__metadata__", "an object of strings", entry.type_name());
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail_mismatch(path, "__metadata__." + k, "a string", v.type_name());
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      fail_mismatch(where, "", "an object with dtype, shape and data_offsets", entry.dump());
    }
    TensorView v;
    if (!entry["dtype"].is_string()) fail_mismatch(where, "dtype", "a string", entry["dtype"].dump());
    v.dtype = dtype_parse(entry["dtype"].get<std::string>(), where);
    const auto& shape = entry["shape"];
    if (!shape.is_array()) fail_mismatch(where, "shape", "an array of sizes", shape.dump());
    for (const auto& d : shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) fail_mismatch(where, "shape", "non-negative integers", shape.dump());
      v.shape.push_back(d.get<int64_t>());
    }
    const auto& off = entry["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      fail_mismatch(where, "data_offsets", "[begin, end]", off.dump());
    }
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    const uint64_t expected = static_cast<uint64_t>(v.numel()) * dtype_size(v.dtype);
    if (end < begin || end - begin != expected) {
      fail_mismatch(where, "data_offsets", fmt::format("{} bytes for shape {} of {}", expected, shape.dump(), dtype_name(v.dtype)),
                    off.dump());
    }
    if (end > buffer_bytes) {
      fail_mismatch(where, "data_offsets", fmt::format("a range within the {}-byte buffer", buffer_bytes),
                    fmt::format("{} (file truncated?)", off.dump()));
    }
    v.data = buffer + begin;
    v.bytes = end - begin;
    ranges.push_back({begin, end, name});
    tensors_[name] = std::move(v);
  }
  // In offset order the tensors tile the buffer: no overlap, no hole, nothing after the last.
  std::sort(ranges.begin(), ranges.end());
  uint64_t at = 0;
  for (const auto& r : ranges) {
    if (r.begin < at) {
      fail_mismatch(path, "data_offsets", "non-overlapping tensors",
                    fmt::format("tensor '{}' at [{}, {}) overlapping the previous one, which ends at {}", r.name, r.begin, r.end, at));
    }
    if (r.begin > at) {
      fail_mismatch(path, "data_offsets", "tensors that tile the buffer",
                    fmt::format("a hole of {} bytes before tensor '{}' at [{}, {})", r.begin - at, r.name, r.begin, r.end));
    }
    at = r.end;
  }
  if (at != buffer_bytes) {
    fail_mismatch(path, "data_offsets", fmt::format("tensors that end where the file ends ({} bytes of data)", buffer_bytes),
                  fmt::format("{} trailing bytes after the last tensor", buffer_bytes - at));
  }
}

std::optional<int64_t> SafetensorsFile::metadata_int(const std::string& key, int64_t lo, int64_t hi) const {
  const auto it = metadata_.find(key);
  if (it == metadata_.end()) return std::nullopt;
  const std::string& s = it->second;
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  OUTQ_CHECK(ec == std::errc() && end == s.data() + s.size() && v >= lo && v <= hi, path_, ": metadata ", key,
             ": expected an integer in ", lo, "..", hi, ", found \"", s, "\"");
  return v;
}

const TensorView& SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail_mismatch(path_, name, "a tensor of this name", "none");
  return it->second;
}

}  // namespace outq
