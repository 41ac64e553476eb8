#include "http/router.hpp"

#include <gtest/gtest.h>

#include <array>
#include <map>

#include "http/rate_limit_headers.hpp"
#include "util/url.hpp"

namespace inferllama::http {
namespace {

TEST(Router, ResolveForEveryRepoType) {
  auto r = route("/acme/tiny/resolve/main/config.json");
  auto* res = std::get_if<ResolveRoute>(&r);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->repo.type, RepoType::model);
  EXPECT_EQ(res->repo.name, "acme/tiny");
  EXPECT_EQ(res->rev, "main");
  EXPECT_EQ(res->path, "config.json");

  r = route("/gpt2/resolve/main/a/b.bin");
  ASSERT_TRUE(std::get_if<ResolveRoute>(&r));
  EXPECT_EQ(std::get<ResolveRoute>(r).repo.name, "gpt2");
  EXPECT_EQ(std::get<ResolveRoute>(r).path, "a/b.bin");

  r = route("/datasets/acme/data/resolve/v1/x%20y/na%C3%AFve.txt");
  ASSERT_TRUE(std::get_if<ResolveRoute>(&r));
  EXPECT_EQ(std::get<ResolveRoute>(r).repo.type, RepoType::dataset);
  EXPECT_EQ(std::get<ResolveRoute>(r).path, "x y/na\xC3\xAFve.txt");

