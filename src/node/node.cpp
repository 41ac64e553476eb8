#include "node/node.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <set>
#include <thread>
#include <unordered_map>

#include "console/account_deletion.hpp"
#include "console/account_rename.hpp"
#include "console/console_api.hpp"
#include "hosting/org_admin.hpp"
#include "inferllama/network.hpp"
#include "node/build_info.hpp"
#include "node/start_checks.hpp"
#include "upstream/curl_upstream.hpp"

#include <nlohmann/json.hpp>
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

policy::RepoRules load_repo_rules(const Config& config) {
  try {
    return policy::RepoRules(config.repo_rules, config.repo_rules_file);
  } catch (const policy::RuleError& e) {
    throw ConfigError(std::string("invalid repo rules: ") + e.what());
  }
}

// Where a listener bound: its configured host (a validated HOST:PORT) with the port it got (port 0 = any).
std::string bound(const std::string& listen, std::uint16_t port) {
  HostPort address = HostPort::parse(listen).value_or(HostPort{});
  address.port = port;
  return address.str();
}

}  // namespace

Node::Node(const Config& config)
    : config_(checked_for_start(config)),
      repo_rules_(load_repo_rules(config_)),
      data_dir_lock_(config_.data_dir),
      store_(config_.data_dir),
      index_(open_rocksdb_index(config_.data_dir / "index")),
      backups_(config_, *index_, usage::secret_key_path(config_)),
      upstream_(make_upstream(config_)),
      parents_(upstream::make_parent_set(*upstream_, config_)),
      throttled_(upstream::make_throttled_upstream(*parents_, config_)),
      secret_box_(usage::SecretBox::from_file(usage::secret_key_path(config_))),
      identities_(index_->records(), clock_, secret_box_),
      usage_log_(index_->records(), clock_),
      sessions_(console::make_session_store(config_, index_->records()), clock_, secret_box_),
      audit_log_(index_->records(), clock_),
      mail_tokens_(index_->records(), clock_),
      mailer_({config_.smtp_url, config_.smtp_from, config_.smtp_credentials_file}),
      local_limits_(limiter_clock_),
      io_threads_(io_, or_cores(config_.io_threads) - 1),
      workers_(or_cores(config_.worker_threads)),
      file_upstream_(torrent::make_swarm_preferring_upstream(*throttled_, config_)),
      scanning_(*index_, config_.scan_policy, &repo_rules_),
      downloads_(store_, *index_, *file_upstream_, workers_, cache::DownloadSettings::from(config_)),
      evictor_(store_, *index_, config.max_disk),
      hub_(config_, *index_, *throttled_, downloads_, evictor_),
      shared_limits_(make_shared_limits(config_, io_, local_limits_)),
      tracker_(tracker::Settings::from(config_)),
      seeder_(make_seeder()),
      torrents_(store_, *index_, hub_,
                {[this](const torrent::SnapshotTorrent& t) { add_torrent(t); },
                 [this](const torrent::SnapshotTorrent& t) { remove_torrent(t); }}),
      hosting_({index_->records(), *index_, store_, clock_,
                // A renamed user's former name stays the node's: its repos' old names answer 404, never upstream.
                [this](std::string_view name) { return identities_.name_taken(std::string(name)); },
                [this](std::string_view name) {
                  auto user = identities_.user(std::string(name));
                  return user ? user->email : std::string();
                },
                [this](const std::vector<std::string>& etags) {
                  evictor_.forget(etags, "no hosted repo holds it any more");
                },
                [this](const std::string& etag) { evictor_.stored(etag); },
                [this](std::string_view name) {
                  auto user = identities_.user(std::string(name));
                  return user && user->deleted_ms.has_value();
                }},
               {.chunk_size = static_cast<std::uint32_t>(config_.chunk_size), .quota = config_.hosted_quota}),
      mirror_({config_, store_, *index_, workers_, hub_, downloads_, evictor_, torrents_}),
      // An entry added at run time is fetched at once rather than at the next interval.
      prefetcher_({config_, *index_, hub_, [this] { prefetch_sync_.run_soon(); }}),
      account_data_{clock_,
                    index_->records(),
                    identities_,
                    usage_log_,
                    audit_log_,
                    sessions_,
                    mail_tokens_,
                    hosting_.namespaces(),
                    config_.token_size,
                    &hosting_,
                    [this] { torrents_.recheck_visibility(); }} {
  hub_.set_hosted(&hosting_);
  hub_.set_policy(&repo_rules_);
  hub_.set_throttle(throttled_.get());
  account_data_.name_refusal = [this](std::string_view name) {
    return hosting::user_namespace_refusal(
        hosting_.namespaces(), [this](std::string_view ns) { return hosting::namespace_cached(*index_, ns); }, name,
        /*force=*/false);
  };
  downloads_.set_scanning(&scanning_);
  evictor_.set_keep([this](std::unordered_set<std::string>& kept) { return hosting_.keep(kept); });
  downloads_.set_hooks(
      [this](const std::string& etag) {
        evictor_.stored(etag);
        release_if_unkept(etag);
        evictor_.enforce();
        stored_since_seeding_ = true;
      },
      [this](std::uint64_t bytes) {
        spdlog::error("the disk is full: evicting to make room for {} bytes", bytes);
        asio::post(workers_, [this, bytes] { evictor_.make_room(bytes); });
      });
  if (seeder_) tracker_.set_seed_port(seeder_->listen_port());
  evictor_.set_before_release([this](const std::string& etag) { torrents_.release(etag); });
  if (!config_.tracker_udp.empty()) {
    udp_tracker_ = std::make_unique<tracker::UdpServer>(tracker_);
    udp_port_ =
        bind_named("tracker_udp", config_.tracker_udp, [&] { return udp_tracker_->start(config_.tracker_udp); });
  }
  register_metrics();
  server_ = make_server();
}

