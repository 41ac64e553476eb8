#include "scan/file_scanner.hpp"

#include <algorithm>
#include <array>
#include <cstring>

#include "scan/findings.hpp"
#include "scan/header_scanners.hpp"
#include "scan/pickle_scanner.hpp"
#include "scan/zip_scanner.hpp"

namespace inferllama::scan {
namespace {

// Enough of the head to tell the formats apart: a safetensors header length and the '{' after it.
constexpr std::size_t kHead = 9;
constexpr std::uint8_t kPickleProto = 0x80;

std::string lower_extension(std::string_view path) {
  const std::size_t slash = path.rfind('/');
  const std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  const std::size_t dot = name.rfind('.');
  if (dot == std::string_view::npos) return {};
  std::string ext(name.substr(dot));
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

bool starts_zip(std::span<const std::uint8_t> head) {
  return head.size() >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4;
}
bool starts_pickle(std::span<const std::uint8_t> head) {
  return head.size() >= 2 && head[0] == kPickleProto && head[1] >= 2 && head[1] <= 5;
}
bool starts_gguf(std::span<const std::uint8_t> head) {
  return head.size() >= 4 && std::memcmp(head.data(), "GGUF", 4) == 0;
}
bool looks_safetensors(std::span<const std::uint8_t> head, std::uint64_t size) {
  if (head.size() < kHead || head[8] != '{') return false;
  std::uint64_t length = 0;
  for (int k = 7; k >= 0; --k) length = (length << 8) | head[static_cast<std::size_t>(k)];
  return length >= 2 && size >= 8 && length <= size - 8;
}

}  // namespace

std::string_view to_string(Format format) {
  switch (format) {
    case Format::undecided:
    case Format::none:
      return "none";
    case Format::pickle:
      return "pickle";
    case Format::zip:
      return "zip";
    case Format::safetensors:
      return "safetensors";
    case Format::gguf:
      return "gguf";
  }
  return "none";
}

struct FileScanner::Scanners {
  Findings findings;
  std::unique_ptr<PickleScanner> pickle;
  std::unique_ptr<ZipScanner> zip;
  std::unique_ptr<SafetensorsScanner> safetensors;
  std::unique_ptr<GgufScanner> gguf;
};

FileScanner::FileScanner(std::string_view path, std::uint64_t size)
    : extension_(lower_extension(path)), named_(!path.empty()), size_(size), scanners_(std::make_unique<Scanners>()) {
  // Files of other names are never scanned: nothing needs their bytes.
  static constexpr std::array kScanned = {".safetensors", ".gguf", ".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt"};
  if (named_ && std::find(kScanned.begin(), kScanned.end(), extension_) == kScanned.end()) format_ = Format::none;
}

FileScanner::~FileScanner() = default;

void FileScanner::choose(std::span<const std::uint8_t> head) {
  if (!named_) {
    // An upload: its bytes alone say what it is.
    format_ = starts_gguf(head)                ? Format::gguf
              : starts_zip(head)               ? Format::zip
              : starts_pickle(head)            ? Format::pickle
              : looks_safetensors(head, size_) ? Format::safetensors
                                               : Format::none;
  } else if (extension_ == ".safetensors") {
    format_ = Format::safetensors;
  } else if (extension_ == ".gguf") {
    format_ = Format::gguf;
  } else if (starts_zip(head)) {
    format_ = Format::zip;  // torch.save's format, whatever the name
  } else if (extension_ == ".pkl" || extension_ == ".pickle" || starts_pickle(head)) {
    format_ = Format::pickle;  // by name: a pickle of protocol 0 or 1 starts with no PROTO
  } else {
    format_ = Format::none;  // a .bin that is neither pickle nor zip (raw weights, a tokenizer's data)
  }
  Scanners& s = *scanners_;
  switch (format_) {
    case Format::pickle:
      s.pickle = std::make_unique<PickleScanner>(s.findings);
      break;
    case Format::zip:
      s.zip = std::make_unique<ZipScanner>(s.findings);
      break;
    case Format::safetensors:
      s.safetensors = std::make_unique<SafetensorsScanner>(s.findings, size_);
      break;
    case Format::gguf:
      s.gguf = std::make_unique<GgufScanner>(s.findings, size_);
      break;
    case Format::undecided:
    case Format::none:
      break;
  }
}

bool FileScanner::decided() const {
  const Scanners& s = *scanners_;
  switch (format_) {
    case Format::undecided:
      return false;
    case Format::none:
      return true;
    case Format::pickle:
      return s.pickle->done();
    case Format::zip:
      return s.zip->done();
    case Format::safetensors:
      return s.safetensors->decided();
    case Format::gguf:
      return s.gguf->decided();
  }
  return true;
}

void FileScanner::feed(std::span<const std::uint8_t> bytes) {
  Scanners& s = *scanners_;
  fed_ += bytes.size();
  if (s.pickle) s.pickle->update(bytes);
  if (s.zip) s.zip->update(bytes);
  if (s.safetensors) s.safetensors->update(bytes);
  if (s.gguf) s.gguf->update(bytes);
}

void FileScanner::update(std::span<const std::uint8_t> bytes) {
  if (format_ == Format::undecided) {
    const std::size_t take = std::min(kHead - head_.size(), bytes.size());
    head_.insert(head_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(take));
    bytes = bytes.subspan(take);
    if (head_.size() < kHead) return;
    choose(head_);
    if (!decided()) feed(head_);
    head_.clear();
    head_.shrink_to_fit();
  }
  if (!decided() && !bytes.empty()) feed(bytes);
}

ScanVerdict FileScanner::finish() {
  if (format_ == Format::undecided) {
    choose(head_);  // a file shorter than the head
    if (!decided()) feed(head_);
  }
  Scanners& s = *scanners_;
  std::string error;
  if (s.pickle) {
    s.pickle->finish();
    error = s.pickle->error();
  }
  if (s.zip) {
    s.zip->finish();
    error = s.zip->error();
  }
  if (s.safetensors) {
    s.safetensors->finish();
    error = s.safetensors->error();
  }
  if (s.gguf) {
    s.gguf->finish();
    error = s.gguf->error();
  }
  ScanVerdict verdict;
  verdict.kind = std::string(to_string(format_));
  verdict.scanner_version = kScannerVersion;
  verdict.findings = s.findings.kept();
  verdict.findings_total = s.findings.total();
  verdict.error = printable(error);
  if (format_ == Format::none) {
    verdict.result = ScanResult::skipped;
  } else if (!s.findings.empty()) {
    verdict.result = ScanResult::findings;
  } else if (!error.empty()) {
    verdict.result = ScanResult::error;
  } else {
    verdict.result = ScanResult::clean;
  }
  return verdict;
}

}  // namespace inferllama::scan
