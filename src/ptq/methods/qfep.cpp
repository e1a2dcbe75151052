// QFeP, quantization-free prefix (Yang et al. 2024; methods spec §3.5): a short prefix
// [BOS, context, spike token] whose first occurrence of the spike token "uses up" the activation
// spike. The float model runs the prefix once; its KV cache is stored with the quantized model, and
// evaluation, generation and every later calibration step continue after it, so the quantized
// tokens never carry the spike and the prefix itself is never activation-quantized.
// Prefix search (from the spike statistics of the calibration windows):
//   1. top slot m* = the largest spike ratio
//   2. per sequence the `per_sequence` tokens with the largest token-wise absmax at m* (BOS skipped),
//      each token keeping the largest value seen; the `candidates` largest are the candidates
//   3. context pool: the `context_pool` most frequent tokens of the windows (BOS column skipped)
//   4. for candidate c and context x, probe [BOS, x, c, x, c]: ratio = a_m*(pos 2) / a_m*(pos 4);
//      c's best context maximises it; the prefix is the candidate (with its context) of the largest.
// Settings: candidates = 3, context_pool = 200, per_sequence = 3, or tokens = [1, 17, 9] (fixed ids,
// BOS first) instead of the search. It must come before any other calibrating method.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <map>

#include "methods.h"
#include "outq/core/error.h"
#include "outq/core/log.h"
#include "outq/core/table.h"
#include "outq/model/block_schema.h"
#include "outq/ptq/spike_stats.h"

namespace outq {
namespace {

struct Candidate {
  int32_t token = 0, context = 0;
  double value = 0;  ///< the largest token-wise absmax it reached in calibration
  double ratio = 0;  ///< a(first occurrence) / a(repeat) with its best context
};

class Qfep : public QuantMethod {
 public:
  explicit Qfep(const MethodEntry& entry) : QuantMethod(entry) {
    const MethodSettings settings(entry, {"candidates", "context_pool", "per_sequence", "tokens"});
    candidates_ = settings.whole_number("candidates", 3, 1, 64);
    context_pool_ = settings.whole_number("context_pool", 200, 1, 100000);
    per_sequence_ = settings.whole_number("per_sequence", 3, 1, 64);
    if (settings.has("tokens")) {
      const auto& v = entry.settings.at("tokens");
      OUTQ_CHECK(v.is_array() && !v.empty(), settings.where("tokens"), ": expected a list of token ids (BOS first), found ",
                 v.dump());
      for (const auto& t : v) {
        OUTQ_CHECK(t.is_number_integer() && t.get<int64_t>() >= 0, settings.where("tokens"),
                   ": expected non-negative token ids, found ", t.dump());
        fixed_.push_back(t.get<int32_t>());
      }
    }
    where_tokens_ = settings.where("tokens");
  }

  bool preserves_float_function() const override { return true; }
  bool needs_calibration() const override { return true; }
  const TokenPrefix* prefix() const override { return prefix_.tokens.empty() ? nullptr : &prefix_; }

  void check(const Recipe& recipe, const std::vector<std::string>&,
             const std::vector<const QuantMethod*>& earlier) const override {
    for (const auto* m : earlier)
      OUTQ_CHECK(!m->needs_calibration() && !m->prefix(), recipe.source_path, ": methods: ", m->name(),
                 " calibrates before qfep, so it would measure the spikes the prefix removes; expected qfep listed first");
  }

