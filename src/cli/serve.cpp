#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <iostream>
#include <thread>

#include "accounts_api.hpp"
#include "commands.hpp"
#include "curl_upstream.hpp"
#include "download.hpp"
#include "evictor.hpp"
#include "hub_service.hpp"
#include "identities.hpp"
#include "inferllama/chunk_store.hpp"
#include "inferllama/index.hpp"
#include "inferllama/network.hpp"
#include "inferllama/tracker.hpp"
#include "inferllama/usage.hpp"
#include "local_limiter.hpp"
#include "mirror.hpp"
#include "redis_limiter.hpp"
#include "seeder.hpp"
#include "server.hpp"
#include "snapshot_torrents.hpp"
#include "swarm_upstream.hpp"
#include "usage_log.hpp"

namespace inferllama::cli {
namespace {

unsigned or_cores(unsigned n) {
  return n ? n : std::max(1u, std::thread::hardware_concurrency());
}

// Downloads keep one descriptor per staged chunk: allow as many as the hard limit.
void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// Where a listener bound: its configured host (a validated HOST:PORT) with the port it got (port 0 = any).
std::string bound(const std::string& listen, std::uint16_t port) {
  HostPort address = HostPort::parse(listen).value_or(HostPort{});
  address.port = port;
  return address.str();
}

}  // namespace

int serve(const Config& config) {
  // Logs go to stderr: stdout carries only the "listening on" line that scripts read.
  spdlog::set_default_logger(spdlog::stderr_color_mt("inferllama"));
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  raise_fd_limit();
  // Everything the node creates is its own only: the index holds users' keys and passkeys.
  ::umask(077);
  // sendfile(2) to a client that reset its connection raises SIGPIPE: a client must never stop the node
  // (the write fails with EPIPE instead, and that response ends).
  std::signal(SIGPIPE, SIG_IGN);
  if (const unsigned open_bits = make_private_dir(config.data_dir)) {
    spdlog::warn("the data directory {} is open to others (group/other mode bits {:03o}) and holds users' keys: "
                 "chmod 700 it (the node leaves its modes as they are)",
                 config.data_dir.string(), open_bits);
  }

  ChunkStore store(config.data_dir);
  auto index = open_rocksdb_index(config.data_dir / "index");
  auto upstream = config.offline ? upstream::make_offline_upstream()
                                 : upstream::make_curl_upstream(UpstreamOptions{config.upstream_timeout});
  if (config.offline) spdlog::warn("offline mode: serving only what is cached, never contacting {}", config.upstream);

  // Users, limits and usage records. Before the io_context: a response still streaming when it is
  // destroyed gives its download slot back to the limiter and its counts to the usage log.
  SystemClock clock;
  MonotonicClock limiter_clock;
  usage::Identities identities(index->records(), clock, usage::SecretBox::from_file(usage::secret_key_path(config)));
  usage::UsageLog usage_log(index->records(), clock);
  usage::LocalRateLimiter local_limits(limiter_clock);

  asio::io_context io;
  asio::thread_pool workers(or_cores(config.worker_threads));
  asio::thread_pool blocking(64);  // upstream metadata calls wait on the network here
  // File bytes may come from a parent node's swarm; metadata always asks the upstream over HTTP.
  auto file_upstream = torrent::make_swarm_preferring_upstream(*upstream, config);
  cache::Downloads downloads(store, *index, *file_upstream, workers, cache::DownloadSettings::from(config));
  cache::Evictor evictor(store, *index, config.max_disk);
  downloads.set_hooks(
      [&](const std::string& etag) {
        evictor.stored(etag);
        evictor.enforce();
      },
      [&](std::uint64_t bytes) {
        spdlog::error("the disk is full: evicting to make room for {} bytes", bytes);
        asio::post(workers, [&evictor, bytes] { evictor.make_room(bytes); });
      });
  hub::HubService hub(config, *index, *upstream, downloads, evictor);
  http::ServerDeps deps{.config = config, .hub = hub, .store = store, .blocking = blocking};
  deps.metrics.push_back([&file_upstream](std::string& out) { file_upstream->render_metrics(out); });

  // Users, limits and usage records.
  std::unique_ptr<usage::RedisRateLimiter> shared_limits;
  if (config.ratelimit_backend != "local") {
    usage::RedisSettings redis;
    try {
      redis = usage::RedisSettings::from_url(config.ratelimit_backend);
    } catch (const std::invalid_argument& e) {
      throw ConfigError(std::string("invalid ratelimit_backend: ") + e.what());
    }
    if (!config.ratelimit_backend_password.empty()) redis.password = config.ratelimit_backend_password;
    redis.timeout = config.ratelimit_timeout;
    redis.refuse_when_down = config.ratelimit_refuse_when_down;
    spdlog::info("rate limits are shared through Redis at {}:{}", redis.host, redis.port);
    shared_limits = std::make_unique<usage::RedisRateLimiter>(io, redis, local_limits);
  }
  RateLimiter& limiter = shared_limits ? static_cast<RateLimiter&>(*shared_limits) : local_limits;
  deps.identities = &identities;
  deps.usage_log = &usage_log;
  deps.limiter = &limiter;
  // Counters reach the index every usage_flush_interval (a crash loses at most one); records older than
  // usage_retention go at start-up and then hourly.
  // A failed write keeps the counts for the next flush; it must not take the node down.
  auto flush_usage_now = [&usage_log] {
    try {
      usage_log.flush();
    } catch (const std::exception& e) {
      spdlog::error("cannot write usage records (kept for the next flush): {}", e.what());
    }
  };
  auto expire_usage = [&usage_log, &config] {
    try {
      if (auto rows = usage_log.expire(config.usage_retention)) spdlog::info("deleted {} expired usage records", rows);
    } catch (const std::exception& e) {
      spdlog::error("cannot delete expired usage records: {}", e.what());
    }
  };
  asio::post(blocking, expire_usage);
  asio::steady_timer usage_timer(io);
  auto last_expiry = std::chrono::steady_clock::now();
  std::function<void()> flush_usage = [&] {
    usage_timer.expires_after(config.usage_flush_interval);
    usage_timer.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      const bool expire = std::chrono::steady_clock::now() - last_expiry >= std::chrono::hours(1);
      if (expire) last_expiry = std::chrono::steady_clock::now();
      asio::post(blocking, [expire, &flush_usage_now, &expire_usage] {
        flush_usage_now();
        if (expire) expire_usage();
      });
      flush_usage();
    });
  };
  flush_usage();

  // BitTorrent: every torrent the node builds is seeded from the chunk store and tracked by its own
  // tracker, and stops before any of its files leaves the store.
  tracker::Tracker tracker(tracker::Settings::from(config));
  std::unique_ptr<torrent::Seeder> seeder;
  torrent::SnapshotTorrents* seeded = nullptr;  // set below, before anything is seeded
  if (!config.bt_listen.empty()) {
    auto options = torrent::SeederOptions::from(config);
    // A chunk gone missing under a seed: forget every damaged file of its torrents (which stops them), as
    // a hit would. Only files really gone or short are forgotten; a read that failed for want of
    // descriptors forgets nothing.
    options.on_damaged_chunk = [&workers, &evictor, &seeded](const Sha256& chunk) {
      asio::post(workers, [&evictor, &seeded, chunk] { evictor.forget(seeded->damaged_files_beside(chunk)); });
    };
    seeder = std::make_unique<torrent::Seeder>(store, options);
    tracker.set_seed_port(seeder->listen_port());
    deps.metrics.push_back([&seeder](std::string& out) { seeder->render_metrics(out); });
  }
  torrent::SnapshotTorrents torrents(store, *index, hub,
                                     {[&](const torrent::SnapshotTorrent& t) {
                                        if (seeder) {
                                          if (auto refused = seeder->add(*t.torrent); !refused.empty()) {
                                            spdlog::error("cannot seed {}: {}", t.torrent->info_hash_v1.hex(), refused);
                                            return;
                                          }
                                        }
                                        tracker.add_own_torrent(t.torrent->info_hash_v1, t.torrent->info_hash_v2);
                                      },
                                      [&](const torrent::SnapshotTorrent& t) {
                                        tracker.remove_own_torrent(t.torrent->info_hash_v1);
                                        if (seeder) seeder->remove(t.torrent->info_hash_v1);
                                      }});
  seeded = &torrents;
  evictor.set_before_release([&torrents](const std::string& etag) { torrents.release(etag); });
  asio::post(workers, [&evictor] { evictor.enforce(); });  // a budget lowered since the last run
  asio::post(blocking, [&torrents] { torrents.restore(); });
  // A seeded repo that became gated or private on the Hub stops being seeded within a few minutes.
  asio::steady_timer visibility_timer(io);
  std::function<void()> recheck_visibility = [&] {
    visibility_timer.expires_after(std::chrono::minutes(5));
    visibility_timer.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      asio::post(blocking, [&torrents] { torrents.recheck_visibility(); });
      recheck_visibility();
    });
  };
  recheck_visibility();
  torrent::Mirror mirror({config, store, *index, workers, hub, downloads, evictor, torrents});
  deps.mirror = &mirror;

  std::unique_ptr<tracker::UdpServer> udp_tracker;
  std::uint16_t udp_port = 0;
  if (!config.tracker_udp.empty()) {
    udp_tracker = std::make_unique<tracker::UdpServer>(tracker);
    udp_port = udp_tracker->start(config.tracker_udp);
  }
  deps.torrents = &torrents;
  deps.udp_announce_port = udp_port;
  deps.tracker = &tracker;
  http::Server server(io, std::move(deps));
  // Tests and scripts read these lines to learn the ports when listening on port 0.
  if (seeder) {
    std::cout << "inferllama bittorrent on tcp://" << bound(config.bt_listen, seeder->listen_port()) << std::endl;
  }
  if (udp_tracker) {
    std::cout << "inferllama tracker on udp://" << bound(config.tracker_udp, udp_port) << std::endl;
  }
  if (!config.metrics_listen.empty()) {
    const std::uint16_t metrics_port = server.start_metrics();
    std::cout << "inferllama metrics on http://" << bound(config.metrics_listen, metrics_port) << "/metrics"
              << std::endl;
  }
  if (const auto admin_socket = admin_socket_path(config); !admin_socket.empty()) {
    server.start_admin_socket(admin_socket);
    std::cout << "inferllama admin socket at " << admin_socket.string() << std::endl;
  }
  const std::uint16_t port = server.start();
  std::cout << "inferllama listening on http://" << bound(config.listen, port) << std::endl;
  if (!config.tls_listen.empty()) {
    if (config.tls_cert.empty() || config.tls_key.empty()) throw ConfigError("tls_listen needs tls_cert and tls_key");
    const std::uint16_t tls_port = server.start_tls();
    std::cout << "inferllama listening on https://" << bound(config.tls_listen, tls_port) << std::endl;
  }
  spdlog::info("serving {} from {} (upstream {})", config.listen, config.data_dir.string(), config.upstream);

  asio::signal_set signals(io, SIGINT, SIGTERM);
  asio::steady_timer drain_timer(io);
  std::function<void(int)> wait_drained = [&](int ticks_left) {
    if (server.drained() || ticks_left == 0) {
      io.stop();
      return;
    }
    drain_timer.expires_after(std::chrono::milliseconds(50));
    drain_timer.async_wait([&, ticks_left](const boost::system::error_code&) { wait_drained(ticks_left - 1); });
  };
  signals.async_wait([&](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    spdlog::info("signal {}: draining responses in flight", signal);
    server.begin_drain();
    wait_drained(30 * 20);  // at most 30 s
  });

  std::vector<std::thread> threads;
  for (unsigned i = 1; i < or_cores(config.io_threads); ++i) threads.emplace_back([&] { io.run(); });
  mirror.start_sync();
  io.run();
  for (auto& t : threads) t.join();
  // Downloads stop before the mirror is joined: a mirror or a torrent waiting on them then fails at once.
  mirror.cancel();
  file_upstream->stop();
  downloads.shutdown();
  mirror.stop();
  if (udp_tracker) udp_tracker->stop();
  if (seeder) seeder->stop();
  workers.join();
  blocking.join();
  flush_usage_now();  // what the last interval counted
  spdlog::info("stopped");
  return 0;
}

}  // namespace inferllama::cli
