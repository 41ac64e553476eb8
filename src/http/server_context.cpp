#include "server_context.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "credentials.hpp"
#include "hub_service.hpp"
#include "inferllama/tracker.hpp"
#include "usage_log.hpp"

namespace inferllama::http {
namespace bhttp = boost::beast::http;
namespace {

Address16 address16(const asio::ip::address& address) {
  if (address.is_v6()) return address.to_v6().to_bytes();
  return asio::ip::make_address_v6(asio::ip::v4_mapped, address.to_v4()).to_bytes();
}

// IPv4-mapped addresses come back as IPv4, as the peer's own address would be.
asio::ip::address to_address(const Address16& bytes) {
  const asio::ip::address_v6 v6(bytes);
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6);
  return v6;
}

}  // namespace

ServerContext::ServerContext(ServerDeps d)
    : deps(std::move(d)),
      config(deps.config),
      failed_attempts(attempts_clock, config.auth_failure_limit),
      gate(config, failed_attempts, stats, deps.identities, deps.limiter),
      trusted_proxies_(parse_networks(config.trusted_proxies).value_or(std::vector<Network>{})) {
  if (!config.access_log.empty()) {
    access_log_ = config.access_log == "-" ? spdlog::stderr_logger_mt("access")
                                           : spdlog::basic_logger_mt("access", config.access_log);
    access_log_->set_pattern("%v");
    access_log_->flush_on(spdlog::level::info);
  }
}

void ServerContext::identify_client(Connection& c, const Request& req) const {
  if (trusted_proxies_.empty()) {
    c.client = c.peer.address();
    c.forwarded_https = false;
    return;
  }
  ForwardedHeaders headers;
  for (auto [it, end] = req.equal_range(bhttp::field::forwarded); it != end; ++it) headers.forwarded.push_back(it->value());
  for (auto [it, end] = req.equal_range("X-Forwarded-For"); it != end; ++it)
    headers.x_forwarded_for.push_back(it->value());
  headers.x_forwarded_proto = req["X-Forwarded-Proto"];
  const auto origin = client_origin(address16(c.peer.address()), trusted_proxies_, headers);
  c.client = to_address(origin.address);
  c.forwarded_https = origin.https;
}

std::string ServerContext::public_base(const Connection& c, const Request& req) const {
  if (!config.public_url.empty()) return config.public_url;
  std::string host(req[bhttp::field::host]);
  bool sane = !host.empty() && host.size() < 256 && std::all_of(host.begin(), host.end(), [](unsigned char ch) {
    return std::isalnum(ch) || ch == '.' || ch == '-' || ch == ':' || ch == '[' || ch == ']';
  });
  return (c.tls() || c.forwarded_https ? "https://" : "http://") + (sane ? host : config.listen);
}

void ServerContext::flowed(Connection& c, std::uint64_t bytes, bool from_cache) {
  if (!c.account || bytes == 0) return;
  auto& account = *c.account;
  (from_cache ? account.counts.bytes_from_cache : account.counts.bytes_from_upstream) += bytes;
  account.counts.token_bytes += bytes;
  if (account.policy && account.policy->tokens > 0) deps.limiter->charge(account.who, *account.policy, bytes);
}

