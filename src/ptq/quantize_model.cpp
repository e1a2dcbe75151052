// Recipe application: RTN / true-sequential GPTQ on weights, then static activation ranges
// (calibrated, or a QAT model's learned clips).
#include "outq/ptq/quantize_model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>

#include "outq/core/error.h"
#include "outq/core/log.h"
#include "outq/core/progress.h"
#include "outq/model/block_schema.h"
#include "outq/ptq/method.h"
#include "outq/ptq/peg_permutation.h"

namespace outq {
namespace {

// Thrown by HessianCapture once the last input it needs has been seen, so that the rest of the
// layer (everything after that linear's input) is not computed for nothing.
struct LayerInputsCaptured {};

// Captures the Hessian of selected input points while a decoder layer runs; stops the layer's
// forward at `last_module`'s input.
class HessianCapture : public Observer {
 public:
  std::map<std::string, HessianAccumulator> by_module;  ///< keyed by module name
  std::string last_module;
  torch::Tensor observe(const ObservationPoint& point, const torch::Tensor& x) override {
    if (point.kind == PointKind::kLinearInput) {
      auto it = by_module.find(point.module);
      if (it != by_module.end()) it->second.add(x);
      if (point.module == last_module) throw LayerInputsCaptured{};
    }
    return x;
  }
};

// Runs decoder layer `l` over hidden states X (n, T, C) in batches, after the prefix's cached keys
// and values of that layer when there is a prefix; returns its outputs, or an undefined tensor when
// an observer ended the batches' forward early (a HessianCapture with all it needs).
torch::Tensor run_layer(Llama& model, int l, const torch::Tensor& X, int64_t batch, const ObserverList& observers,
                        const TokenPrefix* prefix) {
  torch::NoGradGuard no_grad;
  const int64_t start = prefix ? prefix->length() : 0;
  auto [cos, sin] = model->rope(start, X.size(1));
  std::vector<torch::Tensor> outs;
  for (int64_t b = 0; b < X.size(0); b += batch) {
    const auto x = X.slice(0, b, std::min(b + batch, X.size(0)));
    KVCache cache = prefix ? prefix->for_batch(x.size(0)) : KVCache{};  // views, extended per batch
    const auto i = static_cast<size_t>(l);
    try {
      outs.push_back(model->layer(l).forward(x, cos, sin, prefix ? &cache.keys[i] : nullptr,
                                            prefix ? &cache.values[i] : nullptr, observers));
    } catch (const LayerInputsCaptured&) {
    }
  }
  return outs.size() == 0 ? torch::Tensor() : torch::cat(outs, 0);
}

void store(QuantizedLinear& rec, Llama& model, const QuantizedWeight& q) {
  torch::NoGradGuard no_grad;
  model->linear_weight(rec.module).copy_(q.dequantized);
  rec.codes = q.codes;
  rec.weight_qp = q.qp;
}

void gptq_all(Llama& model, const Recipe& recipe, std::vector<QuantizedLinear>& recs, const CalibrationData& data) {
  torch::NoGradGuard no_grad;
  std::map<std::string, QuantizedLinear*> by_name;
  for (auto& r : recs) by_name[r.module] = &r;
  const int L = model->config().num_hidden_layers;
  const int64_t batch = recipe.calibration.batch_size;
  // Sub-steps of a block: one per schema slot ("true sequential"), or all slots at once. The
  // linears of a slot share their input and so one Hessian.
  std::vector<std::vector<const ActivationSlot*>> steps;
  for (const auto& slot : block_schema().slots) {
    if (recipe.gptq.true_sequential || steps.empty()) steps.emplace_back();
    steps.back().push_back(&slot);
  }
  Progress progress("gptq", static_cast<int64_t>(L * block_schema().linears().size()), "modules");
  const TokenPrefix* prefix = data.prefix;
  torch::Tensor X = model->model->embed_tokens->forward(prefix ? tokens_after_prefix(model, data.windows, *prefix)
                                                               : data.windows);  // (n, T, C)
  for (int l = 0; l < L; ++l) {
    for (const auto& step : steps) {
      auto capture = std::make_shared<HessianCapture>();
      for (const ActivationSlot* slot : step) capture->by_module[block_module(l, slot->linears.front())];
      capture->last_module = block_module(l, step.back()->linears.front());
      ObserverList observers;
      observers.attach(capture);
      run_layer(model, l, X, batch, observers, prefix);
      for (const ActivationSlot* slot : step) {
        const torch::Tensor H = capture->by_module.at(block_module(l, slot->linears.front())).hessian();
        for (const auto& name : slot->linears) {
          QuantizedLinear& rec = *by_name.at(block_module(l, name));
          if (rec.weight_spec.enabled()) {
            store(rec, model, gptq_quantize(model->linear_weight(rec.module), H, rec.weight_spec, recipe.gptq, rec.module));
          }
          progress.advance();
        }
      }
    }
    X = run_layer(model, l, X, batch, ObserverList{}, prefix);
  }
  progress.finish();
}

QuantizedWeight copy_of(const QuantizedWeight& q) {
  auto copy = [](const torch::Tensor& t) { return t.defined() ? t.clone() : t; };
  return {copy(q.dequantized), copy(q.codes), {copy(q.qp.scale), copy(q.qp.zero)}};
}

// gptq_all, or the weights of an identical earlier run from `cache` (stored there when new).
void gptq_cached(Llama& model, const Recipe& recipe, QuantizedModel& out, const CalibrationData& data, GptqCache* cache) {
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t key = cache ? GptqCache::key(model, recipe, out.linears, data) : 0;
  if (const GptqCache::Entry* hit = cache ? cache->find(key) : nullptr) {
    std::map<std::string, QuantizedLinear*> by_name;
    for (auto& r : out.linears) by_name[r.module] = &r;
    for (const auto& [module, q] : hit->weights) store(*by_name.at(module), model, copy_of(q));
    out.gptq_seconds = hit->seconds;
    out.gptq_reused = true;
    log_info("gptq: the weights of an identical earlier run (same weights, weight specs, calibration and options), "
             "{:.1f}s not repeated", hit->seconds);
    return;
  }
  gptq_all(model, recipe, out.linears, data);
  out.gptq_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!cache) return;
  GptqCache::Entry entry;
  entry.seconds = out.gptq_seconds;
  for (const auto& rec : out.linears)
    if (rec.weight_spec.enabled())
      entry.weights.emplace_back(rec.module, copy_of({model->linear_weight(rec.module).detach(), rec.codes, rec.weight_qp}));
  cache->put(key, std::move(entry));
}

bool calibrated(const QuantSpec& s) { return s.enabled() && !s.dynamic && s.range != RangeMethod::kLearned; }

QParams learned_qparams(const Recipe& recipe, const QuantizedLinear& rec, const LearnedRanges* learned) {
  OUTQ_CHECK(learned != nullptr, recipe.source_path, ": ", rec.module,
             " activations use range = \"learned\"; expected a model trained with qat.mode = qat, qat+kurtosis, lsq or lsq+kurtosis "
             "(its directory has clips.json), found a model without learned clips");
  const auto it = learned->find(rec.module);
  OUTQ_CHECK(it != learned->end(), recipe.source_path, ": ", rec.module,
             " activations use range = \"learned\"; expected clips.json to have an entry for it, found none");
  if (it->second.bits != rec.activation_spec.bits) {
    log_warn("{}: {} clips were learned for {}-bit inputs; using them as the range of a {}-bit quantizer", recipe.name,
             rec.module, it->second.bits, rec.activation_spec.bits);
  }
  return qparams_from_learned(it->second, rec.activation_spec);
}

// A weight on its learned grid; the recipe's spec for it must be the one it was trained with.
QuantizedWeight learned_weight(Llama& model, const Recipe& recipe, const QuantizedLinear& rec, const LearnedWeights& lw) {
  const QuantSpec want = lw.spec(), &have = rec.weight_spec;
  if (have.bits != want.bits || !have.symmetric || have.granularity != want.granularity ||
      (want.granularity == Granularity::kGroup && have.group_size != want.group_size)) {
    fail_mismatch(recipe.source_path, rec.module + " weights",
                  want.describe() + " (the spec its steps were trained for, weights.algorithm = \"learned\")", have.describe());
  }
  const auto it = lw.steps.find(rec.module);
  OUTQ_CHECK(it != lw.steps.end(), recipe.source_path, ": ", rec.module, ": expected learned weight steps for it (",
             kLearnedWeightsFile, "), found none");
  const auto w = model->linear_weight(rec.module).detach();
  auto [codes, dequantized] = learned_weight_quantize(w, it->second, want, std::string(kLearnedWeightsFile) + ": " + rec.module);
  QParams qp{it->second.reshape({w.size(0), it->second.size(1), 1}).clone(), torch::zeros({w.size(0), it->second.size(1), 1})};
  return {dequantized, codes, qp};
}

// The quantized observation points other than linear inputs (full_integer, [[tensors]]): specs
// checked against each point's shape; a [[tensors]] glob must name at least one such point.
std::vector<QuantizedPoint> plan_points(Llama& model, const Recipe& recipe) {
  std::vector<std::string> names;
  for (const auto& p : model->points())
    if (p.kind != PointKind::kLinearInput) names.push_back(p.name);
  for (const auto& t : recipe.tensors) {
    if (!glob_matches(t.pattern, names).empty()) continue;
    for (const auto& p : model->points())
      OUTQ_CHECK(!(p.kind == PointKind::kLinearInput && glob_matches(t.pattern, {p.name}).size() == 1), t.origin,
                 ": tensors.points: '", t.pattern, "' names linear inputs (", p.name, "); expected other tensors "
                 "(linear inputs take [activations] and [[override]] modules = \"", p.module, "\")");
    throw Error(fmt::format("{}: tensors.points: expected a glob on tensor names such as {}, {}, {} or {}; '{}' names none",
                            t.origin, model->points()[1].name, block_prefix(0) + ".residual_mlp",
                            block_prefix(0) + ".self_attn.scores", block_prefix(0) + ".self_attn.probs", t.pattern));
  }
  std::vector<QuantizedPoint> out;
  for (const auto& p : model->points()) {
    if (p.kind == PointKind::kLinearInput) continue;
    QuantizedPoint q{p.name, recipe.point_spec(p.name), {}, {}};
    if (!q.spec.enabled()) continue;
    // Attention scores and probabilities have no channel dimension: a per-embedding-group default
    // (full_integer) quantizes them per tensor; only an explicit [[tensors]] entry asking for PEG
    // there is an error.
    bool named = false;
    for (const auto& t : recipe.tensors) named = named || !glob_matches(t.pattern, {p.name}).empty();
    if (p.kind == PointKind::kAttention && q.spec.granularity == Granularity::kPeg && !named) {
      q.spec.granularity = Granularity::kTensor;
      q.spec.peg_groups = 0;
      q.spec.peg_permute = q.spec.peg_shared = false;
    }
    const std::string where = recipe.source_path + ": " + p.name + " activations";
    q.spec.validate(where, false);
    OUTQ_CHECK(q.spec.range != RangeMethod::kLearned, where, ": range = \"learned\" is for linear inputs (clips.json); "
               "expected minmax, percentile or mse");
    if (q.spec.granularity == Granularity::kPeg) {
      OUTQ_CHECK(p.kind != PointKind::kAttention, where, ": granularity: expected tensor or token for attention scores "
                 "and probabilities (their last dimension is the key position, not a channel), found peg");
      const int64_t width =
          p.kind == PointKind::kLinearOutput ? model->linear_weight(p.module).size(0) : model->config().hidden_size;
      if (q.spec.peg_groups > width)
        fail_mismatch(where, "peg_groups", fmt::format("at most the tensor's width {} (one channel per group)", width),
                      std::to_string(q.spec.peg_groups));
    }
    out.push_back(std::move(q));
  }
  return out;
}

}  // namespace

