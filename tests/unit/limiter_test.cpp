#include <gtest/gtest.h>

#include <atomic>
#include <limits>
#include <thread>
#include <vector>

#include "inferllama/asio.hpp"
#include "test_support.hpp"
#include "usage/local_limiter.hpp"

namespace inferllama::usage {
namespace {

using testing::ManualClock;

using namespace std::chrono_literals;

// A clock that moves only when told to; readable from several threads.
LimitPolicy requests_per_minute(std::uint64_t n) {
  LimitPolicy p;
  p.requests = n;
  p.request_window = 60s;
  return p;
}

const LimitStatus* status_of(const Decision& d, LimitKind kind) {
  for (const auto& s : d.status) {
    if (s.kind == kind) return &s;
  }
  return nullptr;
}

int admitted(LocalRateLimiter& limiter, const UserId& who, const LimitPolicy& policy, int tries) {
  int n = 0;
  for (int i = 0; i < tries; ++i) n += limiter.decide(who, policy, false).allowed ? 1 : 0;
  return n;
}

TEST(GcraTest, TakesExactlyTheBurstAtOnceThenOneIntervalAtATime) {
  GcraState state;
  const std::int64_t now = 1'000'000'000'000;
  std::int64_t wait = 0;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(Gcra::try_take(state, now, 1e9 / 3, 3, 1, wait)) << i;
  EXPECT_FALSE(Gcra::try_take(state, now, 1e9 / 3, 3, 1, wait));
  EXPECT_NEAR(wait, 333'333'333, 1);
  // The wait is exact: one nanosecond earlier is still refused.
  const std::int64_t fits_at = now + wait;
  EXPECT_FALSE(Gcra::try_take(state, fits_at - 1, 1e9 / 3, 3, 1, wait));
  EXPECT_TRUE(Gcra::try_take(state, fits_at, 1e9 / 3, 3, 1, wait));
  // A cost larger than the burst never fits.
  GcraState fresh;
  EXPECT_FALSE(Gcra::try_take(fresh, now, 10, 4, 5, wait));
  EXPECT_EQ(fresh.tat_ns, 0);
}

TEST(GcraTest, TakeBuildsDebtAndRemainingCountsWholeUnits) {
  GcraState state;
  const std::int64_t now = 5'000'000'000;
  std::int64_t reset = 0;
  EXPECT_EQ(Gcra::remaining(state, now, 100, 10, reset), 10);
  EXPECT_EQ(reset, 0);
  Gcra::take(state, now, 100, 4);
  EXPECT_EQ(Gcra::remaining(state, now, 100, 10, reset), 6);
  EXPECT_EQ(reset, 400);
  Gcra::take(state, now, 100, 20);  // 14 units past the burst
  EXPECT_EQ(Gcra::remaining(state, now, 100, 10, reset), 0);
  std::int64_t wait = 0;
  EXPECT_FALSE(Gcra::try_take(state, now, 100, 10, 0, wait));
  EXPECT_EQ(wait, 1399);  // one nanosecond of slack absorbs floating-point error
  EXPECT_FALSE(Gcra::try_take(state, now + 1398, 100, 10, 0, wait));
  EXPECT_TRUE(Gcra::try_take(state, now + 1399, 100, 10, 0, wait));
}

TEST(LocalRateLimiterTest, ABurstOf2000AdmitsExactlyTheHundredOfAMinute) {
  ManualClock clock;
  LocalRateLimiter limiter(clock);
  const auto policy = requests_per_minute(100);
  const auto alice = UserId::user("alice");
  int allowed = 0;
  Decision last_refused;
  for (int i = 0; i < 2000; ++i) {
    auto d = limiter.decide(alice, policy, false);
    if (d.allowed) {
      ++allowed;
    } else {
      last_refused = d;
    }
  }
  EXPECT_EQ(allowed, 100);
  EXPECT_EQ(last_refused.refused_by, LimitKind::requests);
  EXPECT_EQ(last_refused.retry_after, 600ms);
  // Another identity has its own budget.
  EXPECT_EQ(admitted(limiter, UserId::address("203.0.113.7"), policy, 150), 100);
}

TEST(LocalRateLimiterTest, OneRequestComesBackEveryIntervalOnTheDot) {
  ManualClock clock;
  LocalRateLimiter limiter(clock);
  const auto policy = requests_per_minute(100);
  const auto alice = UserId::user("alice");
  ASSERT_EQ(admitted(limiter, alice, policy, 100), 100);
  clock.advance(599ms);
  auto early = limiter.decide(alice, policy, false);
  EXPECT_FALSE(early.allowed);
  EXPECT_EQ(early.retry_after, 1ms);
  clock.advance(1ms);
  EXPECT_EQ(admitted(limiter, alice, policy, 10), 1);
  clock.advance(6s);
  EXPECT_EQ(admitted(limiter, alice, policy, 20), 10);
}

TEST(LocalRateLimiterTest, StatusReportsQuotaRemainingAndReset) {
  ManualClock clock;
  LocalRateLimiter limiter(clock);
  auto policy = requests_per_minute(100);
  policy.tokens = 10;
  policy.token_window = 3600s;
  policy.concurrent = 2;
  const auto alice = UserId::user("alice");

  auto first = limiter.decide(alice, policy, false);
  ASSERT_TRUE(first.allowed);
  ASSERT_EQ(first.status.size(), 3u);
  const auto* requests = status_of(first, LimitKind::requests);
  ASSERT_TRUE(requests);
  EXPECT_EQ(requests->quota, 100u);
  EXPECT_EQ(requests->window, 60s);
  EXPECT_EQ(requests->remaining, 99u);
  EXPECT_EQ(requests->reset, 1s);  // 0.6 s, rounded up
  const auto* tokens = status_of(first, LimitKind::tokens);
  ASSERT_TRUE(tokens);
  EXPECT_EQ(tokens->quota, 10u * 1024 * 1024);
  EXPECT_EQ(tokens->window, 3600s);
  EXPECT_EQ(tokens->remaining, 10u * 1024 * 1024);
  EXPECT_EQ(tokens->reset, 0s);
  const auto* concurrent = status_of(first, LimitKind::concurrent);
  ASSERT_TRUE(concurrent);
  EXPECT_EQ(concurrent->quota, 2u);
  EXPECT_EQ(concurrent->window, 0s);
  EXPECT_EQ(concurrent->remaining, 2u);

  ASSERT_EQ(admitted(limiter, alice, policy, 9), 9);
  limiter.charge(alice, policy, 3 * 1024 * 1024);
  auto download = limiter.decide(alice, policy, true);
  ASSERT_TRUE(download.allowed);
  EXPECT_EQ(status_of(download, LimitKind::requests)->remaining, 89u);
  EXPECT_EQ(status_of(download, LimitKind::requests)->reset, 7s);  // 11 x 0.6 s = 6.6 s
  EXPECT_EQ(status_of(download, LimitKind::tokens)->remaining, 7u * 1024 * 1024);
  EXPECT_EQ(status_of(download, LimitKind::tokens)->reset, 1080s);  // 3 tokens x 360 s
  EXPECT_EQ(status_of(download, LimitKind::concurrent)->remaining, 1u);
}

TEST(LocalRateLimiterTest, TokenDebtRefusesTheNextRequestUntilPaidOff) {
  ManualClock clock;
  LocalRateLimiter limiter(clock);
  LimitPolicy policy;
  policy.requests = 1000;
  policy.tokens = 10;  // 10 MiB an hour: one token (MiB) comes back every 360 s
  policy.token_window = 3600s;
  const auto alice = UserId::user("alice");
  const std::uint64_t mib = 1024 * 1024;

  ASSERT_TRUE(limiter.decide(alice, policy, true).allowed);
  limiter.charge(alice, policy, 15 * mib);  // a download already streaming goes 5 MiB into debt
  auto refused = limiter.decide(alice, policy, true);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.refused_by, LimitKind::tokens);
  EXPECT_EQ(refused.retry_after, 1800s);
  EXPECT_EQ(status_of(refused, LimitKind::tokens)->remaining, 0u);
  // The refused request did not count against the request limit.
  EXPECT_EQ(status_of(refused, LimitKind::requests)->remaining, 999u);

