// Good manners toward the Hub: the waits a throttling answer asks for, the back-off of each credential,
// the upstream that holds requests back, the Hub view that passes over a throttled token of the node's and
// serves what it holds meanwhile, and a download that sits the wait out.
#include "upstream/throttle.hpp"

#include <gtest/gtest.h>

#include <mutex>
#include <set>

#include "fake_upstreams.hpp"
#include "hub_fixture.hpp"
#include "test_support.hpp"

namespace inferllama::testing {
namespace {

using namespace std::chrono_literals;
using upstream::BackoffTable;
using upstream::Identity;
using upstream::requested_wait;

std::optional<std::chrono::seconds> wait_of(HeaderList headers) {
  return requested_wait(headers, kTestStart);  // 2026-12-01T00:00:00Z, a Tuesday
}

TEST(ThrottleHeaders, RetryAfterInSecondsOrAsAnHttpDate) {
  EXPECT_EQ(wait_of({{"retry-after", "30"}}), 30s);
  EXPECT_EQ(wait_of({{"Retry-After", " 7 "}}), 7s);
  EXPECT_EQ(wait_of({{"retry-after", "0"}}), 0s);
  // The three forms of an HTTP-date.
  EXPECT_EQ(wait_of({{"retry-after", "Tue, 01 Dec 2026 00:01:30 GMT"}}), 90s);
  EXPECT_EQ(wait_of({{"retry-after", "Tuesday, 01-Dec-26 00:00:10 GMT"}}), 10s);
  EXPECT_EQ(wait_of({{"retry-after", "Tue Dec  1 00:00:05 2026"}}), 5s);
  EXPECT_EQ(wait_of({{"retry-after", "Mon, 30 Nov 2026 23:59:00 GMT"}}), 0s) << "a time already past";
  for (const char* bad : {"", "soon", "-5", "1.5", "Tue, 32 Dec 2026 00:00:00 GMT", "Tue, 01 Foo 2026 00:00:00 GMT",
                          "Tue, 01 Dec 2026 25:00:00 GMT", "Tue, 01 Dec 2026 00:00:00 PST"}) {
    EXPECT_EQ(wait_of({{"retry-after", bad}}), std::nullopt) << bad;
  }
  // A number too large to mean anything is still a wait (the table clamps it).
  EXPECT_GT(*wait_of({{"retry-after", "99999999999999999999999"}}), 24h);
}

TEST(ThrottleHeaders, RateLimitResetOfWhatIsExhausted) {
  // As the Hub sends it (huggingface_hub parses the same).
  EXPECT_EQ(wait_of({{"ratelimit", "\"api\";r=0;t=55"}, {"ratelimit-policy", "\"fixed window\";\"api\";q=500;w=300"}}),
            55s);
  EXPECT_EQ(wait_of({{"RateLimit", "\"api\"; r=0; t=12"}}), 12s);
  // Only items with nothing remaining say when to come back; the longest of them counts.
  EXPECT_EQ(wait_of({{"ratelimit", "\"api\";r=3;t=55"}}), std::nullopt);
  EXPECT_EQ(wait_of({{"ratelimit", "\"requests\";r=0;t=25, \"tokens\";r=0;t=40, \"concurrent\";r=0"}}), 40s);
  EXPECT_EQ(wait_of({{"ratelimit", "\"a,b\";r=0;t=3, \"c\";r=1;t=90"}}), 3s) << "a comma inside a name";
  EXPECT_EQ(wait_of({{"ratelimit", "garbage"}}), std::nullopt);
  // The older drafts' field.
  EXPECT_EQ(wait_of({{"ratelimit-reset", "8"}}), 8s);
  // The longest of everything said.
  EXPECT_EQ(wait_of({{"retry-after", "5"}, {"ratelimit", "\"api\";r=0;t=30"}}), 30s);
  EXPECT_EQ(wait_of({{"retry-after", "50"}, {"ratelimit", "\"api\";r=0;t=30"}}), 50s);
  EXPECT_EQ(wait_of({{"content-type", "application/json"}}), std::nullopt);
}

Identity anonymous() {
  return Identity{Identity::Kind::anonymous, 0, "anonymous"};
}
Identity user(const std::string& name) {
  return Identity{Identity::Kind::user, 0, "user/" + name + std::string(64 - name.size(), '0')};
}

class BackoffTableTest : public ::testing::Test {
 protected:
  upstream::ThrottleSettings settings() {
    upstream::ThrottleSettings s;
    s.max_wait = 3600s;
    s.max_users = 3;
    return s;
  }
  ManualClock clock_;
  BackoffTable table_{settings(), clock_, clock_};
};

TEST_F(BackoffTableTest, AnEpisodeHoldsRequestsUntilItsWaitAndEndsAtTheNextAnswer) {
  EXPECT_EQ(table_.hold(anonymous()), std::nullopt);
  EXPECT_EQ(table_.throttled(anonymous(), 429, 30s), 30s);
  EXPECT_EQ(table_.hold(anonymous()), 30s);
  clock_.advance(10500ms);
  EXPECT_EQ(table_.hold(anonymous()), 20s) << "rounded up";
  EXPECT_EQ(table_.left(user("a")), 0ms) << "other credentials go out";
  // An answer to a request sent before the back-off began does not end it.
  table_.answered(anonymous());
  EXPECT_EQ(table_.hold(anonymous()), 20s);
  // Another throttling answer meanwhile (a request that was on its way) is the same episode.
  EXPECT_EQ(table_.throttled(anonymous(), 429, 5s), 20s);
  auto counts = table_.counts(Identity::Kind::anonymous);
  EXPECT_EQ(counts.backing_off, 1u);
  EXPECT_EQ(counts.episodes, 1u);
  EXPECT_EQ(counts.held, 3u);
  EXPECT_EQ(counts.throttling_answers, 2u);
  clock_.advance(20s);
  EXPECT_EQ(table_.hold(anonymous()), std::nullopt);
  EXPECT_EQ(table_.counts(Identity::Kind::anonymous).backing_off, 0u);
  table_.answered(anonymous());
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_EQ(table_.throttled(anonymous(), 503, 1s), 1s);
  EXPECT_EQ(table_.counts(Identity::Kind::anonymous).episodes, 2u);
}

TEST_F(BackoffTableTest, WaitsAreClampedAndWithoutAWordDoubleFromOneSecondToAMinute) {
  EXPECT_EQ(table_.throttled(user("a"), 429, 30 * 24h), 3600s);
  EXPECT_EQ(table_.throttled(user("b"), 429, 0s), 1s);
  std::vector<std::int64_t> waits;
  for (int i = 0; i < 9; ++i) {
    const auto wait = table_.throttled(anonymous(), 429, std::nullopt);
    waits.push_back(wait.count());
    clock_.advance(wait);  // asks again as soon as the back-off ends, and is throttled again
  }
  EXPECT_EQ(waits, (std::vector<std::int64_t>{1, 2, 4, 8, 16, 32, 60, 60, 60}));
  EXPECT_EQ(table_.counts(Identity::Kind::anonymous).episodes, 1u) << "one episode until an answer ends it";
}

TEST_F(BackoffTableTest, UsersAreBoundedAndTheAnonymousEpisodeIsNeverPushedOut) {
  table_.throttled(anonymous(), 429, 10s);
  table_.throttled(user("a"), 429, 100s);
  table_.throttled(user("b"), 429, 5s);
  table_.throttled(user("c"), 429, 200s);
  table_.throttled(user("d"), 429, 300s);  // the fourth user: the one free soonest (b) is forgotten
  EXPECT_EQ(table_.size(), 4u);
  EXPECT_EQ(table_.left(user("b")), 0ms);
  EXPECT_GT(table_.left(user("a")), 0ms);
  EXPECT_GT(table_.left(anonymous()), 0ms);
  clock_.advance(150s);  // a's back-off is over: it goes first
  table_.throttled(user("e"), 429, 10s);
  EXPECT_EQ(table_.left(user("a")), 0ms);
  EXPECT_GT(table_.left(user("c")), 0ms);
  EXPECT_GT(table_.left(user("e")), 0ms);
  for (int i = 0; i < 1000; ++i) table_.throttled(user("f" + std::to_string(i)), 429, 60s);
  EXPECT_EQ(table_.size(), 3u + 1u);  // three users and anonymous, whose episode waits for its next answer
}

// Answers each request as `answer` says; remembers each one's URL and Authorization.
class Recorded final : public Upstream {
 public:
  std::function<UpstreamResponse(const UpstreamRequest&)> answer = [](const UpstreamRequest&) {
    return UpstreamResponse{200, {}, "{}", ""};
  };
  long range_status = 206;
  HeaderList range_headers;

