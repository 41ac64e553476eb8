// The scan policy at the HTTP edge: every file answer of a repo whose scan action is not off carries
// X-InferLlama-Scan, and under deny a file whose verdict has findings (or that could not be read as its format)
// is refused with 403 before any of its bytes go out. docs/SECURITY.md, "Scanning model files", says what the
// first client of a download receives.
#pragma once
#include <optional>
#include <string>

#include "http/handlers.hpp"

namespace inferllama::http {

// The policy applied from what the node holds in memory, without waiting: `settled` is false when the verdict
// must first be loaded, scanned for or waited on (then apply_scan_policy). Settled: answer.scan is set where
// the repo's action scans the file, and `refusal` holds the answer when the policy refuses it.
struct ScanCheck {
  bool settled = true;
  std::optional<hub::Reply> refusal;
};
ScanCheck check_scan_policy(Exchange& x, const RepoId& repo, const std::string& path, hub::FileAnswer& answer);

// Sets answer.scan, and returns the refusal when the policy refuses the file. Under deny, a file on its way
// whose verdict is not known yet is held until it is: a header format's comes with its header, a pickle's
// (plain, or in PyTorch's zip) only at the end of the download, so its first client waits for the whole file.
Task<std::optional<hub::Reply>> apply_scan_policy(Exchange& x, const RepoId& repo, const std::string& path,
                                                  hub::FileAnswer& answer);

// X-Error-Code of a refusal: the file has findings, or it could not be read as its format.
inline constexpr const char* kScanFindingsCode = "ScanFindings";
inline constexpr const char* kScanErrorCode = "ScanError";

}  // namespace inferllama::http
