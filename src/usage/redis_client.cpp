#include "usage/redis_client.hpp"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <charconv>
#include <optional>
#include <stdexcept>

#include "util/url.hpp"

namespace inferllama::usage {
namespace {

constexpr auto kReconnectEvery = std::chrono::seconds(1);

std::invalid_argument bad_url(const std::string& why) {
  return std::invalid_argument("Redis URL: " + why + " (expected redis://[:password@]host[:port][/db])");
}

std::optional<unsigned> unsigned_of(std::string_view text) {
  unsigned value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// One command on `context`; `failed` when no reply came.
RedisReply send(redisContext* context, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const auto& arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  auto* reply =
      static_cast<redisReply*>(redisCommandArgv(context, static_cast<int>(args.size()), argv.data(), lengths.data()));
  if (!reply) return RedisReply::failure(context->errstr);
  RedisReply answer = RedisReply::from(*reply);
  freeReplyObject(reply);
  return answer;
}

timeval timeval_of(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000), static_cast<suseconds_t>(ms.count() % 1000 * 1000)};
}

}  // namespace

RedisSettings RedisSettings::from_url(const std::string& url) {
  constexpr std::string_view kScheme = "redis://";
  if (url.starts_with("rediss://")) throw bad_url("TLS (rediss://) is not supported");
  if (!url.starts_with(kScheme)) throw bad_url("it does not start with redis://");
  std::string_view rest = std::string_view(url).substr(kScheme.size());
  if (rest.find_first_of("?#") != std::string_view::npos)
    throw bad_url("query strings and fragments are not supported");
  for (char c : rest) {
    if (static_cast<unsigned char>(c) <= ' ') throw bad_url("it contains spaces or control characters");
  }

  RedisSettings settings;
  const std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    if (!userinfo.starts_with(':')) throw bad_url("user names are not supported (give the password as :password@)");
    auto password = url::decode(userinfo.substr(1));
    if (!password) throw bad_url("the password has a malformed %-escape");
    settings.password = std::move(*password);
    if (settings.password.empty()) throw bad_url("the password after ':' is empty");
  }

  std::optional<std::string_view> port_text;
  if (authority.starts_with('[')) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) throw bad_url("the [IPv6] host has no closing ]");
    settings.host = std::string(authority.substr(1, close - 1));
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':')
      throw bad_url("unexpected \"" + std::string(after) + "\" after the host");
    if (!after.empty()) port_text = after.substr(1);
  } else {
    const std::size_t colon = authority.find(':');
    if (colon != std::string_view::npos && authority.find(':', colon + 1) != std::string_view::npos) {
      throw bad_url("an IPv6 host must be in brackets, as in redis://[::1]:6379");
    }
    settings.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (settings.host.empty()) throw bad_url("the host is missing");
  if (port_text) {
    const auto port = unsigned_of(*port_text);
    if (!port || *port == 0 || *port > 65535) {
      throw bad_url("port \"" + std::string(*port_text) + "\" is not a number from 1 to 65535");
    }
    settings.port = static_cast<std::uint16_t>(*port);
  }

  if (slash != std::string_view::npos) {
    const std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) {
      const auto number = unsigned_of(db);
      if (!number) throw bad_url("database \"" + std::string(db) + "\" is not a number");
      settings.database = *number;
    }
  }
  return settings;
}

