#include "torrent/seeder.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <spdlog/spdlog.h>
#include <libtorrent/add_torrent_params.hpp>
#include <libtorrent/alert_types.hpp>
#include <libtorrent/session.hpp>
#include <libtorrent/session_params.hpp>
#include <libtorrent/session_stats.hpp>
#include <libtorrent/settings_pack.hpp>
#include <libtorrent/torrent_flags.hpp>
#include <libtorrent/torrent_info.hpp>

#include "inferllama/metrics.hpp"
#include "inferllama/network.hpp"
#include "torrent/chunk_disk_io.hpp"
#include "torrent/session_settings.hpp"

namespace inferllama::torrent {
namespace {

Sha1 storage_key(const lt::torrent_info& info) {
  // libtorrent names a torrent's storage by its best info-hash: the truncated v2 hash when it has one.
  const lt::sha1_hash best = info.info_hashes().get_best();
  Sha1 key;
  std::copy(best.begin(), best.end(), key.bytes.begin());
  return key;
}

// The builder's info-hash of one version (or its absence) is the one libtorrent reads from the metainfo.
bool same_hash(const auto& ours, bool theirs_present, const auto& theirs) {
  return ours ? theirs_present && std::equal(theirs.begin(), theirs.end(), ours->bytes.begin()) : !theirs_present;
}

}  // namespace

SeederOptions SeederOptions::from(const Config& config) {
  SeederOptions options;
  options.listen = config.bt_listen;
  options.upload_rate = config.bt_upload_rate;
  options.max_connections = config.bt_max_connections;
  options.max_uploads = config.bt_max_uploads;
  options.dht = config.bt_dht;
  options.lsd = config.bt_lsd;
  options.port_fallback = config.bt_port_fallback;
  return options;
}

struct Seeder::Impl {
  struct Seeded {
    lt::torrent_handle handle;
    Sha1 storage_key;
  };

  std::shared_ptr<ChunkReader> reader;
  std::unique_ptr<lt::session> session;
  std::thread alert_thread;
  std::atomic<bool> stopping{false};
  std::uint16_t port = 0;

  mutable std::mutex mutex;       // seeded, and the session's life
  std::map<Sha1, Seeded> seeded;  // by Torrent::swarm_hash()

  std::atomic<std::uint64_t> uploaded_bytes{0};
  std::atomic<std::uint64_t> peers{0};
  const int sent_payload_metric = lt::find_metric_idx("net.sent_payload_bytes");
  const int peers_metric = lt::find_metric_idx("peer.num_peers_connected");

  void wait_for_listener();
  void run_alerts();
  void handle(const lt::alert& alert);
};

Seeder::Seeder(const ChunkStore& store, const SeederOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->reader = std::make_shared<ChunkReader>(store, options.max_open_chunks, options.on_damaged_chunk);

  lt::settings_pack pack = lt::high_performance_seed();
  apply_peer_settings(pack, PeerSettings{.listen = options.listen,
                                         .dht = options.dht,
                                         .lsd = options.lsd,
                                         .port_fallback = options.port_fallback,
                                         .incoming_utp = true});
  pack.set_int(lt::settings_pack::upload_rate_limit,
               static_cast<int>(std::min<std::uint64_t>(options.upload_rate, INT_MAX)));
  pack.set_int(lt::settings_pack::connections_limit,
               static_cast<int>(std::min<unsigned>(options.max_connections, INT_MAX)));
  pack.set_int(lt::settings_pack::unchoke_slots_limit,
               options.max_uploads == 0 ? -1 : static_cast<int>(std::min<unsigned>(options.max_uploads, INT_MAX)));

  // With port 0 libtorrent binds TCP to a free port and uTP (UDP) to the same number, which another
  // process may hold: then another free port is tried.
  const auto listen = HostPort::parse(options.listen);
  const int attempts = listen && listen->port == 0 ? 8 : 1;
  for (int attempt = 1;; ++attempt) {
    lt::session_params params(pack);
    params.disk_io_constructor = [reader = impl_->reader, threads = options.disk_threads](
                                     lt::io_context& network, const lt::settings_interface&, lt::counters& counters) {
      return make_chunk_disk_io(network, counters, reader, threads);
    };
    impl_->session = std::make_unique<lt::session>(std::move(params));
    try {
      impl_->wait_for_listener();
      break;
    } catch (const std::exception& e) {
      impl_->session.reset();
      if (attempt >= attempts) throw;
      spdlog::debug("BitTorrent listener on a free port: {}; trying another", e.what());
    }
  }
  impl_->alert_thread = std::thread([impl = impl_.get()] { impl->run_alerts(); });
}

Seeder::~Seeder() {
  stop();
}

void Seeder::Impl::wait_for_listener() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::vector<lt::alert*> alerts;
  while (std::chrono::steady_clock::now() < deadline) {
    session->wait_for_alert(std::chrono::milliseconds(100));
    session->pop_alerts(&alerts);
    for (lt::alert* alert : alerts) {
      if (auto* failed = lt::alert_cast<lt::listen_failed_alert>(alert)) {
        throw std::runtime_error("BitTorrent listener: " + failed->message());
      }
      if (auto* ok = lt::alert_cast<lt::listen_succeeded_alert>(alert);
          ok && ok->socket_type == lt::socket_type_t::tcp) {
        port = ok->port;
        spdlog::info("BitTorrent seed: {}", ok->message());
        return;
      }
    }
  }
  throw std::runtime_error("BitTorrent listener did not start");
}

