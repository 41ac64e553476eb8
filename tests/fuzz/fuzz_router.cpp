// libFuzzer target: the request router and the URL helpers it is built on (src/http/router.cpp,
// src/util/url.cpp). The input is a request target; the part before '?' is routed, the part after is
// parsed as a query string, and the whole input goes through decode / is_safe_relative_path / encode.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "fuzz_check.hpp"
#include "http/router.hpp"
#include "util/url.hpp"

namespace {

using namespace inferllama;

// Independent of url::is_safe_relative_path: what a path handed to the store must never contain.
void check_safe_path(const std::string& path, const char* what) {
  FUZZ_CHECK(!path.empty(), "%s: empty path", what);
  FUZZ_CHECK(path.front() != '/', "%s: leading '/' in \"%s\"", what, path.c_str());
  FUZZ_CHECK(path.find('\0') == std::string::npos, "%s: NUL in path", what);
  FUZZ_CHECK(path.find('\\') == std::string::npos, "%s: backslash in \"%s\"", what, path.c_str());
  for (unsigned char c : path) FUZZ_CHECK(c >= 0x20 && c != 0x7f, "%s: control character 0x%02x in path", what, c);
  std::string_view rest = path;
  while (true) {
    const auto slash = rest.find('/');
    const std::string_view seg = rest.substr(0, slash);
    FUZZ_CHECK(!seg.empty(), "%s: empty segment in \"%s\"", what, path.c_str());
    FUZZ_CHECK(seg != "..", "%s: '..' segment in \"%s\"", what, path.c_str());
    FUZZ_CHECK(seg != ".", "%s: '.' segment in \"%s\"", what, path.c_str());
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  FUZZ_CHECK(url::is_safe_relative_path(path), "%s: path \"%s\" fails is_safe_relative_path", what, path.c_str());
}

void check_repo_name(const std::string& name) {
  // One or two segments of [A-Za-z0-9._-], none "." or "..".
  FUZZ_CHECK(!name.empty(), "empty repo name");
  std::size_t segments = 0;
  std::string_view rest = name;
  while (true) {
    const auto slash = rest.find('/');
    const std::string_view seg = rest.substr(0, slash);
    ++segments;
    FUZZ_CHECK(!seg.empty() && seg != "." && seg != ".." && seg.size() <= 96, "bad repo segment in \"%s\"",
               name.c_str());
    for (char c : seg) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                      c == '_' || c == '.';
      FUZZ_CHECK(ok, "bad character 0x%02x in repo name", static_cast<unsigned char>(c));
    }
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  FUZZ_CHECK(segments <= 2, "repo name \"%s\" has %zu segments", name.c_str(), segments);
}

void check_route(std::string_view path) {
  const http::Route r = http::route(path);
  if (const auto* res = std::get_if<http::ResolveRoute>(&r)) {
    check_safe_path(res->path, "ResolveRoute.path");
    check_repo_name(res->repo.name);
    FUZZ_CHECK(!res->rev.empty(), "ResolveRoute with empty revision");
    FUZZ_CHECK(res->rev.find('\0') == std::string::npos, "ResolveRoute revision contains NUL");
  } else if (const auto* api = std::get_if<http::ApiRoute>(&r)) {
    check_repo_name(api->repo.name);
    FUZZ_CHECK(api->rev.find('\0') == std::string::npos, "ApiRoute revision contains NUL");
    // Trees, torrents and magnets of a folder or a file, and web seed files, name a path; nothing else does.
    const bool takes_path = api->kind == http::ApiRoute::Kind::tree || api->kind == http::ApiRoute::Kind::torrent ||
                            api->kind == http::ApiRoute::Kind::magnet || api->kind == http::ApiRoute::Kind::webseed;
    if (takes_path && !api->path.empty()) check_safe_path(api->path, "ApiRoute.path");
    if (!takes_path) FUZZ_CHECK(api->path.empty(), "ApiRoute of a kind without a path has one");
    if (api->kind == http::ApiRoute::Kind::revision || api->kind == http::ApiRoute::Kind::tree ||
        api->kind == http::ApiRoute::Kind::paths_info)
      FUZZ_CHECK(!api->rev.empty(), "ApiRoute needing a revision has none");
  } else if (const auto* passed = std::get_if<http::UpstreamRoute>(&r)) {
    // Passed to the Hub as it came: every segment, decoded, is a safe relative path of its own (an encoded
    // slash splits it), and the node's own namespaces never go.
    const auto decoded = url::decode(path);
    FUZZ_CHECK(decoded.has_value(), "UpstreamRoute of a path that does not decode");
    if (path.size() > 1) check_safe_path(decoded->substr(1), "UpstreamRoute");
    for (const std::string own :
         {"/api/inferllama", "/api/usage", "/p", "/announce", "/scrape", "/healthz", "/metrics"}) {
      FUZZ_CHECK(*decoded != own && !decoded->starts_with(own + "/"), "UpstreamRoute of the node's own path \"%s\"",
                 decoded->c_str());
    }
    if (passed->repo) check_repo_name(passed->repo->name);
    FUZZ_CHECK(!passed->reads_content || passed->repo, "UpstreamRoute reads the content of no repo");
  } else if (std::holds_alternative<http::HealthRoute>(r)) {
    FUZZ_CHECK(path == "/healthz", "HealthRoute for another path");
  } else if (std::holds_alternative<http::MetricsRoute>(r)) {
    FUZZ_CHECK(path == "/metrics", "MetricsRoute for another path");
  }
  const char* name = http::route_name(http::route_id(r));
  FUZZ_CHECK(name != nullptr && *name != '\0', "route_name returned nothing");
  if (path.find('\0') != std::string_view::npos)
    FUZZ_CHECK(std::holds_alternative<http::BadRequest>(r), "path with NUL not rejected");
}

void check_url(std::string_view text) {
  for (bool plus : {false, true}) {
    const auto d = url::decode(text, plus);
    if (d) FUZZ_CHECK(d->size() <= text.size(), "decode grew the text");
    if (text.find('%') == std::string_view::npos) {
      FUZZ_CHECK(d.has_value(), "decode failed without any escape");
      if (!plus) FUZZ_CHECK(*d == text, "decode changed text without escapes");
    }
  }
  // encode() output always decodes back to the input.
  for (bool keep_slash : {false, true}) {
    const std::string e = url::encode(text, keep_slash);
    const auto back = url::decode(e);
    FUZZ_CHECK(back && *back == text, "decode(encode(x)) != x");
  }
  const bool safe = url::is_safe_relative_path(text);
  if (safe) check_safe_path(std::string(text), "is_safe_relative_path");

  const auto [target_path, query] = url::split_target(text);
  if (text.find('?') == std::string_view::npos)
    FUZZ_CHECK(target_path == text && query.empty(), "split_target changed a target without '?'");
  else
    FUZZ_CHECK(target_path.size() + 1 + query.size() == text.size() && target_path.find('?') == std::string_view::npos,
               "split_target lost characters");
  const url::QueryList q = url::parse_query(query);
  std::size_t amps = 0;
  for (char c : query) amps += c == '&';
  FUZZ_CHECK(q.size() <= amps + 1, "parse_query returned %zu pairs for %zu '&'", q.size(), amps);
  check_route(target_path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check_route(text);
  check_url(text);
  return 0;
}
