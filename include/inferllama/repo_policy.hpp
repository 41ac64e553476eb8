#pragma once
#include <optional>
#include <string>
#include <string_view>

#include "inferllama/repo.hpp"

namespace inferllama {

// What the operator's repo rules say about a Hub repo, decided before anything is asked upstream.
enum class RepoAccess {
  allow,  // proxied and cached
  deny,   // answered like a missing repo, never asked upstream
  pass,   // proxied without storing: bytes stream through, nothing of it is kept
};

// What a finding of the model-file scanner does to a request for the file.
enum class ScanAction {
  off,   // not scanned
  warn,  // scanned; the verdict is recorded and shown, the file is served
  deny,  // scanned; a file with a finding is refused (403 naming the finding)
};

struct RepoDecision {
  RepoAccess access = RepoAccess::allow;
  // The matching rule's own scan action; nullopt: the node's default (`scan_policy`).
  std::optional<ScanAction> scan;
  // The rule as the operator wrote it, for messages and logs; "" when no rule matched (the default).
  std::string rule;
};

// The seam the request path asks: the rules in force now (they change on SIGHUP or the admin API).
class RepoPolicy {
 public:
  virtual ~RepoPolicy() = default;
  virtual RepoDecision decide(const RepoId& repo) const = 0;
};

}  // namespace inferllama
