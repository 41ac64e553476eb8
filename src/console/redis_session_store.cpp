// Console sessions in Redis (session_store.hpp has the layout). Every change that must not race another
// node is one Lua script: a refresh-token rotation (two nodes presenting one token: one rotates, the other
// finds it spent and closes the session), a new session with the per-user bound, closing a user's sessions.
#include <spdlog/spdlog.h>

#include <charconv>

#include "console/session_store.hpp"

namespace inferllama::console {
namespace {

using usage::RedisReply;

// KEYS: the session, the user's index. ARGV: sid, user, refresh, csrf, created_ms, refreshed_ms, expires_ms,
// TTL (ms), the per-user bound, the prefix of the user's session keys. Answers the ids of the sessions the
// bound closed (the least recently refreshed first); members whose session Redis expired leave the index.
constexpr std::string_view kAddScript = R"lua(
redis.call('HSET', KEYS[1], 'user', ARGV[2], 'refresh', ARGV[3], 'spent', '', 'csrf', ARGV[4],
           'created_ms', ARGV[5], 'refreshed_ms', ARGV[6], 'expires_ms', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[8]) then redis.call('PEXPIRE', KEYS[2], ARGV[8]) end
local others = {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if sid ~= ARGV[1] then
    if redis.call('EXISTS', ARGV[10] .. sid) == 1 then
      others[#others + 1] = sid
    else
      redis.call('ZREM', KEYS[2], sid)
    end
  end
end
local closed = {}
local extra = #others + 1 - tonumber(ARGV[9])
for i = 1, extra do
  redis.call('DEL', ARGV[10] .. others[i])
  redis.call('ZREM', KEYS[2], others[i])
  closed[#closed + 1] = others[i]
end
return closed
)lua";

// KEYS: the session, the user's index. ARGV: the presented token's hash, the next one's, now (ms), how many
// spent tokens are remembered, sid.
constexpr std::string_view kRotateScript = R"lua(
local current, spent = unpack(redis.call('HMGET', KEYS[1], 'refresh', 'spent'))
if not current then return 'unknown' end
if current == ARGV[1] then
  local kept = {}
  for token in string.gmatch(spent, '%x+') do kept[#kept + 1] = token end
  kept[#kept + 1] = ARGV[1]
  while #kept > tonumber(ARGV[4]) do table.remove(kept, 1) end
  redis.call('HSET', KEYS[1], 'refresh', ARGV[2], 'spent', table.concat(kept, ' '), 'refreshed_ms', ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
  return 'rotated'
end
for token in string.gmatch(spent, '%x+') do
  if token == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[2], ARGV[5])
    return 'reused'
  end
end
return 'unknown'
)lua";

// KEYS: the user's index. ARGV: the prefix of the user's session keys, the sid kept ("" for none).
constexpr std::string_view kRemoveAllScript = R"lua(
local closed = 0
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if sid ~= ARGV[2] then
    closed = closed + redis.call('DEL', ARGV[1] .. sid)
    redis.call('ZREM', KEYS[1], sid)
  end
end
return closed
)lua";

std::optional<std::int64_t> number_of(std::string_view text) {
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

class RedisSessionStore final : public SessionStore {
 public:
  explicit RedisSessionStore(const usage::RedisSettings& settings)
      : client_(settings), prefix_(settings.key_prefix), keys_key_(prefix_ + "signing-keys") {}

  std::vector<std::string> add(const std::string& sid, const SessionRecord& r, std::size_t max_per_user) override {
    const auto ttl = std::max<std::int64_t>(1, r.expires_ms - r.refreshed_ms);
    const RedisReply closed = ask_script(
        kAddScript, {session_key(r.user, sid), index_key(r.user)},
        {sid, r.user, r.refresh_sha256, r.csrf, std::to_string(r.created_ms), std::to_string(r.refreshed_ms),
         std::to_string(r.expires_ms), std::to_string(ttl), std::to_string(max_per_user), session_key(r.user, "")});
    std::vector<std::string> out;
    for (const auto& e : closed.elements) out.push_back(e.text);
    return out;
  }

  std::optional<SessionRecord> get(const std::string& user, const std::string& sid) override {
    const RedisReply fields = ask({"HGETALL", session_key(user, sid)});
    if (fields.kind != RedisReply::Kind::array || fields.elements.empty()) return std::nullopt;
    SessionRecord r;
    std::optional<std::int64_t> created, refreshed, expires;
    for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2) {
      const std::string& name = fields.elements[i].text;
      const std::string& value = fields.elements[i + 1].text;
      if (name == "user") {
        r.user = value;
      } else if (name == "refresh") {
        r.refresh_sha256 = value;
      } else if (name == "spent") {
        for (std::size_t at = 0; at < value.size();) {
          const auto space = std::min(value.find(' ', at), value.size());
          if (space > at) r.spent_sha256.push_back(value.substr(at, space - at));
          at = space + 1;
        }
      } else if (name == "csrf") {
        r.csrf = value;
      } else if (name == "created_ms") {
        created = number_of(value);
      } else if (name == "refreshed_ms") {
        refreshed = number_of(value);
      } else if (name == "expires_ms") {
        expires = number_of(value);
      }
    }
    // The session the JWT names is this user's, whole; anything else is no session.
    if (r.user != user || r.refresh_sha256.empty() || r.csrf.empty() || !created || !refreshed || !expires) {
      return std::nullopt;
    }
    r.created_ms = *created;
    r.refreshed_ms = *refreshed;
    r.expires_ms = *expires;
    return r;
  }

  Rotation rotate(const std::string& user, const std::string& sid, const std::string& presented,
                  const std::string& next, std::int64_t now_ms, std::size_t kept) override {
    const RedisReply outcome = ask_script(kRotateScript, {session_key(user, sid), index_key(user)},
                                          {presented, next, std::to_string(now_ms), std::to_string(kept), sid});
    if (outcome.text == "rotated") return Rotation::rotated;
    if (outcome.text == "reused") return Rotation::reused;
    return Rotation::unknown;
  }

  bool remove(const std::string& user, const std::string& sid) override {
    const RedisReply removed = ask({"DEL", session_key(user, sid)});
    ask({"ZREM", index_key(user), sid});
    return removed.integer > 0;
  }

  std::size_t remove_all(const std::string& user, const std::string& except) override {
    const RedisReply closed = ask_script(kRemoveAllScript, {index_key(user)}, {session_key(user, ""), except});
    return static_cast<std::size_t>(std::max(0LL, closed.integer));
  }

  std::vector<std::pair<std::string, SessionRecord>> of_user(const std::string& user) override {
    std::vector<std::pair<std::string, SessionRecord>> out;
    const RedisReply sids = ask({"ZRANGE", index_key(user), "0", "-1"});
    for (const auto& sid : sids.elements) {
      if (auto record = get(user, sid.text)) {
        out.emplace_back(sid.text, std::move(*record));
      } else {
        ask({"ZREM", index_key(user), sid.text});  // Redis expired it
      }
    }
    return out;
  }

  std::size_t expire(std::int64_t) override { return 0; }

  std::vector<SealedKey> keys() override {
    const RedisReply all = ask({"HGETALL", keys_key_});
    std::vector<SealedKey> out;
    for (std::size_t i = 0; i + 1 < all.elements.size(); i += 2) {
      if (auto key = key_of(all.elements[i].text, all.elements[i + 1].text)) out.push_back(std::move(*key));
    }
    return out;
  }

  std::optional<SealedKey> key(const std::string& id) override {
    const RedisReply value = ask({"HGET", keys_key_, id});
    if (value.kind != RedisReply::Kind::string) return std::nullopt;
    return key_of(id, value.text);
  }

  void add_key(const SealedKey& key) override {
    ask({"HSETNX", keys_key_, key.id, std::to_string(key.created_ms) + " " + key.sealed});
  }

  void remove_keys(const std::vector<std::string>& ids) override {
    if (ids.empty()) return;
    std::vector<std::string> command{"HDEL", keys_key_};
    command.insert(command.end(), ids.begin(), ids.end());
    ask(command);
  }

  bool shared() const override { return true; }

  std::string health() override {
    const RedisReply pong = client_.command({"PING"});
    return pong.kind == RedisReply::Kind::status ? "connected" : "unreachable";
  }

 private:
  // "CREATED_MS SEALED"
  static std::optional<SealedKey> key_of(const std::string& id, std::string_view value) {
    const auto space = value.find(' ');
    const auto created = number_of(value.substr(0, space));
    if (space == std::string_view::npos || !created) return std::nullopt;
    return SealedKey{id, std::string(value.substr(space + 1)), *created};
  }

  std::string session_key(const std::string& user, const std::string& sid) const {
    return prefix_ + "{" + user + "}:" + sid;
  }
  std::string index_key(const std::string& user) const { return prefix_ + "{" + user + "}"; }

  RedisReply checked(RedisReply reply) const {
    if (reply.failed()) {
      throw SessionsUnavailable("the console's sessions are kept in Redis at " + client_.settings().endpoint() +
                                ", which does not answer (" + reply.text + "); try again shortly");
    }
    if (reply.is_error()) {
      throw SessionsUnavailable("Redis at " + client_.settings().endpoint() +
                                " refused a session change: " + reply.text);
    }
    return reply;
  }
  RedisReply ask(const std::vector<std::string>& command) { return checked(client_.command(command)); }
  RedisReply ask_script(std::string_view script, const std::vector<std::string>& keys,
                        const std::vector<std::string>& args) {
    return checked(client_.eval(script, keys, args));
  }

  usage::RedisClient client_;
  const std::string prefix_;
  const std::string keys_key_;
};

}  // namespace

std::unique_ptr<SessionStore> make_redis_session_store(const usage::RedisSettings& settings) {
  return std::make_unique<RedisSessionStore>(settings);
}

}  // namespace inferllama::console
