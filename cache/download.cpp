#include "cache/download.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>
#include <thread>
#include <utility>

#include "cache/hashing.hpp"
#include "inferllama/metrics.hpp"
#include "inferllama/sync_point.hpp"
#include "scan/file_scanner.hpp"
#include "scan/scan_service.hpp"
#include "util/url.hpp"

namespace inferllama::cache {
namespace {

// Readers are woken at this granularity within a chunk, and always when a chunk fills.
constexpr std::uint32_t kNotifyStep = 256 * 1024;
// Upstream bytes are gathered into writes of up to kNotifyStep (see fetch_segment); the slack covers
// the last piece that crosses a step; a piece waits at most kMaxGatherAge for the next.
constexpr std::size_t kGatherSlack = 64 * 1024;
constexpr auto kMaxGatherAge = std::chrono::milliseconds(5);
// The hashing pool's priority (see run_in_background).
constexpr int kBackgroundNice = 19;
// A chunk is hashed in slices of this size (see Download::hash_chunk).
constexpr std::size_t kHashSlice = 64 * 1024;
// One upstream Range request covers at most this much (see Download::start).
constexpr std::uint64_t kSegmentBytes = 32u << 20;
// Parallel connections are added one at a time (see Download::pace_connections_locked), each measured over a
// window from its first byte of at least this long, and of kRampWindowsPerFirstByte times the time the
// download's first connection waited for its first byte (a measure of the round trip).
constexpr auto kRampWindow = std::chrono::milliseconds(100);
constexpr int kRampWindowsPerFirstByte = 8;
// An added connection stays if the connections before it kept at least this share of their rate.
constexpr double kRampKeptShare = 0.7;
const HeaderList kNoHeaders;

bool read_fully(int fd, std::uint8_t* out, std::size_t size, std::uint64_t offset) {
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// A restricted repo's download has a registry key and staging folder of its own: another repo's claim must
// neither read its bytes as they arrive nor resume from them (its own upstream has to deliver them).
std::string download_key(const std::string& etag, const FileClaim& claim) {
  return claim.shared ? etag : etag + "." + sha256(claim.repo.key()).hex().substr(0, 16);
}

// The hashing pool's threads take what CPU the transfers and their clients leave: nice 19, set per thread
// (Linux). Not SCHED_IDLE, though it measured a little faster: a thread of that class that is preempted
// holding a lock the connections take (the pool's queue, a download's mutex, the process's mmap lock) may
// wait long for the CPU on a busy machine, and the connections with it. A thread cannot raise its priority
// again without CAP_SYS_NICE, so work that must not wait runs on the workers.
void run_in_background() {
  thread_local const bool lowered = ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kBackgroundNice) == 0;
  (void)lowered;
}

std::vector<std::uint8_t>& thread_buffer(std::size_t size) {
  thread_local std::vector<std::uint8_t> buffer;
  if (buffer.size() < size) buffer.resize(size);
  return buffer;
}

}  // namespace

// The whole-file hash that must equal the Hub's etag: SHA-256 for LFS, git's blob SHA-1 otherwise.
struct Download::FileHasher {
  explicit FileHasher(bool lfs, std::uint64_t size) : lfs(lfs) {
    if (!lfs) start_git_blob(sha1, size);
  }
  void update(std::span<const std::uint8_t> bytes) {
    if (lfs) {
      sha256.update(bytes);
    } else {
      sha1.update(bytes);
    }
  }
  std::string finish() { return lfs ? sha256.finish().hex() : sha1.finish().hex(); }

