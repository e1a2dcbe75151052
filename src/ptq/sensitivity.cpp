// Leave-one-in / leave-one-out sensitivity of activation quantizers and the greedy
// mixed-precision suggestion (see sensitivity.h).
#include "outq/ptq/sensitivity.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "outq/core/error.h"
#include "outq/core/log.h"
#include "outq/model/block_schema.h"

namespace outq {
namespace {

// "self_attn.q_proj" -> "q_proj".
std::string leaf(const std::string& relative) { return relative.substr(relative.rfind('.') + 1); }

const std::map<std::string, std::string>& paper_letters() {
  static const std::map<std::string, std::string> m = {
      {"qkv_input", "x (norm output)"}, {"q_proj_output", "q"}, {"k_proj_output", "k"}, {"v_proj_output", "v"},
      {"scores", "s"}, {"probs", "p"}, {"o_input", "c"}, {"o_proj_output", "g"}, {"residual_attn", "u"},
      {"gate_up_input", "x (FFN input)"}, {"down_input", "FFN intermediate"}, {"down_proj_output", "h"},
      {"residual_mlp", "y"}};
  return m;
}

TensorType make_type(const std::string& name, bool linear_input, std::vector<std::string> relative,
                     std::vector<std::string> modules = {}) {
  const auto& letters = paper_letters();
  const auto it = letters.find(name);
  return {name, it == letters.end() ? "" : it->second, linear_input, std::move(relative), std::move(modules)};
}

// The activation targets of a quantized model: (point index, target), linear inputs and points.
std::vector<std::pair<int, ActivationTarget>> targets_of(Llama& model, const QuantizedModel& q) {
  std::vector<std::pair<int, ActivationTarget>> out;
  for (const auto& rec : q.linears)
    if (rec.activation_spec.enabled())
      out.emplace_back(model->point(rec.module + ".input").index,
                       ActivationTarget{rec.activation_spec, rec.activation_qp, rec.activation_perm});
  for (const auto& p : q.points)
    if (p.spec.enabled()) out.emplace_back(model->point(p.point).index, ActivationTarget{p.spec, p.qp, p.perm});
  return out;
}

}  // namespace

std::vector<TensorType> tensor_types() {
  const BlockSchema& schema = block_schema();
  std::vector<TensorType> out;
  for (const auto& slot : schema.slots) {
    std::vector<std::string> inputs;
    for (const auto& l : slot.linears) inputs.push_back(l + ".input");
    out.push_back(make_type(slot.name + "_input", true, inputs, slot.linears));
    for (const auto& l : slot.linears) out.push_back(make_type(leaf(l) + "_output", false, {l + ".output"}));
    if (slot.role == LinearRole::kQkv) {
      out.push_back(make_type("scores", false, {"self_attn.scores"}));
      out.push_back(make_type("probs", false, {"self_attn.probs"}));
    }
    if (slot.role == LinearRole::kAttnOut) out.push_back(make_type(schema.residuals[0], false, {schema.residuals[0]}));
    if (slot.role == LinearRole::kMlpDown) out.push_back(make_type(schema.residuals[1], false, {schema.residuals[1]}));
  }
  return out;
}

std::string mixed_precision_recipe(const Recipe& recipe, const std::vector<std::string>& types, const std::string& name) {
  std::istringstream in(recipe.source_text);
  std::string line, body;
  bool in_tables = false;
  while (std::getline(in, line)) {
    const auto first = line.find_first_not_of(" \t");
    if (first != std::string::npos && line[first] == '[') in_tables = true;
    const bool root_name = !in_tables && first != std::string::npos && line.compare(first, 4, "name") == 0 &&
                           line.find('=') != std::string::npos &&
                           line.substr(first + 4, line.find('=') - first - 4).find_first_not_of(" \t") == std::string::npos;
    if (!root_name) body += line + "\n";
  }
  std::string out = fmt::format("name = \"{}\"\n# {} with {} at 16-bit integer activations (outq sensitivity)\n", name,
                                recipe.name, types.empty() ? std::string("nothing") : fmt::format("{}", fmt::join(types, ", ")));
  out += body;
  const auto all = tensor_types();
  for (const auto& t : types) {
    const auto it = std::find_if(all.begin(), all.end(), [&](const TensorType& x) { return x.name == t; });
    OUTQ_CHECK(it != all.end(), "mixed-precision recipe: unknown tensor type '", t, "'");
    if (it->linear_input) {
      for (const auto& m : it->modules)
        out += fmt::format("\n[[override]]\nmodules = \"model.layers.*.{}\"\nactivations = {{ bits = 16, integer = true }}\n", m);
    } else {
      for (const auto& r : it->relative)
        out += fmt::format("\n[[tensors]]\npoints = \"model.layers.*.{}\"\nactivations = {{ bits = 16, integer = true }}\n", r);
    }
  }
  return out;
}

SensitivityResult sensitivity_analysis(Llama& float_model, const Recipe& recipe, const QuantizeFn& quantize,
                                       const PerplexityFn& perplexity, const SensitivityOptions& o) {
  OUTQ_CHECK(o.tolerance >= 0 && std::isfinite(o.tolerance), "sensitivity tolerance: expected a finite value >= 0, found ",
             o.tolerance);
  SensitivityResult r;
  float_model->observers().clear();
  r.float_perplexity = perplexity(float_model, nullptr);
  auto quantized = quantize(recipe);
  Llama& model = quantized.first;  // named, not a structured binding: lambdas below capture it
  const auto& q = quantized.second;
  const auto targets = targets_of(model, q);
  OUTQ_CHECK(!targets.empty(), recipe.source_path, ": the recipe quantizes no activations; sensitivity analysis needs some");
  // Type and layer of every target.
  const auto types = tensor_types();
  std::map<int, std::pair<size_t, int>> where;  // point index -> (type, layer)
  for (int l = 0; l < model->config().num_hidden_layers; ++l)
    for (size_t t = 0; t < types.size(); ++t)
      for (const auto& rel : types[t].relative) where[model->point(block_module(l, rel)).index] = {t, l};
  std::vector<bool> present(types.size(), false);
  for (const auto& [index, target] : targets) present[where.at(index).first] = true;
  for (size_t t = 0; t < types.size(); ++t)
    if (present[t]) r.types.push_back(types[t].name);
  const TokenPrefix* prefix = q.prefix.get();
  auto evaluate = [&](const std::function<bool(size_t type, int layer)>& keep) {
    model->observers().clear();
    auto aq = std::make_shared<ActivationQuantizer>(model->points().size());
    for (const auto& [index, target] : targets) {
      const auto [t, l] = where.at(index);
      if (keep(t, l)) aq->set(index, target);
    }
    model->observers().attach(aq);
    const double ppl = perplexity(model, prefix);
    model->observers().clear();
    return ppl;
  };
  auto type_index = [&](const std::string& name) {
    return static_cast<size_t>(std::find_if(types.begin(), types.end(), [&](const TensorType& x) { return x.name == name; }) -
                               types.begin());
  };
  r.weights_only_perplexity = evaluate([](size_t, int) { return false; });
  r.all_perplexity = evaluate([](size_t, int) { return true; });
  r.target = r.weights_only_perplexity * (1.0 + o.tolerance);
  for (const auto& name : r.types) {
    const size_t t = type_index(name);
    log_info("sensitivity: {}", name);
    r.leave_one_in.push_back({name, -1, evaluate([&](size_t x, int) { return x == t; })});
    r.leave_one_out.push_back({name, -1, evaluate([&](size_t x, int) { return x != t; })});
  }
  // Most sensitive first: the type whose removal lowers the perplexity most.
  std::vector<SensitivityRow> ranked = r.leave_one_out;
  std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.perplexity < b.perplexity; });
  for (int i = 0; i < std::min<int>(o.per_layer_types, static_cast<int>(ranked.size())); ++i) {
    const size_t t = type_index(ranked[static_cast<size_t>(i)].type);
    for (int l = 0; l < model->config().num_hidden_layers; ++l)
      r.per_layer_out.push_back({ranked[static_cast<size_t>(i)].type, l,
                                 evaluate([&](size_t x, int y) { return !(x == t && y == l); })});
  }
  // Greedy forward selection: each step adds the type whose release (activations in float, the
  // proxy for 16 bits) gives the lowest perplexity together with those already chosen. The ranking
  // is not additive (releasing one tensor can make another's error worse), so the leave-one-out
  // order alone is not used. When the proxy meets the target, the choice is quantized for real
  // with 16-bit integer activations; if that misses, selection continues.
  std::vector<size_t> chosen;
  auto released = [&](size_t x) { return std::find(chosen.begin(), chosen.end(), x) != chosen.end(); };
  const size_t cap = std::min(o.max_suggested > 0 ? static_cast<size_t>(o.max_suggested) : r.types.size(), r.types.size());
  double proxy = r.all_perplexity;
  r.suggested_perplexity = r.all_perplexity;
  while (!(r.suggested_perplexity <= r.target) && chosen.size() < cap) {
    while (!(proxy <= r.target) && chosen.size() < cap) {
      size_t best = types.size();
      double best_ppl = 0;
      for (const auto& name : r.types) {
        const size_t t = type_index(name);
        if (released(t)) continue;
        const double p = evaluate([&](size_t x, int) { return x != t && !released(x); });
        if (best == types.size() || p < best_ppl) best = t, best_ppl = p;
      }
      chosen.push_back(best);
      r.suggested.push_back(types[best].name);
      r.suggested_steps.push_back(proxy = best_ppl);
      log_info("sensitivity: + {} in float: perplexity {:.3f} (target {:.3f})", types[best].name, best_ppl, r.target);
    }
    const std::string text = mixed_precision_recipe(recipe, r.suggested, recipe.name + "-mp");
    auto [m, mq] = quantize(recipe_parse(text, recipe.source_path + " (mixed precision)"));
    r.suggested_perplexity = perplexity(m, mq.prefix.get());
    log_info("sensitivity: {} at 16-bit integer: perplexity {:.3f} (target {:.3f})", fmt::join(r.suggested, ", "),
             r.suggested_perplexity, r.target);
    proxy = r.target + 1;  // if 16 bits missed, select one more
    if (chosen.empty()) break;
  }
  r.reached = r.suggested_perplexity <= r.target;
  r.suggested_recipe = mixed_precision_recipe(recipe, r.suggested, recipe.name + "-mp");
  return r;
}

nlohmann::json SensitivityResult::to_json() const {
  auto rows = [](const std::vector<SensitivityRow>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& x : v) a.push_back({{"type", x.type}, {"layer", x.layer}, {"perplexity", x.perplexity}});
    return a;
  };
  return {{"float_perplexity", float_perplexity}, {"weights_only_perplexity", weights_only_perplexity},
          {"all_perplexity", all_perplexity},     {"target", target},
          {"types", types},                       {"leave_one_in", rows(leave_one_in)},
          {"leave_one_out", rows(leave_one_out)}, {"per_layer_leave_one_out", rows(per_layer_out)},
          {"suggested_16bit", suggested},         {"suggested_steps_float_proxy", suggested_steps},
          {"suggested_perplexity", suggested_perplexity},
          {"reached", reached},                   {"suggested_recipe", suggested_recipe}};
}

}  // namespace outq
