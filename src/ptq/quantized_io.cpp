// Quantized model directory writing and loading (see quantized_io.h for the layout).
#include "outq/ptq/quantized_io.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/json_file.h"
#include "outq/core/safetensors.h"
#include "outq/model/checkpoint.h"
#include "outq/model/tensor_io.h"
#include "outq/ptq/method.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

constexpr const char* kFormat = "outq-quantized";
constexpr int kVersion = 2;  // 2: the "methods" section; 1 (no methods) still loads

nlohmann::json spec_json(const QuantSpec& s) {
  return {{"bits", s.bits},           {"symmetric", s.symmetric},   {"granularity", granularity_name(s.granularity)},
          {"group_size", s.group_size}, {"peg_groups", s.peg_groups}, {"peg_permute", s.peg_permute},
          {"peg_shared", s.peg_shared}, {"integer16", s.integer16},
          {"range", range_name(s.range)}, {"percentile", s.percentile}, {"dynamic", s.dynamic}};
}

QuantSpec spec_from_json(const nlohmann::json& j, const std::string& where) {
  QuantSpec s;
  auto get_int = [&](const char* key) { return json_int32(j.at(key), where, key); };
  try {
    s.bits = get_int("bits");
    s.symmetric = j.at("symmetric").get<bool>();
    s.granularity = granularity_parse(j.at("granularity").get<std::string>(), where);
    s.group_size = get_int("group_size");
    s.peg_groups = get_int("peg_groups");
    s.peg_permute = j.at("peg_permute").get<bool>();
    s.range = range_parse(j.at("range").get<std::string>(), where);
    s.percentile = j.at("percentile").get<double>();
    s.dynamic = j.at("dynamic").get<bool>();
    s.peg_shared = j.value("peg_shared", false);  // absent in directories written before PEG permutations
    s.integer16 = j.value("integer16", false);
  } catch (const nlohmann::json::exception& e) {
    fail_mismatch(where, "spec", "bits, symmetric, granularity, group_size, peg_groups, peg_permute, range, "
                  "percentile, dynamic", std::string("an incomplete spec (") + e.what() + ")");
  }
  return s;
}

std::string method_tensor_name(const std::string& method, const std::string& key) {
  return "methods." + method + "." + key;
}

// The "methods" section of a version-2 quant_config.json, each replayed on the loaded model in order.
std::vector<AppliedMethod> load_methods(const nlohmann::json& qc, const std::string& qc_path, const SafetensorsFile& file,
                                        Llama& model, std::shared_ptr<const TokenPrefix>* prefix) {
  std::vector<AppliedMethod> out;
  if (!qc.contains("methods")) return out;
  const nlohmann::json& list = qc.at("methods");
  OUTQ_CHECK(list.is_array(), qc_path, ": methods: expected a list of applied methods, found ", list.type_name());
  for (const auto& j : list) {
    OUTQ_CHECK(j.is_object() && j.contains("name") && j["name"].is_string() && j.contains("settings") &&
                   j["settings"].is_object() && j.contains("state") && j.contains("tensors") && j["tensors"].is_array(),
               qc_path, ": methods: expected entries with name, settings, state and tensors, found ", j.dump());
    MethodEntry entry;
    entry.name = j["name"].get<std::string>();
    entry.settings = j["settings"];
    entry.origin = qc_path;
    const auto method = make_method(entry);
    AppliedMethod saved;
    saved.name = entry.name;
    saved.settings = entry.settings;
    saved.state = j["state"];
    saved.runtime_unsupported = json_value<std::string>(j, "runtime_unsupported", "", qc_path + ": methods: " + entry.name);
    for (const auto& key : j["tensors"]) {
      OUTQ_CHECK(key.is_string(), qc_path, ": methods: ", entry.name, ": expected tensor names, found ", key.dump());
      saved.tensors[key.get<std::string>()] = tensor_from_view(file.get(method_tensor_name(entry.name, key.get<std::string>())));
    }
    method->replay(model, saved);
    if (const TokenPrefix* p = method->prefix()) *prefix = std::make_shared<TokenPrefix>(*p);
    out.push_back(std::move(saved));
  }
  return out;
}

}  // namespace

