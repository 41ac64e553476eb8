#include "cache/evictor.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <unordered_set>
#include <vector>

#include "inferllama/metrics.hpp"
#include "inferllama/sync_point.hpp"

namespace inferllama::cache {
namespace fs = std::filesystem;

Evictor::Evictor(ChunkStore& store, Index& index, std::uint64_t budget_bytes)
    : store_(store), index_(index), budget_(budget_bytes) {}

void Evictor::stored(const std::string& etag) {
  std::lock_guard lock(mutex_);
  gone_.erase(etag);
  last_used_[etag] = ++tick_;
}

std::shared_ptr<void> Evictor::lease(const std::string& etag) {
  Readers::value_type* readers = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (gone_.contains(etag)) return nullptr;
    readers = &*readers_.try_emplace(etag, 0).first;
    ++readers->second;
    last_used_[etag] = ++tick_;
  }
  // The entry, not a copy of its etag: it stays in the map (whose nodes do not move) while it has readers.
  return std::shared_ptr<void>(this, [readers](Evictor* self) { self->release(*readers); });
}

void Evictor::release(Readers::value_type& readers) {
  std::lock_guard lock(mutex_);
  if (--readers.second == 0) readers_.erase(readers_.find(readers.first));
}

void Evictor::enforce() {
  if (budget_ > 0 && store_.bytes_stored() > budget_) evict_until(budget_);
}

void Evictor::make_room(std::uint64_t bytes) {
  const std::uint64_t limit = budget_ > 0 ? budget_ : store_.bytes_stored();
  evict_until(limit > bytes ? limit - bytes : 0);
}

std::uint64_t Evictor::kept_files(std::unordered_set<std::string>& kept) {
  const std::uint64_t kept_bytes = keep_ ? keep_(kept) : 0;
  for (const auto& [repo, commit] : index_.pinned()) {
    for (auto& etag : index_.etags_of(repo, commit)) kept.insert(std::move(etag));
  }
  return kept_bytes;
}

std::unordered_set<std::string> Evictor::superseded_files() {
  struct Name {
    RepoId repo;
    RefEntry ref;
  };
  std::vector<Name> names;
  bool any_before = false;
  index_.list_refs([&](const std::string& repo_key, const std::string&, const RefEntry& ref) {
    auto repo = parse_repo_key(repo_key);
    if (!repo) return;
    any_before = any_before || !ref.before.empty();
    names.push_back({std::move(*repo), ref});
  });
  if (!any_before) return {};
  auto has_stored_file = [&](const RepoId& repo, const std::string& commit) {
    const auto etags = index_.etags_of(repo, commit);
    return std::any_of(etags.begin(), etags.end(), [&](const std::string& etag) { return index_.get_blob(etag); });
  };
  // Commits a name points at now: what they hold is current, whatever else holds it too.
  std::set<std::pair<std::string, std::string>> current;  // repo key, commit
  for (const auto& name : names) current.emplace(name.repo.key(), name.ref.commit);
  std::set<std::pair<std::string, std::string>> superseded;
  std::unordered_set<std::string> old;
  for (const auto& name : names) {
    if (name.ref.before.empty() || !has_stored_file(name.repo, name.ref.commit)) continue;
    for (const auto& commit : name.ref.before) {
      if (current.contains({name.repo.key(), commit}) || !superseded.emplace(name.repo.key(), commit).second) continue;
      for (auto& etag : index_.etags_of(name.repo, commit)) old.insert(std::move(etag));
    }
  }
  if (old.empty()) return old;
  for (const auto& name : names) {
    for (const auto& etag : index_.etags_of(name.repo, name.ref.commit)) old.erase(etag);
  }
  return old;
}