  bool lfs;
  Sha256Stream sha256;
  Sha1Stream sha1;
};

Download::Download(Downloads& owner, BlobSource source, FileClaim claim, std::string key)
    : owner_(owner), source_(std::move(source)), key_(std::move(key)), shared_(claim.shared), url_(source_.url) {
  // The format is told by the path of the claim that started the download (or by the bytes, with none).
  if (owner_.scanning_ && owner_.scanning_->action_for(claim.repo) != ScanAction::off) {
    scanner_ = std::make_unique<scan::FileScanner>(claim.path, source_.size);
  }
  claims_.push_back(std::move(claim));
  const std::uint64_t cs = owner_.settings_.chunk_size;
  chunk_count_ = static_cast<std::size_t>((source_.size + cs - 1) / cs);
  chunks_ = std::make_unique<Chunk[]>(chunk_count_);
  for (std::size_t i = 0; i < chunk_count_; ++i) {
    chunks_[i].start = i * cs;
    chunks_[i].size = static_cast<std::uint32_t>(std::min<std::uint64_t>(cs, source_.size - i * cs));
  }
  file_hasher_ = std::make_unique<FileHasher>(source_.lfs, source_.size);
  staging_ = owner_.store_.staging_dir(key_);
}

Download::~Download() {
  for (std::size_t i = 0; i < chunk_count_; ++i) {
    if (chunks_[i].fd >= 0) ::close(chunks_[i].fd);
  }
  // Stored: the chunks were renamed away, only the empty folder is left (a later download of the same
  // file may have made it again, so only an empty one goes). A download that failed on the network or
  // stopped with the node keeps its staged bytes for the next attempt.
  if (state() == State::complete) {
    std::error_code ec;
    std::filesystem::remove(staging_, ec);
  }
}

std::uint64_t Download::resume_staged() {
  std::uint64_t resumed = 0;
  for (std::size_t i = 0; i < chunk_count_; ++i) {
    auto& chunk = chunks_[i];
    const auto path = staging_ / std::to_string(i);
    std::error_code ec;
    const auto on_disk = std::filesystem::file_size(path, ec);
    if (ec || on_disk == 0) continue;
    chunk.fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (chunk.fd < 0) continue;
    // A chunk is written in order by one connection, so its first `on_disk` bytes are what arrived.
    // They are hashed, like every chunk, once the chunk is full.
    const auto have = static_cast<std::uint32_t>(std::min<std::uint64_t>(on_disk, chunk.size));
    ::ftruncate(chunk.fd, have);
    chunk.filled.store(have, std::memory_order_release);
    resumed += have;
  }
  return resumed;
}

std::string Download::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

void Download::start() {
  ++(source_.upstream ? owner_.counters_.ingests_started : owner_.counters_.started);
  const std::uint64_t resumed = resume_staged();
  if (resumed > 0) owner_.counters_.resumed_bytes += resumed;
  // A signed URL carries its credential in the query: logged without it.
  spdlog::info("download {} ({} bytes{}) from {}", source_.etag, source_.size,
               resumed ? ", " + std::to_string(resumed) + " already staged" : std::string(), url::redact(source_.url));
  std::vector<std::size_t> full_chunks;
  bool no_connection = false;
  {
    std::lock_guard lock(mutex_);
    const DownloadSettings& s = owner_.settings_;
    std::size_t parts = 1;
    if (source_.size >= s.parallel_threshold && s.connections > 1) {
      parts = std::min<std::size_t>(s.connections, chunk_count_);
    }
    // Segments of at most per_part chunks over what is still missing: a connection that finishes early
    // takes the next one, so a slow connection never holds up the tail, no byte is requested twice, and
    // the in-order whole-file hash trails the connections by only a few segments.
    const std::size_t per_part =
        parts == 1
            ? chunk_count_
            : std::clamp<std::size_t>(chunk_count_ / parts, 1, std::max<std::size_t>(1, kSegmentBytes / s.chunk_size));
    Segment open{0, 0, false};
    std::size_t chunks_in_open = 0;
    for (std::size_t i = 0; i < chunk_count_; ++i) {
      const auto& chunk = chunks_[i];
      const std::uint32_t filled = chunk.filled.load(std::memory_order_relaxed);
      if (filled == chunk.size) {
        full_chunks.push_back(i);
      }
      const bool continues = chunks_in_open > 0 && open.end == chunk.start && filled == 0 && chunks_in_open < per_part;
      if (filled == chunk.size || !continues) {
        if (chunks_in_open > 0) segments_.push_back(open);
        chunks_in_open = 0;
      }
      if (filled == chunk.size) continue;
      if (chunks_in_open == 0) open = Segment{chunk.start + filled, chunk.start, false};
      open.end = chunk.start + chunk.size;
      ++chunks_in_open;
    }
    if (chunks_in_open > 0) segments_.push_back(open);
    // One connection first; more only while they make the download faster (pace_connections_locked).
    max_connections_ = static_cast<unsigned>(parts);
    ramp_.requested = std::chrono::steady_clock::now();
    no_connection = !segments_.empty() && !spawn_connection_locked();
  }
  if (no_connection) return fail("no thread for an upstream connection");
  // Chunks staged whole by an earlier attempt are hashed now; an empty file has only nothing to check.
  for (std::size_t i : full_chunks) chunk_filled(i);
  if (chunk_count_ == 0) asio::post(owner_.workers_, [self = shared_from_this()] { self->advance_file_hash(); });
}

bool Download::spawn_connection_locked() {
  ++connections_;
  try {
    owner_.connections_.post([self = shared_from_this(), ordinal = spawned_] { self->run_connection(ordinal); });
  } catch (const std::exception& e) {  // no thread to be had (a pids limit): the connection is not counted
    --connections_;
    spdlog::warn("download {}: no thread for another upstream connection: {}", source_.etag, e.what());
    return false;
  }
  ++spawned_;
  return true;
}

namespace {
// The connection on this thread: its place in the order the download started them, and whether it has
// written bytes yet (see Download::pace_connections_locked).
thread_local unsigned t_connection_ordinal = 0;
thread_local bool t_connection_delivered = false;
}  // namespace

void Download::run_connection(unsigned ordinal) {
  t_connection_ordinal = ordinal;
  t_connection_delivered = false;
  for (int segment; (segment = claim_segment()) >= 0;) fetch_segment(segment);
}

int Download::claim_segment() {
  std::lock_guard lock(mutex_);
  // Ending a connection and no longer counting it are one step: two connections deciding at once that one
  // too many runs must not both end.
  auto end_connection = [this] {
    --connections_;
    return -1;
  };
  if (state() != State::running || owner_.stopping_) return end_connection();
  // Urgent segments (a reader waits at their start) first, then the rest in order, on as many connections as
  // pay their way.
  for (bool urgent : {true, false}) {
    if (!urgent && connections_ > wanted_connections_) return end_connection();
    for (std::size_t i = 0; i < segments_.size(); ++i) {
      auto& seg = segments_[i];
      if (!seg.active && seg.next < seg.end && seg.urgent == urgent) {
        seg.active = true;
        return static_cast<int>(i);
      }
    }
  }
  return end_connection();
}

// Parallel Range connections pay where the upstream caps each connection (a CDN far away, a throttled
// origin); where something they share is the limit (the link, this machine's CPU) they only take from the
// clients being served. So a download starts with one and adds one at a time. Each addition is measured over
// a window from the new connection's first byte (its request's round trips say nothing of the rate): if the
// connections before it kept kRampKeptShare of the rate they had in the window before, they share no limit
// with it and the next one is tried; if they slowed down, one connection is retired (whichever next ends a
// segment) and the count stays. A new connection still in TCP slow start takes little from the others, so a
// distant upstream errs toward more connections, as a fixed count would.
void Download::pace_connections_locked(std::uint32_t bytes, bool first_of_connection, unsigned ordinal) {
  if (ramp_.settled) return;
  const auto now = std::chrono::steady_clock::now();
  if (ramp_.window_start == std::chrono::steady_clock::time_point{}) {
    if (!first_of_connection || ordinal != ramp_.newest) return;
    ramp_.window_start = now;
    if (ordinal == 0)
      ramp_.window =
          std::max<std::chrono::nanoseconds>(kRampWindow, kRampWindowsPerFirstByte * (now - ramp_.requested));
    return;
  }
  (ordinal < ramp_.newest ? ramp_.older_bytes : ramp_.newest_bytes) += bytes;
  const std::chrono::duration<double> elapsed = now - ramp_.window_start;
  if (elapsed < ramp_.window) return;
  const double older_rate = static_cast<double>(ramp_.older_bytes) / elapsed.count();
  const double rate = static_cast<double>(ramp_.older_bytes + ramp_.newest_bytes) / elapsed.count();
  if (ramp_.newest > 0 && older_rate < kRampKeptShare * ramp_.rate) {
    wanted_connections_ = std::max(1u, wanted_connections_ - 1);
    ramp_.settled = true;
    return;
  }
  ramp_.rate = rate;
  ramp_.window_start = {};
  ramp_.older_bytes = ramp_.newest_bytes = 0;
  ramp_.newest = spawned_;
  if (wanted_connections_ >= max_connections_ || !spawn_connection_locked()) {
    ramp_.settled = true;
    return;
  }
  ++wanted_connections_;
}

void Download::prioritize(std::uint64_t offset) {
  std::lock_guard lock(mutex_);
  if (state() != State::running || offset >= source_.size) return;
  const std::uint64_t cs = owner_.settings_.chunk_size;
  const std::uint64_t boundary = offset / cs * cs;
  for (auto& seg : segments_) {
    if (offset < seg.next || offset >= seg.end) continue;
    // Already being fetched, or next in line: it comes soon enough.
    if (seg.next >= boundary || (!seg.active && seg.next + cs > offset)) return;
    Segment urgent{boundary, seg.end, false, true};
    seg.end = boundary;
    // Appended, never inserted: connections hold segment indices.
    segments_.push_back(urgent);
    if (connections_ < owner_.settings_.connections + 2) spawn_connection_locked();
    return;
  }
}

void Download::fetch_segment(int segment) {
  const std::uint64_t cs = owner_.settings_.chunk_size;
  const std::uint64_t step = std::min<std::uint64_t>(cs, kNotifyStep);
  std::vector<char> gather;
  gather.reserve(step + kGatherSlack);
  unsigned failures = 0;
  for (;;) {
    std::uint64_t first, last;
    {
      std::lock_guard lock(mutex_);
      auto& seg = segments_[static_cast<std::size_t>(segment)];
      if (seg.next >= seg.end || state() != State::running) {
        seg.active = false;
        return;
      }
      first = seg.next;
      last = seg.end - 1;
    }
    if (owner_.stopping_) {
      fail("the node is shutting down");
      return;
    }
    std::string url;
    {
      std::lock_guard lock(mutex_);
      url = url_;
    }
    Upstream& upstream = source_.upstream ? *source_.upstream : owner_.upstream_;
    // Credentials go with this URL only if it is on their own origin: a refreshed URL may be elsewhere.
    const bool credentials_apply =
        !source_.credentials_origin.empty() && url::http_origin(url) == source_.credentials_origin;
    // libcurl hands the body over in pieces of at most 16 KiB: they are gathered here and written with
    // one pwrite where readers would be told anyway (a chunk's first bytes, every kNotifyStep, the end).
    // Bytes wait at most kMaxGatherAge for a later piece (or, while the transfer waits, for the upstream's
    // call without bytes), and are written when the transfer ends.
    std::uint64_t gathered_at = first;  // the file offset of gather's first byte
    auto oldest = std::chrono::steady_clock::time_point{};
    bool stopped = false;  // a write was refused: every later piece is too
    auto flush = [&] {
      const std::size_t wrote = gather.empty() ? 0 : write_body(segment, {gather.data(), gather.size()});
      stopped = stopped || wrote != gather.size();
      gathered_at += wrote;
      gather.clear();
      return !stopped;
    };
    auto sink = [&](std::span<const char> bytes) -> std::size_t {
      if (stopped) return 0;
      if (bytes.empty()) {
        if (!gather.empty() && std::chrono::steady_clock::now() - oldest > kMaxGatherAge) flush();
        return 0;
      }
      if (gather.empty()) oldest = std::chrono::steady_clock::now();
      gather.insert(gather.end(), bytes.begin(), bytes.end());
      const std::uint64_t end = gathered_at + gather.size();
      const bool tell_readers = gathered_at % cs == 0 || end / step != gathered_at / step || end > last;
      if ((tell_readers || std::chrono::steady_clock::now() - oldest > kMaxGatherAge) && !flush()) return 0;
      return bytes.size();
    };
    if (spdlog::should_log(spdlog::level::debug)) {
      spdlog::debug("download {}: bytes {}-{} from {}", source_.etag, first, last, url::redact(url));
    }
    RangeResult r = upstream.fetch_range(url, credentials_apply ? source_.headers : kNoHeaders, first, last, sink);
    flush();
    if (state() != State::running) return;
    if (r.ok() && r.received > 0) {
      failures = 0;
      continue;
    }
    if (r.received > 0) failures = 0;
    std::string why = r.error.empty() ? "upstream sent no bytes" : r.error;
    if (r.status == 404 || r.status == 416) {
      fail("upstream refused the byte range: " + why);
      return;
    }
    if ((r.status == 401 || r.status == 403 || r.status == 410) && source_.refresh_url) {
      // The signed CDN URL expired: ask the Hub for a new one.
      if (auto fresh = source_.refresh_url()) {
        spdlog::info("download {}: the upstream refused its URL (HTTP {}); the Hub names {} now", source_.etag,
                     r.status, url::redact(*fresh));
        std::lock_guard lock(mutex_);
        url_ = *fresh;
      }
    }
    // A throttling upstream (or the node holding the request back while it throttles this credential) is
    // asked again no sooner than it said. Longer than a stall may last, the download fails: its clients would
    // give up meanwhile, and the next download resumes from the staged bytes.
    if (r.retry_after > owner_.settings_.throttle_patience) {
      fail("the upstream throttles this node's requests for " + std::to_string(r.retry_after.count()) + " s: " + why);
      return;
    }
    if (++failures > owner_.settings_.retries) {
      fail("upstream transfer failed after " + std::to_string(failures) + " attempts: " + why);
      return;
    }
    ++owner_.counters_.retries;
    if (r.retry_after.count() > 0) {
      // The throttle itself is logged once per episode.
      spdlog::debug("download {}: {} (bytes {}-{}), retry {} in {} s", source_.etag, why, first, last, failures,
                    r.retry_after.count());
    } else {
      spdlog::warn("download {}: {} (bytes {}-{}), retry {}", source_.etag, why, first, last, failures);
    }
    if (!wait_backoff(failures, r.retry_after)) {
      fail("the node is shutting down");
      return;
    }
  }
}

bool Download::wait_backoff(unsigned attempt, std::chrono::milliseconds at_least) {
  const auto delay = std::max(owner_.settings_.backoff * (1u << std::min(attempt - 1, 5u)), at_least);
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, delay, [&] { return owner_.stopping_.load() || state() != State::running; });
  return !owner_.stopping_ && state() == State::running;
}

