#pragma once
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "hub/hub_service.hpp"
#include "inferllama/chunk_store.hpp"
#include "inferllama/index.hpp"
#include "torrent/torrent.hpp"

namespace inferllama::torrent {

// Where a torrent's clients find the node: written into the .torrent and the magnet link, never into
// the info dict (so every node holding a snapshot shares one info-hash).
struct NodeLinks {
  std::string base;          // "http://node:8080": HTTP announce, web seed
  std::string udp_announce;  // "udp://node:6969/announce", or "" without a UDP tracker
  // A user's passkey when the node is private: the torrent announces to /announce/{passkey} (HTTP only)
  // and names its web seed under /p/{passkey}/, since BitTorrent clients send no credentials.
  std::string passkey;
};

// One torrent the node serves: a whole snapshot, or one file of it.
struct SnapshotTorrent {
  RepoId repo;
  std::string commit;
  std::string path;  // the file of a single-file torrent; "" for the snapshot
  Format format = Format::v1;
  std::shared_ptr<const Torrent> torrent;  // built without links: the info dict, hashes and pieces
  // What it was built from: each file's path and stored blob.
  std::shared_ptr<const std::vector<std::pair<std::string, BlobEntry>>> contents;
};

// Turns cached snapshots into torrents and keeps the seed in step with the store: a snapshot is
// completed through the cache before its torrent is built, a torrent is seeded as soon as it is built,
// forgotten before any of its files is evicted, and built again at start-up for everything seeded before.
class SnapshotTorrents {
 public:
  struct Hooks {
    std::function<void(const SnapshotTorrent&)> seed;    // start seeding and tracking
    std::function<void(const SnapshotTorrent&)> unseed;  // stop; returns once no read of its chunks starts
  };
  SnapshotTorrents(const ChunkStore& store, Index& index, hub::HubService& hub, Hooks hooks);

  struct Request {
    RepoId repo;
    std::string rev;
    std::string path;  // non-empty: a single-file torrent of this file
    Format format = Format::v1;
    bool wait = true;  // false: a snapshot not fully cached is a 409 instead of being completed first
  };
  // The torrent of a public snapshot, completing it through the cache first. Blocking (downloads).
  std::variant<SnapshotTorrent, hub::Reply> get(const Request& request);

  // The .torrent file and the magnet URI that point clients at this node.
  std::string metainfo(const SnapshotTorrent& torrent, const NodeLinks& links);
  std::string magnet(const SnapshotTorrent& torrent, const NodeLinks& links);

  // Seeds again every torrent seeded before a restart whose files are all still stored. Blocking.
  void restore();
  // Seeds the torrent of every snapshot of a public repo whose files are all stored (by the tree the node
  // keeps for it) and that is not seeded yet: a whole snapshot, BitTorrent v1 with pad files. Asks the
  // Hub nothing. Blocking; returns how many it started.
  std::size_t seed_cached();
  // A stored file is about to be evicted or forgotten: every torrent holding it stops first.
  void release(const std::string& etag);
  // Stops the torrents of every seeded repo the Hub now calls gated or private. Blocking; run it now
  // and then (the node does every few minutes).
  void recheck_visibility();
  // Stops the torrents of every seeded repo the operator's rules now deny or pass through (run after the
  // rules changed); returns how many it stopped. Their tracker swarms go with them.
  std::size_t apply_rules();

  // A read of `chunk` failed under a seed: the stored files (etags) of every seeded torrent holding it
  // whose chunks are really gone or short on disk. The whole torrent is checked, not only the chunk's
  // own file, since what damaged one file (a slip of hand, a lost rename) rarely stops at one. Blocking.
  std::vector<std::string> damaged_files_beside(const Sha256& chunk);

 private:
  using Files = std::vector<hub::HubService::SnapshotEntry>;

  // Every stored blob of `files`, downloading what is missing when `wait`; or the reason it can't be.
  struct Stored {
    std::vector<BlobEntry> blobs;               // in the order of the files
    std::vector<std::shared_ptr<void>> leases;  // none of them is evicted while these live
  };
  std::variant<Stored, hub::Reply> complete(const RepoId& repo, const std::string& commit, const Files& files,
                                            bool wait);
  BuildOptions options_for(const SnapshotTorrent& torrent, const NodeLinks* links) const;
  std::variant<SnapshotTorrent, hub::Reply> build(const RepoId& repo, const std::string& commit,
                                                  const std::string& path, Format format, const Files& files,
                                                  Stored stored);
  void remember(const SnapshotTorrent& torrent);
  // (repo key, commit) of every commit of which at least one file is stored.
  std::set<std::pair<std::string, std::string>> cached_snapshots();
  // Drops these torrents and stops seeding them; the caller holds seeding_mutex_.
  void stop(const std::vector<std::string>& keys, const std::string& why);
  static std::string key(const RepoId& repo, const std::string& commit, const std::string& path, Format format);

  const ChunkStore& store_;
  Index& index_;
  hub::HubService& hub_;
  Hooks hooks_;
  std::mutex seeding_mutex_;  // held while torrents are seeded or stopped, outside mutex_
  std::mutex mutex_;
  std::map<std::string, SnapshotTorrent> seeded_;         // key -> torrent
  std::map<std::string, std::set<std::string>> by_etag_;  // etag -> keys of the torrents holding it
};

}  // namespace inferllama::torrent
