#include "console/sessions.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "cache/hashing.hpp"
#include "inferllama/digest.hpp"
#include "usage/crypto.hpp"

namespace inferllama::console {
namespace {

using nlohmann::json;

constexpr std::string_view kSessionPrefix = "session|";
constexpr std::string_view kKeyPrefix = "jwtkey|";
// Reuse of this many earlier refresh tokens is recognised; an older one is merely invalid.
constexpr std::size_t kSpentKept = 16;

std::string session_key(const std::string& sid) {
  return std::string(kSessionPrefix) + sid;
}

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

}  // namespace

Sessions::Sessions(RecordStore& records, const Clock& clock, usage::SecretBox box, SessionSettings settings)
    : records_(records), clock_(clock), box_(box), settings_(settings) {
  records_.scan(RecordTable::sessions, kKeyPrefix, [&](std::string_view name, std::string_view value) {
    const auto record = json::parse(value, nullptr, false);
    const auto secret = record.is_object() ? box_.open(record.value("secret", "")) : std::nullopt;
    JwtKey key{std::string(name.substr(kKeyPrefix.size())), {}};
    if (!secret || !unhex_to(*secret, key.secret) || !record.contains("created_ms")) {
      throw std::runtime_error("the session signing key " + key.id +
                               " does not open with this node's secret key file; restore that file");
    }
    keys_.emplace_back(std::move(key), record["created_ms"].get<std::int64_t>());
    return true;
  });
  std::sort(keys_.begin(), keys_.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  records_.scan(RecordTable::sessions, kSessionPrefix, [&](std::string_view name, std::string_view value) {
    try {
      const auto r = json::parse(value);
      Live live{r.at("user").get<std::string>(),
                r.at("refresh").get<std::string>(),
                r.at("spent").get<std::vector<std::string>>(),
                r.at("csrf").get<std::string>(),
                r.at("created_ms").get<std::int64_t>(),
                r.at("refreshed_ms").get<std::int64_t>(),
                r.at("expires_ms").get<std::int64_t>()};
      sessions_.emplace(std::string(name.substr(kSessionPrefix.size())), std::move(live));
    } catch (const json::exception& e) {
      throw std::runtime_error("cannot read the session record " + std::string(name) + ": " + e.what());
    }
    return true;
  });
  std::lock_guard writing(write_mutex_);
  if (keys_.empty()) add_key();
}

std::int64_t Sessions::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now().time_since_epoch()).count();
}

void Sessions::save(const std::vector<RecordStore::Write>& writes) {
  records_.write(RecordTable::sessions, writes, /*sync=*/true);
}

void Sessions::add_key() {
  JwtKey key{random_text<9>(), {}};
  key.secret = usage::crypto::random_bytes<32>();
  const std::int64_t now = now_ms();
  const json record = {{"secret", box_.seal(hex(key.secret))}, {"created_ms", now}};
  save({{std::string(kKeyPrefix) + key.id, record.dump()}});
  std::unique_lock lock(mutex_);
  keys_.emplace_back(std::move(key), now);
}

const JwtKey* Sessions::key(std::string_view id) const {
  for (const auto& [key, created] : keys_) {
    if (key.id == id) return &key;
  }
  return nullptr;
}

std::string Sessions::record(const Live& live) const {
  return json{{"user", live.user},
              {"refresh", live.refresh_sha256},
              {"spent", live.spent_sha256},
              {"csrf", live.csrf},
              {"created_ms", live.created_ms},
              {"refreshed_ms", live.refreshed_ms},
              {"expires_ms", live.expires_ms}}
      .dump();
}

// The caller holds mutex_ (shared or not).
IssuedSession Sessions::issue(const std::string& sid, const Live& live, const std::string& refresh) const {
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(clock_.now().time_since_epoch()).count();
  const json claims = {
      {"sub", live.user}, {"sid", sid}, {"rt", refresh}, {"iat", now}, {"exp", now + settings_.access_ttl.count()}};
  return {sid, live.user, sign_jwt(claims.dump(), keys_.back().first), live.csrf,
          std::max<std::int64_t>(0, (live.expires_ms - now_ms() + 999) / 1000)};
}