void Seeder::Impl::run_alerts() {
  std::vector<lt::alert*> alerts;
  auto next_stats = std::chrono::steady_clock::now();
  while (!stopping.load()) {
    if (std::chrono::steady_clock::now() >= next_stats) {
      session->post_session_stats();
      next_stats = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    }
    session->wait_for_alert(std::chrono::milliseconds(200));
    session->pop_alerts(&alerts);
    for (const lt::alert* alert : alerts) handle(*alert);
  }
}

void Seeder::Impl::handle(const lt::alert& alert) {
  if (auto* stats = lt::alert_cast<lt::session_stats_alert>(&alert)) {
    const auto values = stats->counters();
    if (sent_payload_metric >= 0) uploaded_bytes = static_cast<std::uint64_t>(values[sent_payload_metric]);
    if (peers_metric >= 0) peers = static_cast<std::uint64_t>(values[peers_metric]);
  } else if (lt::alert_cast<lt::file_error_alert>(&alert) || lt::alert_cast<lt::torrent_error_alert>(&alert) ||
             lt::alert_cast<lt::listen_failed_alert>(&alert)) {
    spdlog::error("BitTorrent: {}", alert.message());
  } else if (alert.category() & lt::alert_category::error) {
    spdlog::debug("BitTorrent: {}", alert.message());
  } else if (lt::alert_cast<lt::performance_alert>(&alert)) {
    spdlog::warn("BitTorrent: {}", alert.message());
  }
}

std::string Seeder::add(const Torrent& torrent) {
  lt::error_code ec;
  auto info = std::make_shared<lt::torrent_info>(
      lt::span<const char>(torrent.metainfo.data(), static_cast<std::ptrdiff_t>(torrent.metainfo.size())), ec,
      lt::from_span);
  if (ec) return "metainfo: " + ec.message();
  if (static_cast<std::size_t>(info->num_pieces()) != torrent.pieces.size()) {
    return "the torrent has " + std::to_string(info->num_pieces()) + " pieces, its piece table " +
           std::to_string(torrent.pieces.size());
  }
  const lt::info_hash_t& hashes = info->info_hashes();
  if (!same_hash(torrent.info_hash_v1, hashes.has_v1(), hashes.v1) ||
      !same_hash(torrent.info_hash_v2, hashes.has_v2(), hashes.v2)) {
    return "the metainfo's info-hashes are not the torrent's (" + torrent.swarm_hash().hex() + ")";
  }

  lt::add_torrent_params params;
  params.ti = info;
  // The disk backend reads chunks, never files under a save path.
  params.save_path = ".";
  // Not auto-managed: libtorrent never queues or pauses a seed of the node on its own.
  params.flags = lt::torrent_flags::seed_mode;
  // Every chunk was verified when it was stored: nothing is hashed again before it is sent.
  params.verified_pieces.resize(info->num_pieces(), true);

  std::lock_guard lock(impl_->mutex);
  if (!impl_->session) return "the seeder is stopped";
  const Sha1 swarm = torrent.swarm_hash();
  if (impl_->seeded.contains(swarm)) return "already seeded";
  const Sha1 key = storage_key(*info);
  if (!impl_->reader->publish(key, torrent.pieces)) return "already seeded";
  lt::torrent_handle handle = impl_->session->add_torrent(std::move(params), ec);
  if (ec) {
    impl_->reader->withdraw(key);
    return "add torrent: " + ec.message();
  }
  impl_->seeded.emplace(swarm, Impl::Seeded{handle, key});
  return "";
}

