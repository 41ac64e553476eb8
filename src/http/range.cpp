#include "http/range.hpp"

#include <charconv>
#include <optional>

namespace inferllama::http {
namespace {

std::optional<std::uint64_t> number(std::string_view text) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  if (text.empty()) return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
  return v;
}

}  // namespace

ByteRange parse_range(std::string_view header, std::uint64_t size) {
  ByteRange whole;
  if (header.empty()) return whole;
  constexpr std::string_view prefix = "bytes=";
  if (!header.starts_with(prefix)) return whole;
  std::string_view spec = header.substr(prefix.size());
  if (spec.find(',') != std::string_view::npos) return whole;
  auto dash = spec.find('-');
  if (dash == std::string_view::npos) return whole;
  std::string_view from = spec.substr(0, dash), to = spec.substr(dash + 1);
  ByteRange r{ByteRange::Kind::partial, 0, 0};
  if (from.empty()) {  // suffix: the last N bytes
    auto n = number(to);
    if (!n) return whole;
    if (*n == 0 || size == 0) return {ByteRange::Kind::unsatisfiable};
    r.first = *n >= size ? 0 : size - *n;
    r.last = size - 1;
    return r;
  }
  auto first = number(from);
  if (!first) return whole;
  std::optional<std::uint64_t> last;
  if (!to.empty()) {
    last = number(to);
    if (!last || *last < *first) return whole;
  }
  if (*first >= size) return {ByteRange::Kind::unsatisfiable};
  r.first = *first;
  r.last = last ? std::min(*last, size - 1) : size - 1;
  return r;
}

}  // namespace inferllama::http
