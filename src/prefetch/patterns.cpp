#include "prefetch/patterns.hpp"

#include <cstddef>

namespace inferllama::prefetch {
namespace {

// UTF-8 as code points; a byte that starts no valid sequence stands for itself (Python reads paths with
// surrogateescape: such a byte still matches only itself, `?` and `*`).
std::u32string code_points(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const std::size_t length = byte < 0x80           ? 1
                               : (byte >> 5) == 0x6  ? 2
                               : (byte >> 4) == 0xe  ? 3
                               : (byte >> 3) == 0x1e ? 4
                                                     : 0;
    char32_t point = length == 1 ? byte : length == 2 ? (byte & 0x1f) : length == 3 ? (byte & 0x0f) : (byte & 0x07);
    bool valid = length != 0 && i + length <= text.size();
    for (std::size_t k = 1; valid && k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      valid = (next >> 6) == 0x2;
      point = (point << 6) | (next & 0x3f);
    }
    if (!valid) {
      out.push_back(0xdc00 + byte);  // as Python's surrogateescape
      ++i;
      continue;
    }
    out.push_back(point);
    i += length;
  }
  return out;
}

// A `[...]` set starting at pattern[at]: where it ends (one past its `]`), or npos when it has no `]` (the `[`
// is then itself). `matched` says whether `c` is in it.
std::size_t match_set(const std::u32string& pattern, std::size_t at, char32_t c, bool& matched) {
  std::size_t end = at + 1;
  if (end < pattern.size() && pattern[end] == U'!') ++end;
  if (end < pattern.size() && pattern[end] == U']') ++end;  // a `]` first is a member
  while (end < pattern.size() && pattern[end] != U']') ++end;
  if (end >= pattern.size()) return std::u32string::npos;
  std::size_t i = at + 1;
  const bool negated = pattern[i] == U'!';
  if (negated) ++i;
  bool in = false;
  while (i < end) {
    if (i + 2 < end && pattern[i + 1] == U'-') {
      in = in || (pattern[i] <= c && c <= pattern[i + 2]);  // a reversed range holds nothing
      i += 3;
    } else {
      in = in || pattern[i] == c;
      ++i;
    }
  }
  matched = in != negated;
  return end + 1;
}

}  // namespace

bool glob_match(std::string_view pattern_text, std::string_view path_text) {
  const std::u32string pattern = code_points(pattern_text);
  const std::u32string path = code_points(path_text);
  std::size_t p = 0, s = 0;
  // Where the last `*` was, and where in the path it is tried next: backtracking to it alone is enough.
  std::size_t star = std::u32string::npos, star_path = 0;
  while (s < path.size()) {
    if (p < pattern.size()) {
      if (pattern[p] == U'*') {
        while (p < pattern.size() && pattern[p] == U'*') ++p;
        star = p;
        star_path = s;
        continue;
      }
      if (pattern[p] == U'?') {
        ++p;
        ++s;
        continue;
      }
      if (pattern[p] == U'[') {
        bool matched = false;
        const std::size_t after = match_set(pattern, p, path[s], matched);
        if (after != std::u32string::npos) {
          if (matched) {
            p = after;
            ++s;
            continue;
          }
        } else if (path[s] == U'[') {
          ++p;
          ++s;
          continue;
        }
      } else if (pattern[p] == path[s]) {
        ++p;
        ++s;
        continue;
      }
    }
    if (star == std::u32string::npos) return false;
    p = star;
    s = ++star_path;
  }
  while (p < pattern.size() && pattern[p] == U'*') ++p;
  return p == pattern.size();
}

bool wanted(std::string_view path, const std::vector<std::string>& patterns) {
  if (patterns.empty()) return true;
  for (const auto& pattern : patterns) {
    if (glob_match(pattern.ends_with('/') ? pattern + "*" : pattern, path)) return true;
  }
  return false;
}

}  // namespace inferllama::prefetch
