// Typed configuration. Each config section is a plain struct that names its fields once:
//
//   struct DataConfig {
//     static constexpr const char* kSection = "data";
//     int vocab_size = 4096;
//     template <class V> void visit(V& v) { v("vocab_size", vocab_size, "BPE vocabulary size"); }
//     void validate() const;   // optional-by-convention: impossible settings -> outq::Error
//   };
//
// From that one list come TOML loading (unknown keys rejected with the valid ones listed),
// `--set section.key=value` overrides, the printed effective configuration, its JSON form and the
// `--help` listing. TOML parsing itself lives in config.cpp so this header stays light.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "outq/core/error.h"

namespace outq {

/// One scalar (or list of strings) config value, with where it came from for error messages.
struct ConfigValue {
  std::variant<bool, int64_t, double, std::string, std::vector<std::string>> value;
  std::string origin;  ///< e.g. "configs/tiny.toml:4" or "--set"

  std::string type_name() const;  ///< "boolean", "integer", "float", "string", "string list"
  std::string to_string() const;  ///< TOML-like rendering ("4096", "\"brown\"", "true")
};

/// Flat "section.key" -> value map, as read from a TOML file or from overrides.
using ConfigValues = std::map<std::string, ConfigValue>;

/// Reads a TOML file into a flat map. Only [section] tables of scalars / string arrays are valid.
ConfigValues config_read_toml(const std::string& path);
/// The same for TOML text; `origin` names it in errors (e.g. "embedded study config").
ConfigValues config_parse_toml(const std::string& text, const std::string& origin);
/// Parses "section.key=value"; the value is read as a TOML value, or taken verbatim as a string
/// when it is not one (so paths need no quotes).
std::pair<std::string, ConfigValue> config_parse_override(const std::string& assignment);

/// One field of a section, as described for printing, JSON and help.
struct ConfigEntry {
  std::string key;   ///< "section.key"
  std::string help;
  ConfigValue value;
};

/// Human table of entries (key, value, help) and JSON object {section: {key: value}}.
std::string config_table(const std::vector<ConfigEntry>& entries);
std::string config_json(const std::vector<ConfigEntry>& entries);
/// TOML text of the entries ([section] tables) that config_parse_toml reads back to the same
/// values; each string is escaped, each float written so that it reads back bit-exactly.
std::string config_toml(const std::vector<ConfigEntry>& entries);

namespace detail {

template <class T>
ConfigValue config_to_value(const T& x) {
  ConfigValue v;
  if constexpr (std::is_same_v<T, bool>) v.value = x;
  else if constexpr (std::is_integral_v<T>) v.value = static_cast<int64_t>(x);
  else if constexpr (std::is_floating_point_v<T>) v.value = static_cast<double>(x);
  else v.value = x;  // std::string or std::vector<std::string>
  return v;
}

[[noreturn]] void config_type_error(const std::string& key, const ConfigValue& v,
                                    const char* expected);
void config_check_range(const std::string& key, const ConfigValue& v, int64_t lo, int64_t hi);

template <class T>
void config_from_value(const std::string& key, const ConfigValue& v, T& out) {
  if constexpr (std::is_same_v<T, bool>) {
    if (auto* b = std::get_if<bool>(&v.value)) out = *b;
    else config_type_error(key, v, "a boolean (true/false)");
  } else if constexpr (std::is_integral_v<T>) {
    auto* i = std::get_if<int64_t>(&v.value);
    if (!i) config_type_error(key, v, "an integer");
    static_assert(sizeof(T) < sizeof(int64_t) || std::is_signed_v<T>, "use int64_t fields");
    config_check_range(key, v, static_cast<int64_t>(std::numeric_limits<T>::min()),
                       static_cast<int64_t>(std::numeric_limits<T>::max()));
    out = static_cast<T>(*i);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (auto* d = std::get_if<double>(&v.value)) out = static_cast<T>(*d);
    else if (auto* i = std::get_if<int64_t>(&v.value)) out = static_cast<T>(*i);
    else config_type_error(key, v, "a number");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (auto* s = std::get_if<std::string>(&v.value)) out = *s;
    else config_type_error(key, v, "a string");
  } else {
    static_assert(std::is_same_v<T, std::vector<std::string>>, "unsupported config field type");
    if (auto* l = std::get_if<std::vector<std::string>>(&v.value)) out = *l;
    else if (auto* s = std::get_if<std::string>(&v.value)) out = {*s};
    else config_type_error(key, v, "a list of strings");
  }
}

/// Visitor that lists a section's fields.
struct ConfigLister {
  std::string section;
  std::vector<ConfigEntry>* out;
  template <class T>
  void operator()(const char* key, T& field, const char* help) {
    out->push_back({section + "." + key, help, config_to_value(field)});
  }
};

/// Visitor that assigns values from a map and records which keys it consumed.
struct ConfigAssigner {
  std::string section;
  const ConfigValues* values;
  std::vector<std::string>* consumed;
  template <class T>
  void operator()(const char* key, T& field, const char* /*help*/) {
    const std::string full = section + "." + key;
    auto it = values->find(full);
    if (it == values->end()) return;
    config_from_value(full, it->second, field);
    consumed->push_back(full);
  }
};

/// Throws outq::Error naming every key of `values` not in `consumed`, with the valid keys.
void config_reject_unknown(const ConfigValues& values, const std::vector<std::string>& consumed,
                           const std::vector<ConfigEntry>& valid);

template <class T, class = void>
struct HasValidate : std::false_type {};
template <class T>
struct HasValidate<T, std::void_t<decltype(std::declval<const T&>().validate())>>
    : std::true_type {};

}  // namespace detail

/// Lists every field of every section of `root` (a struct with `visit_sections(V&)`).
template <class Root>
std::vector<ConfigEntry> config_entries(Root& root) {
  std::vector<ConfigEntry> out;
  root.visit_sections([&](auto& section) {
    detail::ConfigLister lister{section.kSection, &out};
    section.visit(lister);
  });
  return out;
}

/// Assigns `values` to the fields of `root`; unknown keys are an error; then validates sections.
template <class Root>
void config_apply(Root& root, const ConfigValues& values) {
  std::vector<std::string> consumed;
  root.visit_sections([&](auto& section) {
    detail::ConfigAssigner assigner{section.kSection, &values, &consumed};
    section.visit(assigner);
  });
  detail::config_reject_unknown(values, consumed, config_entries(root));
  root.visit_sections([&](auto& section) {
    using S = std::decay_t<decltype(section)>;
    if constexpr (detail::HasValidate<S>::value) section.validate();
  });
}

}  // namespace outq
