#include "console/sessions.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "cache/hashing.hpp"
#include "inferllama/digest.hpp"
#include "usage/crypto.hpp"

namespace inferllama::console {
namespace {

using nlohmann::json;

// Reuse of this many earlier refresh tokens is recognised; an older one is merely invalid.
constexpr std::size_t kSpentKept = 16;
constexpr std::size_t kKeyIdBytes = 9;  // 12 characters of base64url

template <std::size_t N>
std::string random_text() {
  const auto bytes = usage::crypto::random_bytes<N>();
  return base64url(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

std::string sha256_hex(std::string_view text) {
  return cache::sha256(text).hex();
}

bool same(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// A key id this node could have made: anything else is not looked up in a shared store.
bool plausible_key_id(std::string_view id) {
  return id.size() == (kKeyIdBytes * 4 + 2) / 3 && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
         });
}

std::int64_t ms(std::chrono::seconds s) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(s).count();
}

}  // namespace

Sessions::Sessions(RecordStore& records, const Clock& clock, usage::SecretBox box, SessionSettings settings)
    : Sessions(make_local_session_store(records), clock, box, settings) {}

Sessions::Sessions(std::unique_ptr<SessionStore> store, const Clock& clock, usage::SecretBox box,
                   SessionSettings settings)
    : store_(std::move(store)), clock_(clock), box_(box), settings_(settings) {
  std::lock_guard writing(write_mutex_);
  try {
    load_keys();
  } catch (const SessionsUnavailable& e) {
    if (!store_->shared()) throw;
    spdlog::warn("console sessions: {}; asked again at the first sign-in", e.what());
  }
}

std::int64_t Sessions::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now().time_since_epoch()).count();
}

std::optional<JwtKey> Sessions::open_key(const SealedKey& sealed) {
  const auto secret = box_.open(sealed.sealed);
  JwtKey key{sealed.id, {}};
  if (!secret || !unhex_to(*secret, key.secret)) {
    if (!store_->shared()) {
      throw std::runtime_error("the session signing key " + sealed.id +
                               " does not open with this node's secret key file; restore that file");
    }
    spdlog::error(
        "the session signing key {} in Redis does not open with this node's secret key file: every node sharing "
        "the sessions needs the same secret_key_file; sessions signed with it are refused here",
        sealed.id);
    return std::nullopt;
  }
  return key;
}

