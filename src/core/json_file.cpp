// JSON file reading with clear errors.
#include "outq/core/json_file.h"

#include "outq/core/error.h"
#include "outq/core/file_io.h"

namespace outq {

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
