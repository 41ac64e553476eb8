#include "console/data_export.hpp"

#include "hosting/repo_content.hpp"
#include "usage/usage_json.hpp"

namespace inferllama::console {
namespace {

using nlohmann::json;

std::int64_t to_ms(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

json file_manifest(const std::string& path, const hosting::SnapshotFile& file) {
  json entry = {{"path", path}, {"size", file.size}, {"oid", file.blob.hex()}};
  if (file.lfs) entry["sha256"] = file.lfs->hex();
  return entry;
}

json repos_of(AccountData& data, const std::string& name) {
  hosting::RepoContent content(data.records);
  json repos = json::array();
  for (const auto& hosted : data.namespaces.repos_in(name)) {
    json branches = json::array();
    for (const auto& [branch, head] : content.branches(hosted.repo)) {
      json files = json::array();
      for (const auto& [path, file] : content.snapshot(hosted.repo, head)) files.push_back(file_manifest(path, file));
      branches.push_back({{"name", branch}, {"commit", head.hex()}, {"files", std::move(files)}});
    }
    repos.push_back({{"repo", hosted.repo.key()},
                     {"type", hosted.repo.type_name()},
                     {"name", hosted.repo.name},
                     {"private", hosted.is_private},
                     {"created", usage::iso8601_utc(hosted.created * 1000)},
                     {"branches", std::move(branches)}});
  }
  return repos;
}

}  // namespace

std::variant<json, std::string> export_account(AccountData& data, const std::string& name) {
  const auto user = data.identities.user(name);
  if (!user) return "no user named \"" + name + "\"";
  json account = usage::user_json(*user);
  account.erase("passkey");  // a credential (announces, web seeds), as a key's secret is

  json keys = json::array();
  const auto listed = data.identities.keys_of(name);
  if (const auto* own = std::get_if<std::vector<usage::ApiKey>>(&listed)) {
    for (const auto& key : *own) keys.push_back(usage::key_json(key));
  }

  json sessions = json::array();
  for (const auto& session : data.sessions.of_user(name)) {
    sessions.push_back({{"created", usage::iso8601_utc(session.created_ms)},
                        {"refreshed", usage::iso8601_utc(session.refreshed_ms)},
                        {"expires", usage::iso8601_utc(session.expires_ms)}});
  }

  json usage_rows = json::array();
  for (const auto& row : data.usage.query(UserId::user(name), std::nullopt)) {
    usage_rows.push_back(usage::usage_row_json(row, data.token_size));
  }

  json organizations = json::array();
  for (const auto& [org, role] : data.namespaces.orgs_of(name)) {
    organizations.push_back({{"name", org}, {"role", hosting::role_name(role)}});
  }

  json audit = json::array();
  for (const auto& entry : data.audit.of_user(name)) {
    json event = {{"time", usage::iso8601_utc(entry.at_ms)},
                  {"event", usage::audit_event_name(entry.event)},
                  {"by", entry.by == usage::Actor::admin ? "admin" : "user"}};
    if (!entry.network.empty()) event["network"] = entry.network;
    if (!entry.detail.empty()) event["detail"] = entry.detail;
    audit.push_back(std::move(event));
  }

  return json{{"format", kExportFormat},
              {"version", kExportVersion},
              {"exported", usage::iso8601_utc(to_ms(data.clock.now()))},
              {"user", std::move(account)},
              {"keys", std::move(keys)},
              {"sessions", std::move(sessions)},
              {"usage", std::move(usage_rows)},
              {"repos", repos_of(data, name)},
              {"organizations", std::move(organizations)},
              {"audit", std::move(audit)}};
}

}  // namespace inferllama::console
