// The export of the privacy policy's rights of access and portability (GDPR Art. 15 and 20, CCPA's right
// to know): one JSON document of everything the node holds about a user, and no secret in it (no password
// hash, no key secret or hash, no session token, no passkey, no Hub token):
//
//   {"format": "inferllama-export", "version": 1, "exported": ISO time,
//    "user": {name, email, created, disabled, deleted, has_hub_token, has_password},
//    "keys": [{id, user, label, hint, created, revoked}],
//    "sessions": [{created, refreshed, expires}],                 the console's sign-ins still open
//    "usage": [{day, user, repo, requests, tokens, bytes_from_cache, bytes_from_upstream}],   every day kept
//    "repos": [{repo, type, name, private, created,
//               "branches": [{name, commit, "files": [{path, size, oid, sha256?}]}]}],   a manifest, no bytes
//    "organizations": [{name, role}],
//    "audit": [{time, event, by, network?, detail?}]}
//
// Times are ISO-8601 UTC. A file's oid is its git blob id (for an LFS file, its pointer's), sha256 the LFS
// object's. The user's own files are fetched the way they were uploaded, with the Hub's clients.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <variant>

#include "console/account_data.hpp"

namespace inferllama::console {

inline constexpr std::string_view kExportFormat = "inferllama-export";
inline constexpr int kExportVersion = 1;

// The export of user `name`, or why there is none (no such user). Throws std::runtime_error when the
// records cannot be read.
std::variant<nlohmann::json, std::string> export_account(AccountData& data, const std::string& name);

}  // namespace inferllama::console
