#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "inferllama/digest.hpp"
#include "inferllama/records.hpp"
#include "inferllama/repo.hpp"
#include "inferllama/scan.hpp"

namespace inferllama {

// One fixed-size piece of a stored file, named by its content (see cache/hashing.hpp).
struct ChunkRef {
  Sha256 id;
  Sha1 piece_sha1;
  std::uint32_t size = 0;
};

// The bytes of a file, stored once however many repos and revisions contain it. `etag` is the Hub's:
// the SHA-256 of an LFS file, the git blob SHA-1 of a regular one.
struct BlobEntry {
  std::string etag;
  bool lfs = false;
  std::uint64_t size = 0;
  std::uint32_t chunk_size = 0;
  std::vector<ChunkRef> chunks;
  Sha1 last_padded_sha1;  // SHA-1 of the last chunk zero-padded to chunk_size (BitTorrent v1 with pad files)
  // The file's BEP 52 `pieces root` (BitTorrent v2), set for every non-empty file. Records written before
  // the node kept it load without one: see torrent::BuildOptions::read_chunk.
  std::optional<Sha256> v2_root;
};

// A path in a repo at a commit, as the Hub described it.
struct FileEntry {
  std::string etag;
  bool lfs = false;
  std::uint64_t size = 0;
};

// Which repos a stored blob answers for. A hash is public metadata; the bytes of a gated or private
// file are not: a blob answers for a repo only once that repo's own upstream delivered the same bytes.
struct BlobScope {
  bool shared = false;        // verified for a public repo: answers for every repo (anyone can fetch it)
  std::vector<RepoId> repos;  // repos whose upstream delivered these bytes
};

// The commits a branch named before the one it names now, the newest last: eviction takes the files that only
// these hold first once the branch's commit is cached (see cache::Evictor).
inline constexpr std::size_t kRefHistory = 8;

struct RefEntry {
  std::string commit;
  std::int64_t fetched_at_ms = 0;   // when the upstream named it; 0: forgotten, asked again at the next use
  std::vector<std::string> before;  // earlier commits of the name, oldest first, at most kRefHistory
};

// The node's RocksDB index. Calls block on disk: run them on the worker pool, never an I/O thread.
class Index {
 public:
  virtual ~Index() = default;

  virtual std::optional<RefEntry> get_ref(const RepoId& repo, const std::string& rev) = 0;
  virtual void put_ref(const RepoId& repo, const std::string& rev, const RefEntry& ref) = 0;

  // Hub API responses of a commit (revision info, tree pages, ...), by a key the caller composes.
  virtual std::optional<std::string> get_meta(const std::string& key) = 0;
  virtual void put_meta(const std::string& key, const std::string& value) = 0;
  virtual void erase_meta(const std::string& key) = 0;
  // Every meta record whose key starts with `prefix`: (key, size of its value).
  virtual void list_meta(const std::string& prefix,
                         const std::function<void(const std::string&, std::size_t)>& visit) = 0;

  virtual std::optional<FileEntry> get_file(const RepoId& repo, const std::string& commit, const std::string& path) = 0;
  virtual void put_file(const RepoId& repo, const std::string& commit, const std::string& path,
                        const FileEntry& file) = 0;
  virtual std::optional<BlobEntry> get_blob(const std::string& etag) = 0;

  struct FileRef {
    RepoId repo;
    std::string commit;
    std::string path;
  };
  // Makes a downloaded blob visible in one atomic write: the blob, the file entries that asked for it,
  // one more reference on each of its chunks, and the repos it answers for (added to those recorded: a
  // blob stored already keeps its record and chunks, and gains the repos and file entries).
  virtual void commit_blob(const BlobEntry& blob, const std::vector<FileRef>& files, const BlobScope& scope) = 0;
  // Whether the stored blob `etag` may answer for `repo` (see BlobScope). Blobs stored before the node kept
  // scopes answer for the repos whose file entries named them when the index was first opened by a node
  // that keeps them (a one-time migration), and are not shared.
  virtual bool blob_serves(const std::string& etag, const RepoId& repo) = 0;

  // Every repo the stored blob `etag` answers for (see BlobScope); empty for a blob not stored.
  virtual BlobScope blob_scope(const std::string& etag) = 0;
  // A repo renamed: each of `etags` that answers for `from` answers for `to` instead, in one atomic write.
  virtual void move_blob_scopes(const std::vector<std::string>& etags, const RepoId& from, const RepoId& to) = 0;

  virtual std::uint64_t chunk_refcount(const Sha256& chunk) = 0;

  // The model-file scanner's verdict on the blob `etag` (src/scan/), nullopt when it has none. A verdict is
  // dropped with its blob; one whose blob was never committed (a crash between the two writes) still tells the
  // truth about the bytes that etag names.
  virtual std::optional<ScanVerdict> get_scan(const std::string& etag) = 0;
  virtual void put_scan(const std::string& etag, const ScanVerdict& verdict) = 0;

  // Forgets a stored blob in one atomic write: its record, its scope, its scan verdict and one reference on each
  // of its chunks.
  // Returns the chunks nothing references any more (the caller deletes their files). File entries stay:
  // a later request for such a path fetches the bytes again.
  virtual std::vector<Sha256> remove_blob(const std::string& etag) = 0;
  // Every stored blob: (etag, size).
  virtual void list_blobs(const std::function<void(const std::string&, std::uint64_t)>& visit) = 0;
  // The etags of the files of one commit.
  virtual std::vector<std::string> etags_of(const RepoId& repo, const std::string& commit) = 0;

  // Pinned snapshots are never evicted: "{type}/{repo}@{commit}".
  virtual void set_pinned(const RepoId& repo, const std::string& commit, bool pinned) = 0;
  virtual std::vector<std::pair<RepoId, std::string>> pinned() = 0;

  struct ListedFile {
    std::string repo_key;  // "model/acme/tiny-model"
    std::string commit;
    std::string path;
    FileEntry file;
    bool cached = false;  // its blob is stored
  };
  virtual void list_files(const std::function<void(const ListedFile&)>& visit) = 0;
  // Every remembered branch or tag: (repo key, name, entry). The default branch has an empty name.
  virtual void list_refs(const std::function<void(const std::string&, const std::string&, const RefEntry&)>& visit) = 0;

  // Identities and usage records, kept in column families of their own beside the cache's.
  virtual RecordStore& records() = 0;

  // A consistent copy of the whole index as of one moment, taken while it serves, into the new directory
  // `dir` (RocksDB's BackupEngine format; restore_rocksdb_index reads it). Throws std::runtime_error.
  virtual void back_up(const std::filesystem::path& dir) = 0;
};

// Opens (creating if needed) the index under `dir`. Throws std::runtime_error at start-up on failure.
std::unique_ptr<Index> open_rocksdb_index(const std::filesystem::path& dir, bool read_only = false);

// Makes the index that Index::back_up wrote to `backup` at `dir`, which must not exist yet. Throws
// std::runtime_error.
void restore_rocksdb_index(const std::filesystem::path& backup, const std::filesystem::path& dir);

}  // namespace inferllama