int Download::chunk_fd_locked(std::size_t index) {
  auto& chunk = chunks_[index];
  if (chunk.fd < 0) {
    auto path = staging_ / std::to_string(index);
    chunk.fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  }
  return chunk.fd;
}

std::size_t Download::write_body(int segment, std::span<const char> bytes) {
  const std::uint64_t cs = owner_.settings_.chunk_size;
  std::size_t done = 0;
  while (done < bytes.size()) {
    std::uint64_t pos, end;
    int fd;
    std::size_t index;
    {
      std::lock_guard lock(mutex_);
      if (state() != State::running || owner_.stopping_) return done;
      const auto& seg = segments_[static_cast<std::size_t>(segment)];
      pos = seg.next;
      end = seg.end;
      if (pos >= end) return done;  // another connection took the rest of this segment
      index = static_cast<std::size_t>(pos / cs);
      fd = chunk_fd_locked(index);
    }
    if (fd < 0) {
      const int error = errno;
      fail(std::string("cannot stage chunk: ") + std::generic_category().message(error));
      if (error == ENOSPC && owner_.on_disk_full_) owner_.on_disk_full_(source_.size);
      return done;
    }
    auto& chunk = chunks_[index];
    const std::uint64_t within = pos - chunk.start;
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>({bytes.size() - done, chunk.size - within, end - pos}));
    ssize_t wrote = ::pwrite(fd, bytes.data() + done, n, static_cast<off_t>(within));
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) {
      const int error = errno;
      fail(std::string("cannot write chunk: ") + std::generic_category().message(error));
      if (error == ENOSPC && owner_.on_disk_full_) owner_.on_disk_full_(source_.size);
      return done;
    }
    const auto w = static_cast<std::uint32_t>(wrote);
    const std::uint32_t before = chunk.filled.load(std::memory_order_relaxed);
    chunk.filled.store(before + w, std::memory_order_release);
    {
      std::lock_guard lock(mutex_);
      segments_[static_cast<std::size_t>(segment)].next += w;
      pace_connections_locked(w, !std::exchange(t_connection_delivered, true), t_connection_ordinal);
    }
    if (!source_.upstream) owner_.counters_.upstream_bytes += w;  // bytes from elsewhere are not fetched upstream
    done += w;
    const bool full = before + w == chunk.size;
    if (full) chunk_filled(index);
    // Wake readers for a chunk's first bytes (time to first byte), then every kNotifyStep.
    if (full || before == 0 || (before / kNotifyStep) != ((before + w) / kNotifyStep)) notify();
  }
  return done;
}

