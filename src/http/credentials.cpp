#include "http/credentials.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <cctype>

namespace inferllama::http {

std::string_view bearer_of(std::string_view authorization) {
  if (authorization.size() < 7) return {};
  for (std::size_t i = 0; i < 6; ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != "bearer"[i]) return {};
  }
  if (authorization[6] != ' ') return {};
  std::string_view token = authorization.substr(7);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  return token;
}

bool same_secret(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string client_network(const boost::asio::ip::address& address) {
  namespace ip = boost::asio::ip;
  if (address.is_v4()) return address.to_string();
  const auto v6 = address.to_v6();
  if (v6.is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, v6).to_string();
  auto bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return ip::address_v6(bytes).to_string() + "/64";
}

std::string redact_target(std::string_view target) {
  std::string out(target);
  for (std::string_view prefix : {"/p/", "/announce/", "/scrape/"}) {
    if (out.starts_with(prefix) && out.size() >= prefix.size() + 32) out.replace(prefix.size(), 32, "<passkey>");
  }
  // An upload URL is its own credential, and names its repo and user.
  if (constexpr std::string_view kUpload = "/api/inferllama/lfs/"; out.starts_with(kUpload)) {
    const auto end = out.find_first_of("/?", kUpload.size());
    out.replace(kUpload.size(), (end == std::string::npos ? out.size() : end) - kUpload.size(), "<ticket>");
  }
  return out;
}

}  // namespace inferllama::http
