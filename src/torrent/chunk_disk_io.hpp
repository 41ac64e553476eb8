#pragma once
// Serving BitTorrent pieces from the chunk store: the piece tables of the seeded torrents, an LRU of
// open chunk files, and a read-only libtorrent disk backend over them. Included by the torrent
// module's own sources only (it pulls in libtorrent).
#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <system_error>
#include <vector>

#include <libtorrent/disk_interface.hpp>
#include <libtorrent/io_context.hpp>
#include <libtorrent/performance_counters.hpp>

#include "inferllama/chunk_store.hpp"
#include "torrent/torrent.hpp"

namespace inferllama::torrent {

// The pieces of one seeded torrent. `gate` is held shared by every read and exclusively by withdraw(),
// so once a torrent is withdrawn no read of its chunks is running or will start.
struct PieceTable {
  std::vector<PieceSource> pieces;
  mutable std::shared_mutex gate;
  bool withdrawn = false;  // guarded by gate
  // Set before the gate is taken exclusively: reads queued behind it give up instead of holding it shared.
  std::atomic<bool> withdrawing{false};
  mutable std::atomic<bool> damage_reported{false};  // a damaged chunk is reported once per torrent
};

// Where a read failed: libtorrent reports the operation with the error.
enum class ReadStage { none, open, read };

struct ReadFailure {
  std::error_code error;
  ReadStage stage = ReadStage::none;
  explicit operator bool() const { return bool(error); }
};

// Reads pieces of published torrents from their chunk files. Thread-safe.
class ChunkReader {
 public:
  // `on_damaged` hears of a chunk that cannot be opened or read in full (called on the reading thread).
  ChunkReader(const ChunkStore& store, std::size_t max_open_chunks, std::function<void(const Sha256&)> on_damaged = {});

  // `key` is the 20-byte hash libtorrent names the torrent's storage by (its v1 info-hash, or the
  // truncated v2 info-hash of a hybrid or v2 torrent). False if a table is already published under it.
  bool publish(const Sha1& key, std::vector<PieceSource> pieces);
  // Blocks until reads of the torrent in progress finish; afterwards none starts, and the chunk files
  // it kept open are closed (so an eviction that deletes them frees their space).
  void withdraw(const Sha1& key);
  std::shared_ptr<const PieceTable> find(const Sha1& key) const;

  // Fills `out` with the piece's bytes from `offset`: the chunk's bytes, zeros past the chunk's end.
  ReadFailure read(const PieceTable& table, std::size_t piece, std::uint64_t offset, std::span<char> out) {
    return read(table, piece, offset, std::span<const std::span<char>>(&out, 1));
  }
  // The same for consecutive buffers (`blocks` holds the piece's bytes from `offset` one after the
  // other), in one system call: a peer asks for a piece block by block.
  ReadFailure read(const PieceTable& table, std::size_t piece, std::uint64_t offset,
                   std::span<const std::span<char>> blocks);

  std::uint64_t bytes_read() const { return bytes_read_.load(std::memory_order_relaxed); }
  std::uint64_t read_errors() const { return read_errors_.load(std::memory_order_relaxed); }

 private:
  struct OpenFile {
    explicit OpenFile(int descriptor) : fd(descriptor) {}
    ~OpenFile();
    OpenFile(const OpenFile&) = delete;
    OpenFile& operator=(const OpenFile&) = delete;
    int fd;
  };
  std::shared_ptr<const OpenFile> open(const Sha256& chunk, std::error_code& error);
  void forget(const Sha256& chunk);

  const ChunkStore& store_;
  const std::size_t max_open_chunks_;
  const std::function<void(const Sha256&)> on_damaged_;

  mutable std::mutex tables_mutex_;
  std::map<Sha1, std::shared_ptr<PieceTable>> tables_;

  std::mutex open_mutex_;
  std::list<Sha256> open_order_;  // most recently used first
  std::map<Sha256, std::pair<std::shared_ptr<const OpenFile>, std::list<Sha256>::iterator>> open_files_;

  std::atomic<std::uint64_t> bytes_read_{0};
  std::atomic<std::uint64_t> read_errors_{0};
};

// A read-only libtorrent disk backend for session_params::disk_io_constructor. Reads and hashes run on
// `threads` worker threads; completions are posted to libtorrent's network io_context, the reads'
// a batch at a time.
std::unique_ptr<lt::disk_interface> make_chunk_disk_io(lt::io_context& network, lt::counters& counters,
                                                       std::shared_ptr<ChunkReader> reader, int threads);

}  // namespace inferllama::torrent
