#include "inferllama/config.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <unistd.h>

#ifndef INFERLLAMA_SOURCE_DIR
#error "config_test needs INFERLLAMA_SOURCE_DIR (the repository root, as a string literal) defined"
#endif

namespace inferllama {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// Expects load_config to throw ConfigError whose message contains every one of `parts`.
void expect_error(const ConfigSources& sources, std::initializer_list<std::string_view> parts) {
  try {
    (void)load_config(sources);
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    for (std::string_view part : parts)
      EXPECT_NE(what.find(part), std::string::npos) << "message: " << what << "\nmissing: " << part;
  }
}

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::temp_directory_path() /
           ("inferllama_config_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path write(std::string_view text, std::string_view name = "test.toml") {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  ConfigSources with_file(std::string_view toml) {
    ConfigSources s;
    s.file = write(toml);
    return s;
  }
  fs::path dir_;
};

TEST(ConfigDefaults, EmptySourcesGiveDefaults) {
  const Config c = load_config({});
  EXPECT_EQ(c, Config{});
  EXPECT_EQ(c.listen, "0.0.0.0:8080");
  EXPECT_EQ(c.data_dir, fs::path("./data"));
  EXPECT_EQ(c.upstream, "https://huggingface.co");
  EXPECT_EQ(c.upstream_token, "");
  EXPECT_EQ(c.public_url, "");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.chunk_size, 4u * 1024 * 1024);
  EXPECT_EQ(c.upstream_connections, 4u);
  EXPECT_EQ(c.parallel_threshold, 32u * 1024 * 1024);
  EXPECT_EQ(c.swarm_threshold, 256u * 1024 * 1024);
  EXPECT_EQ(c.upstream_retries, 5u);
  EXPECT_EQ(c.upstream_timeout, 30s);
  EXPECT_EQ(c.ref_ttl, 60s);
  EXPECT_EQ(c.access_ttl, 60s);
  EXPECT_EQ(c.io_threads, 0u);
  EXPECT_EQ(c.worker_threads, 0u);
}

TEST(ConfigKeys, NamesAreDerivedAndDefaultsRoundTrip) {
  const auto keys = config_keys();
  ASSERT_EQ(keys.size(), 88u);
  for (const ConfigKey& k : keys) {
    std::string flag = "--" + std::string(k.name);
    std::replace(flag.begin(), flag.end(), '_', '-');
    std::string env = "INFERLLAMA_" + std::string(k.name);
    for (char& c : env) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_EQ(k.flag, flag);
    EXPECT_EQ(k.env, env);
    EXPECT_FALSE(k.help.empty()) << k.name;
    // The documented default, given as a flag, yields the default.
    ConfigSources s;
    s.flags[std::string(k.name)] = std::string(k.default_text);
    EXPECT_EQ(load_config(s), Config{}) << k.name << " default_text " << k.default_text;
  }
  EXPECT_EQ(keys[1].flag, "--data-dir");
  EXPECT_EQ(keys[1].env, "INFERLLAMA_DATA_DIR");
}

// ---- precedence -----------------------------------------------------------------------------------

