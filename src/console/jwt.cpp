#include "console/jwt.hpp"

#include <openssl/crypto.h>
#include <openssl/hmac.h>

#include <nlohmann/json.hpp>

namespace inferllama::console {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
// A cookie is at most 4 KiB; anything longer is not one of ours.
constexpr std::size_t kMaxToken = 4096;

int digit_of(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

std::array<unsigned char, 32> hmac_sha256(const JwtKey& key, std::string_view data) {
  std::array<unsigned char, 32> mac{};
  unsigned length = 0;
  HMAC(EVP_sha256(), key.secret.data(), static_cast<int>(key.secret.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac.data(), &length);
  return mac;
}

std::string_view as_chars(const std::array<unsigned char, 32>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace

std::string base64url(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::uint32_t bits = 0;
  int count = 0;
  for (const char c : bytes) {
    bits = bits << 8 | static_cast<unsigned char>(c);
    count += 8;
    while (count >= 6) {
      count -= 6;
      out += kAlphabet[(bits >> count) & 63];
    }
  }
  if (count > 0) out += kAlphabet[(bits << (6 - count)) & 63];
  return out;
}

std::optional<std::string> unbase64url(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t bits = 0;
  int count = 0;
  for (const char c : text) {
    const int value = digit_of(c);
    if (value < 0) return std::nullopt;
    bits = bits << 6 | static_cast<std::uint32_t>(value);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out += static_cast<char>((bits >> count) & 0xff);
    }
  }
  // The leftover bits must be zero: one encoding per value.
  if ((bits & ((1u << count) - 1)) != 0) return std::nullopt;
  return out;
}

std::string sign_jwt(std::string_view payload, const JwtKey& key) {
  const nlohmann::json header = {{"alg", "HS256"}, {"typ", "JWT"}, {"kid", key.id}};
  std::string token = base64url(header.dump()) + '.' + base64url(payload);
  const auto mac = hmac_sha256(key, token);
  token += '.';
  token += base64url(as_chars(mac));
  return token;
}

std::optional<std::string> verify_jwt(std::string_view token,
                                      const std::function<const JwtKey*(std::string_view kid)>& find) {
  if (token.size() > kMaxToken) return std::nullopt;
  const auto first = token.find('.');
  const auto second = first == std::string_view::npos ? first : token.find('.', first + 1);
  if (second == std::string_view::npos || token.find('.', second + 1) != std::string_view::npos) return std::nullopt;
  const auto header_text = unbase64url(token.substr(0, first));
  if (!header_text) return std::nullopt;
  const auto header = nlohmann::json::parse(*header_text, nullptr, /*allow_exceptions=*/false);
  auto text = [&](const char* name) -> std::string_view {
    const auto it = header.is_object() ? header.find(name) : header.end();
    return it != header.end() && it->is_string() ? std::string_view(it->get_ref<const std::string&>()) : "";
  };
  if (!header.is_object() || header.size() != 3 || text("alg") != "HS256" || text("typ") != "JWT" ||
      text("kid").empty()) {
    return std::nullopt;
  }
  const JwtKey* key = find(text("kid"));
  if (!key) return std::nullopt;
  const auto signature = unbase64url(token.substr(second + 1));
  const auto expected = hmac_sha256(*key, token.substr(0, second));
  if (!signature || signature->size() != expected.size() ||
      CRYPTO_memcmp(signature->data(), expected.data(), expected.size()) != 0) {
    return std::nullopt;
  }
  return unbase64url(token.substr(first + 1, second - first - 1));
}

}  // namespace inferllama::console
