// Each account's security events: kept in time order, bounded per user, dropped after their 90 days and
// forgotten with the account.
#include "usage/audit_log.hpp"

#include <gtest/gtest.h>

#include "test_support.hpp"

namespace inferllama::usage {
namespace {

using namespace std::chrono_literals;
using testing::ManualClock;
using testing::MemoryRecords;

std::size_t stored(MemoryRecords& records) {
  std::size_t n = 0;
  records.scan(RecordTable::identities, "audit|", [&](std::string_view, std::string_view) {
    ++n;
    return true;
  });
  return n;
}

TEST(AuditLogTest, EventsComeBackInTheOrderTheyHappenedWithWhoAndWhere) {
  MemoryRecords records;
  ManualClock clock;
  AuditLog log(records, clock);
  log.record("alice", AuditEvent::signed_in, Actor::user, "203.0.113.7");
  clock.advance(1s);
  log.record("alice", AuditEvent::key_created, Actor::admin, {}, "key_0123456789abcdef");
  log.record("alice", AuditEvent::key_revoked, Actor::admin, {}, "key_0123456789abcdef");  // the same millisecond
  log.record("bob", AuditEvent::sign_in_failed, Actor::user, "2001:db8::/64");

  const auto alice = log.of_user("alice");
  ASSERT_EQ(alice.size(), 3u);
  EXPECT_EQ(alice[0].event, AuditEvent::signed_in);
  EXPECT_EQ(alice[0].by, Actor::user);
  EXPECT_EQ(alice[0].network, "203.0.113.7");
  EXPECT_EQ(alice[0].at_ms,
            std::chrono::duration_cast<std::chrono::milliseconds>(testing::kTestStart.time_since_epoch()).count());
  EXPECT_EQ(alice[1].event, AuditEvent::key_created);
  EXPECT_EQ(alice[1].by, Actor::admin);
  EXPECT_EQ(alice[1].detail, "key_0123456789abcdef");
  EXPECT_EQ(alice[2].event, AuditEvent::key_revoked);
  ASSERT_EQ(log.of_user("bob").size(), 1u);
  EXPECT_EQ(audit_event_name(log.of_user("bob")[0].event), "sign_in_failed");
  EXPECT_TRUE(log.of_user("al").empty());  // a prefix of a name is another name
}

TEST(AuditLogTest, EachUserKeepsAtMostTheBoundTheOldestDroppedFirst) {
  MemoryRecords records;
  ManualClock clock;
  AuditLog log(records, clock, AuditSettings{.max_per_user = 5});
  for (int i = 0; i < 12; ++i) {
    log.record("alice", AuditEvent::sign_in_failed, Actor::user, "198.51.100.1", std::to_string(i));
    clock.advance(1ms);
  }
  log.record("bob", AuditEvent::signed_in, Actor::user);
  const auto kept = log.of_user("alice");
  ASSERT_EQ(kept.size(), 5u);
  EXPECT_EQ(kept.front().detail, "7");
  EXPECT_EQ(kept.back().detail, "11");
  EXPECT_EQ(log.of_user("bob").size(), 1u);  // another user's events are not pushed out
  EXPECT_EQ(stored(records), 6u);
}

TEST(AuditLogTest, EventsOlderThanTheRetentionGoAndForgetTakesAUsersAll) {
  MemoryRecords records;
  ManualClock clock;
  AuditLog log(records, clock);
  log.record("alice", AuditEvent::signed_in, Actor::user);
  log.record("bob", AuditEvent::signed_in, Actor::user);
  clock.advance(60 * 24h);
  log.record("alice", AuditEvent::password_changed, Actor::user);
  clock.advance(30 * 24h);
  EXPECT_EQ(log.expire(), 0u);  // exactly 90 days old: still kept
  clock.advance(1ms);
  EXPECT_EQ(log.expire(), 2u);
  ASSERT_EQ(log.of_user("alice").size(), 1u);
  EXPECT_EQ(log.of_user("alice")[0].event, AuditEvent::password_changed);
  EXPECT_TRUE(log.of_user("bob").empty());

  log.record("alice2", AuditEvent::signed_in, Actor::user);
  log.forget("alice");
  EXPECT_TRUE(log.of_user("alice").empty());
  EXPECT_EQ(log.of_user("alice2").size(), 1u);
}

TEST(AuditLogTest, AWriteThatFailsIsLoggedAndTheCallerGoesOn) {
  MemoryRecords records;
  ManualClock clock;
  AuditLog log(records, clock);
  records.fail = true;
  EXPECT_NO_THROW(log.record("alice", AuditEvent::signed_in, Actor::user));
  records.fail = false;
  EXPECT_TRUE(log.of_user("alice").empty());
}

}  // namespace
}  // namespace inferllama::usage
