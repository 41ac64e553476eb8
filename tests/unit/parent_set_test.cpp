// Several parents behind one base URL: rendezvous placement, failover, back-off and the fallback.
#include "upstream/parent_set.hpp"

#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <set>

#include "test_support.hpp"

namespace inferllama::testing {
namespace {

constexpr std::string_view kFile = "/acme/model/resolve/0123456789abcdef0123456789abcdef01234567/model.safetensors";

// Upstream hosts by base URL: each answers every call with 200 and a body naming itself, or fails
// (connection refused) while down; ranges send `file` bytes, cut after `cut_after` bytes at a host.
class Hosts final : public Upstream {
 public:
  std::set<std::string> down;
  std::map<std::string, std::uint64_t> cut_after;
  std::set<std::string> nodes;  // hosts that mark their answers as a node's
  std::string file = std::string(1000, 'x');

  UpstreamResponse fetch(const UpstreamRequest& request) override {
    const std::string host = host_of(request.url);
    std::lock_guard lock(mutex_);
    calls.push_back(request.method + " " + request.url);
    if (down.contains(host)) return UpstreamResponse{0, {}, "", "connection refused"};
    UpstreamResponse response{200, {}, host, ""};
    if (nodes.contains(host)) response.headers.emplace_back("x-inferllama-node", "1");
    response.headers.emplace_back("link", "<" + host + "/api/models/acme/model/tree/main?cursor=2>; rel=\"next\"");
    response.headers.emplace_back("location", host + "/elsewhere");
    return response;
  }

  RangeResult fetch_range(const std::string& url, const HeaderList&, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
    const std::string host = host_of(url);
    std::uint64_t limit = file.size();
    {
      std::lock_guard lock(mutex_);
      calls.push_back("RANGE " + url + " " + std::to_string(first));
      if (down.contains(host)) return RangeResult{0, "connection refused", 0};
      if (auto it = cut_after.find(host); it != cut_after.end()) limit = std::min(limit, first + it->second);
    }
    RangeResult r{206, "", 0};
    const std::uint64_t end = std::min<std::uint64_t>(last + 1, limit);
    if (end > first) r.received = sink(std::span<const char>(file.data() + first, end - first));
    if (end < last + 1) r.error = "connection reset";
    return r;
  }

  std::vector<std::string> calls;