  void calibrate(Llama& model, const CalibrationData& data) override {
    OUTQ_CHECK(data.bos_id >= 0, "qfep: the prefix starts with BOS, but this model's tokenizer has no BOS token "
               "(bos_id = ", data.bos_id, "); expected a tokenizer with a BOS token");
    const int64_t max_pos = model->config().max_position_embeddings;
    if (!fixed_.empty()) {
      OUTQ_CHECK(fixed_.front() == data.bos_id, where_tokens_, ": expected BOS (id ", data.bos_id, ") first, found ",
                 fixed_.front());
      OUTQ_CHECK(static_cast<int64_t>(fixed_.size()) < max_pos, where_tokens_, ": a prefix of ", fixed_.size(),
                 " tokens is not shorter than the context of ", max_pos, " positions");
      prefix_ = compute_token_prefix(model, fixed_);
      return;
    }
    OUTQ_CHECK(max_pos > 3, "qfep: a 3-token prefix needs a context longer than 3 positions, found ", max_pos);
    const SpikeStats stats = measure_spikes(model, data, "qfep spike calibration");
    const SlotSpikes& top = stats.top();
    top_module_ = top.module;
    top_ratio_ = top.ratio;
    // Candidates: the tokens with the largest absmax at the top slot, BOS skipped.
    std::map<int32_t, double> seen;
    const auto a = top.absmax.masked_fill(stats.tokens == data.bos_id, -1.0f);
    const auto top_pos = std::get<1>(a.topk(std::min<int64_t>(per_sequence_, a.size(1)), 1));
    for (int64_t s = 0; s < a.size(0); ++s)
      for (int64_t j = 0; j < top_pos.size(1); ++j) {
        const int64_t t = top_pos[s][j].item<int64_t>();
        const float v = a[s][t].item<float>();
        if (v < 0) continue;
        const auto id = static_cast<int32_t>(stats.tokens[s][t].item<int64_t>());
        seen[id] = std::max(seen[id], static_cast<double>(v));
      }
    std::vector<Candidate> cands;
    for (const auto& [id, v] : seen) cands.push_back({id, 0, v, 0});
    std::sort(cands.begin(), cands.end(), [](const auto& x, const auto& y) { return x.value > y.value; });
    if (static_cast<int64_t>(cands.size()) > candidates_) cands.resize(static_cast<size_t>(candidates_));
    OUTQ_CHECK(!cands.empty(), "qfep: the calibration windows have no token other than BOS to search a prefix with");
    // Context pool: the most frequent tokens (BOS column skipped).
    const auto body = data.windows.slice(1, 1).reshape({-1});
    const auto counts = torch::bincount(body.masked_select(body != data.bos_id), {}, model->config().vocab_size);
    const int64_t pool = std::min<int64_t>(context_pool_, (counts > 0).sum().item<int64_t>());
    const auto contexts = std::get<1>(counts.topk(pool));
    // Probe every candidate with every context.
    for (auto& c : cands) {
      const auto probes = torch::stack({torch::full({pool}, data.bos_id, torch::kInt64), contexts,
                                        torch::full({pool}, c.token, torch::kInt64), contexts,
                                        torch::full({pool}, c.token, torch::kInt64)}, 1);
      CalibrationData probe{probes, std::max<int64_t>(data.batch_size, 64), data.bos_id, nullptr};
      const SpikeStats ps = measure_spikes(model, probe, fmt::format("qfep probes for token {}", c.token));
      const SlotSpikes* slot = nullptr;
      for (const auto& s : ps.slots)
        if (s.module == top.module) slot = &s;
      OUTQ_ASSERT(slot != nullptr, "qfep: the top slot is measured in the probes");
      const auto ratio = slot->absmax.select(1, 2).to(torch::kFloat64) /
                         slot->absmax.select(1, 4).to(torch::kFloat64).clamp_min(1e-30);
      const int64_t best = ratio.argmax().item<int64_t>();
      c.context = static_cast<int32_t>(contexts[best].item<int64_t>());
      c.ratio = ratio[best].item<double>();
    }
    searched_ = cands;
    const auto best = std::max_element(cands.begin(), cands.end(), [](const auto& x, const auto& y) { return x.ratio < y.ratio; });
    prefix_ = compute_token_prefix(model, {data.bos_id, best->context, best->token});
    Table t({"candidate token", "best context", "calibration peak |x|", "first / repeat"});
    for (const auto& c : cands)
      t.add_row({std::to_string(c.token), std::to_string(c.context), fmt::format("{:.2f}", c.value),
                 fmt::format("{:.2f}{}", c.ratio, &c == &*best ? "  <- prefix" : "")});
    log_info("qfep prefix search at {} (spike ratio {:.1f}):\n{}prefix ids: {}", top.module, top.ratio, t.render(),
             fmt::join(prefix_.tokens, " "));
  }

