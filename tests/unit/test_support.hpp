// What unit tests share: a wall clock that moves only when told, and a scratch directory per test.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/records.hpp"
#include "inferllama/usage.hpp"

namespace inferllama::testing {

// 2026-12-01T00:00:00Z.
inline constexpr SystemTime kTestStart{std::chrono::seconds(1'796'083'200)};

// Thread-safe: limiter tests read it from several threads while one moves it.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(SystemTime start = kTestStart) { set(start); }
  SystemTime now() const override { return SystemTime(std::chrono::nanoseconds(ns_.load())); }
  void set(SystemTime t) { ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count(); }
  void advance(std::chrono::nanoseconds d) { ns_ += d.count(); }

 private:
  std::atomic<std::int64_t> ns_{0};
};

// Records in memory whose writes fail on demand ("disk full"), to see that nothing changes in memory
// before a write succeeded. Counts batches and remembers whether each asked to be synced.
class MemoryRecords final : public RecordStore {
 public:
  bool fail = false;
  int batches = 0;
  bool all_synced = true;
  std::map<std::string, std::string> rows;

  std::optional<std::string> get(RecordTable, const std::string& key) override {
    auto it = rows.find(key);
    return it == rows.end() ? std::nullopt : std::optional(it->second);
  }
  void write(RecordTable, const std::vector<Write>& writes, bool sync) override {
    if (fail) throw std::runtime_error("disk full");
    ++batches;
    all_synced = all_synced && sync;
    for (const auto& w : writes) {
      if (w.value) {
        rows[w.key] = *w.value;
      } else {
        rows.erase(w.key);
      }
    }
  }
  void scan(RecordTable, std::string_view prefix,
            const std::function<bool(std::string_view, std::string_view)>& visit) override {
    for (const auto& [k, v] : rows) {
      if (k.starts_with(prefix) && !visit(k, v)) return;
    }
  }
  void erase_range(RecordTable, const std::string& begin, const std::string& end) override {
    rows.erase(rows.lower_bound(begin), rows.lower_bound(end));
  }
};

// An empty directory named after the process and the running test, so tests run in parallel apart.
inline std::filesystem::path fresh_test_dir(std::string_view what) {
  auto dir =
      std::filesystem::temp_directory_path() / ("inferllama-" + std::string(what) + "-" + std::to_string(::getpid()) +
                                                "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  return dir;
}

}  // namespace inferllama::testing