std::string RedisSettings::endpoint() const {
  const bool bracket = host.find(':') != std::string::npos;
  return (bracket ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

RedisReply RedisReply::from(const redisReply& r) {
  RedisReply out;
  switch (r.type) {
    case REDIS_REPLY_ERROR:
      out.kind = Kind::error;
      out.text.assign(r.str, r.len);
      break;
    case REDIS_REPLY_STATUS:
      out.kind = Kind::status;
      out.text.assign(r.str, r.len);
      break;
    case REDIS_REPLY_STRING:
      out.kind = Kind::string;
      out.text.assign(r.str, r.len);
      break;
    case REDIS_REPLY_INTEGER:
      out.kind = Kind::integer;
      out.integer = r.integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.kind = Kind::array;
      out.elements.reserve(r.elements);
      for (std::size_t i = 0; i < r.elements; ++i) out.elements.push_back(from(*r.element[i]));
      break;
    default:
      out.kind = Kind::nil;
  }
  return out;
}

std::string encode_redis_command(const std::vector<std::string>& args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (const std::string& arg : args) {
    out += '$';
    out += std::to_string(arg.size());
    out += "\r\n";
    out += arg;
    out += "\r\n";
  }
  return out;
}

RedisClient::RedisClient(RedisSettings settings) : settings_(std::move(settings)) {}

RedisClient::~RedisClient() {
  drop_locked();
}

void RedisClient::drop_locked() {
  if (context_) redisFree(context_);
  context_ = nullptr;
}

bool RedisClient::connect_locked(std::string& why) {
  const auto now = std::chrono::steady_clock::now();
  if (now < next_attempt_) {
    why = last_failure_;
    return false;
  }
  next_attempt_ = now + kReconnectEvery;
  const timeval timeout = timeval_of(settings_.timeout);
  context_ = redisConnectWithTimeout(settings_.host.c_str(), settings_.port, timeout);
  if (!context_ || context_->err) {
    why = last_failure_ = context_ ? context_->errstr : "cannot allocate a connection";
    drop_locked();
    return false;
  }
  redisSetTimeout(context_, timeout);
  auto handshake = [&](const std::vector<std::string>& args, const char* what) {
    const RedisReply answer = send(context_, args);
    if (answer.failed() || answer.is_error()) why = std::string(what) + ": " + answer.text;
    return !answer.failed() && !answer.is_error();
  };
  if ((!settings_.password.empty() && !handshake({"AUTH", settings_.password}, "AUTH")) ||
      (settings_.database != 0 && !handshake({"SELECT", std::to_string(settings_.database)}, "SELECT"))) {
    last_failure_ = why;
    drop_locked();
    return false;
  }
  next_attempt_ = {};
  return true;
}

RedisReply RedisClient::command_locked(const std::vector<std::string>& args) {
  std::string why;
  if (!context_ && !connect_locked(why)) return RedisReply::failure(why);
  RedisReply answer = send(context_, args);
  if (answer.failed()) {
    // A timeout or a lost connection: its state is unknown, so it is not used again.
    last_failure_ = answer.text;
    next_attempt_ = {};
    drop_locked();
  }
  return answer;
}

RedisReply RedisClient::command(const std::vector<std::string>& args) {
  std::lock_guard lock(mutex_);
  return command_locked(args);
}

RedisReply RedisClient::eval(std::string_view script, const std::vector<std::string>& keys,
                             const std::vector<std::string>& args) {
  std::lock_guard lock(mutex_);
  auto known = script_shas_.find(script);
  if (known == script_shas_.end()) {
    RedisReply loaded = command_locked({"SCRIPT", "LOAD", std::string(script)});
    if (loaded.kind != RedisReply::Kind::string) return loaded;
    known = script_shas_.emplace(std::string(script), loaded.text).first;
  }
  std::vector<std::string> call{"EVALSHA", known->second, std::to_string(keys.size())};
  call.insert(call.end(), keys.begin(), keys.end());
  call.insert(call.end(), args.begin(), args.end());
  RedisReply reply = command_locked(call);
  if (!reply.is_error() || !reply.text.starts_with("NOSCRIPT")) return reply;
  // Redis lost its scripts (a restart, SCRIPT FLUSH): load it again, once.
  script_shas_.erase(known);
  RedisReply loaded = command_locked({"SCRIPT", "LOAD", std::string(script)});
  if (loaded.kind != RedisReply::Kind::string) return loaded;
  call[1] = script_shas_.emplace(std::string(script), loaded.text).first->second;
  return command_locked(call);
}

}  // namespace inferllama::usage