  UpstreamResponse fetch(const UpstreamRequest& request) override {
    std::string authorization;
    for (const auto& [name, value] : request.headers)
      if (name == "Authorization") authorization = value;
    sent.emplace_back(request.url, authorization);
    return answer(request);
  }
  RangeResult fetch_range(const std::string& url, const HeaderList& headers, std::uint64_t, std::uint64_t,
                          const BodySink&) override {
    std::string authorization;
    for (const auto& [name, value] : headers)
      if (name == "Authorization") authorization = value;
    sent.emplace_back(url, authorization);
    RangeResult r;
    r.status = range_status;
    r.headers = range_headers;
    if (range_status != 206) r.error = "upstream answered HTTP " + std::to_string(range_status);
    return r;
  }
  std::vector<std::pair<std::string, std::string>> sent;  // URL, Authorization
};

class ThrottledUpstreamTest : public ::testing::Test {
 protected:
  ThrottledUpstreamTest() {
    config_.upstream = "https://hub.example";
    config_.upstream_tokens = {"tok_one", "tok_two"};
    throttled_ = upstream::make_throttled_upstream(next_, config_, clock_, clock_);
  }
  UpstreamResponse get(const std::string& authorization,
                       const std::string& url = "https://hub.example/api/models/a/b") {
    UpstreamRequest request{"GET", url, {}, ""};
    if (!authorization.empty()) request.headers.emplace_back("Authorization", authorization);
    return throttled_->fetch(request);
  }
  std::string metrics() {
    std::string out;
    throttled_->render_metrics(out);
    return out;
  }
  Config config_;
  ManualClock clock_;
  Recorded next_;
  std::unique_ptr<upstream::ThrottledUpstream> throttled_;
};

TEST_F(ThrottledUpstreamTest, IdentitiesNameNoCredential) {
  EXPECT_EQ(throttled_->identify("").label(), "anonymous");
  EXPECT_EQ(throttled_->identify("Bearer tok_two").label(), "node-token-2");
  const Identity someone = throttled_->identify("Bearer hf_someone");
  EXPECT_EQ(someone.kind, Identity::Kind::user);
  EXPECT_EQ(someone.label().size(), std::string("user-").size() + 8);
  EXPECT_EQ(someone.label().find("someone"), std::string::npos);
  EXPECT_EQ(someone.key.find("someone"), std::string::npos);
}

TEST_F(ThrottledUpstreamTest, AThrottledCredentialsRequestsWaitUnsentWhileOthersGo) {
  next_.answer = [](const UpstreamRequest&) {
    return UpstreamResponse{429, {{"retry-after", "20"}, {"ratelimit", "\"api\";r=0;t=20"}}, "{}", ""};
  };
  auto first = get("Bearer tok_one");
  EXPECT_EQ(std::pair(first.status, first.retry_after), std::pair(429L, 20s));
  EXPECT_FALSE(first.held_back);
  next_.answer = [](const UpstreamRequest&) { return UpstreamResponse{200, {}, "{}", ""}; };
  for (int i = 0; i < 5; ++i) {
    auto held = get("Bearer tok_one");
    EXPECT_TRUE(held.held_back);
    EXPECT_EQ(std::pair(held.status, held.retry_after), std::pair(503L, 20s));
  }
  EXPECT_EQ(throttled_->held_for("Bearer tok_one"), 20s);
  EXPECT_EQ(throttled_->held_for("Bearer tok_two"), 0s);
  EXPECT_EQ(get("Bearer tok_two").status, 200);
  EXPECT_EQ(get("").status, 200);
  EXPECT_EQ(next_.sent.size(), 3u) << "the held requests never left";
  const std::string text = metrics();
  EXPECT_NE(text.find("inferllama_upstream_throttled{identity=\"node\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("inferllama_upstream_held_back_total{identity=\"node\"} 5"), std::string::npos) << text;
  EXPECT_NE(text.find("inferllama_upstream_throttle_episodes_total{identity=\"node\"} 1"), std::string::npos);
  EXPECT_NE(text.find("inferllama_upstream_node_token_throttled{token=\"1\"} 1"), std::string::npos);
  EXPECT_NE(text.find("inferllama_upstream_node_token_requests_total{token=\"2\"} 1"), std::string::npos);
  EXPECT_EQ(text.find("tok_"), std::string::npos) << "no token in a label";

  clock_.advance(20s);
  EXPECT_EQ(get("Bearer tok_one").status, 200);
  EXPECT_EQ(throttled_->table().size(), 0u) << "the answer ended the episode";
  EXPECT_NE(metrics().find("inferllama_upstream_throttled{identity=\"node\"} 0"), std::string::npos);
}

TEST_F(ThrottledUpstreamTest, AnOutageIsNoThrottleAndOtherHostsAreNotHeldBack) {
  next_.answer = [](const UpstreamRequest&) { return UpstreamResponse{0, {}, "", "connection refused"}; };
  EXPECT_EQ(get("").retry_after, 0s);
  EXPECT_EQ(throttled_->held_for(""), 0s);
  // A CDN's throttling answer says how long to wait; the CDN is asked again when the download retries.
  next_.range_status = 429;
  next_.range_headers = {{"retry-after", "7"}};
  const auto sink = [](std::span<const char> bytes) { return bytes.size(); };
  for (int i = 0; i < 2; ++i) {
    auto range = throttled_->fetch_range("https://cdn.example/blob?sig=1", {}, 0, 9, sink);
    EXPECT_EQ(range.retry_after, 7s);
  }
  // The upstream's own answers to a range put its credential in back-off.
  auto range = throttled_->fetch_range("https://hub.example/a/b/resolve/main/f", {}, 0, 9, sink);
  EXPECT_EQ(range.retry_after, 7s);
  next_.range_status = 206;
  auto held = throttled_->fetch_range("https://hub.example/a/b/resolve/main/f", {}, 0, 9, sink);
  EXPECT_EQ(std::pair(held.status, held.retry_after), std::pair(503L, 7s));
  EXPECT_NE(held.error.find("held back"), std::string::npos);
  EXPECT_EQ(next_.sent.size(), 4u);
  // A host whose URL merely starts like the upstream's is another host.
  EXPECT_EQ(get("", "https://hub.example.evil/api").status, 0);
}

// The Hub's API behind a gate that answers 429 (Retry-After: 30) to the credentials in `throttled`;
// records the Authorization of every request that reached it.
class Gate final : public Upstream {
 public:
  explicit Gate(Upstream& hub) : hub_(hub) {}
  UpstreamResponse fetch(const UpstreamRequest& request) override {
    const std::string authorization = authorization_of(request.headers);
    {
      std::lock_guard lock(mutex_);
      seen_.emplace_back(request.url, authorization);
      if (throttled_.contains(authorization)) return UpstreamResponse{429, {{"retry-after", "30"}}, "{}", ""};
    }
    return hub_.fetch(request);
  }
  RangeResult fetch_range(const std::string& url, const HeaderList& headers, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
    return hub_.fetch_range(url, headers, first, last, sink);
  }
  void throttle(std::set<std::string> authorizations) {
    std::lock_guard lock(mutex_);
    throttled_ = std::move(authorizations);
  }
  // The Authorization of each request about `repo` that reached the gate.
  std::vector<std::string> seen_for(const std::string& repo) const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& [url, authorization] : seen_)
      if (url.find("/" + repo + "/") != std::string::npos || url.ends_with("/" + repo) ||
          url.find("/" + repo + "?") != std::string::npos)
        out.push_back(authorization);
    return out;
  }
  std::size_t seen() const {
    std::lock_guard lock(mutex_);
    return seen_.size();
  }

