#include "prefetch/prefetch_table.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>

namespace inferllama::prefetch {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kEntry = "entry|";
constexpr std::string_view kStatus = "status|";

std::string dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::vector<std::string> strings(const Json& json, const char* field) {
  std::vector<std::string> out;
  if (const auto it = json.find(field); it != json.end() && it->is_array()) {
    for (const auto& item : *it) {
      if (item.is_string()) out.push_back(item.get<std::string>());
    }
  }
  return out;
}

Json status_json(const EntryStatus& status) {
  return Json{{"commit", status.commit},         {"complete_commit", status.complete_commit},
              {"pinned", status.pins},           {"files_wanted", status.files_wanted},
              {"files_held", status.files_held}, {"bytes_wanted", status.bytes_wanted},
              {"bytes_held", status.bytes_held}, {"checked_ms", status.checked_ms},
              {"error", status.error},           {"include", status.patterns}};
}

// What names the entry: the part of entry_json that an added entry's record holds.
Json listing_json(const Entry& entry) {
  return Json{{"repo", entry.spec.repo.name},
              {"type", entry.spec.repo.type_name()},
              {"revision", entry.spec.rev},
              {"include", entry.spec.patterns},
              {"source", entry.configured ? "config" : "added"},
              {"added_ms", entry.added_ms}};
}

EntryStatus status_from_json(const Json& json) {
  EntryStatus status;
  if (!json.is_object()) return status;
  status.commit = json.value("commit", "");
  status.complete_commit = json.value("complete_commit", "");
  status.pins = strings(json, "pinned");
  status.files_wanted = json.value("files_wanted", std::uint64_t{0});
  status.files_held = json.value("files_held", std::uint64_t{0});
  status.bytes_wanted = json.value("bytes_wanted", std::uint64_t{0});
  status.bytes_held = json.value("bytes_held", std::uint64_t{0});
  status.checked_ms = json.value("checked_ms", std::int64_t{0});
  status.error = json.value("error", "");
  status.patterns = strings(json, "include");
  return status;
}

}  // namespace

std::vector<Entry> PrefetchTable::added() {
  std::vector<Entry> entries;
  records_.scan(RecordTable::prefetch, kEntry, [&](std::string_view, std::string_view value) {
    if (auto entry = entry_from_json(Json::parse(value, nullptr, false))) entries.push_back(std::move(*entry));
    return true;
  });
  return entries;
}

void PrefetchTable::put_added(const Entry& entry) {
  // Its runs are kept under their own key.
  records_.write(RecordTable::prefetch, {{std::string(kEntry) + entry.spec.key(), dump(listing_json(entry))}},
                 /*sync=*/true);
}

void PrefetchTable::remove_added(const std::string& key) {
  records_.write(RecordTable::prefetch,
                 {{std::string(kEntry) + key, std::nullopt}, {std::string(kStatus) + key, std::nullopt}},
                 /*sync=*/true);
}

std::map<std::string, EntryStatus> PrefetchTable::statuses() {
  std::map<std::string, EntryStatus> statuses;
  records_.scan(RecordTable::prefetch, kStatus, [&](std::string_view key, std::string_view value) {
    statuses.emplace(std::string(key.substr(kStatus.size())), status_from_json(Json::parse(value, nullptr, false)));
    return true;
  });
  return statuses;
}

void PrefetchTable::put_status(const std::string& key, const EntryStatus& status) {
  // Synced: the pins it lists are the prefetch's to undo after a crash.
  records_.write(RecordTable::prefetch, {{std::string(kStatus) + key, dump(status_json(status))}}, /*sync=*/true);
}

void PrefetchTable::erase_status(const std::string& key) {
  records_.write(RecordTable::prefetch, {{std::string(kStatus) + key, std::nullopt}}, /*sync=*/true);
}

Json entry_json(const Entry& entry) {
  Json json = status_json(entry.status);
  json.update(listing_json(entry));
  json["current"] = entry.status.current();
  return json;
}

std::optional<Entry> entry_from_json(const Json& json) {
  if (!json.is_object()) return std::nullopt;
  const auto type = parse_repo_type(json.value("type", ""));
  if (!type) return std::nullopt;
  Entry entry;
  entry.spec =
      PrefetchSpec{RepoId{*type, json.value("repo", "")}, json.value("revision", ""), strings(json, "include")};
  entry.configured = json.value("source", "") == "config";
  entry.added_ms = json.value("added_ms", std::int64_t{0});
  entry.status = status_from_json(json);
  return entry;
}

std::optional<PrefetchSpec> spec_of_key(std::string_view key) {
  const auto at = key.find('@');  // repo names hold no '@'
  if (at == std::string_view::npos) return std::nullopt;
  auto repo = parse_repo_key(key.substr(0, at));
  if (!repo) return std::nullopt;
  return PrefetchSpec{std::move(*repo), std::string(key.substr(at + 1)), {}};
}

bool is_configured(const std::vector<PrefetchSpec>& configured, const std::string& key) {
  return std::any_of(configured.begin(), configured.end(), [&](const PrefetchSpec& spec) { return spec.key() == key; });
}

std::vector<Entry> merge_entries(const std::vector<PrefetchSpec>& configured, const std::vector<Entry>& added,
                                 const std::map<std::string, EntryStatus>& statuses) {
  std::vector<Entry> entries;
  for (const auto& spec : configured) entries.push_back(Entry{spec, true, 0, {}});
  for (const auto& entry : added) {
    if (!is_configured(configured, entry.spec.key())) entries.push_back(entry);
  }
  for (auto& entry : entries) {
    if (auto it = statuses.find(entry.spec.key()); it != statuses.end()) entry.status = it->second;
  }
  return entries;
}

std::vector<Entry> recorded_entries(const std::vector<PrefetchSpec>& configured, PrefetchTable& table) {
  const auto statuses = table.statuses();
  auto entries = merge_entries(configured, table.added(), statuses);
  for (const auto& [key, status] : statuses) {
    const bool named = std::any_of(entries.begin(), entries.end(), [&](const Entry& e) { return e.spec.key() == key; });
    auto spec = spec_of_key(key);
    if (named || !spec) continue;
    spec->patterns = status.patterns;
    entries.push_back(Entry{std::move(*spec), true, 0, status});
  }
  return entries;
}

}  // namespace inferllama::prefetch
