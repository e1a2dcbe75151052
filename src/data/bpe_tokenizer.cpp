// Byte-level BPE from tokenizer.json (see bpe_tokenizer.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "outq/data/bpe_tokenizer.h"

#include <fmt/format.h>
#include <pcre2.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>

#include <algorithm>
#include <climits>
#include <nlohmann/json.hpp>

#include "outq/core/error.h"

namespace outq {
namespace {

// GPT-2's pre-tokenizer pattern, which ByteLevel applies when use_regex is set.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Byte -> its character in the byte-level alphabet (UTF-8): printable ASCII and Latin-1 bytes
// stand for themselves, the other 68 are U+0100 + n in byte order.
const std::vector<std::string>& byte_chars() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool self = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const int cp = self ? b : 256 + extra++;
      std::string s;
      if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
      } else {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
      t[static_cast<size_t>(b)] = s;
    }
    return t;
  }();
  return table;
}

const std::unordered_map<std::string, uint8_t>& char_bytes() {
  static const std::unordered_map<std::string, uint8_t> table = [] {
    std::unordered_map<std::string, uint8_t> t;
    for (int b = 0; b < 256; ++b) t[byte_chars()[static_cast<size_t>(b)]] = static_cast<uint8_t>(b);
    return t;
  }();
  return table;
}

size_t utf8_length_at(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  return std::min(n, s.size() - i);
}

std::vector<std::string> utf8_chars(std::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_length_at(s, i);
    out.emplace_back(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace

struct ByteLevelBpe::Regex {
  pcre2_code* code = nullptr;
  explicit Regex(const std::string& pattern, const std::string& where) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &error, &offset,
                         nullptr);
    if (!code) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      fail_mismatch(where, "pattern", "a regular expression PCRE2 compiles",
                    fmt::format("\"{}\" ({} at offset {})", pattern, reinterpret_cast<const char*>(message), offset));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // (an interpreter match when the JIT is unavailable)
  }
  ~Regex() { pcre2_code_free(code); }
  // Splits `s` into its matches and the stretches between them ("Isolated"), in order. Only the
  // whole match is read, so one pair of offsets per thread serves every pattern and call.
  void split(const std::string& s, std::vector<std::string>* out) const {
    thread_local const std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> data(
        pcre2_match_data_create(1, nullptr), pcre2_match_data_free);
    pcre2_match_data* md = data.get();
    size_t start = 0, last = 0;
    while (start <= s.size()) {
      const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, 0, md, nullptr);
      if (rc < 0) break;  // no match (or a match error on invalid UTF-8: the rest stays one piece)
      // (rc == 0: captures beyond the first pair not kept; the whole match is all that is read)
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t b = ov[0], e = ov[1];
      if (b > last) out->push_back(s.substr(last, b - last));
      if (e > b) out->push_back(s.substr(b, e - b));
      last = std::max(last, e);
      if (e > b) start = e;
      else if (b >= s.size()) break;
      else start = b + utf8_length_at(s, b);
    }
    if (last < s.size()) out->push_back(s.substr(last));
  }
};

struct ByteLevelBpe::Step {
  enum Kind { kSplit, kDigits, kByteLevel } kind = kSplit;
  std::shared_ptr<Regex> regex;  ///< Split, or ByteLevel with use_regex
  bool individual_digits = false, add_prefix_space = false;
};

ByteLevelBpe::ByteLevelBpe() = default;
ByteLevelBpe::ByteLevelBpe(ByteLevelBpe&&) noexcept = default;
ByteLevelBpe& ByteLevelBpe::operator=(ByteLevelBpe&&) noexcept = default;
ByteLevelBpe::~ByteLevelBpe() = default;