std::vector<std::string> Evictor::candidates(const std::unordered_set<std::string>& kept) {
  std::vector<std::pair<std::int64_t, std::string>> order;  // last used, etag
  std::vector<std::string> all;
  index_.list_blobs([&](const std::string& etag, std::uint64_t) { all.push_back(etag); });
  const auto superseded = superseded_files();
  {
    std::lock_guard lock(mutex_);
    for (auto& etag : all) {
      if (kept.contains(etag) || readers_.contains(etag)) continue;
      auto used = last_used_.find(etag);
      // Files not used since start-up are the oldest.
      order.emplace_back(used == last_used_.end() ? 0 : used->second, std::move(etag));
    }
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::stable_partition(order.begin(), order.end(), [&](const auto& file) { return superseded.contains(file.second); });
  std::vector<std::string> etags;
  etags.reserve(order.size());
  for (auto& [used, etag] : order) etags.push_back(std::move(etag));
  return etags;
}

std::vector<std::string> Evictor::eviction_order(std::size_t limit) {
  std::unordered_set<std::string> kept;
  kept_files(kept);
  auto order = candidates(kept);
  if (order.size() > limit) order.resize(limit);
  return order;
}

void Evictor::evict_until(std::uint64_t target_bytes) {
  std::lock_guard evicting(evict_mutex_);
  if (store_.bytes_stored() <= target_bytes) return;

  std::unordered_set<std::string> kept;
  // Hosted files are never evicted, and do not count against the budget.
  target_bytes += kept_files(kept);
  if (store_.bytes_stored() <= target_bytes) return;
  std::vector<std::string> order = candidates(kept);
  INFERLLAMA_SYNC_POINT("Evictor::evict_until:selected");

  for (auto& etag : order) {
    if (store_.bytes_stored() <= target_bytes) break;
    {
      // Marked gone before its chunks go: a reader either holds a lease already (skip it) or gets none.
      std::lock_guard lock(mutex_);
      if (readers_.contains(etag)) continue;
      gone_.insert(etag);
    }
    INFERLLAMA_SYNC_POINT_ARG("Evictor::evict_until:marked_gone", &etag);
    auto blob = index_.get_blob(etag);
    if (!blob) continue;
    if (before_release_) before_release_(etag);
    std::uint64_t freed = 0;
    {
      std::lock_guard mutating(store_.mutation_mutex());
      for (const auto& chunk : index_.remove_blob(etag)) freed += store_.remove(chunk);
    }
    ++counters_.evicted_files;
    counters_.evicted_bytes += freed;
    spdlog::info("evicted {} ({} bytes, {} freed on disk)", etag, blob->size, freed);
    std::lock_guard lock(mutex_);
    last_used_.erase(etag);
  }
  if (store_.bytes_stored() > target_bytes) {
    spdlog::warn("the store holds {} bytes, over its target of {}: the rest is hosted, pinned or being read",
                 store_.bytes_stored(), target_bytes);
  }
}

void Evictor::forget(const std::vector<std::string>& etags, std::string_view why) {
  {
    // All are gone before any torrent stops, so no request that follows can lease one of them.
    std::lock_guard lock(mutex_);
    gone_.insert(etags.begin(), etags.end());
  }
  for (const auto& etag : etags) {
    if (before_release_) before_release_(etag);
    std::lock_guard mutating(store_.mutation_mutex());
    for (const auto& chunk : index_.remove_blob(etag)) store_.remove(chunk);
    spdlog::info("forgot the stored file {}: {}", etag, why);
  }
}

GcReport Evictor::collect_garbage() {
  std::lock_guard evicting(evict_mutex_);
  GcReport report;
  std::vector<Sha256> orphans;
  store_.for_each_chunk([&](const Sha256& id) {
    if (index_.chunk_refcount(id) == 0) orphans.push_back(id);
  });
  INFERLLAMA_SYNC_POINT("Evictor::collect_garbage:scanned");
  for (const auto& id : orphans) {
    // Re-checked: a download may have committed a file that uses this chunk since the scan.
    std::lock_guard mutating(store_.mutation_mutex());
    if (index_.chunk_refcount(id) != 0) continue;
    report.bytes_freed += store_.remove(id);
    ++report.chunks_removed;
  }
  spdlog::info("gc: removed {} unreferenced chunks, {} bytes", report.chunks_removed, report.bytes_freed);
  return report;
}

namespace {
constexpr metrics::FamilySpec kDiskUsed{"inferllama_disk_used_bytes", "gauge", "Bytes in stored chunks"};
constexpr metrics::FamilySpec kDiskBudget{"inferllama_disk_budget_bytes", "gauge",
                                          "Disk budget of the chunk store (0 = none)"};
constexpr metrics::FamilySpec kEvictions{"inferllama_evictions_total", "counter",
                                         "Files evicted to stay under the budget"};
constexpr metrics::FamilySpec kEvictedBytes{"inferllama_evicted_bytes_total", "counter",
                                            "Disk bytes freed by evictions"};
}  // namespace

void Evictor::render_metrics(std::string& out) const {
  using metrics::write_family;
  write_family(out, kDiskUsed, static_cast<double>(store_.bytes_stored()));
  write_family(out, kDiskBudget, static_cast<double>(budget_));
  write_family(out, kEvictions, static_cast<double>(counters_.evicted_files.load()));
  write_family(out, kEvictedBytes, static_cast<double>(counters_.evicted_bytes.load()));
}

}  // namespace inferllama::cache