std::uint64_t Download::readable(std::uint64_t offset) const {
  if (offset >= source_.size || chunk_count_ == 0) return 0;
  const bool verified = verified_.load(std::memory_order_acquire);
  const std::uint64_t cs = owner_.settings_.chunk_size;
  const auto& chunk = chunks_[offset / cs];
  const std::uint64_t filled = chunk.filled.load(std::memory_order_acquire);
  const std::uint64_t within = offset - chunk.start;
  // Never past the end of this chunk: the caller reads from this chunk's file.
  std::uint64_t available = filled > within ? filled - within : 0;
  if (verified) return available;
  const std::uint64_t before_last = source_.size - 1 - offset;  // bytes before the held-back one
  return std::min(available, before_last);
}

std::uint64_t Download::fetched() const {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < chunk_count_; ++i) total += chunks_[i].filled.load(std::memory_order_relaxed);
  return total;
}

std::pair<int, std::uint64_t> Download::locate(std::uint64_t offset) const {
  std::lock_guard lock(mutex_);
  const std::uint64_t cs = owner_.settings_.chunk_size;
  if (offset >= source_.size) return {-1, 0};
  const auto& chunk = chunks_[offset / cs];
  return {chunk.fd, offset - chunk.start};
}

void Download::subscribe(const std::shared_ptr<ProgressListener>& listener) {
  std::lock_guard lock(mutex_);
  std::erase_if(listeners_, [](const auto& w) { return w.expired(); });
  listeners_.push_back(listener);
}

