#include "torrent/fetcher.hpp"

#include <mutex>
#include <optional>
#include <set>

#include <spdlog/spdlog.h>
#include <boost/asio/ip/address.hpp>
#include <libtorrent/add_torrent_params.hpp>
#include <libtorrent/alert_types.hpp>
#include <libtorrent/session.hpp>
#include <libtorrent/session_params.hpp>
#include <libtorrent/torrent_flags.hpp>
#include <libtorrent/torrent_info.hpp>
#include <libtorrent/torrent_status.hpp>

#include "torrent/session_settings.hpp"

namespace inferllama::torrent {

struct TorrentFetcher::Impl {
  std::mutex mutex;  // one fetch at a time: each pops the session's alerts
  lt::session session;

  explicit Impl(lt::session_params params) : session(std::move(params)) {}

  void drop(const lt::torrent_handle& handle);
};

namespace {

lt::session_params fetcher_params(const FetcherOptions& options) {
  lt::settings_pack pack;
  apply_peer_settings(pack, PeerSettings{.listen = options.listen, .dht = options.dht, .lsd = options.lsd});
  return lt::session_params(std::move(pack));
}

FetchProgress progress_of(const lt::torrent_status& status) {
  return FetchProgress{static_cast<std::uint64_t>(status.total_wanted_done),
                       static_cast<std::uint64_t>(status.total_wanted), status.num_peers};
}

}  // namespace

TorrentFetcher::TorrentFetcher(const FetcherOptions& options)
    : impl_(std::make_unique<Impl>(fetcher_params(options))) {}

TorrentFetcher::~TorrentFetcher() = default;

// Removes the torrent and waits until libtorrent says it is gone, so the same torrent can be fetched
// again at once and its files are no longer being written.
void TorrentFetcher::Impl::drop(const lt::torrent_handle& handle) {
  session.remove_torrent(handle);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::vector<lt::alert*> alerts;
  while (std::chrono::steady_clock::now() < deadline) {
    session.wait_for_alert(std::chrono::milliseconds(100));
    session.pop_alerts(&alerts);
    for (lt::alert* alert : alerts) {
      if (auto* removed = lt::alert_cast<lt::torrent_removed_alert>(alert); removed && removed->handle == handle)
        return;
    }
  }
  spdlog::warn("torrent fetch: libtorrent did not confirm removing a torrent");
}

FetchResult TorrentFetcher::fetch(const FetchRequest& request, std::stop_token stop) {
  std::lock_guard lock(impl_->mutex);
  lt::session& session = impl_->session;
  FetchResult result;

  lt::error_code ec;
  auto info = std::make_shared<lt::torrent_info>(
      lt::span<const char>(request.metainfo.data(), static_cast<std::ptrdiff_t>(request.metainfo.size())), ec,
      lt::from_span);
  if (ec) return {"metainfo: " + ec.message(), 0};

  std::vector<lt::tcp::endpoint> peers;
  for (const PeerEndpoint& peer : request.peers) {
    auto address = boost::asio::ip::make_address(peer.address, ec);
    if (ec) return {"peer address " + peer.address + ": " + ec.message(), 0};
    peers.emplace_back(address, peer.port);
  }

  lt::add_torrent_params params;
  params.ti = info;
  params.save_path = request.directory.string();
  if (!request.skip.empty()) {
    // Files the caller holds are not fetched; every file starts on a piece boundary in the node's
    // torrents, so no piece of a wanted file is given up with them.
    const std::set<std::string> skipped(request.skip.begin(), request.skip.end());
    const lt::file_storage& files = info->files();
    params.file_priorities.assign(static_cast<std::size_t>(files.num_files()), lt::default_priority);
    for (const lt::file_index_t i : files.file_range()) {
      std::string path = files.file_path(i);
      if (files.num_files() > 1 && path.starts_with(info->name() + "/")) path.erase(0, info->name().size() + 1);
      if (skipped.contains(path))
        params.file_priorities[static_cast<std::size_t>(static_cast<int>(i))] = lt::dont_download;
    }
  }
  // Started at once, never queued behind libtorrent's limits on active torrents.
  params.flags &= ~(lt::torrent_flags::auto_managed | lt::torrent_flags::paused);
  lt::torrent_handle handle = session.add_torrent(std::move(params), ec);
  if (ec) return {"add torrent: " + ec.message(), 0};
  for (const auto& peer : peers) handle.connect_peer(peer);

  const auto deadline = std::chrono::steady_clock::now() + request.timeout;
  auto next_progress = std::chrono::steady_clock::now();
  bool finished = false;
  std::vector<lt::alert*> alerts;
  for (;;) {
    if (stop.stop_requested()) {
      result.error = "cancelled";
      break;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      const FetchProgress progress = progress_of(handle.status());
      result.error = "timed out with " + std::to_string(progress.done) + " of " + std::to_string(progress.total) +
                     " bytes from " + std::to_string(progress.peers) + " peers";
      break;
    }
    if (request.on_progress && now >= next_progress) {
      request.on_progress(progress_of(handle.status()));
      next_progress = now + std::chrono::milliseconds(500);
    }

    session.wait_for_alert(
        std::min<std::chrono::steady_clock::duration>(deadline - now, std::chrono::milliseconds(200)));
    session.pop_alerts(&alerts);
    bool flushed = false;
    for (lt::alert* alert : alerts) {
      auto* about = dynamic_cast<lt::torrent_alert*>(alert);
      if (!about || about->handle != handle) continue;
      if (lt::alert_cast<lt::torrent_finished_alert>(alert) && !finished) {
        // Every piece passed its hash; the last blocks may still be in libtorrent's write queue.
        finished = true;
        handle.flush_cache();
      } else if (lt::alert_cast<lt::cache_flushed_alert>(alert) && finished) {
        flushed = true;
      } else if (lt::alert_cast<lt::torrent_error_alert>(alert) || lt::alert_cast<lt::file_error_alert>(alert)) {
        result.error = alert->message();
      }
    }
    if (!result.error.empty()) break;
    if (flushed) {
      const lt::torrent_status status = handle.status();
      result.bytes = static_cast<std::uint64_t>(status.total_wanted_done);
      if (request.on_progress) request.on_progress(progress_of(status));
      break;
    }
  }
  impl_->drop(handle);
  return result;
}

}  // namespace inferllama::torrent