// Static activation ranges of a quantizer (checked: finite, one per group), or undefined when the
// spec is dynamic or off; a static spec without them is an error.
QParams load_ranges(const SafetensorsFile& file, const std::string& scale_name, const std::string& zero_name,
                    const QuantSpec& spec, const std::string& qc_path) {
  if (!file.contains(scale_name)) {
    if (spec.enabled() && !spec.dynamic) fail_mismatch(file.path(), scale_name, "static activation ranges", "none");
    return {};
  }
  QParams qp{tensor_from_view(file.get(scale_name)).reshape({1, -1, 1}), tensor_from_view(file.get(zero_name)).reshape({1, -1, 1})};
  expect_finite(qp.scale, file.path(), scale_name);
  expect_finite(qp.zero, file.path(), zero_name);
  const int64_t expected = spec.granularity == Granularity::kPeg ? spec.peg_groups : 1;
  OUTQ_CHECK(qp.scale.numel() == expected && qp.zero.numel() == expected, file.path(), ": ", scale_name, " / ", zero_name,
             ": expected ", expected, " value(s) (", spec.describe(), ", as ", qc_path, " says), found ", qp.scale.numel(),
             " and ", qp.zero.numel());
  return qp;
}

// A PEG channel permutation of `width` channels (checked to be one), or undefined when the spec
// has none; a permutation the spec does not ask for, or a missing one, is an error.
torch::Tensor load_permutation(const SafetensorsFile& file, const std::string& name, const QuantSpec& spec, int64_t width,
                               const std::string& qc_path) {
  const bool permuted = spec.enabled() && spec.peg_permute;
  if (!file.contains(name) && !permuted) return {};
  OUTQ_CHECK(permuted, file.path(), ": ", name, ": a channel permutation for a tensor that ", qc_path,
             " does not quantize per embedding group with peg_permute; the directory's files disagree");
  torch::Tensor perm = tensor_from_view(file.get(name));
  const bool ok = perm.scalar_type() == torch::kInt64 && perm.dim() == 1 && perm.size(0) == width &&
                  torch::equal(std::get<0>(perm.sort()), torch::arange(width, torch::kInt64));
  OUTQ_CHECK(ok, file.path(), ": ", name, ": expected an I64 permutation of 0..", width - 1, " (the channels), found another tensor");
  return perm;
}

// The "points" section (absent before full-integer mode): quantized tensors other than linear inputs.
std::vector<QuantizedPoint> load_points(const nlohmann::json& qc, const std::string& qc_path, const SafetensorsFile& file,
                                        Llama& model) {
  std::vector<QuantizedPoint> out;
  if (!qc.contains("points")) return out;
  OUTQ_CHECK(qc["points"].is_object(), qc_path, ": points: expected an object of tensor specs, found ", qc["points"].type_name());
  for (const auto& [name, j] : qc["points"].items()) {
    const ObservationPoint* found = nullptr;
    for (const auto& p : model->points())
      if (p.name == name && p.kind != PointKind::kLinearInput) found = &p;
    OUTQ_CHECK(found != nullptr, qc_path, ": points.", name, ": expected a tensor of this model other than a linear input "
               "(like ", block_prefix(0), ".residual_mlp), found no such tensor");
    QuantizedPoint q;
    q.point = name;
    q.spec = spec_from_json(j, qc_path + ": points." + name);
    q.spec.validate(qc_path + ": points." + name, false);
    const int64_t width = found->kind == PointKind::kLinearOutput ? model->linear_weight(found->module).size(0)
                                                                    : model->config().hidden_size;
    q.qp = load_ranges(file, name + ".act_scale", name + ".act_zero", q.spec, qc_path);
    q.perm = load_permutation(file, name + ".act_perm", q.spec, width, qc_path);
    out.push_back(std::move(q));
  }
  return out;
}