// A file holding `content` in a directory of this test process (removed at exit); its path.
std::string secret_file(const std::string& name, const std::string& content) {
  struct Dir {
    fs::path path = fs::temp_directory_path() / ("inferllama_config_secrets_" + std::to_string(::getpid()));
    Dir() { fs::create_directories(path); }
    ~Dir() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static const Dir dir;
  std::ofstream(dir.path / name, std::ios::binary) << content;
  return (dir.path / name).string();
}

// A list of tokens only its owner may read, as upstream_tokens_file must be; its path.
std::string token_list(const std::string& name, const std::string& content) {
  const std::string path = secret_file(name, content);
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  return path;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

struct PrecedenceCase {
  std::string key;
  std::string toml_value;  // TOML literal
  std::string env_value;
  std::string flag_value;
  std::string expect_file, expect_env, expect_flag, expect_default;
  std::function<std::string(const Config&)> get;
};

std::vector<PrecedenceCase> precedence_cases() {
  auto n = [](auto v) { return std::to_string(v); };
  return {
      {"listen", "\"127.0.0.1:1000\"", "127.0.0.1:2000", "[::1]:3000", "127.0.0.1:1000", "127.0.0.1:2000", "[::1]:3000",
       "0.0.0.0:8080", [](const Config& c) { return c.listen; }},
      {"data_dir", "\"/srv/file\"", "/srv/env", "rel/flag", "/srv/file", "/srv/env", "rel/flag", "./data",
       [](const Config& c) { return c.data_dir.string(); }},
      {"upstream", "\"http://file.example\"", "http://env.example:8080", "https://flag.example/hub",
       "http://file.example", "http://env.example:8080", "https://flag.example/hub", "https://huggingface.co",
       [](const Config& c) { return c.upstream; }},
      {"upstream_fallback", "\"http://file.example\"", "http://env.example/", "https://flag.example",
       "http://file.example", "http://env.example", "https://flag.example", "",
       [](const Config& c) { return c.upstream_fallback; }},
      {"upstream_backoff", "5", "500ms", "1m", "5000", "500", "60000", "10000",
       [n](const Config& c) { return n(c.upstream_backoff.count()); }},
      {"upstream_token", "\"tok_file\"", "tok_env", "tok_flag", "tok_file", "tok_env", "tok_flag", "",
       [](const Config& c) { return c.upstream_token; }},
      {"upstream_token_file", "\"" + secret_file("t1", "tok_in_file\n") + "\"", secret_file("t2", "tok_in_env"),
       secret_file("t3", "tok_in_flag\r\n"), "tok_in_file", "tok_in_env", "tok_in_flag", "",
       [](const Config& c) { return c.upstream_token; }},
      {"upstream_tokens_file", "\"" + token_list("l1", "hf_node_file\n") + "\"", token_list("l2", "hf_node_env"),
       token_list("l3", "# the third\nhf_node_flag\nhf_node_more\n"), "hf_node_file", "hf_node_env",
       "hf_node_flag,hf_node_more", "", [](const Config& c) { return joined(c.upstream_tokens); }},
      {"upstream_throttle_max", "60", "2m", "1d", "60", "120", "86400", "3600",
       [n](const Config& c) { return n(c.upstream_throttle_max.count()); }},
      {"public_url", "\"http://file.local\"", "http://env.local/", "https://flag.local", "http://file.local",
       "http://env.local", "https://flag.local", "", [](const Config& c) { return c.public_url; }},
      {"log_level", "\"debug\"", "warn", "error", "debug", "warn", "error", "info",
       [](const Config& c) { return c.log_level; }},
      {"chunk_size", "1048576", "2MiB", "8 MiB", "1048576", "2097152", "8388608", "4194304",
       [n](const Config& c) { return n(c.chunk_size); }},
      {"upstream_connections", "2", "3", "32", "2", "3", "32", "4",
       [n](const Config& c) { return n(c.upstream_connections); }},
      {"parallel_threshold", "\"1GiB\"", "100MB", "5", "1073741824", "100000000", "5", "33554432",
       [n](const Config& c) { return n(c.parallel_threshold); }},
      {"swarm_threshold", "\"1GiB\"", "0", "16MiB", "1073741824", "0", "16777216", "268435456",
       [n](const Config& c) { return n(c.swarm_threshold); }},
      {"upstream_retries", "0", "2", "100", "0", "2", "100", "5",
       [n](const Config& c) { return n(c.upstream_retries); }},
      {"upstream_timeout", "10", "1500ms", "2m", "10000", "1500", "120000", "30000",
       [n](const Config& c) { return n(c.upstream_timeout.count()); }},
      {"ref_ttl", "\"5m\"", "0", "1h", "300", "0", "3600", "60", [n](const Config& c) { return n(c.ref_ttl.count()); }},
      {"access_ttl", "10", "20s", "1", "10", "20", "1", "60", [n](const Config& c) { return n(c.access_ttl.count()); }},
      {"io_threads", "1", "2", "3", "1", "2", "3", "0", [n](const Config& c) { return n(c.io_threads); }},
      {"worker_threads", "4", "5", "6", "4", "5", "6", "0", [n](const Config& c) { return n(c.worker_threads); }},
      {"tls_listen", "\"127.0.0.1:1\"", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "",
       [](const Config& c) { return c.tls_listen; }},
      {"tls_cert", "\"/a.pem\"", "/b.pem", "/c.pem", "/a.pem", "/b.pem", "/c.pem", "",
       [](const Config& c) { return c.tls_cert.string(); }},
      {"tls_key", "\"/a.key\"", "/b.key", "/c.key", "/a.key", "/b.key", "/c.key", "",
       [](const Config& c) { return c.tls_key.string(); }},
      {"max_disk", "\"1GiB\"", "2048", "3KiB", "1073741824", "2048", "3072", "0",
       [n](const Config& c) { return n(c.max_disk); }},
      {"hosted_quota", "\"1GiB\"", "2048", "3KiB", "1073741824", "2048", "3072", "0",
       [n](const Config& c) { return n(c.hosted_quota); }},
      {"metadata_budget", "\"1GiB\"", "2048", "3KiB", "1073741824", "2048", "3072", "268435456",
       [n](const Config& c) { return n(c.metadata_budget); }},
      {"idle_timeout", "\"20s\"", "10", "1m", "20", "10", "60", "60",
       [n](const Config& c) { return n(c.idle_timeout.count()); }},
      {"max_connections", "10", "20", "30", "10", "20", "30", "10000",
       [n](const Config& c) { return n(c.max_connections); }},
      {"access_log", "\"/tmp/a.log\"", "-", "/tmp/b.log", "/tmp/a.log", "-", "/tmp/b.log", "",
       [](const Config& c) { return c.access_log; }},
      {"access_log_retention", "\"7d\"", "0", "90d", "604800", "0", "7776000", "2592000",
       [n](const Config& c) { return n(c.access_log_retention.count()); }},
      {"offline", "true", "0", "yes", "1", "0", "1", "0", [n](const Config& c) { return n(c.offline ? 1 : 0); }},
      {"offline_grace", "\"1h\"", "30", "2m", "3600", "30", "120", "0",
       [n](const Config& c) { return n(c.offline_grace.count()); }},
      {"scan_policy", "\"deny\"", "off", "warn", "2", "0", "1", "1",
       [n](const Config& c) { return n(static_cast<int>(c.scan_policy)); }},
      {"backup_dir", "\"/srv/b1\"", "/srv/b2", "b3", "/srv/b1", "/srv/b2", "b3", "",
       [](const Config& c) { return c.backup_dir.string(); }},
      {"backup_key_file", "\"/etc/b1.key\"", "/etc/b2.key", "b3.key", "/etc/b1.key", "/etc/b2.key", "b3.key", "",
       [](const Config& c) { return c.backup_key_file.string(); }},
      {"backup_interval", "\"12h\"", "2d", "3600", "43200", "172800", "3600", "86400",
       [n](const Config& c) { return n(c.backup_interval.count()); }},
      {"backup_retention", "\"7d\"", "1d", "90d", "604800", "86400", "7776000", "3024000",
       [n](const Config& c) { return n(c.backup_retention.count()); }},
      {"bt_listen", "\"127.0.0.1:1\"", "[::1]:2", "127.0.0.1:0", "127.0.0.1:1", "[::1]:2", "127.0.0.1:0",
       "0.0.0.0:6881", [](const Config& c) { return c.bt_listen; }},
      {"bt_port_fallback", "true", "0", "yes", "1", "0", "1", "0",
       [n](const Config& c) { return n(c.bt_port_fallback ? 1 : 0); }},
      {"bt_upload_rate", "\"1MiB\"", "1000", "2KiB", "1048576", "1000", "2048", "0",
       [n](const Config& c) { return n(c.bt_upload_rate); }},
      {"bt_max_connections", "10", "20", "30", "10", "20", "30", "500",
       [n](const Config& c) { return n(c.bt_max_connections); }},
      {"bt_max_uploads", "1", "2", "3", "1", "2", "3", "0", [n](const Config& c) { return n(c.bt_max_uploads); }},
      {"bt_dht", "true", "0", "yes", "1", "0", "1", "0", [n](const Config& c) { return n(c.bt_dht ? 1 : 0); }},
      {"bt_lsd", "true", "0", "yes", "1", "0", "1", "0", [n](const Config& c) { return n(c.bt_lsd ? 1 : 0); }},
      {"tracker_udp", "\"127.0.0.1:1\"", "127.0.0.1:2", "", "127.0.0.1:1", "127.0.0.1:2", "", "0.0.0.0:6969",
       [](const Config& c) { return c.tracker_udp; }},
      {"tracker_interval", "\"1h\"", "600", "20m", "3600", "600", "1200", "1800",
       [n](const Config& c) { return n(c.tracker_interval.count()); }},
      {"tracker_min_interval", "60", "2m", "30s", "60", "120", "30", "300",
       [n](const Config& c) { return n(c.tracker_min_interval.count()); }},
      {"tracker_numwant", "10", "20", "30", "10", "20", "30", "50",
       [n](const Config& c) { return n(c.tracker_numwant); }},
      {"tracker_max_numwant", "100", "300", "400", "100", "300", "400", "200",
       [n](const Config& c) { return n(c.tracker_max_numwant); }},
      {"tracker_open", "true", "0", "yes", "1", "0", "1", "0",
       [n](const Config& c) { return n(c.tracker_open ? 1 : 0); }},
      {"tracker_max_peers_per_swarm", "10", "20", "1000000", "10", "20", "1000000", "5000",
       [n](const Config& c) { return n(c.tracker_max_peers_per_swarm); }},
      {"tracker_max_peers_per_address", "1", "2", "65535", "1", "2", "65535", "16",
       [n](const Config& c) { return n(c.tracker_max_peers_per_address); }},
      {"tracker_max_swarms", "10", "20", "10000000", "10", "20", "10000000", "1000",
       [n](const Config& c) { return n(c.tracker_max_swarms); }},
      {"tracker_full_scrape", "true", "0", "yes", "1", "0", "1", "0",
       [n](const Config& c) { return n(c.tracker_full_scrape ? 1 : 0); }},
      {"mirrors", "\"acme/a\"", "acme/b@v1", "datasets/acme/c", "acme/a", "acme/b@v1", "datasets/acme/c", "",
       [](const Config& c) { return c.mirrors; }},
      {"mirror_from", "\"http://a.local\"", "http://b.local", "https://c.local", "http://a.local", "http://b.local",
       "https://c.local", "", [](const Config& c) { return c.mirror_from; }},
      {"mirror_interval", "\"1m\"", "30", "1h", "60", "30", "3600", "300",
       [n](const Config& c) { return n(c.mirror_interval.count()); }},
      {"prefetch", "\"acme/a:*.json\"", "acme/b@v1, datasets/acme/c", "spaces/acme/d:app.py;a/", "acme/a@main:*.json",
       "acme/b@v1,datasets/acme/c@main", "spaces/acme/d@main:app.py;a/", "",
       [](const Config& c) {
         std::string text;
         for (const auto& spec : c.prefetch) text += (text.empty() ? "" : ",") + format_prefetch_spec(spec);
         return text;
       }},
      {"prefetch_interval", "\"10s\"", "30m", "1d", "10", "1800", "86400", "3600",
       [n](const Config& c) { return n(c.prefetch_interval.count()); }},
      {"repo_rules", "[\"deny models:acme/*\", \"allow *\"]", "pass datasets:*", "deny *",
       "deny models:acme/*\nallow *\n", "pass datasets:*", "deny *", "", [](const Config& c) { return c.repo_rules; }},
      {"repo_rules_file", "\"/etc/rules\"", "env-rules", "flag-rules", "/etc/rules", "env-rules", "flag-rules", "",
       [](const Config& c) { return c.repo_rules_file.string(); }},
      {"require_auth", "true", "0", "yes", "1", "0", "1", "0",
       [n](const Config& c) { return n(c.require_auth ? 1 : 0); }},
      {"cookie_secure", "false", "1", "no", "0", "1", "0", "1",
       [n](const Config& c) { return n(c.cookie_secure ? 1 : 0); }},
      {"signup", "true", "0", "yes", "1", "0", "1", "0", [n](const Config& c) { return n(c.signup ? 1 : 0); }},
      {"smtp_url", "\"smtp://a:1\"", "smtp://b:2", "smtps://c:3", "smtp://a:1", "smtp://b:2", "smtps://c:3", "",
       [](const Config& c) { return c.smtp_url; }},
      {"smtp_from", "\"a@x\"", "b@x", "c@x", "a@x", "b@x", "c@x", "", [](const Config& c) { return c.smtp_from; }},
      {"smtp_credentials_file", "\"/a\"", "/b", "/c", "/a", "/b", "/c", "",
       [](const Config& c) { return c.smtp_credentials_file.string(); }},
      {"admin_key", "\"file-admin-key-0123\"", "env-admin-key-01234", "flag-admin-key-0123", "file-admin-key-0123",
       "env-admin-key-01234", "flag-admin-key-0123", "", [](const Config& c) { return c.admin_key; }},
      {"admin_socket", "\"/run/a.sock\"", "b.sock", "", "/run/a.sock", "b.sock", "", "admin.sock",
       [](const Config& c) { return c.admin_socket; }},
      {"admin_key_file", "\"" + secret_file("a1", "file-admin-key-0123\n") + "\"",
       secret_file("a2", "env-admin-key-01234"), secret_file("a3", "flag-admin-key-0123\n\n"), "file-admin-key-0123",
       "env-admin-key-01234", "flag-admin-key-0123", "", [](const Config& c) { return c.admin_key; }},
      {"secret_key_file", "\"/etc/a.key\"", "/etc/b.key", "c.key", "/etc/a.key", "/etc/b.key", "c.key", "",
       [](const Config& c) { return c.secret_key_file.string(); }},
      {"token_size", "\"4MiB\"", "2048", "1GiB", "4194304", "2048", "1073741824", "1048576",
       [n](const Config& c) { return n(c.token_size); }},
      {"limit_anonymous", "\"requests=10/1m\"", "requests=20/h, burst=5", "concurrent=2 tokens=100/1d",
       "requests=10/60s", "requests=20/3600s burst=5", "tokens=100/86400s concurrent=2", "",
       [](const Config& c) { return format_limit_policy(c.limit_anonymous); }},
      {"limit_default", "\"requests=10/1m\"", "tokens=5/1m token_burst=2", "none", "requests=10/60s",
       "tokens=5/60s token_burst=2", "", "", [](const Config& c) { return format_limit_policy(c.limit_default); }},
      {"limit_users", "{ alice = \"requests=1/1s\", bob = \"concurrent=3\" }", "carol: requests=2/2s",
       "dave: concurrent=1; erin: requests=5/m", "alice=requests=1/1s;bob=concurrent=3;", "carol=requests=2/2s;",
       "dave=concurrent=1;erin=requests=5/60s;", "",
       [](const Config& c) {
         std::string out;
         for (const auto& [name, policy] : c.limit_users) out += name + "=" + format_limit_policy(policy) + ";";
         return out;
       }},
      {"ratelimit_backend", "\"redis://127.0.0.1:1\"", "redis://h:2/1", "local", "redis://127.0.0.1:1", "redis://h:2/1",
       "local", "local", [](const Config& c) { return c.ratelimit_backend; }},
      {"ratelimit_backend_password_file", "\"" + secret_file("r1", "pw file\n") + "\"", secret_file("r2", "pw:env"),
       secret_file("r3", "pw@flag"), "pw file", "pw:env", "pw@flag", "",
       [](const Config& c) { return c.ratelimit_backend_password; }},
      {"ratelimit_fallback", "\"refuse\"", "local", "refuse", "1", "0", "1", "0",
       [n](const Config& c) { return n(c.ratelimit_refuse_when_down ? 1 : 0); }},
      {"ratelimit_timeout", "\"1s\"", "50ms", "2", "1000", "50", "2000", "200",
       [n](const Config& c) { return n(c.ratelimit_timeout.count()); }},
      {"session_backend", "\"redis://127.0.0.1:1\"", "local", "redis://h:2/1", "redis://127.0.0.1:1", "local",
       "redis://h:2/1", "auto", [](const Config& c) { return c.session_backend; }},
      {"session_backend_password_file", "\"" + secret_file("s1", "pw file\n") + "\"", secret_file("s2", "pw:env"),
       secret_file("s3", "pw@flag"), "pw file", "pw:env", "pw@flag", "",
       [](const Config& c) { return c.session_backend_password; }},
      {"usage_retention", "\"30d\"", "1d", "365d", "2592000", "86400", "31536000", "7776000",
       [n](const Config& c) { return n(c.usage_retention.count()); }},
      {"usage_flush_interval", "\"1m\"", "1", "10s", "60", "1", "10", "5",
       [n](const Config& c) { return n(c.usage_flush_interval.count()); }},
      {"tracker_private", "true", "0", "yes", "1", "0", "1", "0",
       [n](const Config& c) { return n(c.tracker_private ? 1 : 0); }},
      {"trusted_proxies", "\"127.0.0.1/32\"", "10.0.0.0/8, ::1", "192.0.2.7", "127.0.0.1/32", "10.0.0.0/8, ::1",
       "192.0.2.7", "", [](const Config& c) { return c.trusted_proxies; }},
      {"metrics_listen", "\"127.0.0.1:9000\"", "[::1]:9001", "", "127.0.0.1:9000", "[::1]:9001", "", "127.0.0.1:9464",
       [](const Config& c) { return c.metrics_listen; }},
      {"auth_failure_limit", "\"requests=5/1m\"", "requests=1/1s", "none", "requests=5/60s", "requests=1/1s", "",
       "requests=20/60s burst=20", [](const Config& c) { return format_limit_policy(c.auth_failure_limit); }},
  };
}

TEST(LimitPolicies, ParseAndRefuse) {
  const LimitPolicy p = parse_limit_policy("requests=100/1m, burst=20 tokens=10000/1h token_burst=500 concurrent=4");
  EXPECT_EQ(p.requests, 100u);
  EXPECT_EQ(p.request_window, std::chrono::seconds(60));
  EXPECT_EQ(p.effective_request_burst(), 20u);
  EXPECT_EQ(p.tokens, 10000u);
  EXPECT_EQ(p.token_window, std::chrono::seconds(3600));
  EXPECT_EQ(p.effective_token_burst(), 500u);
  EXPECT_EQ(p.concurrent, 4u);
  EXPECT_EQ(parse_limit_policy(format_limit_policy(p)), p);
  EXPECT_EQ(parse_limit_policy("requests=5/m").effective_request_burst(), 5u);
  EXPECT_FALSE(parse_limit_policy("").limits_anything());
  EXPECT_FALSE(parse_limit_policy(" none ").limits_anything());
  for (const char* bad :
       {"requests=100", "requests=0/1m", "requests=x/1m", "requests=1/0s", "requests=1/1.5s", "burst=3",
        "token_burst=3", "speed=1", "requests", "concurrent=0", "requests=99999999999999999999/1m", "tokens=1/400d"}) {
    EXPECT_THROW(parse_limit_policy(bad), ConfigError) << bad;
  }
  const auto users = parse_user_limits("alice: requests=1/1s; bob.b: concurrent=2;");
  ASSERT_EQ(users.size(), 2u);
  EXPECT_EQ(users.at("bob.b").concurrent, 2u);
  EXPECT_THROW(parse_user_limits("alice requests=1/1s"), ConfigError);
  EXPECT_THROW(parse_user_limits("anon:1: requests=1/1s"), ConfigError);
  EXPECT_THROW(parse_user_limits("a: concurrent=1; a: concurrent=2"), ConfigError);
}

TEST(LimitPolicies, TokenSizeReachesEveryPolicy) {
  ConfigSources s;
  s.flags = {{"token_size", "4MiB"}, {"limit_default", "tokens=10/1m"}, {"limit_users", "alice: tokens=1/1m"}};
  const Config c = load_config(s);
  EXPECT_EQ(c.limit_default.token_bytes, 4u * 1024 * 1024);
  EXPECT_EQ(c.limit_anonymous.token_bytes, 4u * 1024 * 1024);
  EXPECT_EQ(c.limit_users.at("alice").token_bytes, 4u * 1024 * 1024);
}

TEST_F(ConfigTest, TrackerSettingsMustAgree) {
  ConfigSources s;
  s.flags["tracker_interval"] = "60s";
  s.flags["tracker_min_interval"] = "2m";
  expect_error(s, {"tracker_min_interval", "120s", "tracker_interval", "60s"});
  s.flags = {{"tracker_numwant", "300"}};
  expect_error(s, {"tracker_numwant", "300", "tracker_max_numwant", "200"});
}

TEST_F(ConfigTest, PrecedenceFlagOverEnvOverFileOverDefault) {
  const auto cases = precedence_cases();
  ASSERT_EQ(cases.size(), config_keys().size()) << "every key needs a precedence case";
  for (const PrecedenceCase& pc : cases) {
    SCOPED_TRACE(pc.key);
    const ConfigKey* key = nullptr;
    for (const ConfigKey& k : config_keys())
      if (k.name == pc.key) key = &k;
    ASSERT_NE(key, nullptr);
    const fs::path file = write(pc.key + " = " + pc.toml_value + "\n", pc.key + ".toml");
    const std::string env_name(key->env);

    ConfigSources s;
    EXPECT_EQ(pc.get(load_config(s)), pc.expect_default);
    s.file = file;
    EXPECT_EQ(pc.get(load_config(s)), pc.expect_file);
    s.env[env_name] = pc.env_value;
    EXPECT_EQ(pc.get(load_config(s)), pc.expect_env);
    s.flags[pc.key] = pc.flag_value;
    if (pc.key == "admin_key" || pc.key == "upstream_token") {
      // A secret with a _file key is refused as a flag: every user of the machine can read argv.
      expect_error(s, {"flag " + std::string(key->flag), "would show the secret", std::string(key->env)});
      continue;
    }
    EXPECT_EQ(pc.get(load_config(s)), pc.expect_flag);
    s.file.reset();
    EXPECT_EQ(pc.get(load_config(s)), pc.expect_flag);
    s.env.clear();
    EXPECT_EQ(pc.get(load_config(s)), pc.expect_flag);
    s.flags.clear();
    s.env[env_name] = pc.env_value;
    EXPECT_EQ(pc.get(load_config(s)), pc.expect_env);
  }
}

TEST_F(ConfigTest, FlagSpellings) {
  ConfigSources s;
  s.flags["--data-dir"] = "/a";
  EXPECT_EQ(load_config(s).data_dir, fs::path("/a"));
  s.flags.clear();
  s.flags["data-dir"] = "/b";
  EXPECT_EQ(load_config(s).data_dir, fs::path("/b"));
  s.flags["data_dir"] = "/c";
  expect_error(s, {"given twice"});
}

TEST_F(ConfigTest, ConfigFileFromEnvOrFlag) {
  const fs::path a = write("log_level = \"debug\"\n", "a.toml");
  const fs::path b = write("log_level = \"error\"\n", "b.toml");
  ConfigSources s;
  s.env["INFERLLAMA_CONFIG"] = a.string();
  EXPECT_EQ(load_config(s).log_level, "debug");
  s.flags["config"] = b.string();
  EXPECT_EQ(load_config(s).log_level, "error");
  s.file = a;
  EXPECT_EQ(load_config(s).log_level, "debug");
  ConfigSources empty;
  empty.env["INFERLLAMA_CONFIG"] = "";
  EXPECT_EQ(load_config(empty), Config{});
}

// ---- upstream token -------------------------------------------------------------------------------

TEST_F(ConfigTest, HfTokenFallback) {
  ConfigSources s;
  s.env["HF_TOKEN"] = "hf_fallback";
  EXPECT_EQ(load_config(s).upstream_token, "hf_fallback");

  s.env["INFERLLAMA_UPSTREAM_TOKEN"] = "own";
  EXPECT_EQ(load_config(s).upstream_token, "own");

  s.env.erase("INFERLLAMA_UPSTREAM_TOKEN");
  s.file = write("upstream_token = \"file\"\n");
  EXPECT_EQ(load_config(s).upstream_token, "file");

  // An explicit empty value counts as set: no fallback.
  s.file = write("upstream_token = \"\"\n", "empty.toml");
  EXPECT_EQ(load_config(s).upstream_token, "");
}

TEST_F(ConfigTest, TokenNeverEchoed) {
  ConfigSources s;
  s.env["INFERLLAMA_UPSTREAM_TOKEN"] = "hf_secret value";
  try {
    (void)load_config(s);
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find("secret"), std::string::npos) << what;
    EXPECT_NE(what.find("upstream_token"), std::string::npos) << what;
    EXPECT_NE(what.find("INFERLLAMA_UPSTREAM_TOKEN"), std::string::npos) << what;
  }
}

TEST_F(ConfigTest, SecretsFromFilesAreReadAtLoadAndCheckedAsTheirKeys) {
  ConfigSources s;
  s.flags["admin_key_file"] = write("an-admin-key-of-enough-length\n", "admin.key").string();
  s.env["INFERLLAMA_UPSTREAM_TOKEN_FILE"] = write("hf_token_in_a_file", "hub.token").string();
  s.env["HF_TOKEN"] = "hf_not_this_one";
  s.env["INFERLLAMA_RATELIMIT_BACKEND"] = "redis://127.0.0.1:6379/2";
  s.env["INFERLLAMA_RATELIMIT_BACKEND_PASSWORD_FILE"] = write("redis pass\r\n", "redis.pass").string();
  const Config c = load_config(s);
  EXPECT_EQ(c.admin_key, "an-admin-key-of-enough-length");
  EXPECT_EQ(c.upstream_token, "hf_token_in_a_file") << "a token file turns the HF_TOKEN fallback off";
  EXPECT_EQ(c.ratelimit_backend_password, "redis pass");
  EXPECT_EQ(c.ratelimit_backend, "redis://127.0.0.1:6379/2");
  EXPECT_EQ(c.session_backend, "auto");
  EXPECT_EQ(c.session_backend_password, "");
}

TEST_F(ConfigTest, SecretFilesThatCannotServeAreErrorsNamingTheirKey) {
  for (const std::string key :
       {"admin_key_file", "upstream_token_file", "ratelimit_backend_password_file", "session_backend_password_file"}) {
    SCOPED_TRACE(key);
    ConfigSources s;
    s.flags[key] = (dir_ / "missing").string();
    expect_error(s, {key, "flag --", "missing", "cannot be read"});
    s.flags[key] = write("\n", "empty").string();
    expect_error(s, {key, "is empty"});
    s.flags[key] = dir_.string();
    expect_error(s, {key, "is not a regular file"});
    s.flags[key] = "/dev/zero";
    expect_error(s, {key, "is not a regular file"});
    s.flags[key] = write(std::string(70000, 'k'), "huge").string();
    expect_error(s, {key, "larger than 64KiB"});
  }
}

TEST_F(ConfigTest, ASecretGivenBothWaysIsAnError) {
  const std::string key_file = write("an-admin-key-of-enough-length\n", "admin.key").string();
  ConfigSources s;
  s.flags["admin_key_file"] = key_file;
  s.file = write("admin_key = \"another-admin-key-0123\"\n");
  expect_error(s, {"admin_key_file", "flag --admin-key-file", "admin_key is given too", "test.toml"});

  s = {};
  s.env["INFERLLAMA_UPSTREAM_TOKEN"] = "hf_a";
  s.env["INFERLLAMA_UPSTREAM_TOKEN_FILE"] = write("hf_b", "token").string();
  expect_error(s, {"upstream_token_file", "upstream_token is given too", "INFERLLAMA_UPSTREAM_TOKEN"});

  s = {};
  s.env["INFERLLAMA_RATELIMIT_BACKEND"] = "redis://:inline@127.0.0.1";
  s.flags["ratelimit_backend_password_file"] = write("filed", "pw").string();
  try {
    (void)load_config(s);
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("ratelimit_backend carries a password too"), std::string::npos) << what;
    EXPECT_EQ(what.find("inline"), std::string::npos) << "the password is not shown: " << what;
  }

  s = {};
  s.env["INFERLLAMA_SESSION_BACKEND"] = "redis://:inline@127.0.0.1";
  s.flags["session_backend_password_file"] = write("filed", "pw").string();
  expect_error(s, {"session_backend carries a password too"});

  // An empty key beside its file is no second value.
  s = {};
  s.flags["admin_key"] = "";
  s.flags["admin_key_file"] = key_file;
  EXPECT_EQ(load_config(s).admin_key, "an-admin-key-of-enough-length");
}

