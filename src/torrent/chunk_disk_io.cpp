#include "torrent/chunk_disk_io.hpp"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <iterator>
#include <utility>

#include <spdlog/spdlog.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <libtorrent/add_torrent_params.hpp>
#include <libtorrent/error_code.hpp>
#include <libtorrent/file_storage.hpp>
#include <libtorrent/hasher.hpp>
#include <libtorrent/storage_defs.hpp>

namespace inferllama::torrent {

// ---- ChunkReader ----

ChunkReader::OpenFile::~OpenFile() {
  ::close(fd);
}

ChunkReader::ChunkReader(const ChunkStore& store, std::size_t max_open_chunks,
                         std::function<void(const Sha256&)> on_damaged)
    : store_(store), max_open_chunks_(std::max<std::size_t>(max_open_chunks, 1)), on_damaged_(std::move(on_damaged)) {}

bool ChunkReader::publish(const Sha1& key, std::vector<PieceSource> pieces) {
  auto table = std::make_shared<PieceTable>();
  table->pieces = std::move(pieces);
  std::lock_guard lock(tables_mutex_);
  return tables_.emplace(key, std::move(table)).second;
}

void ChunkReader::withdraw(const Sha1& key) {
  std::shared_ptr<PieceTable> table;
  {
    std::lock_guard lock(tables_mutex_);
    auto it = tables_.find(key);
    if (it == tables_.end()) return;
    table = std::move(it->second);
    tables_.erase(it);
  }
  table->withdrawing = true;
  {
    std::unique_lock gate(table->gate);
    table->withdrawn = true;
  }
  for (const PieceSource& piece : table->pieces) forget(piece.chunk);
}

std::shared_ptr<const PieceTable> ChunkReader::find(const Sha1& key) const {
  std::lock_guard lock(tables_mutex_);
  auto it = tables_.find(key);
  return it == tables_.end() ? nullptr : it->second;
}

std::shared_ptr<const ChunkReader::OpenFile> ChunkReader::open(const Sha256& chunk, std::error_code& error) {
  {
    std::lock_guard lock(open_mutex_);
    if (auto it = open_files_.find(chunk); it != open_files_.end()) {
      open_order_.splice(open_order_.begin(), open_order_, it->second.second);
      return it->second.first;
    }
  }
  const int fd = store_.open_chunk(chunk);
  if (fd < 0) {
    error = std::error_code(errno, std::generic_category());
    return nullptr;
  }
  auto file = std::make_shared<const OpenFile>(fd);
  std::lock_guard lock(open_mutex_);
  if (auto it = open_files_.find(chunk); it != open_files_.end()) return it->second.first;  // lost a race
  open_order_.push_front(chunk);
  open_files_.emplace(chunk, std::make_pair(file, open_order_.begin()));
  while (open_files_.size() > max_open_chunks_) {
    // Readers still holding the evicted descriptor keep it open until they finish.
    open_files_.erase(open_order_.back());
    open_order_.pop_back();
  }
  return file;
}

void ChunkReader::forget(const Sha256& chunk) {
  std::lock_guard lock(open_mutex_);
  auto it = open_files_.find(chunk);
  if (it == open_files_.end()) return;
  open_order_.erase(it->second.second);
  open_files_.erase(it);
}

ReadFailure ChunkReader::read(const PieceTable& table, std::size_t piece, std::uint64_t offset,
                              std::span<const std::span<char>> blocks) {
  auto fail = [&](std::error_code error, ReadStage stage) {
    read_errors_.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("BitTorrent read of piece {}: chunk {}: {}", piece,
                  piece < table.pieces.size() ? table.pieces[piece].chunk.hex() : "out of range", error.message());
    // Damage is a chunk file gone or shorter than it should be; running out of descriptors is not.
    const bool damaged = error == std::errc::no_such_file_or_directory || error == std::errc::io_error;
    if (on_damaged_ && damaged && piece < table.pieces.size() && !table.damage_reported.exchange(true))
      on_damaged_(table.pieces[piece].chunk);
    return ReadFailure{error, stage};
  };
  if (table.withdrawing) return ReadFailure{std::make_error_code(std::errc::operation_canceled), ReadStage::read};
  std::shared_lock gate(table.gate);
  if (table.withdrawn) return ReadFailure{std::make_error_code(std::errc::operation_canceled), ReadStage::read};
  if (piece >= table.pieces.size()) return fail(std::make_error_code(std::errc::invalid_argument), ReadStage::read);
  const PieceSource& source = table.pieces[piece];

  std::uint64_t total = 0;
  for (const std::span<char> block : blocks) total += block.size();
  const std::uint64_t in_chunk = offset < source.size ? std::min<std::uint64_t>(total, source.size - offset) : 0;
  if (in_chunk > 0) {
    std::error_code error;
    auto file = open(source.chunk, error);
    if (!file) return fail(error, ReadStage::open);
    std::vector<iovec> pending;
    pending.reserve(blocks.size());
    for (std::uint64_t left = in_chunk; const std::span<char> block : blocks) {
      if (left == 0) break;
      const std::size_t length = static_cast<std::size_t>(std::min<std::uint64_t>(block.size(), left));
      if (length > 0) pending.push_back(iovec{block.data(), length});
      left -= length;
    }
    std::size_t first = 0;
    std::uint64_t done = 0;
    while (done < in_chunk) {
      const int count = static_cast<int>(std::min<std::size_t>(pending.size() - first, IOV_MAX));
      const ssize_t n = ::preadv(file->fd, pending.data() + first, count, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail(std::error_code(errno, std::generic_category()), ReadStage::read);
      // A chunk file shorter than the size the index recorded: the store was damaged underneath.
      if (n == 0) return fail(std::make_error_code(std::errc::io_error), ReadStage::read);
      done += static_cast<std::uint64_t>(n);
      // Skip the buffers this call filled; a partly filled one continues where it stopped.
      for (auto rest = static_cast<std::size_t>(n); rest > 0;) {
        iovec& next = pending[first];
        if (rest < next.iov_len) {
          next.iov_base = static_cast<char*>(next.iov_base) + rest;
          next.iov_len -= rest;
          break;
        }
        rest -= next.iov_len;
        ++first;
      }
    }
  }
  // Past the chunk's end a piece holds pad bytes, which are zeros.
  for (std::uint64_t start = 0; const std::span<char> block : blocks) {
    const std::uint64_t filled = in_chunk > start ? std::min<std::uint64_t>(in_chunk - start, block.size()) : 0;
    std::memset(block.data() + filled, 0, block.size() - filled);
    start += block.size();
  }
  bytes_read_.fetch_add(total, std::memory_order_relaxed);
  return {};
}

// ---- the disk backend ----

namespace {

// Read buffers live on the heap and are freed whenever libtorrent drops them. The allocator is a
// process-wide object so a buffer whose completion outlives the disk backend (queued in the
// io_context at shutdown) can still be freed.
class HeapBuffers final : public lt::buffer_allocator_interface {
 public:
  char* allocate(int size) { return new char[static_cast<std::size_t>(size)]; }
  void free_disk_buffer(char* buffer) override { delete[] buffer; }
};

HeapBuffers& heap_buffers() {
  static HeapBuffers buffers;
  return buffers;
}

lt::storage_error storage_failure(const ReadFailure& failure, lt::file_index_t file) {
  lt::error_code ec(failure.error.value(), boost::system::generic_category());
  if (failure.error == std::errc::operation_canceled) ec = boost::asio::error::operation_aborted;
  return lt::storage_error(ec, file,
                           failure.stage == ReadStage::open ? lt::operation_t::file_open : lt::operation_t::file_read);
}

lt::storage_error not_supported(lt::operation_t operation) {
  return lt::storage_error(
      lt::error_code(boost::system::errc::operation_not_supported, boost::system::generic_category()), operation);
}

// What the backend knows of one torrent's storage. `files` is libtorrent's file list, which outlives
// the storage; it is only touched on the network thread.
struct Storage {
  std::shared_ptr<const PieceTable> table;  // null when the torrent's pieces do not match a published table
  const lt::file_storage* files = nullptr;
  std::string save_path;
};

class ChunkDiskIo final : public lt::disk_interface {
 public:
  ChunkDiskIo(lt::io_context& network, lt::counters& counters, std::shared_ptr<ChunkReader> reader, int threads)
      : network_(network),
        counters_(counters),
        reader_(std::move(reader)),
        threads_(static_cast<std::size_t>(threads)),
        workers_(threads_) {}

  ~ChunkDiskIo() override { workers_.join(); }

  lt::storage_holder new_torrent(const lt::storage_params& params, const std::shared_ptr<void>&) override {
    auto storage = std::make_shared<Storage>();
    storage->files = &params.files;
    storage->save_path = params.path;
    Sha1 key;
    std::copy(params.info_hash.begin(), params.info_hash.end(), key.bytes.begin());
    auto table = reader_->find(key);
    if (table && matches(*table, params.files)) storage->table = std::move(table);

    lt::storage_index_t index{static_cast<std::uint32_t>(storages_.size())};
    if (!free_slots_.empty()) {
      index = free_slots_.back();
      free_slots_.pop_back();
      storages_[slot(index)] = std::move(storage);
    } else {
      storages_.push_back(std::move(storage));
    }
    return lt::storage_holder(index, *this);
  }

  void remove_torrent(lt::storage_index_t index) override {
    storages_[slot(index)].reset();
    free_slots_.push_back(index);
  }

  // Queued until submit_jobs(), which hands the round to the workers.
  void async_read(lt::storage_index_t index, const lt::peer_request& request,
                  std::function<void(lt::disk_buffer_holder, const lt::storage_error&)> handler,
                  lt::disk_job_flags_t) override {
    std::shared_ptr<const Storage> storage = storages_[slot(index)];
    const lt::file_index_t file = file_of(*storage, request.piece);
    queued_reads_.push_back(QueuedRead{std::move(storage), request, file, std::move(handler)});
  }

  // Seeds never receive bytes: the chunk store is filled by the node's downloads, not by peers.
  bool async_write(lt::storage_index_t, const lt::peer_request&, const char*, std::shared_ptr<lt::disk_observer>,
                   std::function<void(const lt::storage_error&)> handler, lt::disk_job_flags_t) override {
    boost::asio::post(network_,
                      [handler = std::move(handler)] { handler(not_supported(lt::operation_t::file_write)); });
    return false;
  }

  // Hashes a piece from its chunk: the SHA-1 of the whole piece (pad zeros included) when asked for v1,
  // and the SHA-256 of each 16 KiB block of the file's part of the piece when `block_hashes` is given.
  void async_hash(
      lt::storage_index_t index, lt::piece_index_t piece, lt::span<lt::sha256_hash> block_hashes,
      lt::disk_job_flags_t flags,
      std::function<void(lt::piece_index_t, const lt::sha1_hash&, const lt::storage_error&)> handler) override {
    std::shared_ptr<const Storage> storage = storages_[slot(index)];
    const bool v1 = bool(flags & lt::disk_interface::v1_hash);
    const int v1_size = v1 ? storage->files->piece_size(piece) : 0;
    const int v2_size = block_hashes.empty() ? 0 : storage->files->piece_size2(piece);
    const lt::file_index_t file = file_of(*storage, piece);
    boost::asio::post(workers_, [this, storage, piece, block_hashes, v1, v1_size, v2_size, file,
                                 work = keep_network_running(), handler = std::move(handler)]() mutable {
      std::vector<char> bytes(static_cast<std::size_t>(std::max(v1_size, v2_size)));
      lt::storage_error error;
      lt::sha1_hash hash;
      if (!storage->table) {
        error = unknown_torrent(file);
      } else if (auto failure =
                     reader_->read(*storage->table, static_cast<std::size_t>(static_cast<int>(piece)), 0, bytes)) {
        error = storage_failure(failure, file);
      } else {
        if (v1) hash = lt::hasher(lt::span<const char>(bytes.data(), v1_size)).final();
        for (int offset = 0, block = 0; offset < v2_size; offset += lt::default_block_size, ++block) {
          const int length = std::min(lt::default_block_size, v2_size - offset);
          block_hashes[block] = lt::hasher256(lt::span<const char>(bytes.data() + offset, length)).final();
        }
        counters_.inc_stats_counter(lt::counters::num_read_ops);
      }
      boost::asio::post(network_, [handler = std::move(handler), piece, hash, error] { handler(piece, hash, error); });
    });
  }

  void async_hash2(
      lt::storage_index_t index, lt::piece_index_t piece, int offset, lt::disk_job_flags_t,
      std::function<void(lt::piece_index_t, const lt::sha256_hash&, const lt::storage_error&)> handler) override {
    std::shared_ptr<const Storage> storage = storages_[slot(index)];
    const int length = std::max(0, std::min(lt::default_block_size, storage->files->piece_size2(piece) - offset));
    const lt::file_index_t file = file_of(*storage, piece);
    boost::asio::post(workers_, [this, storage, piece, offset, length, file, work = keep_network_running(),
                                 handler = std::move(handler)]() mutable {
      std::vector<char> bytes(static_cast<std::size_t>(length));
      lt::storage_error error;
      lt::sha256_hash hash;
      if (!storage->table) {
        error = unknown_torrent(file);
      } else if (auto failure = reader_->read(*storage->table, static_cast<std::size_t>(static_cast<int>(piece)),
                                              static_cast<std::uint64_t>(offset), bytes)) {
        error = storage_failure(failure, file);
      } else {
        hash = lt::hasher256(lt::span<const char>(bytes.data(), length)).final();
        counters_.inc_stats_counter(lt::counters::num_read_ops);
      }
      boost::asio::post(network_, [handler = std::move(handler), piece, hash, error] { handler(piece, hash, error); });
    });
  }

  // The bytes stay where the chunk store keeps them; a torrent's storage cannot be moved.
  void async_move_storage(
      lt::storage_index_t index, std::string, lt::move_flags_t,
      std::function<void(lt::status_t, const std::string&, const lt::storage_error&)> handler) override {
    std::string current = storages_[slot(index)]->save_path;
    boost::asio::post(network_, [handler = std::move(handler), current = std::move(current)] {
      handler(lt::status_t::fatal_disk_error, current, not_supported(lt::operation_t::file_rename));
    });
  }

  // Open chunk files are shared between torrents and bounded by the reader's LRU; nothing is held
  // per torrent.
  void async_release_files(lt::storage_index_t, std::function<void()> handler) override {
    if (handler) boost::asio::post(network_, std::move(handler));
  }

  // Every piece of a published torrent is a stored chunk, so there is nothing to check. A torrent
  // added without a matching piece table cannot be served at all.
  void async_check_files(lt::storage_index_t index, const lt::add_torrent_params*,
                         lt::aux::vector<std::string, lt::file_index_t>,
                         std::function<void(lt::status_t, const lt::storage_error&)> handler) override {
    const bool known = storages_[slot(index)]->table != nullptr;
    boost::asio::post(network_, [handler = std::move(handler), known] {
      if (known) {
        handler(lt::status_t::no_error, lt::storage_error());
      } else {
        handler(lt::status_t::fatal_disk_error, unknown_torrent(lt::file_index_t{-1}));
      }
    });
  }

  void async_stop_torrent(lt::storage_index_t, std::function<void()> handler) override {
    if (handler) boost::asio::post(network_, std::move(handler));
  }

  // Torrent file names are views of chunks, not files on disk.
  void async_rename_file(
      lt::storage_index_t, lt::file_index_t file, std::string name,
      std::function<void(const std::string&, lt::file_index_t, const lt::storage_error&)> handler) override {
    boost::asio::post(network_, [handler = std::move(handler), file, name = std::move(name)] {
      handler(name, file, not_supported(lt::operation_t::file_rename));
    });
  }

  // The chunk store owns the bytes (other files and revisions may share them); eviction deletes
  // chunks, never a torrent.
  void async_delete_files(lt::storage_index_t, lt::remove_flags_t,
                          std::function<void(const lt::storage_error&)> handler) override {
    boost::asio::post(network_,
                      [handler = std::move(handler)] { handler(not_supported(lt::operation_t::file_remove)); });
  }

  // A seed downloads nothing, so priorities change nothing on disk; they are accepted as given.
  void async_set_file_priority(
      lt::storage_index_t, lt::aux::vector<lt::download_priority_t, lt::file_index_t> priorities,
      std::function<void(const lt::storage_error&, lt::aux::vector<lt::download_priority_t, lt::file_index_t>)> handler)
      override {
    boost::asio::post(network_, [handler = std::move(handler), priorities = std::move(priorities)]() mutable {
      handler(lt::storage_error(), std::move(priorities));
    });
  }

  // No piece is cached here, so there is nothing to clear.
  void async_clear_piece(lt::storage_index_t, lt::piece_index_t piece,
                         std::function<void(lt::piece_index_t)> handler) override {
    boost::asio::post(network_, [handler = std::move(handler), piece] { handler(piece); });
  }

  // Reads are counted as they complete (num_blocks_read, num_read_ops); there is no cache to report.
  void update_stats_counters(lt::counters&) const override {}

  // Chunks, not the torrent's files, are opened (and shared between torrents).
  std::vector<lt::open_file_state> get_status(lt::storage_index_t) const override { return {}; }

  // Waiting means letting the queued reads finish, so none posts to the network thread afterwards.
  void abort(bool wait) override {
    submit_jobs();
    if (wait) workers_.join();
  }

  // libtorrent calls this after a round of async_read()s (each peer's fill_send_buffer ends in
  // deferred_submit_jobs()). The round goes to at most one batch per worker, each batch's
  // completions come back to the network thread in one post, and a peer's consecutive blocks of a
  // piece are read in one system call: a hop per block made the seed switch context far more often
  // than libtorrent's own disk backend, which batches the same way.
  void submit_jobs() override {
    if (queued_reads_.empty()) return;
    const std::size_t batches = std::clamp<std::size_t>(queued_reads_.size() / kMinReadBatch, 1, threads_);
    const std::size_t batch_size = (queued_reads_.size() + batches - 1) / batches;
    std::vector<QueuedRead> batch;
    for (QueuedRead& job : queued_reads_) {
      // Batches end between runs, so a run is read in one call.
      if (batch.size() >= batch_size && !continues(batch.back(), job)) post_batch(std::exchange(batch, {}));
      batch.push_back(std::move(job));
    }
    post_batch(std::move(batch));
    queued_reads_.clear();
  }

  // The worker count is fixed when the backend is made; no libtorrent disk setting applies.
  void settings_updated() override {}

 private:
  using ReadHandler = std::function<void(lt::disk_buffer_holder, const lt::storage_error&)>;
  struct QueuedRead {
    std::shared_ptr<const Storage> storage;
    lt::peer_request request;
    lt::file_index_t file;
    ReadHandler handler;
  };
  struct CompletedRead {
    ReadHandler handler;
    lt::disk_buffer_holder buffer;
    lt::storage_error error;
  };
  // Fewer reads than this are not worth waking another worker for.
  static constexpr std::size_t kMinReadBatch = 32;

  // Whether `next` asks for the bytes of the same piece right after `previous`'s.
  static bool continues(const QueuedRead& previous, const QueuedRead& next) {
    return next.storage == previous.storage && next.request.piece == previous.request.piece &&
           next.request.start == previous.request.start + previous.request.length;
  }

  void post_batch(std::vector<QueuedRead> batch) {
    boost::asio::post(workers_, [this, batch = std::move(batch), work = keep_network_running()]() mutable {
      std::vector<CompletedRead> done;
      done.reserve(batch.size());
      for (auto run = batch.begin(); run != batch.end();) {
        auto end = std::next(run);
        while (end != batch.end() && continues(*std::prev(end), *end)) ++end;
        read_run(std::span<QueuedRead>(run, end), done);
        run = end;
      }
      boost::asio::post(network_, [done = std::move(done)]() mutable {
        for (CompletedRead& completed : done) completed.handler(std::move(completed.buffer), completed.error);
      });
    });
  }

  // On a worker: consecutive blocks of one piece, each into its own buffer (libtorrent frees them one by one).
  void read_run(std::span<QueuedRead> run, std::vector<CompletedRead>& done) {
    std::vector<std::span<char>> blocks;
    blocks.reserve(run.size());
    const std::size_t first = done.size();
    for (QueuedRead& job : run) {
      const int length = job.request.length;
      lt::disk_buffer_holder buffer(heap_buffers(), heap_buffers().allocate(length), length);
      blocks.emplace_back(buffer.data(), static_cast<std::size_t>(length));
      done.push_back(CompletedRead{std::move(job.handler), std::move(buffer), {}});
    }
    const QueuedRead& head = run.front();
    lt::storage_error error;
    if (!head.storage->table) {
      error = unknown_torrent(head.file);
    } else if (auto failure =
                   reader_->read(*head.storage->table, static_cast<std::size_t>(static_cast<int>(head.request.piece)),
                                 static_cast<std::uint64_t>(head.request.start), blocks)) {
      error = storage_failure(failure, head.file);
    } else {
      counters_.inc_stats_counter(lt::counters::num_blocks_read, static_cast<std::int64_t>(run.size()));
      counters_.inc_stats_counter(lt::counters::num_read_ops);
      return;
    }
    for (std::size_t i = first; i < done.size(); ++i) {
      done[i].buffer.reset();
      done[i].error = error;
    }
  }

  static std::size_t slot(lt::storage_index_t index) { return static_cast<std::uint32_t>(index); }

  // Held by every job in flight (a batch of reads, a hash): libtorrent lets its network loop end once the
  // disk backend has no work, so a completion posted after that still runs (and frees what it holds)
  // before the session is gone.
  boost::asio::executor_work_guard<lt::io_context::executor_type> keep_network_running() {
    return boost::asio::make_work_guard(network_);
  }

  static lt::storage_error unknown_torrent(lt::file_index_t file) {
    return lt::storage_error(
        lt::error_code(boost::system::errc::no_such_file_or_directory, boost::system::generic_category()), file,
        lt::operation_t::file_open);
  }

  static lt::file_index_t file_of(const Storage& storage, lt::piece_index_t piece) {
    return storage.files->file_index_at_piece(piece);
  }

  // A piece table serves a torrent when it has a chunk per piece and no chunk is larger than its piece.
  static bool matches(const PieceTable& table, const lt::file_storage& files) {
    if (table.pieces.size() != static_cast<std::size_t>(files.num_pieces())) return false;
    for (std::size_t i = 0; i < table.pieces.size(); ++i) {
      if (table.pieces[i].size > static_cast<std::uint32_t>(files.piece_size(lt::piece_index_t{static_cast<int>(i)}))) {
        return false;
      }
    }
    return true;
  }

  lt::io_context& network_;
  lt::counters& counters_;
  std::shared_ptr<ChunkReader> reader_;
  const std::size_t threads_;
  boost::asio::thread_pool workers_;
  // Touched on the network thread only (libtorrent calls every disk_interface function there).
  std::vector<std::shared_ptr<const Storage>> storages_;
  std::vector<lt::storage_index_t> free_slots_;
  std::vector<QueuedRead> queued_reads_;  // until the next submit_jobs()
};

}  // namespace

std::unique_ptr<lt::disk_interface> make_chunk_disk_io(lt::io_context& network, lt::counters& counters,
                                                       std::shared_ptr<ChunkReader> reader, int threads) {
  return std::make_unique<ChunkDiskIo>(network, counters, std::move(reader), std::max(threads, 1));
}

}  // namespace inferllama::torrent
