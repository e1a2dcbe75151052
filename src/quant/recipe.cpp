// Recipe TOML parsing and validation (see recipe.h for the format).
#include "outq/quant/recipe.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <fmt/ranges.h>
#include <fnmatch.h>

#include <filesystem>
#include <toml++/toml.h>

#include "outq/core/error.h"
#include "outq/core/file_io.h"

namespace outq {
namespace {

std::string at(const std::string& origin, const toml::node& node) {
  return fmt::format("{}:{}", origin, node.source().begin.line);
}

void reject_unknown(const toml::table& t, const std::vector<std::string>& valid, const std::string& origin,
                    const std::string& section) {
  for (const auto& [k, node] : t) {
    const std::string key(k.str());
    if (std::find(valid.begin(), valid.end(), key) == valid.end()) {
      throw Error(fmt::format("{}: unknown recipe key '{}{}' (valid keys{}: {})", at(origin, node),
                              section.empty() ? "" : section + ".", key, section.empty() ? "" : " in [" + section + "]",
                              fmt::join(valid, ", ")));
    }
  }
}

template <class T>
void read(const toml::table& t, const char* key, T& out, const std::string& origin, const std::string& section) {
  const toml::node* node = t.get(key);
  if (!node) return;
  const std::string where = at(origin, *node);
  const std::string name = section + "." + key;
  if constexpr (std::is_same_v<T, bool>) {
    auto v = node->value_exact<bool>();
    if (!v) fail_mismatch(where, name, "a boolean", "another type");
    out = *v;
  } else if constexpr (std::is_integral_v<T>) {
    auto v = node->value_exact<int64_t>();
    if (!v) fail_mismatch(where, name, "an integer", "another type");
    // No silent narrowing: 4294967300 must not become 4.
    if (*v < static_cast<int64_t>(std::numeric_limits<T>::min()) || *v > static_cast<int64_t>(std::numeric_limits<T>::max()))
      fail_mismatch(where, name, fmt::format("an integer in [{}, {}]", std::numeric_limits<T>::min(), std::numeric_limits<T>::max()),
                    std::to_string(*v));
    out = static_cast<T>(*v);
  } else if constexpr (std::is_floating_point_v<T>) {
    auto v = node->value<double>();
    if (!v) fail_mismatch(where, name, "a number", "another type");
    if (!std::isfinite(*v)) fail_mismatch(where, name, "a finite number", fmt::format("{}", *v));
    out = *v;
  } else {
    auto v = node->value_exact<std::string>();
    if (!v) fail_mismatch(where, name, "a string", "another type");
    out = *v;
  }
}

void read_spec(const toml::table& t, QuantSpec& spec, const std::string& origin, const std::string& section,
               bool is_weight, std::string* algorithm) {
  std::vector<std::string> valid = {"bits", "symmetric", "granularity", "range", "percentile"};
  if (is_weight) {
    valid.push_back("group_size");
    if (algorithm) valid.push_back("algorithm");
  } else {
    valid.insert(valid.end(), {"dynamic", "peg_groups", "peg_permute", "peg_shared", "integer"});
  }
  reject_unknown(t, valid, origin, section);
  read(t, "bits", spec.bits, origin, section);
  read(t, "symmetric", spec.symmetric, origin, section);
  std::string text;
  if (t.contains("granularity")) {
    read(t, "granularity", text, origin, section);
    spec.granularity = granularity_parse(text, at(origin, *t.get("granularity")) + ": " + section);
    // A table that changes the granularity (an override of the base spec) drops the parameters of
    // the granularity it inherited, unless it sets them itself.
    if (spec.granularity != Granularity::kGroup) spec.group_size = 0;
    if (spec.granularity != Granularity::kPeg) spec.peg_groups = 0, spec.peg_permute = spec.peg_shared = false;
  }
  if (t.contains("range")) {
    read(t, "range", text, origin, section);
    spec.range = range_parse(text, at(origin, *t.get("range")) + ": " + section);
  }
  read(t, "percentile", spec.percentile, origin, section);
  if (is_weight) {
    read(t, "group_size", spec.group_size, origin, section);
    if (algorithm) read(t, "algorithm", *algorithm, origin, section);
  } else {
    read(t, "dynamic", spec.dynamic, origin, section);
    read(t, "peg_groups", spec.peg_groups, origin, section);
    read(t, "peg_permute", spec.peg_permute, origin, section);
    read(t, "peg_shared", spec.peg_shared, origin, section);
    read(t, "integer", spec.integer16, origin, section);
  }
}

// TOML -> JSON for a method's settings (numbers stay integers or floats, arrays and tables nest).
nlohmann::json to_json(const toml::node& node, const std::string& origin) {
  if (const auto* t = node.as_table()) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [k, v] : *t) j[std::string(k.str())] = to_json(v, origin);
    return j;
  }
  if (const auto* a = node.as_array()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& v : *a) j.push_back(to_json(v, origin));
    return j;
  }
  if (auto v = node.value_exact<bool>()) return *v;
  if (auto v = node.value_exact<int64_t>()) return *v;
  if (auto v = node.value_exact<double>()) return *v;
  if (auto v = node.value_exact<std::string>()) return *v;
  throw Error(fmt::format("{}: a method setting must be a boolean, number, string, array or table", at(origin, node)));
}

