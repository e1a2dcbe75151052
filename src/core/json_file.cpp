// JSON file reading with clear errors.
#include "outq/core/json_file.h"

#include <cstdint>
#include <string>
#include <type_traits>

#include "outq/core/error.h"
#include "outq/core/file_io.h"

namespace outq {

int json_int32(const nlohmann::json& v, std::string_view where, std::string_view field) {
  if (!v.is_number_integer()) fail_mismatch(where, field, "an integer", v.dump());
  const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(INT32_MAX)
                                           : v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX;
  if (!fits) fail_mismatch(where, field, "an integer in [-2147483648, 2147483647]", v.dump());
  return v.get<int>();
}

template <class T>
T json_value(const nlohmann::json& j, const std::string& key, const T& fallback, std::string_view where) {
  if (!j.is_object()) fail_mismatch(where, "", "a JSON object", j.type_name());
  const auto it = j.find(key);
  if (it == j.end()) return fallback;
  const nlohmann::json& v = *it;
  if constexpr (std::is_same_v<T, int>) {
    return json_int32(v, where, key);
  } else {
    bool ok = false;
    const char* expected = "";
    if constexpr (std::is_same_v<T, bool>) ok = v.is_boolean(), expected = "true or false";
    if constexpr (std::is_same_v<T, int64_t>) ok = v.is_number_integer(), expected = "an integer";
    if constexpr (std::is_same_v<T, double>) ok = v.is_number(), expected = "a number";
    if constexpr (std::is_same_v<T, std::string>) ok = v.is_string(), expected = "a string";
    if (!ok) fail_mismatch(where, key, expected, v.dump());
    return v.get<T>();
  }
}

template bool json_value(const nlohmann::json&, const std::string&, const bool&, std::string_view);
template int json_value(const nlohmann::json&, const std::string&, const int&, std::string_view);
template int64_t json_value(const nlohmann::json&, const std::string&, const int64_t&, std::string_view);
template double json_value(const nlohmann::json&, const std::string&, const double&, std::string_view);
template std::string json_value(const nlohmann::json&, const std::string&, const std::string&, std::string_view);

nlohmann::json json_read_object(const std::filesystem::path& path, std::string_view what) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path, what));
  } catch (const nlohmann::json::exception& e) {
    fail_mismatch(path.string(), "", std::string(what) + " as a JSON object", std::string("invalid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) fail_mismatch(path.string(), "", std::string(what) + " as a JSON object", j.type_name());
  return j;
}

}  // namespace outq
