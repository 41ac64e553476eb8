// JSON Web Tokens (RFC 7519) as the console's session cookie carries them: compact JWS (RFC 7515) with
// HS256 only. A token names its key by `kid`, so keys rotate without signing anyone out; any other
// algorithm (`none` included) is refused before a signature is looked at.
#pragma once
#include <array>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace inferllama::console {

struct JwtKey {
  std::string id;  // the header's "kid"
  std::array<unsigned char, 32> secret{};
};

// RFC 4648 §5 without padding, as JWS uses it.
std::string base64url(std::string_view bytes);
std::optional<std::string> unbase64url(std::string_view text);

// header.payload.signature, `payload` being the claims' JSON.
std::string sign_jwt(std::string_view payload, const JwtKey& key);
// The payload's JSON when the header is {"alg":"HS256","typ":"JWT","kid":K}, `find(K)` knows K and the
// signature holds; nullopt for anything else. The claims (exp, ...) are the caller's to check.
std::optional<std::string> verify_jwt(std::string_view token,
                                      const std::function<const JwtKey*(std::string_view kid)>& find);

}  // namespace inferllama::console
