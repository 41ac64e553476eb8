#include "node/node.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <iostream>
#include <thread>

#include "inferllama/network.hpp"
#include "node/build_info.hpp"
#include "upstream/curl_upstream.hpp"
#include "usage/accounts_api.hpp"
#include "util/url.hpp"

namespace inferllama::node {
namespace {

unsigned or_cores(unsigned n) {
  return n ? n : std::max(1u, std::thread::hardware_concurrency());
}

std::unique_ptr<Upstream> make_upstream(const Config& config) {
  if (!config.offline) return upstream::make_curl_upstream(UpstreamOptions{config.upstream_timeout});
  spdlog::warn("offline mode: serving only what is cached, never contacting {}", url::redact(config.upstream));
  return upstream::make_offline_upstream();
}

std::unique_ptr<usage::RedisRateLimiter> make_shared_limits(const Config& config, asio::io_context& io,
                                                            usage::LocalRateLimiter& local) {
  if (config.ratelimit_backend == "local") return nullptr;
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
  return std::make_unique<usage::RedisRateLimiter>(io, redis, local);
}

// Where a listener bound: its configured host (a validated HOST:PORT) with the port it got (port 0 = any).
std::string bound(const std::string& listen, std::uint16_t port) {
  HostPort address = HostPort::parse(listen).value_or(HostPort{});
  address.port = port;
  return address.str();
}

}  // namespace

Node::Node(const Config& config)
    : config_(config),
      store_(config.data_dir),
      index_(open_rocksdb_index(config.data_dir / "index")),
      upstream_(make_upstream(config)),
      identities_(index_->records(), clock_, usage::SecretBox::from_file(usage::secret_key_path(config))),
      usage_log_(index_->records(), clock_),
      local_limits_(limiter_clock_),
      workers_(or_cores(config.worker_threads)),
      blocking_(64),
      file_upstream_(torrent::make_swarm_preferring_upstream(*upstream_, config)),
      downloads_(store_, *index_, *file_upstream_, workers_, cache::DownloadSettings::from(config)),
      evictor_(store_, *index_, config.max_disk),
      hub_(config, *index_, *upstream_, downloads_, evictor_),
      shared_limits_(make_shared_limits(config, io_, local_limits_)),
      tracker_(tracker::Settings::from(config)),
      seeder_(make_seeder()),
      torrents_(store_, *index_, hub_,
                {[this](const torrent::SnapshotTorrent& t) { add_torrent(t); },
                 [this](const torrent::SnapshotTorrent& t) { remove_torrent(t); }}),
      mirror_({config, store_, *index_, workers_, hub_, downloads_, evictor_, torrents_}) {
  downloads_.set_hooks(
      [this](const std::string& etag) {
        evictor_.stored(etag);
        evictor_.enforce();
      },
      [this](std::uint64_t bytes) {
        spdlog::error("the disk is full: evicting to make room for {} bytes", bytes);
        asio::post(workers_, [this, bytes] { evictor_.make_room(bytes); });
      });
  if (seeder_) tracker_.set_seed_port(seeder_->listen_port());
  evictor_.set_before_release([this](const std::string& etag) { torrents_.release(etag); });
  if (!config.tracker_udp.empty()) {
    udp_tracker_ = std::make_unique<tracker::UdpServer>(tracker_);
    udp_port_ = udp_tracker_->start(config.tracker_udp);
  }
  register_metrics();
  server_ = make_server();
}

Node::~Node() { shutdown(); }

RateLimiter& Node::limiter() {
  return shared_limits_ ? static_cast<RateLimiter&>(*shared_limits_) : local_limits_;
}

std::unique_ptr<torrent::Seeder> Node::make_seeder() {
  if (config_.bt_listen.empty()) return nullptr;
  auto options = torrent::SeederOptions::from(config_);
  // A chunk gone missing under a seed: forget every damaged file of its torrents (which stops them), as a
  // hit would. Only files really gone or short are forgotten; a read that failed for want of descriptors
  // forgets nothing.
  options.on_damaged_chunk = [this](const Sha256& chunk) {
    asio::post(workers_, [this, chunk] { evictor_.forget(torrents_.damaged_files_beside(chunk)); });
  };
  return std::make_unique<torrent::Seeder>(store_, options);
}

void Node::add_torrent(const torrent::SnapshotTorrent& t) {
  if (seeder_) {
    if (auto refused = seeder_->add(*t.torrent); !refused.empty()) {
      spdlog::error("cannot seed {}: {}", t.torrent->info_hash_v1.hex(), refused);
      return;
    }
  }
  tracker_.add_own_torrent(t.torrent->info_hash_v1, t.torrent->info_hash_v2);
}

void Node::remove_torrent(const torrent::SnapshotTorrent& t) {
  tracker_.remove_own_torrent(t.torrent->info_hash_v1);
  if (seeder_) seeder_->remove(t.torrent->info_hash_v1);
}

void Node::register_metrics() {
  metrics_.add([](std::string& out) { render_build_info(out); });
  metrics_.add([this](std::string& out) { hub_.render_metrics(out); });
  metrics_.add([this](std::string& out) { downloads_.render_metrics(out); });
  metrics_.add([this](std::string& out) { evictor_.render_metrics(out); });
  metrics_.add([this](std::string& out) { tracker_.render_metrics(out); });
  metrics_.add([this](std::string& out) { limiter().render_metrics(out); });
  metrics_.add([this](std::string& out) { file_upstream_->render_metrics(out); });
  if (seeder_) metrics_.add([this](std::string& out) { seeder_->render_metrics(out); });
}

std::unique_ptr<http::Server> Node::make_server() {
  http::ServerDeps deps{.config = config_,
                        .hub = hub_,
                        .store = store_,
                        .blocking = blocking_,
                        .metrics = metrics_,
                        .io_threads = or_cores(config_.io_threads)};
  deps.tracker = &tracker_;
  deps.torrents = &torrents_;
  deps.udp_announce_port = udp_port_;
  deps.mirror = &mirror_;
  deps.identities = &identities_;
  deps.usage_log = &usage_log_;
  deps.limiter = &limiter();
  return std::make_unique<http::Server>(io_, std::move(deps));
}

// A failed write keeps the counts for the next flush; it must not take the node down.
void Node::flush_usage() {
  try {
    usage_log_.flush();
  } catch (const std::exception& e) {
    spdlog::error("cannot write usage records (kept for the next flush): {}", e.what());
  }
}

void Node::expire_usage() {
  try {
    if (auto rows = usage_log_.expire(config_.usage_retention)) spdlog::info("deleted {} expired usage records", rows);
  } catch (const std::exception& e) {
    spdlog::error("cannot delete expired usage records: {}", e.what());
  }
}

void Node::start() {
  // Counters reach the index every usage_flush_interval (a crash loses at most one); records older than
  // usage_retention go at start-up and then hourly.
  usage_retention_.start("usage retention", std::chrono::hours(1), [this] { expire_usage(); },
                         PeriodicTask::First::now);
  usage_flush_.start("usage flush", config_.usage_flush_interval, [this] { flush_usage(); });
  asio::post(workers_, [this] { evictor_.enforce(); });  // a budget lowered since the last run
  asio::post(blocking_, [this] { torrents_.restore(); });
  // A seeded repo that became gated or private on the Hub stops being seeded within a few minutes.
  visibility_check_.start("visibility check", std::chrono::minutes(5), [this] { torrents_.recheck_visibility(); });

  // Tests and scripts read these lines to learn the ports when listening on port 0.
  if (seeder_) {
    std::cout << "inferllama bittorrent on tcp://" << bound(config_.bt_listen, seeder_->listen_port()) << std::endl;
  }
  if (udp_tracker_) {
    std::cout << "inferllama tracker on udp://" << bound(config_.tracker_udp, udp_port_) << std::endl;
  }
  if (!config_.metrics_listen.empty()) {
    const std::uint16_t metrics_port = server_->start_metrics();
    std::cout << "inferllama metrics on http://" << bound(config_.metrics_listen, metrics_port) << "/metrics"
              << std::endl;
  }
  if (const auto admin_socket = admin_socket_path(config_); !admin_socket.empty()) {
    server_->start_admin_socket(admin_socket);
    std::cout << "inferllama admin socket at " << admin_socket.string() << std::endl;
  }
  const std::uint16_t port = server_->start();
  std::cout << "inferllama listening on http://" << bound(config_.listen, port) << std::endl;
  if (!config_.tls_listen.empty()) {
    if (config_.tls_cert.empty() || config_.tls_key.empty()) throw ConfigError("tls_listen needs tls_cert and tls_key");
    const std::uint16_t tls_port = server_->start_tls();
    std::cout << "inferllama listening on https://" << bound(config_.tls_listen, tls_port) << std::endl;
  }
  spdlog::info("serving {} from {} (upstream {})", config_.listen, config_.data_dir.string(),
               url::redact(config_.upstream));

  if (auto mirrors = mirror_.synced_mirrors(); !mirrors.empty()) {
    mirror_sync_.start("mirror sync", config_.mirror_interval, [this, mirrors] { mirror_.sync(mirrors); },
                       PeriodicTask::First::now);
  }
}

void Node::run() {
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < or_cores(config_.io_threads); ++i) threads.emplace_back([this] { io_.run(); });
  io_.run();
  for (auto& t : threads) t.join();
  shutdown();
}