ByteLevelBpe ByteLevelBpe::from_json(const std::string& text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail_mismatch(origin, "", "a tokenizer.json (JSON)", std::string("invalid JSON (") + e.what() + ")");
  }
  auto expect = [&](bool ok, const std::string& key, const std::string& expected, const nlohmann::json& found) {
    if (!ok) fail_mismatch(origin, key, expected, found.is_null() ? std::string("none") : found.dump());
  };
  expect(j.is_object() && j.contains("model") && j["model"].is_object(), "model", "an object", j.is_object() ? j.value("model", nlohmann::json()) : j);
  const nlohmann::json& m = j["model"];
  expect(m.value("type", "") == "BPE", "model.type", "\"BPE\" (byte-level BPE; WordPiece and Unigram are not read)", m.value("type", nlohmann::json()));
  expect(!m.value("byte_fallback", false), "model.byte_fallback", "false (a byte-level BPE)", m["byte_fallback"]);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    expect(!m.contains(key) || m[key].is_null() || m[key] == "", std::string("model.") + key, "none", m.value(key, nlohmann::json()));
  ByteLevelBpe t;
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const nlohmann::json& n = j["normalizer"];
    std::vector<nlohmann::json> list;
    if (n.is_object() && n.value("type", "") == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array())
      for (const auto& x : n["normalizers"]) list.push_back(x);
    else
      list.push_back(n);
    for (const auto& x : list) {
      const std::string type = x.is_object() ? x.value("type", "") : "";
      expect(type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD", "normalizer.type",
             "NFC, NFD, NFKC, NFKD or a Sequence of them (the normalizers implemented)", x.is_object() ? x.value("type", nlohmann::json()) : x);
      t.normalizers_.push_back(type);
    }
  }
  t.ignore_merges_ = m.value("ignore_merges", false);
  expect(m.contains("vocab") && m["vocab"].is_object(), "model.vocab", "an object of token ids", m.value("vocab", nlohmann::json()));
  int32_t max_id = -1;
  auto add_piece = [&](const std::string& token, const nlohmann::json& id, const std::string& key) {
    expect(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < (1 << 24), key, "an id in [0, 2^24)", id);
    const auto i = static_cast<int32_t>(id.get<int64_t>());
    t.vocab_[token] = i;
    max_id = std::max(max_id, i);
    if (t.pieces_.size() <= static_cast<size_t>(i)) t.pieces_.resize(static_cast<size_t>(i) + 1);
    t.pieces_[static_cast<size_t>(i)] = token;
  };
  for (const auto& [token, id] : m["vocab"].items()) add_piece(token, id, "model.vocab." + token);
  expect(m.contains("merges") && m["merges"].is_array(), "model.merges", "a list of merges", m.value("merges", nlohmann::json()));
  for (const auto& merge : m["merges"]) {
    std::pair<std::string, std::string> p;
    if (merge.is_string()) {
      const std::string s = merge.get<std::string>();
      const size_t space = s.find(' ');
      expect(space != std::string::npos && space > 0 && space + 1 < s.size(), "model.merges", "\"a b\" strings or [a, b] pairs", merge);
      p = {s.substr(0, space), s.substr(space + 1)};
    } else {
      expect(merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string(), "model.merges",
             "\"a b\" strings or [a, b] pairs", merge);
      p = {merge[0].get<std::string>(), merge[1].get<std::string>()};
    }
    t.ranks_.emplace(p, static_cast<int>(t.merge_list_.size()));
    t.merge_list_.push_back(p);
  }
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    expect(j["added_tokens"].is_array(), "added_tokens", "a list", j["added_tokens"]);
    for (const auto& a : j["added_tokens"]) {
      expect(a.is_object() && a.contains("content") && a["content"].is_string() && a.contains("id"), "added_tokens",
             "objects with id and content", a);
      const std::string content = a["content"].get<std::string>();
      for (const char* flag : {"lstrip", "rstrip", "single_word"})
        expect(!a.value(flag, false), "added_tokens." + content + "." + flag, "false (stripping and whole-word matching are not implemented)", a[flag]);
      add_piece(content, a["id"], "added_tokens." + content + ".id");
      t.added_.emplace_back(content, static_cast<int32_t>(a["id"].get<int64_t>()));
      t.kind_.resize(t.pieces_.size());
      t.kind_[static_cast<size_t>(t.added_.back().second)] = a.value("special", false) ? 2 : 1;
    }
  }
  t.kind_.resize(t.pieces_.size());
  std::stable_sort(t.added_.begin(), t.added_.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  // Pre-tokenizers.
  expect(j.contains("pre_tokenizer") && j["pre_tokenizer"].is_object(), "pre_tokenizer", "an object", j.value("pre_tokenizer", nlohmann::json()));
  std::vector<nlohmann::json> steps;
  const nlohmann::json& pre = j["pre_tokenizer"];
  if (pre.value("type", "") == "Sequence") {
    expect(pre.contains("pretokenizers") && pre["pretokenizers"].is_array(), "pre_tokenizer.pretokenizers", "a list", pre);
    for (const auto& s : pre["pretokenizers"]) steps.push_back(s);
  } else {
    steps.push_back(pre);
  }
  bool byte_level = false;
  for (size_t i = 0; i < steps.size(); ++i) {
    const nlohmann::json& s = steps[i];
    const std::string key = fmt::format("pre_tokenizer[{}]", i);
    const std::string type = s.is_object() ? s.value("type", "") : "";
    Step step;
    if (type == "Split") {
      expect(s.value("behavior", "") == "Isolated" && !s.value("invert", false), key + ".behavior",
             "\"Isolated\" without invert (the split behaviour implemented)", s.value("behavior", nlohmann::json()));
      expect(s.contains("pattern") && s["pattern"].is_object() && s["pattern"].contains("Regex") && s["pattern"]["Regex"].is_string(),
             key + ".pattern", "{\"Regex\": ...}", s.value("pattern", nlohmann::json()));
      step.kind = Step::kSplit;
      step.regex = std::make_shared<Regex>(s["pattern"]["Regex"].get<std::string>(), origin + ": " + key);
    } else if (type == "Digits") {
      step.kind = Step::kDigits;
      step.individual_digits = s.value("individual_digits", false);
    } else if (type == "ByteLevel") {
      step.kind = Step::kByteLevel;
      step.add_prefix_space = s.value("add_prefix_space", false);
      if (s.value("use_regex", true)) step.regex = std::make_shared<Regex>(kGpt2Pattern, origin + ": " + key);
      byte_level = true;
    } else {
      expect(false, key + ".type", "Split, Digits or ByteLevel (the pre-tokenizers implemented)", s.value("type", nlohmann::json()));
    }
    t.steps_.push_back(std::move(step));
  }
  expect(byte_level, "pre_tokenizer", "a ByteLevel step (a byte-level BPE)", pre);
  // Begin- and end-of-text (see the header).
  for (const char* name : {"<|end_of_text|>", "<|endoftext|>", "</s>", "<|im_end|>", "<|eot_id|>"})
    if (t.eos_ < 0) t.eos_ = t.id_of(name);
  expect(t.eos_ >= 0, "added_tokens", "an end-of-text token (<|end_of_text|>, <|endoftext|>, </s>, <|im_end|> or <|eot_id|>)",
         nullptr);
  t.bos_ = t.eos_;
  std::vector<nlohmann::json> processors;
  if (j.contains("post_processor") && j["post_processor"].is_object()) {
    const auto& p = j["post_processor"];
    if (p.value("type", "") == "Sequence" && p.contains("processors") && p["processors"].is_array())
      for (const auto& q : p["processors"]) processors.push_back(q);
    else
      processors.push_back(p);
  }
  for (const auto& p : processors)
    if (p.is_object() && p.value("type", "") == "TemplateProcessing" && p.contains("single") && p["single"].is_array() &&
        !p["single"].empty() && p["single"][0].contains("SpecialToken")) {
      const int32_t id = t.id_of(p["single"][0]["SpecialToken"].value("id", ""));
      if (id >= 0) t.bos_ = id;
    }
  return t;
}

