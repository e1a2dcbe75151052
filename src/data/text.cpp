// UTF-8 sanitising and small string helpers for corpus reading.
#include "outq/data/text.h"

#include <cstdint>

namespace outq {

size_t utf8_sanitize(std::string& text) {
  static const char kReplacement[] = "\xEF\xBF\xBD";
  std::string out;
  size_t replaced = 0;
  size_t i = 0;
  const size_t n = text.size();
  auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  bool changed = false;
  while (i < n) {
    const uint8_t c = byte(i);
    size_t len = 0;
    uint32_t cp = 0, min_cp = 0;
    if (c < 0x80) len = 1, cp = c;
    else if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min_cp = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min_cp = 0x800;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min_cp = 0x10000;
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      const uint8_t cc = byte(i + k);
      ok = (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3F);
    }
    ok = ok && cp >= min_cp && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (ok) {
      if (changed) out.append(text, i, len);
      i += len;
    } else {
      if (!changed) out.assign(text, 0, i), changed = true;
      out += kReplacement;
      ++replaced;
      ++i;  // resynchronise on the next byte
    }
  }
  if (changed) text.swap(out);
  return replaced;
}

size_t utf8_length(std::string_view text) {
  size_t count = 0;
  for (unsigned char c : text) count += (c & 0xC0) != 0x80;
  return count;
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (end < text.size() || !line.empty()) lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace outq
