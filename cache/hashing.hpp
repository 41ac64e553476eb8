#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "inferllama/digest.hpp"

namespace inferllama::cache {

// A streaming hasher over OpenSSL's EVP (SHA-NI where the CPU has it); reusable after finish().
template <class D>
class DigestStream {
 public:
  DigestStream();
  ~DigestStream();
  DigestStream(const DigestStream& other);  // the same state: hash a prefix once, finish it two ways
  DigestStream& operator=(const DigestStream&) = delete;
  void update(std::span<const std::uint8_t> bytes);
  void update(std::string_view text);
  D finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
using Sha256Stream = DigestStream<Sha256>;
using Sha1Stream = DigestStream<Sha1>;

Sha256 sha256(std::span<const std::uint8_t> bytes);
Sha1 sha1(std::span<const std::uint8_t> bytes);
Sha256 sha256(std::string_view text);
Sha1 sha1(std::string_view text);

// Git names a regular file by the SHA-1 of "blob <size>\0" followed by its bytes; the Hub's ETag for
// non-LFS files is that name. Start the stream with this header, then feed the bytes.
void start_git_blob(Sha1Stream& stream, std::uint64_t size);

// BitTorrent v2 (BEP 52) hashes 16 KiB blocks into a SHA-256 merkle tree. A chunk's content address is
// the root of its blocks' subtree, padded with zero leaves to a full piece: the same value a v2 torrent
// carries in its piece layer, so one SHA-256 pass names the chunk and serves BitTorrent.
inline constexpr std::size_t kMerkleBlock = std::size_t{16} * 1024;

// What a chunk is stored and seeded under: its address (piece root), its SHA-1 piece hash (BitTorrent
// v1), and for a short final chunk also the SHA-1 of the chunk zero-padded to a full piece (BEP 47).
// `file_root` is the root of the chunk's blocks padded only to the next power of two: the BEP 52
// `pieces root` of a file that is this one chunk, which cannot be derived from `root` later.
struct ChunkHashes {
  Sha256 root;
  Sha1 piece_sha1;
  Sha1 padded_sha1;
  Sha256 file_root;
};

// Hashes a chunk as its bytes arrive, in order, so they never have to be read back.
class ChunkHasher {
 public:
  explicit ChunkHasher(std::size_t piece_size);
  void update(std::span<const std::uint8_t> bytes);
  ChunkHashes finish();

 private:
  std::size_t piece_size_;
  std::size_t size_ = 0;
  std::size_t block_fill_ = 0;
  Sha256Stream block_;
  std::vector<Sha256> leaves_;
  Sha1Stream sha1_;
};

// The BEP 52 `pieces root` of a file longer than one piece: the merkle root of its piece layer (its
// chunks' roots, in order) padded to a power of two with the root of an all-zero piece.
Sha256 piece_layer_root(std::span<const Sha256> piece_layer, std::size_t piece_size);

ChunkHashes hash_chunk(std::span<const std::uint8_t> chunk, std::size_t piece_size);
inline Sha256 piece_root(std::span<const std::uint8_t> chunk, std::size_t piece_size) {
  return hash_chunk(chunk, piece_size).root;
}

}  // namespace inferllama::cache
