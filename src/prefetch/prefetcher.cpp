#include "prefetch/prefetcher.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <variant>

#include "hub/snapshot_fetch.hpp"
#include "inferllama/metrics.hpp"
#include "prefetch/patterns.hpp"

namespace inferllama::prefetch {
namespace {

using Json = nlohmann::json;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::pair<unsigned, std::string> json_answer(unsigned status, const Json& json) {
  return {status, json.dump(-1, ' ', false, Json::error_handler_t::replace)};
}

std::pair<unsigned, std::string> error_answer(unsigned status, const std::string& message) {
  return json_answer(status, Json{{"error", message}});
}

// At most this many failures are named in an entry's error; the rest are counted.
constexpr std::size_t kNamedFailures = 3;

std::string describe_failures(const std::vector<hub::FetchFailure>& failures) {
  std::string text;
  for (std::size_t i = 0; i < failures.size() && i < kNamedFailures; ++i) {
    const auto& f = failures[i];
    text += (i ? "; " : "") + f.path + ": " + (f.refused ? hub::describe(*f.refused) : f.error);
  }
  if (failures.size() > kNamedFailures) text += "; and " + std::to_string(failures.size() - kNamedFailures) + " more";
  return text;
}

// The entry a request names: {"repo", "type", "revision"} (and "include" when `with_patterns`).
std::variant<PrefetchSpec, std::string> spec_of(const std::string& body, bool with_patterns) {
  const Json json = Json::parse(body, nullptr, false);
  if (!json.is_object() || !json.contains("repo") || !json["repo"].is_string()) {
    return std::string(R"(expected {"repo": ..., "type": ..., "revision": ...)") +
           (with_patterns ? R"(, "include": [PATTERN, ...]})" : "}");
  }
  const auto type = parse_repo_type(json.value("type", "model"));
  if (!type) return std::string("type is model, dataset or space");
  if (json.contains("revision") && !json["revision"].is_string()) return std::string("revision is a string");
  PrefetchSpec spec{RepoId{*type, json["repo"].get<std::string>()}, json.value("revision", "main"), {}};
  if (with_patterns && json.contains("include")) {
    if (!json["include"].is_array()) return std::string("include is a list of patterns");
    for (const auto& pattern : json["include"]) {
      if (!pattern.is_string()) return std::string("include is a list of patterns");
      if (spec.patterns.size() == kMaxPrefetchPatterns) break;  // check_prefetch_spec says how many may be given
      spec.patterns.push_back(pattern.get<std::string>());
    }
    if (json["include"].size() > kMaxPrefetchPatterns) {
      return "at most " + std::to_string(kMaxPrefetchPatterns) + " patterns per entry";
    }
  }
  try {
    check_prefetch_spec(spec);
  } catch (const ConfigError& e) {
    return std::string(e.what());
  }
  return spec;
}

constexpr metrics::FamilySpec kEntries{"inferllama_prefetch_entries", "gauge",
                                       "Prefetch entries (configured and added at run time)"};
constexpr metrics::FamilySpec kEntriesCurrent{
    "inferllama_prefetch_entries_current", "gauge",
    "Prefetch entries whose last run held every wanted file of the commit their revision named"};
constexpr metrics::FamilySpec kFilesWanted{"inferllama_prefetch_files_wanted", "gauge",
                                           "Files the prefetch entries want, over all entries"};
constexpr metrics::FamilySpec kFilesHeld{"inferllama_prefetch_files_held", "gauge",
                                         "Of the files the prefetch entries want, those stored"};
constexpr metrics::FamilySpec kBytesWanted{"inferllama_prefetch_bytes_wanted", "gauge",
                                           "Bytes of the files the prefetch entries want"};
constexpr metrics::FamilySpec kBytesHeld{"inferllama_prefetch_bytes_held", "gauge",
                                         "Bytes of the wanted files that are stored"};
constexpr metrics::FamilySpec kLastRun{"inferllama_prefetch_last_run_timestamp_seconds", "gauge",
                                       "When the last prefetch run over every entry ended (0: none yet)"};
constexpr metrics::FamilySpec kFailures{"inferllama_prefetch_failures_total", "counter",
                                        "Entry runs that left wanted files out (the reason is in prefetch list)"};
constexpr metrics::FamilySpec kFetchedFiles{"inferllama_prefetch_fetched_files_total", "counter",
                                            "Files the prefetch fetched (or joined a client's download of)"};
constexpr metrics::FamilySpec kFetchedBytes{"inferllama_prefetch_fetched_bytes_total", "counter",
                                            "Bytes of the files the prefetch fetched"};

}  // namespace

Prefetcher::Prefetcher(Parts parts)
    : parts_(std::move(parts)), table_(parts_.index.records()), added_(table_.added()), statuses_(table_.statuses()) {
  std::lock_guard lock(mutex_);
  update_totals();
}

void Prefetcher::update_totals() {
  Totals totals;
  for (const auto& entry : listed_entries()) {
    const auto& s = entry.status;
    ++totals.entries;
    if (s.current()) ++totals.current;
    totals.files_wanted += s.files_wanted;
    totals.files_held += s.files_held;
    totals.bytes_wanted += s.bytes_wanted;
    totals.bytes_held += s.bytes_held;
  }
  totals.last_sync_ms = last_sync_ms_;
  std::lock_guard lock(totals_mutex_);
  totals_ = totals;
}

bool Prefetcher::listed(const std::string& key) const {
  return is_configured(parts_.config.prefetch, key) ||
         std::any_of(added_.begin(), added_.end(), [&](const Entry& e) { return e.spec.key() == key; });
}

std::vector<Entry> Prefetcher::listed_entries() const {
  return merge_entries(parts_.config.prefetch, added_, statuses_);
}

std::vector<Entry> Prefetcher::entries() {
  std::lock_guard lock(mutex_);
  return listed_entries();
}

void Prefetcher::sync() {
  std::lock_guard one_at_a_time(sync_mutex_);
  if (!reconciled_) {
    std::lock_guard lock(mutex_);
    forget_unlisted();
    reconciled_ = true;
  }
  for (const auto& entry : entries()) {
    if (cancel_.stop_requested()) return;
    run(entry);
  }
  std::lock_guard lock(mutex_);
  last_sync_ms_ = now_ms();
  update_totals();
}

void Prefetcher::cancel() {
  cancel_.request_stop();
}

std::string Prefetcher::refusal(const RepoId& repo) {
  // The operator's repo rules first, as for mirrors and torrents: a repo they deny or pass through is never kept.
  if (auto refused = parts_.hub.refused(repo, /*keeping=*/true)) return hub::describe(*refused);
  if (parts_.hub.hosts(repo)) return "a repo this node hosts is always stored here";
  const auto visibility = parts_.hub.visibility(repo);
  if (!visibility.known) return "the Hub cannot be asked, and the node has never seen this repo";
  if (!visibility.open) {
    return "gated, private or missing on the Hub: the prefetch fetches public repositories only (the node's token "
           "is used for public repositories only)";
  }
  return "";
}

bool Prefetcher::pinned_for_another(const std::string& key, const RepoId& repo, const std::string& commit) const {
  const std::string prefix = repo.key() + '@';  // repo names hold no '@'
  return std::any_of(statuses_.begin(), statuses_.end(), [&](const auto& other) {
    const auto& pins = other.second.pins;
    return other.first != key && other.first.starts_with(prefix) && listed(other.first) &&
           std::find(pins.begin(), pins.end(), commit) != pins.end();
  });
}

void Prefetcher::pin(const std::string& key, EntryStatus& status, const RepoId& repo, const std::string& commit) {
  const auto pinned = parts_.index.pinned();
  const bool is_pinned = std::find(pinned.begin(), pinned.end(), std::pair{repo, commit}) != pinned.end();
  const bool ours = std::find(status.pins.begin(), status.pins.end(), commit) != status.pins.end();
  // A snapshot pinned by hand stays the operator's: unpin never undoes it.
  if (!ours && is_pinned && !pinned_for_another(key, repo, commit)) return;
  if (!is_pinned) parts_.index.set_pinned(repo, commit, true);
  if (!ours) status.pins.push_back(commit);
}

std::vector<std::string> Prefetcher::release(const std::string& key, EntryStatus& status, const RepoId& repo,
                                             const std::vector<std::string>& keep) {
  std::vector<std::string> unpinned;
  std::erase_if(status.pins, [&](const std::string& commit) {
    if (std::find(keep.begin(), keep.end(), commit) != keep.end()) return false;
    if (!pinned_for_another(key, repo, commit)) {
      parts_.index.set_pinned(repo, commit, false);
      unpinned.push_back(commit);
    }
    return true;
  });
  return unpinned;
}

void Prefetcher::forget_unlisted() {
  for (auto it = statuses_.begin(); it != statuses_.end();) {
    const std::string key = it->first;
    if (listed(key)) {
      ++it;
      continue;
    }
    EntryStatus status = std::move(it->second);
    it = statuses_.erase(it);
    if (const auto spec = spec_of_key(key)) {
      for (const auto& commit : release(key, status, spec->repo, {})) {
        spdlog::info("prefetch: {} is no longer listed; unpinned {}@{}", key, spec->repo.key(), commit);
      }
    }
    table_.erase_status(key);
  }
  update_totals();
}

void Prefetcher::run(const Entry& entry) {
  const PrefetchSpec& spec = entry.spec;
  const RepoId& repo = spec.repo;
  const std::string key = spec.key();
  EntryStatus status = entry.status;
  status.patterns = spec.patterns;
  {
    std::lock_guard lock(mutex_);
    running_ = key;
  }
  // What `prefetch list` and /metrics show while the run goes on; written to the index when it ends.
  auto publish = [&] {
    std::lock_guard lock(mutex_);
    if (!listed(key)) return;
    statuses_[key] = status;
    update_totals();
  };
  // `keep`: the pins the entry keeps (nullopt: all it has).
  auto finish = [&](std::string error, std::optional<std::vector<std::string>> keep) {
    status.checked_ms = now_ms();
    status.error = std::move(error);
    if (!status.error.empty()) {
      ++failures_;
      spdlog::warn("prefetch {}: {}", format_prefetch_spec(spec), status.error);
    }
    std::lock_guard lock(mutex_);
    running_.clear();
    if (!listed(key)) {
      release(key, status, repo, {});  // removed while it ran: nothing of it stays pinned
      return;
    }
    if (keep) {
      for (const auto& commit : release(key, status, repo, *keep)) {
        spdlog::info("prefetch {}: unpinned {}, which {} named before", format_prefetch_spec(spec), commit, spec.rev);
      }
    }
    statuses_[key] = status;
    update_totals();
    table_.put_status(key, status);
  };

  if (auto refused = refusal(repo); !refused.empty()) return finish(std::move(refused), std::vector<std::string>{});
  // The Hub's word now, not the node's memo of the branch: a moved branch is seen at this run.
  std::string stale;
  auto resolved = parts_.hub.commit_of(repo, spec.rev, &stale, hub::HubService::RefLookup::ask_hub);
  if (auto* reply = std::get_if<hub::Reply>(&resolved)) {
    return finish("cannot resolve " + spec.rev + ": " + hub::describe(*reply), std::nullopt);
  }
  const std::string commit = std::get<std::string>(resolved);
  // While the Hub cannot be asked, the last commit's listing as the node keeps it.
  auto listing = parts_.hub.snapshot_files(repo, commit, /*stored_only=*/!stale.empty());
  if (auto* reply = std::get_if<hub::Reply>(&listing)) {
    return finish("cannot list the files of " + commit + ": " + hub::describe(*reply), std::nullopt);
  }
  std::vector<hub::HubService::SnapshotEntry> files;
  status.files_wanted = status.bytes_wanted = 0;
  for (auto& f : std::get<std::vector<hub::HubService::SnapshotEntry>>(listing)) {
    if (!wanted(f.path, spec.patterns)) continue;
    ++status.files_wanted;
    status.bytes_wanted += f.file.size;
    files.push_back(std::move(f));
  }
  if (status.commit != commit) {
    spdlog::info("prefetch {}: {} names {}; {} files ({} bytes) wanted", format_prefetch_spec(spec), spec.rev, commit,
                 status.files_wanted, status.bytes_wanted);
  }
  status.commit = commit;
  auto count_held = [&] {
    status.files_held = status.bytes_held = 0;
    for (const auto& f : files) {
      if (!hub::stored_for(parts_.index, repo, f.file.etag)) continue;
      ++status.files_held;
      status.bytes_held += f.file.size;
      // Stored under another path or commit: listed at this one too, so it is pinned and `ls` shows it.
      if (!parts_.index.get_file(repo, commit, f.path)) parts_.index.put_file(repo, commit, f.path, f.file);
    }
  };
  {
    // Pinned before its files arrive: each is kept from the moment it is stored.
    std::lock_guard lock(mutex_);
    pin(key, status, repo, commit);
    if (listed(key)) statuses_[key] = status;
  }
  count_held();
  publish();
  if (!stale.empty()) return finish(stale, std::nullopt);
  if (files.empty()) return finish("no file of " + commit + " matches the patterns", std::nullopt);

  auto fetched = hub::fetch_snapshot(parts_.hub, parts_.index, repo, commit, files, kFilesAtOnce, cancel_.get_token(),
                                     [&](const hub::HubService::SnapshotEntry& f) {
                                       ++fetched_files_;
                                       fetched_bytes_ += f.file.size;
                                       ++status.files_held;
                                       status.bytes_held += f.file.size;
                                       publish();
                                     });
  count_held();
  std::string error;
  if (!fetched.failures.empty()) {
    error = describe_failures(fetched.failures);
  } else if (fetched.stopped) {
    error = "stopped before every file was fetched (the node is stopping)";
  } else if (status.files_held < status.files_wanted) {
    error = std::to_string(status.files_wanted - status.files_held) +
            " wanted files were evicted as soon as they were stored (is max_disk smaller than what is pinned?)";
  }
  if (fetched.fetched > 0) {
    spdlog::info("prefetch {}: fetched {} files; {} of {} wanted files held", format_prefetch_spec(spec),
                 fetched.fetched, status.files_held, status.files_wanted);
  }
  if (error.empty()) status.complete_commit = commit;
  // The commit before stays pinned until every wanted file of the new one is held.
  std::vector<std::string> keep{commit};
  if (!status.complete_commit.empty() && status.complete_commit != commit) keep.push_back(status.complete_commit);
  finish(std::move(error), std::move(keep));
}

std::pair<unsigned, std::string> Prefetcher::answer(const std::string& method, const std::string& action,
                                                    const std::string& body) {
  if (action == "prefetch") {
    if (method != "GET") return error_answer(405, "use GET");
    std::lock_guard lock(mutex_);
    Json list = Json::array();
    for (const auto& entry : listed_entries()) {
      Json item = entry_json(entry);
      item["running"] = entry.spec.key() == running_;
      list.push_back(std::move(item));
    }
    return json_answer(200, Json{{"entries", std::move(list)},
                                 {"interval_seconds", parts_.config.prefetch_interval.count()},
                                 {"max_added", kMaxPrefetchEntries}});
  }
  if (action != "prefetch/add" && action != "prefetch/remove") return error_answer(404, "no such route");
  if (method != "POST") return error_answer(405, "use POST");
  return action == "prefetch/add" ? add(body) : remove(body);
}

std::pair<unsigned, std::string> Prefetcher::add(const std::string& body) {
  auto parsed = spec_of(body, /*with_patterns=*/true);
  if (auto* problem = std::get_if<std::string>(&parsed)) return error_answer(400, *problem);
  PrefetchSpec& spec = std::get<PrefetchSpec>(parsed);
  const std::string key = spec.key();
  Entry entry{spec, false, now_ms(), {}};
  bool changed = true;
  {
    std::lock_guard lock(mutex_);
    if (is_configured(parts_.config.prefetch, key)) {
      return error_answer(409, format_prefetch_spec(spec) +
                                   " is in the node's prefetch setting: change its patterns there (and restart)");
    }
    auto it = std::find_if(added_.begin(), added_.end(), [&](const Entry& e) { return e.spec.key() == key; });
    if (it == added_.end() && added_.size() >= kMaxPrefetchEntries) {
      return error_answer(409, "the node keeps at most " + std::to_string(kMaxPrefetchEntries) +
                                   " entries added at run time: remove some first");
    }
    if (it != added_.end()) {
      changed = it->spec.patterns != spec.patterns;
      entry.added_ms = it->added_ms;
    }
    if (changed) table_.put_added(entry);
    if (it != added_.end()) {
      *it = entry;
    } else {
      added_.push_back(entry);
    }
    if (auto status = statuses_.find(key); status != statuses_.end()) entry.status = status->second;
    update_totals();
  }
  if (changed && parts_.wake) parts_.wake();
  Json answer = entry_json(entry);
  answer["changed"] = changed;
  return json_answer(200, answer);
}

std::pair<unsigned, std::string> Prefetcher::remove(const std::string& body) {
  auto parsed = spec_of(body, /*with_patterns=*/false);
  if (auto* problem = std::get_if<std::string>(&parsed)) return error_answer(400, *problem);
  const PrefetchSpec& spec = std::get<PrefetchSpec>(parsed);
  const std::string key = spec.key();
  std::lock_guard lock(mutex_);
  if (is_configured(parts_.config.prefetch, key)) {
    return error_answer(
        409, format_prefetch_spec(spec) + " is in the node's prefetch setting, which alone removes it (then restart)");
  }
  auto it = std::find_if(added_.begin(), added_.end(), [&](const Entry& e) { return e.spec.key() == key; });
  if (it == added_.end()) return error_answer(404, format_prefetch_spec(spec) + " is not in the prefetch list");
  added_.erase(it);
  EntryStatus status;
  if (auto found = statuses_.find(key); found != statuses_.end()) {
    status = std::move(found->second);
    statuses_.erase(found);
  }
  const auto unpinned = release(key, status, spec.repo, {});
  table_.remove_added(key);
  update_totals();
  return json_answer(200, Json{{"repo", spec.repo.name},
                               {"type", spec.repo.type_name()},
                               {"revision", spec.rev},
                               {"removed", true},
                               {"unpinned", unpinned}});
}

void Prefetcher::render_metrics(std::string& out) const {
  using metrics::write_family;
  Totals totals;
  {
    std::lock_guard lock(totals_mutex_);
    totals = totals_;
  }
  write_family(out, kEntries, static_cast<double>(totals.entries));
  write_family(out, kEntriesCurrent, static_cast<double>(totals.current));
  write_family(out, kFilesWanted, static_cast<double>(totals.files_wanted));
  write_family(out, kFilesHeld, static_cast<double>(totals.files_held));
  write_family(out, kBytesWanted, static_cast<double>(totals.bytes_wanted));
  write_family(out, kBytesHeld, static_cast<double>(totals.bytes_held));
  write_family(out, kLastRun, static_cast<double>(totals.last_sync_ms) / 1000.0);
  write_family(out, kFailures, static_cast<double>(failures_.load()));
  write_family(out, kFetchedFiles, static_cast<double>(fetched_files_.load()));
  write_family(out, kFetchedBytes, static_cast<double>(fetched_bytes_.load()));
}

}  // namespace inferllama::prefetch
