#include "cache/blob_writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <mutex>
#include <stdexcept>
#include <system_error>

namespace inferllama::cache {
namespace fs = std::filesystem;
namespace {

// Bytes are hashed in slices that stay in the core's cache across the four passes over them (the chunk's
// SHA-1 and merkle blocks, the file's SHA-256 and git blob SHA-1).
constexpr std::size_t kHashSlice = 64 * 1024;
// A part is read in blocks of this size while it is assembled.
constexpr std::size_t kReadBlock = 1 << 20;

// Reads errno before anything else: building the message allocates, which may change it.
[[noreturn]] void throw_errno(const char* what, const fs::path& path) {
  const int error = errno;
  throw std::system_error(error, std::generic_category(), std::string(what) + " " + path.string());
}

struct ScopedFd {
  explicit ScopedFd(int fd) : fd(fd) {}
  ~ScopedFd() {
    if (fd >= 0) ::close(fd);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int fd;
};

void write_all(int fd, std::span<const std::uint8_t> bytes, const fs::path& path) {
  while (!bytes.empty()) {
    const ssize_t wrote = ::write(fd, bytes.data(), bytes.size());
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) throw_errno("cannot write", path);
    bytes = bytes.subspan(static_cast<std::size_t>(wrote));
  }
}

// A staging key comes from a request: it must stay one folder name.
const std::string& checked_key(const std::string& key) {
  if (key.empty() || key.find_first_of(std::string_view("/\0", 2)) != std::string::npos) {
    throw std::invalid_argument("not a staging key: \"" + key + "\"");
  }
  return key;
}

std::uint32_t checked_chunk_size(std::uint32_t chunk_size) {
  if (!std::has_single_bit(chunk_size) || chunk_size < kMerkleBlock) {
    throw std::invalid_argument("chunk size " + std::to_string(chunk_size) +
                                " is not a power of two of 16 KiB or more");
  }
  return chunk_size;
}

// An earlier attempt's chunks under the same name are no part of this file.
fs::path empty_folder(fs::path dir) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void sync_directory(const fs::path& dir) {
  const ScopedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.fd < 0 || ::fsync(fd.fd) != 0) throw_errno("cannot sync", dir);
}

}  // namespace

BlobWriter::BlobWriter(ChunkStore& store, std::uint32_t chunk_size, const std::string& key, std::uint64_t declared_size)
    : BlobWriter(store, chunk_size, StagingName{"upload-" + checked_key(key)}, declared_size, /*lfs=*/true) {}

// The chunk size is checked before the folder is made: a refused writer leaves nothing behind.
BlobWriter::BlobWriter(ChunkStore& store, std::uint32_t chunk_size, StagingName staging, std::uint64_t declared_size,
                       bool lfs)
    : store_(store),
      chunk_size_(checked_chunk_size(chunk_size)),
      staging_(empty_folder(store.staging_dir(staging.folder))),
      declared_size_(declared_size),
      lfs_(lfs) {
  if (!lfs_) start_git_blob(git_blob_, declared_size);
}

BlobWriter::~BlobWriter() {
  abandon();
}

void BlobWriter::write(std::span<const std::uint8_t> bytes) {
  write_chunks(bytes);
  hash_file(bytes);
}

void BlobWriter::hash_file(std::span<const std::uint8_t> bytes) {
  // Only the digest that names the file: an LFS object's SHA-256, a regular file's git blob id.
  if (lfs_) {
    sha256_.update(bytes);
  } else {
    git_blob_.update(bytes);
  }
}

void BlobWriter::write_chunks(std::span<const std::uint8_t> bytes) {
  if (state_ != State::open) throw std::logic_error("the upload was stored or abandoned");
  if (bytes.size() > declared_size_ - written_) {
    throw std::length_error("the upload is longer than the " + std::to_string(declared_size_) + " bytes it declared");
  }
  while (!bytes.empty()) {
    if (chunk_fd_ < 0) open_chunk();
    const std::size_t room = chunk_size_ - chunk_filled_;
    const ssize_t wrote = ::write(chunk_fd_, bytes.data(), std::min({bytes.size(), room, kHashSlice}));
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) throw_errno("cannot write an uploaded chunk in", staging_);
    // Only bytes on disk are hashed: after an error, what was written and what was hashed still agree.
    const auto done = bytes.first(static_cast<std::size_t>(wrote));
    chunk_hasher_->update(done);
    written_ += done.size();
    chunk_filled_ += static_cast<std::uint32_t>(done.size());
    bytes = bytes.subspan(done.size());
    if (chunk_filled_ == chunk_size_) close_chunk();
  }
}

