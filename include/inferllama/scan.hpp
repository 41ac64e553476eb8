// What the model-file scanner (src/scan/) concluded about a stored blob: kept per etag in the index, shown by
// `inferllama ls`, the admin API and the X-InferLlama-Scan header, and acted on by the scan policy.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferllama {

enum class ScanResult : std::uint8_t {
  clean,     // read to the end of what the format says, nothing found
  findings,  // something outside what a model file may hold (an import outside the allowlist, bad offsets, ...)
  error,     // the file could not be read as its format (cut short, malformed): nothing can be said of it
  skipped,   // not a format the scanner reads (a README, a tokenizer's JSON, ...)
};

struct ScanVerdict {
  std::string kind;  // "pickle", "zip" (PyTorch's format), "safetensors", "gguf", or "none" when skipped
  ScanResult result = ScanResult::skipped;
  std::vector<std::string> findings;  // the first kMaxFindings, each at most kMaxFindingLength bytes
  std::uint32_t findings_total = 0;   // every finding, the unkept ones too
  std::string error;                  // why the file could not be read through, or ""
  std::uint32_t scanner_version = 0;
};

inline constexpr std::size_t kMaxFindings = 16;
inline constexpr std::size_t kMaxFindingLength = 200;

std::string_view to_string(ScanResult result);
std::optional<ScanResult> parse_scan_result(std::string_view text);

// The X-InferLlama-Scan value of a verdict: "clean", "findings=N", "error", "none". While a file is on its
// way and not decided yet the node says "pending"; a stored file without a verdict is "unscanned".
std::string scan_header_value(const ScanVerdict& verdict);
inline constexpr std::string_view kScanHeader = "X-InferLlama-Scan";

}  // namespace inferllama