const toml::table* table_of(const toml::table& root, const char* key, const std::string& origin) {
  const toml::node* node = root.get(key);
  if (!node) return nullptr;
  const toml::table* t = node->as_table();
  if (!t) fail_mismatch(at(origin, *node), key, "a table", "another type");
  return t;
}

}  // namespace

QuantSpec Recipe::weight_spec(const std::string& module) const {
  QuantSpec s = weights;
  for (const auto& o : overrides)
    if (o.has_weights && fnmatch(o.pattern.c_str(), module.c_str(), 0) == 0) s = o.weights;
  return s;
}

QuantSpec Recipe::activation_spec(const std::string& module) const {
  QuantSpec s = activations;
  for (const auto& o : overrides)
    if (o.has_activations && fnmatch(o.pattern.c_str(), module.c_str(), 0) == 0) s = o.activations;
  return s;
}

QuantSpec Recipe::point_spec(const std::string& point) const {
  QuantSpec s;  // off unless full_integer or a [[tensors]] entry says otherwise
  if (full_integer) s = activations;
  for (const auto& t : tensors)
    if (fnmatch(t.pattern.c_str(), point.c_str(), 0) == 0) s = t.activations;
  return s;
}

bool Recipe::needs_calibration() const {
  // Static ranges, and the PEG permutation (measured on calibration data even for dynamic ranges).
  auto is_static = [](const QuantSpec& s) {
    return s.enabled() && ((!s.dynamic && s.range != RangeMethod::kLearned) || s.peg_permute);
  };
  if (is_static(activations)) return true;
  for (const auto& o : overrides)
    if (o.has_activations && is_static(o.activations)) return true;
  for (const auto& t : tensors)
    if (is_static(t.activations)) return true;
  return false;
}

bool Recipe::needs_learned_ranges() const {
  auto learned = [](const QuantSpec& s) { return s.enabled() && s.range == RangeMethod::kLearned; };
  if (learned(activations)) return true;
  for (const auto& o : overrides)
    if (o.has_activations && learned(o.activations)) return true;
  return false;
}

std::string Recipe::label() const {
  return fmt::format("W{}A{}{}", weights.bits, activations.bits, activations.integer16 ? "i" : "");
}

std::string Recipe::methods_label() const {
  std::string out;
  for (const auto& m : methods) out += (out.empty() ? "" : "+") + m.name;
  return out;
}

std::vector<std::string> glob_matches(const std::string& pattern, const std::vector<std::string>& modules) {
  std::vector<std::string> out;
  for (const auto& m : modules)
    if (fnmatch(pattern.c_str(), m.c_str(), 0) == 0) out.push_back(m);
  return out;
}

