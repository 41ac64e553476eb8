#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "hub/hub_service.hpp"
#include "inferllama/config.hpp"
#include "inferllama/index.hpp"
#include "prefetch/prefetch_table.hpp"

namespace inferllama::prefetch {

// Keeps snapshots warm: every prefetch_interval each entry's revision is asked of the Hub, and the files of
// the commit it names that the entry's patterns want and the node does not hold are fetched the way a
// client's request fetches them (HubService::resolve: one download per file, shared with clients asking
// meanwhile; the node's own token, public repos only). The commit an entry names is pinned while it is
// listed; the one before stays pinned until every wanted file of the new one is held. Entries come from
// the `prefetch` setting and from the admin API (kept in the index).
class Prefetcher {
 public:
  struct Parts {
    const Config& config;
    Index& index;
    hub::HubService& hub;        // also holds the operator's repo rules
    std::function<void()> wake;  // an entry was added: the node runs sync() soon
  };
  // Files fetched at once for one entry: the prefetch is background work beside clients' requests.
  static constexpr std::size_t kFilesAtOnce = 4;

  explicit Prefetcher(Parts parts);

  // Every entry with its last run (the run in progress: what it holds so far).
  std::vector<Entry> entries();
  // Runs every entry once, in turn; at the first run, forgets the runs (and undoes the pins) of entries no
  // longer listed. Stops early after cancel(). Blocking.
  void sync();
  // Ends a sync in progress after the files it is waiting for; does not wait.
  void cancel();

  // The admin API without HTTP, for the admin: `GET prefetch` lists the entries; `POST prefetch/add`
  // {"repo", "type", "revision", "include": [PATTERN...]} adds one or replaces its patterns; `POST
  // prefetch/remove` {"repo", "type", "revision"} removes one added at run time. The status and a JSON
  // answer. Blocking.
  std::pair<unsigned, std::string> answer(const std::string& method, const std::string& action,
                                          const std::string& body);

  // Prefetch families: entries, entries current, files and bytes wanted and held, the last run, failures.
  void render_metrics(std::string& out) const;

 private:
  void run(const Entry& entry);
  // Under mutex_: whether `key` names a listed entry, and every listed entry with its status.
  bool listed(const std::string& key) const;
  std::vector<Entry> listed_entries() const;
  // Under mutex_: whether another listed entry pinned `commit` of `repo`.
  bool pinned_for_another(const std::string& key, const RepoId& repo, const std::string& commit) const;
  // Why the entry is not fetched at all (the repo rules, a gated, private or hosted repo); "" when it may be.
  std::string refusal(const RepoId& repo);
  // Pins `commit` for the entry `key` (a commit someone pinned by hand stays theirs). Under mutex_.
  void pin(const std::string& key, EntryStatus& status, const RepoId& repo, const std::string& commit);
  // Unpins what `status` pinned but `keep`, unless another entry pinned it too; the commits unpinned. Under mutex_.
  std::vector<std::string> release(const std::string& key, EntryStatus& status, const RepoId& repo,
                                   const std::vector<std::string>& keep);
  // The statuses of entries no longer listed go, with their pins. Under mutex_.
  void forget_unlisted();
  std::pair<unsigned, std::string> add(const std::string& body);
  std::pair<unsigned, std::string> remove(const std::string& body);
  // Under mutex_: what /metrics shows, from the entries and statuses in memory.
  void update_totals();

  Parts parts_;
  PrefetchTable table_;
  std::stop_source cancel_;
  std::mutex sync_mutex_;  // one sync at a time
  bool reconciled_ = false;

  // The entries, their statuses and the pins they own; held over the index writes that change them.
  mutable std::mutex mutex_;
  std::vector<Entry> added_;
  std::map<std::string, EntryStatus> statuses_;
  std::string running_;  // the key of the entry being run, or ""
  std::int64_t last_sync_ms_ = 0;

  // What /metrics renders, on an I/O thread: a copy never locked over a disk write.
  struct Totals {
    std::size_t entries = 0;
    std::size_t current = 0;
    std::uint64_t files_wanted = 0;
    std::uint64_t files_held = 0;
    std::uint64_t bytes_wanted = 0;
    std::uint64_t bytes_held = 0;
    std::int64_t last_sync_ms = 0;
  };
  mutable std::mutex totals_mutex_;
  Totals totals_;
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<std::uint64_t> fetched_files_{0};
  std::atomic<std::uint64_t> fetched_bytes_{0};
};

}  // namespace inferllama::prefetch
