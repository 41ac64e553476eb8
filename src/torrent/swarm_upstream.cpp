#include "torrent/swarm_upstream.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>
#include <libtorrent/add_torrent_params.hpp>
#include <libtorrent/alert_types.hpp>
#include <libtorrent/session.hpp>
#include <libtorrent/session_params.hpp>
#include <libtorrent/torrent_flags.hpp>
#include <libtorrent/torrent_info.hpp>
#include <libtorrent/torrent_status.hpp>

#include "inferllama/cluster.hpp"
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

// How one URL's ranges are fetched, shared by every connection of its download: decided once, and
// changed when the parent's torrent arrives or the swarm fails.
enum class Route {
  http,
  swarm,
  // The parent is still fetching the file, so it has no torrent yet (a torrent needs every piece's hash):
  // ranges stream from the parent over HTTP meanwhile, and move to the swarm the moment the torrent exists.
  http_until_swarm,
};

struct Plan {
  Route route = Route::http;
  std::shared_ptr<const lt::torrent_info> torrent;  // when swarm
  std::uint64_t size = 0;                           // of the file, when not http
};

struct PlanSlot {
  std::mutex mutex;  // held while the plan is being made or changed: the other connections wait for it
  std::optional<Plan> plan;
  // http_until_swarm: the parent's torrent arrived and `plan` is a swarm plan now; HTTP ranges stop.
  std::atomic<bool> swarm_ready{false};
};

// A file streaming over HTTP while its parent fetches it: polled for the parent's torrent.
struct PendingTorrent {
  std::shared_ptr<PlanSlot> slot;
  std::string torrent_url;
  HeaderList headers;
  std::uint64_t size = 0;
  int http_readers = 0;
};

// A piece some range reader wants: read back from libtorrent once it passed its hash.
struct WantedPiece {
  int readers = 0;
  bool requested = false;  // read_piece() was called: its read_piece_alert brings the bytes
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
  bool complete = false;  // every piece is in: nothing more will be read here; peers may still need it
  std::chrono::steady_clock::time_point idle_since = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point piece_arrived_at = std::chrono::steady_clock::now();
  std::string error;
  std::map<int, WantedPiece> pieces;
  // Pieces no peer has come from the parent over HTTP (its resolve URL, the caller's credentials).
  std::string url;
  HeaderList headers;
  std::set<int> from_parent;  // pieces added from the parent's HTTP answers, until they pass their hash
  int feeders = 0;            // threads fetching pieces over HTTP for this file
  int failed_pieces = 0;      // pieces from the parent that failed their hash
};