  AppliedMethod record() const override {
    AppliedMethod m = QuantMethod::record();
    nlohmann::json cands = nlohmann::json::array();
    for (const auto& c : searched_)
      cands.push_back({{"token", c.token}, {"context", c.context}, {"peak", c.value}, {"ratio", c.ratio}});
    m.state = {{"tokens", prefix_.tokens}, {"search", fixed_.empty()}, {"candidates", cands}};
    if (!top_module_.empty()) m.state["top_module"] = top_module_, m.state["top_ratio"] = top_ratio_;
    for (size_t l = 0; l < prefix_.cache.keys.size(); ++l) {
      m.tensors[fmt::format("cache.layers.{}.keys", l)] = prefix_.cache.keys[l].contiguous();
      m.tensors[fmt::format("cache.layers.{}.values", l)] = prefix_.cache.values[l].contiguous();
    }
    m.tensors["last_logits"] = prefix_.last_logits.contiguous();
    return m;
  }

  // The prefix's cache comes back from the saved tensors, checked against the model's shapes.
  void replay(Llama& model, const AppliedMethod& saved) override {
    const auto& c = model->config();
    OUTQ_CHECK(saved.state.contains("tokens") && saved.state["tokens"].is_array() && !saved.state["tokens"].empty(),
               "qfep record: expected the prefix token ids, found ", saved.state.dump());
    prefix_ = TokenPrefix{};
    for (const auto& t : saved.state["tokens"]) {
      OUTQ_CHECK(t.is_number_integer() && t.get<int64_t>() >= 0 && t.get<int64_t>() < c.vocab_size,
                 "qfep record: expected token ids in [0, ", c.vocab_size, "), found ", t.dump());
      prefix_.tokens.push_back(t.get<int32_t>());
    }
    const int64_t P = prefix_.length();
    OUTQ_CHECK(P < c.max_position_embeddings, "qfep record: a prefix of ", P, " tokens does not fit a context of ",
               c.max_position_embeddings, " positions");
    const std::vector<int64_t> shape = {1, c.num_key_value_heads, P, c.head_dim()};
    auto get = [&](const std::string& key, const std::vector<int64_t>& expect) {
      const auto it = saved.tensors.find(key);
      OUTQ_CHECK(it != saved.tensors.end() && it->second.sizes().vec() == expect, "qfep record: expected methods.qfep.",
                 key, " of shape ", fmt::format("{}", fmt::join(expect, "x")), ", found ",
                 it == saved.tensors.end() ? std::string("none") : fmt::format("{}", it->second.sizes()));
      return it->second.to(torch::kFloat32);
    };
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      prefix_.cache.keys.push_back(get(fmt::format("cache.layers.{}.keys", l), shape));
      prefix_.cache.values.push_back(get(fmt::format("cache.layers.{}.values", l), shape));
    }
    prefix_.cache.length = P;
    prefix_.last_logits = get("last_logits", {c.vocab_size});
  }

 private:
  int64_t candidates_ = 3, context_pool_ = 200, per_sequence_ = 3;
  std::vector<int32_t> fixed_;
  std::string where_tokens_;
  TokenPrefix prefix_;
  std::vector<Candidate> searched_;
  std::string top_module_;
  double top_ratio_ = 0;
};

}  // namespace

std::unique_ptr<QuantMethod> make_qfep(const MethodEntry& entry) { return std::make_unique<Qfep>(entry); }

}  // namespace outq
