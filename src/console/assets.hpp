// The console's static files (src/console/web/), compiled into the binary by embed_assets.cmake.
#pragma once
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace inferllama::console {

struct Asset {
  std::string_view name;  // "index.html", "app.js", ...
  std::string_view bytes;
};
std::span<const Asset> assets();

// What the node answers for a console page: GET / is index.html, GET /console/{name} the others.
struct AssetAnswer {
  std::string_view content_type;
  std::string_view body;
  std::string etag;  // strong, from the bytes
};
std::optional<AssetAnswer> find_asset(std::string_view name);

// The fields every console page is sent with: a strict Content-Security-Policy (no inline script or style,
// nothing from another origin), no framing, no referrer.
std::vector<std::pair<std::string, std::string>> page_headers();

}  // namespace inferllama::console