class SwarmPreferring final : public SwarmPreferringUpstream {
 public:
  SwarmPreferring(Upstream& http, const Config& config)
      : http_(http),
        upstream_(config.upstream),
        // With one upstream, learning that it is not a node spares a HEAD per file; with several (or a
        // fallback), each file's upstream may be another.
        single_upstream_(config.upstream_parents.size() <= 1 && config.upstream_fallback.empty()),
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
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return feeders_running_ == 0; });
    }
    if (poller_.joinable()) poller_.join();
    if (alert_thread_.joinable()) alert_thread_.join();
    session_.reset();
    std::error_code ec;
    std::filesystem::remove_all(staging_, ec);
  }

  UpstreamResponse fetch(const UpstreamRequest& request) override { return http_.fetch(request); }

  RangeResult fetch_range(const std::string& url, const HeaderList& headers, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
    auto torrent_url = threshold_ > 0 && !stopping_ ? torrent_url_for(upstream_, url) : std::nullopt;
    if (!torrent_url) return over_http(url, headers, first, last, sink);
    auto slot = slot_for(url);
    Plan plan = plan_for(*slot, url, *torrent_url, headers);
    RangeResult done{206, "", 0};
    if (plan.route == Route::http_until_swarm) {
      bool moved = false;
      done = until_swarm(slot, url, *torrent_url, headers, plan.size, first, last, sink, moved);
      if (!moved || !done.error.empty() || first + done.received > last) return done;
      std::lock_guard lock(slot->mutex);
      plan = *slot->plan;
    }
    if (plan.route != Route::swarm) {  // another connection's swarm read failed meanwhile
      RangeResult rest = over_http(url, headers, first + done.received, last, sink);
      rest.received += done.received;
      return rest;
    }
    RangeResult from_swarm = read_from_swarm(plan.torrent, url, headers, first + done.received, last, sink);
    from_swarm.received += done.received;
    if (from_swarm.error.empty() || stopping_) return from_swarm;
    // Never worse than HTTP: this and every later range of the file go over HTTP.
    spdlog::warn("parent swarm: {} (bytes {}-{} of {}); fetching over HTTP", from_swarm.error,
                 first + from_swarm.received, last, url::redact(url));
    ++fallbacks_;
    {
      std::lock_guard lock(slot->mutex);
      slot->plan = Plan{};
    }
    RangeResult rest = over_http(url, headers, first + from_swarm.received, last, sink);
    rest.received += from_swarm.received;
    return rest;
  }

  ParentSwarmStatus status() const override {
    ParentSwarmStatus out;
    out.swarm_bytes = swarm_bytes_.load();
    out.http_bytes = http_bytes_.load();
    out.fed_bytes = fed_bytes_.load();
    out.fallbacks = fallbacks_.load();
    std::lock_guard lock(snapshot_mutex_);
    out.peer_bytes = snapshot_.peer_bytes;
    out.uploaded_bytes = snapshot_.uploaded_bytes;
    out.swarms = snapshot_.swarms;
    return out;
  }

  void render_metrics(std::string& out) const override {
    static constexpr metrics::FamilySpec kSwarmBytes{"inferllama_parent_swarm_bytes_total", "counter",
                                                     "Bytes of upstream files fetched from the parent node's swarm"};
    static constexpr metrics::FamilySpec kHttpBytes{"inferllama_parent_http_bytes_total", "counter",
                                                    "Bytes of upstream files fetched over HTTP, the pieces "
                                                    "the parent sent into its swarm included"};
    static constexpr metrics::FamilySpec kPeerBytes{"inferllama_parent_swarm_peer_bytes_total", "counter",
                                                    "Bytes of parents' torrents received from other nodes"};
    static constexpr metrics::FamilySpec kFedBytes{
        "inferllama_parent_swarm_fed_bytes_total", "counter",
        "Pieces of parents' torrents fetched from the parent over HTTP because no peer had them"};
    static constexpr metrics::FamilySpec kUploaded{
        "inferllama_parent_swarm_uploaded_bytes_total", "counter",
        "Bytes of parents' torrents this node sent to other nodes while downloading them"};
    static constexpr metrics::FamilySpec kFallbacks{
        "inferllama_parent_swarm_fallbacks_total", "counter",
        "Large files or ranges fetched over HTTP because the parent's swarm could not serve them"};
    static constexpr metrics::FamilySpec kTorrents{"inferllama_parent_swarm_torrents", "gauge",
                                                   "Parent torrents being downloaded"};
    const ParentSwarmStatus now = status();
    using Sample = std::pair<const metrics::FamilySpec*, std::uint64_t>;
    for (const auto& [family, value] : {Sample{&kSwarmBytes, now.swarm_bytes}, Sample{&kHttpBytes, now.http_bytes},
                                        Sample{&kPeerBytes, now.peer_bytes}, Sample{&kFedBytes, now.fed_bytes},
                                        Sample{&kUploaded, now.uploaded_bytes}, Sample{&kFallbacks, now.fallbacks},
                                        Sample{&kTorrents, now.swarms.size()}}) {
      metrics::write_family(out, *family, static_cast<double>(value));
    }
  }

  void stop() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    { std::lock_guard lock(pending_mutex_); }  // the poller checks stopping_ under this one
    pending_changed_.notify_all();
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

  Plan plan_for(PlanSlot& slot, const std::string& url, const std::string& torrent_url, const HeaderList& headers) {
    if (single_upstream_ && parent_is_node_.load() == kNotNode) return {};
    std::lock_guard lock(slot.mutex);
    if (!slot.plan) slot.plan = make_plan(url, torrent_url, headers);
    return *slot.plan;
  }

  // One HEAD tells whether the parent is a node and how large the file is; the parent's torrent of a
  // large file exists once the parent holds the whole file (?wait=false: a 409 while it fetches it).
  Plan make_plan(const std::string& url, const std::string& torrent_url, const HeaderList& headers) {
    UpstreamResponse head = http_.fetch(UpstreamRequest{"HEAD", url, headers, ""});
    if (head.status != 200) return {};
    if (!head.header(cluster::kNodeHeaderLower)) {
      if (single_upstream_ && parent_is_node_.exchange(kNotNode) != kNotNode)
        spdlog::info("the upstream {} is not a node: files come over HTTP", url::redact(upstream_));
      return {};
    }
    parent_is_node_ = kNode;
    auto size = parse_u64(head.header("x-linked-size").value_or(head.header("content-length").value_or("")));
    if (!size || *size < threshold_) return {};

    UpstreamResponse answer = http_.fetch(UpstreamRequest{"GET", torrent_url, headers, ""});
    if (answer.status == 409) {
      spdlog::info("parent swarm: the parent is still fetching {}; over HTTP until its torrent exists",
                   url::redact(url));
      return Plan{Route::http_until_swarm, nullptr, *size};
    }
    if (answer.status != 200) {
      spdlog::info("parent swarm: no torrent for {} (HTTP {}{}); fetching over HTTP", url::redact(url), answer.status,
                   answer.error.empty() ? "" : ", " + answer.error);
      ++fallbacks_;
      return {};
    }
    auto torrent = swarm_torrent(answer, *size, url);
    if (!torrent) return {};
    return Plan{Route::swarm, std::move(torrent), *size};
  }

  // The parent's torrent of the file, if it describes the file's `size` bytes in one file.
  std::shared_ptr<const lt::torrent_info> swarm_torrent(const UpstreamResponse& answer, std::uint64_t size,
                                                        const std::string& url) {
    lt::error_code ec;
    auto info = std::make_shared<lt::torrent_info>(
        lt::span<const char>(answer.body.data(), static_cast<std::ptrdiff_t>(answer.body.size())), ec, lt::from_span);
    if (ec || info->num_files() != 1 || static_cast<std::uint64_t>(info->total_size()) != size ||
        !info->info_hashes().has_v1()) {
      spdlog::warn("parent swarm: the torrent of {} does not describe its {} bytes; fetching over HTTP",
                   url::redact(url), size);
      ++fallbacks_;
      return nullptr;
    }
    // Peers only: the web seed is the parent's HTTP route, which this path exists to spare.
    info->clear_web_seeds();
    return info;
  }

  // [first, last] over HTTP, until the parent's torrent exists: then the transfer stops at once and
  // `moved` is set (the caller goes on from the swarm).
  RangeResult until_swarm(const std::shared_ptr<PlanSlot>& slot, const std::string& url, const std::string& torrent_url,
                          const HeaderList& headers, std::uint64_t size, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink, bool& moved) {
    const bool watched = watch(slot, url, torrent_url, headers, size);
    BodySink until = [&](std::span<const char> bytes) -> std::size_t {
      if (slot->swarm_ready.load()) {
        moved = true;
        return 0;
      }
      return sink(bytes);
    };
    RangeResult r = over_http(url, headers, first, last, until);
    if (watched) unwatch(url);
    if (moved) r.error.clear();  // stopped on purpose
    return r;
  }

  // Polls the parent for the torrent of `url` while a range of it streams over HTTP. False when too many
  // files are watched already (this one then stays on HTTP).
  bool watch(const std::shared_ptr<PlanSlot>& slot, const std::string& url, const std::string& torrent_url,
             const HeaderList& headers, std::uint64_t size) {
    std::lock_guard lock(pending_mutex_);
    if (stopping_) return false;
    auto it = pending_.find(url);
    if (it == pending_.end()) {
      if (pending_.size() >= kMaxPending) return false;
      it = pending_.emplace(url, PendingTorrent{slot, torrent_url, headers, size, 0}).first;
    }
    ++it->second.http_readers;
    if (!poller_.joinable()) poller_ = std::thread([this] { poll_pending(); });
    pending_changed_.notify_all();
    return true;
  }

  void unwatch(const std::string& url) {
    std::lock_guard lock(pending_mutex_);
    if (auto it = pending_.find(url); it != pending_.end() && --it->second.http_readers == 0) pending_.erase(it);
  }

  void poll_pending() {
    std::unique_lock lock(pending_mutex_);
    while (!stopping_) {
      pending_changed_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (!pending_changed_.wait_for(lock, kPendingPoll, [&] { return stopping_.load(); }) && !pending_.empty()) {
        std::vector<std::pair<std::string, PendingTorrent>> round(pending_.begin(), pending_.end());
        lock.unlock();
        std::vector<std::string> settled;
        for (auto& [url, pending] : round) {
          if (poll(url, pending)) settled.push_back(url);
        }
        lock.lock();
        for (const auto& url : settled) pending_.erase(url);
      }
    }
  }

  // One look at the parent's torrent route; true when the file's route is settled (swarm, or HTTP to
  // the end when the parent offers no torrent).
  bool poll(const std::string& url, const PendingTorrent& pending) {
    UpstreamResponse answer = http_.fetch(UpstreamRequest{"GET", pending.torrent_url, pending.headers, ""});
    if (answer.status == 409) return false;  // still fetching
    auto torrent = answer.status == 200 ? swarm_torrent(answer, pending.size, url) : nullptr;
    std::lock_guard lock(pending.slot->mutex);
    if (!torrent) {
      spdlog::info("parent swarm: no torrent for {} (HTTP {}); it stays on HTTP", url::redact(url), answer.status);
      ++fallbacks_;
      pending.slot->plan = Plan{};
      return true;
    }
    spdlog::info("parent swarm: the parent holds {} now; the rest comes from its swarm", url::redact(url));
    pending.slot->plan = Plan{Route::swarm, std::move(torrent), pending.size};
    pending.slot->swarm_ready = true;
    return true;
  }

  // Serves [first, last] from the torrent's pieces in order, as libtorrent verifies them.
  RangeResult read_from_swarm(const std::shared_ptr<const lt::torrent_info>& torrent, const std::string& url,
                              const HeaderList& headers, std::uint64_t first, std::uint64_t last,
                              const BodySink& sink) {
    RangeResult result{206, "", 0};
    std::unique_lock lock(mutex_);
    std::shared_ptr<SwarmFile> file = join_locked(lock, torrent, result.error);
    if (!file) return result;
    if (file->url.empty()) {
      file->url = url;
      file->headers = headers;
    }
    while (file->feeders < kFeedersPerFile) start_feeder_locked(file);
    const std::uint64_t piece_length = static_cast<std::uint64_t>(torrent->piece_length());
    const int last_piece = static_cast<int>(last / piece_length);
    std::deque<int> held;  // pieces this reader counts itself among the readers of, in order
    int next_to_hold = static_cast<int>(first / piece_length);
    const int read_ahead =
        static_cast<int>(std::clamp<std::uint64_t>(kReadAheadBytes / piece_length, 1, kMaxReadAhead));

    // The whole range is wanted, rarest piece first: nodes pulling the same file at once then each take
    // different pieces from the parent and trade the rest, where pieces wanted in order would have every
    // node ask the parent for the same one. Only the first piece is urgent (the time to the first byte).
    std::vector<std::pair<lt::piece_index_t, lt::download_priority_t>> priorities;
    for (int p = next_to_hold; p <= last_piece; ++p)
      priorities.emplace_back(lt::piece_index_t(p), p == next_to_hold ? lt::top_priority : lt::default_priority);
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
        // A piece still on its way is read back when libtorrent says it passed its hash.
        if (!wanted.requested && file->handle.have_piece(lt::piece_index_t(next_to_hold))) {
          wanted.requested = true;
          file->handle.read_piece(lt::piece_index_t(next_to_hold));
        }
      }
      WantedPiece& wanted = file->pieces[piece];
      // Stalled only when no piece of the file arrives: the one this reader waits for may come last.
      bool arrived = false;
      for (;;) {
        arrived = wanted.buffer || !wanted.error.empty() || !file->error.empty() || stopping_;
        const auto deadline = std::max(last_progress, file->piece_arrived_at) + stall_timeout_;
        if (arrived || std::chrono::steady_clock::now() >= deadline) break;
        changed_.wait_until(lock, deadline);
      }
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

  // Pieces no peer has, fetched from the parent over HTTP and handed to libtorrent (which checks their
  // hash and tells the peers), while readers want the file. The parent's seed is no peer of this session
  // (its tracker leaves it out for cluster::kParentSwarmPeerId): the parent sends each piece about once, to
  // whichever node asks first, and the nodes trade the rest.
  void start_feeder_locked(const std::shared_ptr<SwarmFile>& file) {
    ++file->feeders;
    ++feeders_running_;
    std::thread([this, file] { feed(file); }).detach();
  }

  void feed(const std::shared_ptr<SwarmFile>& file) {
    std::unique_lock lock(mutex_);
    try {
      feed_locked(lock, *file);
    } catch (const std::exception& e) {  // libtorrent's handle calls throw once its torrent is gone
      if (!lock.owns_lock()) lock.lock();
      if (file->error.empty() && !file->removing) file->error = std::string("feeding pieces: ") + e.what();
    }
    --file->feeders;
    --feeders_running_;
    changed_.notify_all();
  }

  void feed_locked(std::unique_lock<std::mutex>& lock, SwarmFile& file) {
    const std::uint64_t piece_length = static_cast<std::uint64_t>(file.torrent->piece_length());
    auto feeding = [&] { return !stopping_ && !file.removing && file.error.empty() && file.readers > 0; };
    int failures = 0;  // answers in a row that brought no piece: the feeder waits longer after each
    while (feeding()) {
      bool any = false;
      std::vector<bool> wanted = wanted_from_parent_locked(file, any);
      const auto first_wanted = std::find(wanted.begin(), wanted.end(), true);
      if (first_wanted == wanted.end()) {
        changed_.wait_for(lock, kFeederPoll);
        continue;
      }
      const int asked = static_cast<int>(first_wanted - wanted.begin());
      HeaderList headers = file.headers;
      // The parent picks among the wanted pieces; a bitfield too long for a request head (a file of very
      // many pieces) is left out, and the parent sends the piece this Range asks, as an older node does.
      if (std::string want = bitfield_hex(wanted); want.size() <= kMaxWantHeader) {
        headers.emplace_back(cluster::kWantPiecesHeader, want + (any ? ";any" : ""));
      }
      const std::uint64_t asked_first = static_cast<std::uint64_t>(asked) * piece_length;
      headers.emplace_back("Range", "bytes=" + std::to_string(asked_first) + "-" +
                                        std::to_string(asked_first + piece_size(file, asked) - 1));
      const std::string url = file.url;
      lock.unlock();
      UpstreamResponse answer = http_.fetch(UpstreamRequest{"GET", url, std::move(headers), ""});
      lock.lock();
      // The torrent may have been removed meanwhile (its readers gone, an error): nothing to add it to.
      if (!feeding()) break;
      if (answer.status == 204) {
        // Every piece wanted is on its way to another node, which will share it: the parent's Retry-After
        // says when to ask again, so a thousand nodes do not ask it ten times a second each.
        failures = 0;
        changed_.wait_for(lock, retry_after(answer), [&] { return !feeding(); });
        continue;
      }
      const auto piece = piece_of_answer(file, answer, wanted);
      if (!piece) {
        if (failures++ == 0) {  // once per run of failures
          spdlog::warn("parent swarm: a piece of {} over HTTP: {}", url::redact(url),
                       !answer.error.empty()  ? answer.error
                       : answer.status != 206 ? "HTTP " + std::to_string(answer.status)
                                              : std::string("not a wanted piece"));
        }
        // The upstream may be failing over, or refusing: not at once again, and later each time.
        changed_.wait_for(
            lock, std::min<std::chrono::milliseconds>(kFeederPoll * (1 << std::min(failures, 6)), kFeederMaxWait),
            [&] { return !feeding(); });
        continue;
      }
      failures = 0;
      http_bytes_ += answer.body.size();
      fed_bytes_ += answer.body.size();
      file.from_parent.insert(*piece);
      file.handle.add_piece(lt::piece_index_t(*piece), std::vector<char>(answer.body.begin(), answer.body.end()));
    }
  }

  // A 204's Retry-After (whole seconds), within [kFeederPoll, kFeederMaxWait]; kFeederPoll without one.
  static std::chrono::milliseconds retry_after(const UpstreamResponse& answer) {
    const auto value = answer.header("retry-after").value_or("");
    unsigned seconds = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    if (ec != std::errc{} || end != value.data() + value.size()) return kFeederPoll;
    return std::clamp<std::chrono::milliseconds>(std::chrono::seconds(seconds), kFeederPoll, kFeederMaxWait);
  }

  static std::uint64_t piece_size(const SwarmFile& file, int piece) {
    return static_cast<std::uint64_t>(file.torrent->piece_size(lt::piece_index_t(piece)));
  }

  // BitTorrent's bitfield order: piece 0 is the high bit of the first byte.
  static std::string bitfield_hex(const std::vector<bool>& pieces) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    for (std::size_t i = 0; i < pieces.size(); i += 4) {
      int nibble = 0;
      for (std::size_t bit = 0; bit < 4; ++bit) nibble = (nibble << 1) | (i + bit < pieces.size() && pieces[i + bit]);
      out += kDigits[nibble];
    }
    if (out.size() % 2) out += '0';
    return out;
  }

  // The piece a 206 answer carries: one of `wanted`, whole.
  static std::optional<int> piece_of_answer(const SwarmFile& file, const UpstreamResponse& answer,
                                            const std::vector<bool>& wanted) {
    if (answer.status != 206) return std::nullopt;
    const auto range = answer.header("content-range").value_or("");
    std::uint64_t first = 0, last = 0;
    if (std::sscanf(std::string(range).c_str(), "bytes %" SCNu64 "-%" SCNu64 "/", &first, &last) != 2)
      return std::nullopt;
    const std::uint64_t piece_length = static_cast<std::uint64_t>(file.torrent->piece_length());
    const std::uint64_t piece = first / piece_length;
    if (first % piece_length != 0 || piece >= wanted.size() || !wanted[piece]) return std::nullopt;
    const int index = static_cast<int>(piece);
    if (last - first + 1 != piece_size(file, index) || answer.body.size() != piece_size(file, index))
      return std::nullopt;
    return index;
  }

  // The pieces to ask the parent for: wanted by the readers, missing, no connected peer has them and
  // none is on its way. When no piece arrived for a while (peers slow, choking, or gone), any missing
  // piece no peer is sending will do, and `any` asks the parent for one even if it sent it lately.
  std::vector<bool> wanted_from_parent_locked(SwarmFile& file, bool& any) {
    const lt::torrent_status status = file.handle.status(lt::torrent_handle::query_pieces);
    const auto priorities = file.handle.get_piece_priorities();
    std::vector<bool> wanted(priorities.size(), false);
    if (status.pieces.empty() || status.pieces.all_set()) return wanted;
    std::vector<int> availability;
    file.handle.piece_availability(availability);
    std::set<int> downloading;
    for (const auto& partial : file.handle.get_download_queue())
      downloading.insert(static_cast<int>(partial.piece_index));
    any = std::chrono::steady_clock::now() - file.piece_arrived_at >= kFeederPatience;
    for (int p = 0; p < static_cast<int>(priorities.size()); ++p) {
      const auto i = static_cast<std::size_t>(p);
      if (priorities[i] == lt::dont_download || status.pieces[lt::piece_index_t(p)] || downloading.contains(p))
        continue;
      if (!any && i < availability.size() && availability[i] > 0) continue;
      wanted[i] = true;
    }
    return wanted;
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
    // The parent's tracker leaves its own seed out of the peers it gives this session.
    pack.set_str(lt::settings_pack::peer_fingerprint, std::string(cluster::kParentSwarmPeerId));
    // piece_finished_alert: a piece a reader waits for passed its hash.
    pack.set_int(lt::settings_pack::alert_mask,
                 pack.get_int(lt::settings_pack::alert_mask) | lt::alert_category::piece_progress);
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
      try {
        for (lt::alert* alert : alerts) handle_alert_locked(alert);
        remove_idle_locked();
        refresh_snapshot_locked();
      } catch (const std::exception& e) {  // a handle call on a torrent libtorrent no longer has
        spdlog::warn("parent swarm: {}", e.what());
      }
      changed_.notify_all();
    }
  }

  // What status() reports of the torrents, taken here on the alert thread: a metrics scrape or the
  // cluster route never waits on libtorrent's own thread (nor on mutex_).
  void refresh_snapshot_locked() {
    Snapshot next{downloaded_by_removed_, uploaded_by_removed_, {}};
    for (const auto& [key, file] : files_) {
      if (file->removing) continue;  // its totals are in the *_by_removed_ counts already
      const lt::torrent_status status = file->handle.status(lt::status_flags_t{});
      next.peer_bytes += static_cast<std::uint64_t>(status.total_payload_download);
      next.uploaded_bytes += static_cast<std::uint64_t>(status.total_payload_upload);
      next.swarms.push_back(ParentSwarm{file->torrent->name(), key,
                                        static_cast<std::uint64_t>(file->torrent->total_size()),
                                        static_cast<double>(status.num_pieces) / file->torrent->num_pieces(),
                                        status.num_peers, static_cast<std::uint64_t>(status.total_payload_download),
                                        static_cast<std::uint64_t>(status.total_payload_upload)});
    }
    std::lock_guard lock(snapshot_mutex_);
    snapshot_ = std::move(next);
  }

  std::shared_ptr<SwarmFile> file_of_locked(const lt::torrent_handle& handle) {
    for (auto& [key, file] : files_) {
      if (file->handle == handle) return file;
    }
    return nullptr;
  }

  void handle_alert_locked(lt::alert* alert) {
    if (auto* finished = lt::alert_cast<lt::piece_finished_alert>(alert)) {
      auto file = file_of_locked(finished->handle);
      if (!file) return;
      file->piece_arrived_at = std::chrono::steady_clock::now();
      file->from_parent.erase(static_cast<int>(finished->piece_index));
      auto it = file->pieces.find(static_cast<int>(finished->piece_index));
      if (it == file->pieces.end() || it->second.requested) return;
      it->second.requested = true;
      file->handle.read_piece(finished->piece_index);
    } else if (auto* read = lt::alert_cast<lt::read_piece_alert>(alert)) {
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
    } else if (auto* bad = lt::alert_cast<lt::hash_failed_alert>(alert)) {
      // From a peer, libtorrent bans it and asks another; from the parent, the torrent and its bytes
      // disagree, and the file comes over HTTP, where the download checks it against the Hub's etag.
      auto file = file_of_locked(bad->handle);
      if (file && file->from_parent.erase(static_cast<int>(bad->piece_index)) > 0 &&
          ++file->failed_pieces > kMaxFailedPieces)
        file->error = "pieces fail their hash in the parent's torrent";
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

  // A torrent nobody reads goes with its files: when every piece is in (the node's chunk store holds the
  // file now) and no peer still needs it, after a stall timeout otherwise (a download between retries
  // comes back sooner).
  void remove_idle_locked() {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [key, file] : files_) {
      if (file->readers > 0 || file->removing) continue;
      if (file->complete && lingering_locked(*file, now)) continue;
      if (file->complete || !file->error.empty() || now - file->idle_since >= stall_timeout_) {
        file->removing = true;
        const lt::torrent_status status = file->handle.status(lt::status_flags_t{});
        uploaded_by_removed_ += static_cast<std::uint64_t>(status.total_payload_upload);
        downloaded_by_removed_ += static_cast<std::uint64_t>(status.total_payload_download);
        session_->remove_torrent(file->handle, lt::session::delete_files);
      }
    }
  }

  // A complete file stays in the swarm while a connected peer still lacks pieces, for up to kLinger: the
  // nodes still fetching it would otherwise lose a peer that has every piece, and ask the parent instead.
  bool lingering_locked(const SwarmFile& file, std::chrono::steady_clock::time_point now) const {
    if (now - file.idle_since >= kLinger) return false;
    const lt::torrent_status status = file.handle.status(lt::status_flags_t{});
    return status.num_peers > status.num_seeds;
  }

  static constexpr int kUnknown = 0, kNode = 1, kNotNode = 2;
  // How long a complete file may stay in the swarm for the peers still fetching it.
  static constexpr std::chrono::seconds kLinger{30};
  // How often the parent is asked whether it holds a file that streams over HTTP meanwhile: each
  // interval costs at most that long of HTTP bytes the swarm could have carried.
  static constexpr std::chrono::milliseconds kPendingPoll{250};
  // Files watched for their parent's torrent at once; more stay on HTTP.
  static constexpr std::size_t kMaxPending = 64;
  // Pieces of one file fetched from the parent over HTTP at once.
  static constexpr int kFeedersPerFile = 1;
  // The longest want bitfield sent (hex digits: 4 pieces each, 32,768 pieces); request heads are limited.
  static constexpr std::size_t kMaxWantHeader = 8192;
  // How often a feeder with nothing to fetch looks again (it also wakes on every alert).
  static constexpr std::chrono::milliseconds kFeederPoll{100};
  // The longest a feeder waits when the parent says to ask later.
  static constexpr std::chrono::milliseconds kFeederMaxWait{5000};
  // While pieces arrive at least this often, only pieces no peer has are fetched from the parent.
  static constexpr std::chrono::milliseconds kFeederPatience{2000};
  // Pieces from the parent that may fail their hash before the file goes over HTTP instead.
  static constexpr int kMaxFailedPieces = 3;

  Upstream& http_;
  const std::string upstream_;
  const bool single_upstream_;
  const std::uint64_t threshold_;
  const std::chrono::milliseconds stall_timeout_;
  const std::filesystem::path staging_;
  const std::string listen_;
  std::atomic<int> parent_is_node_{kUnknown};

  std::mutex plans_mutex_;
  std::map<std::string, std::shared_ptr<PlanSlot>> plans_;

  std::mutex pending_mutex_;  // files streaming over HTTP until their parent's torrent exists
  std::condition_variable pending_changed_;
  std::map<std::string, PendingTorrent> pending_;  // by URL
  std::thread poller_;                             // started with the first pending file

  mutable std::mutex mutex_;  // the session's torrents and the pieces their readers wait for
  std::condition_variable changed_;
  std::atomic<bool> stopping_{false};     // set under mutex_, so that no waiter misses it
  std::unique_ptr<lt::session> session_;  // started when the first file comes from the swarm
  std::thread alert_thread_;
  std::map<std::string, std::shared_ptr<SwarmFile>> files_;  // by v1 info-hash, hex
  std::uint64_t uploaded_by_removed_ = 0;                    // payload of torrents no longer in the session
  std::uint64_t downloaded_by_removed_ = 0;
  int feeders_running_ = 0;

  struct Snapshot {
    std::uint64_t peer_bytes = 0;
    std::uint64_t uploaded_bytes = 0;
    std::vector<ParentSwarm> swarms;
  };
  mutable std::mutex snapshot_mutex_;  // never held while mutex_ is taken
  Snapshot snapshot_;                  // refresh_snapshot_locked()

  std::atomic<std::uint64_t> swarm_bytes_{0};
  std::atomic<std::uint64_t> http_bytes_{0};
  std::atomic<std::uint64_t> fallbacks_{0};
  std::atomic<std::uint64_t> fed_bytes_{0};  // pieces fetched from the parent over HTTP
};

}  // namespace

std::unique_ptr<SwarmPreferringUpstream> make_swarm_preferring_upstream(Upstream& http, const Config& config) {
  return std::make_unique<SwarmPreferring>(http, config);
}

}  // namespace inferllama::torrent
