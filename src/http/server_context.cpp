#include "http/server_context.hpp"

#include <spdlog/spdlog.h>

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

// The client and its network, formatted only when the client changes: a connection's requests mostly come
// from one client, and inet_ntop formats with sprintf, a cost every small request paid.
void set_client(Connection& c, const asio::ip::address& client) {
  if (client == c.client && !c.network.empty()) return;
  c.client = client;
  c.network = client_network(client);
}

}  // namespace

ServerContext::ServerContext(ServerDeps d)
    : deps(std::move(d)),
      config(deps.config),
      failed_attempts(monotonic_clock(), config.auth_failure_limit),
      gate(config, failed_attempts, stats, deps.identities, deps.limiter),
      trusted_proxies_(parse_networks(config.trusted_proxies).value_or(std::vector<Network>{})),
      access_log_(AccessLog::open(config)) {}

void ServerContext::reopen_access_log() {
  if (!access_log_) return;
  if (auto error = access_log_->reopen(); !error.empty()) {
    spdlog::error("access log: {}; still writing to the file it had open", error);
  } else {
    spdlog::info("access log: reopened {}", access_log_->path().string());
  }
}

void ServerContext::rotate_access_log() {
  if (!access_log_) return;
  if (auto error = access_log_->rotate(); !error.empty()) spdlog::error("access log: {}", error);
}

void ServerContext::identify_client(Connection& c, const Request& req) const {
  if (trusted_proxies_.empty()) {
    set_client(c, c.peer.address());
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
  set_client(c, to_address(origin.address));
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
  c.bytes += bytes;
  if (!c.account || bytes == 0) return;
  auto& account = *c.account;
  (from_cache ? account.counts.bytes_from_cache : account.counts.bytes_from_upstream) += bytes;
  account.counts.token_bytes += bytes;
  if (account.policy && account.policy->tokens > 0) deps.limiter->charge(account.who, *account.policy, bytes);
}

void ServerContext::record(Connection& c, const Request& req, std::chrono::steady_clock::time_point started) {
  const auto elapsed = std::chrono::steady_clock::now() - started;
  const double seconds = std::chrono::duration<double>(elapsed).count();
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
  if (access_log_) log_access(c, req, elapsed);
}

void ServerContext::log_access(const Connection& c, const Request& req, std::chrono::steady_clock::duration elapsed) {
  const auto duration = std::chrono::duration_cast<std::chrono::microseconds>(elapsed);
  const std::string remote = c.admin()                   ? "admin socket"
                             : c.client.is_unspecified() ? std::string()
                                                         : c.client.to_string();
  const std::string target = redact_target(req.target());
  // Who, never with what: the user a key or passkey named, the holder of the admin key, or anyone.
  std::string_view identity = c.user;
  if (identity.empty()) {
    const bool admin = c.admin() || (!config.admin_key.empty() &&
                                     same_secret(bearer_of(req[bhttp::field::authorization]), config.admin_key));
    identity = admin ? "admin" : "anon";
  }
  const AccessEntry entry{.time = std::chrono::system_clock::now() -
                                  std::chrono::duration_cast<std::chrono::system_clock::duration>(duration),
                          .remote = remote,
                          .identity = identity,
                          .method = req.method_string(),
                          .target = target,
                          .route = route_name(c.route),
                          .status = c.status,
                          .bytes = c.bytes,
                          .duration_us = static_cast<std::uint64_t>(duration.count()),
                          .cache = c.cache,
                          .user_agent = req[bhttp::field::user_agent]};
  // Each thread formats into its own buffer, which keeps its capacity from one request to the next.
  thread_local std::string line;
  line.clear();
  append_access_line(line, entry);
  access_log_->write(line);
}

std::string ServerContext::render_metrics() const {
  std::string out;
  stats.render(out, deps.limiter != nullptr);
  if (deps.limiter) failed_attempts.render_metrics(out);
  deps.metrics.render(out);
  return out;
}

}  // namespace inferllama::http
