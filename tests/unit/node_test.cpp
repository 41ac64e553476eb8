// A node built with every part enabled, never started: what its metrics registry renders.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>

#include "inferllama/version.hpp"
#include "node/build_info.hpp"
#include "node/node.hpp"
#include "test_support.hpp"

namespace inferllama::node {
namespace {

class NodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config.data_dir = testing::fresh_test_dir("node");
    std::filesystem::create_directories(config.data_dir);
    config.offline = true;  // nothing here may reach a network
    config.listen = "127.0.0.1:0";
    config.metrics_listen = "127.0.0.1:0";
    config.bt_listen = "127.0.0.1:0";
    config.tracker_udp = "127.0.0.1:0";
    config.max_disk = 1 << 30;
  }
  void TearDown() override { std::filesystem::remove_all(config.data_dir); }

  Config config;
};

// "# HELP name ..." and "# TYPE name ..." lines of a Prometheus text, counted by name.
std::map<std::string, int> count_lines(const std::string& text, const std::string& prefix) {
  std::map<std::string, int> counts;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with(prefix)) continue;
    const auto name = line.substr(prefix.size(), line.find(' ', prefix.size()) - prefix.size());
    ++counts[name];
  }
  return counts;
}

TEST_F(NodeTest, RegistryRendersEveryModulesFamiliesOnce) {
  Node node(config);
  std::string out;
  node.metrics().render(out);

  const auto help = count_lines(out, "# HELP ");
  const auto type = count_lines(out, "# TYPE ");
  for (const auto& [name, count] : help) EXPECT_EQ(count, 1) << name << " has " << count << " # HELP lines";
  for (const auto& [name, count] : type) EXPECT_EQ(count, 1) << name << " has " << count << " # TYPE lines";
  EXPECT_EQ(help.size(), type.size());

  // One family of each module that renders its own.
  for (const char* family : {
           "inferllama_cache_requests_total",       // hub
           "inferllama_upstream_errors_total",      // hub, with the downloads' failures
           "inferllama_metadata_entries",           // hub's metadata store
           "inferllama_downloads_total",            // downloads
           "inferllama_ingests_total",              // downloads
           "inferllama_disk_used_bytes",            // evictor (the store it keeps under budget)
           "inferllama_evictions_total",            // evictor
           "inferllama_tracker_announces_total",    // tracker
           "inferllama_ratelimit_decisions_total",  // limiter
           "inferllama_parent_swarm_bytes_total",   // file upstream
           "inferllama_bt_torrents",                // seeder
       }) {
    EXPECT_EQ(help.count(family), 1u) << family << " is missing";
  }
  // The families the HTTP server owns are not the registry's.
  EXPECT_EQ(help.count("inferllama_http_requests_total"), 0u);
  EXPECT_NE(out.find("inferllama_disk_budget_bytes 1073741824\n"), std::string::npos) << out;
  EXPECT_NE(out.find("inferllama_upstream_errors_total{kind=\"download_failed\"} 0\n"), std::string::npos) << out;
}

TEST_F(NodeTest, BuildInfoNamesTheVersionAndTheStartTimeIsThisProcesss) {
  Node node(config);
  std::string out;
  node.metrics().render(out);
  EXPECT_NE(out.find("# TYPE inferllama_build_info gauge\ninferllama_build_info{version=\"" + std::string(kVersion) +
                     "\",compiler=\""),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\"} 1\n"), std::string::npos);
  for (const char* label : {"boost=\"1.", "libtorrent=\"2.", "openssl=\"", "rocksdb=\"", "curl=\""}) {
    EXPECT_NE(build_info_labels().find(label), std::string::npos) << label << " in " << build_info_labels();
  }

  const std::string sample = "\nprocess_start_time_seconds ";
  const auto at = out.find(sample);
  ASSERT_NE(at, std::string::npos) << out;
  EXPECT_NE(out.find("# TYPE process_start_time_seconds gauge\n"), std::string::npos);
  const std::string value = out.substr(at + sample.size(), out.find('\n', at + 1) - at - sample.size());
  // Every digit of a Unix time, and its milliseconds: not 1.79608e+09.
  EXPECT_EQ(value.find('e'), std::string::npos) << value;
  const double started = std::stod(value);
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(started, now);
  EXPECT_GT(started, now - 3600);  // this test process started it, not long ago
}

TEST_F(NodeTest, WithoutSeedTheRegistryHasNoSeedFamilies) {
  config.bt_listen.clear();
  Node node(config);
  std::string out;
  node.metrics().render(out);
  EXPECT_EQ(out.find("inferllama_bt_torrents"), std::string::npos);
  EXPECT_NE(out.find("# TYPE inferllama_downloads_total counter\n"), std::string::npos);
}

}  // namespace
}  // namespace inferllama::node
