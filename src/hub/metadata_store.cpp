#include "hub/metadata_store.hpp"

#include <spdlog/spdlog.h>

#include <cstring>
#include <vector>

#include "cache/hashing.hpp"

namespace inferllama::hub {
namespace {

constexpr std::string_view kRecordPrefix = "mcache|";
// Records of versions that kept every answer forever, under the raw query or body digest.
constexpr std::string_view kLegacyPrefixes[] = {"info|", "tree|", "paths|"};

// A record holds its full key before the answer, so that two keys whose digests collide never share one.
std::string encode_record(const std::string& key, const std::string& value) {
  std::string record;
  const auto length = static_cast<std::uint32_t>(key.size());
  record.resize(sizeof length);
  std::memcpy(record.data(), &length, sizeof length);
  record += key;
  record += value;
  return record;
}

std::optional<std::string> decode_record(const std::string& key, const std::string& record) {
  std::uint32_t length = 0;
  if (record.size() < sizeof length) return std::nullopt;
  std::memcpy(&length, record.data(), sizeof length);
  if (record.size() - sizeof length < length || record.compare(sizeof length, length, key) != 0) return std::nullopt;
  return record.substr(sizeof length + length);
}

// Only the lower-case names record_key writes: anything else is no record of this store.
std::optional<std::array<std::uint8_t, 16>> parse_id(std::string_view hex) {
  std::array<std::uint8_t, 16> id{};
  if (hex.find_first_of("ABCDEF") != std::string_view::npos || !unhex_to(hex, id)) return std::nullopt;
  return id;
}

}  // namespace

std::size_t MetadataStore::IdHash::operator()(const Id& id) const noexcept {
  std::size_t h = 0;
  std::memcpy(&h, id.data(), sizeof h);  // already a digest
  return h;
}

MetadataStore::Id MetadataStore::id_of(const std::string& key) {
  const auto digest = cache::sha256(key);
  Id id{};
  std::memcpy(id.data(), digest.raw().data(), id.size());
  return id;
}

std::string MetadataStore::record_key(const Id& id) {
  return std::string(kRecordPrefix) + hex(id);
}

MetadataStore::MetadataStore(Index& index, std::uint64_t budget) : index_(index), budget_(budget) {
  std::vector<std::string> legacy;
  for (auto prefix : kLegacyPrefixes) {
    index_.list_meta(std::string(prefix), [&](const std::string& key, std::size_t) { legacy.push_back(key); });
  }
  for (const auto& key : legacy) index_.erase_meta(key);
  if (!legacy.empty()) spdlog::info("metadata: dropped {} answers stored without a budget", legacy.size());

  std::vector<std::string> unreadable;
  index_.list_meta(std::string(kRecordPrefix), [&](const std::string& key, std::size_t size) {
    auto id = parse_id(std::string_view(key).substr(kRecordPrefix.size()));
    if (!id || slots_.contains(*id)) {
      unreadable.push_back(key);
      return;
    }
    const std::uint64_t cost = key.size() + size + kEntryOverhead;
    recency_.push_back(Slot{*id, cost});
    slots_.emplace(*id, std::prev(recency_.end()));
    bytes_ += cost;
  });
  for (const auto& key : unreadable) index_.erase_meta(key);
  std::lock_guard lock(mutex_);
  evict_locked();
}

std::uint64_t MetadataStore::entries() const {
  std::lock_guard lock(mutex_);
  return slots_.size();
}

std::uint64_t MetadataStore::bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

std::optional<std::string> MetadataStore::get(const std::string& key) {
  const Id id = id_of(key);
  {
    std::lock_guard lock(mutex_);
    if (!slots_.contains(id)) return std::nullopt;  // nothing to read from disk
  }
  auto record = index_.get_meta(record_key(id));
  std::optional<std::string> value;
  if (record) value = decode_record(key, *record);
  std::lock_guard lock(mutex_);
  auto where = slots_.find(id);
  if (where == slots_.end()) return value;  // evicted meanwhile; the answer read is still good
  if (!value) {
    // Gone from the index, or a digest collision with another key: this key has no answer stored.
    if (!record) erase_locked(where);
    return std::nullopt;
  }
  recency_.splice(recency_.begin(), recency_, where->second);
  return value;
}

void MetadataStore::put(const std::string& key, const std::string& value) {
  const Id id = id_of(key);
  const std::string name = record_key(id);
  const std::string record = encode_record(key, value);
  const std::uint64_t cost = name.size() + record.size() + kEntryOverhead;
  std::lock_guard lock(mutex_);
  if (cost > budget_) return;
  // Written under the lock, so that an eviction of the same key cannot delete the new record.
  index_.put_meta(name, record);
  if (auto where = slots_.find(id); where != slots_.end()) {
    bytes_ -= where->second->cost;
    where->second->cost = cost;
    recency_.splice(recency_.begin(), recency_, where->second);
  } else {
    recency_.push_front(Slot{id, cost});
    slots_.emplace(id, recency_.begin());
  }
  bytes_ += cost;
  evict_locked();
}

void MetadataStore::erase_locked(std::unordered_map<Id, std::list<Slot>::iterator, IdHash>::iterator where) {
  bytes_ -= where->second->cost;
  recency_.erase(where->second);
  slots_.erase(where);
}

void MetadataStore::evict_locked() {
  while (bytes_ > budget_ && !recency_.empty()) {
    const Id oldest = recency_.back().id;
    index_.erase_meta(record_key(oldest));
    erase_locked(slots_.find(oldest));
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace inferllama::hub