void Sessions::load_keys() {
  std::vector<std::pair<JwtKey, std::int64_t>> loaded;
  for (const auto& sealed : store_->keys()) {
    if (auto key = open_key(sealed)) loaded.emplace_back(std::move(*key), sealed.created_ms);
  }
  std::sort(loaded.begin(), loaded.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  const bool none = loaded.empty();
  {
    std::unique_lock lock(mutex_);
    keys_ = std::move(loaded);
  }
  if (none) add_key();
}

void Sessions::add_key() {
  JwtKey key{random_text<kKeyIdBytes>(), {}};
  key.secret = usage::crypto::random_bytes<32>();
  const std::int64_t now = now_ms();
  store_->add_key({key.id, box_.seal(hex(key.secret)), now});
  std::unique_lock lock(mutex_);
  keys_.emplace_back(std::move(key), now);
}

std::optional<JwtKey> Sessions::find_key(std::string_view id) {
  {
    std::shared_lock lock(mutex_);
    for (const auto& [key, created] : keys_) {
      if (key.id == id) return key;
    }
  }
  if (!store_->shared() || !plausible_key_id(id)) return std::nullopt;
  const auto sealed = store_->key(std::string(id));
  if (!sealed) return std::nullopt;
  auto key = open_key(*sealed);
  if (!key) return std::nullopt;
  std::unique_lock lock(mutex_);
  if (std::none_of(keys_.begin(), keys_.end(), [&](const auto& k) { return k.first.id == key->id; })) {
    keys_.emplace_back(*key, sealed->created_ms);
    std::sort(keys_.begin(), keys_.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  }
  return key;
}

JwtKey Sessions::signing_key() {
  {
    std::shared_lock lock(mutex_);
    if (!keys_.empty()) return keys_.back().first;
  }
  // A shared store that did not answer at start.
  std::lock_guard writing(write_mutex_);
  {
    std::shared_lock lock(mutex_);
    if (!keys_.empty()) return keys_.back().first;
  }
  load_keys();
  std::shared_lock lock(mutex_);
  return keys_.back().first;
}

std::int64_t Sessions::signing_key_created() const {
  std::shared_lock lock(mutex_);
  return keys_.empty() ? -1 : keys_.back().second;
}

IssuedSession Sessions::issue(const std::string& sid, const SessionRecord& session, const std::string& refresh) {
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(clock_.now().time_since_epoch()).count();
  const json claims = {
      {"sub", session.user}, {"sid", sid}, {"rt", refresh}, {"iat", now}, {"exp", now + settings_.access_ttl.count()}};
  return {sid, session.user, sign_jwt(claims.dump(), signing_key()), session.csrf,
          std::max<std::int64_t>(0, (session.expires_ms - now_ms() + 999) / 1000)};
}

IssuedSession Sessions::open(const std::string& user) {
  const std::int64_t now = now_ms();
  const std::string refresh = random_text<32>();
  const SessionRecord session{
      user, sha256_hex(refresh), {}, random_text<32>(), now, now, now + ms(settings_.session_ttl)};
  const std::string sid = random_text<16>();  // 128 random bits: no two sessions meet
  const JwtKey key = signing_key();
  // A shared store that lost its keys (a Redis restarted without persistence) gets this node's back, or the
  // other nodes could not verify the session's JWTs.
  if (store_->shared()) store_->add_key({key.id, box_.seal(hex(key.secret)), signing_key_created()});
  store_->add(sid, session, settings_.max_sessions_per_user);
  return issue(sid, session, refresh);
}

std::optional<Sessions::Claims> Sessions::claims_of(std::string_view jwt) {
  std::optional<JwtKey> found;
  const auto payload = verify_jwt(jwt, [&](std::string_view id) -> const JwtKey* {
    found = find_key(id);
    return found ? &*found : nullptr;
  });
  if (!payload) return std::nullopt;
  const auto claims = json::parse(*payload, nullptr, false);
  if (!claims.is_object()) return std::nullopt;
  try {
    return Claims{claims.at("sub").get<std::string>(), claims.at("sid").get<std::string>(),
                  claims.at("rt").get<std::string>(), claims.at("exp").get<std::int64_t>()};
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

std::optional<SignedIn> Sessions::check(std::string_view jwt, std::optional<Csrf> csrf) {
  const auto claims = claims_of(jwt);
  if (!claims) return std::nullopt;
  if (std::chrono::seconds(claims->expires_s) <= clock_.now().time_since_epoch()) return std::nullopt;
  const auto session = store_->get(claims->user, claims->sid);
  if (!session || session->expires_ms <= now_ms()) return std::nullopt;  // closed, or its 30 days are over
  if (csrf && (csrf->header.empty() || !same(csrf->header, session->csrf) || !same(csrf->cookie, csrf->header))) {
    return std::nullopt;
  }
  return SignedIn{claims->user, claims->sid};
}

std::variant<IssuedSession, std::string> Sessions::refresh(std::string_view jwt, Csrf csrf) {
  const auto claims = claims_of(jwt);
  if (!claims) return std::string("no session");
  auto session = store_->get(claims->user, claims->sid);
  if (!session || session->expires_ms <= now_ms()) return std::string("the session has ended; sign in again");
  const std::string presented = sha256_hex(claims->refresh);
  // The CSRF check spares a reused token: whoever presents one, the session is over.
  if (same(presented, session->refresh_sha256) &&
      (csrf.header.empty() || !same(csrf.header, session->csrf) || !same(csrf.cookie, csrf.header))) {
    return std::string("missing or wrong X-CSRF-Token");
  }
  const std::string refresh = random_text<32>();
  const std::string next = sha256_hex(refresh);
  const std::int64_t now = now_ms();
  switch (store_->rotate(claims->user, claims->sid, presented, next, now, kSpentKept)) {
    case SessionStore::Rotation::rotated:
      session->refresh_sha256 = next;
      session->refreshed_ms = now;
      return issue(claims->sid, *session, refresh);
    case SessionStore::Rotation::reused:
      // A refresh token came back after it was traded in: two holders of one session. Ended for both.
      return std::string("this session was refreshed elsewhere with the same token; it is closed, sign in again");
    case SessionStore::Rotation::unknown:
      break;
  }
  return std::string("no session");
}

bool Sessions::close(std::string_view jwt) {
  const auto claims = claims_of(jwt);
  return claims && store_->remove(claims->user, claims->sid);
}

std::size_t Sessions::close_all(const std::string& user, const std::string& except) {
  return store_->remove_all(user, except);
}

std::vector<SessionInfo> Sessions::of_user(const std::string& user) {
  std::vector<SessionInfo> out;
  const std::int64_t now = now_ms();
  for (const auto& [sid, s] : store_->of_user(user)) {
    if (s.expires_ms > now) out.push_back({sid, s.created_ms, s.refreshed_ms, s.expires_ms});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.created_ms < b.created_ms; });
  return out;
}

bool Sessions::is_open(const std::string& user, const std::string& sid) {
  const auto session = store_->get(user, sid);
  return session && session->expires_ms > now_ms();
}

std::optional<std::string> Sessions::user_of(std::string_view jwt) {
  auto claims = claims_of(jwt);
  if (!claims) return std::nullopt;
  return claims->user;
}

std::size_t Sessions::expire() {
  std::lock_guard writing(write_mutex_);
  const std::int64_t now = now_ms();
  // A shared store's keys may have been added or retired by another node.
  if (store_->shared() || signing_key_created() < 0) load_keys();
  if (now - signing_key_created() >= ms(settings_.key_rotation)) add_key();
  // A key signs for one rotation; the JWTs it signed may be presented for refresh for a session's life.
  std::vector<std::string> retired;
  {
    std::shared_lock lock(mutex_);
    for (std::size_t i = 0;
         i + 1 < keys_.size() && keys_[i + 1].second + ms(settings_.session_ttl) + ms(settings_.access_ttl) <= now;
         ++i) {
      retired.push_back(keys_[i].first.id);
    }
  }
  store_->remove_keys(retired);
  {
    std::unique_lock lock(mutex_);
    keys_.erase(keys_.begin(), keys_.begin() + static_cast<std::ptrdiff_t>(retired.size()));
  }
  return store_->expire(now);
}

}  // namespace inferllama::console
