#pragma once
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "inferllama/records.hpp"
#include "inferllama/usage.hpp"
#include "usage/secret_box.hpp"

namespace inferllama::usage {

// Node API keys look like this; any other bearer is a Hub token to pass on.
inline constexpr std::string_view kKeyPrefix = "il_";
// A node key given where only Hub tokens are taken: "hf_" before it. The Hub's own tokens are "hf_" and
// letters only, so a scanner tells the two apart by the underscore, and the node never sends either form
// upstream.
inline constexpr std::string_view kHubFormPrefix = "hf_il_";

struct User {
  std::string name;  // 1..64 of [A-Za-z0-9._-], starting with a letter or digit
  std::string email;
  std::int64_t created_ms = 0;
  bool disabled = false;
  std::string passkey;  // 32 hex characters: the user's private-tracker announce path
  bool has_hub_token = false;
  bool has_password = false;           // the Argon2id hash itself never leaves Identities
  bool email_verified = false;         // a link mailed to `email` was opened (or an admin vouched for it)
  bool awaiting_verification = false;  // signed up on the console: no sign-in before the address is confirmed
  bool admin = false;                  // sees the console's operator pages
  // When the account was deleted: refused everywhere, its name kept until it is purged (30 days later).
  std::optional<std::int64_t> deleted_ms;

  // May this account authenticate at all (keys, passkeys, passwords, the console)?
  bool active() const { return !disabled && !deleted_ms; }
};

struct ApiKey {
  std::string id;  // "key_" + 16 hex characters: names the key in lists and revocations
  std::string user;
  std::string label;
  std::string hint;  // the key's first 8 characters ("il_AbCdE"), to recognise it
  std::int64_t created_ms = 0;
  std::optional<std::int64_t> revoked_ms;
};

struct CreatedKey {
  ApiKey key;
  std::string secret;  // "il_" + 43 base62 characters (256 bits); shown once, stored only as its SHA-256
};

// A request's node key, checked.
struct Authenticated {
  std::string user;
  std::string hub_token;  // the user's own Hub token (decrypted), or "" to use the node's
};

// Users and API keys, kept in the `identities` record table and mirrored in memory so that checking a
// key on the request path takes one SHA-256 and a shared lock. Changes are written (synced) before they
// are visible; a revoked key or disabled user is refused from the next request on. Errors are values:
// the string says what is wrong, for the CLI and the admin API to show.
class Identities {
 public:
  // Loads every record. Throws std::runtime_error when a record cannot be read back.
  Identities(RecordStore& records, const Clock& clock, SecretBox box);

  // `awaiting_verification`: a console sign-up, which signs in once its address is confirmed.
  std::variant<User, std::string> add_user(const std::string& name, const std::string& email,
                                           bool awaiting_verification = false);
  // Rectification: a new address, confirmed (`verified`) or not yet.
  std::optional<std::string> set_email(const std::string& name, const std::string& email, bool verified);
  // The address was confirmed by its link: verified, and a sign-up may sign in.
  std::optional<std::string> confirm_email(const std::string& name, const std::string& email);
  std::optional<std::string> set_admin(const std::string& name, bool admin);
  // The user whose confirmed address this is (case-insensitive), if any.
  std::optional<std::string> user_with_email(std::string_view email) const;
  std::vector<User> users() const;
  std::optional<User> user(const std::string& name) const;
  bool has_user(const std::string& name) const;  // no copy: the request path asks it of every hosted name
  std::optional<std::string> disable_user(const std::string& name);
  std::optional<std::string> enable_user(const std::string& name);
  // The erasure of console/account_deletion.hpp: in one write the user is marked deleted (refused everywhere
  // from the next request on) and every key of theirs revoked; the name stays taken until purge_user.
  // Deleting a deleted user keeps the first time.
  std::optional<std::string> delete_user(const std::string& name);
  // Undoes delete_user; the keys stay revoked.
  std::optional<std::string> restore_user(const std::string& name);
  // Removes a deleted user's record and keys for good: the name is free again, and so are its former names.
  std::optional<std::string> purge_user(const std::string& name);
  // Rectification of the name, in one write: the account, its keys, its passkey, Hub token and password are
  // `to`'s from the next request on, and `from` stays reserved for the account (a former name: no user or
  // organisation may take it, its namespace stays the node's) until the account is purged; the user may
  // take it back. The rest of the account (sessions, usage, audit events, memberships, hosted repos) is
  // moved by console/account_rename.hpp, which marks the rename done (finish_rename) once all of it moved.
  // `to` must be a valid name that is no user's and no other account's former name.
  std::optional<std::string> rename_user(const std::string& from, const std::string& to);
  // The renames whose data has not all moved yet: (former name, the account's name now).
  std::vector<std::pair<std::string, std::string>> unfinished_renames() const;
  std::optional<std::string> finish_rename(const std::string& former);
  // The account's name now, when `name` is one of its former names.
  std::optional<std::string> former_owner(const std::string& name) const;
  // A user's name or an account's former name: no new user or organisation may have it.
  bool name_taken(const std::string& name) const;
  // A new passkey for the user; the old one is refused from the next announce or web seed request on
  // (torrents handed out with it must be fetched again).
  std::optional<std::string> new_passkey(const std::string& name);
  // The user's own Hub token, used upstream for their requests instead of the node's; "" removes it.
  std::optional<std::string> set_hub_token(const std::string& name, const std::string& token);
  // Replaces the user's password when it meets the policy (usage/password.hpp); hashing takes ~100 ms.
  std::optional<std::string> set_password(const std::string& name, std::string_view password);
  // Whether `password` is the password of `name`, an enabled user. An unknown or disabled user, or one
  // without a password, costs the same verification (against a dummy hash), so the time taken does not
  // tell which names exist. A hash made with older parameters is kept: setting the password replaces it.
  bool check_password(const std::string& name, std::string_view password) const;