TEST_F(ConfigTest, AUrlWithCredentialsIsRefusedAsAFlag) {
  for (const auto& [key, url] : {std::pair{"upstream", "https://user:secret@hub.example"},
                                 std::pair{"ratelimit_backend", "redis://:secret@127.0.0.1:6379"}}) {
    ConfigSources s;
    s.flags[key] = url;
    expect_error(s, {"carries credentials (user:password@)", "every user of the machine can read"});
    s.flags.clear();
    s.env["INFERLLAMA_" + [&] {
      std::string k = key;
      for (auto& c : k) c = static_cast<char>(std::toupper(c));
      return k;
    }()] = url;
    EXPECT_NO_THROW((void)load_config(s)) << key;
  }
}

TEST_F(ConfigTest, SeveralUpstreamParents) {
  ConfigSources s;
  s.flags["upstream"] = "http://p1.example:8080, http://p2.example:8080/ ,https://p3.example";
  Config c = load_config(s);
  EXPECT_EQ(c.upstream, "http://p1.example:8080");
  EXPECT_EQ(c.upstream_parents,
            (std::vector<std::string>{"http://p1.example:8080", "http://p2.example:8080", "https://p3.example"}));
  // One URL is the plain single upstream.
  s.flags["upstream"] = "http://p1.example:8080";
  EXPECT_TRUE(load_config(s).upstream_parents.empty());

  s.flags["upstream"] = "http://p1.example, http://p2.example";
  s.flags["upstream_fallback"] = "http://p2.example/";
  expect_error(s, {"upstream_fallback", "is one of the upstream URLs already"});
  s.flags["upstream_fallback"] = "https://huggingface.co";
  EXPECT_EQ(load_config(s).upstream_fallback, "https://huggingface.co");
  // Credentials in any URL of the list stay off the command line.
  s.flags["upstream"] = "http://p1.example, http://user:secret@p2.example";
  expect_error(s, {"carries credentials (user:password@)"});
  // The fallback is another upstream than the only one too.
  s.flags["upstream"] = "http://p1.example";
  s.flags["upstream_fallback"] = "http://p1.example";
  expect_error(s, {"upstream_fallback", "is one of the upstream URLs already"});
  // An error names a URL without its password.
  s.flags.clear();
  s.env["INFERLLAMA_UPSTREAM"] = "http://user:secret@p1.example, http://user:secret@p1.example";
  try {
    (void)load_config(s);
    ADD_FAILURE() << "a URL listed twice was taken";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("is listed twice"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("secret"), std::string::npos) << e.what();
  }
}