 private:
  static std::string authorization_of(const HeaderList& headers) {
    for (const auto& [name, value] : headers)
      if (name == "Authorization") return value;
    return "";
  }
  Upstream& hub_;
  mutable std::mutex mutex_;
  std::set<std::string> throttled_;
  std::vector<std::pair<std::string, std::string>> seen_;
};

class HubThrottleTest : public HubFixture {
 protected:
  // The Hub view over the gate and the throttle, with `tokens` as the node's; branch names always asked.
  void start(std::vector<std::string> tokens) {
    config_.upstream_tokens = std::move(tokens);
    config_.ref_ttl = 0s;
    throttled_ = upstream::make_throttled_upstream(gate_, config_, clock_, clock_);
    hub_ = std::make_unique<hub::HubService>(config_, *index_, *throttled_, *downloads_, *evictor_, clock_);
    hub_->set_throttle(throttled_.get());
  }
  hub::Reply info(const std::string& repo, const std::string& rev) {
    return hub_->info(RepoId{RepoType::model, repo}, rev, "", hub::Caller{});
  }
  ManualClock clock_;
  Gate gate_{hub_api_};
  std::unique_ptr<upstream::ThrottledUpstream> throttled_;
};

TEST_F(HubThrottleTest, ARepoKeepsOneTokenAndAThrottledTokenIsPassedOverUntilAllAre) {
  const std::vector<std::string> tokens = {"Bearer hf_t1", "Bearer hf_t2", "Bearer hf_t3"};
  start({"hf_t1", "hf_t2", "hf_t3"});
  std::set<std::string> used;
  for (int i = 0; i < 8; ++i) {
    const std::string repo = "acme/r" + std::to_string(i);
    hub_api_.put(repo, repo_with(FakeHub::Access::open, {{"config.json", kConfig}}));
    EXPECT_EQ(info(repo, "main").status, 200u);
    EXPECT_EQ(info(repo, kCommit2).status, 200u);
    const auto seen = gate_.seen_for(repo);
    ASSERT_GE(seen.size(), 3u) << repo;  // visibility, and the two revisions
    EXPECT_EQ(std::set(seen.begin(), seen.end()).size(), 1u) << repo << ": one token for a repo";
    used.insert(seen.front());
  }
  EXPECT_GE(used.size(), 2u) << "eight repos spread over the tokens";

  // The token of acme/r0 is throttled: the request that learns it goes again with another, at once.
  const std::string first = gate_.seen_for("acme/r0").front();
  gate_.throttle({first});
  const std::size_t before = gate_.seen_for("acme/r0").size();
  EXPECT_EQ(info("acme/r0", "main").status, 200u);
  auto seen = gate_.seen_for("acme/r0");
  ASSERT_EQ(seen.size(), before + 2);
  EXPECT_EQ(seen[before], first);
  const std::string second = seen[before + 1];
  EXPECT_NE(second, first);
  // From then on the throttled token is not even tried for it, nor for any repo.
  EXPECT_EQ(info("acme/r0", "main").status, 200u);
  EXPECT_EQ(gate_.seen_for("acme/r0").back(), second);
  const std::size_t sent = gate_.seen();
  for (int i = 1; i < 8; ++i) EXPECT_EQ(info("acme/r" + std::to_string(i), "main").status, 200u);
  EXPECT_EQ(gate_.seen(), sent + 7) << "no request with the throttled token";

  // Every token throttled: what the node holds is still answered, the rest is a 503 that says when.
  gate_.throttle({tokens.begin(), tokens.end()});
  auto stored = info("acme/r0", "main");
  EXPECT_EQ(stored.status, 200u) << stored.body;
  ASSERT_TRUE(header(stored, hub::kStaleHeader));
  EXPECT_NE(header(stored, hub::kStaleHeader)->find("throttling"), std::string::npos);
  auto refused = hub_->tree(RepoId{RepoType::model, "acme/r0"}, "main", "", "", hub::Caller{}, "http://node");
  EXPECT_EQ(refused.status, 503u) << refused.body;
  ASSERT_TRUE(header(refused, "Retry-After"));
  const int retry_after = std::stoi(*header(refused, "Retry-After"));
  EXPECT_GE(retry_after, 1);
  EXPECT_LE(retry_after, 30);
  EXPECT_NE(refused.body.find("throttling"), std::string::npos);
  const std::size_t all_throttled = gate_.seen();
  EXPECT_EQ(hub_->tree(RepoId{RepoType::model, "acme/r1"}, "main", "", "", hub::Caller{}, "http://node").status, 503u);
  EXPECT_EQ(gate_.seen(), all_throttled) << "nothing sent while every token backs off";
}

TEST_F(HubThrottleTest, WhileAnonymousIsThrottledStoredFilesAreServedAndMissesWaitWithoutAsking) {
  start({});
  answered("acme/open", "main", "config.json");
  gate_.throttle({""});
  // The branch cannot be asked: the stored file answers at the last commit seen.
  auto stored = resolve("acme/open", "main", "config.json");
  ASSERT_TRUE(std::holds_alternative<hub::FileAnswer>(stored));
  EXPECT_NE(std::get<hub::FileAnswer>(stored).stale.find("throttling"), std::string::npos);
  const std::size_t asked = gate_.seen();
  for (int i = 0; i < 10; ++i) {
    auto missed = resolve("acme/open", "main", "model.bin");
    ASSERT_TRUE(std::holds_alternative<hub::Reply>(missed));
    const auto& reply = std::get<hub::Reply>(missed);
    EXPECT_EQ(reply.status, 503u);
    EXPECT_EQ(header(reply, "Retry-After"), "30");
    EXPECT_NE(reply.body.find("throttling"), std::string::npos);
  }
  EXPECT_EQ(gate_.seen(), asked) << "held back, not sent";
  EXPECT_EQ(throttled_->table().counts(Identity::Kind::anonymous).held, 10u);
  // The back-off over and the Hub answering again: the file comes, and the episode ends.
  clock_.advance(30s);
  gate_.throttle({});
  auto answer = answered("acme/open", "main", "model.bin");
  EXPECT_EQ(answer.file.size, kWeights.bytes.size());
  EXPECT_EQ(throttled_->table().size(), 0u);
  EXPECT_EQ(throttled_->table().counts(Identity::Kind::anonymous).episodes, 1u);
}

// Ranges that the upstream throttles once, then serves.
class ThrottledOnce final : public MemoryUpstream {
 public:
  ThrottledOnce(std::vector<std::uint8_t> data, std::chrono::seconds wait)
      : MemoryUpstream(std::move(data)), wait_(wait) {}
  RangeResult fetch_range(const std::string& url, const HeaderList& headers, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
    if (throttles_.exchange(false)) {
      ++throttled;
      RangeResult r;
      r.status = 429;
      r.error = "upstream answered HTTP 429";
      r.retry_after = wait_;
      return r;
    }
    return MemoryUpstream::fetch_range(url, headers, first, last, sink);
  }
  std::atomic<int> throttled{0};

