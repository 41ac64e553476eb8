#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "backup/backups.hpp"
#include "cache/download.hpp"
#include "cache/evictor.hpp"
#include "console/account_data.hpp"
#include "console/mail_tokens.hpp"
#include "console/mailer.hpp"
#include "console/sessions.hpp"
#include "console/sign_in_guard.hpp"
#include "hosting/hosting.hpp"
#include "http/server.hpp"
#include "hub/hub_service.hpp"
#include "inferllama/asio.hpp"
#include "inferllama/chunk_store.hpp"
#include "inferllama/config.hpp"
#include "inferllama/index.hpp"
#include "inferllama/metrics.hpp"
#include "inferllama/tracker.hpp"
#include "inferllama/usage.hpp"
#include "node/data_dir_lock.hpp"
#include "policy/repo_rules.hpp"
#include "prefetch/prefetcher.hpp"
#include "scan/scan_service.hpp"
#include "torrent/mirror.hpp"
#include "torrent/seeder.hpp"
#include "torrent/snapshot_torrents.hpp"
#include "torrent/swarm_snapshots.hpp"
#include "torrent/swarm_upstream.hpp"
#include "upstream/parent_set.hpp"
#include "upstream/throttle.hpp"
#include "usage/audit_log.hpp"
#include "usage/identities.hpp"
#include "usage/local_limiter.hpp"
#include "usage/redis_limiter.hpp"
#include "usage/usage_log.hpp"
#include "util/io_threads.hpp"
#include "util/periodic_task.hpp"

namespace inferllama::node {

// Everything `inferllama serve` runs, owned in one place. The members are declared in the order they
// are built, and C++ destroys them in reverse: a part goes before every part it holds a reference to
// (the server before what it serves, the seed before the store). Responses still streaming at shutdown
// hold a file's lease on the evictor and a download slot of the limiter, which are destroyed before the
// io_context: shutdown() closes their connections and runs the io_context until they have ended.
class Node {
 public:
  // Upstream metadata calls and cold RocksDB reads in flight at once; more wait their turn.
  static constexpr std::size_t kMaxBlockingThreads = 64;

  // Opens the store and the index and builds every part. The BitTorrent ports (seed, UDP tracker) are
  // bound here, the HTTP ones by start(). Throws ConfigError or std::runtime_error.
  explicit Node(const Config& config);
  // Stops every part in turn if run() did not (a start-up that failed).
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Binds the listeners, prints on stdout the lines scripts read to learn the ports, and starts the
  // periodic work (usage flush and retention, visibility checks, mirror and prefetch sync). Throws when a listener
  // cannot be bound.
  void start();
  // Runs the I/O threads until stop(), then stops every part in turn and writes the last usage counts.
  void run();
  // Stops accepting and closes idle connections; responses in flight go on until drained().
  void begin_drain();
  // No response in flight, and no download that has all its bytes still being stored.
  bool drained();
  // What a stop waits for: connections with a response in flight, and downloads from the upstream.
  struct InFlight {
    std::size_t connections = 0;
    std::size_t downloads = 0;
  };
  InFlight in_flight();
  // Ends run(): the I/O threads return.
  void stop();
  // SIGHUP: opens the access log file again at its path (logrotate moved the old one away).
  void reopen_logs();
  // SIGHUP: reads the repo rules again on the blocking threads and applies them (see reload_repo_rules_now).
  void reload_repo_rules();
  // Reads the repo rules again; when they load, what they no longer let the node keep stops at once: the
  // torrents of denied and passed-through repos, their pins and their stored files. A rule that does not
  // load keeps the rules in force. Blocking.
  policy::RepoRules::Reloaded reload_repo_rules_now();

  asio::io_context& io() { return io_; }
  // The families of every module but the HTTP server's own (the server renders those).
  const metrics::Registry& metrics() const { return metrics_; }

 private:
  RateLimiter& limiter();
  std::unique_ptr<torrent::Seeder> make_seeder();
  void add_torrent(const torrent::SnapshotTorrent& torrent);
  void remove_torrent(const torrent::SnapshotTorrent& torrent);
  void register_metrics();
  // What the rules in force let the node keep: torrents stopped, pins and stored files released for the
  // repos they deny or pass through. Blocking.
  void apply_repo_rules();
  // A file just stored by a download of a repo whose rule changed meanwhile: released when no repo it was
  // stored for may keep it. Blocking.
  void release_if_unkept(const std::string& etag);
  // GET /api/inferllama/rules (reload false) and POST .../rules/reload: the status and a JSON answer.
  std::pair<unsigned, std::string> answer_repo_rules(bool reload);
  // The one place the HTTP server is built and given what it serves.
  std::unique_ptr<http::Server> make_server();
  void start_periodic_work();
  // GET /api/inferllama/cluster: upstreams and their health, parents' swarms, bytes by source (JSON).
  std::string cluster_status() const;
  // The console's operator pages: disk and what eviction takes next, tracker, mirrors, health, cluster.
  std::string operator_overview();
  // The tracker's largest swarms with some of their peers' addresses: the operator's page only.
  nlohmann::json busiest_swarms();
  void flush_usage();
  void expire_usage();
  void shutdown();