TEST_F(ConfigTest, ASecretFromAFileIsValidatedWithoutEchoingIt) {
  ConfigSources s;
  s.flags["admin_key_file"] = write("short-secret\n", "admin.key").string();
  try {
    (void)load_config(s);
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("admin_key_file"), std::string::npos) << what;
    EXPECT_NE(what.find("at least 16 characters"), std::string::npos) << what;
    EXPECT_EQ(what.find("short-secret"), std::string::npos) << what;
  }
  s.flags = {{"upstream_token_file", write("hf_has a space", "token").string()}};
  expect_error(s, {"upstream_token_file", "value not shown"});
}

TEST_F(ConfigTest, TheNodesTokensAreOneListUpstreamTokenFirst) {
  ConfigSources s;
  s.env["HF_TOKEN"] = "hf_first";
  const fs::path list = write("# spread over these\n\n  hf_second  \r\nhf_first\nhf_third\nhf_second\n", "tokens");
  fs::permissions(list, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  s.flags["upstream_tokens_file"] = list.string();
  const Config c = load_config(s);
  EXPECT_EQ(c.upstream_tokens, (std::vector<std::string>{"hf_first", "hf_second", "hf_third"})) << "each once";
  EXPECT_EQ(c.upstream_token, "hf_first");
  s.env.clear();
  EXPECT_EQ(load_config(s).upstream_tokens, (std::vector<std::string>{"hf_second", "hf_first", "hf_third"}));
  s.flags.clear();
  s.env["INFERLLAMA_UPSTREAM_TOKEN"] = "hf_alone";
  EXPECT_EQ(load_config(s).upstream_tokens, std::vector<std::string>{"hf_alone"});
  EXPECT_EQ(load_config({}).upstream_tokens, std::vector<std::string>{});
}

TEST_F(ConfigTest, ATokenListMustBeTheOwnersAndHoldOnlyTokens) {
  auto with_list = [&](const std::string& content, fs::perms mode = fs::perms::owner_read | fs::perms::owner_write) {
    const fs::path list = write(content, "tokens");
    fs::permissions(list, mode, fs::perm_options::replace);
    ConfigSources s;
    s.env["INFERLLAMA_UPSTREAM_TOKENS_FILE"] = list.string();
    return s;
  };
  expect_error(with_list("hf_a\n", fs::perms::owner_read | fs::perms::group_read),
               {"upstream_tokens_file", "INFERLLAMA_UPSTREAM_TOKENS_FILE", "group or others", "chmod 600"});
  expect_error(with_list("hf_a\n", fs::perms::owner_read | fs::perms::others_read),
               {"upstream_tokens_file", "chmod 600"});
  expect_error(with_list("# nothing but a comment\n\n"), {"upstream_tokens_file", "holds no token"});
  try {
    (void)load_config(with_list("hf_good\nhf_bad token\n"));
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("line 2"), std::string::npos) << what;
    EXPECT_NE(what.find("value not shown"), std::string::npos) << what;
    EXPECT_EQ(what.find("hf_bad"), std::string::npos) << what;
    EXPECT_EQ(what.find("hf_good"), std::string::npos) << what;
  }
  std::string many;
  for (std::size_t i = 0; i <= kMaxNodeTokens; ++i) many += "hf_" + std::to_string(i) + "\n";
  expect_error(with_list(many), {"upstream_tokens_file", "more than 64 tokens"});
  ConfigSources missing;
  missing.flags["upstream_tokens_file"] = (dir_ / "missing").string();
  expect_error(missing, {"upstream_tokens_file", "cannot be read"});
}