std::variant<IssuedSession, std::string> Sessions::open(const std::string& user) {
  std::lock_guard writing(write_mutex_);
  const std::int64_t now = now_ms();
  Live live{user,
            {},
            {},
            random_text<32>(),
            now,
            now,
            now + std::chrono::duration_cast<std::chrono::milliseconds>(settings_.session_ttl).count()};
  const std::string refresh = random_text<32>();
  live.refresh_sha256 = sha256_hex(refresh);
  std::string sid;
  do {
    sid = random_text<16>();
  } while (sessions_.contains(sid));
  // Past the per-user bound, the least recently refreshed of the user's sessions closes.
  std::vector<std::pair<std::int64_t, std::string>> own;
  for (const auto& [id, s] : sessions_) {
    if (s.user == user) own.emplace_back(s.refreshed_ms, id);
  }
  std::sort(own.begin(), own.end());
  std::vector<RecordStore::Write> writes{{session_key(sid), record(live)}};
  std::size_t pushed_out = 0;
  for (; own.size() - pushed_out + 1 > settings_.max_sessions_per_user; ++pushed_out) {
    writes.push_back({session_key(own[pushed_out].second), std::nullopt});
  }
  try {
    save(writes);
  } catch (const std::exception& e) {
    return std::string("cannot save the session: ") + e.what();
  }
  std::unique_lock lock(mutex_);
  for (std::size_t i = 0; i < pushed_out; ++i) sessions_.erase(own[i].second);
  auto& stored = sessions_[sid] = std::move(live);
  return issue(sid, stored, refresh);
}