Node::~Node() {
  shutdown();
}

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
  return bind_named("bt_listen", config_.bt_listen, [&] { return std::make_unique<torrent::Seeder>(store_, options); });
}

void Node::add_torrent(const torrent::SnapshotTorrent& t) {
  const auto swarm = t.torrent->swarm_hash();
  std::lock_guard lock(swarms_mutex_);
  if (!swarm_snapshots_.add(swarm, t.repo.key() + "@" + t.commit)) return;  // seeded for another snapshot already
  if (seeder_) {
    if (auto refused = seeder_->add(*t.torrent); !refused.empty()) {
      spdlog::error("cannot seed {}: {}", swarm.hex(), refused);
      swarm_snapshots_.forget(swarm);
      return;
    }
  }
  // A hybrid torrent's truncated v2 hash joins its v1 swarm; a v2-only torrent's is its swarm.
  tracker_.add_own_torrent(swarm, t.torrent->info_hash_v2);
}

void Node::remove_torrent(const torrent::SnapshotTorrent& t) {
  const auto swarm = t.torrent->swarm_hash();
  std::lock_guard lock(swarms_mutex_);
  if (!swarm_snapshots_.remove(swarm)) return;  // another snapshot still makes this swarm
  tracker_.remove_own_torrent(swarm);
  if (seeder_) seeder_->remove(swarm);
}

