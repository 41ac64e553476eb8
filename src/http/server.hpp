#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "inferllama/asio.hpp"
#include "inferllama/chunk_store.hpp"
#include "inferllama/config.hpp"
#include "inferllama/metrics.hpp"

namespace inferllama::hub {
class HubService;
}
namespace inferllama::torrent {
class SnapshotTorrents;
class Mirror;
}  // namespace inferllama::torrent

namespace inferllama::tracker {
class Tracker;
}
namespace inferllama::usage {
class Identities;
class UsageLog;
}  // namespace inferllama::usage
namespace inferllama {
class RateLimiter;
}

namespace inferllama::http {

struct ServerCounters {
  metrics::Family<metrics::Counter> requests;         // route, status
  metrics::Family<metrics::Histogram> latency;        // route
  metrics::Counter bytes_from_cache;                  // stored files
  metrics::Counter bytes_from_downloads;              // streamed while fetched upstream
  std::atomic<std::uint64_t> open_connections{0};
};

// The HTTP listener: Boost.Beast on Asio coroutines, one strand per connection.
class Server {
 public:
  Server(asio::io_context& io, const Config& config, hub::HubService& hub, ChunkStore& store,
         asio::thread_pool& blocking);
  ~Server();

  // Binds `config.listen` and starts accepting. Returns the bound port. Throws on failure.
  std::uint16_t start();
  // Binds `config.metrics_listen`, which answers /metrics and /healthz only; returns the bound port.
  std::uint16_t start_metrics();
  // Serves the admin API (and /healthz, /api/usage) on a Unix socket at `path`, created mode 0600, to
  // peers of the node's own uid or root, who are the admin without a key. A stale socket is replaced;
  // throws when a live node answers on it, when `path` is something else, or on failure.
  void start_admin_socket(const std::filesystem::path& path);
  // Binds `config.tls_listen` with `tls_cert`/`tls_key` (TLS 1.2+); returns the bound port. Throws on failure.
  std::uint16_t start_tls();
  // Stops accepting, closes idle connections and lets responses in flight finish.
  void begin_drain();
  bool drained() const;

  ServerCounters& counters();

  // Answers GET /announce and GET /scrape with this tracker (otherwise 404) and adds its metrics to
  // /metrics. Set before start().
  void attach_tracker(tracker::Tracker& tracker);

  // Torrents of cached snapshots (torrent, magnet and web seed routes); `udp_announce_port` is the UDP
  // tracker's port written into torrents, 0 for none. Set before start().
  void attach_torrents(torrent::SnapshotTorrents& torrents, std::uint16_t udp_announce_port);
  // POST /api/inferllama/mirror. Set before start().
  void attach_mirror(torrent::Mirror& mirror);
  // Users, limits and usage records: node keys and passkeys identify callers (401 for a bad one, or for
  // none under require_auth), limit policies answer 429 with RateLimit headers, every request and every
  // byte is recorded, /api/usage and the admin API's users/ and keys/ routes answer. Set before start().
  void attach_accounts(usage::Identities& identities, usage::UsageLog& usage, RateLimiter& limiter);
  // More Prometheus text for /metrics (the seed, the tracker). Set before start().
  void add_metrics(std::function<void(std::string&)> render);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace inferllama::http
