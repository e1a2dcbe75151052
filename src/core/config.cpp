// TOML reading, override parsing, unknown-key rejection and rendering for typed configs.
#include "outq/core/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/table.h"

namespace outq {

std::string ConfigValue::type_name() const {
  switch (value.index()) {
    case 0: return "boolean";
    case 1: return "integer";
    case 2: return "float";
    case 3: return "string";
    default: return "string list";
  }
}

std::string ConfigValue::to_string() const {
  struct Render {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const { return fmt::format("{}", d); }
    std::string operator()(const std::string& s) const { return fmt::format("\"{}\"", s); }
    std::string operator()(const std::vector<std::string>& l) const {
      std::vector<std::string> q;
      for (const auto& s : l) q.push_back(fmt::format("\"{}\"", s));
      return fmt::format("[{}]", fmt::join(q, ", "));
    }
  };
  return std::visit(Render{}, value);
}

namespace {

// Converts one TOML node to a ConfigValue; `where` names it in errors.
ConfigValue value_from_node(const toml::node& node, const std::string& where,
                            const std::string& key) {
  ConfigValue v;
  v.origin = where;
  if (auto b = node.value_exact<bool>()) v.value = *b;
  else if (auto i = node.value_exact<int64_t>()) v.value = *i;
  else if (auto d = node.value_exact<double>()) v.value = *d;
  else if (auto s = node.value_exact<std::string>()) v.value = *s;
  else if (const auto* arr = node.as_array()) {
    std::vector<std::string> list;
    for (const auto& item : *arr) {
      auto text = item.value_exact<std::string>();
      if (!text) fail_mismatch(where, key, "a list of strings", "a list with a non-string element");
      list.push_back(*text);
    }
    v.value = std::move(list);
  } else {
    fail_mismatch(where, key, "a boolean, integer, float, string or list of strings",
                  "a nested table or date");
  }
  return v;
}

std::string node_origin(const std::string& path, const toml::node& node) {
  return fmt::format("{}:{}", path, node.source().begin.line);
}

}  // namespace

ConfigValues config_read_toml(const std::string& path) {
  OUTQ_CHECK(std::filesystem::is_regular_file(path), path,
             ": config file not found (expected a TOML file)");
  return config_parse_toml(read_file(path, "config file"), path);
}

ConfigValues config_parse_toml(const std::string& text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    throw Error(fmt::format("{}:{}: not valid TOML: {}", path, e.source().begin.line,
                            e.description()));
  }
  ConfigValues out;
  for (const auto& [section_key, section_node] : root) {
    const std::string section(section_key.str());
    const auto* table = section_node.as_table();
    if (!table) {
      fail_mismatch(node_origin(path, section_node), section, "a [section] table",
                    "a top-level value (put keys under a [section] header)");
    }
    for (const auto& [key, node] : *table) {
      const std::string full = section + "." + std::string(key.str());
      out[full] = value_from_node(node, node_origin(path, node), full);
    }
  }
  return out;
}

std::pair<std::string, ConfigValue> config_parse_override(const std::string& assignment) {
  const auto eq = assignment.find('=');
  OUTQ_CHECK(eq != std::string::npos && eq > 0, "--set ", assignment,
             ": expected section.key=value");
  std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  OUTQ_CHECK(key.find('.') != std::string::npos, "--set ", assignment,
             ": expected a key of the form section.key, found '", key, "'");
  ConfigValue v;
  v.origin = "--set";
  try {
    toml::table t = toml::parse("v = " + text);
    v = value_from_node(*t.get("v"), v.origin, key);
    v.origin = "--set";
  } catch (const toml::parse_error&) {
    v.value = text;  // not a TOML value: a bare string such as a path
  }
  return {key, v};
}

namespace detail {

void config_type_error(const std::string& key, const ConfigValue& v, const char* expected) {
  fail_mismatch(v.origin.empty() ? "config" : v.origin, key, expected,
                fmt::format("{} {}", v.type_name(), v.to_string()));
}

void config_check_range(const std::string& key, const ConfigValue& v, int64_t lo, int64_t hi) {
  const int64_t i = std::get<int64_t>(v.value);
  if (i < lo || i > hi) {
    fail_mismatch(v.origin.empty() ? "config" : v.origin, key,
                  fmt::format("an integer in [{}, {}]", lo, hi), std::to_string(i));
  }
}

void config_reject_unknown(const ConfigValues& values, const std::vector<std::string>& consumed,
                           const std::vector<ConfigEntry>& valid) {
  const std::set<std::string> used(consumed.begin(), consumed.end());
  for (const auto& [key, value] : values) {
    if (used.count(key)) continue;
    const std::string section = key.substr(0, key.find('.'));
    std::vector<std::string> same_section, sections;
    for (const auto& e : valid) {
      const std::string s = e.key.substr(0, e.key.find('.'));
      if (s == section) same_section.push_back(e.key.substr(s.size() + 1));
      if (sections.empty() || sections.back() != s) sections.push_back(s);
    }
    const std::string where = value.origin.empty() ? "config" : value.origin;
    if (same_section.empty()) {
      throw Error(fmt::format("{}: unknown config section [{}] (valid sections: {})", where,
                              section, fmt::join(sections, ", ")));
    }
    throw Error(fmt::format("{}: unknown config key '{}' (valid keys in [{}]: {})", where, key,
                            section, fmt::join(same_section, ", ")));
  }
}

}  // namespace detail

std::string config_table(const std::vector<ConfigEntry>& entries) {
  Table table({"key", "value", "meaning"});
  for (const auto& e : entries) table.add_row({e.key, e.value.to_string(), e.help});
  return table.render();
}

std::string config_json(const std::vector<ConfigEntry>& entries) {
  nlohmann::ordered_json root = nlohmann::ordered_json::object();
  for (const auto& e : entries) {
    const auto dot = e.key.find('.');
    auto& slot = root[e.key.substr(0, dot)][e.key.substr(dot + 1)];
    std::visit([&](const auto& x) { slot = x; }, e.value.value);
  }
  return root.dump(2) + "\n";
}

std::string config_toml(const std::vector<ConfigEntry>& entries) {
  toml::table root;
  for (const auto& e : entries) {
    const auto dot = e.key.find('.');
    const std::string section = e.key.substr(0, dot), key = e.key.substr(dot + 1);
    if (!root.contains(section)) root.insert(section, toml::table{});
    toml::table& t = *root[section].as_table();
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            toml::array a;
            for (const auto& s : x) a.push_back(s);
            t.insert(key, std::move(a));
          } else {
            t.insert(key, x);
          }
        },
        e.value.value);
  }
  std::ostringstream out;
  out << toml::toml_formatter(root, toml::toml_formatter::default_flags & ~toml::format_flags::allow_literal_strings);
  return out.str() + "\n";
}

}  // namespace outq
