// What every model-file scan must hold whatever the bytes (the scan fuzz targets): the verdict does not depend
// on how the bytes were cut into updates, and it stays within its bounds.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "fuzz_check.hpp"
#include "scan/file_scanner.hpp"

namespace scan_fuzz {

inline inferllama::ScanVerdict scan(std::string_view path, std::span<const std::uint8_t> data, std::size_t piece) {
  inferllama::scan::FileScanner scanner(path, data.size());
  for (std::size_t at = 0; at < data.size(); at += piece) {
    scanner.update(data.subspan(at, data.size() - at < piece ? data.size() - at : piece));
  }
  return scanner.finish();
}

// Input: byte 0 picks the size of the pieces the second scan is fed in; the rest is the file.
inline void check_file(std::string_view path, const std::uint8_t* input, std::size_t size) {
  if (size == 0) return;
  const std::size_t piece = (input[0] % 37) + 1;
  const std::span<const std::uint8_t> data(input + 1, size - 1);
  const auto whole = scan(path, data, data.size() + 1);
  const auto pieces = scan(path, data, piece);
  FUZZ_CHECK(whole.result == pieces.result && whole.findings == pieces.findings && whole.error == pieces.error,
             "fed whole: %s/%zu findings, in pieces of %zu: %s/%zu findings", whole.kind.c_str(), whole.findings.size(),
             piece, pieces.kind.c_str(), pieces.findings.size());
  FUZZ_CHECK(whole.findings.size() <= inferllama::kMaxFindings, "%zu findings kept", whole.findings.size());
  FUZZ_CHECK(whole.findings_total >= whole.findings.size(), "total %u below kept %zu", whole.findings_total,
             whole.findings.size());
  for (const auto& f : whole.findings) {
    FUZZ_CHECK(f.size() <= inferllama::kMaxFindingLength, "a finding of %zu bytes", f.size());
  }
  FUZZ_CHECK((whole.result == inferllama::ScanResult::findings) == !whole.findings.empty(),
             "result and findings disagree");
}

}  // namespace scan_fuzz
