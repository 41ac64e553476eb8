// The node's side of scanning: which action the policy takes for a repo, the verdicts (kept per etag in the
// index, the recent ones in memory so a hit is answered without leaving the I/O thread), and the counters.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "inferllama/index.hpp"
#include "inferllama/repo_policy.hpp"
#include "inferllama/scan.hpp"

namespace inferllama::scan {

std::string_view to_string(ScanAction action);
std::optional<ScanAction> parse_scan_action(std::string_view text);

// What scanning does for a repo: its rule's own action when the rule sets one, else the node's scan_policy.
ScanAction effective_scan_action(const std::optional<ScanAction>& rule_action, ScanAction scan_policy);

// {"kind", "verdict", "findings", "findings_total", "error", "scanner_version"}: the admin API's and a refusal's.
nlohmann::json to_json(const ScanVerdict& verdict);

// Whether a file with this verdict is refused under `deny`: findings, and a file that could not be read as its
// format (nothing can be said of it, so it is not served as if it had been).
bool refused_under_deny(const ScanVerdict& verdict);

class ScanService {
 public:
  // `rules` (nullable): the operator's repo rules, whose scan action overrides `scan_policy` for their repos.
  ScanService(Index& index, ScanAction scan_policy, const RepoPolicy* rules = nullptr);

  ScanAction action_for(const RepoId& repo) const;
  ScanAction scan_policy() const { return scan_policy_; }

  // The verdict of a blob from memory only (an I/O thread may ask); null when not there.
  std::shared_ptr<const ScanVerdict> cached(const std::string& etag) const;
  // From memory, else from the index; null when the blob has none. Blocking.
  std::shared_ptr<const ScanVerdict> load(const std::string& etag);
  // Keeps a verdict for the blob: in the index (before the blob is committed, so a stored blob that was
  // scanned always has it) and in memory. Blocking.
  void record(const std::string& etag, const ScanVerdict& verdict);

  // Claims the one background scan of a stored blob that has no verdict yet: false when one runs already (or
  // too many do). end_background releases it.
  bool begin_background(const std::string& etag);
  void end_background(const std::string& etag);

  // A scan ended: its verdict, the bytes the scanner read, the time it took.
  void count_scan(const ScanVerdict& verdict, std::uint64_t bytes, std::chrono::nanoseconds took);
  void count_refusal() { refusals_.fetch_add(1, std::memory_order_relaxed); }
  void render_metrics(std::string& out) const;

 private:
  static constexpr std::size_t kMemoryEntries = 1 << 16;
  static constexpr std::size_t kKinds = 5;    // none, pickle, zip, safetensors, gguf
  static constexpr std::size_t kResults = 4;  // clean, findings, error, skipped
  void remember(const std::string& etag, std::shared_ptr<const ScanVerdict> verdict) const;

  Index& index_;
  const ScanAction scan_policy_;
  const RepoPolicy* rules_;
  mutable std::mutex mutex_;
  mutable std::unordered_map<std::string, std::shared_ptr<const ScanVerdict>> memory_;
  static constexpr std::size_t kMaxBackground = 64;
  std::unordered_set<std::string> background_;  // etags being scanned from their chunks, under mutex_

  std::array<std::array<std::atomic<std::uint64_t>, kResults>, kKinds> files_{};
  std::atomic<std::uint64_t> findings_{0};
  std::atomic<std::uint64_t> refusals_{0};
  std::atomic<std::uint64_t> bytes_{0};
  std::atomic<std::uint64_t> nanoseconds_{0};
};

}  // namespace inferllama::scan
