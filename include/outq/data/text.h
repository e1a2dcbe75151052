// Text clean-up shared by the corpus readers: UTF-8 validation with replacement (invalid bytes
// become U+FFFD instead of failing the run), code-point counting, and line splitting.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace outq {

/// Replaces every invalid UTF-8 sequence (bad lead byte, truncated sequence, overlong form,
/// surrogate, > U+10FFFF) with U+FFFD. Returns the number of replacements made.
size_t utf8_sanitize(std::string& text);

/// Number of code points in valid UTF-8 text.
size_t utf8_length(std::string_view text);

/// Splits on '\n' (a trailing '\r' is dropped from each line).
std::vector<std::string_view> split_lines(std::string_view text);

/// Trims ASCII whitespace at both ends.
std::string_view trim(std::string_view s);

}  // namespace outq
