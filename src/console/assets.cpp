#include "console/assets.hpp"

#include "cache/hashing.hpp"

namespace inferllama::console {
namespace {

std::string_view content_type_of(std::string_view name) {
  if (name.ends_with(".html")) return "text/html; charset=utf-8";
  if (name.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (name.ends_with(".css")) return "text/css; charset=utf-8";
  if (name.ends_with(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

}  // namespace

std::optional<AssetAnswer> find_asset(std::string_view name) {
  for (const Asset& asset : assets()) {
    if (asset.name != name) continue;
    // Hashed once per asset: the same ETag on every node of a version.
    static const auto etags = [] {
      std::vector<std::string> out;
      for (const Asset& a : assets()) out.push_back("\"" + cache::sha256(a.bytes).hex().substr(0, 32) + "\"");
      return out;
    }();
    return AssetAnswer{content_type_of(name), asset.bytes, etags[static_cast<std::size_t>(&asset - assets().data())]};
  }
  return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> page_headers() {
  return {{"Content-Security-Policy",
           "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"},
          {"Referrer-Policy", "no-referrer"},
          {"Cross-Origin-Opener-Policy", "same-origin"},
          {"Permissions-Policy", "camera=(), microphone=(), geolocation=()"},
          {"Cache-Control", "no-cache"}};
}

}  // namespace inferllama::console
