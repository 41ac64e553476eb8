// Admission: what a request may ask for, decided before any handler runs. From the request and where it
// came from (the listener, the client's address) it gives either the route to answer with the
// credentials the Hub will see, or the refusal to send: 400 for a hostile target, 404 for a route this
// listener does not serve, 401 for a bad key, 429 for an address that guessed too many keys or a caller
// over its limits. No sockets: a unit test drives it with requests.
#pragma once
#include <optional>
#include <string>
#include <variant>

#include "http/connection.hpp"
#include "http/http_stats.hpp"
#include "http/response.hpp"
#include "http/router.hpp"
#include "hub/hub_service.hpp"
#include "inferllama/config.hpp"
#include "inferllama/usage.hpp"
#include "usage/failed_attempts.hpp"
#include "usage/identities.hpp"

namespace inferllama::http {

struct Origin {
  Listener listener = Listener::plain;
  asio::ip::address client;  // unspecified on the admin socket
  std::string_view network;  // client_network(client): what limits and failed credentials are counted by
};

struct Admitted {
  Route route;
  hub::Caller caller;  // the credentials the Hub sees for this request
};
struct Refusal {
  hub::Reply reply;
};

struct Admission {
  std::variant<Admitted, Refusal> verdict;
  RouteId route = RouteId::not_found;
  bool credentials = false;        // the request presented a key or passkey
  std::optional<Account> account;  // who it is charged to, when anyone is
  HeaderList limit_headers;        // RateLimit fields (and WWW-Authenticate), on every response to it
};

class Gate {
 public:
  // `identities` and `limiter` are null on a node that keeps no users.
  Gate(const Config& config, usage::FailedAttempts& failed_attempts, HttpStats& stats, usage::Identities* identities,
       RateLimiter* limiter)
      : config_(config), failed_attempts_(failed_attempts), stats_(stats), identities_(identities), limiter_(limiter) {}

  Task<Admission> admit(const Request& req, const Origin& origin);

  // The caller is the admin: on the admin socket, or with the admin key as a bearer token.
  bool is_admin(const Request& req, const Origin& origin) const;
  // A 401 that counts a refused credential against the client's address when one was presented, and
  // asks for a bearer token.
  hub::Reply unauthorized(const Origin& origin, bool credentials, const std::string& message,
                          HeaderList& limit_headers);
  // An account of `who` for a request about `repo` ("" for none), with the limits that apply to it.
  Account account_for(UserId who, std::string repo) const;
  // Applies the account's limits to this request (a download when `download`): the decision is in the
  // account. False when the limiter must be awaited: then decide().
  bool decide_now(Account& account, bool download);
  Task<void> decide(Account& account, bool download);
  bool keeps_users() const { return identities_ != nullptr; }

 private:
  // Identifies the caller of a Hub route (passkey, node key, or address), sets the credentials the Hub
  // sees, and opens its account; a refusal when its credentials do not hold.
  std::optional<hub::Reply> open_account(const Request& req, const Origin& origin, Admission& admission,
                                         hub::Caller& caller, const std::string& passkey, const std::string& repo);
  // The account's decision as RateLimit headers, and the refusal when it was refused.
  std::optional<hub::Reply> limit_refusal(Admission& admission) const;
  void settle(Account& account, Decision decision);
  const LimitPolicy* policy_for(const UserId& who) const;

  const Config& config_;
  usage::FailedAttempts& failed_attempts_;
  HttpStats& stats_;
  usage::Identities* identities_;
  RateLimiter* limiter_;
};

}  // namespace inferllama::http
