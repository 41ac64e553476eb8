#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <stdexcept>

#include "inferllama/index.hpp"
#include "test_support.hpp"
#include "usage/usage_log.hpp"

namespace inferllama::usage {
namespace {

using testing::ManualClock;

using namespace std::chrono_literals;

class UsageLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("usage");
    reopen();
  }
  void TearDown() override {
    log_.reset();
    index_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Closes without flushing, as a crash would.
  void reopen() {
    log_.reset();
    index_.reset();
    index_ = open_rocksdb_index(dir_);
    log_ = std::make_unique<UsageLog>(index_->records(), clock_);
  }
  std::size_t stored_rows() {
    std::size_t n = 0;
    index_->records().scan(RecordTable::usage, "", [&](std::string_view, std::string_view) {
      ++n;
      return true;
    });
    return n;
  }

  std::filesystem::path dir_;
  ManualClock clock_{testing::kTestStart + std::chrono::hours(12)};
  std::unique_ptr<Index> index_;
  std::unique_ptr<UsageLog> log_;
};

UsageCounts counts(std::uint64_t requests, std::uint64_t from_cache, std::uint64_t from_upstream,
                   std::uint64_t token_bytes) {
  return UsageCounts{requests, from_cache, from_upstream, token_bytes};
}

TEST(UsageLogDayTest, DaysAreUtcDatesBothWays) {
  const auto day = parse_day("2026-12-01");
  ASSERT_TRUE(day);
  EXPECT_EQ(day->time_since_epoch(), std::chrono::seconds(1'796'083'200));
  EXPECT_EQ(day_of(*day), "2026-12-01");
  EXPECT_EQ(day_of(*day - 1ns), "2026-11-30");
  EXPECT_EQ(day_of(*day + 24h - 1ns), "2026-12-01");
  EXPECT_EQ(day_of(SystemTime{}), "1970-01-01");
  EXPECT_EQ(day_of(*parse_day("2024-02-29")), "2024-02-29");
  for (const char* bad :
       {"2023-02-29", "2026-13-01", "2026-00-10", "2026-1-01", "2026/12/01", "abcd-ef-gh", "2026-12-01x", ""}) {
    EXPECT_FALSE(parse_day(bad)) << bad;
  }
}

TEST_F(UsageLogTest, AddedCountsAreSummedAndVisibleBeforeAndAfterAFlush) {
  const auto alice = UserId::user("alice");
  const auto anon = UserId::address("2001:db8::1");
  log_->add(alice, "model/acme/x", counts(1, 100, 0, 100));
  log_->add(alice, "model/acme/x", counts(2, 0, 50, 50));
  log_->add(anon, "", counts(1, 0, 0, 0));
  log_->add(alice, "dataset/acme/d", counts(1, 7, 0, 7));

  auto check = [&](const char* when) {
    auto rows = log_->query(std::nullopt, std::nullopt);
    ASSERT_EQ(rows.size(), 3u) << when;
    // Ordered by day, identity, repo.
    EXPECT_EQ(rows[0].who, alice) << when;
    EXPECT_EQ(rows[0].repo, "dataset/acme/d") << when;
    EXPECT_EQ(rows[1].repo, "model/acme/x") << when;
    EXPECT_EQ(rows[1].counts, counts(3, 100, 50, 150)) << when;
    EXPECT_EQ(rows[1].day, "2026-12-01") << when;
    EXPECT_EQ(rows[2].who.str(), "anon:2001:db8::1") << when;
    EXPECT_TRUE(rows[2].who.anonymous()) << when;
    EXPECT_EQ(rows[2].repo, "") << when;
  };
  check("unflushed");
  EXPECT_EQ(stored_rows(), 0u);
  log_->flush();
  EXPECT_EQ(stored_rows(), 3u);
  check("flushed");

  // Stored and pending counts of one row add up, in queries and in the next flush.
  log_->add(alice, "model/acme/x", counts(1, 1, 1, 1));
  EXPECT_EQ(log_->query(alice, std::nullopt)[1].counts, counts(4, 101, 51, 151));
  log_->flush();
  EXPECT_EQ(stored_rows(), 3u);
  EXPECT_EQ(log_->query(alice, std::nullopt)[1].counts, counts(4, 101, 51, 151));
  log_->flush();  // nothing pending: nothing changes
  EXPECT_EQ(log_->query(alice, std::nullopt)[1].counts, counts(4, 101, 51, 151));
}

TEST_F(UsageLogTest, FlushedRowsSurviveAReopenAndUnflushedOnesDoNot) {
  const auto alice = UserId::user("alice");
  log_->add(alice, "model/acme/x", counts(5, 10, 20, 30));
  log_->flush();
  log_->add(alice, "model/acme/x", counts(1, 1, 1, 1));  // lost: the log does not flush when destroyed
  reopen();
  auto rows = log_->query(alice, std::nullopt);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].counts, counts(5, 10, 20, 30));
  EXPECT_EQ(rows[0].day, "2026-12-01");
}

TEST_F(UsageLogTest, QueriesFilterByIdentityAndFirstDay) {
  const auto alice = UserId::user("alice");
  const auto alice2 = UserId::user("alice2");
  for (int day = 0; day < 5; ++day) {
    log_->add(alice, "model/acme/x", counts(1, 0, 0, 0));
    log_->add(alice2, "model/acme/x", counts(10, 0, 0, 0));
    if (day < 3) log_->flush();  // the last two days stay pending
    clock_.advance(24h);
  }
  clock_.advance(-24h);  // today is 2026-12-05
  EXPECT_EQ(log_->query(std::nullopt, std::nullopt).size(), 10u);
  auto from_third = log_->query(alice, std::string("2026-12-03"));
  ASSERT_EQ(from_third.size(), 3u);
  EXPECT_EQ(from_third[0].day, "2026-12-03");
  EXPECT_EQ(from_third[2].day, "2026-12-05");
  for (const auto& row : from_third) EXPECT_EQ(row.who, alice);
  // "alice" sorts before "alice2" although '|' sorts after '2' in the stored keys.
  auto both = log_->query(std::nullopt, std::string("2026-12-05"));
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[0].who, alice);
  EXPECT_EQ(both[1].who, alice2);
  EXPECT_EQ(log_->query(std::nullopt, std::string("1970-01-01")).size(), 10u);
  EXPECT_TRUE(log_->query(std::nullopt, std::string("2026-12-06")).empty());
  EXPECT_TRUE(log_->query(UserId::user("bob"), std::nullopt).empty());
}

