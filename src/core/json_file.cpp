// JSON file reading with clear errors.
#include "outq/core/json_file.h"

#include <cstdint>

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
