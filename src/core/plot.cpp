// gnuplot-based PNG rendering for line plots, heat maps and grouped bar charts.
#include "outq/core/plot.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>

#include "outq/core/error.h"
#include "outq/core/file_io.h"
#include "outq/core/process.h"

namespace fs = std::filesystem;

namespace outq {
namespace {

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// The lines every plot starts with: PNG terminal and size, output file, title and axis labels
// ("" = no label).
std::string preamble(int width, int height, const fs::path& work, const std::string& title, const std::string& xlabel,
                     const std::string& ylabel) {
  std::string s = fmt::format("set terminal pngcairo noenhanced size {},{} font 'sans,11'\nset output {}\nset title {}\n",
                              width, height, quoted((work / "plot.png").string()), quoted(title));
  if (!xlabel.empty()) s += fmt::format("set xlabel {}\n", quoted(xlabel));
  if (!ylabel.empty()) s += fmt::format("set ylabel {}\n", quoted(ylabel));
  return s;
}

// Creates a scratch directory, runs gnuplot on `script` there and moves plot.png to `png_path`.
void render(const std::function<std::string(const fs::path&)>& make_script, const std::string& png_path) {
  OUTQ_CHECK(program_on_path("gnuplot"), "gnuplot not found on PATH: it renders the PNG plots (install it with "
             "`apt-get install gnuplot-nox`, or run scripts/setup.sh)");
  std::string tmpl = (fs::temp_directory_path() / "outq-plot-XXXXXX").string();
  OUTQ_CHECK(::mkdtemp(tmpl.data()) != nullptr, "cannot create a temporary directory for plotting");
  const fs::path work(tmpl);
  const fs::path png = work / "plot.png";
  write_file_atomic(work / "plot.gp", make_script(work));
  const ProcessResult r = process_run({"gnuplot", (work / "plot.gp").string()});
  std::error_code ec;
  if (r.exit_code != 0 || !fs::exists(png)) {
    fs::remove_all(work, ec);
    throw Error(fmt::format("{}: gnuplot failed (exit code {}): {}", png_path, r.exit_code, r.output.substr(0, 300)));
  }
  write_file_atomic(png_path, read_file(png, "plot"));
  fs::remove_all(work, ec);
}

}  // namespace

void plot_heatmap(const HeatMap& map, const std::string& png_path) {
  OUTQ_ASSERT(static_cast<int64_t>(map.values.size()) == map.rows * map.cols, "heat map size mismatch");
  render(
      [&](const fs::path& work) {
        std::string data;
        data.reserve(map.values.size() * 8);
        for (int64_t r = 0; r < map.rows; ++r) {
          for (int64_t c = 0; c < map.cols; ++c) data += fmt::format("{}{:.5g}", c ? " " : "", map.values[r * map.cols + c]);
          data += "\n";
        }
        write_file_atomic(work / "matrix.dat", data);
        std::string script =
            preamble(map.width, map.height, work, map.title, map.xlabel, map.ylabel) +
            fmt::format("set cblabel {}\nset palette defined (0 '#f7fbff', 1 '#6baed6', 2 '#08306b', 3 '#e31a1c')\n"
                        "set xrange [-0.5:{}]\nset yrange [-0.5:{}]\n",
                        quoted(map.cblabel), map.cols - 0.5, map.rows - 0.5);
        if (map.log_color) script += "set logscale cb\n";
        script += fmt::format("plot {} matrix with image notitle\n", quoted((work / "matrix.dat").string()));
        return script;
      },
      png_path);
}

void plot_lines(const LinePlot& plot, const std::string& png_path) {
  render(
      [&](const fs::path& work) {
        std::string script =
            preamble(plot.width, plot.height, work, plot.title, plot.xlabel, plot.ylabel) + "set grid\nset key below\n";
        if (plot.log_y) script += "set logscale y\n";
        std::vector<std::string> parts;
        for (size_t i = 0; i < plot.series.size(); ++i) {
          const PlotSeries& s = plot.series[i];
          OUTQ_ASSERT(s.x.size() == s.y.size(), "plot series ", s.name, " has mismatched x and y");
          std::string data;
          for (size_t k = 0; k < s.x.size(); ++k) data += fmt::format("{} {}\n", s.x[k], s.y[k]);
          const fs::path file = work / fmt::format("series{}.dat", i);
          write_file_atomic(file, data);
          const char* style = s.x.size() > 200 ? "lines lw 1.5" : "linespoints lw 2 pt 7 ps 0.6";  // dense: no markers
          parts.push_back(fmt::format("{} using 1:2 with {} title {}", quoted(file.string()), style, quoted(s.name)));
        }
        script += "plot ";
        for (size_t i = 0; i < parts.size(); ++i) script += (i ? ", \\\n     " : "") + parts[i];
        return script + "\n";
      },
      png_path);
}

void plot_bars(const BarPlot& plot, const std::string& png_path) {
  OUTQ_ASSERT(plot.values.size() == plot.series_names.size(), "bar plot: one value row per series expected");
  render(
      [&](const fs::path& work) {
        // One row per category: its label, then one column per series ("-" leaves a gap).
        std::string data;
        for (size_t c = 0; c < plot.categories.size(); ++c) {
          std::string label = plot.categories[c];
          std::replace(label.begin(), label.end(), '"', '\'');
          data += "\"" + label + "\"";
          for (const auto& row : plot.values) {
            OUTQ_ASSERT(row.size() == plot.categories.size(), "bar plot: one value per category expected");
            data += std::isfinite(row[c]) ? fmt::format(" {}", row[c]) : std::string(" -");
          }
          data += "\n";
        }
        write_file_atomic(work / "bars.dat", data);
        std::string script =
            preamble(plot.width, plot.height, work, plot.title, "", plot.ylabel) +
            "set grid ytics\nset key top left\nset style data histograms\nset style histogram clustered gap 1\n"
            "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset xtics rotate by -30 scale 0\nset datafile missing '-'\n";
        if (plot.log_y) script += "set logscale y\n";
        script += "plot ";
        for (size_t i = 0; i < plot.series_names.size(); ++i)
          script += fmt::format("{}{} using {}:xtic(1) title {}", i ? ", " : "", quoted((work / "bars.dat").string()), i + 2,
                                quoted(plot.series_names[i]));
        return script + "\n";
      },
      png_path);
}

}  // namespace outq
