// report.md and report.json of `outq study`, and the headline and conclusions drawn from them.
#include "outq/study/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/table.h"
#include "report_internal.h"

namespace outq {

using namespace study_report;

namespace {

std::string image(const json& results, const std::string& key, const std::string& alt) {
  const json& plots = results.value("plots", json::object());
  if (!plots.contains(key)) return fmt::format("*({}: not drawn — gnuplot missing)*\n", alt);
  return fmt::format("![{}]({})\n", alt, plots.at(key).get<std::string>());
}

std::string setup_section(const json& r) {
  const json& s = r.at("setup");
  std::string out = "## Setup\n\n";
  Table t({"item", "value"});
  t.add_row({"config", r.value("config_source", "embedded default")});
  t.add_row({"model", fmt::format("{} parameters: hidden {}, {} layers, {} heads, MLP {}, vocabulary {}",
                                  format_count(s.at("parameters").get<long long>()), s.at("hidden_size").get<int>(),
                                  s.at("layers").get<int>(), s.at("heads").get<int>(), s.at("intermediate_size").get<int>(),
                                  s.at("vocab_size").get<int>())});
  t.add_row({"corpus", s.at("corpus").get<std::string>()});
  t.add_row({"training", fmt::format("{} steps x {} tokens = {} tokens per model, seed {}", s.at("steps").get<long long>(),
                                     format_count(s.at("tokens_per_step").get<long long>()),
                                     format_count(s.at("train_tokens").get<long long>()), s.at("seed").get<long long>())});
  t.add_row({"QAT model", fmt::format("mode {}, {}-bit learned clips (init {}), kurtosis lambda {} ({} over tokens)",
                                      s.at("qat_mode").get<std::string>(), s.at("qat_bits").get<int>(),
                                      s.at("clip_init_from").get<std::string>(), s.at("kurtosis_lambda").get<double>(),
                                      s.at("kurtosis_reduction").get<std::string>())});
  if (s.contains("finetune")) {
    const json& f = s.at("finetune");
    std::string set;
    for (const auto& x : f.at("set")) set += (set.empty() ? "" : ", ") + x.get<std::string>();
    t.add_row({"QAT fine-tune", fmt::format("from the float baseline's weights: {} steps ({:.0f}% of its training) = {} "
                                            "tokens, settings {}", f.at("steps").get<long long>(),
                                            100 * f.at("fraction").get<double>(), format_count(f.at("tokens").get<long long>()),
                                            set)});
  }
  const bool sample = r.contains("study") && r.at("study").value("eval_tokens", 0) > 0;
  t.add_row({"evaluation", fmt::format("test split{}, {} tokens per evaluation, windows of {}; the standard error over "
                                       "windows is printed with every perplexity ({:.2f} on the float baseline's {:.2f}); "
                                       "KL against each model's float logits, computed once per model",
                                       sample ? " (a sample, study.eval_tokens: its size is traded for time)" : "",
                                       format_count(s.at("test_tokens").get<long long>()), s.at("seq_len").get<long long>(),
                                       s.value("float_ppl_se", 0.0), s.value("float_ppl", 0.0))});
  if (s.value("gptq_evaluations", 0) > 0)
    t.add_row({"shared work", fmt::format("{} of {} GPTQ evaluations reused an identical GPTQ run of an earlier recipe (same "
                                          "weights, weight spec, calibration and options: only the activations differ), and the "
                                          "integer-runtime runs reuse the evaluations' (results are the same bit for bit)",
                                          s.at("gptq_shared").get<int>(), s.at("gptq_evaluations").get<int>())});
  t.add_row({"machine", fmt::format("{} threads, integer kernels: {}", s.at("threads").get<int>(), s.at("isa").get<std::string>())});
  out += t.render_markdown();
  if (r.contains("config")) {
    out += "\n<details><summary>Effective configuration (every key)</summary>\n\n```toml\n";
    for (const auto& [section, keys] : r.at("config").items()) {
      out += fmt::format("[{}]\n", section);
      for (const auto& [key, value] : keys.items()) out += fmt::format("{} = {}\n", key, value.dump());
    }
    out += "```\n</details>\n";
  }
  return out;
}

std::string training_section(const json& r) {
  std::string out = "## Training\n\n";
  if (r.at("setup").contains("finetune"))
    out += "The QAT fine-tune starts from the float baseline's weights (fresh optimizer and schedule); its tokens are "
           "counted on top of the baseline's, and its curve continues the baseline's.\n\n";
  Table t({"model", "mode", "weight QAT", "steps", "training tokens", "val perplexity", "tokens/s", "time"});
  for (const auto& m : r.at("models")) {
    const json& tr = m.at("train");
    const int wbits = m.value("weight_bits", 0);
    const long long tokens = tr.value("tokens", 0LL), base = tr.value("base_tokens", 0LL);
    t.add_row({m.at("label").get<std::string>(), m.at("mode").get<std::string>(), wbits ? fmt::format("W{}", wbits) : "-",
               std::to_string(tr.at("steps").get<long long>()),
               base ? fmt::format("{} + {}", format_count(base), format_count(tokens)) : format_count(tokens),
               ppl(tr.at("val_ppl").get<double>()),
               fmt::format("{:.0f}{}", tr.at("tokens_per_second").get<double>(),
                           tr.value("ranks", 1) > 1 ? fmt::format(" ({} ranks)", tr.value("ranks", 1)) : ""),
               format_duration(tr.at("seconds").get<double>())});
  }
  return out + t.render_markdown() + "\n" + image(r, "curves", "validation perplexity during training");
}

std::string outliers_section(const json& r) {
  std::string out =
      "## Outliers\n\nStatistics of the inputs of the quantized linear layers (q/k/v, attention output, gate/up, "
      "down projection) on validation tokens. Outlier channels: channels whose mean |x| is more than 6x the "
      "layer's median channel.\n\n";
  Table t({"model", "outlier channels", "largest |x|", "mean kurtosis", "max kurtosis", "max spike ratio",
           "weight in-channel max/median"});
  for (const auto& m : r.at("models")) {
    const json& a = m.at("analysis");
    t.add_row({m.at("label").get<std::string>(), std::to_string(a.at("outlier_channels").get<long long>()),
               fmt::format("{:.1f}", a.at("max_abs").get<double>()), fmt::format("{:.1f}", a.at("kurtosis_mean").get<double>()),
               fmt::format("{:.1f}", a.at("kurtosis_max").get<double>()), fmt::format("{:.1f}", a.at("spike_ratio_max").get<double>()),
               fmt::format("{:.2f}", a.at("weight_in_max_median").get<double>())});
  }
  out += t.render_markdown() + "\n";
  for (const auto& m : r.at("models")) {
    const std::string id = m.at("id");
    out += fmt::format(
        "**{}** — heat map of |x| at the most outlier-prone input, spikes per token, weight magnitudes per channel, "
        "outlier channels during training:\n\n",
        m.at("label").get<std::string>());
    for (const char* p : {"heatmap", "spikes", "weights", "emergence"}) out += image(r, id + "-" + p, id + " " + p);
    out += "\n";
  }
  return out;
}

std::string results_section(const json& r) {
  const auto& models = r.at("models");
  std::vector<std::string> header = {"recipe", "weights", "activations"};
  for (const auto& m : models)
    for (const char* c : {"ppl", "vs own float", "KL", "top-1"}) header.push_back(fmt::format("{} {}", m.at("id").get<std::string>(), c));
  Table t(header);
  std::vector<std::string> order = {"float"};
  for (const auto& name : r.at("study").at("recipes")) order.push_back(name);
  for (const auto& recipe : order) {
    std::vector<std::string> cells = {recipe, "", ""};
    for (const auto& m : models) {
      const std::string id = m.at("id");
      const json* e = find_eval(r, id, recipe);
      if (e == nullptr) {  // skipped: the recipe does not apply to this model
        cells.insert(cells.end(), {"n/a", "", "", ""});
        continue;
      }
      cells[1] = e->at("weights").get<std::string>();
      cells[2] = e->at("activations").get<std::string>();
      const double own = eval_ppl(r, id, "float");
      cells.push_back(ppl_se(*e));
      cells.push_back(recipe == "float" ? "" : pct(e->at("perplexity").get<double>() / own));
      cells.push_back(e->contains("kl") ? fmt::format("{:.4f}", e->at("kl").get<double>()) : "");
      cells.push_back(e->contains("top1") ? fmt::format("{:.1f}%", 100 * e->at("top1").get<double>()) : "");
    }
    t.add_row(cells);
  }
  std::string out =
      "## All recipes\n\nPerplexity on the test split, ± its standard error over the evaluation's windows; KL divergence and top-1 agreement against the same model "
      "unquantized (weights and activations in float). Simulated quantization (fake-quant in float); the integer "
      "runtime's own numbers follow below. n/a: the recipe needs learned clip ranges (QAT models) or learned weight steps "
      "(weight-QAT models), or is not among the fine-tune's study.finetune_recipes.\n\n";
  return out + t.render_markdown() + "\n" + image(r, "recipes", "perplexity per recipe");
}

std::string runtime_section(const json& r) {
  std::string out = fmt::format(
      "## Integer runtime\n\nThe same quantized models run on the integer kernels ({}): linear layers as integer "
      "GEMM/GEMV, attention and norms in float. Speed at prefill ({} tokens) and decode ({} tokens), one sequence.\n\n",
      r.at("setup").at("isa").get<std::string>(), r.at("study").at("runtime_prefill").get<long long>(),
      r.at("study").at("runtime_decode").get<long long>());
  Table t({"model", "recipe", "ppl (integer)", "ppl (simulated)", "prefill tok/s", "decode tok/s", "prefill vs float",
           "decode vs float"});
  for (const auto& x : r.at("runtime")) {
    t.add_row({x.at("model").get<std::string>(), x.at("recipe").get<std::string>(), ppl(x.at("perplexity").get<double>()),
               ppl(x.at("simulated_perplexity").get<double>()), fmt::format("{:.0f}", x.at("prefill_tokens_per_s").get<double>()),
               fmt::format("{:.1f}", x.at("decode_tokens_per_s").get<double>()),
               fmt::format("{:.2f}x", x.at("prefill_tokens_per_s").get<double>() / x.at("float_prefill_tokens_per_s").get<double>()),
               fmt::format("{:.2f}x", x.at("decode_tokens_per_s").get<double>() / x.at("float_decode_tokens_per_s").get<double>())});
  }
  return out + t.render_markdown();
}

std::string kernels_section(const json& r) {
  const json& k = r.at("kernels");
  std::string out = fmt::format("## Kernel speeds\n\n{} threads, {}; float32 is LibTorch's matmul on the same shape.\n\n",
                                k.at("threads").get<int>(), k.at("isa").get<std::string>());
  if (k.contains("machine_limits")) {
    out += fmt::format("Machine limits on {} (register-only loops and streaming reads):\n\n", k.value("cpu", std::string("this CPU")));
    Table l({"probe", "what", "rate"});
    for (const auto& p : k.at("machine_limits"))
      l.add_row({p.at("name").get<std::string>(), p.at("what").get<std::string>(),
                 fmt::format("{:.1f} {}", p.at("rate").get<double>(), p.at("unit").get<std::string>())});
    // (A kernels stage cached before the sentence was recorded has the ISA's int8 peak name only.)
    const std::string bound = k.value("bound", fmt::format("GOPS / the {} peak for M > 1, weight bytes per second / "
                                                           "the read bandwidth (cache or memory) for M = 1",
                                                           k.value("int8_peak", std::string("int8"))));
    out += l.render_markdown() + fmt::format("\n\"Of bound\": {}.\n\n", bound);
  }
  Table t({"shape", "N x K", "M", "format", "ms", "GOPS", "of bound", "vs float32"});
  for (const auto& x : k.at("rows"))
    t.add_row({x.at("shape").get<std::string>(), fmt::format("{}x{}", x.at("n").get<long long>(), x.at("k").get<long long>()),
               std::to_string(x.at("m").get<long long>()), x.at("format").get<std::string>(),
               fmt::format("{:.3f}", 1e3 * x.at("seconds").get<double>()), fmt::format("{:.1f}", x.at("gops").get<double>()),
               x.contains("percent_of_bound") ? fmt::format("{:.0f}%", x.at("percent_of_bound").get<double>()) : "",
               fmt::format("{:.2f}x", x.at("speedup_vs_float").get<double>())});
  return out + t.render_markdown();
}

std::string stages_section(const json& r) {
  Table t({"stage", "time"});
  for (const auto& s : r.at("stages")) t.add_row({s.at("name").get<std::string>(), format_duration(s.at("seconds").get<double>())});
  return fmt::format("## Stages\n\nTime each stage took when it ran (cached stages are not rerun); {} in all.\n\n{}",
                     format_duration(r.at("total_seconds").get<double>()), t.render_markdown());
}

}  // namespace

StudyHeadline study_headline(const json& r) {
  StudyHeadline h;
  h.baseline_recipe = r.at("study").at("headline_baseline");
  h.qat_recipe = r.at("study").at("headline_qat");
  h.baseline_float = eval_ppl(r, "baseline", "float");
  h.baseline_w4a4 = eval_ppl(r, "baseline", h.baseline_recipe);
  h.qat_float = eval_ppl(r, "qat", "float");
  h.qat_w4a4 = eval_ppl(r, "qat", h.qat_recipe);
  const std::string native_recipe = r.at("setup").value("qat_native_recipe", "w16a4-learned");
  if (const json* native = find_eval(r, "qat", native_recipe)) {
    h.has_native = true;
    h.qat_native = native->at("perplexity").get<double>();
  }
  const json& finetune = r.at("study").value("headline_finetune", json(nullptr));
  if (finetune.is_string()) {
    h.has_finetune = true;
    h.finetune_recipe = finetune.get<std::string>();
    h.finetune_w4a4 = eval_ppl(r, "finetune", h.finetune_recipe);
    const json* native = find_eval(r, "finetune", native_recipe);
    h.finetune_own = native ? native->at("perplexity").get<double>() : eval_ppl(r, "finetune", "float");
  }
  return h;
}

std::string study_training_cost(const json& model) {
  const json& tr = model.at("train");
  const long long tokens = tr.value("tokens", 0LL), base = tr.value("base_tokens", 0LL);
  const std::string time = format_duration(tr.at("seconds").get<double>());
  if (base == 0) return fmt::format("{} tokens, {}", format_count(tokens), time);
  return fmt::format("+{} tokens ({:.0f}% more), {}", format_count(tokens), 100.0 * static_cast<double>(tokens) / base, time);
}

const json* study_model(const json& r, const std::string& id) {
  for (const auto& m : r.at("models"))
    if (m.at("id") == id) return &m;
  return nullptr;
}

Table study_headline_table(const json& r) {
  const StudyHeadline h = study_headline(r);
  auto cost = [&](const std::string& id) {
    const json* m = study_model(r, id);
    return m ? study_training_cost(*m) : std::string();
  };
  auto pse = [&](const std::string& id, const std::string& recipe) {  // the headline's figures exist (study_headline)
    const json* e = find_eval(r, id, recipe);
    return e ? ppl_se(*e) : std::string();
  };
  const std::string native = r.at("setup").value("qat_native_recipe", "w16a4-learned");
  const json* qat = study_model(r, "qat");
  Table t({"model", "training", "float weights", "W4A4 recipe", "W4A4 perplexity", "vs own float weights",
           "vs baseline float"});
  t.add_row({"float baseline", cost("baseline"), fmt::format("{} (W16A16)", pse("baseline", "float")), h.baseline_recipe,
             pse("baseline", h.baseline_recipe), pct(h.baseline_ratio()), pct(h.baseline_ratio())});
  t.add_row({(qat ? qat->at("label").get<std::string>() : std::string("QAT")) + " from scratch", cost("qat"),
             h.has_native ? fmt::format("{} (W16A4, its learned clips)", pse("qat", native)) : pse("qat", "float"),
             h.qat_recipe, pse("qat", h.qat_recipe), pct(h.qat_ratio()), pct(h.qat_vs_baseline_float())});
  if (h.has_finetune)
    t.add_row({"QAT fine-tune of the baseline", cost("finetune"),
               find_eval(r, "finetune", native) ? pse("finetune", native) : pse("finetune", "float"), h.finetune_recipe,
               pse("finetune", h.finetune_recipe), pct(h.finetune_ratio()), pct(h.finetune_vs_baseline_float())});
  return t;
}

std::string study_report_markdown(const json& r) {
  const json& s = r.at("setup");
  std::string out = fmt::format("# outq study: {}\n\n", r.value("title", "float baseline vs QAT at W4A4"));
  out += fmt::format(
      "Two LLaMA-style models trained on the same data with the same seed and token budget: a float baseline and "
      "a model trained with learned 4-bit activation clipping and the kurtosis penalty ({}){}. They are then "
      "quantized after training with the same recipes and evaluated on held-out text.\n\n",
      s.at("qat_mode").get<std::string>(),
      s.contains("finetune")
          ? fmt::format("; and a third, the float baseline fine-tuned with QAT ({}{}) for {:.0f}% more tokens",
                        s.at("finetune").at("mode").get<std::string>(),
                        s.at("finetune").at("weight_bits").get<int>() > 0
                            ? fmt::format(", {}-bit weight QAT", s.at("finetune").at("weight_bits").get<int>())
                            : "",
                        100 * s.at("finetune").at("fraction").get<double>())
          : "");
  out += study_cures_section(r) + "\n## Headline\n\n" + study_headline_table(r).render_markdown() + "\n";
  for (const auto& c : study_conclusions(r)) out += "- " + c + "\n";
  out += "\n" + setup_section(r) + "\n" + training_section(r) + "\n" + outliers_section(r) + "\n" + results_section(r) + "\n" +
         runtime_section(r) + "\n" + kernels_section(r) + "\n" + stages_section(r) + "\n";
  out += fmt::format("Reproduce: `{}`. The same figures as JSON: `report.json`.\n", r.value("command", "outq study"));
  return out;
}

void study_report_write(const json& results, const std::filesystem::path& dir) {
  const std::string md = study_report_markdown(results);  // fails before anything is written if a figure is missing
  write_file_atomic(dir / "report.json", results.dump(1) + "\n");
  write_file_atomic(dir / "report.md", md);
}

}  // namespace outq
