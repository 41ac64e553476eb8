// Files of repos the operator's rules pass through without keeping (`pass`): each read streams from the
// upstream through a bounded buffer in memory to its one client. Nothing reaches the chunk store, the
// staging folder or the index.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "cache/download.hpp"
#include "inferllama/upstream.hpp"
#include "util/elastic_threads.hpp"

namespace inferllama::hub {

struct PassCounters {
  std::atomic<std::uint64_t> bytes{0};    // sent to clients
  std::atomic<std::uint64_t> streams{0};  // reads started
  std::atomic<std::uint64_t> failed{0};   // reads the upstream or the hash check ended short
  std::atomic<std::uint64_t> busy{0};     // reads refused: as many were running as may
};

// One client's read of bytes [first, end) of a file. The producer (a thread of PassThroughs) writes the
// upstream's bytes into the buffer and waits while it is full; the client's connection reads them out in
// order. A read of the whole file is checked against the file's etag as it passes: its last byte is held
// back until the hash matched, so a client never receives a complete-looking body that failed it (a
// partial range cannot be checked and is relayed as the upstream sends it).
class PassStream : public std::enable_shared_from_this<PassStream> {
 public:
  enum class State { running, complete, failed };

  PassStream(cache::BlobSource source, std::uint64_t first, std::uint64_t end, PassCounters& counters);

  // The bytes that can be sent now, from the read position on: valid until consume(). Empty when none.
  std::span<const char> readable() const;
  void consume(std::size_t n);
  State state() const { return state_.load(std::memory_order_acquire); }
  std::string error() const;
  // Told when bytes arrive or the read ends; one listener (the client's connection).
  void subscribe(const std::shared_ptr<cache::ProgressListener>& listener);
  // The client went away, or the node stops: the transfer ends at its next bytes.
  void cancel();

 private:
  friend class PassThroughs;
  // The transfer, on a thread of its own: retries a broken connection from where it stopped.
  void run(Upstream& upstream, unsigned retries, std::chrono::milliseconds backoff);
  std::size_t take(std::span<const char> bytes);
  void fail(const std::string& why);
  void notify();

  const cache::BlobSource source_;
  const std::uint64_t first_, end_;
  const bool verify_;  // the whole file passes: its hash is checked
  PassCounters& counters_;
  std::vector<char> buffer_;  // a ring of min(kBuffer, end - first) bytes

  mutable std::mutex mutex_;
  std::condition_variable room_;
  std::uint64_t written_ = 0;  // bytes put into the ring since the start
  std::uint64_t read_ = 0;     // bytes taken out of it
  bool cancelled_ = false;
  std::string error_;
  std::atomic<State> state_{State::running};
  std::weak_ptr<cache::ProgressListener> listener_;
};

// Starts and bounds the reads of passed-through files.
class PassThroughs {
 public:
  // Reads at once at most; each holds a buffer of up to kBuffer bytes.
  static constexpr std::size_t kMaxStreams = 64;
  static constexpr std::size_t kBuffer = std::size_t{2} << 20;

  PassThroughs(Upstream& upstream, unsigned retries);
  ~PassThroughs();

  // A read of bytes [first, end) of `source`, started; nullptr when kMaxStreams are running (retry later)
  // or the node is stopping.
  std::shared_ptr<PassStream> start(const cache::BlobSource& source, std::uint64_t first, std::uint64_t end);
  // Ends every read (they fail) and waits for their threads.
  void shutdown();

  const PassCounters& counters() const { return counters_; }
  // Prometheus families of the passed-through reads.
  void render_metrics(std::string& out) const;

 private:
  Upstream& upstream_;
  const unsigned retries_;
  PassCounters counters_;
  std::atomic<std::size_t> running_{0};
  std::mutex mutex_;
  std::vector<std::weak_ptr<PassStream>> live_;
  bool stopping_ = false;
  ElasticThreads threads_{kMaxStreams};
};

}  // namespace inferllama::hub