void BlobWriter::open_chunk() {
  chunk_fd_ = ::open(chunk_file(chunks_.size()).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (chunk_fd_ < 0) throw_errno("cannot stage an uploaded chunk in", staging_);
  chunk_filled_ = 0;
  chunk_hasher_.emplace(chunk_size_);
}

void BlobWriter::close_chunk() {
  const ChunkHashes hashes = chunk_hasher_->finish();
  chunks_.push_back({ChunkRef{hashes.root, hashes.piece_sha1, chunk_filled_}, hashes.padded_sha1, hashes.file_root});
  // Start writing the chunk to disk now, so that the sync before the commit finds little left to do.
  ::sync_file_range(chunk_fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
  ::close(chunk_fd_);
  chunk_fd_ = -1;
  chunk_hasher_.reset();
}

const BlobWriter::Digests& BlobWriter::finish() {
  if (digests_) return *digests_;
  if (written_ != declared_size_) {
    throw std::logic_error("the upload has " + std::to_string(written_) + " of its " + std::to_string(declared_size_) +
                           " bytes");
  }
  if (chunk_fd_ >= 0) close_chunk();
  digests_ = lfs_ ? Digests{sha256_.finish(), Sha1{}, written_} : Digests{Sha256{}, git_blob_.finish(), written_};
  return *digests_;
}

void BlobWriter::sync_chunks() const {
  for (std::size_t i = 0; i < chunks_.size(); ++i) {
    const fs::path file = chunk_file(i);
    const ScopedFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.fd < 0 || ::fdatasync(fd.fd) != 0) throw_errno("cannot sync", file);
  }
}

BlobEntry BlobWriter::store(Index& index, const std::string& etag, bool lfs, const std::vector<Index::FileRef>& files,
                            const BlobScope& scope) {
  if (state_ != State::open) throw std::logic_error("the upload was stored or abandoned");
  const Digests& digests = finish();
  if (lfs != lfs_) throw std::invalid_argument(etag + ": an upload is stored as an LFS object, inline bytes as a file");
  const std::string actual = lfs ? digests.sha256.hex() : digests.git_blob.hex();
  if (etag != actual) throw std::invalid_argument("the uploaded bytes are " + actual + ", not " + etag);

  BlobEntry blob;
  blob.etag = etag;
  blob.lfs = lfs;
  blob.size = digests.size;
  blob.chunk_size = chunk_size_;
  for (const auto& chunk : chunks_) blob.chunks.push_back(chunk.ref);
  if (!chunks_.empty()) blob.last_padded_sha1 = chunks_.back().padded_sha1;
  if (chunks_.size() == 1) {
    blob.v2_root = chunks_.front().file_root;
  } else if (chunks_.size() > 1) {
    std::vector<Sha256> piece_layer;
    piece_layer.reserve(chunks_.size());
    for (const auto& chunk : chunks_) piece_layer.push_back(chunk.ref.id);
    blob.v2_root = piece_layer_root(piece_layer, chunk_size_);
  }

  // As a download's commit: a blob stored already keeps its chunks, and these only add files and repos.
  const bool stored_before = index.get_blob(etag).has_value();
  if (!stored_before) sync_chunks();  // outside the lock: eviction and other commits go on meanwhile
  {
    std::lock_guard mutating(store_.mutation_mutex());
    auto stored = index.get_blob(etag);
    if (stored_before && !stored) sync_chunks();  // evicted meanwhile: these chunks become the stored ones
    for (std::size_t i = 0; i < chunks_.size(); ++i) {
      if (stored) {
        std::error_code ignored;
        fs::remove(chunk_file(i), ignored);
      } else {
        store_.adopt(chunk_file(i), chunks_[i].ref.id);
      }
    }
    index.commit_blob(blob, files, scope);
    if (stored) blob = std::move(*stored);
    state_ = State::stored;
  }
  std::error_code ignored;
  fs::remove(staging_, ignored);
  return blob;
}

void BlobWriter::abandon() {
  if (chunk_fd_ >= 0) {
    ::close(chunk_fd_);
    chunk_fd_ = -1;
  }
  // A stored upload's folder is gone, and its key may name another upload's by now.
  if (state_ != State::open) return;
  state_ = State::abandoned;
  std::error_code ignored;
  fs::remove_all(staging_, ignored);
}

BlobEntry store_bytes(ChunkStore& store, Index& index, std::uint32_t chunk_size, std::string_view bytes,
                      const std::string& etag, bool lfs, const std::vector<Index::FileRef>& files,
                      const BlobScope& scope) {
  // A folder of its own for each call: two commits may carry the same file at once.
  static std::atomic<std::uint64_t> next_folder{0};
  BlobWriter writer(store, chunk_size, BlobWriter::StagingName{"inline-" + std::to_string(next_folder++)}, bytes.size(),
                    lfs);
  writer.write(std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
  return writer.store(index, etag, lfs, files, scope);
}

MultipartStaging::MultipartStaging(ChunkStore& store, const std::string& key)
    : dir_(store.staging_dir("multipart-" + checked_key(key))) {}

MultipartStaging::PartWriter MultipartStaging::begin_part(std::size_t number) {
  if (number == 0) throw std::invalid_argument("parts are numbered from 1");
  // A name per PUT: a retry may run while the PUT it repeats still writes.
  static std::atomic<std::uint64_t> next_attempt{0};
  return PartWriter(dir_ / (std::to_string(number) + ".partial-" + std::to_string(next_attempt++)), part_file(number));
}

MultipartStaging::PartWriter::PartWriter(fs::path temporary, fs::path part)
    : temporary_(std::move(temporary)), part_(std::move(part)) {
  fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_errno("cannot stage an upload part at", temporary_);
}

MultipartStaging::PartWriter::~PartWriter() {
  if (fd_ < 0) return;
  ::close(fd_);
  std::error_code ignored;
  fs::remove(temporary_, ignored);
}

void MultipartStaging::PartWriter::write(std::span<const std::uint8_t> bytes) {
  if (fd_ < 0) throw std::logic_error("the part was committed");
  write_all(fd_, bytes, temporary_);
  written_ += bytes.size();
}

void MultipartStaging::PartWriter::commit() {
  if (fd_ < 0) throw std::logic_error("the part was committed");
  if (::fdatasync(fd_) != 0) throw_errno("cannot sync", temporary_);
  fs::rename(temporary_, part_);
  ::close(fd_);
  fd_ = -1;
  // The part was acknowledged once this returns: its name must survive a crash too.
  sync_directory(part_.parent_path());
}

bool MultipartStaging::has_part(std::size_t number) const {
  std::error_code ec;
  return fs::is_regular_file(part_file(number), ec);
}

std::uint64_t MultipartStaging::part_size(std::size_t number) const {
  return fs::file_size(part_file(number));
}

void MultipartStaging::assemble(std::size_t count, BlobWriter& writer) const {
  std::vector<std::uint8_t> block(kReadBlock);
  for (std::size_t number = 1; number <= count; ++number) {
    const fs::path part = part_file(number);
    const ScopedFd fd(::open(part.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.fd < 0) throw_errno("cannot open the upload part", part);
    ::posix_fadvise(fd.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    for (;;) {
      const ssize_t got = ::read(fd.fd, block.data(), block.size());
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) throw_errno("cannot read the upload part", part);
      if (got == 0) break;
      writer.write(std::span<const std::uint8_t>(block.data(), static_cast<std::size_t>(got)));
    }
  }
}

void MultipartStaging::remove() {
  fs::remove_all(dir_);
}

}  // namespace inferllama::cache
