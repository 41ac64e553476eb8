#include "console/session_store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <unordered_map>

namespace inferllama::console {
namespace {

using nlohmann::json;

constexpr std::string_view kSessionPrefix = "session|";
constexpr std::string_view kKeyPrefix = "jwtkey|";
constexpr auto kRedisWait = std::chrono::seconds(1);  // a console call waits no longer for Redis
constexpr std::string_view kRedisPrefix = "inferllama:session:";

std::string session_key(const std::string& sid) {
  return std::string(kSessionPrefix) + sid;
}

std::string key_key(const std::string& id) {
  return std::string(kKeyPrefix) + id;
}

std::string record_json(const SessionRecord& r) {
  return json{{"user", r.user},
              {"refresh", r.refresh_sha256},
              {"spent", r.spent_sha256},
              {"csrf", r.csrf},
              {"created_ms", r.created_ms},
              {"refreshed_ms", r.refreshed_ms},
              {"expires_ms", r.expires_ms}}
      .dump();
}

// The sessions table of the node's RocksDB, mirrored in memory: checking a cookie reads no disk. Changes
// are written (synced) before they are visible, one at a time.
class LocalSessionStore final : public SessionStore {
 public:
  explicit LocalSessionStore(RecordStore& records) : records_(records) {
    records_.scan(RecordTable::sessions, kSessionPrefix, [&](std::string_view name, std::string_view value) {
      try {
        const auto r = json::parse(value);
        sessions_.emplace(
            std::string(name.substr(kSessionPrefix.size())),
            SessionRecord{r.at("user").get<std::string>(), r.at("refresh").get<std::string>(),
                          r.at("spent").get<std::vector<std::string>>(), r.at("csrf").get<std::string>(),
                          r.at("created_ms").get<std::int64_t>(), r.at("refreshed_ms").get<std::int64_t>(),
                          r.at("expires_ms").get<std::int64_t>()});
      } catch (const json::exception& e) {
        throw std::runtime_error("cannot read the session record " + std::string(name) + ": " + e.what());
      }
      return true;
    });
  }

  std::vector<std::string> add(const std::string& sid, const SessionRecord& record, std::size_t max_per_user) override {
    std::lock_guard writing(write_mutex_);
    std::vector<std::pair<std::int64_t, std::string>> own;
    {
      std::shared_lock lock(mutex_);
      for (const auto& [id, s] : sessions_) {
        if (s.user == record.user && id != sid) own.emplace_back(s.refreshed_ms, id);
      }
    }
    std::sort(own.begin(), own.end());
    std::vector<RecordStore::Write> writes{{session_key(sid), record_json(record)}};
    std::vector<std::string> pushed_out;
    for (std::size_t i = 0; own.size() - i + 1 > max_per_user; ++i) {
      pushed_out.push_back(own[i].second);
      writes.push_back({session_key(own[i].second), std::nullopt});
    }
    save(writes);
    std::unique_lock lock(mutex_);
    for (const auto& id : pushed_out) sessions_.erase(id);
    sessions_[sid] = record;
    return pushed_out;
  }

  std::optional<SessionRecord> get(const std::string& user, const std::string& sid) override {
    std::shared_lock lock(mutex_);
    const auto it = sessions_.find(sid);
    if (it == sessions_.end() || it->second.user != user) return std::nullopt;
    return it->second;
  }

  Rotation rotate(const std::string& user, const std::string& sid, const std::string& presented,
                  const std::string& next, std::int64_t now_ms, std::size_t kept) override {
    std::lock_guard writing(write_mutex_);
    const auto found = get(user, sid);
    if (!found) return Rotation::unknown;
    if (found->refresh_sha256 != presented) {
      const auto& spent = found->spent_sha256;
      if (std::find(spent.begin(), spent.end(), presented) == spent.end()) return Rotation::unknown;
      try {
        save({{session_key(sid), std::nullopt}});
      } catch (const SessionsUnavailable& e) {
        // Closed in memory; after a restart the record would hold its family again, with the reused token spent.
        spdlog::error("cannot delete the reused session of {}: {}", user, e.what());
      }
      std::unique_lock lock(mutex_);
      sessions_.erase(sid);
      return Rotation::reused;
    }
    SessionRecord changed = *found;
    changed.spent_sha256.push_back(presented);
    if (changed.spent_sha256.size() > kept) {
      changed.spent_sha256.erase(changed.spent_sha256.begin(),
                                 changed.spent_sha256.end() - static_cast<std::ptrdiff_t>(kept));
    }
    changed.refresh_sha256 = next;
    changed.refreshed_ms = now_ms;
    save({{session_key(sid), record_json(changed)}});
    std::unique_lock lock(mutex_);
    sessions_[sid] = std::move(changed);
    return Rotation::rotated;
  }

