// The method registry: one line per method (name, description, factory), and the QuantMethod
// defaults and settings helpers every method shares.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "methods.h"
#include "outq/core/error.h"

namespace outq {
namespace {

struct Registration {
  const char* name;
  const char* description;
  std::unique_ptr<QuantMethod> (*make)(const MethodEntry&);
};

const std::vector<Registration>& registry() {
  static const std::vector<Registration> methods = {
      {"smoothquant", "migrate activation outliers into the weights at norm->linear junctions (Xiao et al. 2022)",
       make_smoothquant},
      {"qfem", "keep float activations at the linears whose input carries activation spikes (Yang et al. 2024)",
       make_qfem},
      {"rotate", "fuse the norms and rotate the residual stream, the heads and the down-projection input (QuaRot, SpinQuant)",
       make_rotate},
      {"qfep", "continue after a float prefix whose KV cache absorbs the activation spikes (Yang et al. 2024)",
       make_qfep},
  };
  return methods;
}

}  // namespace

void QuantMethod::check(const Recipe&, const std::vector<std::string>&, const std::vector<const QuantMethod*>&) const {}
void QuantMethod::calibrate(Llama&, const CalibrationData&) {}
void QuantMethod::transform(Llama&) {}
void QuantMethod::plan(std::vector<QuantizedLinear>&) const {}
void QuantMethod::select(Llama&, QuantizedModel&, const CalibrationData&) {}
void QuantMethod::report(const AppliedMethod&, const std::string&) const {}
void QuantMethod::replay(Llama&, const AppliedMethod&) {}

AppliedMethod QuantMethod::record() const {
  AppliedMethod m;
  m.name = entry_.name;
  m.settings = entry_.settings;
  return m;
}

std::unique_ptr<QuantMethod> make_method(const MethodEntry& entry) {
  for (const auto& r : registry())
    if (entry.name == r.name) return r.make(entry);
  std::vector<std::string> names;
  for (const auto& r : registry()) names.push_back(r.name);
  throw Error(fmt::format("{}: methods: unknown outlier method '{}' (available: {})", entry.origin, entry.name,
                          fmt::join(names, ", ")));
}

std::vector<std::unique_ptr<QuantMethod>> make_methods(const Recipe& recipe) {
  std::vector<std::unique_ptr<QuantMethod>> out;
  for (const auto& e : recipe.methods) out.push_back(make_method(e));
  return out;
}

std::vector<std::pair<std::string, std::string>> method_catalog() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& r : registry()) out.emplace_back(r.name, r.description);
  return out;
}

bool recipe_needs_calibration_data(const Recipe& recipe) {
  bool methods = false;
  for (const auto& m : make_methods(recipe)) methods = methods || m->needs_calibration();
  return methods || recipe.algorithm == WeightAlgorithm::kGptq || recipe.needs_calibration();
}

MethodSettings::MethodSettings(const MethodEntry& entry, std::vector<std::string> valid) : entry_(entry) {
  OUTQ_CHECK(entry.settings.is_object(), entry.origin, ": ", entry.name, ": expected a table of settings");
  for (const auto& [key, value] : entry.settings.items()) {
    OUTQ_CHECK(std::find(valid.begin(), valid.end(), key) != valid.end(), entry.origin, ": unknown ", entry.name,
               " setting '", key, "' (valid keys in [", entry.name, "]: ", fmt::format("{}", fmt::join(valid, ", ")), ")");
  }
}

std::string MethodSettings::where(const std::string& key) const { return entry_.origin + ": " + entry_.name + "." + key; }

double MethodSettings::number(const std::string& key, double fallback) const {
  if (!has(key)) return fallback;
  const auto& v = entry_.settings.at(key);
  if (!v.is_number()) fail_mismatch(where(key), key, "a number", v.dump());
  const double x = v.get<double>();
  OUTQ_CHECK(std::isfinite(x), where(key), ": expected a finite number, found ", x);
  return x;
}

int64_t MethodSettings::whole_number(const std::string& key, int64_t fallback, int64_t lo, int64_t hi) const {
  const double v = number(key, static_cast<double>(fallback));
  OUTQ_CHECK(v == std::floor(v) && v >= static_cast<double>(lo) && v <= static_cast<double>(hi), where(key),
             ": expected a whole number in ", lo, "..", hi, ", found ", v);
  return static_cast<int64_t>(v);
}

std::vector<std::string> MethodSettings::strings(const std::string& key, const std::vector<std::string>& fallback) const {
  if (!has(key)) return fallback;
  const auto& v = entry_.settings.at(key);
  std::vector<std::string> out;
  if (v.is_array())
    for (const auto& item : v) {
      if (!item.is_string()) fail_mismatch(where(key), key, "a list of strings", v.dump());
      out.push_back(item.get<std::string>());
    }
  else
    fail_mismatch(where(key), key, "a list of strings", v.dump());
  return out;
}

std::string MethodSettings::string(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  const auto& v = entry_.settings.at(key);
  if (!v.is_string()) fail_mismatch(where(key), key, "a string", v.dump());
  return v.get<std::string>();
}

bool MethodSettings::boolean(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto& v = entry_.settings.at(key);
  if (!v.is_boolean()) fail_mismatch(where(key), key, "true or false", v.dump());
  return v.get<bool>();
}

std::vector<std::pair<std::string, double>> MethodSettings::numbers_by_key(const std::string& key) const {
  std::vector<std::pair<std::string, double>> out;
  if (!has(key)) return out;
  const auto& v = entry_.settings.at(key);
  if (!v.is_object()) fail_mismatch(where(key), key, "a table of numbers ({ name = value, ... })", v.dump());
  for (const auto& [k, x] : v.items()) {
    if (!x.is_number() || !std::isfinite(x.get<double>()))
      fail_mismatch(where(key + "." + k), k, "a finite number", x.dump());
    out.emplace_back(k, x.get<double>());
  }
  return out;
}

}  // namespace outq
