#include "torrent/swarm_upstream.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>
#include <libtorrent/add_torrent_params.hpp>
#include <libtorrent/alert_types.hpp>
#include <libtorrent/session.hpp>
#include <libtorrent/session_params.hpp>
#include <libtorrent/torrent_flags.hpp>
#include <libtorrent/torrent_info.hpp>
#include <libtorrent/torrent_status.hpp>

#include "inferllama/digest.hpp"
#include "inferllama/metrics.hpp"
#include "inferllama/network.hpp"
#include "torrent/session_settings.hpp"
#include "util/url.hpp"

namespace inferllama::torrent {
namespace {

// Bytes a range reader asks for ahead of the piece it waits on (at least one piece, at most four):
// enough to keep the peers busy, little enough that the pieces read back and held stay small.
constexpr std::uint64_t kReadAheadBytes = 16u << 20;
constexpr std::uint64_t kMaxReadAhead = 4;
// Plans are cheap to make again; the map of them stays bounded however many files the node fetches.
constexpr std::size_t kMaxPlans = 4096;

bool is_lower_hex(std::string_view s, std::size_t n) {
  return s.size() == n && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// The parent's torrent route for `url` if it is the parent's resolve URL of a commit:
// {upstream}/{datasets/|spaces/}{repo}/resolve/{commit}/{path} -> {upstream}/api/{type}s/{repo}/torrent/{commit}/{path}
std::optional<std::string> torrent_url_for(const std::string& upstream, const std::string& url) {
  if (!url.starts_with(upstream + "/")) return std::nullopt;
  std::string_view rest(url);
  rest.remove_prefix(upstream.size() + 1);
  std::string_view type = "models";
  for (std::string_view kind : {"datasets", "spaces"}) {
    if (rest.starts_with(kind) && rest.substr(kind.size()).starts_with("/")) {
      type = kind;
      rest.remove_prefix(kind.size() + 1);
      break;
    }
  }
  const auto marker = rest.find("/resolve/");
  if (marker == std::string_view::npos || marker == 0) return std::nullopt;
  const std::string_view repo = rest.substr(0, marker);
  if (std::count(repo.begin(), repo.end(), '/') > 1) return std::nullopt;
  std::string_view after = rest.substr(marker + std::string_view("/resolve/").size());
  const auto slash = after.find('/');
  if (slash == std::string_view::npos || slash + 1 == after.size() || !is_lower_hex(after.substr(0, slash), 40))
    return std::nullopt;
  if (after.find_first_of("?#") != std::string_view::npos) return std::nullopt;
  return upstream + "/api/" + std::string(type) + "/" + std::string(repo) + "/torrent/" + std::string(after) +
         "?wait=false";
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) v = v * 10 + static_cast<std::uint64_t>(c - '0');
  return v;
}

// How one URL's ranges are fetched: decided once, shared by every connection of its download.
struct Plan {
  bool swarm = false;
  std::shared_ptr<const lt::torrent_info> torrent;  // when swarm
};

struct PlanSlot {
  std::mutex mutex;  // held while the plan is being made: the other connections wait for it
  std::optional<Plan> plan;
};

// A piece some range reader wants: read back from libtorrent once it passed its hash.
struct WantedPiece {
  int readers = 0;
  bool requested = false;
  boost::shared_array<char> buffer;
  int size = 0;
  std::string error;
};

// One torrent in the session, shared by every connection reading a range of its file.
struct SwarmFile {
  lt::torrent_handle handle;
  std::shared_ptr<const lt::torrent_info> torrent;
  std::filesystem::path directory;
  int readers = 0;
  bool removing = false;
  bool complete = false;  // every piece is in: nothing more will be read, remove at once
  std::chrono::steady_clock::time_point idle_since = std::chrono::steady_clock::now();
  std::string error;
  std::map<int, WantedPiece> pieces;
};

class SwarmPreferring final : public SwarmPreferringUpstream {
 public:
  SwarmPreferring(Upstream& http, const Config& config)
      : http_(http),
        upstream_(config.upstream),
        threshold_(config.swarm_threshold),
        stall_timeout_(config.upstream_timeout),
        staging_(config.data_dir / "swarm-staging"),
        // The seed's host at any free port; every interface when the node does not seed (bt_listen empty).
        listen_(HostPort{HostPort::parse(config.bt_listen).value_or(HostPort{"0.0.0.0"}).host, 0}.str()) {
    // What a crashed run left: the chunk store is the only copy the node keeps.
    std::error_code ec;
    std::filesystem::remove_all(staging_, ec);
  }