// ---- unknown names --------------------------------------------------------------------------------

TEST_F(ConfigTest, UnknownTomlKeyRejected) {
  auto s = with_file("listen = \"0.0.0.0:1\"\n\nchunk_sise = \"4MiB\"\n");
  expect_error(s, {"chunk_sise", "unknown key", s.file->string(), "line 3", "did you mean chunk_size"});
  expect_error(with_file("[server]\nlisten = \"0.0.0.0:1\"\n"), {"unknown key 'server'"});
}

TEST_F(ConfigTest, UnknownEnvRejected) {
  ConfigSources s;
  s.env["INFERLLAMA_CHUNKSIZE"] = "4MiB";
  expect_error(s, {"unknown environment variable INFERLLAMA_CHUNKSIZE", "INFERLLAMA_CHUNK_SIZE"});
  // Other variables are not ours.
  ConfigSources other;
  other.env["PATH"] = "/usr/bin";
  other.env["INFERLLAMAX"] = "1";
  other.env["INFERLLAMA_CONFIG"] = "";
  EXPECT_EQ(load_config(other), Config{});
}

TEST_F(ConfigTest, UnknownFlagRejected) {
  ConfigSources s;
  s.flags["chunk"] = "4MiB";
  expect_error(s, {"unknown flag --chunk"});
}

