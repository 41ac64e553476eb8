#include "hub/pass_through.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "cache/hashing.hpp"
#include "inferllama/metrics.hpp"
#include "util/url.hpp"

namespace inferllama::hub {
namespace {

const HeaderList kNoHeaders;

// The whole file's digest as it passes: SHA-256 of an LFS file, git's blob SHA-1 of a regular one.
class FileDigest {
 public:
  FileDigest(bool lfs, std::uint64_t size) : lfs_(lfs) {
    if (!lfs_) cache::start_git_blob(sha1_, size);
  }
  void update(std::span<const char> bytes) {
    const std::span<const std::uint8_t> data(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    lfs_ ? sha256_.update(data) : sha1_.update(data);
  }
  std::string hex() { return lfs_ ? sha256_.finish().hex() : sha1_.finish().hex(); }

 private:
  bool lfs_;
  cache::Sha256Stream sha256_;
  cache::Sha1Stream sha1_;
};

}  // namespace

PassStream::PassStream(cache::BlobSource source, std::uint64_t first, std::uint64_t end, PassCounters& counters)
    : source_(std::move(source)),
      first_(first),
      end_(end),
      verify_(first == 0 && end == source_.size),
      counters_(counters),
      buffer_(static_cast<std::size_t>(
          std::min<std::uint64_t>(PassThroughs::kBuffer, std::max<std::uint64_t>(end - first, 1)))) {}

std::span<const char> PassStream::readable() const {
  std::lock_guard lock(mutex_);
  std::uint64_t available = written_ - read_;
  // The file's last byte waits for its hash to match.
  if (verify_ && state() != State::complete && available > 0 && first_ + read_ + available == end_) --available;
  const std::size_t at = static_cast<std::size_t>(read_ % buffer_.size());
  const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(available, buffer_.size() - at));
  return {buffer_.data() + at, n};
}

void PassStream::consume(std::size_t n) {
  {
    std::lock_guard lock(mutex_);
    read_ += n;
  }
  counters_.bytes += n;
  room_.notify_all();
}

std::string PassStream::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

void PassStream::subscribe(const std::shared_ptr<cache::ProgressListener>& listener) {
  std::lock_guard lock(mutex_);
  listener_ = listener;
}

void PassStream::cancel() {
  {
    std::lock_guard lock(mutex_);
    cancelled_ = true;
  }
  room_.notify_all();
}

void PassStream::notify() {
  std::shared_ptr<cache::ProgressListener> listener;
  {
    std::lock_guard lock(mutex_);
    listener = listener_.lock();
  }
  if (listener) listener->on_progress();
}

void PassStream::fail(const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    if (error_.empty()) error_ = why;
  }
  state_.store(State::failed, std::memory_order_release);
  notify();
}

std::size_t PassStream::take(std::span<const char> bytes) {
  std::size_t taken = 0;
  while (taken < bytes.size()) {
    std::unique_lock lock(mutex_);
    room_.wait(lock, [&] { return cancelled_ || written_ - read_ < buffer_.size(); });
    if (cancelled_) break;
    const std::size_t at = static_cast<std::size_t>(written_ % buffer_.size());
    const std::size_t room = buffer_.size() - static_cast<std::size_t>(written_ - read_);
    const std::size_t n = std::min({bytes.size() - taken, room, buffer_.size() - at});
    // The reader never looks past written_, so this part of the ring is the producer's alone.
    lock.unlock();
    std::memcpy(buffer_.data() + at, bytes.data() + taken, n);
    lock.lock();
    written_ += n;
    lock.unlock();
    taken += n;
    notify();
  }
  return taken;
}