  ~SwarmPreferring() override {
    stop();
    if (alert_thread_.joinable()) alert_thread_.join();
    session_.reset();
    std::error_code ec;
    std::filesystem::remove_all(staging_, ec);
  }

  UpstreamResponse fetch(const UpstreamRequest& request) override { return http_.fetch(request); }

  RangeResult fetch_range(const std::string& url, const HeaderList& headers, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
    if (threshold_ > 0 && !stopping_) {
      const Plan plan = plan_for(url, headers);
      if (plan.swarm) {
        RangeResult from_swarm = read_from_swarm(plan.torrent, first, last, sink);
        if (from_swarm.error.empty() || stopping_) return from_swarm;
        // Never worse than HTTP: this and every later range of the file go over HTTP.
        spdlog::warn("parent swarm: {} (bytes {}-{} of {}); fetching over HTTP", from_swarm.error, first, last,
                     url::redact(url));
        ++fallbacks_;
        forget_swarm(url);
        RangeResult rest = over_http(url, headers, first + from_swarm.received, last, sink);
        rest.received += from_swarm.received;
        return rest;
      }
    }
    return over_http(url, headers, first, last, sink);
  }

  void render_metrics(std::string& out) const override {
    static constexpr metrics::FamilySpec kSwarmBytes{"inferllama_parent_swarm_bytes_total", "counter",
                                                     "Bytes of upstream files fetched from the parent node's swarm"};
    static constexpr metrics::FamilySpec kHttpBytes{"inferllama_parent_http_bytes_total", "counter",
                                                    "Bytes of upstream files fetched over HTTP"};
    static constexpr metrics::FamilySpec kFallbacks{
        "inferllama_parent_swarm_fallbacks_total", "counter",
        "Large files or ranges fetched over HTTP because the parent's swarm could not serve them"};
    static constexpr metrics::FamilySpec kTorrents{"inferllama_parent_swarm_torrents", "gauge",
                                                   "Parent torrents being downloaded"};
    std::size_t torrents;
    {
      std::lock_guard lock(mutex_);
      torrents = files_.size();
    }
    using Sample = std::pair<const metrics::FamilySpec*, std::uint64_t>;
    for (const auto& [family, value] :
         {Sample{&kSwarmBytes, swarm_bytes_.load()}, Sample{&kHttpBytes, http_bytes_.load()},
          Sample{&kFallbacks, fallbacks_.load()}, Sample{&kTorrents, torrents}}) {
      metrics::write_header(out, *family);
      metrics::write_sample(out, *family, "", static_cast<double>(value));
    }
  }

  void stop() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
  }

 private:
  RangeResult over_http(const std::string& url, const HeaderList& headers, std::uint64_t first, std::uint64_t last,
                        const BodySink& sink) {
    RangeResult r = http_.fetch_range(url, headers, first, last, sink);
    http_bytes_ += r.received;
    return r;
  }

  std::shared_ptr<PlanSlot> slot_for(const std::string& url) {
    std::lock_guard lock(plans_mutex_);
    if (plans_.size() >= kMaxPlans && !plans_.contains(url)) plans_.clear();
    auto& slot = plans_[url];
    if (!slot) slot = std::make_shared<PlanSlot>();
    return slot;
  }

  void forget_swarm(const std::string& url) {
    auto slot = slot_for(url);
    std::lock_guard lock(slot->mutex);
    slot->plan = Plan{};
  }

  Plan plan_for(const std::string& url, const HeaderList& headers) {
    if (parent_is_node_.load() == kNotNode) return {};
    auto torrent_url = torrent_url_for(upstream_, url);
    if (!torrent_url) return {};
    auto slot = slot_for(url);
    std::lock_guard lock(slot->mutex);
    if (!slot->plan) slot->plan = make_plan(url, *torrent_url, headers);
    return *slot->plan;
  }

