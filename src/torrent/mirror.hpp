#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <variant>
#include <vector>

#include "cache/download.hpp"
#include "cache/evictor.hpp"
#include "hub/hub_service.hpp"
#include "inferllama/asio.hpp"
#include "inferllama/config.hpp"
#include "torrent/fetcher.hpp"
#include "torrent/snapshot_torrents.hpp"

namespace inferllama::torrent {

struct MirrorOutcome {
  std::string commit;
  std::size_t files = 0;          // files of the snapshot
  std::size_t fetched_files = 0;  // of them, fetched over BitTorrent now (the rest were stored already)
  std::uint64_t fetched_bytes = 0;
  std::string info_hash;    // of the torrent the node seeds now
  bool same_swarm = false;  // the source's torrent has the same info-hash: both seed one swarm
};

// Fills the cache from another node's swarm: its torrent of the snapshot (peers from its tracker, and
// its web seed) lands in a folder, every file is checked against its Hub etag through the ordinary
// ingest, and the node then seeds the snapshot itself. When the Hub can be asked, it decides whether the
// repo is public, which commit the revision names and which files it holds; only while it cannot, for a
// repo this node knows nothing about, is the source's word taken (its bytes are still checked).
class Mirror {
 public:
  struct Parts {
    const Config& config;
    ChunkStore& store;
    Index& index;
    asio::thread_pool& workers;
    hub::HubService& hub;
    cache::Downloads& downloads;  // the node's one registry: a file being fetched is fetched once
    cache::Evictor& evictor;
    SnapshotTorrents& torrents;
    Upstream* network = nullptr;  // how source nodes are asked over HTTP; null: libcurl (tests pass a fake)
  };
  explicit Mirror(Parts parts);
  ~Mirror();

  // Mirrors `rev` of `repo` from the node at `from` (http(s)://host[:port][/path], no credentials, query
  // or fragment). The source must answer /healthz as a node (X-InferLlama-Node) before anything else is
  // asked of it, and no request to it follows a redirect. Blocking; one at a time.
  std::variant<MirrorOutcome, hub::Reply> mirror(const RepoId& repo, const std::string& rev, const std::string& from);

  // The entries of config.mirrors, which the node keeps in sync every mirror_interval. Throws ConfigError
  // on an invalid entry.
  std::vector<RepoRef> synced_mirrors() const;
  // Mirrors each of `specs` once from config.mirror_from (or the upstream), logging what fails; stops
  // early after cancel(). Blocking.
  void sync(const std::vector<RepoRef>& specs);
  // Ends the swarm download in progress (its mirror fails with "cancelled") and every later one; does not wait.
  void cancel();

 private:
  hub::HubService& source_hub(const std::string& from);
  // Why `from` may not be mirrored from (not a node's URL, not a node, a redirect); nullopt: it may.
  std::optional<hub::Reply> refuse_source(const std::string& from);

  Parts parts_;
  std::filesystem::path folder_;
  std::unique_ptr<Upstream> own_network_;  // unless Parts::network
  Upstream& network_;
  std::unique_ptr<Upstream> local_files_;
  std::unique_ptr<TorrentFetcher> fetcher_;
  std::mutex mirror_mutex_;  // one mirror at a time
  std::map<std::string, std::pair<std::unique_ptr<Config>, std::unique_ptr<hub::HubService>>> sources_;

  std::stop_source cancel_;  // ends a swarm download in progress at shutdown
};

}  // namespace inferllama::torrent