bool Download::add_claim(FileClaim claim) {
  std::lock_guard lock(mutex_);
  if (claims_closed_) return false;
  claims_.push_back(std::move(claim));
  return true;
}

void Download::notify() {
  std::vector<std::shared_ptr<ProgressListener>> live;
  {
    std::lock_guard lock(mutex_);
    for (auto& w : listeners_) {
      if (auto l = w.lock()) live.push_back(std::move(l));
    }
  }
  for (auto& l : live) l->on_progress();
}

// The whole-file hash decides whether readers get the last byte: it runs on the workers as soon as the
// next chunk in order is full. A chunk's own hashes (its address, v1 SHA-1) are needed only to store it:
// while bytes still arrive they run on the hashing pool, with CPU the transfer does not want (every cycle
// they took from it would delay the clients). Once the file is verified they are all that stands between
// it and its commit: the workers hash whatever chunk the pool has not started (see hash_remaining_chunks).
void Download::chunk_filled(std::size_t index) {
  asio::post(owner_.workers_, [self = shared_from_this()] { self->advance_file_hash(); });
  // A weak reference: a task still queued when a worker has hashed the chunk must not keep a stored
  // download, and the descriptors of its chunks (whose space an eviction would free), alive.
  asio::post(owner_.hashers_, [weak = weak_from_this(), index] {
    run_in_background();
    if (auto self = weak.lock()) self->hash_chunk(index, /*in_background=*/true);
  });
}

// A chunk was written moments ago and is in the page cache: hashed in place through a mapping rather
// than copied out first (a read is the fallback).
bool Download::read_staged(const Chunk& chunk, const std::function<void(std::span<const std::uint8_t>)>& consume) {
  void* mapped = ::mmap(nullptr, chunk.size, PROT_READ, MAP_SHARED | MAP_POPULATE, chunk.fd, 0);
  if (mapped != MAP_FAILED) {
    consume(std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(mapped), chunk.size));
    ::munmap(mapped, chunk.size);
    return true;
  }
  auto& buffer = thread_buffer(chunk.size);
  if (!read_fully(chunk.fd, buffer.data(), chunk.size, 0)) return false;
  consume(std::span<const std::uint8_t>(buffer.data(), chunk.size));
  return true;
}