const char* weight_algorithm_name(WeightAlgorithm a) {
  switch (a) {
    case WeightAlgorithm::kRtn: return "rtn";
    case WeightAlgorithm::kGptq: return "gptq";
    case WeightAlgorithm::kLearned: return "learned";
  }
  return "?";
}

Recipe recipe_parse(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    throw Error(fmt::format("{}:{}: not valid TOML: {}", origin, e.source().begin.line, e.description()));
  }
  std::vector<std::string> root_keys = {"name", "description", "methods", "full_integer", "weights", "activations",
                                        "gptq", "calibration", "override", "tensors"};
  Recipe r;
  r.source_path = origin;
  r.source_text = text;
  if (const toml::node* m = root.get("methods")) {
    const toml::array* arr = m->as_array();
    if (!arr) fail_mismatch(at(origin, *m), "methods", "a list of method names", "another type");
    for (const auto& item : *arr) {
      auto s = item.value_exact<std::string>();
      if (!s) fail_mismatch(at(origin, item), "methods", "method names (strings)", "another type");
      OUTQ_CHECK(std::find(root_keys.begin(), root_keys.end(), *s) == root_keys.end(),
                 at(origin, item), ": methods: \"", *s, "\" is a recipe section, not a method name");
      for (const auto& e : r.methods)
        OUTQ_CHECK(e.name != *s, at(origin, item), ": methods: \"", *s, "\" is listed twice (each method is applied once)");
      MethodEntry e;
      e.name = *s;
      e.origin = at(origin, item);
      r.methods.push_back(std::move(e));
    }
  }
  // Each listed method may have a settings table of its name; any other unknown key is an error.
  std::vector<std::string> valid = root_keys;
  for (const auto& e : r.methods) valid.push_back(e.name);
  for (const auto& [k, node] : root) {
    const std::string key(k.str());
    if (std::find(valid.begin(), valid.end(), key) != valid.end()) continue;
    std::string names;
    for (const auto& e : r.methods) names += (names.empty() ? "" : ", ") + e.name;
    throw Error(fmt::format("{}: unknown recipe key '{}' (valid keys: {}{})", at(origin, node), key, fmt::join(root_keys, ", "),
                            node.is_table() ? fmt::format("; a method's settings table needs the method in `methods`, "
                                                          "which lists {}", names.empty() ? "none" : names)
                                            : std::string()));
  }
  for (auto& e : r.methods) {
    if (const toml::node* t = root.get(e.name)) {
      if (!t->is_table()) fail_mismatch(at(origin, *t), e.name, "a table of the method's settings", "another type");
      e.settings = to_json(*t, origin);
      e.origin = at(origin, *t);
    }
  }
  read(root, "name", r.name, origin, "recipe");
  read(root, "description", r.description, origin, "recipe");
  read(root, "full_integer", r.full_integer, origin, "recipe");
  std::string algorithm = weight_algorithm_name(WeightAlgorithm::kRtn);
  if (const toml::table* w = table_of(root, "weights", origin)) read_spec(*w, r.weights, origin, "weights", true, &algorithm);
  if (algorithm == "rtn") r.algorithm = WeightAlgorithm::kRtn;
  else if (algorithm == "gptq") r.algorithm = WeightAlgorithm::kGptq;
  else if (algorithm == "learned") r.algorithm = WeightAlgorithm::kLearned;
  else fail_mismatch(origin, "weights.algorithm", "\"rtn\", \"gptq\" or \"learned\"", "\"" + algorithm + "\"");
  if (const toml::table* a = table_of(root, "activations", origin)) read_spec(*a, r.activations, origin, "activations", false, nullptr);
  if (const toml::table* g = table_of(root, "gptq", origin)) {
    reject_unknown(*g, {"damp", "block_size", "act_order", "true_sequential"}, origin, "gptq");
    read(*g, "damp", r.gptq.damp, origin, "gptq");
    read(*g, "block_size", r.gptq.block_size, origin, "gptq");
    read(*g, "act_order", r.gptq.act_order, origin, "gptq");
    read(*g, "true_sequential", r.gptq.true_sequential, origin, "gptq");
  }
  if (const toml::table* c = table_of(root, "calibration", origin)) {
    reject_unknown(*c, {"windows", "seq_len", "seed", "batch_size"}, origin, "calibration");
    read(*c, "windows", r.calibration.windows, origin, "calibration");
    read(*c, "seq_len", r.calibration.seq_len, origin, "calibration");
    read(*c, "seed", r.calibration.seed, origin, "calibration");
    read(*c, "batch_size", r.calibration.batch_size, origin, "calibration");
  }
  r.weights.validate(origin + ": weights", true);
  r.activations.validate(origin + ": activations", false);
  OUTQ_CHECK(r.gptq.damp > 0, origin, ": gptq.damp: expected > 0, found ", r.gptq.damp);
  OUTQ_CHECK(r.gptq.block_size >= 1, origin, ": gptq.block_size: expected >= 1, found ", r.gptq.block_size);
  OUTQ_CHECK(r.calibration.windows >= 1 && r.calibration.seq_len >= 2 && r.calibration.batch_size >= 1, origin,
             ": calibration: expected windows >= 1, seq_len >= 2 and batch_size >= 1");
  if (const toml::node* o = root.get("override")) {
    const toml::array* arr = o->as_array();
    if (!arr) fail_mismatch(at(origin, *o), "override", "an array of tables ([[override]])", "another type");
    for (const auto& item : *arr) {
      const toml::table* t = item.as_table();
      if (!t) fail_mismatch(at(origin, item), "override", "a table", "another type");
      reject_unknown(*t, {"modules", "weights", "activations"}, origin, "override");
      ModuleOverride mo;
      read(*t, "modules", mo.pattern, origin, "override");
      if (mo.pattern.empty()) fail_mismatch(at(origin, item), "override.modules", "a glob on module names", "none");
      mo.weights = r.weights;
      mo.activations = r.activations;
      if (const toml::table* w = table_of(*t, "weights", origin)) {
        mo.has_weights = true;
        read_spec(*w, mo.weights, origin, "override.weights", true, nullptr);
        mo.weights.validate(at(origin, item) + ": override.weights", true);
      }
      if (const toml::table* a = table_of(*t, "activations", origin)) {
        mo.has_activations = true;
        read_spec(*a, mo.activations, origin, "override.activations", false, nullptr);
        mo.activations.validate(at(origin, item) + ": override.activations", false);
      }
      r.overrides.push_back(std::move(mo));
    }
  }
  if (const toml::node* o = root.get("tensors")) {
    const toml::array* arr = o->as_array();
    if (!arr) fail_mismatch(at(origin, *o), "tensors", "an array of tables ([[tensors]])", "another type");
    for (const auto& item : *arr) {
      const toml::table* t = item.as_table();
      if (!t) fail_mismatch(at(origin, item), "tensors", "a table", "another type");
      reject_unknown(*t, {"points", "activations"}, origin, "tensors");
      TensorOverride to;
      to.origin = at(origin, item);
      read(*t, "points", to.pattern, origin, "tensors");
      if (to.pattern.empty()) fail_mismatch(to.origin, "tensors.points", "a glob on observation point names", "none");
      to.activations = r.activations;
      const toml::table* a = table_of(*t, "activations", origin);
      if (!a) fail_mismatch(to.origin, "tensors.activations", "a table of the activation spec", "none");
      read_spec(*a, to.activations, origin, "tensors.activations", false, nullptr);
      to.activations.validate(to.origin + ": tensors.activations", false);
      r.tensors.push_back(std::move(to));
    }
  }
  if (r.name.empty()) r.name = std::filesystem::path(origin).stem().string();
  return r;
}

Recipe recipe_load(const std::string& path) { return recipe_parse(read_file(path, "recipe"), path); }

}  // namespace outq