// ---- bad values -----------------------------------------------------------------------------------

TEST_F(ConfigTest, BadValuesRejectedWithKeyAndSource) {
  struct Bad {
    std::string key, value;
  };
  const std::vector<Bad> bad = {
      {"chunk_size", "3000"},
      {"chunk_size", "32KiB"},
      {"chunk_size", "128MiB"},
      {"chunk_size", "3MiB"},
      {"chunk_size", "-4"},
      {"chunk_size", "4XB"},
      {"listen", "nohost"},
      {"listen", "0.0.0.0:70000"},
      {"listen", ":8080"},
      {"listen", "0.0.0.0:"},
      {"listen", "::1:8080"},
      {"listen", "[::1]8080"},
      {"listen", "host:80a"},
      {"log_level", "loud"},
      {"upstream", "ftp://x"},
      {"upstream", ""},
      {"upstream", "http://"},
      {"upstream", "huggingface.co"},
      {"upstream", "http://a.example,"},
      {"upstream", "http://a.example, http://a.example/"},
      {"upstream_fallback", "hub"},
      {"upstream_backoff", "0"},
      {"public_url", "example.com"},
      {"public_url", "http://x/?q"},
      {"upstream_connections", "0"},
      {"upstream_connections", "33"},
      {"upstream_connections", "x"},
      {"upstream_retries", "101"},
      {"upstream_timeout", "0"},
      {"upstream_timeout", "soon"},
      {"access_ttl", "0"},
      {"access_ttl", "61"},
      {"access_ttl", "1500ms"},
      {"ref_ttl", "-1"},
      {"io_threads", "1025"},
      {"worker_threads", "-1"},
      {"data_dir", ""},
      {"parallel_threshold", "lots"},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.key + " = " + b.value);
    std::string env = "INFERLLAMA_" + b.key;
    for (char& c : env) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    std::string flag = "--" + b.key;
    std::replace(flag.begin(), flag.end(), '_', '-');

    ConfigSources by_flag;
    by_flag.flags[b.key] = b.value;
    expect_error(by_flag, {b.key, "flag " + flag});

    ConfigSources by_env;
    by_env.env[env] = b.value;
    expect_error(by_env, {b.key, "environment variable " + env});

    ConfigSources by_file;
    std::string escaped;
    for (char c : b.value) escaped += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
    by_file.file = write("\n" + b.key + " = \"" + escaped + "\"\n");
    expect_error(by_file, {b.key, "config file", by_file.file->string(), "line 2"});
  }
}