void Download::hash_chunk(std::size_t index, bool in_background) {
  auto& chunk = chunks_[index];
  // The pool hashes each chunk once. After the file is verified a worker hashes every chunk whose hashes are
  // not recorded yet, those the pool is in the middle of too: a pool thread that gets no CPU holds up no
  // commit. The first result is recorded; both are the same.
  auto moot = [&] { return state() != State::running || chunk.hashes_recorded.load(std::memory_order_acquire); };
  if (moot()) return;
  if (in_background) {
    INFERLLAMA_SYNC_POINT("Download::hash_chunk:in_background");
    // The transfer has all the CPU it can use: what the pool took, even at nice 19, came out of the client's
    // rate (1 GiB from an unlimited upstream through two cores: 731 against 679 MB/s, the commit 0.9 s after
    // the last byte instead of 0.65). The workers hash the chunk once the file is verified
    // (hash_remaining_chunks). From an upstream at 100 MB/s a connection, the pool keeps up as before.
    if (file_hash_behind()) {
      INFERLLAMA_SYNC_POINT("Download::hash_chunk:left_to_workers");
      return;
    }
  }
  ChunkHasher hasher(owner_.settings_.chunk_size);
  // A pool thread stops as soon as its work is moot (a worker recorded the chunk, or the download ended): it
  // holds the download, and the descriptors of its chunks, only as long as it has to.
  bool abandoned = false;
  // In slices that stay in the core's cache between the SHA-1 and the SHA-256 pass over them.
  const bool ok = read_staged(chunk, [&](std::span<const std::uint8_t> bytes) {
    for (std::size_t at = 0; at < bytes.size() && !(abandoned = in_background && moot()); at += kHashSlice) {
      hasher.update(bytes.subspan(at, std::min(kHashSlice, bytes.size() - at)));
    }
  });
  if (abandoned) return;
  if (!ok) {
    fail("cannot read back a staged chunk");
    return;
  }
  const ChunkHashes h = hasher.finish();
  // Start writing the chunk to disk now, so that the fsync before the commit finds little left to do. It
  // may wait for the disk: it holds up a hashing thread or a worker, never the connections.
  ::sync_file_range(chunk.fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  bool all_hashed;
  {
    std::lock_guard lock(mutex_);
    if (chunk.hashes_recorded.exchange(true)) return;
    chunk.ref = ChunkRef{h.root, h.piece_sha1, chunk.size};
    chunk.padded_sha1 = h.padded_sha1;
    chunk.file_root = h.file_root;
    all_hashed = ++hashed_count_ == chunk_count_;
  }
  // Storing the file is not background work: back to the workers.
  if (all_hashed) asio::post(owner_.workers_, [self = shared_from_this()] { self->maybe_finalize(); });
}

bool Download::file_hash_behind() {
  // More than a segment and two chunks: when a connection finishes its segment, the next one in order may be
  // filled already, and the hash goes through it at once; that is no sign of a busy CPU.
  const std::uint64_t backlog = kSegmentBytes + 2 * owner_.settings_.chunk_size;
  std::lock_guard lock(mutex_);
  std::uint64_t waiting = 0;
  for (std::size_t i = file_hashed_; i < chunk_count_ && waiting <= backlog; ++i) {
    if (chunks_[i].filled.load(std::memory_order_acquire) != chunks_[i].size) break;
    waiting += chunks_[i].size;
  }
  return waiting > backlog;
}

void Download::advance_file_hash() {
  std::unique_lock lock(mutex_);
  if (file_hashing_) return;
  file_hashing_ = true;
  while (file_hashed_ < chunk_count_ && state() == State::running) {
    auto& chunk = chunks_[file_hashed_];
    if (chunk.filled.load(std::memory_order_acquire) != chunk.size) break;
    lock.unlock();
    INFERLLAMA_SYNC_POINT("Download::advance_file_hash:chunk");
    const bool ok = read_staged(chunk, [&](std::span<const std::uint8_t> bytes) {
      if (!scanner_) return file_hasher_->update(bytes);
      // Hashed and scanned slice by slice, each slice still in the core's cache for the second look.
      for (std::size_t at = 0; at < bytes.size(); at += kHashSlice) {
        const auto slice = bytes.subspan(at, std::min(kHashSlice, bytes.size() - at));
        file_hasher_->update(slice);
        scan(slice);
      }
    });
    const bool settled = ok && settle_verdict(file_hashed_ + 1 == chunk_count_);
    lock.lock();
    if (!ok) {
      file_hashing_ = false;
      lock.unlock();
      fail("cannot read back a staged chunk");
      return;
    }
    ++file_hashed_;
    if (settled) {
      lock.unlock();
      notify();  // a response held back for the verdict (scan_policy deny) may go on
      lock.lock();
    }
  }
  const bool whole = file_hashed_ == chunk_count_ && !file_checked_ && state() == State::running;
  if (whole) file_checked_ = true;
  file_hashing_ = false;
  lock.unlock();
  if (whole && chunk_count_ == 0 && settle_verdict(true)) notify();
  if (whole) verify_file();
}

void Download::scan(std::span<const std::uint8_t> bytes) {
  if (!scanner_ || scanner_->decided()) return;
  const auto started = std::chrono::steady_clock::now();
  scanner_->update(bytes);
  scan_time_ += std::chrono::steady_clock::now() - started;
}

bool Download::settle_verdict(bool end_of_file) {
  if (!scanner_) return false;
  {
    std::lock_guard lock(mutex_);
    if (verdict_) return false;
  }
  if (!end_of_file && !scanner_->decided()) return false;
  const auto started = std::chrono::steady_clock::now();
  auto verdict = std::make_shared<const ScanVerdict>(scanner_->finish());
  scan_time_ += std::chrono::steady_clock::now() - started;
  owner_.scanning_->count_scan(*verdict, scanner_->scanned_bytes(), scan_time_);
  std::lock_guard lock(mutex_);
  verdict_ = std::move(verdict);
  return true;
}

std::shared_ptr<const ScanVerdict> Download::verdict() const {
  std::lock_guard lock(mutex_);
  return verdict_;
}

void Download::verify_file() {
  const std::string actual = file_hasher_->finish();
  if (actual != source_.etag) {
    // Resuming from these bytes would fail the same way: drop them before a retry can start (readers
    // keep their open descriptors).
    std::error_code ec;
    std::filesystem::remove_all(staging_, ec);
    fail("content hash mismatch: expected " + source_.etag + ", upstream sent " + actual);
    return;
  }
  // Readers may have every byte now; making the file durable and visible is the node's business.
  verified_.store(true, std::memory_order_release);
  notify();
  hash_remaining_chunks();
  maybe_finalize();
}

void Download::hash_remaining_chunks() {
  INFERLLAMA_SYNC_POINT("Download::hash_remaining_chunks");
  // A task per chunk, so that other downloads' work on the workers goes on in between; at a stop the chunks
  // not hashed yet stay staged for the next start.
  for (std::size_t i = 0; i < chunk_count_; ++i) {
    if (chunks_[i].hashes_recorded.load(std::memory_order_acquire)) continue;
    asio::post(owner_.workers_, [self = shared_from_this(), i] {
      if (!self->owner_.stopping_) self->hash_chunk(i, /*in_background=*/false);
    });
  }
}

void Download::maybe_finalize() {
  {
    std::lock_guard lock(mutex_);
    if (state() != State::running || finalizing_ || hashed_count_ != chunk_count_ || !verified()) return;
    finalizing_ = true;
  }
  finalize();
}

void Download::finalize() {
  BlobEntry blob;
  blob.etag = source_.etag;
  blob.lfs = source_.lfs;
  blob.size = source_.size;
  blob.chunk_size = owner_.settings_.chunk_size;
  std::vector<FileClaim> claims;
  try {
    // Stored already (for another repo, or by a download of another scope that finished first): these bytes
    // only proved it for this download's repos; the stored chunks stay as they are.
    auto sync_chunks = [this] {
      for (std::size_t i = 0; i < chunk_count_; ++i) {
        if (::fdatasync(chunks_[i].fd) != 0) throw std::runtime_error(std::generic_category().message(errno));
      }
    };
    const bool stored_before = owner_.index_.get_blob(source_.etag).has_value();
    if (!stored_before) sync_chunks();  // outside the lock: eviction and other commits go on meanwhile
    // The verdict first: a stored blob that was scanned always has one.
    if (auto scanned = verdict()) owner_.scanning_->record(source_.etag, *scanned);
    std::lock_guard mutating(owner_.store_.mutation_mutex());
    const bool stored = owner_.index_.get_blob(source_.etag).has_value();
    if (stored_before && !stored) sync_chunks();  // evicted meanwhile: these chunks become the stored ones
    for (std::size_t i = 0; i < chunk_count_; ++i) {
      const auto staged = staging_ / std::to_string(i);
      if (stored) {
        std::error_code ignored;
        std::filesystem::remove(staged, ignored);
      } else {
        owner_.store_.adopt(staged, chunks_[i].ref.id);
      }
      blob.chunks.push_back(chunks_[i].ref);
    }
    if (chunk_count_ > 0) blob.last_padded_sha1 = chunks_[chunk_count_ - 1].padded_sha1;
    if (chunk_count_ == 1) {
      blob.v2_root = chunks_[0].file_root;
    } else if (chunk_count_ > 1) {
      std::vector<Sha256> piece_layer;
      piece_layer.reserve(chunk_count_);
      for (const auto& c : blob.chunks) piece_layer.push_back(c.id);
      blob.v2_root = piece_layer_root(piece_layer, blob.chunk_size);
    }
    // The claims so far, then those that joined while they were committed, until none did: from then on
    // get_or_start takes this download for a finished one and its caller records the path.
    std::size_t committed = 0;
    for (bool first = true;; first = false) {
      {
        std::lock_guard lock(mutex_);
        claims.assign(claims_.begin() + static_cast<std::ptrdiff_t>(committed), claims_.end());
        committed = claims_.size();
        if (claims.empty() && !first) {
          claims_closed_ = true;
          break;
        }
      }
      std::vector<Index::FileRef> refs;
      BlobScope scope;
      scope.shared = shared_;
      for (const auto& c : claims) {
        if (!c.path.empty()) refs.push_back({c.repo, c.commit, c.path});
        if (!c.repo.name.empty() && std::find(scope.repos.begin(), scope.repos.end(), c.repo) == scope.repos.end()) {
          scope.repos.push_back(c.repo);
        }
      }
      owner_.index_.commit_blob(blob, refs, scope);
    }
  } catch (const std::exception& e) {
    fail(std::string("cannot store the file: ") + e.what());
    return;
  }
  // The store's bookkeeping (a file stored again is leasable again) comes before anyone waiting for
  // `complete` can try to lease it.
  if (owner_.on_stored_) owner_.on_stored_(source_.etag);
  state_.store(State::complete, std::memory_order_release);
  ++(source_.upstream ? owner_.counters_.ingests_completed : owner_.counters_.completed);
  spdlog::info("cached {} ({} bytes, {} chunks)", source_.etag, source_.size, chunk_count_);
  wake_.notify_all();
  owner_.finished(*this);
  notify();
}

void Download::fail(const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    if (state() != State::running) return;
    error_ = why;
    state_.store(State::failed, std::memory_order_release);
  }
  ++(source_.upstream ? owner_.counters_.ingests_failed : owner_.counters_.failed);
  spdlog::error("download {} failed: {}", source_.etag, why);
  wake_.notify_all();
  owner_.finished(*this);
  notify();
}

