#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cache/hashing.hpp"
#include "inferllama/chunk_store.hpp"
#include "inferllama/index.hpp"

namespace inferllama::cache {

// Stores a file that arrives as a stream (an upload to a hosted repo): its bytes go straight into chunk files
// in a staging folder of its own, each chunk hashed once as its bytes arrive, together with the digest that
// names the whole file (an upload's SHA-256: it is an LFS object; an inline file's git blob SHA-1, through
// store_bytes), so nothing is read back. Nothing is visible until store(). One upload's bytes
// arrive in order: not for use from several threads at once.
class BlobWriter {
 public:
  // `key` names the staging folder (`staging/upload-<key>`), one per upload; a folder of the same key left by
  // an earlier attempt is wiped. `declared_size` is the size the client announced. `chunk_size` is a power of
  // two of at least 16 KiB (the merkle block). What it writes is an LFS object.
  BlobWriter(ChunkStore& store, std::uint32_t chunk_size, const std::string& key, std::uint64_t declared_size);
  ~BlobWriter();  // abandons the upload unless store() succeeded
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  // Appends bytes. Throws std::length_error (writing nothing) past `declared_size`, std::system_error on a
  // disk error (a full disk is errc::no_space_on_device); the bytes before the error count as written.
  void write(std::span<const std::uint8_t> bytes);
  // write() in two halves that may run at once on two threads: the chunks (files and their hashes), and the
  // whole file's digest, each given every byte once and in order.
  void write_chunks(std::span<const std::uint8_t> bytes);
  void hash_file(std::span<const std::uint8_t> bytes);
  std::uint64_t written() const { return written_; }

  struct Digests {
    Sha256 sha256;  // of an LFS object (zero for an inline file)
    Sha1 git_blob;  // git's blob id: the Hub's etag of a regular file (zero for an LFS object)
    std::uint64_t size = 0;
  };
  // The file's digests, once every declared byte was written (else std::logic_error).
  const Digests& finish();

  // Makes the blob durable and visible: the chunk files are synced, then, under the store's mutation mutex,
  // moved to their addresses (or dropped when the blob `etag` is stored already) and committed with `files`
  // and `scope` in one index write. `etag` must name these bytes (lower-case hex of the SHA-256 when `lfs`,
  // of the git blob id otherwise; std::invalid_argument if not). Returns the blob as the index holds it: a
  // blob stored before keeps its record. Calls finish().
  BlobEntry store(Index& index, const std::string& etag, bool lfs, const std::vector<Index::FileRef>& files,
                  const BlobScope& scope);
  // Deletes the staged chunks; the writer takes no more bytes.
  void abandon();

 private:
  struct StagedChunk {
    ChunkRef ref;
    Sha1 padded_sha1;
    Sha256 file_root;
  };
  enum class State { open, stored, abandoned };

  friend BlobEntry store_bytes(ChunkStore&, Index&, std::uint32_t, std::string_view, const std::string&, bool,
                               const std::vector<Index::FileRef>&, const BlobScope&);
  struct StagingName {
    std::string folder;  // under staging/
  };
  BlobWriter(ChunkStore& store, std::uint32_t chunk_size, StagingName staging, std::uint64_t declared_size, bool lfs);
  std::filesystem::path chunk_file(std::size_t index) const { return staging_ / std::to_string(index); }
  void open_chunk();
  void close_chunk();
  void sync_chunks() const;

  ChunkStore& store_;
  const std::uint32_t chunk_size_;
  const std::filesystem::path staging_;
  const std::uint64_t declared_size_;
  const bool lfs_;  // an LFS object (named by its SHA-256), or a regular file (by its git blob id)
  State state_ = State::open;
  std::uint64_t written_ = 0;
  std::vector<StagedChunk> chunks_;
  int chunk_fd_ = -1;  // the chunk being filled; the full ones are closed (a large file has thousands)
  std::uint32_t chunk_filled_ = 0;
  std::optional<ChunkHasher> chunk_hasher_;
  Sha256Stream sha256_;
  Sha1Stream git_blob_;
  std::optional<Digests> digests_;
};

// Stores a whole file held in memory the same way (the regular files of a commit arrive inline).
BlobEntry store_bytes(ChunkStore& store, Index& index, std::uint32_t chunk_size, std::string_view bytes,
                      const std::string& etag, bool lfs, const std::vector<Index::FileRef>& files,
                      const BlobScope& scope);

// The parts of one multipart upload (Git LFS sends each part in a PUT of its own: maybe at once, maybe
// again after a failure, maybe after the node restarted), each in a file of its own in a staging folder
// (`staging/multipart-<key>`) that outlives the process until remove(). Parts are numbered from 1.
class MultipartStaging {
 public:
  MultipartStaging(ChunkStore& store, const std::string& key);

  // One PUT of a part: written under a name of its own, which becomes the part only on commit(), so a cut
  // PUT leaves no part and a retry running beside it does not mix its bytes in. Dropped unless committed.
  class PartWriter {
   public:
    ~PartWriter();
    PartWriter(const PartWriter&) = delete;
    PartWriter& operator=(const PartWriter&) = delete;
    // Throws std::system_error on a disk error.
    void write(std::span<const std::uint8_t> bytes);
    std::uint64_t written() const { return written_; }
    // Syncs the bytes and makes them the part, replacing one an earlier PUT committed.
    void commit();

   private:
    friend class MultipartStaging;
    PartWriter(std::filesystem::path temporary, std::filesystem::path part);
    std::filesystem::path temporary_;
    std::filesystem::path part_;
    int fd_ = -1;
    std::uint64_t written_ = 0;
  };
  PartWriter begin_part(std::size_t number);

  bool has_part(std::size_t number) const;
  std::uint64_t part_size(std::size_t number) const;  // of a committed part; std::filesystem::filesystem_error if none
  // Feeds parts 1..count in order into `writer` (a BlobWriter of the whole file), which hashes it all in
  // this one read pass. Throws std::system_error when a part is missing.
  void assemble(std::size_t count, BlobWriter& writer) const;
  void remove();  // deletes the folder, parts and all

 private:
  std::filesystem::path part_file(std::size_t number) const { return dir_ / std::to_string(number); }
  std::filesystem::path dir_;
};

}  // namespace inferllama::cache
