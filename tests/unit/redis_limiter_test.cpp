// The Redis backend of the rate limiter against a real redis-server on loopback: limits shared by two
// nodes, the same answers as the local limiter, slots with leases, and the fallback while Redis is
// stopped, frozen or gone.
#include <gtest/gtest.h>

#include "inferllama/asio.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <thread>

#include "redis_server.hpp"
#include "test_support.hpp"
#include "usage/local_limiter.hpp"
#include "usage/redis_limiter.hpp"

namespace inferllama::usage {
namespace {

using testing::eventually;
using testing::free_loopback_port;
using testing::Inspector;
using testing::ManualClock;
using testing::RedisServer;

using namespace std::chrono_literals;

// One node: its own I/O context on two threads, its local limiter (the fallback) and the Redis one.
struct Node {
  explicit Node(RedisSettings settings) : redis(io, std::move(settings), local) {
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { io.run(); });
  }
  Node(std::uint16_t port, std::chrono::milliseconds timeout, bool refuse_when_down = false)
      : Node(settings(port, timeout, refuse_when_down)) {}
  // As the node does: the I/O threads end before the limiter goes.
  ~Node() {
    work.reset();
    io.stop();
    for (auto& t : threads) t.join();
  }
  static RedisSettings settings(std::uint16_t port, std::chrono::milliseconds timeout, bool refuse_when_down) {
    RedisSettings s;
    s.port = port;
    s.timeout = timeout;
    s.refuse_when_down = refuse_when_down;
    return s;
  }

  Decision admit(const UserId& who, const LimitPolicy& policy, bool download = false) {
    return asio::co_spawn(io, redis.admit(who, policy, download), asio::use_future).get();
  }
  std::string metrics() const {
    std::string out;
    redis.render_metrics(out);
    return out;
  }

  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  ManualClock clock;
  LocalRateLimiter local{clock};
  RedisRateLimiter redis;
  std::vector<std::thread> threads;
};

const LimitStatus* status_of(const Decision& d, LimitKind kind) {
  for (const auto& s : d.status)
    if (s.kind == kind) return &s;
  return nullptr;
}

class RedisLimiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string failed = server.start(free_loopback_port());
    ASSERT_EQ(failed, "");
  }

  std::unique_ptr<Node> connected_node(std::chrono::milliseconds timeout = 5s) {
    auto node = std::make_unique<Node>(server.port(), timeout);
    EXPECT_TRUE(eventually([&] { return node->redis.connected(); })) << "never connected to Redis";
    return node;
  }

  RedisServer server;
};

struct Tally {
  std::atomic<int> allowed{0}, refused{0}, fallback{0};
};

Task<void> admit_many(RedisRateLimiter& limiter, const UserId& who, const LimitPolicy& policy, int count,
                      Tally& tally) {
  for (int i = 0; i < count; ++i) {
    auto question = limiter.admit(who, policy, false);
    const Decision decision = co_await std::move(question);
    ++(decision.allowed ? tally.allowed : tally.refused);
    if (decision.fallback) ++tally.fallback;
  }
}

TEST_F(RedisLimiterTest, TwoNodesShareOneRequestLimit) {
  auto a = connected_node();
  auto b = connected_node();
  LimitPolicy policy;
  // 100 at once; the next one only after 36 s, far longer than the test takes.
  policy.requests = 100;
  policy.request_window = 3600s;
  const UserId who = UserId::user("alice");
  Tally tally;
  std::vector<std::future<void>> running;
  for (int i = 0; i < 50; ++i) {
    Node& node = i % 2 ? *a : *b;
    running.push_back(asio::co_spawn(node.io, admit_many(node.redis, who, policy, 40, tally), asio::use_future));
  }
  for (auto& r : running) r.get();
  EXPECT_EQ(tally.allowed.load(), 100);
  EXPECT_EQ(tally.refused.load(), 1900);
  EXPECT_EQ(tally.fallback.load(), 0);
  const std::string metrics = a->metrics() + b->metrics();
  EXPECT_NE(metrics.find("inferllama_ratelimit_backend_up{backend=\"redis\"} 1"), std::string::npos) << metrics;

  // Another identity has limits of its own.
  const Decision other = a->admit(UserId::address("203.0.113.7"), policy);
  EXPECT_TRUE(other.allowed);
  EXPECT_EQ(status_of(other, LimitKind::requests)->remaining, 99u);
}

