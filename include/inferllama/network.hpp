// Network addresses as settings name them: HOST:PORT (where a listener binds) and IP networks in CIDR
// form ("10.0.0.0/8", "::1/128", "192.0.2.7": which peers a setting trusts).
#pragma once
#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferllama {

// HOST:PORT: "0.0.0.0:8080", "localhost:0", or an IPv6 address in brackets, "[::1]:8080" (a %zone allowed).
// Port 0 asks for any free port. The configuration validates every listen setting with parse, so a
// setting load_config returned always parses.
struct HostPort {
  std::string host;  // without brackets: "::1"
  std::uint16_t port = 0;

  // nullopt when `text` is not HOST:PORT; `error` (if given) then says why.
  static std::optional<HostPort> parse(std::string_view text, std::string* error = nullptr) {
    auto fail = [&](std::string_view why) -> std::optional<HostPort> {
      if (error) *error = std::string(why) + " (expected HOST:PORT, e.g. 0.0.0.0:8080 or [::1]:8080)";
      return std::nullopt;
    };
    auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
    auto is_name = [&](char c) {
      return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '-' || c == '_';
    };
    std::string_view host;
    std::string_view port;
    if (!text.empty() && text.front() == '[') {
      const auto close = text.find(']');
      if (close == std::string_view::npos) return fail("missing ']'");
      host = text.substr(1, close - 1);
      if (close + 1 >= text.size() || text[close + 1] != ':') return fail("missing ':PORT' after ']'");
      port = text.substr(close + 2);
      if (host.find(':') == std::string_view::npos) return fail("brackets are for IPv6 addresses");
      // Letters, '_' and '-' for a %zone suffix.
      if (!std::all_of(host.begin(), host.end(), [&](char c) { return is_name(c) || c == ':' || c == '%'; }))
        return fail("invalid character in IPv6 address");
    } else {
      const auto colon = text.rfind(':');
      if (colon == std::string_view::npos) return fail("missing ':PORT'");
      host = text.substr(0, colon);
      port = text.substr(colon + 1);
      if (host.find(':') != std::string_view::npos) return fail("an IPv6 address needs brackets");
      if (!std::all_of(host.begin(), host.end(), is_name)) return fail("invalid character in host");
    }
    if (host.empty()) return fail("empty host (use 0.0.0.0 for all interfaces)");
    unsigned number = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), is_digit) || ec != std::errc() ||
        end != port.data() + port.size() || number > 65535)
      return fail("port must be a number 0..65535");
    return HostPort{std::string(host), static_cast<std::uint16_t>(number)};
  }

  // As parse reads it back: an IPv6 host in brackets.
  std::string str() const {
    const bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  }

  friend bool operator==(const HostPort&, const HostPort&) = default;
};

// An address as 16 bytes: IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d), so one network test serves both.
using Address16 = std::array<std::uint8_t, 16>;

inline std::optional<Address16> parse_address(std::string_view text) {
  const std::string s(text);
  Address16 out{};
  in_addr v4{};
  if (::inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    out[10] = out[11] = 0xff;
    std::copy_n(reinterpret_cast<const std::uint8_t*>(&v4), 4, out.begin() + 12);
    return out;
  }
  if (::inet_pton(AF_INET6, s.c_str(), out.data()) == 1) return out;
  return std::nullopt;
}

struct Network {
  Address16 base{};
  unsigned prefix = 128;  // in the 128-bit (mapped) space

  bool contains(const Address16& address) const {
    for (unsigned bit = 0; bit < prefix; bit += 8) {
      const unsigned bits = std::min(8u, prefix - bit);
      const std::uint8_t mask = static_cast<std::uint8_t>(0xff00 >> bits);
      if ((address[bit / 8] & mask) != (base[bit / 8] & mask)) return false;
    }
    return true;
  }
};

// "ADDRESS[/PREFIX]"; an IPv4 prefix counts IPv4 bits (0..32). nullopt when malformed.
inline std::optional<Network> parse_network(std::string_view text) {
  const auto slash = text.find('/');
  auto address = parse_address(text.substr(0, slash));
  if (!address) return std::nullopt;
  const bool v4 = text.substr(0, slash).find(':') == std::string_view::npos;
  unsigned prefix = v4 ? 32 : 128;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (ec != std::errc() || end != digits.data() + digits.size() || digits.empty() || prefix > (v4 ? 32u : 128u))
      return std::nullopt;
  }
  return Network{*address, v4 ? prefix + 96 : prefix};
}

// A list of networks separated by commas or spaces; nullopt names the first bad entry through `bad`.
inline std::optional<std::vector<Network>> parse_networks(std::string_view text, std::string* bad = nullptr) {
  std::vector<Network> out;
  while (!text.empty()) {
    const auto end = text.find_first_of(", ");
    const std::string_view item = text.substr(0, end);
    if (!item.empty()) {
      auto network = parse_network(item);
      if (!network) {
        if (bad) *bad = std::string(item);
        return std::nullopt;
      }
      out.push_back(*network);
    }
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return out;
}

}  // namespace inferllama
