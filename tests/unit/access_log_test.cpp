// The access log's lines (times, escaping, the User-Agent's sanitising) and its file (where, which mode,
// reopened after a rotation).
#include "http/access_log.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "test_support.hpp"

namespace inferllama::http {
namespace {

using namespace std::chrono_literals;

// 2026-12-01T01:14:16.829123Z
const auto kAt =
    std::chrono::system_clock::time_point(testing::kTestStart.time_since_epoch()) + 1h + 14min + 16s + 829123us;

std::string rfc3339(std::chrono::system_clock::time_point t) {
  std::string out;
  append_rfc3339_micros(out, t);
  return out;
}

std::string line_of(const AccessEntry& e) {
  std::string out;
  append_access_line(out, e);
  return out;
}

AccessEntry entry() {
  return AccessEntry{.time = kAt,
                     .remote = "203.0.113.7",
                     .identity = "alice",
                     .method = "GET",
                     .target = "/acme/x/resolve/main/model.safetensors",
                     .route = "resolve",
                     .status = 206,
                     .bytes = 65536,
                     .duration_us = 1234,
                     .cache = CacheStatus::stream,
                     .user_agent = "huggingface_hub/0.26.2; python/3.11"};
}

std::string read(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(AccessLogTest, TimesAreRfc3339InUtcWithWholeMicroseconds) {
  EXPECT_EQ(rfc3339(kAt), "2026-12-01T01:14:16.829123Z");
  EXPECT_EQ(rfc3339(kAt + 1ns), "2026-12-01T01:14:16.829123Z");  // whole microseconds, never rounded up
  EXPECT_EQ(rfc3339(kAt - 829123us), "2026-12-01T01:14:16.000000Z");
  // Each thread keeps the formatted second: the next second, and an earlier one, are formatted anew.
  EXPECT_EQ(rfc3339(kAt + 1s), "2026-12-01T01:14:17.829123Z");
  EXPECT_EQ(rfc3339(kAt - 24h), "2026-11-30T01:14:16.829123Z");
  EXPECT_EQ(rfc3339(std::chrono::system_clock::time_point{}), "1970-01-01T00:00:00.000000Z");
}

TEST(AccessLogTest, ALineIsOneJsonObjectWithEveryFieldInOrder) {
  EXPECT_EQ(line_of(entry()),
            "{\"time\":\"2026-12-01T01:14:16.829123Z\",\"remote\":\"203.0.113.7\",\"identity\":\"alice\","
            "\"method\":\"GET\",\"target\":\"/acme/x/resolve/main/model.safetensors\",\"route\":\"resolve\","
            "\"status\":206,\"bytes\":65536,\"duration_us\":1234,\"cache\":\"stream\","
            "\"user_agent\":\"huggingface_hub/0.26.2; python/3.11\"}\n");
  AccessEntry e = entry();
  for (auto [status, name] : {std::pair{CacheStatus::none, "-"}, std::pair{CacheStatus::hit, "hit"},
                              std::pair{CacheStatus::miss, "miss"}, std::pair{CacheStatus::stream, "stream"}}) {
    e.cache = status;
    EXPECT_NE(line_of(e).find(std::string("\"cache\":\"") + name + "\""), std::string::npos) << name;
  }
}

TEST(AccessLogTest, StringsAreJsonAndInvalidUtf8BecomesAReplacementCharacter) {
  AccessEntry e = entry();
  e.target = "/a\"b\\c\x01\t\n\xff/\xc3\xa9/\xf0\x9f\x98\x80/\xc0\x80/\xed\xa0\x80/\xe2\x82";
  const std::string line = line_of(e);
  EXPECT_NE(line.find("\"target\":\"/a\\\"b\\\\c\\u0001\\t\\n\xef\xbf\xbd/\xc3\xa9/\xf0\x9f\x98\x80/"
                      "\xef\xbf\xbd\xef\xbf\xbd/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd/\xef\xbf\xbd\xef\xbf\xbd\""),
            std::string::npos)
      << line;
  EXPECT_EQ(line.find('\n'), line.size() - 1);  // one line, whatever the request held
}

TEST(AccessLogTest, TheUserAgentLosesControlCharactersAndIsCutAtACharacterBoundary) {
  AccessEntry e = entry();
  e.user_agent = "curl/8\t\x01\x7f";
  EXPECT_NE(line_of(e).find("\"user_agent\":\"curl/8???\""), std::string::npos) << line_of(e);

  const std::string ascii(300, 'a');
  e.user_agent = ascii;
  EXPECT_NE(line_of(e).find("\"user_agent\":\"" + std::string(kMaxLoggedUserAgent, 'a') + "\"}"), std::string::npos);

  std::string wide = "x";  // then two-byte characters: byte 256 is the first half of one
  while (wide.size() < 300) wide += "\xc3\xa9";
  e.user_agent = wide;
  std::string expected = "x";
  while (expected.size() + 2 <= kMaxLoggedUserAgent) expected += "\xc3\xa9";
  EXPECT_EQ(expected.size(), 255u);
  EXPECT_NE(line_of(e).find("\"user_agent\":\"" + expected + "\"}"), std::string::npos);

  e.user_agent = "";
  EXPECT_NE(line_of(e).find("\"user_agent\":\"\"}"), std::string::npos);
}

class AccessLogFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config.data_dir = testing::fresh_test_dir("access-log");
    std::filesystem::create_directories(config.data_dir);
  }
  void TearDown() override { std::filesystem::remove_all(config.data_dir); }
  Config config;
};

TEST_F(AccessLogFileTest, OffStdoutOrAPrivateFileInTheDataDirectory) {
  EXPECT_EQ(AccessLog::open(config), nullptr);
  config.access_log = "-";
  EXPECT_EQ(AccessLog::open(config)->path(), "-");

  config.access_log = "access.log";
  auto log = AccessLog::open(config);
  const auto path = config.data_dir / "access.log";
  EXPECT_EQ(log->path(), path);
  log->write("{\"a\":1}\n");
  log->write("{\"a\":2}\n");
  EXPECT_EQ(read(path), "{\"a\":1}\n{\"a\":2}\n");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  config.access_log = (config.data_dir / "no-such-dir" / "access.log").string();
  try {
    AccessLog::open(config);
    FAIL() << "opened a file in a directory that does not exist";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("access_log"), std::string::npos) << e.what();
  }
}

TEST_F(AccessLogFileTest, AppendsToAnExistingFileAndReopensAfterARotation) {
  const auto path = config.data_dir / "access.log";
  std::ofstream(path) << "{\"old\":true}\n";
  config.access_log = path.string();
  auto log = AccessLog::open(config);
  log->write("{\"a\":1}\n");
  std::filesystem::rename(path, config.data_dir / "access.log.1");
  log->write("{\"a\":2}\n");  // still the moved file until reopened
  EXPECT_EQ(log->reopen(), "");
  log->write("{\"a\":3}\n");
  EXPECT_EQ(read(config.data_dir / "access.log.1"), "{\"old\":true}\n{\"a\":1}\n{\"a\":2}\n");
  EXPECT_EQ(read(path), "{\"a\":3}\n");

  // A path that cannot be opened any more: the file already open stays in use.
  std::filesystem::rename(path, config.data_dir / "access.log.2");
  std::filesystem::create_directory(path);
  EXPECT_NE(log->reopen(), "");
  log->write("{\"a\":4}\n");
  EXPECT_EQ(read(config.data_dir / "access.log.2"), "{\"a\":3}\n{\"a\":4}\n");
}

}  // namespace
}  // namespace inferllama::http