TEST_F(RedisLimiterTest, AnswersAsTheLocalLimiterDoes) {
  auto node = connected_node();
  ManualClock frozen;
  LocalRateLimiter local(frozen);
  LimitPolicy policy;
  policy.requests = 3;
  policy.request_window = 3600s;  // one request every 1200 s
  policy.tokens = 5;
  policy.token_bytes = 1000;
  policy.token_window = 864000s;  // one byte every 172.8 s
  policy.concurrent = 2;
  const UserId who = UserId::user("bob");

  // Redis's clock runs while the test does: waits and resets may be up to that much shorter.
  const auto began = std::chrono::steady_clock::now();
  auto compare = [&](const Decision& shared, const Decision& expected, const std::string& step) {
    SCOPED_TRACE(step);
    const auto elapsed = std::chrono::steady_clock::now() - began;
    EXPECT_FALSE(shared.fallback);
    EXPECT_EQ(shared.allowed, expected.allowed);
    EXPECT_EQ(shared.refused_by, expected.refused_by);
    EXPECT_LE(shared.retry_after, expected.retry_after);
    EXPECT_GE(shared.retry_after + std::chrono::ceil<std::chrono::milliseconds>(elapsed) + 1ms, expected.retry_after);
    EXPECT_EQ(shared.slot != nullptr, expected.slot != nullptr);
    ASSERT_EQ(shared.status.size(), expected.status.size());
    for (std::size_t i = 0; i < expected.status.size(); ++i) {
      const LimitStatus& s = shared.status[i];
      const LimitStatus& e = expected.status[i];
      EXPECT_EQ(s.kind, e.kind);
      EXPECT_EQ(s.quota, e.quota);
      EXPECT_EQ(s.window, e.window);
      EXPECT_EQ(s.remaining, e.remaining) << "limit " << i;
      EXPECT_LE(s.reset, e.reset);
      EXPECT_GE(s.reset + std::chrono::ceil<std::chrono::seconds>(elapsed) + 1s, e.reset);
    }
  };

  std::vector<Decision> shared_held, local_held;
  for (int i = 0; i < 2; ++i) {
    shared_held.push_back(node->admit(who, policy, true));
    local_held.push_back(local.decide(who, policy, true));
    compare(shared_held.back(), local_held.back(), "download " + std::to_string(i));
    EXPECT_TRUE(shared_held.back().allowed);
  }
  compare(node->admit(who, policy, true), local.decide(who, policy, true), "a third download at once");
  compare(node->admit(who, policy), local.decide(who, policy, false), "a third request");
  const Decision refused = node->admit(who, policy);
  compare(refused, local.decide(who, policy, false), "a fourth request");
  EXPECT_EQ(refused.refused_by, LimitKind::requests);
  EXPECT_GT(refused.retry_after, 1190s);

  // 8000 bytes against a burst of 5000: 3000 bytes of debt, 518400 s until the next request passes.
  node->redis.charge(who, policy, 8000);
  local.charge(who, policy, 8000);
  const Decision in_debt = node->admit(who, policy);
  compare(in_debt, local.decide(who, policy, false), "requests and tokens refuse");
  EXPECT_EQ(in_debt.refused_by, LimitKind::requests);
  EXPECT_GT(in_debt.retry_after, 518000s);

  shared_held.clear();
  local_held.clear();
  compare(node->admit(who, policy, true), local.decide(who, policy, true), "after the downloads ended");
  EXPECT_EQ(status_of(node->admit(who, policy), LimitKind::concurrent)->remaining, 2u);
}