std::string ByteLevelBpe::normalize(std::string_view text) const {
  std::string s(text);
  for (const auto& form : normalizers_) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* n = form == "NFC"    ? icu::Normalizer2::getNFCInstance(status)
                                : form == "NFD"  ? icu::Normalizer2::getNFDInstance(status)
                                : form == "NFKC" ? icu::Normalizer2::getNFKCInstance(status)
                                                 : icu::Normalizer2::getNFKDInstance(status);
    OUTQ_CHECK(U_SUCCESS(status), "tokenizer: ICU has no ", form, " normalizer (", u_errorName(status), ")");
    std::string out;
    icu::StringByteSink<std::string> sink(&out);
    n->normalizeUTF8(0, icu::StringPiece(s.data(), static_cast<int32_t>(s.size())), sink, nullptr, status);
    OUTQ_CHECK(U_SUCCESS(status), "tokenizer: ", form, " normalization failed (", u_errorName(status), ")");
    s.swap(out);
  }
  return s;
}

void ByteLevelBpe::pre_tokenize(std::string_view text, std::vector<std::string>* words) const {
  std::vector<std::string> pieces = {std::string(text)}, next;
  for (const Step& s : steps_) {
    next.clear();
    for (auto& p : pieces) {
      if (s.kind == Step::kByteLevel && s.add_prefix_space && (p.empty() || p[0] != ' ')) p.insert(p.begin(), ' ');
      if (s.regex) {
        s.regex->split(p, &next);
      } else if (s.kind == Step::kDigits) {
        size_t last = 0;
        for (size_t i = 0; i < p.size(); ++i) {
          if (p[i] < '0' || p[i] > '9') continue;
          size_t e = i + 1;
          if (!s.individual_digits)
            while (e < p.size() && p[e] >= '0' && p[e] <= '9') ++e;
          if (i > last) next.push_back(p.substr(last, i - last));
          next.push_back(p.substr(i, e - i));
          last = e;
          i = e - 1;
        }
        if (last < p.size()) next.push_back(p.substr(last));
      } else {
        next.push_back(std::move(p));
      }
    }
    std::swap(pieces, next);
  }
  for (auto& p : pieces)
    if (!p.empty()) words->push_back(std::move(p));
}