TEST_F(ConfigTest, SpecificMessages) {
  ConfigSources s;
  s.flags["chunk_size"] = "3000";
  expect_error(s, {"chunk_size", "--chunk-size", "power of two"});
  s.flags = {{"listen", "0.0.0.0:70000"}};
  expect_error(s, {"listen", "0..65535"});
  s.flags = {{"log_level", "loud"}};
  expect_error(s, {"\"loud\"", "trace, debug"});
  s.flags = {{"upstream", "ftp://x"}};
  expect_error(s, {"http:// or https://"});
}

TEST_F(ConfigTest, OverriddenFileValueStillValidated) {
  auto s = with_file("chunk_size = 3000\n");
  s.flags["chunk_size"] = "4MiB";
  expect_error(s, {"chunk_size", "config file"});
}

TEST_F(ConfigTest, WrongTomlTypes) {
  expect_error(with_file("upstream = 5\n"), {"upstream", "expected a string, got integer"});
  expect_error(with_file("chunk_size = 4.0\n"), {"chunk_size", "floating-point"});
  expect_error(with_file("upstream_connections = \"four\"\n"), {"upstream_connections"});
  expect_error(with_file("upstream_retries = -1\n"), {"upstream_retries", "negative"});
  expect_error(with_file("io_threads = true\n"), {"io_threads", "boolean"});
  expect_error(with_file("ref_ttl = [1]\n"), {"ref_ttl", "array"});
}

TEST_F(ConfigTest, TomlValueForms) {
  Config c =
      load_config(with_file("chunk_size = \"64 KiB\"\nparallel_threshold = 1000\nupstream_timeout = \"500ms\"\n"
                            "ref_ttl = 0\naccess_ttl = \"1m\"\nupstream_connections = \"8\"\n"));
  EXPECT_EQ(c.chunk_size, 64u * 1024);
  EXPECT_EQ(c.parallel_threshold, 1000u);
  EXPECT_EQ(c.upstream_timeout, 500ms);
  EXPECT_EQ(c.ref_ttl, 0s);
  EXPECT_EQ(c.access_ttl, 60s);
  EXPECT_EQ(c.upstream_connections, 8u);
}

