// PNG line plots rendered by gnuplot (Debian's gnuplot-nox): the data and the script are written
// to a temporary directory, gnuplot renders to a temporary PNG that is then moved into place.
// A missing gnuplot is a clear error; callers that plot as a side product may catch it and warn.
#pragma once

#include <string>
#include <vector>

namespace outq {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;
};

struct LinePlot {
  std::string title, xlabel, ylabel;
  bool log_y = false;
  int width = 900, height = 540;
  std::vector<PlotSeries> series;
};

/// Renders `plot` to `png_path` atomically.
void plot_lines(const LinePlot& plot, const std::string& png_path);

struct HeatMap {
  std::string title, xlabel, ylabel, cblabel;
  bool log_color = false;
  int width = 1000, height = 600;
  int64_t rows = 0, cols = 0;
  std::vector<float> values;  ///< row-major rows x cols; row = y, column = x
};

/// Renders a heat map (x = column, y = row) to `png_path` atomically.
void plot_heatmap(const HeatMap& map, const std::string& png_path);

/// Grouped bars: one group per category (x axis), one bar per series within it. NaN values
/// (a series without that category) leave a gap.
struct BarPlot {
  std::string title, ylabel;
  bool log_y = false;
  int width = 1000, height = 560;
  std::vector<std::string> categories;
  std::vector<std::string> series_names;
  std::vector<std::vector<double>> values;  ///< [series][category]
};

/// Renders a grouped bar chart to `png_path` atomically.
void plot_bars(const BarPlot& plot, const std::string& png_path);

}  // namespace outq
