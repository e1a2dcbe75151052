// Reading a JSON file with errors that name the file and what it should have been.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string_view>

namespace outq {

/// Parses the JSON object in `path`; `what` describes the file ("model config") in errors:
/// missing file, invalid JSON, or a value that is not an object.
nlohmann::json json_read_object(const std::filesystem::path& path, std::string_view what);

}  // namespace outq