bool Seeder::remove(const Sha1& swarm_hash) {
  std::lock_guard lock(impl_->mutex);
  auto it = impl_->seeded.find(swarm_hash);
  if (it == impl_->seeded.end()) return false;
  // Withdrawn first: libtorrent removes the torrent asynchronously, and reads must stop now.
  impl_->reader->withdraw(it->second.storage_key);
  if (impl_->session) impl_->session->remove_torrent(it->second.handle);
  impl_->seeded.erase(it);
  return true;
}

bool Seeder::seeds(const Sha1& swarm_hash) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->seeded.contains(swarm_hash);
}

std::uint16_t Seeder::listen_port() const {
  return impl_->port;
}

std::size_t Seeder::torrents() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->seeded.size();
}

SeederStats Seeder::stats() const {
  SeederStats stats;
  stats.uploaded_bytes = impl_->uploaded_bytes.load();
  stats.peers = impl_->peers.load();
  stats.torrents = torrents();
  stats.chunk_bytes_read = impl_->reader->bytes_read();
  stats.read_errors = impl_->reader->read_errors();
  return stats;
}

namespace {
constexpr metrics::FamilySpec kUploadedBytes{"inferllama_bt_uploaded_bytes_total", "counter",
                                             "Payload bytes sent to BitTorrent peers"};
constexpr metrics::FamilySpec kPeers{"inferllama_bt_peers", "gauge", "BitTorrent peer connections open"};
constexpr metrics::FamilySpec kTorrents{"inferllama_bt_torrents", "gauge", "Torrents seeded"};
constexpr metrics::FamilySpec kChunkReadBytes{"inferllama_bt_chunk_read_bytes_total", "counter",
                                              "Bytes read from chunks for BitTorrent peers"};
constexpr metrics::FamilySpec kReadErrors{"inferllama_bt_read_errors_total", "counter",
                                          "Chunk reads for BitTorrent peers that failed"};
}  // namespace

void Seeder::render_metrics(std::string& out) const {
  const SeederStats s = stats();
  using Sample = std::pair<const metrics::FamilySpec*, std::uint64_t>;
  for (const auto& [family, value] :
       {Sample{&kUploadedBytes, s.uploaded_bytes}, Sample{&kPeers, s.peers}, Sample{&kTorrents, s.torrents},
        Sample{&kChunkReadBytes, s.chunk_bytes_read}, Sample{&kReadErrors, s.read_errors}}) {
    metrics::write_header(out, *family);
    metrics::write_sample(out, *family, "", static_cast<double>(value));
  }
}

void Seeder::stop() {
  if (impl_->stopping.exchange(true)) return;
  if (impl_->alert_thread.joinable()) impl_->alert_thread.join();
  std::unique_ptr<lt::session> session;
  {
    std::lock_guard lock(impl_->mutex);
    for (const auto& [info_hash, seeded] : impl_->seeded) impl_->reader->withdraw(seeded.storage_key);
    impl_->seeded.clear();
    session = std::move(impl_->session);
  }
  session->pause();
  // The proxy's destructor waits until the session has closed its connections and its disk backend.
  lt::session_proxy closing = session->abort();
  session.reset();
}

}  // namespace inferllama::torrent