void ServerContext::record(Connection& c, const Request& req, std::chrono::steady_clock::time_point started) {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  stats.request(c.route, c.status, seconds);
  if (c.account) {
    auto& account = *c.account;
    account.counts.requests = 1;
    // A row per repo that answered: names that do not exist (or were refused) go under no repo, so
    // made-up names cannot grow the usage table.
    if (c.status >= 400) account.repo.clear();
    deps.usage_log->add(account.who, account.repo, account.counts);
    c.account.reset();  // frees a concurrent-download slot
  }
  c.limit_headers.clear();
  if (!access_log_) return;
  nlohmann::json line{{"time_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count()},
                      {"remote", c.admin() ? "admin socket" : c.client.is_unspecified() ? "" : c.client.to_string()},
                      {"method", std::string(req.method_string())},
                      {"target", redact_target(req.target())},
                      {"route", route_name(c.route)},
                      {"status", c.status},
                      {"bytes", c.bytes},
                      {"duration_ms", seconds * 1000}};
  access_log_->info(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string ServerContext::render_metrics() const {
  using metrics::write_header;
  using metrics::write_sample;
  std::string out;
  stats.render(out, deps.limiter != nullptr);
  auto& hub = deps.hub;
  auto& h = hub.counters();
  write_header(out, "inferllama_cache_requests_total", "counter", "File requests answered from the store (hit) or not");
  write_sample(out, "inferllama_cache_requests_total", "result=\"hit\"", static_cast<double>(h.hits.load()));
  write_sample(out, "inferllama_cache_requests_total", "result=\"miss\"", static_cast<double>(h.misses.load()));
  write_header(out, "inferllama_upstream_requests_total", "counter", "Metadata requests sent upstream");
  write_sample(out, "inferllama_upstream_requests_total", "", static_cast<double>(h.upstream_requests.load()));
  const auto& metadata = hub.metadata();
  write_header(out, "inferllama_metadata_entries", "gauge",
               "Hub metadata answers stored (revision info, tree pages, paths-info)");
  write_sample(out, "inferllama_metadata_entries", "", static_cast<double>(metadata.entries()));
  write_header(out, "inferllama_metadata_bytes", "gauge", "Bytes charged to the stored metadata answers");
  write_sample(out, "inferllama_metadata_bytes", "", static_cast<double>(metadata.bytes()));
  write_header(out, "inferllama_metadata_budget_bytes", "gauge", "Budget of the stored metadata answers");
  write_sample(out, "inferllama_metadata_budget_bytes", "", static_cast<double>(metadata.budget()));
  write_header(out, "inferllama_metadata_evictions_total", "counter", "Stored metadata answers dropped for the budget");
  write_sample(out, "inferllama_metadata_evictions_total", "", static_cast<double>(metadata.evictions()));
  write_header(out, "inferllama_metadata_unstored_total", "counter",
               "Metadata requests with parameters real clients do not send: forwarded, not stored");
  write_sample(out, "inferllama_metadata_unstored_total", "", static_cast<double>(h.metadata_unstored.load()));
  auto& d = hub.downloads().counters();
  write_header(out, "inferllama_upstream_errors_total", "counter", "Upstream failures by kind");
  write_sample(out, "inferllama_upstream_errors_total", "kind=\"transport\"",
               static_cast<double>(h.upstream_transport_errors.load()));
  write_sample(out, "inferllama_upstream_errors_total", "kind=\"server\"",
               static_cast<double>(h.upstream_server_errors.load()));
  write_sample(out, "inferllama_upstream_errors_total", "kind=\"transfer_retry\"",
               static_cast<double>(d.retries.load()));
  write_sample(out, "inferllama_upstream_errors_total", "kind=\"download_failed\"",
               static_cast<double>(d.failed.load()));
  write_header(out, "inferllama_upstream_bytes_total", "counter", "File bytes fetched upstream");
  write_sample(out, "inferllama_upstream_bytes_total", "", static_cast<double>(d.upstream_bytes.load()));
  write_header(out, "inferllama_resumed_bytes_total", "counter",
               "File bytes an interrupted download had staged and a later one reused");
  write_sample(out, "inferllama_resumed_bytes_total", "", static_cast<double>(d.resumed_bytes.load()));
  write_header(out, "inferllama_downloads_total", "counter", "Upstream file downloads by outcome");
  write_sample(out, "inferllama_downloads_total", "result=\"started\"", static_cast<double>(d.started.load()));
  write_sample(out, "inferllama_downloads_total", "result=\"completed\"", static_cast<double>(d.completed.load()));
  write_sample(out, "inferllama_downloads_total", "result=\"failed\"", static_cast<double>(d.failed.load()));
  write_header(out, "inferllama_ingests_total", "counter",
               "Files that arrived over BitTorrent (mirrors) and went through the verified ingest, by outcome");
  write_sample(out, "inferllama_ingests_total", "result=\"started\"", static_cast<double>(d.ingests_started.load()));
  write_sample(out, "inferllama_ingests_total", "result=\"completed\"",
               static_cast<double>(d.ingests_completed.load()));
  write_sample(out, "inferllama_ingests_total", "result=\"failed\"", static_cast<double>(d.ingests_failed.load()));
  write_header(out, "inferllama_downloads_in_flight", "gauge", "Files being fetched upstream now");
  write_sample(out, "inferllama_downloads_in_flight", "", static_cast<double>(hub.downloads().in_flight()));
  write_header(out, "inferllama_disk_used_bytes", "gauge", "Bytes in stored chunks");
  write_sample(out, "inferllama_disk_used_bytes", "", static_cast<double>(deps.store.bytes_stored()));
  auto& evictor = hub.evictor();
  write_header(out, "inferllama_disk_budget_bytes", "gauge", "Disk budget of the chunk store (0 = none)");
  write_sample(out, "inferllama_disk_budget_bytes", "", static_cast<double>(evictor.budget()));
  write_header(out, "inferllama_evictions_total", "counter", "Files evicted to stay under the budget");
  write_sample(out, "inferllama_evictions_total", "", static_cast<double>(evictor.counters().evicted_files.load()));
  write_header(out, "inferllama_evicted_bytes_total", "counter", "Disk bytes freed by evictions");
  write_sample(out, "inferllama_evicted_bytes_total", "", static_cast<double>(evictor.counters().evicted_bytes.load()));
  if (deps.tracker) deps.tracker->render_metrics(out);
  if (deps.limiter) {
    write_header(out, "inferllama_auth_failures_total", "counter",
                 "Credentials refused (node keys, passkeys, the admin key), counted per client address");
    write_sample(out, "inferllama_auth_failures_total", "", static_cast<double>(failed_attempts.failures()));
    write_header(out, "inferllama_auth_blocked_total", "counter",
                 "Requests refused (429) because their address presented too many refused credentials");
    write_sample(out, "inferllama_auth_blocked_total", "", static_cast<double>(failed_attempts.refusals()));
    write_header(out, "inferllama_auth_tracked_addresses", "gauge", "Client addresses with recent refused credentials");
    write_sample(out, "inferllama_auth_tracked_addresses", "", static_cast<double>(failed_attempts.tracked()));
    deps.limiter->render_metrics(out);
  }
  for (const auto& render : deps.metrics) render(out);
  return out;
}

}  // namespace inferllama::http
