#pragma once
#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>

#include "inferllama/digest.hpp"

namespace inferllama {

// The data directory holds the index (users' keys and passkeys, sealed Hub tokens) and the key that
// seals them: it is the owner's only. Creates `dir` with mode 0700 when it is missing (its parents as
// usual) and returns the permission bits group and others have on it (0: private). An existing
// directory keeps the modes its operator gave it; the caller warns about open ones.
unsigned make_private_dir(const std::filesystem::path& dir);

// Chunks on disk, one file each at chunks/ab/cd/<sha256>: named by content, so a chunk shared by
// several files or revisions is stored once, and a read is a sendfile from one file.
class ChunkStore {
 public:
  explicit ChunkStore(std::filesystem::path data_dir);
  ~ChunkStore();
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  std::filesystem::path chunk_path(const Sha256& id) const;
  bool contains(const Sha256& id) const;
  int open_chunk(const Sha256& id) const;  // read-only fd, or -1
  // The chunk's file is gone or shorter than `expected_size` (its recorded size).
  bool chunk_damaged(const Sha256& id, std::uint64_t expected_size) const;

  // The folder for the chunks of the file `etag` while they are fetched and verified. It outlives a
  // failed download or a crash, so that a later download of the same file resumes from what is there.
  std::filesystem::path staging_dir(const std::string& etag);
  // Moves a verified staged chunk to its content address (or drops it if that chunk is stored).
  void adopt(const std::filesystem::path& staged, const Sha256& id);
  // Deletes a chunk's file; returns the bytes freed (0 if it was not there).
  std::uint64_t remove(const Sha256& id);
  // Every chunk file in the store (for garbage collection).
  void for_each_chunk(const std::function<void(const Sha256&)>& visit) const;

  const std::filesystem::path& root() const { return root_; }
  // Held while chunk files and their index references change together (a download's commit, an
  // eviction, garbage collection), so none of them sees the other half done.
  std::mutex& mutation_mutex() { return mutation_mutex_; }
  // Bytes in stored chunks (counted at start-up, then kept as chunks are adopted).
  std::uint64_t bytes_stored() const { return bytes_stored_.load(std::memory_order_relaxed); }

 private:
  std::filesystem::path root_;
  std::filesystem::path chunks_;
  int chunks_fd_ = -1;  // chunks_, opened once: a hit opens its chunk relative to it (see open_chunk)
  std::filesystem::path staging_;
  std::atomic<std::uint64_t> bytes_stored_{0};
  std::mutex mutation_mutex_;
};

}  // namespace inferllama