QuantizedModel quantize_model(Llama& model, const Recipe& recipe, const TokenShard* calib, int32_t bos_id,
                              const LearnedRanges* learned, const LearnedWeights* learned_weights, GptqCache* gptq_cache) {
  const auto t0 = std::chrono::steady_clock::now();
  QuantizedModel out;
  out.recipe = recipe;
  const std::vector<std::string> modules = model->linear_modules();
  // Outlier methods: constructed (settings checked) and checked against the recipe and each other
  // before any work.
  const auto methods = make_methods(recipe);
  if (recipe.algorithm == WeightAlgorithm::kLearned) {
    OUTQ_CHECK(learned_weights != nullptr, recipe.source_path, ": weights.algorithm = \"learned\": expected a model trained "
               "with qat.weight_bits (its directory has ", kLearnedWeightsFile, "), found a model without learned weight steps");
    OUTQ_CHECK(methods.empty(), recipe.source_path, ": weights.algorithm = \"learned\" quantizes the weights as they were "
               "trained; expected no methods (they would change the weights first), found ", methods.size());
  }
  std::vector<const QuantMethod*> earlier;
  bool methods_need_data = false;
  for (const auto& m : methods) {
    m->check(recipe, modules, earlier);
    earlier.push_back(m.get());
    methods_need_data = methods_need_data || m->needs_calibration();
  }
  for (const auto& o : recipe.overrides) {
    if (glob_matches(o.pattern, modules).empty()) {
      log_warn("recipe {}: override '{}' matches no module (modules are named like {}, {}, ...)", recipe.name, o.pattern,
               modules.front(), modules.back());
    }
  }
  for (const auto& m : modules) {
    QuantizedLinear rec;
    rec.module = m;
    rec.weight_spec = recipe.weight_spec(m);
    rec.activation_spec = recipe.activation_spec(m);
    rec.weight_spec.validate(recipe.source_path + ": " + m + " weights", true);
    rec.activation_spec.validate(recipe.source_path + ": " + m + " activations", false);
    const auto w = model->linear_weight(m);
    if (rec.weight_spec.granularity == Granularity::kGroup && w.size(1) % rec.weight_spec.group_size != 0) {
      fail_mismatch(recipe.source_path, m + " weights.group_size",
                    fmt::format("a divisor of the input width {}", w.size(1)), std::to_string(rec.weight_spec.group_size));
    }
    if (rec.activation_spec.enabled() && rec.activation_spec.granularity == Granularity::kPeg &&
        rec.activation_spec.peg_groups > w.size(1)) {
      fail_mismatch(recipe.source_path, m + " activations.peg_groups",
                    fmt::format("at most the input width {} (one channel per group)", w.size(1)),
                    std::to_string(rec.activation_spec.peg_groups));
    }
    if (rec.activation_spec.enabled() && rec.activation_spec.range == RangeMethod::kLearned) {
      rec.activation_qp = learned_qparams(recipe, rec, learned);
    }
    out.linears.push_back(rec);
  }
  out.points = plan_points(model, recipe);
  const bool needs_data = recipe.algorithm == WeightAlgorithm::kGptq || recipe.needs_calibration() || methods_need_data;
  OUTQ_CHECK(!needs_data || calib != nullptr, recipe.source_path, ": this recipe needs calibration data (GPTQ, static "
             "activation ranges or a calibrating method); expected a calibration shard (--calib or the prepared data's "
             "train split)");
  // Calibration windows, and after them the held-out windows a selecting method evaluates on (the
  // first windows are the same with or without them).
  CalibrationData data, holdout;
  data.batch_size = holdout.batch_size = recipe.calibration.batch_size;
  data.bos_id = holdout.bos_id = bos_id;
  int64_t held_out = 0;
  for (const auto& m : methods) held_out = std::max(held_out, m->holdout_windows());
  if (needs_data) {
    CalibrationOptions co = recipe.calibration;
    co.seq_len = std::min<int64_t>(co.seq_len, model->config().max_position_embeddings);
    co.windows += held_out;
    const torch::Tensor all = calibration_windows(*calib, co, bos_id);
    data.windows = all.slice(0, 0, recipe.calibration.windows);
    holdout.windows = all.slice(0, recipe.calibration.windows);
  }
  model->observers().clear();
  // Each method calibrates on the float model as the methods before it left it (after the prefix
  // an earlier method set), then transforms it; then every method may change the per-linear plan.
  for (const auto& m : methods) {
    if (m->needs_calibration()) m->calibrate(model, data);
    m->transform(model);
    if (const TokenPrefix* p = m->prefix()) {
      out.prefix = std::make_shared<TokenPrefix>(*p);
      data.prefix = holdout.prefix = out.prefix.get();
    }
  }
  for (const auto& m : methods) m->plan(out.linears);
  if (recipe.algorithm == WeightAlgorithm::kGptq) {
    gptq_cached(model, recipe, out, data, gptq_cache);
  } else if (recipe.algorithm == WeightAlgorithm::kLearned) {
    for (auto& rec : out.linears)
      if (rec.weight_spec.enabled()) store(rec, model, learned_weight(model, recipe, rec, *learned_weights));
  } else {
    for (auto& rec : out.linears)
      if (rec.weight_spec.enabled()) store(rec, model, rtn_quantize(model->linear_weight(rec.module), rec.weight_spec));
  }
  // PEG permutations and static activation ranges, measured on the weight-quantized model with
  // float activations.
  set_peg_permutations(model, out.linears, out.points, data);
  bool any_static = false;
  auto calibrator = std::make_shared<RangeCalibrator>(model->points().size());
  for (const auto& rec : out.linears) {
    if (calibrated(rec.activation_spec)) {
      calibrator->watch(model->point(rec.module + ".input").index, rec.activation_spec, rec.activation_perm);
      any_static = true;
    }
  }
  for (const auto& p : out.points) {
    if (calibrated(p.spec)) {
      calibrator->watch(model->point(p.point).index, p.spec, p.perm);
      any_static = true;
    }
  }
  if (any_static) {
    model->observers().attach(calibrator);
    Progress progress("calibration", data.windows.size(0), "windows");
    run_windows(model, data.windows, data.batch_size, &progress, data.prefix);
    progress.finish();
    model->observers().clear();
    for (auto& rec : out.linears) {
      if (calibrated(rec.activation_spec)) {
        rec.activation_qp = calibrator->qparams(model->point(rec.module + ".input").index);
      }
    }
    for (auto& p : out.points)
      if (calibrated(p.spec)) p.qp = calibrator->qparams(model->point(p.point).index);
  }
  for (const auto& m : methods)
    if (m->holdout_windows() > 0) m->select(model, out, holdout);
  for (const auto& m : methods) out.methods.push_back(m->record());
  out.activations = attach_activation_quantizer(model, out.linears, out.points);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace outq
