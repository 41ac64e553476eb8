// How users, API keys and usage rows look to the admin API and the CLI: JSON objects, and CSV for
// usage. Times are ISO-8601 UTC to the second ("2026-12-01T22:30:00Z").
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "usage/identities.hpp"
#include "usage/usage_log.hpp"

namespace inferllama::usage {

std::string iso8601_utc(std::int64_t unix_ms);

// The tokens a row's file bytes amount to: ceil(token_bytes / token_size); a token_size of 0 counts none.
std::uint64_t tokens_of(const UsageCounts& counts, std::uint64_t token_size);

// {name, email, created, disabled, has_hub_token, has_password, passkey, deleted}; never a token or password
// hash. deleted is null unless the account was deleted (its purge follows 30 days later).
nlohmann::json user_json(const User& user);
// {id, user, label, hint, created, revoked}, revoked being null while the key is valid.
nlohmann::json key_json(const ApiKey& key);
// The key's object plus "key": the secret, which is shown this once.
nlohmann::json created_key_json(const CreatedKey& created);
// {day, user, repo, requests, tokens, bytes_from_cache, bytes_from_upstream}
nlohmann::json usage_row_json(const UsageRow& row, std::uint64_t token_size);

// A field as RFC 4180 writes it: quoted (with its quotes doubled) when it holds a comma, a quote, CR or LF.
std::string csv_field(std::string_view field);
// Header `day,user,repo,requests,tokens,bytes_from_cache,bytes_from_upstream`, then one line per row;
// lines end in CRLF as RFC 4180 says.
std::string usage_csv(const std::vector<UsageRow>& rows, std::uint64_t token_size);

}  // namespace inferllama::usage
