// The study report's own plots: validation perplexity during training and perplexity per recipe.
#include <fmt/format.h>

#include <cmath>
#include <functional>
#include <limits>

#include "outq/core/error.h"
#include "outq/core/log.h"
#include "outq/core/plot.h"
#include "outq/study/report.h"

namespace outq {

std::vector<std::string> study_report_plots(nlohmann::json& r, const std::filesystem::path& dir) {
  std::vector<std::string> failed;
  nlohmann::json& plots = r["plots"];
  if (!plots.is_object()) plots = nlohmann::json::object();
  auto draw = [&](const std::string& key, const std::function<void(const std::string&)>& fn) {
    const std::string rel = "plots/" + key + ".png";
    try {
      fn((dir / rel).string());
      plots[key] = rel;
    } catch (const Error& e) {
      log_warn("report plot {} not drawn: {}", key, e.what());
      failed.push_back(key);
    }
  };

  draw("curves", [&](const std::string& png) {
    LinePlot p;
    p.title = "validation perplexity during training";
    p.xlabel = "training tokens";
    p.ylabel = "perplexity (validation)";
    p.log_y = true;
    for (const auto& m : r.at("models")) {
      PlotSeries s;
      s.name = m.at("label");
      s.x = m.at("curve").at("tokens").get<std::vector<double>>();
      s.y = m.at("curve").at("val_ppl").get<std::vector<double>>();
      if (!s.x.empty()) p.series.push_back(std::move(s));
    }
    OUTQ_CHECK(!p.series.empty(), "no validation points were recorded during training");
    plot_lines(p, png);
  });

  draw("recipes", [&](const std::string& png) {
    BarPlot p;
    p.title = "test perplexity per recipe (simulated quantization)";
    p.ylabel = "perplexity (log scale)";
    p.log_y = true;
    p.categories.push_back("float");
    for (const auto& name : r.at("study").at("recipes")) p.categories.push_back(name);
    for (const auto& m : r.at("models")) {
      p.series_names.push_back(m.at("label"));
      std::vector<double> row(p.categories.size(), std::numeric_limits<double>::quiet_NaN());
      for (const auto& e : r.at("evals")) {
        if (e.at("model") != m.at("id") || !e.contains("perplexity")) continue;
        for (size_t c = 0; c < p.categories.size(); ++c)
          if (e.at("recipe") == p.categories[c]) row[c] = e.at("perplexity").get<double>();
      }
      p.values.push_back(std::move(row));
    }
    plot_bars(p, png);
  });
  return failed;
}

}  // namespace outq