  // As given, with listen host names resolved: checked (TLS files too) before anything opens or binds.
  const Config config_;
  // Read before anything opens or binds: a rule that does not parse stops the start.
  policy::RepoRules repo_rules_;
  DataDirLock data_dir_lock_;  // before the index: a second node learns who holds the directory
  ChunkStore store_;
  std::unique_ptr<Index> index_;
  backup::Backups backups_;             // its settings checked before anything else starts
  std::unique_ptr<Upstream> upstream_;  // HTTP (or none: offline)
  // Every upstream call goes to the parent that rendezvous hashing picks for its file (or the fallback).
  std::unique_ptr<upstream::ParentSet> parents_;
  // Every request to the upstream waits, unsent, while the upstream throttles its credential.
  std::unique_ptr<upstream::ThrottledUpstream> throttled_;
  SystemClock clock_;
  MonotonicClock limiter_clock_;
  usage::SecretBox secret_box_;  // seals users' Hub tokens and the session signing keys
  usage::Identities identities_;
  usage::UsageLog usage_log_;
  console::Sessions sessions_;  // the web console's sign-ins
  usage::AuditLog audit_log_;   // each account's security events
  console::SignInGuard sign_in_guard_{limiter_clock_};
  console::MailTokens mail_tokens_;  // the links the console mails
  console::SmtpMailer mailer_;       // smtp_url, or none
  usage::LocalRateLimiter local_limits_;
  asio::io_context io_{1};     // run by run()'s caller: listeners, timers, the tracker and connections
  IoThreads io_threads_;       // the other io_threads - 1 contexts, for connections only
  asio::thread_pool workers_;  // hashing and committing downloads, evictions
  // RocksDB on a cold path, upstream metadata calls, periodic work: threads while there is such work.
  ElasticThreads blocking_{kMaxBlockingThreads};
  // File bytes may come from a parent node's swarm.
  std::unique_ptr<torrent::SwarmPreferringUpstream> file_upstream_;
  // Model files scanned as they are stored: scan_policy, overridden by a repo rule's scan action (no rules
  // module yet: nullptr), the verdicts and their counters.
  scan::ScanService scanning_;
  cache::Downloads downloads_;
  cache::Evictor evictor_;
  hub::HubService hub_;
  std::unique_ptr<usage::RedisRateLimiter> shared_limits_;  // ratelimit_backend other than "local"
  // Every torrent the node builds is seeded from the chunk store and tracked by its own tracker, and
  // stops before any of its files leaves the store.
  tracker::Tracker tracker_;
  std::unique_ptr<torrent::Seeder> seeder_;  // bt_listen
  std::mutex swarms_mutex_;                  // one swarm's seeding and tracking start or stop at a time
  torrent::SwarmSnapshots swarm_snapshots_;
  torrent::SnapshotTorrents torrents_;
  // The namespaces the node owns and their repos: answered here, stored beside the cache, never evicted.
  hosting::Hosting hosting_;
  torrent::Mirror mirror_;
  // Snapshots kept warm from the Hub (the `prefetch` setting and the admin API's entries).
  prefetch::Prefetcher prefetcher_;
  console::AccountData account_data_;  // what the node keeps about each person: exports, deletions, purges
  std::unique_ptr<tracker::UdpServer> udp_tracker_;  // tracker_udp
  std::uint16_t udp_port_ = 0;
  metrics::Registry metrics_;
  std::unique_ptr<http::Server> server_;
  PeriodicTask usage_flush_{io_.get_executor(), blocking_};
  PeriodicTask usage_retention_{io_.get_executor(), blocking_};
  PeriodicTask visibility_check_{io_.get_executor(), blocking_};
  PeriodicTask mirror_sync_{io_.get_executor(), blocking_};
  PeriodicTask prefetch_sync_{io_.get_executor(), blocking_};
  PeriodicTask seed_cached_{io_.get_executor(), blocking_};
  PeriodicTask hosted_gc_{io_.get_executor(), blocking_};
  PeriodicTask session_retention_{io_.get_executor(), blocking_};
  PeriodicTask backup_schedule_{io_.get_executor(), blocking_};
  PeriodicTask account_retention_{io_.get_executor(), blocking_};
  PeriodicTask access_log_rotation_{io_.get_executor(), blocking_};
  std::mutex rules_mutex_;                        // one reload of the repo rules, and what it releases, at a time
  std::atomic<bool> stored_since_seeding_{true};  // a file was stored since the last look for snapshots to seed
  bool stopped_ = false;                          // shutdown() ran
};

}  // namespace inferllama::node
