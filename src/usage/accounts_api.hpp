// The admin API of users, API keys and usage records, without HTTP: the server calls these once it has
// authenticated the caller (on its blocking pool: they read and write RocksDB), and the CLI calls them
// directly on a data directory no node is running on, so both print the same answers.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "inferllama/config.hpp"
#include "usage/audit_log.hpp"
#include "usage/identities.hpp"
#include "usage/usage_log.hpp"

namespace inferllama::usage {

struct ApiAnswer {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;  // errors: {"error": "..."}
};

struct Accounts {
  Identities& identities;
  UsageLog& usage;
  std::uint64_t token_size;  // bytes of file content per token, to count a row's tokens
  // A user's name is their namespace of hosted repos: why `name` may not be one (an organisation's, or a
  // Hub namespace the node has cached repos of, unless `force`), or nullopt. Given by the caller, which
  // knows the namespaces; unset, a name is refused only when a user has it.
  std::function<std::optional<std::string>(std::string_view name, bool force)> namespace_refusal = {};
  AuditLog* audit = nullptr;  // where password and key changes are recorded, when there is one
};

// Admin routes under /api/inferllama/; `path` is what follows that prefix, `query` what follows '?':
//   GET users                      {"users": [user...]}
//   POST users {name, email?, force?}   201 user; 400 when the name is invalid; 409 when it is taken, by a user
//                                  or as namespace_refusal says (force: true takes a namespace cached from the Hub)
//   POST users/{name}/disable      user (its keys are refused from the next request on)
//   POST users/{name}/enable       user
//   POST users/{name}/passkey      user, with a new passkey (the old one is refused from now on)
//   POST users/{name}/hub-token {token}   user; "" removes the token
//   POST users/{name}/admin {admin: bool}  user; an admin sees the web console's operator pages
//   POST users/{name}/password {password}   user (its "has_password" true; no hash); 400 when the password
//                                  breaks the policy (usage/password.hpp), saying how
//                                  (a deleted user's changes are 409: restore it first)
//   POST keys {user, label?}       201 the key with its secret ("key"), shown this once
//   GET keys?user=NAME             {"keys": [key...]}
//   POST keys/{id}/revoke, DELETE keys/{id}   key (revoking a revoked key answers it as it is)
// A known route asked with another method answers 405. nullopt when `path` is none of these.
std::optional<ApiAnswer> answer_admin(Accounts& accounts, std::string_view method, std::string_view path,
                                      std::string_view query, std::string_view body);

// GET /api/usage?user=NAME|anon:ADDRESS&since=YYYY-MM-DD&format=json|csv: {"usage": [row...],
// "token_size": N}, or CSV (text/csv). `viewer` is the authenticated user, who sees only their own rows
// (asking for anyone else's is a 403); nullopt is the admin, who sees every identity's or those of `user`.
ApiAnswer answer_usage(Accounts& accounts, const std::optional<std::string>& viewer, std::string_view query);

// The file of the key that seals users' Hub tokens: secret_key_file, or data_dir/secret.key when unset.
std::filesystem::path secret_key_path(const Config& config);

}  // namespace inferllama::usage
