// The scanner of one file: picks the format by the file's name and first bytes, then is fed the file's bytes
// in order as they arrive (by a download's in-order hash, or an upload's), never read a second time.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/scan.hpp"

namespace inferllama::scan {

enum class Format : std::uint8_t { undecided, none, pickle, zip, safetensors, gguf };
std::string_view to_string(Format format);

// Bumped whenever a scanner would judge some file differently: a verdict names the version that made it.
inline constexpr std::uint32_t kScannerVersion = 1;

class FileScanner {
 public:
  // `path`: the file's path in its repo, or "" when the bytes come without one (an upload), in which case
  // the format is told from the bytes alone. `size`: the whole file's.
  FileScanner(std::string_view path, std::uint64_t size);
  ~FileScanner();
  FileScanner(const FileScanner&) = delete;
  FileScanner& operator=(const FileScanner&) = delete;

  void update(std::span<const std::uint8_t> bytes);
  // The verdict no longer depends on the bytes still to come: a header was read, or a pickle stream ended,
  // or the file is of no format the scanner reads. Later bytes are only counted.
  bool decided() const;
  // After the last byte (or once decided()).
  ScanVerdict finish();
  Format format() const { return format_; }
  std::uint64_t scanned_bytes() const { return fed_; }

 private:
  void choose(std::span<const std::uint8_t> head);
  void feed(std::span<const std::uint8_t> bytes);

  struct Scanners;
  std::string extension_;
  bool named_ = false;
  std::uint64_t size_;
  Format format_ = Format::undecided;
  std::vector<std::uint8_t> head_;  // the first bytes, until the format is chosen
  std::uint64_t fed_ = 0;
  std::unique_ptr<Scanners> scanners_;
};

}  // namespace inferllama::scan
