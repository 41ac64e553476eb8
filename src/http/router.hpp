#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "inferllama/repo.hpp"

namespace inferllama::http {

struct HealthRoute {};
struct MetricsRoute {};
// The node's own administration (the admin key, or loopback callers when the node has none): pin, unpin,
// gc, backup, mirror, refresh, cluster (GET), rules (GET) and rules/reload (POST), prefetch (GET), prefetch/add,
// prefetch/remove, users/... keys/... (the rest of the path, still encoded, for usage::answer_admin), orgs/...
// (for hosting::answer_org_admin) and scan/{repo}/resolve/{rev}/{path} (a file's scan verdict).
struct AdminRoute {
  std::string action;
};
// GET /api/usage: a user's own usage records, or everyone's for the admin.
struct UsageRoute {};
struct ResolveRoute {
  RepoId repo;
  std::string rev;   // decoded ("refs/pr/1")
  std::string path;  // decoded, checked by url::is_safe_relative_path
  // From a /p/{passkey}/ prefix: how a torrent handed to a user names its web seed, since BitTorrent
  // clients send no Authorization header. "" otherwise.
  std::string passkey;
};
struct ApiRoute {
  // torrent, magnet: /api/{type}s/{repo}/torrent/{rev}[/{path}]; webseed: .../webseed/{commit}/{name}/{path}
  enum class Kind { info, revision, tree, paths_info, refs, torrent, magnet, webseed };
  Kind kind = Kind::info;
  RepoId repo;
  std::string rev;
  std::string path;     // tree, torrent and magnet: may be empty; webseed: what follows the torrent's name
  std::string passkey;  // webseed only: from a /p/{passkey}/ prefix (see ResolveRoute)
};
// The node's BitTorrent tracker: GET /announce[/{passkey}] and GET /scrape[/{passkey}] (the query carries
// the parameters).
struct TrackerRoute {
  enum class Kind { announce, scrape };
  Kind kind = Kind::announce;
  std::string passkey;  // a private tracker's user passkey, or ""
};
// Any other route of the Hub's (listings, whoami, commits, discussions, dataset parquet files, /raw/ files):
// passed to the upstream as it came. `repo` and `action` when the path names a repo and something of it:
// /api/{type}s/{namespace}/{name}/{action}/... or /{datasets/|spaces/}{namespace}/{name}/{action}/...
struct UpstreamRoute {
  std::optional<RepoId> repo;
  std::string action;
  // It reads a repo's content: a file (/{repo}/raw/...), its history (/api/{type}s/{repo}/commits/...) or
  // its dataset's parquet listing (/api/datasets/{repo}/parquet...), public when the repo is.
  bool reads_content = false;
};
// A hosted repo's LFS upload URL, which carries its own authorisation (the clients send none on these):
// PUT /api/inferllama/lfs/{ticket} (a whole object), PUT .../{ticket}/{part}, POST .../{ticket}/complete,
// POST .../{ticket}/verify.
struct UploadRoute {
  enum class Kind { object, part, complete, verify };
  Kind kind = Kind::object;
  std::string ticket;
  unsigned part = 0;
};
// The web console: its page at / and its files at /api/inferllama/console/static/{name} (under the node's
// own prefix, where no Hub repo can be), and its JSON API at /api/inferllama/console/{action} (cookies and
// X-CSRF-Token, never keys).
struct ConsoleRoute {
  std::string action;  // "" for the page; "static/{name}"; else the API's, still encoded
};
struct BadRequest {
  std::string message;
};
struct NotFound {};

using Route = std::variant<NotFound, BadRequest, HealthRoute, MetricsRoute, AdminRoute, UsageRoute, ResolveRoute,
                           ApiRoute, TrackerRoute, UpstreamRoute, UploadRoute, ConsoleRoute>;

// Hosted repos take no Xet uploads: a Xet client's storage calls go here and are refused with this message.
inline constexpr std::string_view kXetRefusedPath = "/api/inferllama/xet-refused/";
inline constexpr std::string_view kXetRefusal =
    "this node does not take Xet uploads: set HF_HUB_DISABLE_XET=1 and upload again (the files then go "
    "through the node's Git LFS endpoint)";

// A user's passkey: 32 lowercase hex characters.
bool is_passkey(std::string_view text);

// What a request was, for metrics and logs: a fixed set, so that counters per route need no lookup.
enum class RouteId {
  not_found,
  bad_request,
  healthz,
  metrics,
  admin,
  usage,
  resolve,
  api_info,
  api_revision,
  api_tree,
  api_paths_info,
  api_refs,
  api_torrent,
  api_magnet,
  webseed,
  announce,
  scrape,
  upstream,
  upload,
  console
};
inline constexpr std::size_t kRouteIds = 20;
RouteId route_id(const Route& route);
// A short name: "resolve", "api_tree", "healthz", ...
const char* route_name(RouteId id);

// Maps a request path (no query) onto the Hub's routes, decoding each segment once. Hostile paths
// (traversal, NUL, malformed escapes) become BadRequest before anything touches the disk or the Hub. The
// node's own paths (/api/inferllama/, /api/usage, /p/, the tracker's) that name nothing are NotFound, never
// passed upstream; any other path the node does not serve itself is an UpstreamRoute.
Route route(std::string_view path);
// A query string every name and value of which decodes cleanly and holds no control character; else why not.
std::optional<BadRequest> check_query(std::string_view query);
// route() of a whole request target, whose query must pass check_query (but a tracker's, whose binary
// info_hash and peer_id its own parser reads): the server's entry point.
Route route_target(std::string_view target);

}  // namespace inferllama::http