void PassStream::run(Upstream& upstream, unsigned retries, std::chrono::milliseconds backoff) {
  std::optional<FileDigest> digest;
  if (verify_) digest.emplace(source_.lfs, source_.size);
  std::string url = source_.url;
  std::uint64_t position = first_;
  unsigned failures = 0;
  while (position < end_) {
    {
      std::lock_guard lock(mutex_);
      if (cancelled_) break;
    }
    // Credentials go with this URL only if it is on their own origin: a refreshed URL may be elsewhere.
    const bool credentials_apply =
        !source_.credentials_origin.empty() && url::http_origin(url) == source_.credentials_origin;
    auto sink = [&](std::span<const char> bytes) -> std::size_t {
      // An upstream that ignores the range sends more than was asked for: only the range goes on.
      const std::size_t wanted = static_cast<std::size_t>(std::min<std::uint64_t>(bytes.size(), end_ - position));
      if (digest) digest->update(bytes.first(wanted));
      const std::size_t taken = take(bytes.first(wanted));
      position += taken;
      return taken < bytes.size() ? taken : bytes.size();
    };
    const RangeResult r =
        upstream.fetch_range(url, credentials_apply ? source_.headers : kNoHeaders, position, end_ - 1, sink);
    {
      std::lock_guard lock(mutex_);
      if (cancelled_) break;
    }
    if (position >= end_) break;
    if (r.received > 0) failures = 0;
    if (r.ok() && r.received > 0) continue;
    const std::string why = r.error.empty() ? "the upstream sent no bytes" : r.error;
    if (r.status == 404 || r.status == 416) return fail("the upstream refused the byte range: " + why);
    if ((r.status == 401 || r.status == 403 || r.status == 410) && source_.refresh_url) {
      if (auto fresh = source_.refresh_url()) url = *fresh;  // the signed URL expired: the Hub names another
    }
    if (++failures > retries)
      return fail("the upstream transfer failed after " + std::to_string(failures) + " attempts: " + why);
    spdlog::warn("passing {} through: {} (at byte {}), retry {}", source_.etag, why, position, failures);
    std::unique_lock lock(mutex_);
    if (room_.wait_for(lock, backoff * (1u << std::min(failures - 1, 5u)), [&] { return cancelled_; })) break;
  }
  {
    std::lock_guard lock(mutex_);
    if (cancelled_) {
      if (error_.empty()) error_ = "cancelled";
      state_.store(State::failed, std::memory_order_release);
      return;
    }
  }
  if (digest && digest->hex() != source_.etag) {
    return fail("the upstream's bytes do not hash to " + source_.etag + "; the read was ended short");
  }
  state_.store(State::complete, std::memory_order_release);
  notify();
}

PassThroughs::PassThroughs(Upstream& upstream, unsigned retries) : upstream_(upstream), retries_(retries) {}

PassThroughs::~PassThroughs() {
  shutdown();
}

std::shared_ptr<PassStream> PassThroughs::start(const cache::BlobSource& source, std::uint64_t first,
                                                std::uint64_t end) {
  if (running_.fetch_add(1) >= kMaxStreams) {
    --running_;
    ++counters_.busy;
    return nullptr;
  }
  auto stream = std::make_shared<PassStream>(source, first, end, counters_);
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      --running_;
      return nullptr;
    }
    std::erase_if(live_, [](const auto& weak) { return weak.expired(); });
    live_.push_back(stream);
  }
  ++counters_.streams;
  threads_.post([this, stream] {
    stream->run(upstream_, retries_, std::chrono::milliseconds(200));
    if (stream->state() == PassStream::State::failed) {
      ++counters_.failed;
      spdlog::warn("passing {} through ended short: {}", stream->source_.etag, stream->error());
    }
    --running_;
  });
  return stream;
}

void PassThroughs::shutdown() {
  std::vector<std::shared_ptr<PassStream>> live;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (const auto& weak : live_)
      if (auto stream = weak.lock()) live.push_back(std::move(stream));
    live_.clear();
  }
  for (const auto& stream : live) {
    stream->cancel();
    stream->fail("the node is stopping");
  }
  threads_.join();
}

namespace {
constexpr metrics::FamilySpec kPassBytes{
    "inferllama_pass_through_bytes_total", "counter",
    "File bytes of pass repos streamed from the upstream to clients, kept nowhere"};
constexpr metrics::FamilySpec kPassReads{"inferllama_pass_through_reads_total", "counter",
                                         "Reads of files of pass repos, by outcome"};
}  // namespace

void PassThroughs::render_metrics(std::string& out) const {
  metrics::write_family(out, kPassBytes, static_cast<double>(counters_.bytes.load()));
  metrics::write_header(out, kPassReads);
  metrics::write_sample(out, kPassReads, "outcome=\"started\"", static_cast<double>(counters_.streams.load()));
  metrics::write_sample(out, kPassReads, "outcome=\"failed\"", static_cast<double>(counters_.failed.load()));
  metrics::write_sample(out, kPassReads, "outcome=\"busy\"", static_cast<double>(counters_.busy.load()));
}

}  // namespace inferllama::hub