TEST_F(RedisLimiterTest, TokenDebtOnOneNodeRefusesOnTheOther) {
  auto a = connected_node();
  auto b = connected_node();
  LimitPolicy policy;
  policy.tokens = 10;
  policy.token_bytes = 1024;
  policy.token_window = 3600s;  // a token every 360 s
  const UserId who = UserId::user("carol");
  EXPECT_TRUE(b->admit(who, policy).allowed);

  // A download already streaming is never cut: 20 tokens go through, 10 of them in debt.
  a->redis.charge(who, policy, 12 * 1024);
  a->redis.charge(who, policy, 8 * 1024);
  const Decision on_a = a->admit(who, policy);  // after the charges on A's connection
  EXPECT_FALSE(on_a.allowed);
  const Decision on_b = b->admit(who, policy);
  EXPECT_FALSE(on_b.allowed);
  EXPECT_FALSE(on_b.fallback);
  EXPECT_EQ(on_b.refused_by, LimitKind::tokens);
  EXPECT_GT(on_b.retry_after, 3590s);
  EXPECT_LE(on_b.retry_after, 3600s);
  ASSERT_NE(status_of(on_b, LimitKind::tokens), nullptr);
  EXPECT_EQ(status_of(on_b, LimitKind::tokens)->remaining, 0u);
  EXPECT_EQ(status_of(on_b, LimitKind::tokens)->quota, 10u * 1024);
  EXPECT_GT(status_of(on_b, LimitKind::tokens)->reset, 7190s);
}

