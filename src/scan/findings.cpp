#include "scan/findings.hpp"

#include <algorithm>
#include <limits>

namespace inferllama::scan {

std::string printable(std::string_view text, std::size_t limit) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char ch : text) {
    const auto byte = static_cast<unsigned char>(ch);
    if (byte >= 0x20 && byte < 0x7f) {
      out += ch;
    } else {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    }
    if (out.size() > limit) break;
  }
  if (out.size() > limit) {
    out.resize(limit - 3);
    out += "...";
  }
  return out;
}

void Findings::add(std::string_view text) {
  std::string finding = printable(text);
  if (std::find(kept_.begin(), kept_.end(), finding) != kept_.end()) return;
  if (total_ < std::numeric_limits<std::uint32_t>::max()) ++total_;
  if (kept_.size() < kMaxFindings) kept_.push_back(std::move(finding));
}

void Findings::count_more(std::uint32_t n) {
  total_ =
      n > std::numeric_limits<std::uint32_t>::max() - total_ ? std::numeric_limits<std::uint32_t>::max() : total_ + n;
}

}  // namespace inferllama::scan
