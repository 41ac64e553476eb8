#pragma once
// The node's BitTorrent seed: one libtorrent session whose disk backend reads pieces straight from the
// chunk store. libtorrent stays out of this header.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "inferllama/chunk_store.hpp"
#include "inferllama/config.hpp"
#include "torrent/torrent.hpp"

namespace inferllama::torrent {

// Built by from(): the bt_* defaults are the configuration's (config/config.cpp's key table), stated
// nowhere else.
struct SeederOptions {
  std::string listen;           // HOST:PORT, TCP; port 0 picks a free port
  std::uint64_t upload_rate{};  // bytes per second over all peers; 0 = unlimited
  unsigned max_connections{};
  unsigned max_uploads{};  // peers unchoked at once; 0 = unlimited
  bool dht{};
  bool lsd{};
  bool port_fallback{};
  // Not settings:
  int disk_threads = 4;               // workers reading chunks for peers
  std::size_t max_open_chunks = 256;  // chunk files kept open between reads
  // A chunk a peer asked for is missing or short (its torrent stops): called on a disk thread, must not
  // block; the node forgets the damaged file so that the next request fetches it again.
  std::function<void(const Sha256& chunk)> on_damaged_chunk;

  static SeederOptions from(const Config& config);
};

struct SeederStats {
  std::uint64_t uploaded_bytes = 0;  // payload sent to peers
  std::uint64_t peers = 0;           // peer connections open now
  std::uint64_t torrents = 0;
  std::uint64_t chunk_bytes_read = 0;
  std::uint64_t read_errors = 0;  // chunk reads that failed (a missing or damaged chunk pauses its torrent)
};

// add(), remove(), stats() and render_metrics() may be called from any thread, concurrently.
class Seeder {
 public:
  // Starts listening; throws if the listen address cannot be bound (start-up error).
  Seeder(const ChunkStore& store, const SeederOptions& options);
  ~Seeder();
  Seeder(const Seeder&) = delete;
  Seeder& operator=(const Seeder&) = delete;

  // Seeds `torrent` from the chunks its pieces name. Returns "" or why it could not (bad metainfo, a
  // piece table that does not match it, already seeded).
  std::string add(const Torrent& torrent);
  // Stops seeding the torrent of this Torrent::swarm_hash(); when it returns no read of its chunks is
  // running or will start, so its chunks may be deleted. False if it was not seeded.
  bool remove(const Sha1& swarm_hash);
  bool seeds(const Sha1& swarm_hash) const;

  std::uint16_t listen_port() const;  // the bound TCP port
  std::size_t torrents() const;
  SeederStats stats() const;
  void render_metrics(std::string& out) const;

  // Disconnects every peer and shuts the session down; the destructor calls it.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace inferllama::torrent
