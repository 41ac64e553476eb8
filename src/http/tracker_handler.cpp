// GET /announce and /scrape on the HTTP listeners. Announces are many and small: the tracker writes its
// bencoded answer into the connection's reused buffer, which the session sends behind a fixed head.
#include "http/connection.hpp"
#include "http/credentials.hpp"
#include "http/handlers.hpp"
#include "http/rate_limit_headers.hpp"
#include "http/server_context.hpp"
#include "inferllama/tracker.hpp"
#include "usage/identities.hpp"

namespace inferllama::http {
namespace bhttp = boost::beast::http;
namespace {

tracker::Endpoint tracker_endpoint(const asio::ip::address& address, std::uint16_t port) {
  if (address.is_v4()) return tracker::Endpoint::v4_from(address.to_v4().to_bytes(), port);
  return tracker::Endpoint::v6_from(address.to_v6().to_bytes(), port);
}

}  // namespace

Task<Answer> handle(Exchange& x, const TrackerRoute& route) {
  auto* tracker = x.server.deps.tracker;
  Connection& c = x.connection;
  if (!tracker) co_return hub::error_reply(404, "this node runs no tracker");
  if (x.request.method() != bhttp::verb::get) co_return method_not_allowed("use GET");
  // A private tracker answers only announces and scrapes that carry a user's passkey, and counts them
  // against the user.
  std::string refusal;
  if (x.server.config.tracker_private || !route.passkey.empty()) {
    auto* identities = x.server.deps.identities;
    std::optional<std::string> user;
    if (route.passkey.empty()) {
      refusal = "this tracker is private: announce with your passkey (/announce/PASSKEY, /scrape/PASSKEY)";
    } else if (!identities || !(user = identities->user_of_passkey(route.passkey))) {
      refusal = "unknown passkey, or its user is disabled";
      x.server.failed_attempts.failed(c.network);
    } else {
      UserId who = UserId::user(std::move(*user));
      std::string no_repo;
      c.account = x.server.gate.account_for(std::move(who), std::move(no_repo));
      if (!x.server.gate.decide_now(*c.account, false)) co_await x.server.gate.decide(*c.account, false);
      c.user = c.account->who.str();
      if (!c.account->decision.allowed) {
        refusal = "rate limit exceeded: retry in " + std::to_string(retry_after_seconds(c.account->decision)) + " s";
      }
    }
  }
  if (!refusal.empty()) {
    // Trackers refuse in bencoding, with a 200: that is what every client shows its user.
    c.tracker_reply = "d14:failure reason" + std::to_string(refusal.size()) + ":" + refusal + "e";
  } else if (route.kind == TrackerRoute::Kind::announce) {
    // The peer's address is the client's, also behind a trusted proxy; its port is the announce's own.
    tracker::Endpoint local{};
    boost::system::error_code ec;
    if (tracker->needs_local_address()) {
      // A connection already gone announces without the seed's address; its answer goes nowhere anyway.
      const auto bound = c.socket.local_endpoint(ec);
      if (!ec) local = tracker_endpoint(bound.address(), bound.port());
    }
    tracker->http_announce(x.query, tracker_endpoint(c.client, c.peer.port()), local, c.tracker_reply);
  } else {
    tracker->http_scrape(x.query, c.tracker_reply);
  }
  co_return TrackerBody{};
}

}  // namespace inferllama::http
