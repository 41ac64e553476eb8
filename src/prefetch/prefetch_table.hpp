// The prefetch list as the index keeps it: entries added at run time and every entry's last run.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/prefetch_spec.hpp"
#include "inferllama/records.hpp"

namespace inferllama::prefetch {

// How an entry stood after its last run.
struct EntryStatus {
  std::string commit;           // what its revision named at the last run; "" before the first
  std::string complete_commit;  // the last commit of which every wanted file was held
  std::vector<std::string>
      pins;  // commits of the repo pinned for it: `commit`, and `complete_commit` until the new one is
  std::uint64_t files_wanted = 0;
  std::uint64_t files_held = 0;
  std::uint64_t bytes_wanted = 0;
  std::uint64_t bytes_held = 0;
  std::int64_t checked_ms = 0;        // when the last run ended (Unix time in ms); 0: never
  std::string error;                  // why the last run left wanted files out; "" when it held them all
  std::vector<std::string> patterns;  // the entry's patterns at its last run

  // Every wanted file of the commit the revision named at the last run was held.
  bool current() const { return checked_ms != 0 && error.empty() && !commit.empty() && files_held == files_wanted; }
};

struct Entry {
  PrefetchSpec spec;
  bool configured = false;    // from the `prefetch` setting, which alone removes it
  std::int64_t added_ms = 0;  // added at run time: when (Unix time in ms)
  EntryStatus status;
};

// The `prefetch` record table: "entry|{key}" holds an entry added at run time, "status|{key}" the last run
// of any entry (key: PrefetchSpec::key()). Reads work on an index opened read-only (`inferllama ls`).
class PrefetchTable {
 public:
  explicit PrefetchTable(RecordStore& records) : records_(records) {}

  // The entries added at run time, in key order, without their status.
  std::vector<Entry> added();
  // Adds or replaces an entry (synced: an entry the admin API accepted survives a crash).
  void put_added(const Entry& entry);
  // Forgets an added entry and its status.
  void remove_added(const std::string& key);

  std::map<std::string, EntryStatus> statuses();
  void put_status(const std::string& key, const EntryStatus& status);
  void erase_status(const std::string& key);

 private:
  RecordStore& records_;
};

// An entry as the admin API answers it (and the CLI reads it back): its repo, type, revision, patterns
// ("include"), source ("config" or "added"), when it was added, its last run ("commit", "pinned",
// "files_wanted", ..., "error") and whether it is "current".
nlohmann::json entry_json(const Entry& entry);
std::optional<Entry> entry_from_json(const nlohmann::json& json);

// The repo and revision a PrefetchSpec::key() names (no patterns); nullopt for another string.
std::optional<PrefetchSpec> spec_of_key(std::string_view key);
// Whether the setting lists the entry `key` (PrefetchSpec::key()).
bool is_configured(const std::vector<PrefetchSpec>& configured, const std::string& key);
// Every entry: the configured ones in their order, then those added at run time that the setting does not
// list too (it wins), each with its last run.
std::vector<Entry> merge_entries(const std::vector<PrefetchSpec>& configured, const std::vector<Entry>& added,
                                 const std::map<std::string, EntryStatus>& statuses);
// What the index says without the node's settings (`inferllama ls`): merge_entries, then every entry with a
// recorded run that neither `configured` nor the added entries name (the node's setting came from its flags
// or environment), as a configured entry with the patterns of that run.
std::vector<Entry> recorded_entries(const std::vector<PrefetchSpec>& configured, PrefetchTable& table);

}  // namespace inferllama::prefetch