  bool remove(const std::string& user, const std::string& sid) override {
    std::lock_guard writing(write_mutex_);
    if (!get(user, sid)) return false;
    save({{session_key(sid), std::nullopt}});
    std::unique_lock lock(mutex_);
    return sessions_.erase(sid) > 0;
  }

  std::size_t remove_all(const std::string& user, const std::string& except) override {
    return remove_where(
        [&](const std::string& sid, const SessionRecord& s) { return s.user == user && sid != except; });
  }

  std::vector<std::pair<std::string, SessionRecord>> of_user(const std::string& user) override {
    std::vector<std::pair<std::string, SessionRecord>> out;
    std::shared_lock lock(mutex_);
    for (const auto& [sid, s] : sessions_) {
      if (s.user == user) out.emplace_back(sid, s);
    }
    return out;
  }

  std::size_t expire(std::int64_t now_ms) override {
    return remove_where([&](const std::string&, const SessionRecord& s) { return s.expires_ms <= now_ms; });
  }

  std::vector<SealedKey> keys() override {
    std::vector<SealedKey> out;
    records_.scan(RecordTable::sessions, kKeyPrefix, [&](std::string_view name, std::string_view value) {
      if (auto key = key_of(name.substr(kKeyPrefix.size()), value)) out.push_back(std::move(*key));
      return true;
    });
    return out;
  }

  std::optional<SealedKey> key(const std::string& id) override {
    const auto value = records_.get(RecordTable::sessions, key_key(id));
    return value ? key_of(id, *value) : std::nullopt;
  }

  void add_key(const SealedKey& key) override {
    save({{key_key(key.id), json{{"secret", key.sealed}, {"created_ms", key.created_ms}}.dump()}});
  }

  void remove_keys(const std::vector<std::string>& ids) override {
    std::vector<RecordStore::Write> writes;
    for (const auto& id : ids) writes.push_back({key_key(id), std::nullopt});
    if (!writes.empty()) save(writes);
  }

  bool shared() const override { return false; }
  std::string health() override { return "local"; }

 private:
  static std::optional<SealedKey> key_of(std::string_view id, std::string_view value) {
    const auto record = json::parse(value, nullptr, false);
    if (!record.is_object() || !record.contains("secret") || !record["secret"].is_string() ||
        !record.contains("created_ms") || !record["created_ms"].is_number_integer()) {
      return SealedKey{std::string(id), {}, 0};  // a damaged record: a key that opens with nothing
    }
    return SealedKey{std::string(id), record["secret"].get<std::string>(), record["created_ms"].get<std::int64_t>()};
  }

  template <class Doomed>
  std::size_t remove_where(Doomed doomed) {
    std::lock_guard writing(write_mutex_);
    std::vector<std::string> closing;
    {
      std::shared_lock lock(mutex_);
      for (const auto& [sid, s] : sessions_) {
        if (doomed(sid, s)) closing.push_back(sid);
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

  void save(const std::vector<RecordStore::Write>& writes) {
    try {
      records_.write(RecordTable::sessions, writes, /*sync=*/true);
    } catch (const std::exception& e) {
      throw SessionsUnavailable(std::string("cannot save the session: ") + e.what());
    }
  }

  RecordStore& records_;
  std::mutex write_mutex_;                                   // one change at a time: store first, then the map
  std::shared_mutex mutex_;                                  // sessions_
  std::unordered_map<std::string, SessionRecord> sessions_;  // by sid
};

}  // namespace

std::unique_ptr<SessionStore> make_local_session_store(RecordStore& records) {
  return std::make_unique<LocalSessionStore>(records);
}

std::unique_ptr<SessionStore> make_session_store(const Config& config, RecordStore& records) {
  // auto: the Redis the rate limits use, when they use one.
  const bool automatic = config.session_backend == "auto";
  const std::string& url = automatic ? config.ratelimit_backend : config.session_backend;
  if (!url.starts_with("redis://")) return make_local_session_store(records);
  const char* key = automatic ? "ratelimit_backend" : "session_backend";
  usage::RedisSettings redis;
  try {
    redis = usage::RedisSettings::from_url(url);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string("invalid ") + key + ": " + e.what());
  }
  const std::string& password = automatic ? config.ratelimit_backend_password : config.session_backend_password;
  if (!password.empty()) redis.password = password;
  redis.timeout = kRedisWait;
  redis.key_prefix = kRedisPrefix;
  spdlog::info("console sessions are kept in Redis at {} (from {})", redis.endpoint(), key);
  return make_redis_session_store(redis);
}

}  // namespace inferllama::console
