#include "http/forwarded.hpp"

#include <algorithm>
#include <cctype>

namespace inferllama::http {
namespace {

bool is_trusted(const Address16& address, const std::vector<Network>& trusted) {
  return std::any_of(trusted.begin(), trusted.end(), [&](const Network& n) { return n.contains(address); });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// Splits comma-separated list elements of every field, in order.
std::vector<std::string_view> elements(const std::vector<std::string_view>& fields) {
  std::vector<std::string_view> out;
  for (std::string_view field : fields) {
    while (true) {
      const auto comma = field.find(',');
      out.push_back(trim(field.substr(0, comma)));
      if (comma == std::string_view::npos) break;
      field.remove_prefix(comma + 1);
    }
  }
  return out;
}

// The value of `name=` in one Forwarded element ("for=192.0.2.1;proto=https"), unquoted; "" if absent.
std::string_view parameter(std::string_view element, std::string_view name) {
  while (!element.empty()) {
    const auto semicolon = element.find(';');
    const std::string_view pair = trim(element.substr(0, semicolon));
    const auto eq = pair.find('=');
    if (eq != std::string_view::npos && iequals(trim(pair.substr(0, eq)), name)) {
      std::string_view value = trim(pair.substr(eq + 1));
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
      return value;
    }
    if (semicolon == std::string_view::npos) break;
    element.remove_prefix(semicolon + 1);
  }
  return {};
}

// A hop's address: "192.0.2.1", "192.0.2.1:4711", "[2001:db8::1]", "[2001:db8::1]:4711" or "2001:db8::1".
std::optional<Address16> hop_address(std::string_view hop) {
  if (hop.starts_with('[')) {
    const auto close = hop.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    return parse_address(hop.substr(1, close - 1));
  }
  if (std::count(hop.begin(), hop.end(), ':') == 1) hop = hop.substr(0, hop.find(':'));
  return parse_address(hop);
}

}  // namespace

ClientOrigin client_origin(const Address16& peer, const std::vector<Network>& trusted,
                           const ForwardedHeaders& headers) {
  ClientOrigin origin{peer, false};
  if (trusted.empty() || !is_trusted(peer, trusted)) return origin;
  std::vector<std::string_view> hops;
  std::string_view proto = trim(headers.x_forwarded_proto);
  if (!headers.forwarded.empty()) {
    const auto list = elements(headers.forwarded);
    for (std::string_view element : list) hops.push_back(parameter(element, "for"));
    // The proto the client used is what the proxy nearest the client saw: the element of the hop chosen.
    proto = {};
    for (auto it = list.rbegin(); it != list.rend(); ++it) {
      const auto address = hop_address(parameter(*it, "for"));
      if (!address) break;
      proto = parameter(*it, "proto");
      if (!is_trusted(*address, trusted)) break;
    }
  } else {
    hops = elements(headers.x_forwarded_for);
    // X-Forwarded-Proto may itself be a list when proxies append: the first is the client's.
    proto = trim(proto.substr(0, proto.find(',')));
  }
  for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
    const auto address = hop_address(*it);
    if (!address) break;
    origin.address = *address;
    if (!is_trusted(*address, trusted)) break;
  }
  origin.https = iequals(proto, "https");
  return origin;
}

}  // namespace inferllama::http