torch::Tensor pack_codes(const torch::Tensor& codes, const QuantSpec& spec) {
  auto u = (codes.to(torch::kInt32) - static_cast<int32_t>(spec.qmin())).to(torch::kUInt8);  // (out, in)
  if (spec.bits > 4) return u.contiguous();
  if (u.size(1) % 2) u = torch::cat({u, torch::zeros({u.size(0), 1}, torch::kUInt8)}, 1);
  const auto lo = u.slice(1, 0, u.size(1), 2), hi = u.slice(1, 1, u.size(1), 2);
  return torch::bitwise_or(lo, torch::bitwise_left_shift(hi, 4)).contiguous();
}

torch::Tensor unpack_codes(const torch::Tensor& packed, const QuantSpec& spec, int64_t in) {
  torch::Tensor u;
  if (spec.bits > 4) {
    u = packed.to(torch::kInt32);
  } else {
    const auto lo = torch::bitwise_and(packed, 0x0F), hi = torch::bitwise_right_shift(packed, 4);
    u = torch::stack({lo, hi}, -1).reshape({packed.size(0), -1}).slice(1, 0, in).to(torch::kInt32);
  }
  return u + static_cast<int32_t>(spec.qmin());
}

void quantized_save(Llama& model, const QuantizedModel& q, const std::string& dir, const std::string& tokenizer_path) {
  StagedDirectory stage(dir);
  const fs::path out = stage.path();
  TensorFileWriter w;
  w.set_metadata("format", kFormat);
  w.set_metadata("version", std::to_string(kVersion));
  w.set_metadata("recipe_name", q.recipe.name);
  w.set_metadata("recipe", q.recipe.source_text);
  std::set<std::string> quantized;
  nlohmann::ordered_json modules = nlohmann::ordered_json::object();
  for (const auto& rec : q.linears) {
    nlohmann::ordered_json m = {{"weights", spec_json(rec.weight_spec)}, {"activations", spec_json(rec.activation_spec)}};
    if (rec.codes.defined()) {
      quantized.insert(rec.module + ".weight");
      w.add(rec.module + ".qweight", pack_codes(rec.codes, rec.weight_spec));
      const int64_t rows = rec.codes.size(0);
      w.add(rec.module + ".scales", rec.weight_qp.scale.reshape({rec.weight_qp.scale.size(0) == 1 ? 1 : rows, -1}));
      w.add(rec.module + ".zeros", rec.weight_qp.zero.reshape({rec.weight_qp.zero.size(0) == 1 ? 1 : rows, -1}));
      m["in_features"] = rec.codes.size(1);
    }
    if (rec.activation_qp.scale.defined()) {
      w.add(rec.module + ".input_scale", rec.activation_qp.scale.flatten());
      w.add(rec.module + ".input_zero", rec.activation_qp.zero.flatten());
    }
    if (rec.activation_perm.defined()) w.add(rec.module + ".input_perm", rec.activation_perm.to(torch::kInt64));
    modules[rec.module] = m;
  }
  nlohmann::ordered_json points = nlohmann::ordered_json::object();
  for (const auto& p : q.points) {
    points[p.point] = spec_json(p.spec);
    if (p.qp.scale.defined()) {
      w.add(p.point + ".act_scale", p.qp.scale.flatten());
      w.add(p.point + ".act_zero", p.qp.zero.flatten());
    }
    if (p.perm.defined()) w.add(p.point + ".act_perm", p.perm.to(torch::kInt64));
  }
  for (const auto& p : model->named_parameters()) {
    if (!quantized.count(p.key())) w.add(p.key(), p.value().detach().to(torch::kCPU, torch::kFloat32));
  }
  nlohmann::ordered_json methods = nlohmann::ordered_json::array();
  for (const auto& m : q.methods) {
    methods.push_back({{"name", m.name}, {"settings", m.settings}, {"state", m.state},
                       {"tensors", nlohmann::json::array()}, {"runtime_unsupported", m.runtime_unsupported}});
    for (const auto& [key, t] : m.tensors) {
      w.add(method_tensor_name(m.name, key), t.detach().to(torch::kCPU).contiguous());
      methods.back()["tensors"].push_back(key);
    }
  }
  w.write((out / "model.safetensors").string());
  const nlohmann::ordered_json config = {{"format", kFormat}, {"version", kVersion}, {"recipe", q.recipe.name},
                                         {"label", q.recipe.label()}, {"methods", methods}, {"modules", modules},
                                         {"points", points}};
  write_file_atomic(out / "quant_config.json", config.dump(2) + "\n");
  write_file_atomic(out / "recipe.toml", q.recipe.source_text);
  for (const auto& m : q.methods) make_method(MethodEntry{m.name, m.settings, q.recipe.source_path})->report(m, out.string());
  write_file_atomic(out / "config.json", model->config().to_hf_json().dump(2) + "\n");
  if (!tokenizer_path.empty()) tokenizer_copy(tokenizer_path, out.string());
  stage.commit();
}

