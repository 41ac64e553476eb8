#include "scan/scan_service.hpp"

#include <spdlog/spdlog.h>

#include "inferllama/metrics.hpp"
#include "scan/file_scanner.hpp"

namespace inferllama {

std::string_view to_string(ScanResult result) {
  switch (result) {
    case ScanResult::clean:
      return "clean";
    case ScanResult::findings:
      return "findings";
    case ScanResult::error:
      return "error";
    case ScanResult::skipped:
      return "skipped";
  }
  return "skipped";
}

std::optional<ScanResult> parse_scan_result(std::string_view text) {
  for (auto r : {ScanResult::clean, ScanResult::findings, ScanResult::error, ScanResult::skipped}) {
    if (to_string(r) == text) return r;
  }
  return std::nullopt;
}

std::string scan_header_value(const ScanVerdict& verdict) {
  switch (verdict.result) {
    case ScanResult::clean:
      return "clean";
    case ScanResult::findings:
      return "findings=" + std::to_string(verdict.findings_total);
    case ScanResult::error:
      return "error";
    case ScanResult::skipped:
      return "none";
  }
  return "none";
}

}  // namespace inferllama

namespace inferllama::scan {
namespace {

constexpr metrics::FamilySpec kFiles{"inferllama_scan_files_total", "counter",
                                     "Files scanned as they were stored, by format and verdict"};
constexpr metrics::FamilySpec kFindings{"inferllama_scan_findings_total", "counter",
                                        "Findings in the files scanned (every one, not only those kept)"};
constexpr metrics::FamilySpec kRefusals{"inferllama_scan_refusals_total", "counter",
                                        "Requests refused (403) because the file's scan found something, under deny"};
constexpr metrics::FamilySpec kBytes{"inferllama_scan_bytes_total", "counter",
                                     "Bytes fed to the scanners (a header format's data is not fed once its header is read)"};
constexpr metrics::FamilySpec kSeconds{"inferllama_scan_seconds_total", "counter", "Time spent scanning"};

constexpr std::array<std::string_view, 5> kKindNames = {"none", "pickle", "zip", "safetensors", "gguf"};

std::size_t kind_index(std::string_view kind) {
  for (std::size_t i = 0; i < kKindNames.size(); ++i) {
    if (kKindNames[i] == kind) return i;
  }
  return 0;
}

}  // namespace

std::string_view to_string(ScanAction action) {
  switch (action) {
    case ScanAction::off:
      return "off";
    case ScanAction::warn:
      return "warn";
    case ScanAction::deny:
      return "deny";
  }
  return "off";
}

std::optional<ScanAction> parse_scan_action(std::string_view text) {
  for (auto a : {ScanAction::off, ScanAction::warn, ScanAction::deny}) {
    if (to_string(a) == text) return a;
  }
  return std::nullopt;
}

ScanAction effective_scan_action(const std::optional<ScanAction>& rule_action, ScanAction scan_policy) {
  return rule_action.value_or(scan_policy);
}

nlohmann::json to_json(const ScanVerdict& verdict) {
  return {{"kind", verdict.kind},         {"verdict", std::string(inferllama::to_string(verdict.result))},
          {"findings", verdict.findings}, {"findings_total", verdict.findings_total},
          {"error", verdict.error},       {"scanner_version", verdict.scanner_version}};
}

bool refused_under_deny(const ScanVerdict& verdict) {
  return verdict.result == ScanResult::findings || verdict.result == ScanResult::error;
}

ScanService::ScanService(Index& index, ScanAction scan_policy, const RepoPolicy* rules)
    : index_(index), scan_policy_(scan_policy), rules_(rules) {}

ScanAction ScanService::action_for(const RepoId& repo) const {
  return effective_scan_action(rules_ ? rules_->decide(repo).scan : std::nullopt, scan_policy_);
}

std::shared_ptr<const ScanVerdict> ScanService::cached(const std::string& etag) const {
  std::lock_guard lock(mutex_);
  auto found = memory_.find(etag);
  return found == memory_.end() ? nullptr : found->second;
}

void ScanService::remember(const std::string& etag, std::shared_ptr<const ScanVerdict> verdict) const {
  std::lock_guard lock(mutex_);
  // A verdict is a fact about bytes named by their hash: it never goes stale, so the memory only needs a bound.
  if (memory_.size() >= kMemoryEntries && !memory_.contains(etag)) memory_.clear();
  memory_[etag] = std::move(verdict);
}

std::shared_ptr<const ScanVerdict> ScanService::load(const std::string& etag) {
  if (auto known = cached(etag)) return known;
  auto stored = index_.get_scan(etag);
  if (!stored) return nullptr;
  auto verdict = std::make_shared<const ScanVerdict>(std::move(*stored));
  remember(etag, verdict);
  return verdict;
}

void ScanService::record(const std::string& etag, const ScanVerdict& verdict) {
  index_.put_scan(etag, verdict);
  remember(etag, std::make_shared<const ScanVerdict>(verdict));
  if (verdict.result == ScanResult::findings || verdict.result == ScanResult::error) {
    spdlog::warn("scan of {} ({}): {}{}", etag, verdict.kind, scan_header_value(verdict),
                 verdict.findings.empty() ? ": " + verdict.error : ": " + verdict.findings.front());
  }
}

bool ScanService::begin_background(const std::string& etag) {
  std::lock_guard lock(mutex_);
  if (background_.size() >= kMaxBackground) return false;
  return background_.insert(etag).second;
}

void ScanService::end_background(const std::string& etag) {
  std::lock_guard lock(mutex_);
  background_.erase(etag);
}

void ScanService::count_scan(const ScanVerdict& verdict, std::uint64_t bytes, std::chrono::nanoseconds took) {
  files_[kind_index(verdict.kind)][static_cast<std::size_t>(verdict.result)].fetch_add(1, std::memory_order_relaxed);
  findings_.fetch_add(verdict.findings_total, std::memory_order_relaxed);
  bytes_.fetch_add(bytes, std::memory_order_relaxed);
  nanoseconds_.fetch_add(static_cast<std::uint64_t>(took.count()), std::memory_order_relaxed);
}

void ScanService::render_metrics(std::string& out) const {
  metrics::write_header(out, kFiles);
  for (std::size_t k = 0; k < kKinds; ++k) {
    for (auto r : {ScanResult::clean, ScanResult::findings, ScanResult::error, ScanResult::skipped}) {
      const std::string labels =
          "kind=\"" + std::string(kKindNames[k]) + "\",verdict=\"" + std::string(inferllama::to_string(r)) + "\"";
      metrics::write_sample(
          out, kFiles, labels,
          static_cast<double>(files_[k][static_cast<std::size_t>(r)].load(std::memory_order_relaxed)));
    }
  }
  metrics::write_family(out, kFindings, static_cast<double>(findings_.load(std::memory_order_relaxed)));
  metrics::write_family(out, kRefusals, static_cast<double>(refusals_.load(std::memory_order_relaxed)));
  metrics::write_family(out, kBytes, static_cast<double>(bytes_.load(std::memory_order_relaxed)));
  metrics::write_family(out, kSeconds, static_cast<double>(nanoseconds_.load(std::memory_order_relaxed)) / 1e9);
}

}  // namespace inferllama::scan