void ByteLevelBpe::bpe(const std::string& word, std::vector<int32_t>* out) const {
  std::string mapped;
  for (unsigned char b : word) mapped += byte_chars()[b];
  if (ignore_merges_) {
    const auto it = vocab_.find(mapped);
    if (it != vocab_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  std::vector<std::string> symbols = utf8_chars(mapped);
  while (symbols.size() > 1) {
    int best = INT_MAX;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto it = ranks_.find({symbols[i], symbols[i + 1]});
      if (it != ranks_.end() && it->second < best) best = it->second;
    }
    if (best == INT_MAX) break;
    // Merge every occurrence of the best pair, left to right.
    const auto& pair = merge_list_[static_cast<size_t>(best)];
    std::vector<std::string> merged;
    for (size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == pair.first && symbols[i + 1] == pair.second) {
        merged.push_back(symbols[i] + symbols[i + 1]);
        i += 2;
      } else {
        merged.push_back(symbols[i]);
        ++i;
      }
    }
    symbols.swap(merged);
  }
  for (const auto& s : symbols) {
    const auto it = vocab_.find(s);
    OUTQ_CHECK(it != vocab_.end(), "tokenizer: the byte-level piece \"", s, "\" is not in the vocabulary (an incomplete "
               "tokenizer.json: every byte must have a token)");
    out->push_back(it->second);
  }
}

std::vector<int32_t> ByteLevelBpe::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  std::vector<std::string> words;
  auto plain = [&](std::string_view s) {
    if (s.empty()) return;
    words.clear();
    if (normalizers_.empty()) pre_tokenize(s, &words);
    else pre_tokenize(normalize(s), &words);
    for (const auto& w : words) bpe(w, &ids);
  };
  size_t last = 0;
  for (size_t i = 0; i < text.size();) {
    bool hit = false;
    for (const auto& [content, id] : added_) {
      if (!content.empty() && text.compare(i, content.size(), content) == 0) {
        plain(text.substr(last, i - last));
        ids.push_back(id);
        i += content.size();
        last = i;
        hit = true;
        break;
      }
    }
    if (!hit) ++i;
  }
  plain(text.substr(last));
  return ids;
}

std::string ByteLevelBpe::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    const std::string& p = pieces_[static_cast<size_t>(id)];
    if (kind_[static_cast<size_t>(id)] != 0) {  // an added token: its content as it is
      out += p;
      continue;
    }
    for (const auto& c : utf8_chars(p)) {
      const auto it = char_bytes().find(c);
      if (it != char_bytes().end()) out.push_back(static_cast<char>(it->second));
    }
  }
  return out;
}

std::string ByteLevelBpe::piece(int32_t id) const {
  return id >= 0 && id < vocab_size() ? pieces_[static_cast<size_t>(id)] : std::string();
}

int32_t ByteLevelBpe::id_of(const std::string& token) const {
  const auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

bool ByteLevelBpe::is_special(int32_t id) const { return id >= 0 && id < vocab_size() && kind_[static_cast<size_t>(id)] == 2; }

std::vector<std::string> ByteLevelBpe::merges() const {
  std::vector<std::string> out;
  for (const auto& [a, b] : merge_list_) out.push_back(a + " " + b);
  return out;
}

}  // namespace outq
