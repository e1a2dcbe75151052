// Reading a JSON file with errors that name the file and what it should have been.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string_view>

namespace outq {

/// Parses the JSON object in `path`; `what` describes the file ("model config") in errors:
/// missing file, invalid JSON, or a value that is not an object.
nlohmann::json json_read_object(const std::filesystem::path& path, std::string_view what);

/// `v` as an int: an error naming `where` and `field` unless it is an integer that fits 32 bits
/// (no silent narrowing: 4294967300 must not become 4).
int json_int32(const nlohmann::json& v, std::string_view where, std::string_view field);

/// The value of `key` in the object `j` as T (bool, int, int64_t, double or std::string), or
/// `fallback` when `j` has no such key; a value of another type (or an int beyond 32 bits) is an
/// error naming `where` and the key. nlohmann's own value() would throw its type_error instead.
template <class T>
T json_value(const nlohmann::json& j, const std::string& key, const T& fallback, std::string_view where);

}  // namespace outq