  // One HEAD tells whether the parent is a node and how large the file is; a large file's torrent comes
  // from the parent only if it holds the file already (?wait=false: a 409 otherwise).
  Plan make_plan(const std::string& url, const std::string& torrent_url, const HeaderList& headers) {
    UpstreamResponse head = http_.fetch(UpstreamRequest{"HEAD", url, headers, ""});
    if (head.status != 200) return {};
    std::string node_header(kNodeHeader);
    for (char& c : node_header) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!head.header(node_header)) {
      parent_is_node_ = kNotNode;
      spdlog::info("the upstream {} is not a node: files come over HTTP", url::redact(upstream_));
      return {};
    }
    parent_is_node_ = kNode;
    auto size = parse_u64(head.header("x-linked-size").value_or(head.header("content-length").value_or("")));
    if (!size || *size < threshold_) return {};

    UpstreamResponse answer = http_.fetch(UpstreamRequest{"GET", torrent_url, headers, ""});
    if (answer.status != 200) {
      spdlog::info("parent swarm: no torrent for {} (HTTP {}{}); fetching over HTTP", url::redact(url), answer.status,
                   answer.error.empty() ? "" : ", " + answer.error);
      ++fallbacks_;
      return {};
    }
    lt::error_code ec;
    auto info = std::make_shared<lt::torrent_info>(
        lt::span<const char>(answer.body.data(), static_cast<std::ptrdiff_t>(answer.body.size())), ec, lt::from_span);
    if (ec || info->num_files() != 1 || static_cast<std::uint64_t>(info->total_size()) != *size ||
        !info->info_hashes().has_v1()) {
      spdlog::warn("parent swarm: the torrent of {} does not describe its {} bytes; fetching over HTTP",
                   url::redact(url), *size);
      ++fallbacks_;
      return {};
    }
    // Peers only: the web seed is the parent's HTTP route, which this path exists to spare.
    info->clear_web_seeds();
    return Plan{true, std::move(info)};
  }

  // Serves [first, last] from the torrent's pieces in order, as libtorrent verifies them.
  RangeResult read_from_swarm(const std::shared_ptr<const lt::torrent_info>& torrent, std::uint64_t first,
                              std::uint64_t last, const BodySink& sink) {
    RangeResult result{206, "", 0};
    std::unique_lock lock(mutex_);
    std::shared_ptr<SwarmFile> file = join_locked(lock, torrent, result.error);
    if (!file) return result;
    const std::uint64_t piece_length = static_cast<std::uint64_t>(torrent->piece_length());
    const int last_piece = static_cast<int>(last / piece_length);
    std::deque<int> held;  // pieces this reader counts itself among the readers of, in order
    int next_to_hold = static_cast<int>(first / piece_length);
    const int read_ahead =
        static_cast<int>(std::clamp<std::uint64_t>(kReadAheadBytes / piece_length, 1, kMaxReadAhead));

    // The whole range is wanted; deadlines make the pieces near the read position come first.
    std::vector<std::pair<lt::piece_index_t, lt::download_priority_t>> priorities;
    for (int p = next_to_hold; p <= last_piece; ++p)
      priorities.emplace_back(lt::piece_index_t(p), lt::default_priority);
    file->handle.prioritize_pieces(priorities);

    auto release = [&](int piece) {
      auto it = file->pieces.find(piece);
      if (it != file->pieces.end() && --it->second.readers == 0) file->pieces.erase(it);
    };
    std::uint64_t offset = first;
    auto last_progress = std::chrono::steady_clock::now();
    while (offset <= last) {
      const int piece = static_cast<int>(offset / piece_length);
      for (; next_to_hold <= last_piece && next_to_hold < piece + read_ahead; ++next_to_hold) {
        WantedPiece& wanted = file->pieces[next_to_hold];
        ++wanted.readers;
        held.push_back(next_to_hold);
        if (!wanted.requested) {
          wanted.requested = true;
          // Milliseconds from now, in piece order; an available piece is read back at once.
          file->handle.set_piece_deadline(lt::piece_index_t(next_to_hold), (next_to_hold - piece + 1) * 100,
                                          lt::torrent_handle::alert_when_available);
        }
      }
      WantedPiece& wanted = file->pieces[piece];
      const bool arrived = changed_.wait_until(lock, last_progress + stall_timeout_, [&] {
        return wanted.buffer || !wanted.error.empty() || !file->error.empty() || stopping_;
      });
      if (stopping_) {
        result.error = "the node is stopping";
        break;
      }
      if (!arrived) {
        result.error = "no piece from the parent's swarm in " + std::to_string(stall_timeout_.count()) + " ms";
        break;
      }
      if (!file->error.empty() || !wanted.error.empty()) {
        result.error = file->error.empty() ? wanted.error : file->error;
        break;
      }
      const std::uint64_t piece_start = static_cast<std::uint64_t>(piece) * piece_length;
      const std::uint64_t within = offset - piece_start;
      const std::uint64_t piece_end =
          std::min<std::uint64_t>(piece_start + static_cast<std::uint64_t>(wanted.size), last + 1);
      if (piece_end <= offset) {
        result.error = "piece " + std::to_string(piece) + " from the parent's swarm is shorter than its torrent says";
        break;
      }
      boost::shared_array<char> buffer = wanted.buffer;  // stays alive while the sink runs unlocked
      const std::size_t length = static_cast<std::size_t>(piece_end - offset);
      lock.unlock();
      const std::size_t taken = sink(std::span<const char>(buffer.get() + within, length));
      lock.lock();
      result.received += taken;
      swarm_bytes_ += taken;
      offset += taken;
      last_progress = std::chrono::steady_clock::now();
      if (taken < length) break;  // the download took the rest of this range elsewhere
      release(piece);
      held.pop_front();
    }
    for (int piece : held) release(piece);
    leave_locked(*file);
    return result;
  }

