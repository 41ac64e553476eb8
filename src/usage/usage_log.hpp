#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "inferllama/records.hpp"
#include "inferllama/usage.hpp"

namespace inferllama::usage {

struct UsageCounts {
  std::uint64_t requests = 0;
  std::uint64_t bytes_from_cache = 0;     // file bytes sent from the chunk store
  std::uint64_t bytes_from_upstream = 0;  // file bytes sent while the node fetched them upstream
  std::uint64_t token_bytes = 0;          // bytes charged to the token limit (file content sent)
  UsageCounts& operator+=(const UsageCounts& o);
  friend bool operator==(const UsageCounts&, const UsageCounts&) = default;
};

struct UsageRow {
  std::string day;  // UTC, "2026-12-01"
  UserId who;
  std::string repo;  // "model/acme/tiny-model"; "" for requests about no repo (tracker, usage)
  UsageCounts counts;
};

// "YYYY-MM-DD" of a time (UTC); and back, nullopt unless a valid date in that form.
std::string day_of(SystemTime t);
std::optional<SystemTime> parse_day(std::string_view day);

// Usage per identity, per UTC day, per repo. add() only touches memory; flush() writes what was added
// since the last flush in one RocksDB batch (the node flushes every usage_flush_interval and at
// shutdown, so a crash loses at most one interval). query() sees flushed and unflushed counts alike.
// Rows are keyed day first ("d|2026-12-01|alice|model/acme/x"), so retention is one range delete.
class UsageLog {
 public:
  UsageLog(RecordStore& records, const Clock& clock);
  ~UsageLog();  // does not flush: the owner flushes at shutdown

  void add(const UserId& who, const std::string& repo, const UsageCounts& delta);
  void flush();  // blocking
  // Rows of `who` (every identity when nullopt) from the day `since` (inclusive, every day when nullopt),
  // ordered by day, identity, repo.
  std::vector<UsageRow> query(const std::optional<UserId>& who, const std::optional<std::string>& since);
  // Deletes every row of a day older than `retention` before today; returns the number of rows deleted.
  std::uint64_t expire(std::chrono::seconds retention);
  // Deletes every row of `who`, flushed or not (an account purged); returns the number of stored rows deleted.
  std::uint64_t forget(const UserId& who);
  // Every row of `from`, flushed or not, becomes `to`'s (an account renamed); the number of stored rows moved.
  std::uint64_t rename(const UserId& from, const UserId& to);

 private:
  using Key = std::tuple<std::string, std::string, std::string>;  // day, identity, repo
  // Every stored row of `who`, day by day from the oldest kept.
  void scan_rows_of(const UserId& who, const std::function<void(std::string_view key, std::string_view value)>& visit);
  RecordStore& records_;
  const Clock& clock_;
  std::mutex mutex_;  // pending_
  std::map<Key, UsageCounts> pending_;
  std::mutex flush_mutex_;  // one flush at a time
};

}  // namespace inferllama::usage
