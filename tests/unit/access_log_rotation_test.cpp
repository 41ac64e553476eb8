// The access log file's daily rotation, with a clock moved by hand: each day's lines in a file named after
// the day, and rotated files deleted once their day is access_log_retention old.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <utime.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "http/access_log.hpp"
#include "http/log_rotation.hpp"
#include "test_support.hpp"

namespace inferllama::http {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string read(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class AccessLogRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config.data_dir = testing::fresh_test_dir("access-log-rotation");
    fs::create_directories(config.data_dir);
    config.access_log = "access.log";
    config.access_log_retention = std::chrono::days(3);
  }
  void TearDown() override { fs::remove_all(config.data_dir); }
  // The names in the data directory.
  std::set<std::string> files() {
    std::set<std::string> out;
    for (const auto& entry : fs::directory_iterator(config.data_dir)) out.insert(entry.path().filename().string());
    return out;
  }
  fs::path file(const std::string& name) { return config.data_dir / name; }

  Config config;
  testing::ManualClock clock{testing::kTestStart + 23h};  // 2026-12-01T23:00Z
};

TEST_F(AccessLogRotationTest, EachDaysLinesGoToAFileOfThatDayAndOldOnesAreDeleted) {
  auto log = AccessLog::open(config, clock);
  log->write("{\"day\":1}\n");
  clock.advance(2h);  // 2026-12-02T01:00Z: the first line of a new day moves the file on
  log->write("{\"day\":2}\n");
  EXPECT_EQ(read(file("access.log.2026-12-01")), "{\"day\":1}\n");
  EXPECT_EQ(read(file("access.log")), "{\"day\":2}\n");
  struct stat st {};
  ASSERT_EQ(::stat(file("access.log").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // The hourly call moves the file on when no line came; a day without lines leaves no file.
  clock.advance(24h);  // 2026-12-03T01:00Z
  EXPECT_EQ(log->rotate(), "");
  EXPECT_EQ(files(), (std::set<std::string>{"access.log", "access.log.2026-12-01", "access.log.2026-12-02"}));
  EXPECT_EQ(read(file("access.log")), "");

  // A rotated day goes once its midnight is 3 days old: 2026-12-01's at 2026-12-04T00:00Z.
  clock.advance(24h);  // 2026-12-04T01:00Z
  EXPECT_EQ(log->rotate(), "");
  EXPECT_EQ(files(), (std::set<std::string>{"access.log", "access.log.2026-12-02"}));
  log->write("{\"day\":4}\n");
  clock.advance(23h - 1ms);  // 2026-12-04T23:59:59.999Z
  EXPECT_EQ(log->rotate(), "");
  EXPECT_TRUE(fs::exists(file("access.log.2026-12-02")));
  clock.advance(1ms);
  log->write("{\"day\":5}\n");
  EXPECT_EQ(files(), (std::set<std::string>{"access.log", "access.log.2026-12-04"}));
  EXPECT_EQ(read(file("access.log.2026-12-04")), "{\"day\":4}\n");
  EXPECT_EQ(read(file("access.log")), "{\"day\":5}\n");
}

TEST_F(AccessLogRotationTest, AFileLeftByAnEarlierRunIsNamedAfterTheDayOfItsLastLine) {
  std::ofstream(file("access.log")) << "{\"run\":1}\n";
  const auto yesterday = std::chrono::system_clock::to_time_t(clock.now() - 24h);
  const utimbuf times{yesterday, yesterday};
  ASSERT_EQ(::utime(file("access.log").c_str(), &times), 0);
  auto log = AccessLog::open(config, clock);
  log->write("{\"run\":2}\n");
  EXPECT_EQ(read(file("access.log.2026-11-30")), "{\"run\":1}\n");
  EXPECT_EQ(read(file("access.log")), "{\"run\":2}\n");
}

TEST_F(AccessLogRotationTest, ATakenNameGetsANumberAndOnlyTheLogsOwnRotationsAreDeleted) {
  std::ofstream(file("access.log.2026-12-01")) << "kept from a clock set back\n";
  std::ofstream(file("access.log.2026-11-01.notes")) << "not a rotation\n";
  std::ofstream(file("other.log.2026-11-01")) << "another file's\n";
  auto log = AccessLog::open(config, clock);
  log->write("{\"a\":1}\n");
  clock.advance(2h);
  log->write("{\"a\":2}\n");
  EXPECT_EQ(read(file("access.log.2026-12-01.1")), "{\"a\":1}\n");
  EXPECT_EQ(rotated_path(file("access.log"), "2026-12-01"), file("access.log.2026-12-01.2"));
  clock.advance(48h);  // 2026-12-04T01:00Z: the 2026-12-01 files are 3 days old
  EXPECT_EQ(log->rotate(), "");
  EXPECT_EQ(files(), (std::set<std::string>{"access.log", "access.log.2026-11-01.notes", "other.log.2026-11-01",
                                            "access.log.2026-12-02"}));
}

TEST_F(AccessLogRotationTest, RetentionZeroAndStdoutAreNeverRotated) {
  config.access_log_retention = 0s;
  auto log = AccessLog::open(config, clock);
  log->write("{\"a\":1}\n");
  clock.advance(30 * 24h);
  log->write("{\"a\":2}\n");
  EXPECT_EQ(log->rotate(), "");
  EXPECT_EQ(files(), std::set<std::string>{"access.log"});
  EXPECT_EQ(read(file("access.log")), "{\"a\":1}\n{\"a\":2}\n");

  config.access_log = "-";
  config.access_log_retention = std::chrono::days(1);
  EXPECT_EQ(AccessLog::open(config, clock)->rotate(), "");
}

}  // namespace
}  // namespace inferllama::http