TEST_F(RedisLimiterTest, DownloadSlotsAreSharedLeasedAndReleased) {
  auto a = connected_node();
  auto b = connected_node();
  Inspector redis(server.port());
  LimitPolicy policy;
  policy.concurrent = 2;
  const UserId who = UserId::user("dave");
  const std::string slots = "inferllama:rl:{dave}:dl";

  Decision first = a->admit(who, policy, true);
  Decision second = b->admit(who, policy, true);
  ASSERT_TRUE(first.allowed && second.allowed);
  EXPECT_TRUE(first.slot && second.slot);
  EXPECT_EQ(redis.command({"ZCARD", slots}), "2");
  // Leased for ten minutes, refreshed while held; the key goes with the last lease.
  const long long pttl = std::stoll(redis.command({"PTTL", slots}));
  EXPECT_GT(pttl, 590'000);
  EXPECT_LE(pttl, 600'000);

  const Decision third = a->admit(who, policy, true);
  EXPECT_FALSE(third.allowed);
  EXPECT_EQ(third.refused_by, LimitKind::concurrent);
  EXPECT_EQ(third.retry_after, 1s);
  EXPECT_FALSE(third.slot);
  const Decision not_a_download = b->admit(who, policy);
  EXPECT_TRUE(not_a_download.allowed);
  EXPECT_EQ(status_of(not_a_download, LimitKind::concurrent)->remaining, 0u);

  // Copies share the slot; it is freed with the last of them.
  Decision copy = first;
  first = Decision{};
  EXPECT_EQ(status_of(a->admit(who, policy), LimitKind::concurrent)->remaining, 0u);
  copy = Decision{};
  EXPECT_EQ(status_of(a->admit(who, policy), LimitKind::concurrent)->remaining, 1u);  // after the ZREM on A
  EXPECT_TRUE(b->admit(who, policy, true).allowed);                                   // taken and freed at once
  second = Decision{};
  EXPECT_EQ(status_of(b->admit(who, policy), LimitKind::concurrent)->remaining, 2u);
  EXPECT_EQ(redis.command({"EXISTS", slots}), "0");

  // A decision that outlives its node frees nothing and touches nothing.
  Decision kept = a->admit(who, policy, true);
  ASSERT_TRUE(kept.slot);
  a.reset();
  kept = Decision{};
}

TEST_F(RedisLimiterTest, SlotsOutliveARedisRestartAndReleasesWaitForRedis) {
  auto node = connected_node(300ms);
  LimitPolicy policy;
  policy.concurrent = 3;
  const UserId who = UserId::user("kim");
  const std::string slots = "inferllama:rl:{kim}:dl";
  const Decision held = node->admit(who, policy, true);
  Decision ended_while_down = node->admit(who, policy, true);
  ASSERT_TRUE(held.allowed && ended_while_down.allowed);
  ASSERT_FALSE(held.fallback || ended_while_down.fallback);

  // Redis restarts empty: the node puts back the slot it still holds, and not the one that ended meanwhile.
  server.stop();
  ASSERT_TRUE(eventually([&] { return !node->redis.connected(); }));
  ended_while_down = Decision{};
  ASSERT_EQ(server.restart(), "");
  ASSERT_TRUE(eventually([&] { return node->redis.connected(); }));
  Inspector redis(server.port());
  EXPECT_TRUE(eventually([&] { return redis.command({"ZCARD", slots}) == "1"; }));
  EXPECT_GT(std::stoll(redis.command({"PTTL", slots})), 590'000);
  EXPECT_EQ(status_of(node->admit(who, policy), LimitKind::concurrent)->remaining, 2u);

  // A download decided locally because Redis froze: should the script have taken a slot for it after
  // all, the node frees it once Redis answers again.
  server.freeze();
  const Decision decided_locally = node->admit(who, policy, true);
  EXPECT_TRUE(decided_locally.allowed);
  EXPECT_TRUE(decided_locally.fallback);
  server.thaw();
  ASSERT_TRUE(eventually([&] { return node->redis.connected(); }));
  EXPECT_EQ(status_of(node->admit(who, policy), LimitKind::concurrent)->remaining, 2u);
  EXPECT_EQ(redis.command({"ZCARD", slots}), "1");
}

TEST_F(RedisLimiterTest, SlotsOfADeadNodeExpire) {
  auto node = connected_node();
  Inspector redis(server.port());
  LimitPolicy policy;
  policy.concurrent = 1;
  // A node that died holding a slot whose lease has run out (scores are expiry times in microseconds).
  ASSERT_EQ(redis.command({"ZADD", "inferllama:rl:{erin}:dl", "1000", "dead-node:7"}), "1");
  const Decision decision = node->admit(UserId::user("erin"), policy, true);
  EXPECT_TRUE(decision.allowed);
  EXPECT_EQ(redis.command({"ZSCORE", "inferllama:rl:{erin}:dl", "dead-node:7"}), "(nil)");
}

TEST_F(RedisLimiterTest, IdleStateExpires) {
  auto node = connected_node();
  Inspector redis(server.port());
  LimitPolicy policy;
  policy.requests = 3;
  policy.request_window = 3600s;
  policy.tokens = 1;
  policy.token_bytes = 1000;
  policy.token_window = 100s;
  const UserId who = UserId::user("frank");
  ASSERT_TRUE(node->admit(who, policy).allowed);
  // The state differs from a fresh one for 1200 s (one request) and 10 s (100 bytes): then it goes.
  const long long requests_ttl = std::stoll(redis.command({"PTTL", "inferllama:rl:{frank}:req"}));
  EXPECT_GT(requests_ttl, 1'190'000);
  EXPECT_LE(requests_ttl, 1'200'000);
  EXPECT_EQ(redis.command({"EXISTS", "inferllama:rl:{frank}:tok"}), "0");  // admit() costs no tokens
  node->redis.charge(who, policy, 100);
  ASSERT_TRUE(node->admit(who, policy).allowed);
  const long long tokens_ttl = std::stoll(redis.command({"PTTL", "inferllama:rl:{frank}:tok"}));
  EXPECT_GT(tokens_ttl, 9'000);
  EXPECT_LE(tokens_ttl, 10'000);
}

TEST_F(RedisLimiterTest, ScriptsAreLoadedAgainWhenRedisForgetsThem) {
  auto node = connected_node();
  Inspector redis(server.port());
  LimitPolicy policy;
  policy.requests = 2;
  const UserId who = UserId::user("grace");
  EXPECT_TRUE(node->admit(who, policy).allowed);
  ASSERT_EQ(redis.command({"SCRIPT", "FLUSH"}), "OK");
  const Decision after_flush = node->admit(who, policy);
  EXPECT_TRUE(after_flush.allowed);
  EXPECT_FALSE(after_flush.fallback);
  EXPECT_FALSE(node->admit(who, policy).allowed);
}

TEST_F(RedisLimiterTest, StoppedRedisFallsBackToTheLocalLimiterUntilItIsBack) {
  auto node = connected_node();
  LimitPolicy policy;
  policy.requests = 1;
  policy.request_window = 3600s;
  const UserId who = UserId::user("heidi");
  EXPECT_TRUE(node->admit(who, policy).allowed);

  server.stop();
  ASSERT_TRUE(eventually([&] { return !node->redis.connected(); }));
  // The local limiter decides, with its own state: one request allowed, the next refused.
  const Decision first = node->admit(who, policy);
  EXPECT_TRUE(first.allowed);
  EXPECT_TRUE(first.fallback);
  const Decision second = node->admit(who, policy);
  EXPECT_FALSE(second.allowed);
  EXPECT_TRUE(second.fallback);
  EXPECT_EQ(second.refused_by, LimitKind::requests);
  const std::string metrics = node->metrics();
  EXPECT_NE(metrics.find("inferllama_ratelimit_backend_up{backend=\"redis\"} 0"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("inferllama_ratelimit_fallback_decisions_total{backend=\"redis\"} 2"), std::string::npos)
      << metrics;
  EXPECT_EQ(metrics.find("inferllama_ratelimit_backend_errors_total{backend=\"redis\"} 0\n"), std::string::npos)
      << metrics;
  // One family of decisions, with the local limiter's samples and the Redis ones together.
  const std::string family = "# TYPE inferllama_ratelimit_decisions_total counter\n";
  EXPECT_EQ(metrics.find(family), metrics.rfind(family)) << metrics;
  EXPECT_NE(metrics.find("inferllama_ratelimit_decisions_total{backend=\"redis\",result=\"allowed\"} 1"),
            std::string::npos)
      << metrics;

  // Back (empty, as it was not saved): shared decisions again.
  ASSERT_EQ(server.restart(), "");
  ASSERT_TRUE(eventually([&] { return node->redis.connected(); }));
  const Decision shared = node->admit(who, policy);
  EXPECT_TRUE(shared.allowed);
  EXPECT_FALSE(shared.fallback);
  EXPECT_FALSE(node->admit(who, policy).allowed);
  EXPECT_NE(node->metrics().find("inferllama_ratelimit_backend_up{backend=\"redis\"} 1"), std::string::npos);
}

TEST_F(RedisLimiterTest, FrozenRedisTimesOutAndFallsBack) {
  auto node = connected_node(200ms);
  LimitPolicy policy;
  policy.requests = 10;
  const UserId who = UserId::user("ivan");
  EXPECT_TRUE(node->admit(who, policy).allowed);

  server.freeze();
  const auto asked = std::chrono::steady_clock::now();
  const Decision decision = node->admit(who, policy);
  const auto waited = std::chrono::steady_clock::now() - asked;
  EXPECT_TRUE(decision.allowed);
  EXPECT_TRUE(decision.fallback);
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 3s);
  EXPECT_FALSE(node->redis.connected());
  // Further decisions do not wait while the connection is down.
  const auto asked_again = std::chrono::steady_clock::now();
  EXPECT_TRUE(node->admit(who, policy).fallback);
  EXPECT_LT(std::chrono::steady_clock::now() - asked_again, 200ms);

  server.thaw();
  EXPECT_TRUE(eventually([&] { return node->redis.connected(); }));
  EXPECT_FALSE(node->admit(who, policy).fallback);
}

TEST_F(RedisLimiterTest, RefusesWhenDownIfAskedTo) {
  Node node(free_loopback_port(), 200ms, true);  // nothing listens there
  LimitPolicy policy;
  policy.requests = 10;
  const Decision decision = node.admit(UserId::user("judy"), policy);
  EXPECT_FALSE(decision.allowed);
  EXPECT_FALSE(decision.refused_by.has_value());  // not a limit: the server answers 503
  EXPECT_EQ(decision.retry_after, 1s);
  EXPECT_TRUE(decision.fallback);
  EXPECT_FALSE(node.redis.connected());
  // A policy that limits nothing needs no backend.
  EXPECT_TRUE(node.admit(UserId::user("judy"), LimitPolicy{}).allowed);
}

TEST(RedisLimiterAuthTest, PasswordAndDatabaseFromTheUrl) {
  RedisServer server;
  ASSERT_EQ(server.start(free_loopback_port(), {"--requirepass", "s3cret"}), "");
  RedisSettings settings = RedisSettings::from_url("redis://:s3cret@127.0.0.1:" + std::to_string(server.port()) + "/3");
  settings.timeout = 5s;
  LimitPolicy policy;
  policy.requests = 5;
  {
    Node node(settings);
    ASSERT_TRUE(eventually([&] { return node.redis.connected(); }));
    EXPECT_FALSE(node.admit(UserId::user("lee"), policy).fallback);
  }
  Inspector redis(server.port());
  ASSERT_EQ(redis.command({"AUTH", "s3cret"}), "OK");
  EXPECT_EQ(redis.command({"EXISTS", "inferllama:rl:{lee}:req"}), "0");
  ASSERT_EQ(redis.command({"SELECT", "3"}), "OK");
  EXPECT_EQ(redis.command({"EXISTS", "inferllama:rl:{lee}:req"}), "1");

  // Refused by Redis: never connected, counted as an error, decided locally.
  settings.password = "wrong";
  Node refused(settings);
  EXPECT_TRUE(eventually([&] {
    return refused.metrics().find("inferllama_ratelimit_backend_errors_total{backend=\"redis\"} 0\n") ==
           std::string::npos;
  }));
  EXPECT_FALSE(refused.redis.connected());
  EXPECT_TRUE(refused.admit(UserId::user("lee"), policy).fallback);
}

TEST(RedisSettingsTest, FromUrl) {
  const RedisSettings plain = RedisSettings::from_url("redis://cache.internal");
  EXPECT_EQ(plain.host, "cache.internal");
  EXPECT_EQ(plain.port, 6379);
  EXPECT_EQ(plain.database, 0u);
  EXPECT_EQ(plain.password, "");

  const RedisSettings full = RedisSettings::from_url("redis://:s3cr%40t@10.0.0.5:6380/2");
  EXPECT_EQ(full.host, "10.0.0.5");
  EXPECT_EQ(full.port, 6380);
  EXPECT_EQ(full.database, 2u);
  EXPECT_EQ(full.password, "s3cr@t");

  const RedisSettings v6 = RedisSettings::from_url("redis://[::1]:7000/");
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.port, 7000);
  EXPECT_EQ(v6.database, 0u);
  EXPECT_EQ(RedisSettings::from_url("redis://[fe80::1]").port, 6379);

  auto message = [](const std::string& url) {
    try {
      RedisSettings::from_url(url);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message("http://localhost").find("does not start with redis://"), std::string::npos);
  EXPECT_NE(message("rediss://localhost").find("TLS"), std::string::npos);
  EXPECT_NE(message("redis://").find("host is missing"), std::string::npos);
  EXPECT_NE(message("redis://:pw@:6379").find("host is missing"), std::string::npos);
  EXPECT_NE(message("redis://localhost:0").find("port \"0\""), std::string::npos);
  EXPECT_NE(message("redis://localhost:65536").find("port \"65536\""), std::string::npos);
  EXPECT_NE(message("redis://localhost:").find("port \"\""), std::string::npos);
  EXPECT_NE(message("redis://localhost:63x9").find("port \"63x9\""), std::string::npos);
  EXPECT_NE(message("redis://localhost/db1").find("database \"db1\""), std::string::npos);
  EXPECT_NE(message("redis://localhost/1/2").find("database \"1/2\""), std::string::npos);
  EXPECT_NE(message("redis://user:pw@localhost").find("user names are not supported"), std::string::npos);
  EXPECT_NE(message("redis://:@localhost").find("password"), std::string::npos);
  EXPECT_NE(message("redis://:pw%4@localhost").find("%-escape"), std::string::npos);
  EXPECT_NE(message("redis://::1:6379").find("brackets"), std::string::npos);
  EXPECT_NE(message("redis://[::1").find("closing ]"), std::string::npos);
  EXPECT_NE(message("redis://[::1]x").find("after the host"), std::string::npos);
  EXPECT_NE(message("redis://localhost?timeout=1").find("query"), std::string::npos);
  EXPECT_NE(message("redis://local host").find("spaces"), std::string::npos);
  // The password never appears in a message.
  EXPECT_EQ(message("redis://:hunter2@localhost:99999").find("hunter2"), std::string::npos);
}

}  // namespace
}  // namespace inferllama::usage