  // The file's torrent in the session, added if it is not there yet; null with `error` set.
  std::shared_ptr<SwarmFile> join_locked(std::unique_lock<std::mutex>& lock,
                                         const std::shared_ptr<const lt::torrent_info>& torrent, std::string& error) {
    const std::string key = hex(torrent->info_hashes().v1);
    // A torrent being removed must be gone before it can be added again.
    const bool settled = changed_.wait_for(lock, stall_timeout_, [&] {
      auto it = files_.find(key);
      return stopping_ || it == files_.end() || !it->second->removing;
    });
    if (stopping_) {
      error = "the node is stopping";
      return nullptr;
    }
    if (!settled) {
      error = "the parent's torrent is still being removed";
      return nullptr;
    }
    if (auto it = files_.find(key); it != files_.end()) {
      ++it->second->readers;
      return it->second;
    }
    if (!session_) start_session_locked();
    auto file = std::make_shared<SwarmFile>();
    file->torrent = torrent;
    file->directory = staging_ / key;
    lt::add_torrent_params params;
    params.ti = std::make_shared<lt::torrent_info>(*torrent);
    params.save_path = file->directory.string();
    params.flags &= ~(lt::torrent_flags::auto_managed | lt::torrent_flags::paused);
    // Only the ranges readers ask for are downloaded (a resumed download needs only part of the file).
    params.piece_priorities.assign(static_cast<std::size_t>(torrent->num_pieces()), lt::dont_download);
    lt::error_code ec;
    file->handle = session_->add_torrent(std::move(params), ec);
    if (ec) {
      error = "cannot add the parent's torrent: " + ec.message();
      return nullptr;
    }
    spdlog::info("parent swarm: downloading {} ({} bytes) from its peers", torrent->name(), torrent->total_size());
    file->readers = 1;
    files_.emplace(key, file);
    return file;
  }

  void leave_locked(SwarmFile& file) {
    if (--file.readers > 0) return;
    file.idle_since = std::chrono::steady_clock::now();
    const lt::torrent_status status = file.handle.status(lt::status_flags_t{});
    file.complete = status.num_pieces == file.torrent->num_pieces();
  }

  static std::string hex(const lt::sha1_hash& hash) {
    return inferllama::hex(std::string_view(hash.data(), hash.size()));
  }

  void start_session_locked() {
    lt::settings_pack pack;
    apply_peer_settings(pack, PeerSettings{.listen = listen_});
    // A torrent whose wanted pieces are all in is "finished" between two ranges of the same file; its
    // seeds must stay connected for the next range.
    pack.set_bool(lt::settings_pack::close_redundant_connections, false);
    session_ = std::make_unique<lt::session>(lt::session_params(std::move(pack)));
    alert_thread_ = std::thread([this] { run_alerts(); });
  }

