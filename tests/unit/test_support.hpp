// What unit tests share: a wall clock that moves only when told, and a scratch directory per test.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

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

// An empty directory named after the process and the running test, so tests run in parallel apart.
inline std::filesystem::path fresh_test_dir(std::string_view what) {
  auto dir =
      std::filesystem::temp_directory_path() / ("inferllama-" + std::string(what) + "-" + std::to_string(::getpid()) +
                                                "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  return dir;
}

}  // namespace inferllama::testing