void Node::register_metrics() {
  metrics_.add([](std::string& out) { render_build_info(out); });
  metrics_.add([this](std::string& out) { hub_.render_metrics(out); });
  metrics_.add([this](std::string& out) { downloads_.render_metrics(out); });
  metrics_.add([this](std::string& out) { scanning_.render_metrics(out); });
  metrics_.add([this](std::string& out) { evictor_.render_metrics(out); });
  metrics_.add([this](std::string& out) { tracker_.render_metrics(out); });
  metrics_.add([this](std::string& out) { limiter().render_metrics(out); });
  metrics_.add([this](std::string& out) { sign_in_guard_.render_metrics(out); });
  metrics_.add([this](std::string& out) { parents_->render_metrics(out); });
  metrics_.add([this](std::string& out) { throttled_->render_metrics(out); });
  metrics_.add([this](std::string& out) { file_upstream_->render_metrics(out); });
  if (seeder_) metrics_.add([this](std::string& out) { seeder_->render_metrics(out); });
  metrics_.add([this](std::string& out) { backups_.render_metrics(out); });
  metrics_.add([this](std::string& out) { prefetcher_.render_metrics(out); });
  metrics_.add([this](std::string& out) { repo_rules_.render_metrics(out); });
}

void Node::reload_repo_rules() {
  blocking_.post([this] { reload_repo_rules_now(); });
}

policy::RepoRules::Reloaded Node::reload_repo_rules_now() {
  std::lock_guard lock(rules_mutex_);
  auto reloaded = repo_rules_.reload();
  if (reloaded.ok) apply_repo_rules();
  return reloaded;
}

void Node::apply_repo_rules() {
  if (const auto stopped = torrents_.apply_rules()) {
    spdlog::info("repo rules: stopped {} torrents of repos the rules deny or pass through", stopped);
  }
  if (repo_rules_.current()->empty()) return;
  // Each repo is decided once; a key the index holds that names no repo is left alone.
  std::map<std::string, bool> keeps;
  auto kept_by_rules = [&](const std::string& repo_key) {
    auto [it, added] = keeps.try_emplace(repo_key, true);
    if (added) {
      const auto repo = parse_repo_key(repo_key);
      it->second = !repo || hub_.decide(*repo).access == RepoAccess::allow;
    }
    return it->second;
  };
  std::unordered_set<std::string> kept, unkept;
  hosting_.keep(kept);  // hosted files are the node's own, whatever the rules say of Hub repos
  index_->list_files([&](const Index::ListedFile& f) {
    if (f.cached) (kept_by_rules(f.repo_key) ? kept : unkept).insert(f.file.etag);
  });
  for (const auto& [repo, commit] : index_->pinned()) {
    if (kept_by_rules(repo.key())) continue;
    index_->set_pinned(repo, commit, false);
    spdlog::info("repo rules: unpinned {}@{}, which they no longer let the node keep", repo.key(), commit);
  }
  std::vector<std::string> released;
  for (const auto& etag : unkept)
    if (!kept.contains(etag)) released.push_back(etag);
  if (released.empty()) return;
  evictor_.forget(released, "the repo rules no longer let the node keep any repo that holds it");
  spdlog::info("repo rules: released {} stored files of repos they deny or pass through", released.size());
}

void Node::release_if_unkept(const std::string& etag) {
  if (repo_rules_.current()->empty()) return;
  const BlobScope scope = index_->blob_scope(etag);
  if (scope.repos.empty()) return;
  for (const auto& repo : scope.repos)
    if (hub_.decide(repo).access == RepoAccess::allow) return;
  std::unordered_set<std::string> hosted;
  hosting_.keep(hosted);
  if (hosted.contains(etag)) return;
  evictor_.forget({etag}, "stored for repos the repo rules now deny or pass through");
}

std::pair<unsigned, std::string> Node::answer_repo_rules(bool reload) {
  if (!reload) return {200, repo_rules_.to_json()};
  const auto reloaded = reload_repo_rules_now();
  if (reloaded.ok) return {200, repo_rules_.to_json()};
  return {400, nlohmann::json{{"error", reloaded.error + " (the " + std::to_string(reloaded.rules->rules().size()) +
                                            " rules in force stay)"},
                              {"rules", nlohmann::json::parse(repo_rules_.to_json())}}
                   .dump()};
}

