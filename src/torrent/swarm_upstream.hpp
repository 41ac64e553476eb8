#pragma once
// A node whose upstream is another node fetches large files from that node's swarm (its seed and the
// peers its tracker knows) instead of over HTTP. libtorrent stays out of this header.
#include <memory>
#include <string>

#include "inferllama/config.hpp"
#include "inferllama/upstream.hpp"
#include "inferllama/version.hpp"

namespace inferllama::torrent {

// Every node marks its resolve answers with this header, so a child node knows its upstream is a node.
// Its value is the node's version.
inline constexpr char kNodeHeader[] = "X-InferLlama-Node";

// The Upstream the node's downloads use. fetch() passes through. fetch_range() of the parent's resolve
// URL of a file at least `swarm_threshold` large, when the parent is a node that offers the file's
// torrent, serves the range from a libtorrent session downloading that torrent; anything else (or a
// swarm that fails) goes over HTTP through the wrapped upstream.
class SwarmPreferringUpstream : public Upstream {
 public:
  // Bytes from the parent's swarm vs over HTTP, torrents in the session, fallbacks to HTTP.
  virtual void render_metrics(std::string& out) const = 0;
  // Ends every range being served from the swarm (they fail); called before the downloads stop.
  virtual void stop() = 0;
};

std::unique_ptr<SwarmPreferringUpstream> make_swarm_preferring_upstream(Upstream& http, const Config& config);

}  // namespace inferllama::torrent