  std::variant<CreatedKey, std::string> create_key(const std::string& user, const std::string& label);
  std::variant<std::vector<ApiKey>, std::string> keys_of(const std::string& user) const;
  std::optional<std::string> revoke_key(const std::string& id);

  // "il_...", or the same key as "hf_il_..." (the JS client refuses tokens that do not start with "hf_").
  static bool is_node_key(std::string_view bearer) {
    return bearer.starts_with(kKeyPrefix) || bearer.starts_with(kHubFormPrefix);
  }
  // An "il_" bearer: the user it names, or why it is refused (unknown, revoked, user disabled).
  std::variant<Authenticated, std::string> authenticate(std::string_view bearer) const;
  // The user whose passkey this is, when enabled.
  std::optional<std::string> user_of_passkey(std::string_view passkey) const;

  static bool is_valid_user_name(std::string_view name);

 private:
  struct StoredKey {
    ApiKey key;
    std::string sha256;  // hex, of the secret
  };
  std::string user_record(const User& user, const std::string& hub_token, const std::string& password_hash) const;
  // The record of `changed` with the user's current Hub token and password hash; the caller holds write_mutex_.
  std::string current_record(const User& changed) const;
  std::string unused_passkey() const;  // the caller holds write_mutex_
  static std::string key_record(const StoredKey& stored);
  struct Former;
  static std::string former_record(const Former& former);
  // Writes (synced); the error to show when the store refused.
  std::optional<std::string> save(const std::vector<RecordStore::Write>& writes);
  std::optional<std::string> set_disabled(const std::string& name, bool disabled);
  // Applies `change` to a copy of the user, saves it, then publishes it; the error of either step.
  std::optional<std::string> update_user(const std::string& name,
                                         const std::function<std::optional<std::string>(User&)>& change);
  std::int64_t now_ms() const;

  RecordStore& records_;
  const Clock& clock_;
  SecretBox box_;
  // One change at a time: it reads the maps, writes the store, then publishes under `mutex_`, so the
  // request path never waits for a synced write.
  std::mutex write_mutex_;
  mutable std::shared_mutex mutex_;  // the maps below
  std::unordered_map<std::string, User> users_;
  std::unordered_map<std::string, StoredKey> keys_;           // by key id
  std::unordered_map<std::string, std::string> key_by_hash_;  // SHA-256 hex of the secret -> key id
  std::unordered_map<std::string, std::string> user_by_passkey_;
  std::unordered_map<std::string, std::string> hub_tokens_;       // user -> plaintext token
  std::unordered_map<std::string, std::string> password_hashes_;  // user -> Argon2id string
  struct Former {
    std::string user;    // the account's name now
    bool moved = false;  // its data has all moved to the account's name
  };
  std::unordered_map<std::string, Former> formers_;  // former name -> account
};

}  // namespace inferllama::usage