DownloadSettings DownloadSettings::from(const Config& config) {
  DownloadSettings settings;
  settings.chunk_size = static_cast<std::uint32_t>(config.chunk_size);
  settings.connections = config.upstream_connections;
  settings.parallel_threshold = config.parallel_threshold;
  settings.retries = config.upstream_retries;
  settings.throttle_patience = config.upstream_timeout;
  return settings;
}

Downloads::Downloads(ChunkStore& store, Index& index, Upstream& upstream, asio::thread_pool& workers,
                     DownloadSettings settings, unsigned max_connections)
    : store_(store),
      index_(index),
      upstream_(upstream),
      workers_(workers),
      hashers_(std::max(1u, std::thread::hardware_concurrency())),
      connections_(max_connections),
      settings_(settings) {}

Downloads::~Downloads() {
  shutdown();
}

std::shared_ptr<Download> Downloads::get_or_start(const BlobSource& source, const FileClaim& claim, bool* started) {
  if (started) *started = false;
  std::shared_ptr<Download> download;
  const std::string key = download_key(source.etag, claim);
  {
    std::lock_guard lock(mutex_);
    // This repo's own download, else a public repo's (its bytes are anyone's). One that failed and has
    // not left the registry yet is not joined: a new download starts (and resumes from its chunks).
    auto live = [&](const std::string& name) {
      auto found = running_.find(name);
      if (found != running_.end() && found->second->state() == Download::State::failed) {
        running_.erase(found);
        return running_.end();
      }
      return found;
    };
    auto it = live(key);
    if (it == running_.end()) it = live(source.etag);
    // A download of another size is returned unclaimed: the caller refuses it.
    if (it != running_.end() && (it->second->size() != source.size || it->second->add_claim(claim))) {
      return it->second;
    }
    // A download that finished between the caller's index lookup and now has committed its blob.
    if (index_.get_blob(source.etag) && index_.blob_serves(source.etag, claim.repo)) return nullptr;
    if (stopping_) return nullptr;
    download = std::make_shared<Download>(*this, source, claim, key);
    running_.emplace(key, download);
  }
  if (started) *started = true;
  download->start();
  return download;
}

