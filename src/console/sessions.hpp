// Web sessions: who signed in on the console. Kept where the configuration says (session_store.hpp): the
// node's RocksDB, mirrored in memory, or Redis, shared by several nodes.
//
// A session is a refresh-token family. Its cookie holds a JWT (HS256, `kid`-named key) that proves the
// session for 15 minutes (`access_ttl`); the JWT also carries the session's current refresh token, which
// JavaScript never sees (the cookie is HttpOnly). Refreshing trades that token for a new one and a new JWT:
// each token is good once, and presenting one already traded in (a stolen copy) closes the whole session.
// A session ends at sign-out, at the end of its 30 days (`session_ttl`), when its user is disabled, deleted
// or renamed, or when too many newer ones of the same user push it out. The JWT names its user and session;
// the session must be that user's in the store, so a store's records alone (a Redis anyone could write to)
// make nobody somebody else.
//
// Every call may throw SessionsUnavailable: the store could not be asked (Redis down, a write refused).
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "console/jwt.hpp"
#include "console/session_store.hpp"
#include "inferllama/clock.hpp"
#include "inferllama/records.hpp"
#include "usage/secret_box.hpp"

namespace inferllama::console {

struct SessionSettings {
  std::chrono::seconds access_ttl{15 * 60};          // a JWT's life
  std::chrono::seconds session_ttl{30 * 24 * 3600};  // a session's (its refresh tokens')
  std::chrono::seconds key_rotation{7 * 24 * 3600};  // a new signing key this often
  std::size_t max_sessions_per_user = 20;            // the oldest closes when a new one would pass it
};

// What the two cookies get when a session opens or refreshes.
struct IssuedSession {
  std::string sid;
  std::string user;
  std::string jwt;             // inferllama_session
  std::string csrf;            // inferllama_csrf: random, per session, echoed as X-CSRF-Token
  std::int64_t max_age_s = 0;  // the session's remaining life: the cookies' Max-Age
};

// A session as its user sees it in the console and in an export (no token, no hash).
struct SessionInfo {
  std::string sid;
  std::int64_t created_ms = 0;
  std::int64_t refreshed_ms = 0;
  std::int64_t expires_ms = 0;
};

struct SignedIn {
  std::string user;
  std::string sid;
};

class Sessions {
 public:
  // Over the node's RocksDB. Loads every session and signing key; makes the first key. Throws
  // std::runtime_error when a record cannot be read back (or a key does not open with `box`).
  Sessions(RecordStore& records, const Clock& clock, usage::SecretBox box, SessionSettings settings = {});
  // Over `store`. A shared store (Redis) that does not answer yet is asked again when a session needs it.
  Sessions(std::unique_ptr<SessionStore> store, const Clock& clock, usage::SecretBox box,
           SessionSettings settings = {});

  IssuedSession open(const std::string& user);
  // The session whose fresh JWT this is. `csrf`: for a state-changing request, the X-CSRF-Token header and
  // the inferllama_csrf cookie, which must both be the session's token; nullopt for a read.
  struct Csrf {
    std::string_view header;
    std::string_view cookie;
  };
  std::optional<SignedIn> check(std::string_view jwt, std::optional<Csrf> csrf);
  // A new JWT for the session of `jwt` (expired or not, but signed by a key still kept), when its refresh
  // token is the session's current one and `csrf` holds. A token already traded in closes the session.
  std::variant<IssuedSession, std::string> refresh(std::string_view jwt, Csrf csrf);
  // Sign-out of the session of `jwt` (signed by a kept key, expired or not). Whether one was open.
  bool close(std::string_view jwt);
  // Every session of `user` but `except` ("" for none): a changed password, a disabled, deleted or renamed
  // user.
  std::size_t close_all(const std::string& user, const std::string& except = {});
  std::vector<SessionInfo> of_user(const std::string& user);
  bool is_open(const std::string& user, const std::string& sid);
  // The user a JWT signed by a kept key names, expired or not (whose session keys to look at after a refresh
  // failed).
  std::optional<std::string> user_of(std::string_view jwt);
  // Retention: drops the sessions past their end and the keys no kept JWT can name; makes a new signing
  // key when the current one is `key_rotation` old. Hourly, and at start.
  std::size_t expire();
  // "local", or whether the Redis holding the sessions answers.
  std::string health() { return store_->health(); }

 private:
  struct Claims {
    std::string user, sid, refresh;
    std::int64_t expires_s = 0;
  };
  std::optional<Claims> claims_of(std::string_view jwt);  // signature checked, expiry not
  IssuedSession issue(const std::string& sid, const SessionRecord& session, const std::string& refresh);
  // Reads the store's keys into keys_ (a shared store's that do not open are left out); makes the first key
  // when there is none. The caller holds write_mutex_.
  void load_keys();
  void add_key();  // the caller holds write_mutex_
  // The key `id` names: kept in memory, or (a shared store) one another node made since.
  std::optional<JwtKey> find_key(std::string_view id);
  std::optional<JwtKey> open_key(const SealedKey& sealed);
  JwtKey signing_key();
  std::int64_t signing_key_created() const;  // -1 when there is no key yet
  std::int64_t now_ms() const;

  std::unique_ptr<SessionStore> store_;
  const Clock& clock_;
  usage::SecretBox box_;
  const SessionSettings settings_;
  std::mutex write_mutex_;                             // key changes, one at a time
  mutable std::shared_mutex mutex_;                    // keys_
  std::vector<std::pair<JwtKey, std::int64_t>> keys_;  // with their creation time, oldest first
};

}  // namespace inferllama::console
