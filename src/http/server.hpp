#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "inferllama/asio.hpp"
#include "inferllama/chunk_store.hpp"
#include "inferllama/config.hpp"
#include "inferllama/metrics.hpp"
#include "util/elastic_threads.hpp"

namespace inferllama::hub {
class HubService;
}
namespace inferllama::console {
class Sessions;
class SignInGuard;
class MailTokens;
class Mailer;
struct AccountData;
}  // namespace inferllama::console
namespace inferllama::hosting {
class Hosting;
}
namespace inferllama::scan {
class ScanService;
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
class Index;
}  // namespace inferllama

namespace inferllama::http {

// What the HTTP edge answers with. The optional parts are null on a node without them, and their routes
// then answer 404.
struct ServerDeps {
  const Config& config;
  hub::HubService& hub;
  ChunkStore& store;
  ElasticThreads& blocking;  // RocksDB on cold paths and upstream calls wait here, off the I/O threads
  // Every module's metric families but the server's own, which it renders itself before them.
  const metrics::Registry& metrics;
  // Where connections run, spread in turn: each context is run by exactly one thread, so a connection's
  // handlers need no strand. Empty: all on the server's own context, which one thread runs.
  std::vector<asio::io_context*> connection_contexts;
  // GET /announce and /scrape, and the tracker's metrics.
  tracker::Tracker* tracker = nullptr;
  // Torrents of cached snapshots (torrent, magnet and web seed routes); `udp_announce_port` is the UDP
  // tracker's port written into torrents, 0 for none.
  torrent::SnapshotTorrents* torrents = nullptr;
  std::uint16_t udp_announce_port = 0;
  // POST /api/inferllama/mirror.
  torrent::Mirror* mirror = nullptr;
  // Users, limits and usage records (all three or none): node keys and passkeys identify callers (401 for
  // a bad one, or for none under require_auth), limit policies answer 429 with RateLimit headers, every
  // request and every byte is recorded, /api/usage and the admin API's users/ and keys/ routes answer.
  usage::Identities* identities = nullptr;
  usage::UsageLog* usage_log = nullptr;
  RateLimiter* limiter = nullptr;
  // The web console's sign-in and sessions (with identities and usage_log): /api/inferllama/console/.
  console::Sessions* sessions = nullptr;
  console::SignInGuard* sign_in_guard = nullptr;
  console::MailTokens* mail_tokens = nullptr;
  console::Mailer* mailer = nullptr;
  // The console's operator pages: the node at a glance (cache, swarms, mirrors, cluster, health), as JSON.
  std::function<std::string()> operator_overview;
  // What the node keeps about each person, for the audit events and the data rights: the admin API's export,
  // deletion, restore and purge, and the console's export and deletion.
  console::AccountData* account_data = nullptr;
  // Hosted repos: the namespaces the node owns (the admin API's orgs/ routes too), their upload routes and
  // their reads. With the index, a Hub namespace the node has cached repos of is taken only with "force".
  hosting::Hosting* hosting = nullptr;
  Index* index = nullptr;
  // The scan policy of model files: the X-InferLlama-Scan header, 403 under deny, GET /api/inferllama/scan/....
  scan::ScanService* scanning = nullptr;
  // GET /api/inferllama/cluster: the node's upstreams, swarms and bytes by source, as JSON.
  std::function<std::string()> cluster_status;
  // POST /api/inferllama/backup: makes a backup as the JSON body asks (it blocks: called on the blocking
  // pool); the status and a JSON answer.
  std::function<std::pair<unsigned, std::string>(const std::string& body)> backup;
  // GET /api/inferllama/prefetch, POST .../prefetch/add and .../prefetch/remove: the method, the action
  // ("prefetch", "prefetch/add", ...) and the body; the status and a JSON answer (blocking: on the pool).
  std::function<std::pair<unsigned, std::string>(const std::string& method, const std::string& action,
                                                 const std::string& body)>
      prefetch;
  // GET /api/inferllama/rules (false) and POST /api/inferllama/rules/reload (true): the repo rules in force,
  // after reading them again for a reload (it blocks: called on the blocking pool); the status and a JSON answer.
  std::function<std::pair<unsigned, std::string>(bool reload)> repo_rules;
};

// The HTTP listeners: Boost.Beast on Asio coroutines, each connection on one of the I/O threads' contexts
// for its whole life. How a request goes through: docs/ARCHITECTURE.md, "The HTTP edge".
class Server {
 public:
  Server(asio::io_context& io, ServerDeps deps);
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
  std::size_t open_connections() const;
  // Closes every connection, busy or not (at shutdown, after the drain).
  void close_connections();
  // Opens the access log file again at its path (SIGHUP, after logrotate moved it); any thread.
  void reopen_logs();
  // Rotates the access log file when its day has passed and deletes rotations past access_log_retention.
  void rotate_logs();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace inferllama::http
