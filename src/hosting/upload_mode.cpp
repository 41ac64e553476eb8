#include "hosting/upload_mode.hpp"

#include <optional>

namespace inferllama::hosting {

const std::string_view kDefaultGitAttributes =
    "*.7z filter=lfs diff=lfs merge=lfs -text\n"
    "*.arrow filter=lfs diff=lfs merge=lfs -text\n"
    "*.bin filter=lfs diff=lfs merge=lfs -text\n"
    "*.bz2 filter=lfs diff=lfs merge=lfs -text\n"
    "*.ckpt filter=lfs diff=lfs merge=lfs -text\n"
    "*.ftz filter=lfs diff=lfs merge=lfs -text\n"
    "*.gz filter=lfs diff=lfs merge=lfs -text\n"
    "*.h5 filter=lfs diff=lfs merge=lfs -text\n"
    "*.joblib filter=lfs diff=lfs merge=lfs -text\n"
    "*.lfs.* filter=lfs diff=lfs merge=lfs -text\n"
    "*.mlmodel filter=lfs diff=lfs merge=lfs -text\n"
    "*.model filter=lfs diff=lfs merge=lfs -text\n"
    "*.msgpack filter=lfs diff=lfs merge=lfs -text\n"
    "*.npy filter=lfs diff=lfs merge=lfs -text\n"
    "*.npz filter=lfs diff=lfs merge=lfs -text\n"
    "*.onnx filter=lfs diff=lfs merge=lfs -text\n"
    "*.ot filter=lfs diff=lfs merge=lfs -text\n"
    "*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    "*.pb filter=lfs diff=lfs merge=lfs -text\n"
    "*.pickle filter=lfs diff=lfs merge=lfs -text\n"
    "*.pkl filter=lfs diff=lfs merge=lfs -text\n"
    "*.pt filter=lfs diff=lfs merge=lfs -text\n"
    "*.pth filter=lfs diff=lfs merge=lfs -text\n"
    "*.rar filter=lfs diff=lfs merge=lfs -text\n"
    "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    "saved_model/**/* filter=lfs diff=lfs merge=lfs -text\n"
    "*.tar.* filter=lfs diff=lfs merge=lfs -text\n"
    "*.tar filter=lfs diff=lfs merge=lfs -text\n"
    "*.tflite filter=lfs diff=lfs merge=lfs -text\n"
    "*.tgz filter=lfs diff=lfs merge=lfs -text\n"
    "*.wasm filter=lfs diff=lfs merge=lfs -text\n"
    "*.xz filter=lfs diff=lfs merge=lfs -text\n"
    "*.zip filter=lfs diff=lfs merge=lfs -text\n"
    "*.zst filter=lfs diff=lfs merge=lfs -text\n"
    "*tfevents* filter=lfs diff=lfs merge=lfs -text\n";

namespace {

bool match_class(std::string_view& pattern, char c) {
  // pattern starts just after '['; on return it is just after the closing ']'.
  std::size_t i = 0;
  const bool negated = i < pattern.size() && (pattern[i] == '!' || pattern[i] == '^');
  if (negated) ++i;
  bool matched = false;
  bool first = true;
  for (; i < pattern.size() && (pattern[i] != ']' || first); first = false) {
    char low = pattern[i++];
    char high = low;
    if (i + 1 < pattern.size() && pattern[i] == '-' && pattern[i + 1] != ']') {
      high = pattern[i + 1];
      i += 2;
    }
    if (low <= c && c <= high) matched = true;
  }
  if (i >= pattern.size()) {  // no closing ']': as in git, the pattern matches nothing
    pattern = {};
    return false;
  }
  pattern.remove_prefix(i + 1);
  return matched != negated;
}

}  // namespace

bool glob_match(std::string_view pattern, std::string_view text) {
  while (!pattern.empty()) {
    if (pattern.starts_with("**")) {
      // "**/" matches zero or more whole segments; "**" at the end matches everything left.
      std::string_view rest = pattern.substr(2);
      if (rest.starts_with('/')) rest.remove_prefix(1);
      if (rest.empty()) return true;
      for (std::size_t at = 0; at <= text.size(); ++at) {
        if ((at == 0 || text[at - 1] == '/') && glob_match(rest, text.substr(at))) return true;
      }
      return false;
    }
    const char p = pattern.front();
    if (p == '*') {
      const std::string_view rest = pattern.substr(1);
      for (std::size_t at = 0; at <= text.size(); ++at) {
        if (glob_match(rest, text.substr(at))) return true;
        if (at < text.size() && text[at] == '/') return false;  // '*' stays within a segment
      }
      return false;
    }
    if (text.empty()) return false;
    if (p == '?') {
      if (text.front() == '/') return false;
      pattern.remove_prefix(1);
    } else if (p == '[') {
      pattern.remove_prefix(1);
      if (text.front() == '/' || !match_class(pattern, text.front())) return false;
    } else {
      if (p == '\\' && pattern.size() > 1) pattern.remove_prefix(1);
      if (pattern.front() != text.front()) return false;
      pattern.remove_prefix(1);
    }
    text.remove_prefix(1);
  }
  return text.empty();
}

LfsRules::LfsRules(std::string_view gitattributes) {
  add(gitattributes);
}

void LfsRules::add(std::string_view more) {
  while (!more.empty()) {
    const auto end = more.find('\n');
    std::string_view line = more.substr(0, end);
    more = end == std::string_view::npos ? std::string_view() : more.substr(end + 1);
    auto next_word = [&]() {
      while (!line.empty() && (line.front() == ' ' || line.front() == '\t' || line.front() == '\r'))
        line.remove_prefix(1);
      const auto stop = line.find_first_of(" \t\r");
      const std::string_view word = line.substr(0, stop);
      line = stop == std::string_view::npos ? std::string_view() : line.substr(stop);
      return word;
    };
    std::string_view pattern = next_word();
    if (pattern.empty() || pattern.front() == '#') continue;
    std::optional<bool> lfs;
    for (std::string_view attribute = next_word(); !attribute.empty(); attribute = next_word()) {
      if (attribute == "filter=lfs")
        lfs = true;
      else if (attribute.starts_with("filter=") || attribute == "-filter" || attribute == "!filter")
        lfs = false;
    }
    if (!lfs) continue;
    Rule rule;
    rule.anchored = pattern.find('/') != std::string_view::npos;
    if (pattern.starts_with('/')) pattern.remove_prefix(1);
    rule.pattern = std::string(pattern);
    rule.lfs = *lfs;
    rules_.push_back(std::move(rule));
  }
}

bool LfsRules::is_lfs(std::string_view path) const {
  const std::string_view basename = path.substr(path.rfind('/') == std::string_view::npos ? 0 : path.rfind('/') + 1);
  bool lfs = false;
  for (const Rule& rule : rules_) {
    if (glob_match(rule.pattern, rule.anchored ? path : basename)) lfs = rule.lfs;
  }
  return lfs;
}

bool looks_binary(std::string_view sample) {
  return sample.find('\0') != std::string_view::npos;
}

UploadMode upload_mode(const LfsRules& rules, std::string_view path, std::uint64_t size, std::string_view sample) {
  if (size == 0) return UploadMode::regular;
  if (size >= kRegularFileLimit || rules.is_lfs(path) || looks_binary(sample)) return UploadMode::lfs;
  return UploadMode::regular;
}

}  // namespace inferllama::hosting