 private:
  static std::string host_of(const std::string& url) { return url.substr(0, url.find('/', url.find("//") + 2)); }
  std::mutex mutex_;
};

Config parents_config(std::vector<std::string> parents, std::string fallback = "") {
  Config config;
  config.upstream = parents.front();
  config.upstream_parents = parents.size() > 1 ? parents : std::vector<std::string>{};
  config.upstream_fallback = std::move(fallback);
  config.upstream_backoff = std::chrono::seconds(10);
  return config;
}

const std::vector<std::string> kThree{"http://p1.test", "http://p2.test", "http://p3.test"};

// The host a call went to: the body of a fetch names it.
std::string answered_by(upstream::ParentSet& parents, std::string_view path, const std::string& method = "GET") {
  return parents.fetch(UpstreamRequest{method, "http://p1.test" + std::string(path), {}, ""}).body;
}

TEST(RendezvousKey, ATorrentRouteNamesTheFileItsResolveUrlNames) {
  const std::string commit = "0123456789abcdef0123456789abcdef01234567";
  EXPECT_EQ(upstream::rendezvous_key("/api/models/acme/model/torrent/" + commit + "/a/b.bin?wait=false"),
            "/acme/model/resolve/" + commit + "/a/b.bin");
  EXPECT_EQ(upstream::rendezvous_key("/api/datasets/acme/data/torrent/" + commit + "/x.parquet"),
            "/datasets/acme/data/resolve/" + commit + "/x.parquet");
  EXPECT_EQ(upstream::rendezvous_key("/acme/model/resolve/main/config.json?download=1"),
            "/acme/model/resolve/main/config.json");
  EXPECT_EQ(upstream::rendezvous_key("/api/models/acme/model/revision/main"), "/api/models/acme/model/revision/main");
}

TEST(ParentSet, EachFileGoesToOneParentAndFilesSpreadOverAll) {
  Hosts hosts;
  ManualClock clock;
  auto parents = upstream::make_parent_set(hosts, parents_config(kThree), clock);
  std::map<std::string, int> share;
  for (int i = 0; i < 300; ++i) {
    const std::string path = "/acme/model/resolve/0123456789abcdef0123456789abcdef01234567/shard-" +
                             std::to_string(i) + ".safetensors";
    const std::string first = answered_by(*parents, path);
    EXPECT_EQ(answered_by(*parents, path, "HEAD"), first) << "the same file, the same parent";
    ++share[first];
  }
  ASSERT_EQ(share.size(), 3u);
  for (const auto& [host, files] : share) EXPECT_GT(files, 60) << host << " got too small a share";
}

TEST(ParentSet, LosingAParentMovesOnlyItsShare) {
  Hosts hosts;
  ManualClock clock;
  auto all = upstream::make_parent_set(hosts, parents_config(kThree), clock);
  auto two = upstream::make_parent_set(hosts, parents_config({"http://p1.test", "http://p3.test"}), clock);
  for (int i = 0; i < 200; ++i) {
    const std::string path = "/acme/m/resolve/0123456789abcdef0123456789abcdef01234567/f" + std::to_string(i);
    const std::string before = answered_by(*all, path);
    // A file whose parent stays keeps it (two's URLs are composed on p1, the first of its list too).
    if (before != "http://p2.test") {
      EXPECT_EQ(answered_by(*two, path), before) << path;
    }
  }
}

TEST(ParentSet, AFailedParentIsSkippedForTheBackOffThenTriedAgain) {
  Hosts hosts;
  ManualClock clock;
  auto parents = upstream::make_parent_set(hosts, parents_config(kThree), clock);
  const std::string owner = answered_by(*parents, kFile);
  hosts.down.insert(owner);
  const std::string second = answered_by(*parents, kFile);
  EXPECT_NE(second, owner);
  EXPECT_FALSE(second.empty()) << "an idempotent call goes on to the next parent at once";

  hosts.down.clear();
  hosts.calls.clear();
  EXPECT_EQ(answered_by(*parents, kFile), second) << "the failed parent is skipped during its back-off";
  EXPECT_EQ(hosts.calls.size(), 1u);
  auto status = parents->status();
  const auto failed = std::find_if(status.begin(), status.end(), [&](auto& s) { return s.url == owner; });
  ASSERT_NE(failed, status.end());
  EXPECT_FALSE(failed->healthy);
  EXPECT_EQ(failed->failures, 1u);
  EXPECT_NEAR(failed->backoff_seconds, 10.0, 0.01);

  clock.advance(std::chrono::seconds(11));
  EXPECT_EQ(answered_by(*parents, kFile), owner) << "back in its place after the back-off";
}

TEST(ParentSet, AWriteIsNotRepeatedOnAnotherParent) {
  Hosts hosts;
  ManualClock clock;
  auto parents = upstream::make_parent_set(hosts, parents_config(kThree), clock);
  const std::string path = "/api/models/acme/model/discussions";
  const std::string owner = answered_by(*parents, path);
  hosts.down.insert(owner);
  hosts.calls.clear();
  const auto response = parents->fetch(UpstreamRequest{"POST", "http://p1.test" + path, {}, "{}"});
  EXPECT_FALSE(response.error.empty());
  EXPECT_EQ(hosts.calls.size(), 1u);
}

TEST(ParentSet, ARangeCutMidwayGoesOnFromTheNextParentWhereItStopped) {
  Hosts hosts;
  ManualClock clock;
  auto parents = upstream::make_parent_set(hosts, parents_config(kThree), clock);
  const std::string owner = answered_by(*parents, kFile);
  hosts.cut_after[owner] = 300;
  std::string received;
  const RangeResult r = parents->fetch_range("http://p1.test" + std::string(kFile), {}, 100, 899,
                                             [&](std::span<const char> bytes) {
                                               received.append(bytes.data(), bytes.size());
                                               return bytes.size();
                                             });
  EXPECT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.received, 800u);
  EXPECT_EQ(received, hosts.file.substr(100, 800));
  ASSERT_EQ(hosts.calls.size(), 3u);  // the fetch above, then two ranges
  EXPECT_EQ(hosts.calls[1], "RANGE " + owner + std::string(kFile) + " 100");
  EXPECT_TRUE(hosts.calls[2].ends_with(std::string(kFile) + " 400")) << hosts.calls[2];
  EXPECT_FALSE(hosts.calls[2].starts_with("RANGE " + owner));
  std::uint64_t bytes = 0;
  for (const auto& s : parents->status()) bytes += s.bytes;
  EXPECT_EQ(bytes, 800u);
}

TEST(ParentSet, TheFallbackComesAfterEveryHealthyParent) {
  Hosts hosts;
  ManualClock clock;
  auto parents =
      upstream::make_parent_set(hosts, parents_config({"http://p1.test", "http://p2.test"}, "http://hub.test"), clock);
  EXPECT_NE(answered_by(*parents, kFile), "http://hub.test");
  hosts.down = {"http://p1.test", "http://p2.test"};
  EXPECT_EQ(answered_by(*parents, kFile), "http://hub.test");
  hosts.down.insert("http://hub.test");
  EXPECT_FALSE(parents->fetch(UpstreamRequest{"GET", "http://p1.test" + std::string(kFile), {}, ""}).error.empty());
}

TEST(ParentSet, WithoutAFallbackParentsBackingOffAreStillTried) {
  Hosts hosts;
  ManualClock clock;
  auto parents = upstream::make_parent_set(hosts, parents_config({"http://p1.test", "http://p2.test"}), clock);
  hosts.down = {"http://p1.test", "http://p2.test"};
  (void)answered_by(*parents, kFile);
  hosts.down.clear();
  EXPECT_FALSE(answered_by(*parents, kFile).empty()) << "better a late try than none";
}

TEST(ParentSet, LinksIntoTheAnsweringParentNameTheBaseAndItsKindIsLearnt) {
  Hosts hosts;
  hosts.nodes = {"http://p2.test", "http://p3.test"};
  ManualClock clock;
  auto parents = upstream::make_parent_set(hosts, parents_config(kThree, "http://hub.test"), clock);
  hosts.down = {"http://p1.test", "http://p2.test", "http://p3.test"};
  const auto response = parents->fetch(UpstreamRequest{"HEAD", "http://p1.test" + std::string(kFile), {}, ""});
  EXPECT_EQ(response.body, "http://hub.test");
  EXPECT_EQ(response.header("location"), "http://p1.test/elsewhere");
  EXPECT_EQ(response.header("link"), "<http://p1.test/api/models/acme/model/tree/main?cursor=2>; rel=\"next\"");
  const auto status = parents->status();
  ASSERT_EQ(status.size(), 4u);
  EXPECT_TRUE(status[3].fallback);
  EXPECT_EQ(status[3].kind, upstream::UpstreamKind::hub);
  EXPECT_EQ(status[1].kind, upstream::UpstreamKind::unknown);

  clock.advance(std::chrono::seconds(11));
  hosts.down.clear();
  for (int i = 0; i < 30; ++i) {
    (void)parents->fetch(UpstreamRequest{
        "HEAD", "http://p1.test/acme/m/resolve/0123456789abcdef0123456789abcdef01234567/f" + std::to_string(i), {}, ""});
  }
  EXPECT_EQ(parents->status()[1].kind, upstream::UpstreamKind::parent);
  EXPECT_EQ(parents->status()[0].kind, upstream::UpstreamKind::hub);
}

TEST(ParentSet, OtherUrlsPassThroughAndCountAsRedirected) {
  Hosts hosts;
  ManualClock clock;
  auto parents = upstream::make_parent_set(hosts, parents_config(kThree), clock);
  const RangeResult r = parents->fetch_range("http://cdn.test/blob", {}, 0, 99, [](std::span<const char> b) {
    return b.size();
  });
  EXPECT_EQ(r.received, 100u);
  EXPECT_EQ(parents->redirected_bytes(), 100u);
  EXPECT_EQ(hosts.calls.back(), "RANGE http://cdn.test/blob 0");
  // A URL that only starts like the base is another host.
  (void)parents->fetch(UpstreamRequest{"GET", "http://p1.test.evil/x", {}, ""});
  EXPECT_EQ(hosts.calls.back(), "GET http://p1.test.evil/x");
}

}  // namespace
}  // namespace inferllama::testing