std::unique_ptr<http::Server> Node::make_server() {
  http::ServerDeps deps{.config = config_,
                        .hub = hub_,
                        .store = store_,
                        .blocking = blocking_,
                        .metrics = metrics_,
                        .connection_contexts = io_threads_.contexts()};
  deps.tracker = &tracker_;
  deps.torrents = &torrents_;
  deps.udp_announce_port = udp_port_;
  deps.mirror = &mirror_;
  deps.identities = &identities_;
  deps.usage_log = &usage_log_;
  deps.limiter = &limiter();
  deps.sessions = &sessions_;
  deps.sign_in_guard = &sign_in_guard_;
  deps.mail_tokens = &mail_tokens_;
  deps.mailer = &mailer_;
  deps.operator_overview = [this] { return operator_overview(); };
  deps.hosting = &hosting_;
  deps.account_data = &account_data_;
  deps.index = index_.get();
  deps.scanning = &scanning_;
  deps.cluster_status = [this] { return cluster_status(); };
  deps.backup = [this](const std::string& body) { return backups_.answer(body); };
  deps.prefetch = [this](const std::string& method, const std::string& action, const std::string& body) {
    return prefetcher_.answer(method, action, body);
  };
  deps.repo_rules = [this](bool reload) { return answer_repo_rules(reload); };
  return std::make_unique<http::Server>(io_, std::move(deps));
}

std::string Node::operator_overview() {
  using nlohmann::json;
  // Repos by the bytes of their stored files (each file once), and where eviction would start.
  constexpr std::size_t kShownEvictions = 50;
  std::unordered_map<std::string, std::size_t> rank;
  std::size_t next = 0;
  for (const auto& etag : evictor_.eviction_order(kShownEvictions)) rank.emplace(etag, ++next);
  std::set<std::string> pinned;
  for (const auto& [repo, commit] : index_->pinned()) pinned.insert(repo.key());
  struct RepoBytes {
    std::set<std::string> etags;
    std::uint64_t bytes = 0;
    std::size_t evict_rank = 0;
  };
  std::map<std::string, RepoBytes> repos;
  index_->list_files([&](const Index::ListedFile& f) {
    if (!f.cached) return;
    auto& r = repos[f.repo_key];
    if (!r.etags.insert(f.file.etag).second) return;
    r.bytes += f.file.size;
    if (auto it = rank.find(f.file.etag); it != rank.end() && (r.evict_rank == 0 || it->second < r.evict_rank)) {
      r.evict_rank = it->second;
    }
  });
  json cached = json::array();
  for (const auto& [repo, r] : repos) {
    cached.push_back(
        {{"repo", repo}, {"bytes", r.bytes}, {"pinned", pinned.contains(repo)}, {"evict_rank", r.evict_rank}});
  }
  json mirrors = json::array();
  for (const auto& ref : mirror_.synced_mirrors()) mirrors.push_back({{"repo", ref.repo.key()}, {"branch", ref.rev}});
  const json cluster = json::parse(cluster_status());
  bool upstream_healthy = false;
  for (const auto& u : cluster["upstreams"]) upstream_healthy = upstream_healthy || u.value("healthy", false);
  return json{{"cache", {{"bytes_stored", store_.bytes_stored()}, {"max_disk", config_.max_disk}, {"repos", cached}}},
              {"tracker",
               {{"swarms", tracker_.swarm_count()}, {"peers", tracker_.peer_count()}, {"busiest", busiest_swarms()}}},
              {"mirrors", mirrors},
              {"health",
               {{"upstream", config_.offline    ? "offline"
                             : upstream_healthy ? "healthy"
                                                : "failing"},
                {"redis", !shared_limits_               ? "not used"
                          : shared_limits_->connected() ? "connected"
                                                        : "unreachable"},
                {"sessions", sessions_.health()}}},
              {"cluster", cluster}}
      .dump();
}

