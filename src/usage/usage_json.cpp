#include "usage/usage_json.hpp"

#include <chrono>
#include <ctime>

namespace inferllama::usage {

std::string iso8601_utc(std::int64_t unix_ms) {
  const auto seconds = std::chrono::floor<std::chrono::seconds>(
      std::chrono::sys_time<std::chrono::milliseconds>(std::chrono::milliseconds(unix_ms)));
  const std::time_t t = std::chrono::system_clock::to_time_t(seconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::uint64_t tokens_of(const UsageCounts& counts, std::uint64_t token_size) {
  if (token_size == 0) return 0;
  return counts.token_bytes / token_size + (counts.token_bytes % token_size != 0 ? 1 : 0);
}

nlohmann::json user_json(const User& user) {
  return {{"name", user.name},
          {"email", user.email},
          {"created", iso8601_utc(user.created_ms)},
          {"disabled", user.disabled},
          {"has_hub_token", user.has_hub_token},
          {"has_password", user.has_password},
          {"email_verified", user.email_verified},
          {"awaiting_verification", user.awaiting_verification},
          {"admin", user.admin},
          {"passkey", user.passkey},
          {"deleted", user.deleted_ms ? nlohmann::json(iso8601_utc(*user.deleted_ms)) : nlohmann::json(nullptr)}};
}

nlohmann::json key_json(const ApiKey& key) {
  return {{"id", key.id},
          {"user", key.user},
          {"label", key.label},
          {"hint", key.hint},
          {"created", iso8601_utc(key.created_ms)},
          {"revoked", key.revoked_ms ? nlohmann::json(iso8601_utc(*key.revoked_ms)) : nlohmann::json(nullptr)}};
}

nlohmann::json created_key_json(const CreatedKey& created) {
  auto json = key_json(created.key);
  json["key"] = created.secret;
  return json;
}

nlohmann::json usage_row_json(const UsageRow& row, std::uint64_t token_size) {
  return {{"day", row.day},
          {"user", row.who.str()},
          {"repo", row.repo},
          {"requests", row.counts.requests},
          {"tokens", tokens_of(row.counts, token_size)},
          {"bytes_from_cache", row.counts.bytes_from_cache},
          {"bytes_from_upstream", row.counts.bytes_from_upstream}};
}

std::string csv_field(std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(field);
  std::string quoted = "\"";
  for (char c : field) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  quoted += '"';
  return quoted;
}

std::string usage_csv(const std::vector<UsageRow>& rows, std::uint64_t token_size) {
  std::string csv = "day,user,repo,requests,tokens,bytes_from_cache,bytes_from_upstream\r\n";
  for (const auto& row : rows) {
    csv += csv_field(row.day) + ',' + csv_field(row.who.str()) + ',' + csv_field(row.repo) + ',' +
           std::to_string(row.counts.requests) + ',' + std::to_string(tokens_of(row.counts, token_size)) + ',' +
           std::to_string(row.counts.bytes_from_cache) + ',' + std::to_string(row.counts.bytes_from_upstream) + "\r\n";
  }
  return csv;
}

}  // namespace inferllama::usage