TEST_F(UsageLogTest, ARenameMovesEveryRowFlushedOrNotAndAddsToRowsOfTheNewName) {
  const auto alice = UserId::user("alice"), alicia = UserId::user("alicia"), alice2 = UserId::user("alice2");
  for (int day = 0; day < 3; ++day) {
    log_->add(alice, "model/acme/x", counts(1, 100, 0, 100));
    log_->add(alice2, "model/acme/x", counts(5, 0, 0, 0));
    if (day < 2) log_->flush();  // the last day stays pending
    clock_.advance(24h);
  }
  clock_.advance(-24h);
  log_->add(alicia, "model/acme/x", counts(10, 0, 0, 0));  // today, already under the new name
  EXPECT_EQ(log_->rename(alice, alicia), 2u);
  EXPECT_TRUE(log_->query(alice, std::nullopt).empty());
  auto rows = log_->query(alicia, std::nullopt);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].counts, counts(1, 100, 0, 100));
  EXPECT_EQ(rows[2].counts, counts(11, 100, 0, 100));
  log_->flush();
  EXPECT_EQ(log_->query(alicia, std::nullopt)[2].counts, counts(11, 100, 0, 100));
  EXPECT_EQ(log_->query(alice2, std::nullopt).size(), 3u);  // a name that merely starts the same: untouched
  EXPECT_EQ(log_->rename(alice, alicia), 0u);               // nothing left to move
}

TEST_F(UsageLogTest, RetentionDeletesExactlyTheDaysOlderThanItsCutoff) {
  const auto alice = UserId::user("alice");
  const SystemTime today = *parse_day("2026-12-01") + 12h;
  // One row a day from 100 days ago to today.
  for (int ago = 100; ago >= 0; --ago) {
    clock_.set(today - std::chrono::days(ago));
    log_->add(alice, "model/acme/x", counts(1, 0, 0, 0));
    log_->add(UserId::address("203.0.113.7"), "", counts(1, 0, 0, 0));
  }
  log_->flush();
  ASSERT_EQ(stored_rows(), 202u);
  clock_.set(today);
  // The cutoff is the day of now - 90 days (2026-09-02): that day stays, the 10 days before it go.
  EXPECT_EQ(log_->expire(std::chrono::days(90)), 20u);
  EXPECT_EQ(stored_rows(), 182u);
  auto rows = log_->query(alice, std::nullopt);
  ASSERT_EQ(rows.size(), 91u);
  EXPECT_EQ(rows.front().day, "2026-09-02");
  EXPECT_EQ(rows.back().day, "2026-12-01");
  EXPECT_EQ(log_->expire(std::chrono::days(90)), 0u);
  // The next day moves the cutoff by one.
  clock_.advance(24h);
  EXPECT_EQ(log_->expire(std::chrono::days(90)), 2u);
  EXPECT_EQ(log_->query(alice, std::nullopt).front().day, "2026-09-03");
}

TEST(UsageLogStoreTest, AFailedFlushKeepsTheCountsForTheNext) {
  testing::MemoryRecords records;
  ManualClock clock{testing::kTestStart + std::chrono::hours(12)};
  UsageLog log(records, clock);
  const auto alice = UserId::user("alice");
  log.add(alice, "model/acme/x", counts(1, 2, 3, 4));
  log.add(alice, "model/acme/y", counts(1, 0, 0, 0));
  records.fail = true;
  EXPECT_THROW(log.flush(), std::runtime_error);
  log.add(alice, "model/acme/x", counts(1, 0, 0, 0));
  EXPECT_EQ(log.query(alice, std::nullopt)[0].counts, counts(2, 2, 3, 4));
  records.fail = false;
  log.flush();
  EXPECT_EQ(records.batches, 1);  // every row in one batch
  EXPECT_TRUE(records.all_synced);
  ASSERT_EQ(records.rows.size(), 2u);
  EXPECT_EQ(records.rows.begin()->first, "d|2026-12-01|alice|model/acme/x");
  EXPECT_EQ(log.query(alice, std::nullopt)[0].counts, counts(2, 2, 3, 4));
}

}  // namespace
}  // namespace inferllama::usage