nlohmann::json Node::busiest_swarms() {
  using nlohmann::json;
  // Bounded, for one page: the largest swarms, with some of their peers.
  constexpr std::size_t kShownSwarms = 20;
  constexpr std::size_t kShownPeers = 50;
  json swarms = json::array();
  for (const auto& swarm : tracker_.busiest_swarms(kShownSwarms, kShownPeers)) {
    json peers = json::array();
    for (const auto& p : swarm.peers) {
      peers.push_back({{"address", p.peer.ip_text()}, {"port", p.peer.port}, {"seeder", p.seeder}});
    }
    std::string name;
    if (swarm.own) {
      std::lock_guard lock(swarms_mutex_);
      name = swarm_snapshots_.name(swarm.hash);
    }
    swarms.push_back({{"info_hash", swarm.hash.hex()},
                      {"snapshot", name},
                      {"own", swarm.own},
                      {"seeders", swarm.counts.seeders},
                      {"leechers", swarm.counts.leechers},
                      {"downloaded", swarm.counts.downloaded},
                      {"peers", std::move(peers)}});
  }
  return swarms;
}

std::string Node::cluster_status() const {
  using nlohmann::json;
  static constexpr std::string_view kKinds[] = {"unknown", "parent", "hub"};
  json upstreams = json::array();
  // A Hub's redirect leads to its CDN, which is none of the upstreams.
  std::uint64_t from_hub = parents_->redirected_bytes(), from_parents = 0;
  for (const auto& target : parents_->status()) {
    // A listed upstream not heard from on a resolve yet (a range it took over) is taken for a parent.
    const bool hub = target.kind == upstream::UpstreamKind::hub ||
                     (target.kind == upstream::UpstreamKind::unknown && target.fallback);
    (hub ? from_hub : from_parents) += target.bytes;
    upstreams.push_back({{"url", target.url},
                         {"kind", kKinds[static_cast<int>(target.kind)]},
                         {"fallback", target.fallback},
                         {"healthy", target.healthy},
                         {"backoff_seconds", target.backoff_seconds},
                         {"failures", target.failures},
                         {"requests", target.requests},
                         {"bytes", target.bytes}});
  }
  const torrent::ParentSwarmStatus swarm = file_upstream_->status();
  json swarms = json::array();
  for (const auto& s : swarm.swarms) {
    swarms.push_back({{"name", s.name},
                      {"info_hash", s.info_hash},
                      {"size", s.size},
                      {"progress", s.progress},
                      {"peers", s.peers},
                      {"downloaded", s.downloaded},
                      {"uploaded", s.uploaded}});
  }
  const torrent::SeederStats seeding = seeder_ ? seeder_->stats() : torrent::SeederStats{};
  json limits = {{"backend", shared_limits_ ? "redis" : "local"}};
  if (shared_limits_) limits["connected"] = shared_limits_->connected();
  // Parents send their pieces over HTTP (fed pieces); peers are the other nodes of a parent's swarm.
  json out = {
      {"upstreams", std::move(upstreams)},
      {"bytes",
       {{"from_hub", from_hub},
        {"from_parents", from_parents + swarm.fed_bytes},
        {"from_peers", swarm.peer_bytes},
        {"to_peers", seeding.uploaded_bytes + swarm.uploaded_bytes}}},
      {"swarms", std::move(swarms)},
      {"seeding", {{"torrents", seeding.torrents}, {"peers", seeding.peers}, {"uploaded", seeding.uploaded_bytes}}},
      {"limits", std::move(limits)}};
  return out.dump();
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
  // Every listener is bound before the first line is printed: a start that fails prints none.
  std::uint16_t metrics_port = 0;
  if (!config_.metrics_listen.empty()) {
    metrics_port = bind_named("metrics_listen", config_.metrics_listen, [&] { return server_->start_metrics(); });
  }
  const auto admin_socket = admin_socket_path(config_);
  if (!admin_socket.empty()) {
    bind_named("admin_socket", admin_socket.string(), [&] { server_->start_admin_socket(admin_socket); });
  }
  const std::uint16_t port = bind_named("listen", config_.listen, [&] { return server_->start(); });
  std::uint16_t tls_port = 0;
  if (!config_.tls_listen.empty()) {
    tls_port = bind_named("tls_listen", config_.tls_listen, [&] { return server_->start_tls(); });
  }

  // Tests and scripts read these lines to learn the ports when listening on port 0.
  if (seeder_) {
    std::cout << "inferllama bittorrent on tcp://" << bound(config_.bt_listen, seeder_->listen_port()) << std::endl;
  }
  if (udp_tracker_) {
    std::cout << "inferllama tracker on udp://" << bound(config_.tracker_udp, udp_port_) << std::endl;
  }
  if (metrics_port) {
    std::cout << "inferllama metrics on http://" << bound(config_.metrics_listen, metrics_port) << "/metrics"
              << std::endl;
  }
  if (!admin_socket.empty()) std::cout << "inferllama admin socket at " << admin_socket.string() << std::endl;
  std::cout << "inferllama listening on http://" << bound(config_.listen, port) << std::endl;
  if (tls_port) std::cout << "inferllama listening on https://" << bound(config_.tls_listen, tls_port) << std::endl;
  if (config_.admin_key.empty() && !admin_socket.empty()) {
    spdlog::info(
        "no admin_key: the admin API is served on the admin socket only; manage this node from this machine "
        "as its user, e.g. `inferllama user add NAME --data-dir {}` or `inferllama pin REPO --data-dir {}`",
        config_.data_dir.string(), config_.data_dir.string());
  } else if (config_.admin_key.empty()) {
    spdlog::warn(
        "no admin_key and no admin_socket: users, keys, pins and gc can be managed only while the node is "
        "stopped (`inferllama user ... --data-dir {}`)",
        config_.data_dir.string());
  }
  spdlog::info("serving {} from {} (upstream {})", config_.listen, config_.data_dir.string(),
               url::redact(config_.upstream));
  start_periodic_work();

  // Run-time entries may be added at any time: the task runs even while the list is empty (a cheap run).
  prefetch_sync_.start(
      "prefetch", config_.prefetch_interval, [this] { prefetcher_.sync(); }, PeriodicTask::First::now);
  if (auto mirrors = mirror_.synced_mirrors(); !mirrors.empty()) {
    mirror_sync_.start(
        "mirror sync", config_.mirror_interval, [this, mirrors] { mirror_.sync(mirrors); }, PeriodicTask::First::now);
  }
}