std::optional<Sessions::Claims> Sessions::claims_of(std::string_view jwt) const {
  const auto payload = verify_jwt(jwt, [this](std::string_view id) { return key(id); });
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

std::optional<SignedIn> Sessions::check(std::string_view jwt, std::optional<Csrf> csrf) const {
  std::shared_lock lock(mutex_);
  const auto claims = claims_of(jwt);
  if (!claims) return std::nullopt;
  const auto now = clock_.now().time_since_epoch();
  if (std::chrono::seconds(claims->expires_s) <= now) return std::nullopt;
  const auto it = sessions_.find(claims->sid);
  if (it == sessions_.end() || it->second.user != claims->user) return std::nullopt;
  if (csrf && (csrf->header.empty() || !same(csrf->header, it->second.csrf) || !same(csrf->cookie, csrf->header))) {
    return std::nullopt;
  }
  return SignedIn{claims->user, claims->sid};
}

std::variant<IssuedSession, std::string> Sessions::refresh(std::string_view jwt, Csrf csrf) {
  std::lock_guard writing(write_mutex_);
  std::optional<Claims> claims;
  std::unordered_map<std::string, Live>::iterator it;
  {
    std::shared_lock lock(mutex_);
    claims = claims_of(jwt);
    if (!claims) return std::string("no session");
    it = sessions_.find(claims->sid);
    if (it == sessions_.end() || it->second.user != claims->user || it->second.expires_ms <= now_ms()) {
      return std::string("the session has ended; sign in again");
    }
  }
  Live& live = it->second;
  const std::string presented = sha256_hex(claims->refresh);
  if (!same(presented, live.refresh_sha256)) {
    const bool spent =
        std::find(live.spent_sha256.begin(), live.spent_sha256.end(), presented) != live.spent_sha256.end();
    if (!spent) return std::string("no session");
    // A refresh token came back after it was traded in: two holders of one session. End it for both.
    try {
      save({{session_key(claims->sid), std::nullopt}});
    } catch (const std::exception&) {
    }
    std::unique_lock lock(mutex_);
    sessions_.erase(it);
    return std::string("this session was refreshed elsewhere with the same token; it is closed, sign in again");
  }
  if (csrf.header.empty() || !same(csrf.header, live.csrf) || !same(csrf.cookie, csrf.header)) {
    return std::string("missing or wrong X-CSRF-Token");
  }
  Live changed = live;
  changed.spent_sha256.push_back(presented);
  if (changed.spent_sha256.size() > kSpentKept) changed.spent_sha256.erase(changed.spent_sha256.begin());
  const std::string refresh = random_text<32>();
  changed.refresh_sha256 = sha256_hex(refresh);
  changed.refreshed_ms = now_ms();
  try {
    save({{session_key(claims->sid), record(changed)}});
  } catch (const std::exception& e) {
    return std::string("cannot save the session: ") + e.what();
  }
  std::unique_lock lock(mutex_);
  live = std::move(changed);
  return issue(claims->sid, live, refresh);
}

bool Sessions::close(std::string_view jwt) {
  std::lock_guard writing(write_mutex_);
  std::string sid;
  {
    std::shared_lock lock(mutex_);
    const auto claims = claims_of(jwt);
    if (!claims || !sessions_.contains(claims->sid)) return false;
    sid = claims->sid;
  }
  save({{session_key(sid), std::nullopt}});
  std::unique_lock lock(mutex_);
  return sessions_.erase(sid) > 0;
}

std::size_t Sessions::close_all(const std::string& user, const std::string& except) {
  std::lock_guard writing(write_mutex_);
  std::vector<std::string> closing;
  {
    std::shared_lock lock(mutex_);
    for (const auto& [sid, live] : sessions_) {
      if (live.user == user && sid != except) closing.push_back(sid);
    }
  }
  if (closing.empty()) return 0;
  std::vector<RecordStore::Write> writes;
  for (const auto& sid : closing) writes.push_back({session_key(sid), std::nullopt});
  save(writes);
  std::unique_lock lock(mutex_);
  for (const auto& sid : closing) sessions_.erase(sid);
  return closing.size();
}

std::vector<SessionInfo> Sessions::of_user(const std::string& user) const {
  std::vector<SessionInfo> out;
  std::shared_lock lock(mutex_);
  for (const auto& [sid, live] : sessions_) {
    if (live.user == user) out.push_back({sid, live.created_ms, live.refreshed_ms, live.expires_ms});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.created_ms < b.created_ms; });
  return out;
}

std::size_t Sessions::expire() {
  std::lock_guard writing(write_mutex_);
  const std::int64_t now = now_ms();
  const auto ms = [](std::chrono::seconds s) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(s).count();
  };
  if (now - keys_.back().second >= ms(settings_.key_rotation)) add_key();
  std::vector<std::string> ended;
  std::vector<RecordStore::Write> writes;
  {
    std::shared_lock lock(mutex_);
    for (const auto& [sid, live] : sessions_) {
      if (live.expires_ms <= now) {
        ended.push_back(sid);
        writes.push_back({session_key(sid), std::nullopt});
      }
    }
  }
  // A key signs for one rotation; the JWTs it signed may be presented for refresh for a session's life.
  std::size_t retired = 0;
  for (; retired + 1 < keys_.size() &&
         keys_[retired + 1].second + ms(settings_.session_ttl) + ms(settings_.access_ttl) <= now;
       ++retired) {
    writes.push_back({std::string(kKeyPrefix) + keys_[retired].first.id, std::nullopt});
  }
  if (writes.empty()) return 0;
  save(writes);
  std::unique_lock lock(mutex_);
  for (const auto& sid : ended) sessions_.erase(sid);
  keys_.erase(keys_.begin(), keys_.begin() + static_cast<std::ptrdiff_t>(retired));
  return ended.size();
}

bool Sessions::is_open(const std::string& sid) const {
  std::shared_lock lock(mutex_);
  return sessions_.contains(sid);
}

std::size_t Sessions::open_sessions() const {
  std::shared_lock lock(mutex_);
  return sessions_.size();
}

}  // namespace inferllama::console
