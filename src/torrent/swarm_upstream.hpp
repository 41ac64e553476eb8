#pragma once
// A node whose upstream is another node fetches large files from that node's swarm (its seed and the
// peers its tracker knows) instead of over HTTP. libtorrent stays out of this header.
#include <memory>
#include <string>
#include <vector>

#include "inferllama/config.hpp"
#include "inferllama/upstream.hpp"
#include "inferllama/version.hpp"

namespace inferllama::torrent {

// A parent torrent the node is downloading now.
struct ParentSwarm {
  std::string name;
  std::string info_hash;  // v1, hex
  std::uint64_t size = 0;
  double progress = 0;  // pieces in / pieces
  int peers = 0;
  std::uint64_t downloaded = 0;  // payload from its peers (other nodes; the parent's seed is none of them)
  std::uint64_t uploaded = 0;    // payload to other nodes
};

struct ParentSwarmStatus {
  std::uint64_t swarm_bytes = 0;     // file bytes delivered through parents' swarms (peers and fed pieces)
  std::uint64_t peer_bytes = 0;      // of these, from other nodes
  std::uint64_t fed_bytes = 0;       // of these, pieces no peer had, from the parent over HTTP
  std::uint64_t http_bytes = 0;      // file bytes over HTTP (ranges and fed pieces)
  std::uint64_t uploaded_bytes = 0;  // payload these swarms sent to other nodes
  std::uint64_t fallbacks = 0;
  std::vector<ParentSwarm> swarms;
};

// The Upstream the node's downloads use. fetch() passes through. fetch_range() of the parent's resolve
// URL of a file at least `swarm_threshold` large, when the parent is a node that offers the file's
// torrent, serves the range from a libtorrent session downloading that torrent; a file the parent is
// still fetching streams over HTTP until the parent's torrent exists, then from the swarm. Anything else
// (or a swarm that fails) goes over HTTP through the wrapped upstream.
class SwarmPreferringUpstream : public Upstream {
 public:
  virtual ParentSwarmStatus status() const = 0;
  // Bytes from the parent's swarm vs over HTTP, torrents in the session, fallbacks to HTTP.
  virtual void render_metrics(std::string& out) const = 0;
  // Ends every range being served from the swarm (they fail); called before the downloads stop.
  virtual void stop() = 0;
};

std::unique_ptr<SwarmPreferringUpstream> make_swarm_preferring_upstream(Upstream& http, const Config& config);

}  // namespace inferllama::torrent
