// What every connection of a server shares: its dependencies, counters, admission gate and access log,
// and the steps of a request that do not depend on the route (who the client is, what it is charged,
// what is logged).
#pragma once
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "http/access_log.hpp"
#include "http/admission.hpp"
#include "http/connection.hpp"
#include "http/forwarded.hpp"
#include "http/http_stats.hpp"
#include "http/piece_dispatch.hpp"
#include "http/response.hpp"
#include "http/server.hpp"
#include "inferllama/network.hpp"
#include "usage/failed_attempts.hpp"

namespace inferllama::http {

class ServerContext {
 public:
  explicit ServerContext(ServerDeps deps);

  ServerDeps deps;
  const Config& config;
  HttpStats stats;
  usage::FailedAttempts failed_attempts;
  Gate gate;
  PieceDispatch pieces;  // which piece of a stored file goes to a child node that asks for any it wants
  std::atomic<bool> draining{false};

  // Who the request is from: the peer, or the client a trusted reverse proxy names.
  void identify_client(Connection& c, const Request& req) const;
  // The URL clients reach this node at: public_url, or the request's own scheme and Host.
  std::string public_base(const Connection& c, const Request& req) const;
  // File content sent: counted for the usage records and charged to the token limit as it flows.
  void flowed(Connection& c, std::uint64_t bytes, bool from_cache);
  // After each request: counters, the usage record of its account, the access log line.
  void record(Connection& c, const Request& req, std::chrono::steady_clock::time_point started);
  // SIGHUP: the access log file is opened again at its path (logrotate moved the old one away).
  void reopen_access_log();
  // Hourly: the access log file moves on when its day has passed, and rotations past their retention go.
  void rotate_access_log();
  std::string render_metrics() const;

 private:
  void log_access(const Connection& c, const Request& req, std::chrono::steady_clock::duration elapsed);

  std::vector<Network> trusted_proxies_;
  std::unique_ptr<AccessLog> access_log_;  // JSON lines, when configured
};

}  // namespace inferllama::http