// After every listener is bound: a start that fails has changed nothing in the index.
void Node::start_periodic_work() {
  // Counters reach the index every usage_flush_interval (a crash loses at most one); records older than
  // usage_retention go at start-up and then hourly.
  usage_retention_.start(
      "usage retention", std::chrono::hours(1), [this] { expire_usage(); }, PeriodicTask::First::now);
  usage_flush_.start("usage flush", config_.usage_flush_interval, [this] { flush_usage(); });
  asio::post(workers_, [this] { evictor_.enforce(); });  // a budget lowered since the last run
  // Rules changed while the node was stopped: what they no longer let it keep goes now, as after a reload.
  blocking_.post([this] {
    std::lock_guard lock(rules_mutex_);
    apply_repo_rules();
  });
  // Every snapshot of a public repo whose files are all stored is seeded: those seeded before a restart
  // (single files and hybrids too) at the first run, the rest within seconds of their last file being stored.
  seed_cached_.start(
      "seeding cached snapshots", std::chrono::seconds(10),
      [this, restored = false]() mutable {
        if (!restored) torrents_.restore();
        restored = true;
        if (seeder_ && stored_since_seeding_.exchange(false)) torrents_.seed_cached();
      },
      PeriodicTask::First::now);
  // A seeded repo that became gated or private on the Hub stops being seeded within a few minutes.
  visibility_check_.start("visibility check", std::chrono::minutes(5), [this] { torrents_.recheck_visibility(); });
  // Uploads no commit took up within a day, and the staging of abandoned ones, leave the store.
  hosted_gc_.start(
      "hosted garbage", std::chrono::hours(1), [this] { hosting_.collect_garbage(); }, PeriodicTask::First::now);
  // Console sessions past their 30 days, and signing keys no kept session can name; a new key weekly.
  session_retention_.start(
      "session retention", std::chrono::hours(1),
      [this] {
        sessions_.expire();
        mail_tokens_.expire();
        console::ConsoleDeps console{identities_,  usage_log_, sessions_,         sign_in_guard_,
                                     mail_tokens_, mailer_,    config_.token_size};
        console::revoke_ended_session_keys(console);
      },
      PeriodicTask::First::now);
  // A backup every backup_interval, the first at once when backup_dir has none that recent (a node restarted
  // more often than the interval still makes them).
  if (!config_.backup_dir.empty()) {
    backup_schedule_.start(
        "backup", config_.backup_interval, [this] { backups_.make_scheduled(); },
        backups_.due() ? PeriodicTask::First::now : PeriodicTask::First::after_interval);
  }
  // What renames left under former names moves; accounts deleted 30 days ago are purged; audit events past their
  // 90 days go.
  account_retention_.start(
      "account retention", std::chrono::hours(1),
      [this] {
        console::finish_renames(account_data_);
        console::purge_deleted_accounts(account_data_);
        audit_log_.expire();
      },
      PeriodicTask::First::now);
  // Each access log line moves the file on at midnight; this also does it, and deletes rotated files past
  // access_log_retention, for a node no request reaches.
  access_log_rotation_.start(
      "access log rotation", std::chrono::hours(1), [this] { server_->rotate_logs(); }, PeriodicTask::First::now);
}