bool is_quantized_dir(const std::string& dir) { return fs::exists(fs::path(dir) / "quant_config.json"); }

Llama quantized_load(const std::string& dir, QuantizedModel* info) {
  const std::string qc_path = (fs::path(dir) / "quant_config.json").string();
  const nlohmann::json qc = json_read_object(qc_path, "quantization config");
  const std::string format = json_value<std::string>(qc, "format", "none", qc_path);
  if (format != kFormat) fail_mismatch(qc_path, "format", kFormat, format);
  const nlohmann::json version = qc.contains("version") ? qc.at("version") : nlohmann::json();
  if (!version.is_number_integer() || version < 1 || version > kVersion) {  // nlohmann compares across int types
    fail_mismatch(qc_path, "version", fmt::format("1 to {} (requantize the float model with this outq: outq quantize "
                  "--model <float model> --recipe {}/recipe.toml --out <new dir>)", kVersion, dir), version.dump());
  }
  Llama model(model_config_read(dir));
  const SafetensorsFile file((fs::path(dir) / "model.safetensors").string());
  torch::NoGradGuard no_grad;
  std::vector<QuantizedLinear> linears;
  OUTQ_CHECK(qc.contains("modules") && qc["modules"].is_object(), qc_path, ": modules: expected an object with the "
             "specs of every linear module, found ", qc.contains("modules") ? qc["modules"].type_name() : "none");
  for (const auto& [module, m] : qc.at("modules").items()) {
    OUTQ_CHECK(m.is_object() && m.contains("weights") && m.contains("activations"), qc_path, ": modules.", module,
               ": expected \"weights\" and \"activations\" specs, found ", m.dump());
    QuantizedLinear rec;
    rec.module = module;
    // The specs are checked like a recipe's (a hand-edited file gets the same errors), and then
    // against the tensors: the directory's metadata is not trusted.
    rec.weight_spec = spec_from_json(m.at("weights"), qc_path + ": " + module + ".weights");
    rec.activation_spec = spec_from_json(m.at("activations"), qc_path + ": " + module + ".activations");
    rec.weight_spec.validate(qc_path + ": " + module + ".weights", true);
    rec.activation_spec.validate(qc_path + ": " + module + ".activations", false);
    torch::Tensor weight = model->linear_weight(module);
    if (file.contains(module + ".qweight")) {
      OUTQ_CHECK(rec.weight_spec.enabled(), qc_path, ": ", module, ".weights: bits = 16 (not quantized), but ",
                 file.path(), " holds integer codes for it (", module, ".qweight); the directory's files disagree");
      const torch::Tensor packed = tensor_from_view(file.get(module + ".qweight"));
      const int64_t in = weight.size(1), cols = rec.weight_spec.bits <= 4 ? (in + 1) / 2 : in;
      if (packed.scalar_type() != torch::kUInt8 || packed.dim() != 2 || packed.size(0) != weight.size(0) || packed.size(1) != cols) {
        fail_mismatch(file.path(), module + ".qweight",
                      fmt::format("U8 of shape [{}, {}] ({}-bit codes for {} input columns, as {} says)", weight.size(0), cols,
                                  rec.weight_spec.bits, in, qc_path),
                      fmt::format("{} of shape {}", std::string(c10::toString(packed.scalar_type())), packed.sizes()));
      }
      rec.codes = unpack_codes(packed, rec.weight_spec, in);
      const auto lo = rec.codes.min().item<int64_t>(), hi = rec.codes.max().item<int64_t>();
      OUTQ_CHECK(lo >= rec.weight_spec.qmin() && hi <= rec.weight_spec.qmax(), file.path(), ": ", module,
                 ".qweight: expected codes in [", rec.weight_spec.qmin(), ", ", rec.weight_spec.qmax(), "] (",
                 rec.weight_spec.bits, "-bit ", rec.weight_spec.symmetric ? "symmetric" : "asymmetric", ", as ", qc_path,
                 " says), found codes in [", lo, ", ", hi, "]");
      const auto scales = tensor_from_view(file.get(module + ".scales")), zeros = tensor_from_view(file.get(module + ".zeros"));
      // One scale and zero point per row and group of the spec's grouping (tensor: [1, 1]; channel:
      // [out, 1]; group: [out, in / group_size]).
      const torch::Tensor grouped = grouped_view(weight, rec.weight_spec);
      const std::vector<int64_t> qp_shape = {grouped.size(0), grouped.size(1)};
      auto check_qparams = [&](const char* name, const torch::Tensor& t) {
        if (t.scalar_type() == torch::kFloat32 && t.sizes() == c10::IntArrayRef(qp_shape)) return;
        fail_mismatch(file.path(), module + name,
                      fmt::format("F32 of shape [{}, {}] ({} weights, as {} says)", qp_shape[0], qp_shape[1],
                                  granularity_name(rec.weight_spec.granularity), qc_path),
                      fmt::format("{} of shape {}", std::string(c10::toString(t.scalar_type())), t.sizes()));
      };
      check_qparams(".scales", scales);
      check_qparams(".zeros", zeros);
      OUTQ_CHECK(torch::isfinite(scales).all().item<bool>() && (scales > 0).all().item<bool>(), file.path(), ": ", module,
                 ".scales: expected finite positive scales, found non-finite or non-positive values");
      rec.weight_qp = {scales.unsqueeze(-1), zeros.unsqueeze(-1)};
      weight.copy_(dequantize(rec.codes, rec.weight_qp, rec.weight_spec));
    } else {
      weight.copy_(tensor_from_view(file.get(module + ".weight")).to(torch::kFloat32));
    }
    rec.activation_qp = load_ranges(file, module + ".input_scale", module + ".input_zero", rec.activation_spec, qc_path);
    rec.activation_perm = load_permutation(file, module + ".input_perm", rec.activation_spec, weight.size(1), qc_path);
    linears.push_back(std::move(rec));
  }
  for (const auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    const bool is_linear = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0 &&
                           qc.at("modules").contains(name.substr(0, name.size() - 7));
    if (!is_linear) p.value().copy_(tensor_from_view(file.get(name)).to(torch::kFloat32));
    expect_finite(p.value(), file.path(), name);
  }
  std::vector<QuantizedPoint> points = load_points(qc, qc_path, file, model);
  std::shared_ptr<const TokenPrefix> prefix;
  std::vector<AppliedMethod> methods = load_methods(qc, qc_path, file, model, &prefix);
  auto aq = attach_activation_quantizer(model, linears, points);
  if (info) {
    info->methods = std::move(methods);
    info->recipe = recipe_parse(read_file(fs::path(dir) / "recipe.toml", "recipe"), (fs::path(dir) / "recipe.toml").string());
    info->linears = std::move(linears);
    info->points = std::move(points);
    info->activations = aq;
    info->prefix = prefix;
  }
  return model;
}

}  // namespace outq
