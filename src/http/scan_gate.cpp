#include "http/scan_gate.hpp"

#include "cache/download.hpp"
#include "http/connection.hpp"
#include "http/progress_timer.hpp"
#include "http/server_context.hpp"
#include "scan/scan_service.hpp"
#include "util/offload.hpp"

namespace inferllama::http {
namespace {

// The verdict of a download, waited for: it comes with the scanner's decision, or, for a download that does
// not scan (the repo that started it has scanning off), from its stored bytes once it is complete. Null when
// the download failed.
Task<std::shared_ptr<const ScanVerdict>> wait_for_verdict(Exchange& x, cache::Download& download,
                                                          const std::string& path) {
  auto listener = std::make_shared<ProgressTimer>(co_await asio::this_coro::executor);
  download.subscribe(listener);
  x.connection.pause_deadline();  // the wait is the download's, not the client's
  std::shared_ptr<const ScanVerdict> verdict;
  for (;;) {
    listener->arm();
    verdict = download.verdict();
    if (verdict || download.state() != cache::Download::State::running) break;
    co_await listener->wait();
  }
  if (!verdict && download.state() == cache::Download::State::complete) {
    auto& downloads = x.server.deps.hub.downloads();
    const std::string etag = download.etag();
    verdict = co_await offload(x.server.deps.blocking, [&] { return downloads.scan_stored(etag, path); });
  }
  x.connection.touch();
  co_return verdict;
}

hub::Reply refusal(const ScanVerdict& verdict, const std::string& path) {
  const bool findings = verdict.result == ScanResult::findings;
  std::string message =
      path + (findings ? ": the node's scan of this file found " : ": the node could not scan this file: ");
  if (findings) {
    for (std::size_t i = 0; i < verdict.findings.size(); ++i) message += (i ? "; " : "") + verdict.findings[i];
    if (verdict.findings_total > verdict.findings.size()) {
      message += "; and " + std::to_string(verdict.findings_total - verdict.findings.size()) + " more";
    }
  } else {
    message += verdict.error;
  }
  message += " (refused by the node's scan policy)";
  hub::Reply reply = hub::error_reply(403, message, findings ? kScanFindingsCode : kScanErrorCode);
  reply.headers.emplace_back(kScanHeader, scan_header_value(verdict));
  reply.body = nlohmann::json{{"error", message}, {"scan", scan::to_json(verdict)}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
  return reply;
}

}  // namespace

ScanCheck check_scan_policy(Exchange& x, const RepoId& repo, const std::string& path, hub::FileAnswer& answer) {
  auto* scanning = x.server.deps.scanning;
  if (!scanning) return {};
  const ScanAction action = scanning->action_for(repo);
  if (action == ScanAction::off) return {};
  std::shared_ptr<const ScanVerdict> verdict;
  if (answer.blob) {
    verdict = scanning->cached(answer.file.etag);
    if (!verdict) return {.settled = false};
    answer.scan = scan_header_value(*verdict);
  } else if (answer.download) {
    verdict = answer.download->verdict();
    if (!verdict && action == ScanAction::deny) return {.settled = false};
    answer.scan = verdict ? scan_header_value(*verdict) : "pending";
  }
  if (verdict && action == ScanAction::deny && scan::refused_under_deny(*verdict)) {
    scanning->count_refusal();
    return {.refusal = refusal(*verdict, path)};
  }
  return {};
}

Task<std::optional<hub::Reply>> apply_scan_policy(Exchange& x, const RepoId& repo, const std::string& path,
                                                  hub::FileAnswer& answer) {
  if (ScanCheck now = check_scan_policy(x, repo, path, answer); now.settled) co_return std::move(now.refusal);
  auto* scanning = x.server.deps.scanning;
  const ScanAction action = scanning->action_for(repo);
  auto& blocking = x.server.deps.blocking;
  std::shared_ptr<const ScanVerdict> verdict;
  if (answer.blob) {
    // Not in memory: from the index, or else from the stored bytes.
    const std::string etag = answer.file.etag;
    verdict = co_await offload(blocking, [&] { return scanning->load(etag); });
    if (!verdict && action == ScanAction::deny) {
      // Stored before scanning, or by a download that did not scan: its stored bytes, once, before any go out.
      auto& downloads = x.server.deps.hub.downloads();
      const auto blob = answer.blob;
      x.connection.pause_deadline();
      verdict = co_await offload(blocking, [&] { return downloads.scan_stored(*blob, path); });
      x.connection.touch();
      if (!verdict) co_return hub::error_reply(503, "the file is being evicted or the node is stopping; retry");
    } else if (!verdict && scanning->begin_background(answer.file.etag)) {
      // Under warn the file is served now and scanned beside it: a large file is not held for a read of it.
      blocking.post([&downloads = x.server.deps.hub.downloads(), scanning, blob = answer.blob, path] {
        downloads.scan_stored(*blob, path);
        scanning->end_background(blob->etag);
      });
    }
    answer.scan = verdict ? scan_header_value(*verdict) : "unscanned";
  } else {
    // A download under deny whose verdict is not known yet.
    verdict = co_await wait_for_verdict(x, *answer.download, path);
    if (!verdict) co_return hub::error_reply(502, "the file could not be fetched: " + answer.download->error(), "");
    answer.scan = scan_header_value(*verdict);
  }
  if (verdict && action == ScanAction::deny && scan::refused_under_deny(*verdict)) {
    scanning->count_refusal();
    co_return refusal(*verdict, path);
  }
  co_return std::nullopt;
}

}  // namespace inferllama::http
