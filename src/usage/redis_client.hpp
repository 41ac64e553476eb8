// What the node's two users of Redis share: the settings a redis:// URL gives, the replies as values, the
// commands as RESP, and a blocking client for callers on the blocking pool (the console's sessions). The
// rate limiter (redis_limiter.hpp) talks RESP over Asio on the I/O threads with the same pieces.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

struct redisContext;
struct redisReply;

namespace inferllama::usage {

struct RedisSettings {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  unsigned database = 0;
  std::string password;                    // AUTH, when the URL carries one
  std::chrono::milliseconds timeout{200};  // connect and reply
  bool refuse_when_down = false;           // the rate limiter's: refuse (503) instead of deciding locally
  std::string key_prefix = "inferllama:rl:";
  // redis://[:password@]host[:port][/db]; throws std::invalid_argument with a clear message.
  static RedisSettings from_url(const std::string& url);
  // host:port ([v6]:port), for messages and the log: never the password.
  std::string endpoint() const;
};

// One RESP reply, or (`failed`) why none came.
struct RedisReply {
  enum class Kind { failed, error, status, integer, string, nil, array } kind = Kind::failed;
  std::string text;  // error or status message, string value, or why the reply failed
  long long integer = 0;
  std::vector<RedisReply> elements;

  static RedisReply failure(std::string why) { return RedisReply{Kind::failed, std::move(why), 0, {}}; }
  static RedisReply from(const redisReply& reply);
  bool is_error() const { return kind == Kind::error; }
  bool failed() const { return kind == Kind::failed; }
};

// A command as RESP: an array of bulk strings.
std::string encode_redis_command(const std::vector<std::string>& args);

// A blocking connection, shared by its callers one command at a time. It connects (AUTH, SELECT) at the
// first command and again after any failure, but not more often than once a second: while Redis is down,
// callers hear so at once instead of each waiting out a connect timeout. Thread-safe.
class RedisClient {
 public:
  explicit RedisClient(RedisSettings settings);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // The reply; `failed` when Redis could not be asked (not connected, no reply within the timeout).
  RedisReply command(const std::vector<std::string>& args);
  // A Lua script by its SHA-1 (EVALSHA), loaded again when Redis does not know it.
  RedisReply eval(std::string_view script, const std::vector<std::string>& keys, const std::vector<std::string>& args);

  const RedisSettings& settings() const { return settings_; }

 private:
  RedisReply command_locked(const std::vector<std::string>& args);  // the caller holds mutex_
  bool connect_locked(std::string& why);
  void drop_locked();

  const RedisSettings settings_;
  std::mutex mutex_;
  redisContext* context_ = nullptr;
  std::chrono::steady_clock::time_point next_attempt_{};
  std::string last_failure_;
  std::map<std::string, std::string, std::less<>> script_shas_;  // script text -> SHA-1 Redis gave it
};

}  // namespace inferllama::usage
