#include "util/url.hpp"

#include <algorithm>
#include <cctype>

#include "inferllama/digest.hpp"

namespace inferllama::url {

std::string encode(std::string_view text, bool keep_slash) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                      c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
    if (unreserved) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(digits[c >> 4]);
      out.push_back(digits[c & 0xf]);
    }
  }
  return out;
}

std::optional<std::size_t> decode_to(std::string_view text, std::span<std::uint8_t> out, bool plus_is_space) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (n == out.size()) return std::nullopt;
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      const int hi = hex_digit(text[i + 1]), lo = hex_digit(text[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out[n++] = static_cast<std::uint8_t>(hi << 4 | lo);
      i += 2;
    } else {
      out[n++] = static_cast<std::uint8_t>(c == '+' && plus_is_space ? ' ' : c);
    }
  }
  return n;
}

std::optional<std::string> decode(std::string_view text, bool plus_is_space) {
  std::string out(text.size(), '\0');
  const auto size = decode_to(text, std::span(reinterpret_cast<std::uint8_t*>(out.data()), out.size()), plus_is_space);
  if (!size) return std::nullopt;
  out.resize(*size);
  return out;
}

namespace {
// The decoded pairs; a pair with a malformed escape is skipped, or, when `strict`, fails the whole query.
std::optional<QueryList> decode_pairs(std::string_view query, bool strict) {
  QueryList out;
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    auto key = decode(pair.substr(0, eq), true);
    auto value = eq == std::string_view::npos ? std::optional<std::string>("") : decode(pair.substr(eq + 1), true);
    if (key && value) {
      out.emplace_back(std::move(*key), std::move(*value));
    } else if (strict) {
      return std::nullopt;
    }
  }
  return out;
}
}  // namespace

std::optional<std::vector<std::string>> decoded_segments(std::string_view path) {
  std::vector<std::string> segments;
  while (true) {
    const auto slash = path.find('/');
    auto segment = decode(path.substr(0, slash));
    if (!segment) return std::nullopt;
    segments.push_back(std::move(*segment));
    if (slash == std::string_view::npos) return segments;
    path.remove_prefix(slash + 1);
  }
}

QueryList parse_query(std::string_view query) {
  return *decode_pairs(query, false);
}

std::optional<QueryList> parse_query_strict(std::string_view query) {
  return decode_pairs(query, true);
}

std::pair<std::string_view, std::string_view> split_target(std::string_view target) {
  auto q = target.find('?');
  if (q == std::string_view::npos) return {target, {}};
  return {target.substr(0, q), target.substr(q + 1)};
}

std::string_view host_of(std::string_view url) {
  const auto scheme = url.find("://");
  std::string_view rest = scheme == std::string_view::npos ? url : url.substr(scheme + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (rest.starts_with('[')) return rest.substr(0, rest.find(']') + 1);
  return rest.substr(0, rest.find(':'));
}

std::optional<std::string> http_origin(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::nullopt;
  std::string scheme(url.substr(0, scheme_end));
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme != "http" && scheme != "https") return std::nullopt;
  std::string_view authority = url.substr(scheme_end + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  if (authority.empty() || authority.find('@') != std::string_view::npos) return std::nullopt;
  std::string_view host = authority;
  std::string_view port;
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(0, close + 1);
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (!rest.starts_with(':')) return std::nullopt;
      port = rest.substr(1);
    }
  } else if (auto colon = authority.find(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty() || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  if (port.empty()) port = scheme == "https" ? "443" : "80";
  while (port.size() > 1 && port.front() == '0') port.remove_prefix(1);
  std::string origin = scheme + "://";
  for (char c : host) origin.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  origin += ':';
  origin += port;
  return origin;
}

std::string redact(std::string_view url) {
  std::string_view kept = url.substr(0, url.find_first_of("?#"));
  std::string out;
  const auto scheme_end = kept.find("://");
  if (scheme_end == std::string_view::npos) {
    out = kept;
  } else {
    const auto authority_start = scheme_end + 3;
    const auto authority_end = std::min(kept.size(), kept.find('/', authority_start));
    const auto at = kept.substr(0, authority_end).rfind('@');
    out = at == std::string_view::npos || at < authority_start
              ? std::string(kept)
              : std::string(kept.substr(0, authority_start)) + std::string(kept.substr(at + 1));
  }
  // A Location is whatever an upstream wrote: it must not start a line of its own in the log.
  for (char& ch : out) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = '?';
  }
  return out;
}

bool is_safe_relative_path(std::string_view path) {
  if (path.empty() || path.front() == '/') return false;
  for (unsigned char c : path) {
    if (c < 0x20 || c == 0x7f || c == '\\') return false;
  }
  while (!path.empty()) {
    auto slash = path.find('/');
    std::string_view segment = path.substr(0, slash);
    if (segment.empty() || segment == "." || segment == "..") return false;
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
    if (path.empty()) return false;  // trailing slash
  }
  return true;
}

}  // namespace inferllama::url
