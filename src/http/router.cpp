#include "http/router.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <span>
#include <vector>

#include "util/url.hpp"

namespace inferllama::http {
namespace {

std::vector<std::string_view> split(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

// Joins decoded segments [from, end) with '/'; nullopt if any escape is malformed. Decoded in place:
// a file's path is on every hit's way.
std::optional<std::string> join_decoded(const std::vector<std::string_view>& segs, std::size_t from) {
  std::size_t room = 0;
  for (std::size_t i = from; i < segs.size(); ++i) room += segs[i].size() + 1;
  std::string out(room, '\0');
  std::size_t size = 0;
  for (std::size_t i = from; i < segs.size(); ++i) {
    if (i > from) out[size++] = '/';
    const auto decoded = url::decode_to(
        segs[i], std::span(reinterpret_cast<std::uint8_t*>(out.data()) + size, out.size() - size), false);
    if (!decoded) return std::nullopt;
    size += *decoded;
  }
  out.resize(size);
  return out;
}

// A decoded segment or query value that would smuggle a line break, or any other control character, into
// a header, a log line or an upstream URL.
bool has_control(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

bool is_valid_revision(const std::optional<std::string>& rev) {
  return rev && !rev->empty() && !has_control(*rev);
}

bool is_action(std::string_view s) {
  return s == "revision" || s == "tree" || s == "paths-info" || s == "refs" || s == "torrent" || s == "magnet" ||
         s == "webseed";
}

Route api_route(RepoType type, const std::vector<std::string_view>& segs) {
  // segs: what follows /api/{type}s/ — a repo of one or two segments, then an action.
  std::size_t repo_len;
  if (segs.size() >= 3 && is_action(segs[2])) {
    repo_len = 2;
  } else if (segs.size() >= 2 && is_action(segs[1])) {
    repo_len = 1;
  } else if (segs.size() == 2 || segs.size() == 1) {
    repo_len = segs.size();
  } else {
    return NotFound{};
  }
  ApiRoute r;
  r.repo.type = type;
  for (std::size_t i = 0; i < repo_len; ++i) {
    if (!is_valid_repo_segment(segs[i])) return BadRequest{"invalid repository name"};
    if (i) r.repo.name += '/';
    r.repo.name += segs[i];
  }
  if (segs.size() == repo_len) return r;
  std::string_view action = segs[repo_len];
  std::size_t rest = repo_len + 1;
  if (action == "refs") {
    if (segs.size() != rest) return NotFound{};
    r.kind = ApiRoute::Kind::refs;
    return r;
  }
  if (segs.size() <= rest) return NotFound{};
  auto rev = url::decode(segs[rest]);
  if (!is_valid_revision(rev)) return BadRequest{"invalid revision"};
  r.rev = std::move(*rev);
  if (action == "revision") {
    // A revision may arrive unencoded ("refs/pr/1"): take the rest of the path.
    auto whole = join_decoded(segs, rest);
    if (!is_valid_revision(whole)) return BadRequest{"invalid revision"};
    r.rev = std::move(*whole);
    r.kind = ApiRoute::Kind::revision;
    return r;
  }
  if (action == "paths-info") {
    if (segs.size() != rest + 1) return NotFound{};
    r.kind = ApiRoute::Kind::paths_info;
    return r;
  }
  if (action == "webseed") {
    // {commit}/{torrent name}/{path...}: the name is the torrent's and says nothing more.
    if (segs.size() < rest + 3 || !is_commit_sha(r.rev)) return NotFound{};
    auto path = join_decoded(segs, rest + 2);
    if (!path || !url::is_safe_relative_path(*path)) return BadRequest{"invalid path"};
    r.kind = ApiRoute::Kind::webseed;
    r.path = std::move(*path);
    return r;
  }
  r.kind = action == "torrent"  ? ApiRoute::Kind::torrent
           : action == "magnet" ? ApiRoute::Kind::magnet
                                : ApiRoute::Kind::tree;
  if (segs.size() > rest + 1) {
    auto path = join_decoded(segs, rest + 1);
    if (!path) return BadRequest{"invalid path"};
    if (!path->empty() && !url::is_safe_relative_path(*path)) return BadRequest{"invalid path"};
    r.path = std::move(*path);
  }
  return r;
}

// The routes of the Hub's that the node serves itself, or NotFound.
Route hub_route(const std::vector<std::string_view>& segs) {
  if (segs.size() >= 2 && segs[0] == "api") {
    auto type = parse_repo_type(segs[1]);
    if (!type || segs[1] == "model" || segs[1] == "dataset" || segs[1] == "space") return NotFound{};
    return api_route(*type, std::vector<std::string_view>(segs.begin() + 2, segs.end()));
  }
  // /{datasets/|spaces/}{repo}/resolve/{rev}/{path...}
  RepoId repo;
  std::size_t start = 0;
  if (!segs.empty() && (segs[0] == "datasets" || segs[0] == "spaces")) {
    repo.type = *parse_repo_type(segs[0]);
    start = 1;
  }
  std::size_t resolve_at = 0;
  for (std::size_t i = start + 1; i <= start + 2 && i < segs.size(); ++i) {
    if (segs[i] == "resolve") {
      resolve_at = i;
      break;
    }
  }
  if (resolve_at == 0) return NotFound{};
  for (std::size_t i = start; i < resolve_at; ++i) {
    if (!is_valid_repo_segment(segs[i])) return BadRequest{"invalid repository name"};
    if (i > start) repo.name += '/';
    repo.name += segs[i];
  }
  if (segs.size() < resolve_at + 3) return NotFound{};
  auto rev = url::decode(segs[resolve_at + 1]);
  if (!is_valid_revision(rev)) return BadRequest{"invalid revision"};
  auto file = join_decoded(segs, resolve_at + 2);
  if (!file || !url::is_safe_relative_path(*file)) return BadRequest{"invalid file path"};
  return ResolveRoute{std::move(repo), std::move(*rev), std::move(*file)};
}

// The node's own namespaces: a path under them that names nothing is the node's 404, never the Hub's.
bool is_node_path(std::string_view path) {
  for (const std::string_view own :
       {"/api/inferllama", "/api/usage", "/p", "/announce", "/scrape", "/healthz", "/metrics"}) {
    if (path == own || (path.starts_with(own) && path[own.size()] == '/')) return true;
  }
  return false;
}

// A path the node passes to the Hub as it came: each segment decodes cleanly, holds no backslash or
// control character, and neither it nor any part of it between encoded slashes (a revision such as
// refs%2Fpr%2F1) is empty, `.` or `..`, so the upstream URL names the path the client named and no other.
Route upstream_route(std::string_view path) {
  if (path.size() > 1 && path.ends_with('/')) return BadRequest{"invalid path"};  // split() drops that empty segment
  const auto segs = split(path.substr(1));
  for (const auto seg : segs) {
    const auto decoded = url::decode(seg);
    if (!decoded || has_control(*decoded) || decoded->find('\\') != std::string::npos)
      return BadRequest{"invalid path"};
    for (const auto part : split(*decoded)) {
      if (part.empty() || part == "." || part == "..") return BadRequest{"invalid path"};
    }
    if (decoded->empty() || decoded->back() == '/') return BadRequest{"invalid path"};
  }
  UpstreamRoute r;
  // What follows /api/{type}s/ or the /datasets/ or /spaces/ prefix: namespace, name, action.
  const bool api = segs.size() >= 2 && segs[0] == "api";
  std::optional<RepoType> type = RepoType::model;
  std::size_t start = 0;
  if (api) {
    type = segs[1] == "model" || segs[1] == "dataset" || segs[1] == "space" ? std::nullopt : parse_repo_type(segs[1]);
    start = 2;
  } else if (!segs.empty() && (segs[0] == "datasets" || segs[0] == "spaces")) {
    type = parse_repo_type(segs[0]);
    start = 1;
  }
  if (type && segs.size() >= start + 3 && is_valid_repo_segment(segs[start]) &&
      is_valid_repo_segment(segs[start + 1])) {
    r.repo = RepoId{*type, std::string(segs[start]) + "/" + std::string(segs[start + 1])};
    r.action = std::string(segs[start + 2]);
    // The Hub's web pages of a repo (/{repo}/commits/main, ...) are not its content, whatever their name.
    r.reads_content = api ? (r.action == "commits" || r.action == "parquet") : r.action == "raw";
  }
  return r;
}

}  // namespace

bool is_passkey(std::string_view text) {
  return text.size() == 32 &&
         std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

Route route(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) return BadRequest{"invalid path"};
  if (path == "/") return ConsoleRoute{};
  if (path == "/healthz") return HealthRoute{};
  if (path == "/metrics") return MetricsRoute{};
  if (path == "/announce") return TrackerRoute{TrackerRoute::Kind::announce, ""};
  if (path == "/scrape") return TrackerRoute{TrackerRoute::Kind::scrape, ""};
  for (const auto kind : {TrackerRoute::Kind::announce, TrackerRoute::Kind::scrape}) {
    const std::string_view prefix = kind == TrackerRoute::Kind::announce ? "/announce/" : "/scrape/";
    if (!path.starts_with(prefix)) continue;
    const std::string_view passkey = path.substr(prefix.size());
    if (!is_passkey(passkey)) return NotFound{};
    return TrackerRoute{kind, std::string(passkey)};
  }
  if (path == "/api/usage") return UsageRoute{};
  constexpr std::string_view kAdmin = "/api/inferllama/";
  if (path == "/api/inferllama/pin" || path == "/api/inferllama/unpin" || path == "/api/inferllama/gc" ||
      path == "/api/inferllama/backup" || path == "/api/inferllama/mirror" || path == "/api/inferllama/cluster" ||
      path == "/api/inferllama/users" || path.starts_with("/api/inferllama/users/") || path == "/api/inferllama/keys" ||
      path.starts_with("/api/inferllama/keys/") || path == "/api/inferllama/orgs" ||
      path.starts_with("/api/inferllama/orgs/") || path == "/api/inferllama/invite" ||
      path == "/api/inferllama/overview" || path == "/api/inferllama/purge" || path == "/api/inferllama/rules" ||
      path == "/api/inferllama/rules/reload" || path == "/api/inferllama/refresh" ||
      path == "/api/inferllama/prefetch" || path == "/api/inferllama/prefetch/add" ||
      path == "/api/inferllama/prefetch/remove" || path.starts_with("/api/inferllama/scan/")) {
    return AdminRoute{std::string(path.substr(kAdmin.size()))};
  }
  if (constexpr std::string_view kConsole = "/api/inferllama/console/"; path.starts_with(kConsole)) {
    return ConsoleRoute{std::string(path.substr(kConsole.size()))};
  }
  // Where a Xet client is sent by the node's refusal (see hosting_handlers.cpp): every request there is
  // refused, and the client's error names the path, which says what to do.
  if (path.starts_with(kXetRefusedPath)) return BadRequest{std::string(kXetRefusal)};
  if (constexpr std::string_view kUpload = "/api/inferllama/lfs/"; path.starts_with(kUpload)) {
    const auto segs = split(path.substr(kUpload.size()));
    if (segs.empty() || segs.size() > 2 || segs[0].empty() || segs[0].size() > 4096 ||
        !std::all_of(segs[0].begin(), segs[0].end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) || c == '.'; }))
      return NotFound{};
    UploadRoute upload{UploadRoute::Kind::object, std::string(segs[0]), 0};
    if (segs.size() == 2) {
      if (segs[1] == "complete") {
        upload.kind = UploadRoute::Kind::complete;
      } else if (segs[1] == "verify") {
        upload.kind = UploadRoute::Kind::verify;
      } else if (std::from_chars(segs[1].data(), segs[1].data() + segs[1].size(), upload.part).ptr ==
                     segs[1].data() + segs[1].size() &&
                 upload.part > 0) {
        upload.kind = UploadRoute::Kind::part;
      } else {
        return NotFound{};
      }
    }
    return upload;
  }
  if (path.starts_with("/p/")) {
    // /p/{passkey}/{a resolve or web seed path}: the URLs of a torrent handed to a user.
    const std::string_view rest = path.substr(3);
    const auto slash = rest.find('/');
    if (slash == std::string_view::npos || !is_passkey(rest.substr(0, slash))) return NotFound{};
    Route inner = route(rest.substr(slash));
    if (auto* resolve = std::get_if<ResolveRoute>(&inner)) {
      resolve->passkey = std::string(rest.substr(0, slash));
    } else if (auto* api = std::get_if<ApiRoute>(&inner); api && api->kind == ApiRoute::Kind::webseed) {
      api->passkey = std::string(rest.substr(0, slash));
    } else if (!std::holds_alternative<BadRequest>(inner)) {
      return NotFound{};
    }
    return inner;
  }
  if (!path.starts_with("/")) return BadRequest{"invalid path"};
  // Also as decoded: a proxy between the node and a parent node may decode the path it passes on.
  if (is_node_path(path)) return NotFound{};
  if (path.find('%') != std::string_view::npos) {
    if (const auto decoded = url::decode(path); decoded && is_node_path(*decoded)) return NotFound{};
  }
  const auto segs = split(path.substr(1));
  Route routed = hub_route(segs);
  if (std::holds_alternative<NotFound>(routed)) return upstream_route(path);
  return routed;
}

std::optional<BadRequest> check_query(std::string_view query) {
  const auto pairs = url::parse_query_strict(query);
  if (!pairs) return BadRequest{"invalid query string"};
  for (const auto& [name, value] : *pairs) {
    if (has_control(name) || has_control(value)) return BadRequest{"invalid query string"};
  }
  return std::nullopt;
}

Route route_target(std::string_view target) {
  const auto [path, query] = url::split_target(target);
  Route routed = route(path);
  // A tracker's info_hash and peer_id are 20 binary bytes by design: its own parser reads them, and they
  // never reach a header or a URL.
  if (std::holds_alternative<TrackerRoute>(routed)) return routed;
  if (auto bad = check_query(query)) return *bad;
  return routed;
}

RouteId route_id(const Route& route) {
  if (std::holds_alternative<ResolveRoute>(route)) return RouteId::resolve;
  if (std::holds_alternative<HealthRoute>(route)) return RouteId::healthz;
  if (std::holds_alternative<MetricsRoute>(route)) return RouteId::metrics;
  if (std::holds_alternative<AdminRoute>(route)) return RouteId::admin;
  if (std::holds_alternative<UsageRoute>(route)) return RouteId::usage;
  if (const auto* tracker = std::get_if<TrackerRoute>(&route)) {
    return tracker->kind == TrackerRoute::Kind::announce ? RouteId::announce : RouteId::scrape;
  }
  if (const auto* api = std::get_if<ApiRoute>(&route)) {
    switch (api->kind) {
      case ApiRoute::Kind::info:
        return RouteId::api_info;
      case ApiRoute::Kind::revision:
        return RouteId::api_revision;
      case ApiRoute::Kind::tree:
        return RouteId::api_tree;
      case ApiRoute::Kind::paths_info:
        return RouteId::api_paths_info;
      case ApiRoute::Kind::refs:
        return RouteId::api_refs;
      case ApiRoute::Kind::torrent:
        return RouteId::api_torrent;
      case ApiRoute::Kind::magnet:
        return RouteId::api_magnet;
      case ApiRoute::Kind::webseed:
        return RouteId::webseed;
    }
  }
  if (std::holds_alternative<UpstreamRoute>(route)) return RouteId::upstream;
  if (std::holds_alternative<UploadRoute>(route)) return RouteId::upload;
  if (std::holds_alternative<ConsoleRoute>(route)) return RouteId::console;
  if (std::holds_alternative<BadRequest>(route)) return RouteId::bad_request;
  return RouteId::not_found;
}

const char* route_name(RouteId id) {
  static constexpr const char* kNames[kRouteIds] = {
      "not_found", "bad_request",  "healthz",  "metrics",        "admin",    "usage",       "resolve",
      "api_info",  "api_revision", "api_tree", "api_paths_info", "api_refs", "api_torrent", "api_magnet",
      "webseed",   "announce",     "scrape",   "upstream",       "upload",   "console"};
  return kNames[static_cast<std::size_t>(id)];
}

}  // namespace inferllama::http