void Node::begin_drain() { server_->begin_drain(); }
bool Node::drained() const { return server_->drained(); }
void Node::stop() { io_.stop(); }
void Node::reopen_logs() { server_->reopen_logs(); }

void Node::shutdown() {
  if (stopped_) return;
  stopped_ = true;
  io_.stop();
  // Downloads stop before the mirror sync is waited for: a mirror or a torrent waiting on them then fails
  // at once.
  mirror_.cancel();
  file_upstream_->stop();
  downloads_.shutdown();
  // Responses still in flight end now, while what they hold (a file's lease on the evictor, a download
  // slot of the limiter) is alive: their sockets close, and the I/O context runs until their coroutines
  // have unwound (a response waiting on a download wakes when the download stopped).
  server_->close_connections();
  io_.restart();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!server_->drained() && std::chrono::steady_clock::now() < deadline) {
    io_.run_one_for(std::chrono::milliseconds(100));
  }
  mirror_sync_.stop();
  if (udp_tracker_) udp_tracker_->stop();
  if (seeder_) seeder_->stop();
  // Before the pools are joined: a run they hold is waited for.
  usage_flush_.stop();
  usage_retention_.stop();
  visibility_check_.stop();
  workers_.join();
  blocking_.join();
  flush_usage();  // what the last interval counted
  spdlog::info("stopped");
}

}  // namespace inferllama::node
