// What the node knows about one client connection and the request it is answering, apart from the
// stream it reads and writes (see session.hpp): who is on the other end, the deadline that closes a
// stalled connection, the account the request is charged to, and what to log and count about it.
#pragma once
#include <atomic>
#include <chrono>
#include <limits>
#include <optional>
#include <string>

#include <boost/asio/ip/tcp.hpp>

#include "http/access_log.hpp"
#include "http/router.hpp"
#include "inferllama/asio.hpp"
#include "inferllama/limit_policy.hpp"
#include "inferllama/upstream.hpp"
#include "inferllama/usage.hpp"
#include "usage/usage_log.hpp"

namespace inferllama::http {

// Which listener accepted the connection, which decides what it may ask for.
enum class Listener {
  plain,         // listen: every route
  tls,           // tls_listen: every route
  metrics,       // metrics_listen: /metrics and /healthz only
  admin_socket,  // the admin socket: the OS vouched for the peer (its mode, SO_PEERCRED), who is the admin
};

// Who a request is charged to and what it has used; unset for routes nobody is accounted for.
struct Account {
  UserId who;
  const LimitPolicy* policy = nullptr;  // nullptr: no limits apply
  std::string repo;                     // "model/acme/x", or "" for requests about no repo
  usage::UsageCounts counts;
  Decision decision;  // holds the concurrent-download slot until the response is done
};

struct Connection {
  Connection(asio::ip::tcp::socket& socket, Listener listener, std::chrono::steady_clock::duration idle_timeout)
      : socket(socket), listener(listener), idle_timeout(idle_timeout) {}
  static constexpr auto kNoDeadline = std::numeric_limits<std::chrono::steady_clock::rep>::max();

  // The TCP socket under the stream (for an admin socket connection, its Unix domain descriptor):
  // closed by the reaper and by a drain.
  asio::ip::tcp::socket& socket;
  const Listener listener;
  asio::ip::tcp::endpoint peer;  // the other end, learnt at accept (none on the admin socket)
  bool idle = true;              // between requests: a drain closes it at once

  // The connection is closed if it makes no progress by this time (slow or idle clients): the server's
  // reaper looks once a second. Written by the connection's thread, read by the reaper.
  const std::chrono::steady_clock::duration idle_timeout;
  std::atomic<std::chrono::steady_clock::rep> deadline{kNoDeadline};
  // Progress: the client has another idle_timeout to make the next step.
  void touch() { deadline = (std::chrono::steady_clock::now() + idle_timeout).time_since_epoch().count(); }
  // Waiting on the upstream, not on the client: the client is not timed.
  void pause_deadline() { deadline = kNoDeadline; }
  bool expired(std::chrono::steady_clock::time_point now) const { return now.time_since_epoch().count() >= deadline; }

  // The current request.
  asio::ip::address client;      // who it is from: the peer, or the client a trusted proxy names
  std::string network;           // client_network(client): formatted when the client changes, not per request
  bool forwarded_https = false;  // a trusted proxy says the client spoke https
  bool credentials = false;      // it presents a key or passkey (see FailedAttempts)
  std::string user;              // the node user a key or passkey named, "" for anyone else (the access log)
  std::optional<Account> account;
  HeaderList limit_headers;  // RateLimit fields (and WWW-Authenticate), on every response to it
  RouteId route = RouteId::not_found;
  unsigned status = 0;
  std::uint64_t bytes = 0;                // body bytes written to the client
  CacheStatus cache = CacheStatus::none;  // where a file answer's bytes came from
  bool responded = false;                 // some of the response has been written

  // Buffers reused by every response on this connection.
  std::string head;
  std::string tracker_reply;

  bool tls() const { return listener == Listener::tls; }
  bool admin() const { return listener == Listener::admin_socket; }
};

}  // namespace inferllama::http
