#include "usage/identities.hpp"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <tuple>

#include "cache/hashing.hpp"
#include "inferllama/digest.hpp"
#include "inferllama/user_name.hpp"
#include "usage/crypto.hpp"
#include "usage/password.hpp"

namespace inferllama::usage {
namespace {

using nlohmann::json;

// Record keys in the identities table.
constexpr std::string_view kUserPrefix = "user|";
constexpr std::string_view kKeyRecordPrefix = "key|";
constexpr std::string_view kFormerPrefix = "former|";  // former|{old name} -> {"user": name now, "moved": bool}
std::string user_record_key(const std::string& name) {
  return std::string(kUserPrefix) + name;
}
std::string former_record_key(const std::string& name) {
  return std::string(kFormerPrefix) + name;
}
std::string key_record_key(const std::string& id) {
  return std::string(kKeyRecordPrefix) + id;
}

constexpr std::size_t kSecretDigits = 43;  // 62^43 > 2^256: every 32-byte value has its own secret
constexpr std::size_t kHintSize = 8;
constexpr std::size_t kMaxEmail = 254;
constexpr std::size_t kMaxLabel = 100;
constexpr std::size_t kMaxHubToken = 4096;

// The 32 bytes as one big-endian number in base 62, most significant digit first, zero-padded.
std::string base62(std::array<unsigned char, 32> number) {
  static constexpr char kDigits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string out(kSecretDigits, '0');
  for (std::size_t i = kSecretDigits; i-- > 0;) {
    unsigned remainder = 0;  // long division of the whole number by 62
    for (auto& byte : number) {
      const unsigned value = remainder << 8 | byte;
      byte = static_cast<unsigned char>(value / 62);
      remainder = value % 62;
    }
    out[i] = kDigits[remainder];
  }
  return out;
}

bool is_valid_utf8(std::string_view text) {
  try {
    (void)json(text).dump();  // nlohmann refuses to write what it could not read back
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

// Control characters (C0 and DEL) never belong in a name shown in a terminal or a header.
bool has_control_characters(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

std::size_t code_points(std::string_view utf8) {
  return static_cast<std::size_t>(
      std::count_if(utf8.begin(), utf8.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xc0) != 0x80; }));
}

bool is_valid_email(std::string_view email) {
  if (email.size() > kMaxEmail || has_control_characters(email) || !is_valid_utf8(email)) return false;
  if (email.find(' ') != std::string_view::npos) return false;
  const auto at = email.find('@');
  return at != std::string_view::npos && at > 0 && at + 1 < email.size() &&
         email.find('@', at + 1) == std::string_view::npos;
}

bool is_valid_label(std::string_view label) {
  return !has_control_characters(label) && is_valid_utf8(label) && code_points(label) <= kMaxLabel;
}

// It goes into an Authorization header upstream: visible ASCII only.
bool is_valid_hub_token(std::string_view token) {
  return token.size() <= kMaxHubToken &&
         std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

template <class T>
T field(const json& record, const char* name) {
  return record.at(name).get<T>();
}

// What `map` holds for `name`, or "".
const std::string& value_or_empty(const std::unordered_map<std::string, std::string>& map, const std::string& name) {
  static const std::string kNone;
  auto it = map.find(name);
  return it == map.end() ? kNone : it->second;
}

// The hash of a password nobody knows, made once: checking a name without a password verifies against it.
const std::string& dummy_hash() {
  static const std::string hash = hash_password(hex(crypto::random_bytes<16>()));
  return hash;
}

}  // namespace

Identities::Identities(RecordStore& records, const Clock& clock, SecretBox box)
    : records_(records), clock_(clock), box_(box) {
  auto load = [&](std::string_view prefix, auto&& read) {
    records_.scan(RecordTable::identities, prefix, [&](std::string_view key, std::string_view value) {
      try {
        read(json::parse(value));
      } catch (const json::exception& e) {
        throw std::runtime_error("cannot read the identity record " + std::string(key) + ": " + e.what());
      }
      return true;
    });
  };
  load(kUserPrefix, [&](const json& record) {
    User user;
    user.name = field<std::string>(record, "name");
    user.email = field<std::string>(record, "email");
    user.created_ms = field<std::int64_t>(record, "created_ms");
    user.disabled = field<bool>(record, "disabled");
    user.passkey = field<std::string>(record, "passkey");
    if (record.contains("deleted_ms")) user.deleted_ms = field<std::int64_t>(record, "deleted_ms");
    user.email_verified = record.value("email_verified", false);
    user.awaiting_verification = record.value("awaiting_verification", false);
    user.admin = record.value("admin", false);
    if (record.contains("hub_token")) {
      auto token = box_.open(field<std::string>(record, "hub_token"));
      if (!token) {
        throw std::runtime_error("the Hub token of user " + user.name +
                                 " does not open with this node's secret key file: the file is not the one it "
                                 "was sealed under; restore that key file");
      }
      user.has_hub_token = true;
      hub_tokens_[user.name] = std::move(*token);
    }
    if (record.contains("password")) {  // records written before passwords have none
      user.has_password = true;
      password_hashes_[user.name] = field<std::string>(record, "password");
    }
    user_by_passkey_[user.passkey] = user.name;
    users_[user.name] = std::move(user);
  });
  load(kKeyRecordPrefix, [&](const json& record) {
    StoredKey stored;
    stored.key.id = field<std::string>(record, "id");
    stored.key.user = field<std::string>(record, "user");
    stored.key.label = field<std::string>(record, "label");
    stored.key.hint = field<std::string>(record, "hint");
    stored.key.created_ms = field<std::int64_t>(record, "created_ms");
    if (record.contains("revoked_ms")) stored.key.revoked_ms = field<std::int64_t>(record, "revoked_ms");
    stored.sha256 = field<std::string>(record, "sha256");
    key_by_hash_[stored.sha256] = stored.key.id;
    keys_[stored.key.id] = std::move(stored);
  });
  records_.scan(RecordTable::identities, kFormerPrefix, [&](std::string_view key, std::string_view value) {
    const auto record = json::parse(value, nullptr, false);
    if (!record.is_object() || !record.contains("user") || !record["user"].is_string()) {
      throw std::runtime_error("cannot read the identity record " + std::string(key));
    }
    formers_[std::string(key.substr(kFormerPrefix.size()))] = {record["user"].get<std::string>(),
                                                               record.value("moved", false)};
    return true;
  });
}

bool Identities::is_valid_user_name(std::string_view name) {
  return inferllama::is_valid_user_name(name);
}

std::int64_t Identities::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now().time_since_epoch()).count();
}

std::string Identities::user_record(const User& user, const std::string& hub_token,
                                    const std::string& password_hash) const {
  json record = {{"name", user.name},
                 {"email", user.email},
                 {"created_ms", user.created_ms},
                 {"disabled", user.disabled},
                 {"passkey", user.passkey}};
  if (user.email_verified) record["email_verified"] = true;
  if (user.awaiting_verification) record["awaiting_verification"] = true;
  if (user.admin) record["admin"] = true;
  if (!hub_token.empty()) record["hub_token"] = box_.seal(hub_token);
  if (!password_hash.empty()) record["password"] = password_hash;
  if (user.deleted_ms) record["deleted_ms"] = *user.deleted_ms;
  return record.dump();
}

std::string Identities::current_record(const User& changed) const {
  return user_record(changed, value_or_empty(hub_tokens_, changed.name),
                     value_or_empty(password_hashes_, changed.name));
}

std::string Identities::key_record(const StoredKey& stored) {
  json record = {{"id", stored.key.id},
                 {"user", stored.key.user},
                 {"label", stored.key.label},
                 {"hint", stored.key.hint},
                 {"created_ms", stored.key.created_ms},
                 {"sha256", stored.sha256}};
  if (stored.key.revoked_ms) record["revoked_ms"] = *stored.key.revoked_ms;
  return record.dump();
}

std::optional<std::string> Identities::save(const std::vector<RecordStore::Write>& writes) {
  try {
    records_.write(RecordTable::identities, writes, /*sync=*/true);
    return std::nullopt;
  } catch (const std::exception& e) {
    return std::string("cannot save the change: ") + e.what();
  }
}

std::variant<User, std::string> Identities::add_user(const std::string& name, const std::string& email,
                                                     bool awaiting_verification) {
  if (!is_valid_user_name(name)) {
    return "invalid user name \"" + name + "\": 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or a digit";
  }
  if (!email.empty() && !is_valid_email(email)) return "invalid email address \"" + email + "\"";
  std::lock_guard writing(write_mutex_);
  if (users_.contains(name)) return "user " + name + " exists";
  if (formers_.contains(name)) return "the name " + name + " was another user's and stays reserved";
  User user;
  user.name = name;
  user.email = email;
  user.created_ms = now_ms();
  user.passkey = unused_passkey();
  user.awaiting_verification = awaiting_verification;
  if (auto error = save({{user_record_key(name), user_record(user, "", "")}})) return *error;
  std::unique_lock lock(mutex_);
  user_by_passkey_[user.passkey] = name;
  users_[name] = user;
  return user;
}

std::vector<User> Identities::users() const {
  std::vector<User> out;
  {
    std::shared_lock lock(mutex_);
    for (const auto& [name, user] : users_) out.push_back(user);
  }
  std::sort(out.begin(), out.end(), [](const User& a, const User& b) { return a.name < b.name; });
  return out;
}

std::optional<User> Identities::user(const std::string& name) const {
  std::shared_lock lock(mutex_);
  auto it = users_.find(name);
  if (it == users_.end()) return std::nullopt;
  return it->second;
}

bool Identities::has_user(const std::string& name) const {
  std::shared_lock lock(mutex_);
  return users_.contains(name);
}

bool Identities::name_taken(const std::string& name) const {
  std::shared_lock lock(mutex_);
  return users_.contains(name) || formers_.contains(name);
}

std::optional<std::string> Identities::former_owner(const std::string& name) const {
  std::shared_lock lock(mutex_);
  const auto it = formers_.find(name);
  if (it == formers_.end()) return std::nullopt;
  return it->second.user;
}

std::string Identities::former_record(const Former& former) {
  return json{{"user", former.user}, {"moved", former.moved}}.dump();
}

std::optional<std::string> Identities::rename_user(const std::string& from, const std::string& to) {
  if (!is_valid_user_name(to)) {
    return "invalid user name \"" + to + "\": 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or a digit";
  }
  std::lock_guard writing(write_mutex_);
  const auto it = users_.find(from);
  if (it == users_.end()) return "unknown user " + from;
  if (it->second.deleted_ms) return "user " + from + " is deleted";
  if (users_.contains(to)) return "the name " + to + " is taken";
  // A former name is the account's own to take back, nobody else's.
  const auto taken_back = formers_.find(to);
  if (taken_back != formers_.end() && taken_back->second.user != from) return "the name " + to + " is taken";
  User renamed = it->second;
  renamed.name = to;
  // The Hub token and the password hash go with the account.
  std::vector<RecordStore::Write> writes{{user_record_key(to), user_record(renamed, value_or_empty(hub_tokens_, from),
                                                                           value_or_empty(password_hashes_, from))},
                                         {user_record_key(from), std::nullopt}};
  std::vector<StoredKey> moved_keys;
  for (const auto& [id, stored] : keys_) {
    if (stored.key.user != from) continue;
    moved_keys.push_back(stored);
    moved_keys.back().key.user = to;
    writes.push_back({key_record_key(id), key_record(moved_keys.back())});
  }
  std::unordered_map<std::string, Former> formers = formers_;
  if (taken_back != formers_.end()) {
    formers.erase(to);
    writes.push_back({former_record_key(to), std::nullopt});
  }
  for (auto& [name, former] : formers) {
    if (former.user != from) continue;
    former.user = to;  // every earlier name of the account now points at its newest
    writes.push_back({former_record_key(name), former_record(former)});
  }
  formers[from] = {to, false};
  writes.push_back({former_record_key(from), former_record(formers[from])});
  if (auto error = save(writes)) return error;
  std::unique_lock lock(mutex_);
  users_.erase(from);
  users_[to] = std::move(renamed);
  user_by_passkey_[users_[to].passkey] = to;
  for (auto& stored : moved_keys) keys_[stored.key.id] = std::move(stored);
  for (auto* map : {&hub_tokens_, &password_hashes_}) {
    if (auto node = map->extract(from)) {
      node.key() = to;
      map->insert(std::move(node));
    }
  }
  formers_ = std::move(formers);
  return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> Identities::unfinished_renames() const {
  std::vector<std::pair<std::string, std::string>> out;
  std::shared_lock lock(mutex_);
  for (const auto& [name, former] : formers_) {
    if (!former.moved) out.emplace_back(name, former.user);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> Identities::finish_rename(const std::string& former) {
  std::lock_guard writing(write_mutex_);
  const auto it = formers_.find(former);
  if (it == formers_.end()) return "no user was named " + former;
  if (it->second.moved) return std::nullopt;
  Former done = it->second;
  done.moved = true;
  if (auto error = save({{former_record_key(former), former_record(done)}})) return error;
  std::unique_lock lock(mutex_);
  it->second = done;
  return std::nullopt;
}

std::optional<std::string> Identities::disable_user(const std::string& name) {
  return set_disabled(name, true);
}

std::optional<std::string> Identities::enable_user(const std::string& name) {
  return set_disabled(name, false);
}

std::optional<std::string> Identities::set_disabled(const std::string& name, bool disabled) {
  std::lock_guard writing(write_mutex_);
  auto it = users_.find(name);
  if (it == users_.end()) return "unknown user " + name;
  if (it->second.disabled == disabled) return std::nullopt;
  User changed = it->second;
  changed.disabled = disabled;
  if (auto error = save({{user_record_key(name), current_record(changed)}})) return error;
  std::unique_lock lock(mutex_);
  it->second = std::move(changed);
  return std::nullopt;
}

std::optional<std::string> Identities::delete_user(const std::string& name) {
  std::lock_guard writing(write_mutex_);
  auto it = users_.find(name);
  if (it == users_.end()) return "unknown user " + name;
  if (it->second.deleted_ms) return std::nullopt;
  const std::int64_t now = now_ms();
  User changed = it->second;
  changed.deleted_ms = now;
  std::vector<RecordStore::Write> writes{{user_record_key(name), current_record(changed)}};
  std::vector<StoredKey> revoked;
  for (const auto& [id, stored] : keys_) {
    if (stored.key.user != name || stored.key.revoked_ms) continue;
    revoked.push_back(stored);
    revoked.back().key.revoked_ms = now;
    writes.push_back({key_record_key(id), key_record(revoked.back())});
  }
  if (auto error = save(writes)) return error;
  std::unique_lock lock(mutex_);
  it->second = std::move(changed);
  for (auto& stored : revoked) keys_[stored.key.id] = std::move(stored);
  return std::nullopt;
}

std::optional<std::string> Identities::restore_user(const std::string& name) {
  return update_user(name, [&](User& user) -> std::optional<std::string> {
    if (!user.deleted_ms) return "user " + name + " is not deleted";
    user.deleted_ms.reset();
    return std::nullopt;
  });
}

std::optional<std::string> Identities::purge_user(const std::string& name) {
  std::lock_guard writing(write_mutex_);
  auto it = users_.find(name);
  if (it == users_.end()) return "unknown user " + name;
  if (!it->second.deleted_ms) return "user " + name + " is not deleted: delete it first";
  std::vector<RecordStore::Write> writes{{user_record_key(name), std::nullopt}};
  std::vector<std::string> key_ids;
  for (const auto& [id, stored] : keys_) {
    if (stored.key.user != name) continue;
    key_ids.push_back(id);
    writes.push_back({key_record_key(id), std::nullopt});
  }
  std::vector<std::string> former_names;
  for (const auto& [former, account] : formers_) {
    if (account.user != name) continue;
    former_names.push_back(former);
    writes.push_back({former_record_key(former), std::nullopt});
  }
  if (auto error = save(writes)) return error;
  std::unique_lock lock(mutex_);
  for (const auto& former : former_names) formers_.erase(former);
  for (const auto& id : key_ids) {
    key_by_hash_.erase(keys_.at(id).sha256);
    keys_.erase(id);
  }
  user_by_passkey_.erase(it->second.passkey);
  hub_tokens_.erase(name);
  password_hashes_.erase(name);
  users_.erase(it);
  return std::nullopt;
}

std::optional<std::string> Identities::update_user(const std::string& name,
                                                   const std::function<std::optional<std::string>(User&)>& change) {
  std::lock_guard writing(write_mutex_);
  auto it = users_.find(name);
  if (it == users_.end()) return "unknown user " + name;
  User changed = it->second;
  if (auto refused = change(changed)) return refused;
  if (auto error = save({{user_record_key(name), current_record(changed)}})) return error;
  std::unique_lock lock(mutex_);
  it->second = std::move(changed);
  return std::nullopt;
}

std::optional<std::string> Identities::set_email(const std::string& name, const std::string& email, bool verified) {
  if (!email.empty() && !is_valid_email(email)) return "invalid email address \"" + email + "\"";
  return update_user(name, [&](User& user) -> std::optional<std::string> {
    user.email = email;
    user.email_verified = verified && !email.empty();
    return std::nullopt;
  });
}

std::optional<std::string> Identities::confirm_email(const std::string& name, const std::string& email) {
  return update_user(name, [&](User& user) -> std::optional<std::string> {
    if (!email.empty()) user.email = email;
    user.email_verified = true;
    user.awaiting_verification = false;
    return std::nullopt;
  });
}

std::optional<std::string> Identities::set_admin(const std::string& name, bool admin) {
  return update_user(name, [&](User& user) -> std::optional<std::string> {
    user.admin = admin;
    return std::nullopt;
  });
}

std::optional<std::string> Identities::user_with_email(std::string_view email) const {
  if (email.empty()) return std::nullopt;
  auto same = [](std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
  };
  std::shared_lock lock(mutex_);
  // Confirmed addresses only: an address someone typed in without owning it never names an account.
  for (const auto& [name, user] : users_) {
    if (user.email_verified && same(user.email, email)) return name;
  }
  return std::nullopt;
}

std::string Identities::unused_passkey() const {
  std::string passkey;
  do {
    passkey = hex(crypto::random_bytes<16>());
  } while (user_by_passkey_.contains(passkey));
  return passkey;
}

std::optional<std::string> Identities::new_passkey(const std::string& name) {
  std::lock_guard writing(write_mutex_);
  auto it = users_.find(name);
  if (it == users_.end()) return "unknown user " + name;
  User changed = it->second;
  changed.passkey = unused_passkey();
  if (auto error = save({{user_record_key(name), current_record(changed)}})) return error;
  std::unique_lock lock(mutex_);
  user_by_passkey_.erase(it->second.passkey);
  user_by_passkey_[changed.passkey] = name;
  it->second = std::move(changed);
  return std::nullopt;
}

std::optional<std::string> Identities::set_hub_token(const std::string& name, const std::string& token) {
  if (!is_valid_hub_token(token)) return std::string("invalid Hub token: visible ASCII characters only");
  if (is_node_key(token)) return std::string("invalid Hub token: that is a node key (il_...), not a Hub token");
  std::lock_guard writing(write_mutex_);
  auto it = users_.find(name);
  if (it == users_.end()) return "unknown user " + name;
  User changed = it->second;
  changed.has_hub_token = !token.empty();
  if (auto error =
          save({{user_record_key(name), user_record(changed, token, value_or_empty(password_hashes_, name))}})) {
    return error;
  }
  std::unique_lock lock(mutex_);
  it->second = std::move(changed);
  if (token.empty()) {
    hub_tokens_.erase(name);
  } else {
    hub_tokens_[name] = token;
  }
  return std::nullopt;
}

std::optional<std::string> Identities::set_password(const std::string& name, std::string_view password) {
  if (auto problem = password_problem(password, name)) return problem;
  if (!has_user(name)) return "unknown user " + name;  // before the hashing's time and memory are spent
  const std::string hash = hash_password(password);    // outside the lock: other changes need not wait for it
  std::lock_guard writing(write_mutex_);
  auto it = users_.find(name);
  if (it == users_.end()) return "unknown user " + name;
  User changed = it->second;
  changed.has_password = true;
  if (auto error = save({{user_record_key(name), user_record(changed, value_or_empty(hub_tokens_, name), hash)}})) {
    return error;
  }
  std::unique_lock lock(mutex_);
  it->second = std::move(changed);
  password_hashes_[name] = hash;
  return std::nullopt;
}

bool Identities::check_password(const std::string& name, std::string_view password) const {
  // No password that long was ever set: refused without hashing a hostile input, whoever is named.
  if (password.size() > kMaxPasswordBytes) return false;
  const std::string& dummy = dummy_hash();  // made at the first check, whether the name is known or not
  std::string stored;
  {
    std::shared_lock lock(mutex_);
    auto user = users_.find(name);
    if (user != users_.end() && user->second.active()) stored = value_or_empty(password_hashes_, name);
  }
  if (stored.empty()) {
    (void)verify_password(dummy, password);  // as long as a real check takes
    return false;
  }
  return verify_password(stored, password);
}

std::variant<CreatedKey, std::string> Identities::create_key(const std::string& user, const std::string& label) {
  if (!is_valid_label(label)) {
    return "invalid label: at most " + std::to_string(kMaxLabel) + " characters, no control characters";
  }
  std::lock_guard writing(write_mutex_);
  auto owner = users_.find(user);
  if (owner == users_.end()) return "unknown user " + user;
  if (owner->second.disabled) return "user " + user + " is disabled";
  if (owner->second.deleted_ms) return "user " + user + " is deleted";
  CreatedKey created;
  StoredKey stored;
  do {
    created.secret = std::string(kKeyPrefix) + base62(crypto::random_bytes<32>());
    stored.sha256 = cache::sha256(created.secret).hex();
  } while (key_by_hash_.contains(stored.sha256));
  do {
    stored.key.id = "key_" + hex(crypto::random_bytes<8>());
  } while (keys_.contains(stored.key.id));
  stored.key.user = user;
  stored.key.label = label;
  stored.key.hint = created.secret.substr(0, kHintSize);
  stored.key.created_ms = now_ms();
  if (auto error = save({{key_record_key(stored.key.id), key_record(stored)}})) return *error;
  created.key = stored.key;
  std::unique_lock lock(mutex_);
  key_by_hash_[stored.sha256] = stored.key.id;
  keys_[stored.key.id] = std::move(stored);
  return created;
}

std::variant<std::vector<ApiKey>, std::string> Identities::keys_of(const std::string& user) const {
  std::vector<ApiKey> out;
  {
    std::shared_lock lock(mutex_);
    if (!users_.contains(user)) return "unknown user " + user;
    for (const auto& [id, stored] : keys_) {
      if (stored.key.user == user) out.push_back(stored.key);
    }
  }
  std::sort(out.begin(), out.end(), [](const ApiKey& a, const ApiKey& b) {
    return std::tie(a.created_ms, a.id) < std::tie(b.created_ms, b.id);
  });
  return out;
}

// Revoking a revoked key changes nothing: it keeps the time of its first revocation.
std::optional<std::string> Identities::revoke_key(const std::string& id) {
  std::lock_guard writing(write_mutex_);
  auto it = keys_.find(id);
  if (it == keys_.end()) return "unknown key " + id;
  if (it->second.key.revoked_ms) return std::nullopt;
  StoredKey changed = it->second;
  changed.key.revoked_ms = now_ms();
  if (auto error = save({{key_record_key(id), key_record(changed)}})) return error;
  std::unique_lock lock(mutex_);
  it->second = std::move(changed);
  return std::nullopt;
}

std::variant<Authenticated, std::string> Identities::authenticate(std::string_view bearer) const {
  if (!is_node_key(bearer)) return std::string("not a node API key");
  if (bearer.starts_with(kHubFormPrefix)) bearer.remove_prefix(kHubFormPrefix.size() - kKeyPrefix.size());
  const std::string hash = cache::sha256(bearer).hex();
  std::shared_lock lock(mutex_);
  auto id = key_by_hash_.find(hash);
  if (id == key_by_hash_.end()) return std::string("unknown API key");
  const ApiKey& key = keys_.at(id->second).key;
  if (key.revoked_ms) return std::string("this key was revoked");
  auto user = users_.find(key.user);
  if (user == users_.end()) return std::string("unknown API key");
  if (user->second.disabled) return "user " + key.user + " is disabled";
  if (user->second.deleted_ms) return "user " + key.user + " is deleted";
  auto token = hub_tokens_.find(key.user);
  return Authenticated{key.user, token == hub_tokens_.end() ? "" : token->second};
}

std::optional<std::string> Identities::user_of_passkey(std::string_view passkey) const {
  std::shared_lock lock(mutex_);
  auto it = user_by_passkey_.find(std::string(passkey));
  if (it == user_by_passkey_.end()) return std::nullopt;
  if (!users_.at(it->second).active()) return std::nullopt;
  return it->second;
}

}  // namespace inferllama::usage