  r = route("/spaces/acme/app/resolve/refs%2Fpr%2F1/app.py");
  ASSERT_TRUE(std::get_if<ResolveRoute>(&r));
  EXPECT_EQ(std::get<ResolveRoute>(r).repo.type, RepoType::space);
  EXPECT_EQ(std::get<ResolveRoute>(r).rev, "refs/pr/1");
}

TEST(Router, HostilePathsAreBadRequests) {
  for (const char* path :
       {"/acme/tiny/resolve/main/..%2Fsecret", "/acme/tiny/resolve/main/a/../b",
        "/acme/tiny/resolve/main/%2Fetc%2Fpasswd", "/acme/tiny/resolve/main/a%00b", "/acme/tiny/resolve/main/a%zz",
        "/acme/../resolve/main/x", "/acme/tiny/resolve/main/a//b", "/acme/tiny/resolve/main/a\\b"}) {
    auto r = route(path);
    EXPECT_TRUE(std::holds_alternative<BadRequest>(r)) << path;
  }
}

TEST(Router, ApiRoutes) {
  auto r = route("/api/models/acme/tiny");
  ASSERT_TRUE(std::get_if<ApiRoute>(&r));
  EXPECT_EQ(std::get<ApiRoute>(r).kind, ApiRoute::Kind::info);

  r = route("/api/models/acme/tiny/revision/refs%2Fpr%2F1");
  ASSERT_TRUE(std::get_if<ApiRoute>(&r));
  EXPECT_EQ(std::get<ApiRoute>(r).kind, ApiRoute::Kind::revision);
  EXPECT_EQ(std::get<ApiRoute>(r).rev, "refs/pr/1");

  r = route("/api/datasets/acme/data/tree/main/sub/dir");
  ASSERT_TRUE(std::get_if<ApiRoute>(&r));
  EXPECT_EQ(std::get<ApiRoute>(r).kind, ApiRoute::Kind::tree);
  EXPECT_EQ(std::get<ApiRoute>(r).repo.type, RepoType::dataset);
  EXPECT_EQ(std::get<ApiRoute>(r).path, "sub/dir");

  r = route("/api/models/gpt2/tree/main");
  ASSERT_TRUE(std::get_if<ApiRoute>(&r));
  EXPECT_EQ(std::get<ApiRoute>(r).repo.name, "gpt2");

  r = route("/api/spaces/acme/app/paths-info/main");
  ASSERT_TRUE(std::get_if<ApiRoute>(&r));
  EXPECT_EQ(std::get<ApiRoute>(r).kind, ApiRoute::Kind::paths_info);

  r = route("/api/models/acme/tiny/refs");
  ASSERT_TRUE(std::get_if<ApiRoute>(&r));
  EXPECT_EQ(std::get<ApiRoute>(r).kind, ApiRoute::Kind::refs);

  // Found by fuzz_router: a NUL in a later segment of an unencoded revision.
  EXPECT_TRUE(std::holds_alternative<BadRequest>(route("/api/models/acme/tiny/revision/main/%00")));
  EXPECT_TRUE(std::holds_alternative<BadRequest>(route("/api/models/ac%20me/x")));
  EXPECT_TRUE(std::holds_alternative<HealthRoute>(route("/healthz")));
}

TEST(Router, OtherHubRoutesGoUpstream) {
  auto r = route("/api/models");
  ASSERT_TRUE(std::get_if<UpstreamRoute>(&r));
  EXPECT_FALSE(std::get<UpstreamRoute>(r).repo);
  EXPECT_TRUE(std::holds_alternative<UpstreamRoute>(route("/api/whoami-v2")));
  EXPECT_TRUE(std::holds_alternative<UpstreamRoute>(route("/api/things/acme/x")));

  r = route("/api/datasets/acme/data/commits/main");
  ASSERT_TRUE(std::get_if<UpstreamRoute>(&r));
  ASSERT_TRUE(std::get<UpstreamRoute>(r).repo);
  EXPECT_EQ(std::get<UpstreamRoute>(r).repo->type, RepoType::dataset);
  EXPECT_EQ(std::get<UpstreamRoute>(r).repo->name, "acme/data");
  EXPECT_EQ(std::get<UpstreamRoute>(r).action, "commits");
  r = route("/spaces/acme/app/raw/main/app.py");
  ASSERT_TRUE(std::get_if<UpstreamRoute>(&r));
  EXPECT_EQ(std::get<UpstreamRoute>(r).repo->key(), (RepoId{RepoType::space, "acme/app"}.key()));
  EXPECT_EQ(std::get<UpstreamRoute>(r).action, "raw");
  r = route("/acme/tiny/raw/main/config.json");
  ASSERT_TRUE(std::get_if<UpstreamRoute>(&r));
  EXPECT_EQ(std::get<UpstreamRoute>(r).repo->name, "acme/tiny");
  // Singular types are not the API's: passed on, with no repo named.
  r = route("/api/model/acme/tiny/commits/main");
  ASSERT_TRUE(std::get_if<UpstreamRoute>(&r));
  EXPECT_FALSE(std::get<UpstreamRoute>(r).repo);

  // An encoded slash in a revision; what reads a repo's content, and what is only a page about it.
  r = route("/api/models/acme/tiny/commits/refs%2Fpr%2F1");
  ASSERT_TRUE(std::get_if<UpstreamRoute>(&r));
  EXPECT_TRUE(std::get<UpstreamRoute>(r).reads_content);
  EXPECT_FALSE(std::get<UpstreamRoute>(route("/acme/tiny/commits/main")).reads_content);  // a web page
  EXPECT_TRUE(std::get<UpstreamRoute>(route("/acme/tiny/raw/main/x")).reads_content);

  // Nothing that would let the upstream URL name another path than the client's.
  for (const char* hostile :
       {"/api/models/../inferllama/users", "/api/%2e%2e/x", "/a//b", "/api/models/a%2F..%2Fb", "/a/b%2F", "/a/%2Fb",
        "/a/b/", "/api/models/", "/a/b%5c/raw", "/a/%0d%0aX:%20y", "/a/%zz", "/api/models/."}) {
    EXPECT_TRUE(std::holds_alternative<BadRequest>(route(hostile))) << hostile;
  }
  // The node's own namespaces are never the Hub's.
  for (const char* own : {"/api/inferllama/nothing", "/api/inferllama", "/api/usage/x", "/p/x", "/announce/x/y",
                          "/scrape/short", "/healthz/x", "/metrics/x", "/api/%69nferllama/users"}) {
    EXPECT_TRUE(std::holds_alternative<NotFound>(route(own))) << own;
  }
}

TEST(Router, AccountRoutes) {
  const std::string passkey(32, 'a');
  auto r = route("/announce/" + passkey);
  ASSERT_TRUE(std::get_if<TrackerRoute>(&r));
  EXPECT_EQ(std::get<TrackerRoute>(r).passkey, passkey);
  EXPECT_TRUE(std::holds_alternative<NotFound>(route("/announce/short")));
  EXPECT_TRUE(std::holds_alternative<NotFound>(route("/announce/" + std::string(32, 'G'))));
  r = route("/scrape/" + passkey);
  ASSERT_TRUE(std::get_if<TrackerRoute>(&r));
  EXPECT_EQ(std::get<TrackerRoute>(r).kind, TrackerRoute::Kind::scrape);
  EXPECT_EQ(std::get<TrackerRoute>(r).passkey, passkey);
  EXPECT_TRUE(std::holds_alternative<UsageRoute>(route("/api/usage")));
  r = route("/api/inferllama/keys/key_0123/revoke");
  ASSERT_TRUE(std::get_if<AdminRoute>(&r));
  EXPECT_EQ(std::get<AdminRoute>(r).action, "keys/key_0123/revoke");
  EXPECT_TRUE(std::holds_alternative<AdminRoute>(route("/api/inferllama/users")));
  EXPECT_FALSE(std::holds_alternative<AdminRoute>(route("/api/inferllama/usersx")));
  r = route("/api/inferllama/orgs/acme/members/ada");
  ASSERT_TRUE(std::get_if<AdminRoute>(&r));
  EXPECT_EQ(std::get<AdminRoute>(r).action, "orgs/acme/members/ada");
  EXPECT_TRUE(std::holds_alternative<AdminRoute>(route("/api/inferllama/orgs")));
  EXPECT_EQ(std::get<AdminRoute>(route("/api/inferllama/backup")).action, "backup");
  EXPECT_FALSE(std::holds_alternative<AdminRoute>(route("/api/inferllama/orgsx")));
  r = route("/api/inferllama/cluster");
  ASSERT_TRUE(std::get_if<AdminRoute>(&r));
  EXPECT_EQ(std::get<AdminRoute>(r).action, "cluster");
  EXPECT_FALSE(std::holds_alternative<AdminRoute>(route("/api/inferllama/clusterx")));
  EXPECT_EQ(std::get<AdminRoute>(route("/api/inferllama/rules")).action, "rules");
  EXPECT_EQ(std::get<AdminRoute>(route("/api/inferllama/rules/reload")).action, "rules/reload");
  EXPECT_FALSE(std::holds_alternative<AdminRoute>(route("/api/inferllama/rules/other")));
  EXPECT_EQ(std::get<AdminRoute>(route("/api/inferllama/refresh")).action, "refresh");
  for (const std::string action : {"prefetch", "prefetch/add", "prefetch/remove"}) {
    EXPECT_EQ(std::get<AdminRoute>(route("/api/inferllama/" + action)).action, action);
  }
  EXPECT_FALSE(std::holds_alternative<AdminRoute>(route("/api/inferllama/prefetch/other")));

  // A torrent's web seed and resolve URLs under a passkey; nothing else is reachable that way.
  r = route("/p/" + passkey + "/acme/tiny/resolve/main/config.json");
  ASSERT_TRUE(std::get_if<ResolveRoute>(&r));
  EXPECT_EQ(std::get<ResolveRoute>(r).passkey, passkey);
  const std::string commit(40, 'b');
  r = route("/p/" + passkey + "/api/models/acme/tiny/webseed/" + commit + "/tiny/config.json");
  ASSERT_TRUE(std::get_if<ApiRoute>(&r));
  EXPECT_EQ(std::get<ApiRoute>(r).passkey, passkey);
  EXPECT_TRUE(std::holds_alternative<NotFound>(route("/p/" + passkey + "/api/models/acme/tiny/revision/main")));
  EXPECT_TRUE(std::holds_alternative<NotFound>(route("/p/" + passkey + "/api/inferllama/users")));
  EXPECT_TRUE(std::holds_alternative<NotFound>(route("/p/nothex/acme/tiny/resolve/main/config.json")));
  EXPECT_TRUE(std::holds_alternative<BadRequest>(route("/p/" + passkey + "/acme/tiny/resolve/main/../x")));
  EXPECT_TRUE(std::get<ResolveRoute>(route("/acme/tiny/resolve/main/config.json")).passkey.empty());
}

TEST(RateLimitHeaders, FollowTheDraft) {
  Decision d;
  d.allowed = false;
  d.refused_by = LimitKind::requests;
  d.retry_after = std::chrono::milliseconds(1200);
  d.status = {{LimitKind::requests, 100, std::chrono::seconds(60), 0, std::chrono::seconds(54)},
              {LimitKind::tokens, 10 * 1048576, std::chrono::seconds(3600), 1048576, std::chrono::seconds(3240)},
              {LimitKind::concurrent, 4, std::chrono::seconds(0), 3, std::chrono::seconds(0)}};
  std::map<std::string, std::string> h;
  for (const auto& [name, value] : rate_limit_headers(d)) h[name] = value;
  EXPECT_EQ(h["RateLimit-Policy"],
            "\"requests\";q=100;w=60, \"tokens\";q=10485760;w=3600;qu=\"content-bytes\", "
            "\"concurrent\";q=4;qu=\"concurrent-requests\"");
  EXPECT_EQ(h["RateLimit"], "\"requests\";r=0;t=54, \"tokens\";r=1048576;t=3240, \"concurrent\";r=3");
  EXPECT_EQ(h["RateLimit-Limit"], "100");
  EXPECT_EQ(h["RateLimit-Remaining"], "0");
  EXPECT_EQ(h["RateLimit-Reset"], "54");
  EXPECT_EQ(h["Retry-After"], "2");  // rounded up: never earlier than the limit allows
  const std::string body = rate_limited_body(d, UserId::user("alice"));
  EXPECT_NE(body.find("\"limit\":\"requests\""), std::string::npos) << body;
  EXPECT_NE(body.find("100 requests per 60 s for alice"), std::string::npos) << body;

  // Allowed: no Retry-After; the legacy fields name the limit closest to running out.
  d.allowed = true;
  d.refused_by.reset();
  d.status[0].remaining = 90;
  h.clear();
  for (const auto& [name, value] : rate_limit_headers(d)) h[name] = value;
  EXPECT_FALSE(h.contains("Retry-After"));
  EXPECT_EQ(h["RateLimit-Limit"], "10485760");
  EXPECT_TRUE(rate_limit_headers(Decision{}).empty());
}

TEST(Url, HostOf) {
  EXPECT_EQ(url::host_of("http://node.local:8080/api"), "node.local");
  EXPECT_EQ(url::host_of("https://node.local"), "node.local");
  EXPECT_EQ(url::host_of("http://127.0.0.1:34439"), "127.0.0.1");
  EXPECT_EQ(url::host_of("http://[::1]:8080/x"), "[::1]");
  EXPECT_EQ(url::host_of("udp://[fe80::1]:6969/announce"), "[fe80::1]");
}

TEST(Url, EncodeDecode) {
  EXPECT_EQ(url::encode("refs/pr/1"), "refs%2Fpr%2F1");
  EXPECT_EQ(url::encode("a b/c", true), "a%20b/c");
  EXPECT_EQ(url::decode("a%20b+c"), "a b+c");
  EXPECT_EQ(url::decode("a%20b+c", true), "a b c");
  EXPECT_FALSE(url::decode("%2"));
  EXPECT_FALSE(url::decode("%g0"));
  // Into a fixed buffer (the tracker's info_hash): too long is malformed, not truncated.
  std::array<std::uint8_t, 3> out{};
  EXPECT_EQ(url::decode_to("a%ffb", out), 3u);
  EXPECT_EQ(out, (std::array<std::uint8_t, 3>{'a', 0xff, 'b'}));
  EXPECT_EQ(url::decode_to("x+", out, true), 2u);
  EXPECT_EQ(out[1], ' ');
  EXPECT_FALSE(url::decode_to("abcd", out));
  EXPECT_FALSE(url::decode_to("ab%f", out));
  auto q = url::parse_query("recursive=true&expand=&cursor=a%3Db&&x");
  ASSERT_EQ(q.size(), 4u);
  EXPECT_EQ(q[2].second, "a=b");
  EXPECT_EQ(q[3].first, "x");
}

}  // namespace
}  // namespace inferllama::http

namespace inferllama::http {
namespace {

TEST(Router, TheConsoleIsServedAtTheRootAndUnderTheNodesOwnPrefix) {
  auto page = route("/");
  ASSERT_TRUE(std::holds_alternative<ConsoleRoute>(page));
  EXPECT_EQ(std::get<ConsoleRoute>(page).action, "");
  auto api = route("/api/inferllama/console/keys/key_00/revoke");
  ASSERT_TRUE(std::holds_alternative<ConsoleRoute>(api));
  EXPECT_EQ(std::get<ConsoleRoute>(api).action, "keys/key_00/revoke");
  EXPECT_EQ(route_id(api), RouteId::console);
  // A Hub namespace called "console" is still the Hub's.
  EXPECT_TRUE(std::holds_alternative<ResolveRoute>(route("/console/app/resolve/main/x.js")));
}

}  // namespace
}  // namespace inferllama::http
