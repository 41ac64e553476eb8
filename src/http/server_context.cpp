#include "http/server_context.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "http/credentials.hpp"
#include "usage/usage_log.hpp"

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
      failed_attempts(monotonic_clock(), config.auth_failure_limit),
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
  for (auto [it, end] = req.equal_range(bhttp::field::forwarded); it != end; ++it)
    headers.forwarded.push_back(it->value());
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
                      {"remote", c.admin()                   ? "admin socket"
                                 : c.client.is_unspecified() ? ""
                                                             : c.client.to_string()},
                      {"method", std::string(req.method_string())},
                      {"target", redact_target(req.target())},
                      {"route", route_name(c.route)},
                      {"status", c.status},
                      {"bytes", c.bytes},
                      {"duration_ms", seconds * 1000}};
  access_log_->info(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string ServerContext::render_metrics() const {
  std::string out;
  stats.render(out, deps.limiter != nullptr);
  if (deps.limiter) failed_attempts.render_metrics(out);
  deps.metrics.render(out);
  return out;
}

}  // namespace inferllama::http
