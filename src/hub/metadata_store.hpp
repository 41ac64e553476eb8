#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "inferllama/index.hpp"

namespace inferllama::hub {

// The Hub's metadata answers the node keeps (revision info, tree pages, paths-info), in the index under a
// byte budget: when a new answer would go over it, the least recently used ones are dropped first.
// Recency lives in memory, one small slot per entry (a 16-byte digest of the key and a size, ~100 bytes
// with the list and map nodes); every entry is charged kEntryOverhead on top of its bytes, so the slots
// cost at most a tenth of the budget. After a restart the recency of the stored entries starts afresh.
class MetadataStore {
 public:
  static constexpr std::uint32_t kEntryOverhead = 1024;

  // Counts what the index already holds and evicts down to `budget`; drops the unbounded records of
  // older versions (keys "info|", "tree|", "paths|"). Blocking.
  MetadataStore(Index& index, std::uint64_t budget);

  // The answer stored under `key`, now the most recently used; nullopt when not stored. Blocking.
  std::optional<std::string> get(const std::string& key);
  // Stores `value` under `key` (an answer larger than the whole budget is not kept). Blocking.
  void put(const std::string& key, const std::string& value);

  std::uint64_t budget() const { return budget_; }
  std::uint64_t entries() const;
  std::uint64_t bytes() const;  // charged bytes, kEntryOverhead included
  std::uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }

 private:
  using Id = std::array<std::uint8_t, 16>;
  struct IdHash {
    std::size_t operator()(const Id& id) const noexcept;
  };
  struct Slot {
    Id id;
    std::uint64_t cost;
  };

  static Id id_of(const std::string& key);
  static std::string record_key(const Id& id);
  void erase_locked(std::unordered_map<Id, std::list<Slot>::iterator, IdHash>::iterator where);
  void evict_locked();

  Index& index_;
  const std::uint64_t budget_;
  mutable std::mutex mutex_;
  std::list<Slot> recency_;  // most recently used first
  std::unordered_map<Id, std::list<Slot>::iterator, IdHash> slots_;
  std::uint64_t bytes_ = 0;
  std::atomic<std::uint64_t> evictions_{0};
};

}  // namespace inferllama::hub
