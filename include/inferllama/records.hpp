// Small records kept beside the cache index in the node's RocksDB: identities (users, API keys), usage
// counters, hosted namespaces and repos, console sessions and the prefetch list, each in a column family of
// its own. Keys are composed by their owner (src/usage/, src/hosting/, src/console/, src/prefetch/).
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferllama {

enum class RecordTable { identities, usage, hosting, sessions, prefetch };

class RecordStore {
 public:
  virtual ~RecordStore() = default;

  virtual std::optional<std::string> get(RecordTable table, const std::string& key) = 0;

  struct Write {
    std::string key;
    std::optional<std::string> value;  // nullopt deletes the key
  };
  // One atomic batch; `sync` waits for the write-ahead log to reach the disk.
  virtual void write(RecordTable table, const std::vector<Write>& writes, bool sync) = 0;

  // Every record whose key starts with `prefix`, in key order, until `visit` returns false.
  virtual void scan(RecordTable table, std::string_view prefix,
                    const std::function<bool(std::string_view key, std::string_view value)>& visit) = 0;

  // Deletes every key in [begin, end) in one atomic write.
  virtual void erase_range(RecordTable table, const std::string& begin, const std::string& end) = 0;
};

// Every record whose key starts with `from` moves under `to` (the rest of its key kept), in one atomic write
// (a name changed). Returns how many moved.
inline std::size_t move_prefix(RecordStore& records, RecordTable table, const std::string& from,
                               const std::string& to) {
  std::vector<RecordStore::Write> writes;
  records.scan(table, from, [&](std::string_view key, std::string_view value) {
    writes.push_back({to + std::string(key.substr(from.size())), std::string(value)});
    writes.push_back({std::string(key), std::nullopt});
    return true;
  });
  if (!writes.empty()) records.write(table, writes, /*sync=*/true);
  return writes.size() / 2;
}

}  // namespace inferllama
