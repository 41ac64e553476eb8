#pragma once
#include <string>
#include <string_view>
#include <variant>

#include "inferllama/repo.hpp"

namespace inferllama::http {

struct HealthRoute {};
struct MetricsRoute {};
// The node's own administration (loopback callers only): pin, unpin, gc, mirror.
struct AdminRoute {
  std::string action;
};
struct ResolveRoute {
  RepoId repo;
  std::string rev;   // decoded ("refs/pr/1")
  std::string path;  // decoded, checked by url::is_safe_relative_path
};
struct ApiRoute {
  // torrent, magnet: /api/{type}s/{repo}/torrent/{rev}[/{path}]; webseed: .../webseed/{commit}/{name}/{path}
  enum class Kind { info, revision, tree, paths_info, refs, torrent, magnet, webseed };
  Kind kind = Kind::info;
  RepoId repo;
  std::string rev;
  std::string path;  // tree, torrent and magnet: may be empty; webseed: what follows the torrent's name
};
// The node's BitTorrent tracker: GET /announce and GET /scrape (the query carries the parameters).
struct TrackerRoute {
  enum class Kind { announce, scrape };
  Kind kind = Kind::announce;
};
struct BadRequest {
  std::string message;
};
struct NotFound {};

using Route =
    std::variant<NotFound, BadRequest, HealthRoute, MetricsRoute, AdminRoute, ResolveRoute, ApiRoute, TrackerRoute>;

// A short name for metrics and logs: "resolve", "api_tree", "healthz", ...
const char* route_name(const Route& route);

// Maps a request path (no query) onto the Hub's routes, decoding each segment once. Hostile paths
// (traversal, NUL, malformed escapes) become BadRequest before anything touches the disk or the Hub.
Route route(std::string_view path);

}  // namespace inferllama::http
