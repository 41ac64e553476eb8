#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "inferllama/chunk_store.hpp"
#include "inferllama/index.hpp"

namespace inferllama::cache {

struct EvictionCounters {
  std::atomic<std::uint64_t> evicted_files{0};
  std::atomic<std::uint64_t> evicted_bytes{0};
};

struct GcReport {
  std::uint64_t chunks_removed = 0;
  std::uint64_t bytes_freed = 0;
};

// Keeps the chunk store under its disk budget by forgetting the least recently used files. A file
// counts once however many paths or revisions name it; a chunk is deleted only when no stored file
// references it; files of pinned snapshots and files being read are never evicted. Files that only
// commits a branch has moved on from hold go first, once the branch's own commit is cached: a client
// asking for the branch no longer gets them.
class Evictor {
 public:
  Evictor(ChunkStore& store, Index& index, std::uint64_t budget_bytes);

  // A file was just stored (again): it is the most recently used.
  void stored(const std::string& etag);
  // A response is about to read a stored file: while the lease lives the file is not evicted. Null if
  // the file was evicted (or is being evicted): the caller fetches it again.
  std::shared_ptr<void> lease(const std::string& etag);

  // Evicts until the store is within budget (a no-op without a budget). Blocking: run it on a worker.
  void enforce();
  // Evicts until `bytes` more fit under the budget, or everything evictable is gone (a full disk).
  void make_room(std::uint64_t bytes);
  // Stored files turned out damaged (a chunk file missing), or nothing holds them any more (a hosted file
  // deleted): forget them, their chunks and their torrents.
  void forget(const std::vector<std::string>& etags,
              std::string_view why = "it is damaged; the next request fetches it again");
  // Deletes chunk files that no stored file references (left by a crash or an interrupted eviction).
  GcReport collect_garbage();

  // Called (on the evicting thread) before a stored file's chunks are released, so that whatever else
  // reads them (the BitTorrent seed) lets go of them first. Set once at start-up.
  void set_before_release(std::function<void(const std::string& etag)> hook) { before_release_ = std::move(hook); }

  // Adds the etags of files that are never evicted (hosted repos' files) to the set, and returns the bytes
  // they hold, which do not count against the budget. Set once at start-up.
  void set_keep(std::function<std::uint64_t(std::unordered_set<std::string>& kept)> keep) { keep_ = std::move(keep); }

  // The stored files in the order eviction would take them (pinned, hosted and leased ones are not in
  // it), at most `limit`: what goes next when the budget is reached. Reads the index: not on the I/O threads.
  std::vector<std::string> eviction_order(std::size_t limit);

  std::uint64_t budget() const { return budget_; }
  EvictionCounters& counters() { return counters_; }
  // Prometheus families of the store's disk: bytes used, the budget and the evictions.
  void render_metrics(std::string& out) const;

 private:
  void evict_until(std::uint64_t target_bytes);
  // Adds the files never evicted (hosted, pinned) to `kept`; the bytes of the hosted ones.
  std::uint64_t kept_files(std::unordered_set<std::string>& kept);
  // The evictable files: those only superseded commits hold first, each part least recently used first.
  std::vector<std::string> candidates(const std::unordered_set<std::string>& kept);
  // The stored files held only by commits some branch or tag named before the commit it names now, when
  // that one has a stored file (RefEntry::before), and by no commit a name points at now.
  std::unordered_set<std::string> superseded_files();
  using Readers = std::unordered_map<std::string, unsigned>;  // etag -> leases held
  void release(Readers::value_type& readers);

  ChunkStore& store_;
  Index& index_;
  const std::uint64_t budget_;
  EvictionCounters counters_;
  std::mutex evict_mutex_;  // one eviction at a time
  std::mutex mutex_;
  std::unordered_map<std::string, std::int64_t> last_used_;  // etag -> steady tick of its last use
  Readers readers_;
  std::unordered_set<std::string> gone_;  // evicted and not stored again
  std::int64_t tick_ = 0;
  std::function<void(const std::string&)> before_release_;
  std::function<std::uint64_t(std::unordered_set<std::string>&)> keep_;
};

}  // namespace inferllama::cache