  void run_alerts() {
    std::vector<lt::alert*> alerts;
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
      }
      session_->wait_for_alert(std::chrono::milliseconds(200));
      session_->pop_alerts(&alerts);
      std::lock_guard lock(mutex_);
      for (lt::alert* alert : alerts) handle_alert_locked(alert);
      remove_idle_locked();
      changed_.notify_all();
    }
  }

  std::shared_ptr<SwarmFile> file_of_locked(const lt::torrent_handle& handle) {
    for (auto& [key, file] : files_) {
      if (file->handle == handle) return file;
    }
    return nullptr;
  }

  void handle_alert_locked(lt::alert* alert) {
    if (auto* read = lt::alert_cast<lt::read_piece_alert>(alert)) {
      auto file = file_of_locked(read->handle);
      if (!file) return;
      auto it = file->pieces.find(static_cast<int>(read->piece));
      if (it == file->pieces.end()) return;  // every reader of it has gone
      if (read->error) {
        it->second.error =
            "reading piece " + std::to_string(static_cast<int>(read->piece)) + ": " + read->error.message();
      } else {
        it->second.buffer = read->buffer;
        it->second.size = read->size;
      }
    } else if (auto* failed = lt::alert_cast<lt::torrent_error_alert>(alert)) {
      if (auto file = file_of_locked(failed->handle)) file->error = failed->message();
    } else if (auto* file_failed = lt::alert_cast<lt::file_error_alert>(alert)) {
      if (auto file = file_of_locked(file_failed->handle)) file->error = file_failed->message();
    } else if (auto* deleted = lt::alert_cast<lt::torrent_deleted_alert>(alert)) {
      forget_locked(hex(deleted->info_hashes.v1));
    } else if (auto* not_deleted = lt::alert_cast<lt::torrent_delete_failed_alert>(alert)) {
      forget_locked(hex(not_deleted->info_hashes.v1));
    }
  }

  void forget_locked(const std::string& key) {
    auto it = files_.find(key);
    if (it == files_.end()) return;
    std::error_code ec;
    std::filesystem::remove_all(it->second->directory, ec);
    files_.erase(it);
  }

  // A torrent nobody reads goes with its files: at once when every piece is in (the node's chunk store
  // holds the file now), after a stall timeout otherwise (a download between retries comes back sooner).
  void remove_idle_locked() {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [key, file] : files_) {
      if (file->readers > 0 || file->removing) continue;
      if (file->complete || !file->error.empty() || now - file->idle_since >= stall_timeout_) {
        file->removing = true;
        session_->remove_torrent(file->handle, lt::session::delete_files);
      }
    }
  }

  static constexpr int kUnknown = 0, kNode = 1, kNotNode = 2;

  Upstream& http_;
  const std::string upstream_;
  const std::uint64_t threshold_;
  const std::chrono::milliseconds stall_timeout_;
  const std::filesystem::path staging_;
  const std::string listen_;
  std::atomic<int> parent_is_node_{kUnknown};

  std::mutex plans_mutex_;
  std::map<std::string, std::shared_ptr<PlanSlot>> plans_;

  mutable std::mutex mutex_;  // the session's torrents and the pieces their readers wait for
  std::condition_variable changed_;
  std::atomic<bool> stopping_{false};     // set under mutex_, so that no waiter misses it
  std::unique_ptr<lt::session> session_;  // started when the first file comes from the swarm
  std::thread alert_thread_;
  std::map<std::string, std::shared_ptr<SwarmFile>> files_;  // by v1 info-hash, hex

  std::atomic<std::uint64_t> swarm_bytes_{0};
  std::atomic<std::uint64_t> http_bytes_{0};
  std::atomic<std::uint64_t> fallbacks_{0};
};

}  // namespace

std::unique_ptr<SwarmPreferringUpstream> make_swarm_preferring_upstream(Upstream& http, const Config& config) {
  return std::make_unique<SwarmPreferring>(http, config);
}

}  // namespace inferllama::torrent
