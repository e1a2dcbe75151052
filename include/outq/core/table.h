// Plain-text tables for people: a header row, aligned columns (numbers right-aligned), and a rule.
// Machine-readable output goes through JSON/CSV writers instead; this is only for the terminal
// and for Markdown reports (render_markdown).
#pragma once

#include <string>
#include <vector>

namespace outq {

class Table {
 public:
  explicit Table(std::vector<std::string> header);
  void add_row(std::vector<std::string> cells);
  /// Columns separated by two spaces, a dashed rule under the header.
  std::string render() const;
  /// A GitHub-flavoured Markdown table.
  std::string render_markdown() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

/// Formats a count with thousands separators: 1234567 -> "1,234,567".
std::string format_count(long long n);
/// Formats seconds as "1h02m", "3m05s" or "12.3s".
std::string format_duration(double seconds);
/// Formats bytes as "512 B", "1.5 KiB", "3.2 MiB", "1.1 GiB".
std::string format_bytes(double bytes);

}  // namespace outq
