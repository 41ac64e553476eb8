// The sealed stream of a backup file (.ilbk): a byte stream encrypted and authenticated with AES-256-GCM in
// segments, so a file of any size is written and read in constant memory and every byte is checked.
//
// Layout (integers big-endian):
//
//   header, 40 bytes:
//     0   magic "ILBK\r\n\x1a\n"   8 bytes (the \r\n and \x1a show a file mangled as text)
//     8   version                  u16 = 1
//     10  reserved                 u16 = 0
//     12  segment size             u32: plaintext bytes of every segment but the last (1 MiB)
//     16  nonce prefix             8 random bytes, new for each file
//     24  header tag               16 bytes: GCM tag of no plaintext, AAD = bytes 0..23,
//                                  nonce = prefix | FFFFFFFF (no segment uses that counter)
//   segments i = 0, 1, ... (at least one; the last holds 0..segment size bytes, every other exactly
//   segment size):
//     ciphertext | 16-byte tag;  nonce = prefix | u32 i;  AAD = the 40 header bytes | u8 last (1 or 0)
//
// What the reader checks, and why it refuses:
//   - the header tag: a wrong key (or an altered header) fails here, before any segment;
//   - each segment's tag under its position's nonce: a flipped byte, or segments swapped or moved, fail;
//   - the last flag: a segment read as the last (the file ends after it) was sealed as the last, and no
//     other was, so a file cut at a segment boundary, or with bytes appended, fails;
//   - the header (and so the nonce prefix and segment size) is in every segment's AAD: segments of
//     another file, even one made with the same key, fail.
// The per-file random prefix and the counter keep every nonce used under one key distinct (2^64
// prefixes: files made daily for centuries never meet).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace inferllama::backup {

using Key = std::array<unsigned char, 32>;

inline constexpr std::size_t kSegmentSize = 1 << 20;

// The file is not a backup this key opens, or it was damaged, cut short or altered. Nothing read from a
// stream that threw is to be trusted.
class SealError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Seals a stream into `fd` (left open): the header at once, each full segment as it fills, the last at
// finish().
class SealedWriter {
 public:
  SealedWriter(int fd, const Key& key, std::size_t segment_size = kSegmentSize);
  ~SealedWriter();
  SealedWriter(const SealedWriter&) = delete;
  SealedWriter& operator=(const SealedWriter&) = delete;

  void write(std::string_view bytes);
  // Seals what is buffered as the last segment (empty when the stream's size is a multiple of the
  // segment size, or zero). Nothing may be written after.
  void finish();

 private:
  void seal(bool last);

  int fd_;
  Key key_;
  std::string header_;
  std::size_t segment_size_;
  std::uint32_t counter_ = 0;
  std::string plain_;   // the segment being filled
  std::string sealed_;  // its ciphertext and tag
  bool finished_ = false;
};

// Opens a sealed stream from `fd` (left open), segment by segment. Throws SealError: at construction when
// the file has no header or the key does not open it; in read() when a segment fails.
class SealedReader {
 public:
  SealedReader(int fd, const Key& key);
  ~SealedReader();
  SealedReader(const SealedReader&) = delete;
  SealedReader& operator=(const SealedReader&) = delete;

  // Up to `size` bytes of the plaintext into `out`: fewer only at the end of the stream, 0 after it.
  std::size_t read(char* out, std::size_t size);

 private:
  bool open_next();  // false at the end of the stream

  int fd_;
  Key key_;
  std::string header_;
  std::size_t segment_size_ = 0;
  std::uint32_t counter_ = 0;
  std::string sealed_;  // a segment's ciphertext and tag, and one byte more to tell whether it is the last
  std::string plain_;
  std::size_t offset_ = 0;  // in plain_
  bool ended_ = false;
};

}  // namespace inferllama::backup