 private:
  std::chrono::seconds wait_;
  std::atomic<bool> throttles_{true};
};

class DownloadThrottleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fresh_test_dir("dl-throttle");
    store_ = std::make_unique<ChunkStore>(dir_);
    index_ = open_rocksdb_index(dir_ / "index");
    data_.assign(100000, 'x');
    settings_.chunk_size = 64 * 1024;
    settings_.connections = 1;
    settings_.parallel_threshold = 1 << 30;
    settings_.retries = 3;
    settings_.backoff = std::chrono::milliseconds(1);
    settings_.throttle_patience = 5s;
  }
  void TearDown() override {
    downloads_.reset();
    workers_.join();
    index_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::shared_ptr<cache::Download> download(Upstream& upstream) {
    downloads_ = std::make_unique<cache::Downloads>(*store_, *index_, upstream, workers_, settings_);
    cache::BlobSource source{"mem://file", {}, cache::sha256(data_).hex(), true, data_.size(), nullptr};
    auto d = downloads_->get_or_start(source, {RepoId{RepoType::model, "acme/x"}, std::string(40, 'a'), "f"});
    auto waiter = std::make_shared<Waiter>();
    d->subscribe(waiter);
    waiter->until_done(*d);
    return d;
  }
  std::filesystem::path dir_;
  std::vector<std::uint8_t> data_;
  std::unique_ptr<ChunkStore> store_;
  std::unique_ptr<Index> index_;
  asio::thread_pool workers_{2};
  cache::DownloadSettings settings_;
  std::unique_ptr<cache::Downloads> downloads_;
};

TEST_F(DownloadThrottleTest, ARetrySitsOutTheUpstreamsWait) {
  ThrottledOnce upstream(data_, 1s);
  const auto begun = std::chrono::steady_clock::now();
  auto d = download(upstream);
  EXPECT_EQ(d->state(), cache::Download::State::complete) << d->error();
  EXPECT_EQ(upstream.throttled.load(), 1);
  EXPECT_GE(std::chrono::steady_clock::now() - begun, 1s) << "asked again before the upstream's wait";
}

TEST_F(DownloadThrottleTest, AWaitLongerThanAStallMayLastFailsAtOnce) {
  ThrottledOnce upstream(data_, 60s);
  auto d = download(upstream);
  EXPECT_EQ(d->state(), cache::Download::State::failed);
  EXPECT_NE(d->error().find("throttles"), std::string::npos) << d->error();
  EXPECT_EQ(upstream.requests.load(), 0) << "not asked again";
}

}  // namespace
}  // namespace inferllama::testing