std::vector<std::string> Downloads::verified_for(const RepoId& repo, const std::string& commit) {
  std::vector<std::shared_ptr<Download>> running;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [key, download] : running_) running.push_back(download);
  }
  std::vector<std::string> etags;
  for (const auto& download : running) {
    if (download->verified() && download->claims(repo, commit)) etags.push_back(download->etag());
  }
  return etags;
}

bool Download::claims(const RepoId& repo, const std::string& commit) const {
  std::lock_guard lock(mutex_);
  return std::any_of(claims_.begin(), claims_.end(),
                     [&](const FileClaim& c) { return c.repo == repo && c.commit == commit; });
}

std::shared_ptr<Download> Downloads::find(const std::string& etag) {  // the shared download of `etag`
  std::lock_guard lock(mutex_);
  auto it = running_.find(etag);
  return it == running_.end() ? nullptr : it->second;
}

void Downloads::set_hooks(std::function<void(const std::string&)> on_stored,
                          std::function<void(std::uint64_t)> on_disk_full) {
  on_stored_ = std::move(on_stored);
  on_disk_full_ = std::move(on_disk_full);
}

std::size_t Downloads::in_flight() {
  std::lock_guard lock(mutex_);
  return running_.size();
}

std::size_t Downloads::committing() {
  std::lock_guard lock(mutex_);
  return static_cast<std::size_t>(std::count_if(running_.begin(), running_.end(), [](const auto& entry) {
    const Download& d = *entry.second;
    return d.state() == Download::State::running && d.fetched() == d.size();
  }));
}

std::shared_ptr<const ScanVerdict> Downloads::scan_stored(const BlobEntry& blob, const std::string& path) {
  if (!scanning_) return nullptr;
  scan::FileScanner scanner(path, blob.size);
  const auto started = std::chrono::steady_clock::now();
  auto& buffer = thread_buffer(std::size_t{1} << 20);
  for (const auto& chunk : blob.chunks) {
    if (scanner.decided()) break;
    if (stopping_) return nullptr;  // the node stops: the next start scans it when it is asked for
    const int fd = store_.open_chunk(chunk.id);
    if (fd < 0) return nullptr;  // evicted meanwhile
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    bool ok = true;
    for (std::uint64_t at = 0; ok && at < chunk.size && !scanner.decided();) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), chunk.size - at));
      ok = read_fully(fd, buffer.data(), n, at);
      if (ok) scanner.update(std::span<const std::uint8_t>(buffer.data(), n));
      at += n;
    }
    ::close(fd);
    if (!ok) return nullptr;
  }
  auto verdict = std::make_shared<const ScanVerdict>(scanner.finish());
  scanning_->count_scan(*verdict, scanner.scanned_bytes(), std::chrono::steady_clock::now() - started);
  scanning_->record(blob.etag, *verdict);
  return verdict;
}

std::shared_ptr<const ScanVerdict> Downloads::scan_stored(const std::string& etag, const std::string& path) {
  auto blob = index_.get_blob(etag);
  return blob ? scan_stored(*blob, path) : nullptr;
}

void Downloads::finished(const Download& download) {
  std::lock_guard lock(mutex_);
  if (auto it = running_.find(download.key_); it != running_.end() && it->second.get() == &download) {
    running_.erase(it);
  }
}

void Downloads::shutdown() {
  if (stopping_.exchange(true)) return;
  std::vector<std::shared_ptr<Download>> all;
  {
    std::lock_guard lock(mutex_);
    for (auto& [_, d] : running_) all.push_back(d);
  }
  for (auto& d : all) d->wake_.notify_all();
  connections_.join();
  // Chunks not hashed yet stay staged for the next start.
  hashers_.stop();
  hashers_.join();
}

namespace {
constexpr metrics::FamilySpec kUpstreamBytes{"inferllama_upstream_bytes_total", "counter",
                                             "File bytes fetched upstream"};
constexpr metrics::FamilySpec kResumedBytes{"inferllama_resumed_bytes_total", "counter",
                                            "File bytes an interrupted download had staged and a later one reused"};
constexpr metrics::FamilySpec kDownloads{"inferllama_downloads_total", "counter", "Upstream file downloads by outcome"};
constexpr metrics::FamilySpec kIngests{
    "inferllama_ingests_total", "counter",
    "Files that arrived over BitTorrent (mirrors) and went through the verified ingest, by outcome"};
constexpr metrics::FamilySpec kInFlight{"inferllama_downloads_in_flight", "gauge", "Files being fetched upstream now"};
}  // namespace

void Downloads::render_metrics(std::string& out) {
  using metrics::write_family;
  using metrics::write_header;
  using metrics::write_sample;
  auto value = [](const std::atomic<std::uint64_t>& n) { return static_cast<double>(n.load()); };
  write_family(out, kUpstreamBytes, value(counters_.upstream_bytes));
  write_family(out, kResumedBytes, value(counters_.resumed_bytes));
  write_header(out, kDownloads);
  write_sample(out, kDownloads, "result=\"started\"", value(counters_.started));
  write_sample(out, kDownloads, "result=\"completed\"", value(counters_.completed));
  write_sample(out, kDownloads, "result=\"failed\"", value(counters_.failed));
  write_header(out, kIngests);
  write_sample(out, kIngests, "result=\"started\"", value(counters_.ingests_started));
  write_sample(out, kIngests, "result=\"completed\"", value(counters_.ingests_completed));
  write_sample(out, kIngests, "result=\"failed\"", value(counters_.ingests_failed));
  write_family(out, kInFlight, static_cast<double>(in_flight()));
}

}  // namespace inferllama::cache