void Node::run() {
  io_threads_.start();
  io_.run();
  shutdown();
}

void Node::begin_drain() {
  server_->begin_drain();
}
bool Node::drained() {
  return server_->drained() && downloads_.committing() == 0;
}
Node::InFlight Node::in_flight() {
  return {server_->open_connections(), downloads_.in_flight()};
}
void Node::stop() {
  io_.stop();
}
void Node::reopen_logs() {
  server_->reopen_logs();
}

void Node::shutdown() {
  if (stopped_) return;
  stopped_ = true;
  io_.stop();
  // Downloads stop before the mirror and prefetch syncs are waited for: a mirror, a prefetch or a torrent
  // waiting on them then fails at once.
  mirror_.cancel();
  prefetcher_.cancel();
  file_upstream_->stop();
  downloads_.shutdown();
  hub_.passes().shutdown();
  // Responses still in flight end now, while what they hold (a file's lease on the evictor, a download
  // slot of the limiter) is alive: their sockets close, and the I/O context runs until their coroutines
  // have unwound (a response waiting on a download wakes when the download stopped).
  server_->close_connections();
  io_.restart();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!server_->drained() && std::chrono::steady_clock::now() < deadline) {
    io_.run_one_for(std::chrono::milliseconds(100));
  }
  io_threads_.join();
  // Periodic work before the seed and the pools: a run in progress is waited for, and none adds a torrent
  // to a seed that stopped.
  mirror_sync_.stop();
  prefetch_sync_.stop();
  usage_flush_.stop();
  usage_retention_.stop();
  visibility_check_.stop();
  seed_cached_.stop();
  hosted_gc_.stop();
  session_retention_.stop();
  backup_schedule_.stop();
  account_retention_.stop();
  access_log_rotation_.stop();
  if (udp_tracker_) udp_tracker_->stop();
  if (seeder_) seeder_->stop();
  workers_.join();
  blocking_.join(/*drop_queued=*/true);  // calls no client waits for any more
  flush_usage();                         // what the last interval counted
  spdlog::info("stopped");
}

}  // namespace inferllama::node
