// Where console sessions and their signing keys are kept (sessions.hpp decides what they mean): the node's
// RocksDB (`sessions` table, mirrored in memory), or Redis, shared by every node pointed at it so that a
// sign-in on one node holds on all of them.
//
// In Redis (session_backend, or the Redis of ratelimit_backend), under the key prefix:
//   {USER}:SID     a hash per session (user, refresh, spent, csrf, created_ms, refreshed_ms, expires_ms), with
//                  a TTL of the session's remaining life (30 days at most), so Redis drops ended sessions
//   {USER}         a sorted set of the user's session ids by last refresh: their list, close-all, the bound
//   signing-keys   a hash of the JWT signing keys, sealed under secret_key_file (every node sharing the
//                  sessions needs the same file: a key that does not open is unknown to the node)
// The braces put a user's keys in one Redis Cluster hash slot, as a script's keys must be.
//
// A store that cannot be asked (Redis down, a write refused) throws SessionsUnavailable: the console answers
// 503 and nobody is signed in or out by a store that did not answer.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "inferllama/config.hpp"
#include "inferllama/records.hpp"
#include "usage/redis_client.hpp"

namespace inferllama::console {

struct SessionRecord {
  std::string user;
  std::string refresh_sha256;             // hex of the current refresh token
  std::vector<std::string> spent_sha256;  // tokens traded in, newest last, bounded
  std::string csrf;
  std::int64_t created_ms = 0;
  std::int64_t refreshed_ms = 0;
  std::int64_t expires_ms = 0;
};

// A JWT signing key as stored: its secret sealed with the node's SecretBox.
struct SealedKey {
  std::string id;
  std::string sealed;
  std::int64_t created_ms = 0;
};

class SessionsUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class SessionStore {
 public:
  virtual ~SessionStore() = default;

  // Adds session `sid`. Past `max_per_user`, the user's least recently refreshed other sessions close: their
  // ids.
  virtual std::vector<std::string> add(const std::string& sid, const SessionRecord& record,
                                       std::size_t max_per_user) = 0;
  virtual std::optional<SessionRecord> get(const std::string& user, const std::string& sid) = 0;
  enum class Rotation { rotated, reused, unknown };
  // In one atomic step: when `presented` is the session's current token, it joins the spent ones (the newest
  // `kept` remembered), `next` becomes current and the session was refreshed at `now_ms` (rotated); when
  // `presented` was spent already, the session closes (reused: two holders of one session); else unknown.
  virtual Rotation rotate(const std::string& user, const std::string& sid, const std::string& presented,
                          const std::string& next, std::int64_t now_ms, std::size_t kept) = 0;
  // Whether it was open.
  virtual bool remove(const std::string& user, const std::string& sid) = 0;
  // Every session of `user` but `except`; how many.
  virtual std::size_t remove_all(const std::string& user, const std::string& except) = 0;
  virtual std::vector<std::pair<std::string, SessionRecord>> of_user(const std::string& user) = 0;
  // Drops the sessions ended by `now_ms`; how many (Redis drops them itself: none).
  virtual std::size_t expire(std::int64_t now_ms) = 0;

  virtual std::vector<SealedKey> keys() = 0;
  virtual std::optional<SealedKey> key(const std::string& id) = 0;
  // Adds `key` unless a key of its id is kept already.
  virtual void add_key(const SealedKey& key) = 0;
  virtual void remove_keys(const std::vector<std::string>& ids) = 0;

  // Several nodes use it: keys may appear that this node did not make, and may be sealed under another file.
  virtual bool shared() const = 0;
  // "local", or "connected"/"unreachable" (asks Redis): for the operator's page.
  virtual std::string health() = 0;
};

std::unique_ptr<SessionStore> make_local_session_store(RecordStore& records);
// `settings.key_prefix` names its keys; each call waits at most `settings.timeout`.
std::unique_ptr<SessionStore> make_redis_session_store(const usage::RedisSettings& settings);
// The store the configuration asks for (session_backend; see config/inferllama.toml). Throws ConfigError for
// a malformed Redis URL.
std::unique_ptr<SessionStore> make_session_store(const Config& config, RecordStore& records);

}  // namespace inferllama::console