TEST_F(ConfigTest, ValueNormalisation) {
  ConfigSources s;
  s.flags = {{"public_url", "https://cache.example.org/"},
             {"upstream", "HTTP://parent:8080/"},
             {"log_level", "WARN"},
             {"listen", "[::1]:0"},
             {"data_dir", "relative/dir"}};
  const Config c = load_config(s);
  EXPECT_EQ(c.public_url, "https://cache.example.org");
  EXPECT_EQ(c.upstream, "http://parent:8080");
  EXPECT_EQ(c.log_level, "warn");
  EXPECT_EQ(c.listen, "[::1]:0");
  EXPECT_EQ(c.data_dir, fs::path("relative/dir"));
  EXPECT_TRUE(c.data_dir.is_relative());

  s.flags = {{"listen", "localhost:65535"}, {"public_url", ""}};
  EXPECT_EQ(load_config(s).listen, "localhost:65535");
  EXPECT_EQ(load_config(s).public_url, "");
}

// ---- files ----------------------------------------------------------------------------------------

TEST_F(ConfigTest, TomlSyntaxErrorHasLine) {
  auto s = with_file("listen = \"0.0.0.0:8080\"\nlog_level = = \"info\"\n");
  expect_error(s, {"TOML syntax error", s.file->string(), "line 2"});
}

TEST_F(ConfigTest, UnreadableFile) {
  ConfigSources s;
  s.file = dir_ / "missing.toml";
  expect_error(s, {"cannot read config file", "missing.toml", "No such file"});
  s.file = dir_;
  expect_error(s, {"cannot read config file", "directory"});
}

TEST(ConfigShipped, ExampleFileLoadsToDefaultsAndDocumentsEveryKey) {
  const fs::path example = fs::path(INFERLLAMA_SOURCE_DIR) / "config" / "inferllama.toml";
  ConfigSources s;
  s.file = example;
  EXPECT_EQ(load_config(s), Config{});

  std::ifstream in(example);
  ASSERT_TRUE(in) << example;
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  for (const ConfigKey& k : config_keys()) {
    bool documented = false;
    for (std::size_t i = 1; i < lines.size(); ++i) {
      const std::string& l = lines[i];
      const bool sets = l.starts_with(std::string(k.name) + " =") || l.starts_with("# " + std::string(k.name) + " =");
      if (sets && lines[i - 1].starts_with("#") && lines[i - 1].find("Default") != std::string::npos) documented = true;
    }
    EXPECT_TRUE(documented) << k.name << " lacks a commented entry in " << example;
  }
}

// ---- parsers --------------------------------------------------------------------------------------

TEST(ParseSize, Accepts) {
  EXPECT_EQ(parse_size("123"), 123u);
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(parse_size("4MiB"), 4u * 1024 * 1024);
  EXPECT_EQ(parse_size("64 KiB"), 64u * 1024);
  EXPECT_EQ(parse_size("1GiB"), 1024u * 1024 * 1024);
  EXPECT_EQ(parse_size("2GB"), 2'000'000'000u);
  EXPECT_EQ(parse_size("5kB"), 5000u);
  EXPECT_EQ(parse_size("3MB"), 3'000'000u);
  EXPECT_EQ(parse_size("1TiB"), 1024ull * 1024 * 1024 * 1024);
  EXPECT_EQ(parse_size("1TB"), 1'000'000'000'000ull);
  EXPECT_EQ(parse_size("8M"), 8u * 1024 * 1024);
  EXPECT_EQ(parse_size("16k"), 16u * 1024);
  EXPECT_EQ(parse_size("10B"), 10u);
  EXPECT_EQ(parse_size("4mib"), 4u * 1024 * 1024);
  EXPECT_EQ(parse_size(" 1.5GiB "), 1536u * 1024 * 1024);
  EXPECT_EQ(parse_size("0.5KiB"), 512u);
  EXPECT_EQ(parse_size("18446744073709551615"), 18446744073709551615ull);
}

TEST(ParseSize, Rejects) {
  for (std::string_view bad : {"", " ", "MiB", "-1", "4 XiB", "4MiB5", "1.", ".5MiB", "0.1KiB", "1.5",
                               "18446744073709551616", "16777216TiB", "4 Mi B", "+4"}) {
    EXPECT_THROW((void)parse_size(bad), ConfigError) << bad;
  }
  try {
    (void)parse_size("4XB");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("4XB"), std::string::npos) << e.what();
  }
}

TEST(ParseDuration, Accepts) {
  EXPECT_EQ(parse_duration("30s"), 30s);
  EXPECT_EQ(parse_duration("500ms"), 500ms);
  EXPECT_EQ(parse_duration("2m"), 2min);
  EXPECT_EQ(parse_duration("1h"), 1h);
  EXPECT_EQ(parse_duration("1d"), 24h);
  EXPECT_EQ(parse_duration("45"), 45s);
  EXPECT_EQ(parse_duration("0"), 0ms);
  EXPECT_EQ(parse_duration("1m30s"), 90s);
  EXPECT_EQ(parse_duration("1h 30m"), 90min);
  EXPECT_EQ(parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(parse_duration(" 10 S "), 10s);
  EXPECT_EQ(parse_duration("2.5"), 2500ms);
}

TEST(ParseDuration, Rejects) {
  for (std::string_view bad : {"", "s", "-1s", "10x", "1.0005s", "0.5ms", "1m30", "30 s 5", "1y",
                               "99999999999999999999s", "9223372036854775807s"}) {
    EXPECT_THROW((void)parse_duration(bad), ConfigError) << bad;
  }
}

TEST(EnvironmentMap, ParsesEnviron) {
  char a[] = "A=1";
  char b[] = "B=x=y";
  char c[] = "NOEQUALS";
  char d[] = "A=2";
  char e[] = "EMPTY=";
  char* envp[] = {a, b, c, d, e, nullptr};
  const auto env = environment_map(envp);
  EXPECT_EQ(env.size(), 3u);
  EXPECT_EQ(env.at("A"), "1");
  EXPECT_EQ(env.at("B"), "x=y");
  EXPECT_EQ(env.at("EMPTY"), "");
  EXPECT_TRUE(environment_map(nullptr).empty());
}

}  // namespace
}  // namespace inferllama
