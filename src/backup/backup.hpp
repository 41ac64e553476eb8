// Backups of a node's index: the whole RocksDB index (cached repos' metadata, users, API keys, usage,
// hosted repos' objects and refs) and the secret key that seals what is sealed in it, packed into one
// file sealed under a backup key kept apart from the data (sealed_stream.hpp has the format). Chunk files
// are not in it: cached files come back from the upstream on the next miss.
//
// Inside the sealed stream the files follow each other (integers big-endian), then a 0 byte, then nothing:
//   file = u8 1 | u16 name length | name | u64 size | size bytes
// named "index/<path in the BackupEngine directory>" or "secret.key".
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "backup/sealed_stream.hpp"
#include "inferllama/index.hpp"

namespace inferllama::backup {

// Where backups go and the key they are sealed under. Both are kept apart from the data directory, so one
// copy of the data directory never holds the key to its backups.
struct Place {
  std::filesystem::path dir;
  std::filesystem::path key_file;
};

// `dir` and `key_file` made absolute and checked against `data_dir`: both given, neither inside it, and
// the key file a usable backup key (read_key). Throws std::invalid_argument saying what to do.
Place checked_place(const std::filesystem::path& data_dir, const std::filesystem::path& dir,
                    const std::filesystem::path& key_file);

// The backup key in `key_file`: 64 hex digits (a trailing newline is ignored) in a regular file no group or
// other user may read. Throws std::invalid_argument naming the file (never the key) and the fix.
Key read_key(const std::filesystem::path& key_file);
// Writes a new random key to `key_file`, mode 0600; never over an existing file, never inside `data_dir`.
// Throws std::invalid_argument saying what to do, or std::runtime_error.
void create_key(const std::filesystem::path& key_file, const std::filesystem::path& data_dir);

struct Made {
  std::filesystem::path file;
  std::uint64_t bytes = 0;
  std::chrono::system_clock::time_point time;  // of the index's copy, to the second, as the file's name says
};
// A backup of `index` (the node's, open, at data_dir/index) and the secret key file, if there is one, as
// place.dir/inferllama-backup-<UTC time>.ilbk: written under another name, synced, then renamed, mode 0600.
// The index is copied first into data_dir/backup-staging, which is removed after. A backup of the same
// second there already: this one waits for the next second.
Made make_backup(Index& index, const std::filesystem::path& data_dir, const std::filesystem::path& secret_key_file,
                 const Place& place);

// Deletes the backups make_backup named in `dir` whose time (in their name) is more than `retention` before
// `now`; no other file. Returns the deleted files.
std::vector<std::filesystem::path> expire_backups(const std::filesystem::path& dir, std::chrono::seconds retention,
                                                  std::chrono::system_clock::time_point now);
// The time of the newest backup make_backup named in `dir`; nullopt when there is none.
std::optional<std::chrono::system_clock::time_point> newest_backup(const std::filesystem::path& dir);

// What a backup file holds. Throws SealError when the key does not open it or any part of it fails.
struct Contents {
  std::uint64_t index_files = 0;
  std::uint64_t index_bytes = 0;
  std::optional<std::string> secret_key;  // the secret key file's content
};
Contents check_backup(const std::filesystem::path& file, const Key& key);

// Why `contents` cannot be restored into `data_dir` (its index, the secret key at `secret_key_file`): an
// index there, unless `force`; another secret key. Throws std::invalid_argument saying what to do.
void check_target(const Contents& contents, const std::filesystem::path& data_dir,
                  const std::filesystem::path& secret_key_file, bool force);

struct Restored {
  std::optional<std::filesystem::path> moved_aside;  // the index that was there (force)
  bool wrote_secret_key = false;
  std::uint64_t forgotten_files = 0;  // stored files whose chunks are not in data_dir/chunks
};
// Restores `file` into `data_dir` (no node may run there: the caller holds its lock), after check_target:
// unpacked into data_dir/restore-staging (every segment authenticated before the index is touched), the
// index restored beside, its stored files whose chunks data_dir/chunks lacks forgotten (the next request
// fetches them again, as after an eviction, instead of failing on a missing chunk), renamed into place, an
// index there before moved aside (force), the secret key written (0600) when there is none.
Restored restore_backup(const std::filesystem::path& file, const Key& key, const std::filesystem::path& data_dir,
                        const std::filesystem::path& secret_key_file, bool force);

}  // namespace inferllama::backup