  clock.advance(1800s - 1ms);
  auto almost = limiter.decide(alice, policy, false);
  EXPECT_FALSE(almost.allowed);
  EXPECT_EQ(almost.retry_after, 1ms);
  clock.advance(1ms);
  auto paid = limiter.decide(alice, policy, true);
  EXPECT_TRUE(paid.allowed);
  EXPECT_EQ(status_of(paid, LimitKind::tokens)->remaining, 0u);  // the debt is gone, nothing more yet
  clock.advance(360s);
  EXPECT_EQ(status_of(limiter.decide(alice, policy, false), LimitKind::tokens)->remaining, mib);
}

TEST(LocalRateLimiterTest, ChargeNeverRefusesAndDebtKeepsGrowing) {
  ManualClock clock;
  LocalRateLimiter limiter(clock);
  LimitPolicy policy;
  policy.tokens = 1;
  policy.token_window = 100s;
  policy.token_bytes = 1000;
  const auto bob = UserId::user("bob");
  ASSERT_TRUE(limiter.decide(bob, policy, true).allowed);
  for (int i = 0; i < 10; ++i) limiter.charge(bob, policy, 1000);  // 9 tokens past the burst
  auto refused = limiter.decide(bob, policy, true);
  EXPECT_EQ(refused.retry_after, 900s);
  limiter.charge(bob, policy, 1000);
  EXPECT_EQ(limiter.decide(bob, policy, true).retry_after, 1000s);
  // An absurd charge saturates instead of overflowing.
  limiter.charge(bob, policy, std::numeric_limits<std::uint64_t>::max());
  EXPECT_GT(limiter.decide(bob, policy, true).retry_after, std::chrono::hours(24 * 365 * 50));
  // Charges to a policy without a token limit are no-ops.
  LimitPolicy no_tokens = requests_per_minute(1);
  limiter.charge(UserId::user("carol"), no_tokens, 1u << 30);
  EXPECT_TRUE(limiter.decide(UserId::user("carol"), no_tokens, true).allowed);
}

TEST(LocalRateLimiterTest, DownloadSlotsAreFreedWhenTheLastCopyGoes) {
  ManualClock clock;
  LocalRateLimiter limiter(clock);
  LimitPolicy policy;
  policy.concurrent = 2;
  const auto alice = UserId::user("alice");

  auto first = limiter.decide(alice, policy, true);
  auto second = limiter.decide(alice, policy, true);
  ASSERT_TRUE(first.allowed && second.allowed);
  EXPECT_TRUE(first.slot);
  auto third = limiter.decide(alice, policy, true);
  EXPECT_FALSE(third.allowed);
  EXPECT_EQ(third.refused_by, LimitKind::concurrent);
  EXPECT_EQ(third.retry_after, 1s);
  EXPECT_FALSE(third.slot);
  EXPECT_EQ(status_of(third, LimitKind::concurrent)->remaining, 0u);
  // A request that is no download takes no slot.
  auto listing = limiter.decide(alice, policy, false);
  EXPECT_TRUE(listing.allowed);
  EXPECT_FALSE(listing.slot);

  auto copy = first.slot;
  first.slot.reset();
  EXPECT_FALSE(limiter.decide(alice, policy, true).allowed);  // a copy still holds it
  copy.reset();
  auto again = limiter.decide(alice, policy, true);
  EXPECT_TRUE(again.allowed);
  EXPECT_EQ(status_of(again, LimitKind::concurrent)->remaining, 0u);
}

TEST(LocalRateLimiterTest, ARefusedDecisionCountsNothing) {
  ManualClock clock;
  LocalRateLimiter limiter(clock);
  auto policy = requests_per_minute(5);
  policy.concurrent = 1;
  const auto alice = UserId::user("alice");
  auto held = limiter.decide(alice, policy, true);
  ASSERT_TRUE(held.allowed);
  for (int i = 0; i < 10; ++i) {
    auto d = limiter.decide(alice, policy, true);
    ASSERT_FALSE(d.allowed);
    EXPECT_EQ(d.refused_by, LimitKind::concurrent);
  }
  held.slot.reset();
  EXPECT_EQ(admitted(limiter, alice, policy, 10), 4);  // 5 - the one download
}

TEST(LocalRateLimiterTest, AnEntryWithADownloadIsNotSweptWhileIdle) {
  ManualClock clock;
  LocalRateLimiter limiter(clock);
  LimitPolicy policy;
  policy.concurrent = 1;
  auto held = limiter.decide(UserId::user("alice"), policy, true);
  ASSERT_TRUE(held.allowed);
  clock.advance(std::chrono::hours(2));
  // This decision sweeps alice's shard first: her state has recovered, but a download is in progress.
  EXPECT_FALSE(limiter.decide(UserId::user("alice"), policy, true).allowed);
  held.slot.reset();
  EXPECT_TRUE(limiter.decide(UserId::user("alice"), policy, true).allowed);
}

TEST(LocalRateLimiterTest, APolicyThatLimitsNothingAllowsWithoutStatus) {
  ManualClock clock;
  LocalRateLimiter limiter(clock);
  auto d = limiter.decide(UserId::user("alice"), LimitPolicy{}, true);
  EXPECT_TRUE(d.allowed);
  EXPECT_TRUE(d.status.empty());
  EXPECT_FALSE(d.slot);
}

TEST(LocalRateLimiterTest, FourThreadsStillAdmitExactlyTheBurst) {
  ManualClock clock;
  LocalRateLimiter limiter(clock);
  const auto policy = requests_per_minute(100);
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (limiter.decide(UserId::user("alice"), policy, false).allowed) ++allowed;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 100);
  std::string metrics;
  limiter.render_metrics(metrics);
  EXPECT_NE(metrics.find("inferllama_ratelimit_decisions_total{backend=\"local\",result=\"allowed\"} 100\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("inferllama_ratelimit_decisions_total{backend=\"local\",result=\"refused\"} 3900\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("# TYPE inferllama_ratelimit_decisions_total counter"), std::string::npos);
}

TEST(LocalRateLimiterTest, AdmitIsTheSameDecisionAsACoroutine) {
  ManualClock clock;
  LocalRateLimiter limiter(clock);
  RateLimiter& as_interface = limiter;
  const auto policy = requests_per_minute(1);
  asio::io_context io;
  std::vector<bool> results;
  asio::co_spawn(
      io,
      [&]() -> Task<> {
        const auto alice = UserId::user("alice");
        for (int i = 0; i < 2; ++i) {
          auto d = co_await as_interface.admit(alice, policy, false);
          results.push_back(d.allowed);
        }
      },
      asio::detached);
  io.run();
  EXPECT_EQ(results, (std::vector<bool>{true, false}));
}

}  // namespace
}  // namespace inferllama::usage
