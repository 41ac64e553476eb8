#include "http/admission.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "http/credentials.hpp"
#include "http/rate_limit_headers.hpp"
#include "util/url.hpp"

namespace inferllama::http {
namespace bhttp = boost::beast::http;
namespace {

// The passkey a route carries (/p/{passkey}/..., /announce/{passkey}), or "".
std::string_view passkey_of(const Route& route) {
  if (const auto* resolve = std::get_if<ResolveRoute>(&route)) return resolve->passkey;
  if (const auto* api = std::get_if<ApiRoute>(&route)) return api->passkey;
  if (const auto* tracker = std::get_if<TrackerRoute>(&route)) return tracker->passkey;
  return {};
}

Refusal refuse(unsigned status, const std::string& message) {
  return {hub::error_reply(status, message)};
}

// A request that carries this node's own name in Via left it for an upstream and came back: answering
// it would ask the same upstream again, without end.
std::optional<Refusal> loop_refusal(std::string_view via) {
  if (via.empty()) return std::nullopt;
  if (via.size() > 4096) return refuse(400, "the Via header is longer than 4096 bytes");
  const auto hops = hub::node_hops(via);
  const bool back_here = std::find(hops.begin(), hops.end(), "1.1 " + hub::via_name()) != hops.end();
  if (back_here || hops.size() > hub::kMaxViaHops) {
    return refuse(hub::kLoopDetected,
                  "this request came back to the node that sent it upstream (Via: " + std::to_string(hops.size()) +
                      " nodes): the nodes' upstream settings form a loop; point one of them at "
                      "the Hub or at a parent node outside the loop");
  }
  return std::nullopt;
}

}  // namespace

bool Gate::is_admin(const Request& req, const Origin& origin) const {
  if (origin.listener == Listener::admin_socket) return true;
  return !config_.admin_key.empty() && same_secret(bearer_of(req[bhttp::field::authorization]), config_.admin_key);
}

hub::Reply Gate::unauthorized(const Origin& origin, bool credentials, const std::string& message,
                              HeaderList& limit_headers) {
  stats_.unauthorized.add();
  if (credentials) failed_attempts_.failed(origin.network);
  limit_headers.emplace_back("WWW-Authenticate", "Bearer realm=\"inferllama\"");
  return hub::error_reply(401, message);
}

const LimitPolicy* Gate::policy_for(const UserId& who) const {
  const LimitPolicy* policy = &config_.limit_anonymous;
  if (!who.anonymous()) {
    auto it = config_.limit_users.find(who.str());
    policy = it != config_.limit_users.end() ? &it->second : &config_.limit_default;
  }
  return policy->limits_anything() ? policy : nullptr;
}

Account Gate::account_for(UserId who, std::string repo) const {
  Account account;
  account.who = std::move(who);
  account.repo = std::move(repo);
  account.policy = policy_for(account.who);
  return account;
}

bool Gate::decide_now(Account& account, bool download) {
  if (!account.policy || !limiter_) return true;
  auto decision = limiter_->decide_now(account.who, *account.policy, download);
  if (!decision) return false;
  settle(account, std::move(*decision));
  return true;
}

Task<void> Gate::decide(Account& account, bool download) {
  settle(account, co_await limiter_->admit(account.who, *account.policy, download));
}

void Gate::settle(Account& account, Decision decision) {
  account.decision = std::move(decision);
  if (!account.decision.allowed) stats_.limited.add();
}

Task<Admission> Gate::admit(const Request& req, const Origin& origin) {
  Admission admission;
  Route route = route_target(req.target());
  admission.route = route_id(route);
  if (const auto* bad = std::get_if<BadRequest>(&route)) {
    admission.verdict = refuse(400, bad->message);
    co_return admission;
  }
  admission.credentials = !req[bhttp::field::authorization].empty() || !passkey_of(route).empty();
  if (admission.credentials) {
    std::chrono::milliseconds retry_after{0};
    if (failed_attempts_.blocked(origin.network, retry_after)) {
      const auto seconds = std::chrono::ceil<std::chrono::seconds>(retry_after).count();
      Refusal refusal =
          refuse(429, "too many refused credentials from this address; retry in " + std::to_string(seconds) + " s");
      refusal.reply.headers.emplace_back("Retry-After", std::to_string(seconds));
      admission.verdict = std::move(refusal);
      co_return admission;
    }
  }
  if (std::holds_alternative<NotFound>(route)) {
    admission.verdict = refuse(404, "no such route");
    co_return admission;
  }
  const bool node_route = std::holds_alternative<AdminRoute>(route) || std::holds_alternative<UsageRoute>(route) ||
                          std::holds_alternative<HealthRoute>(route);
  if (origin.listener == Listener::admin_socket && !node_route) {
    admission.verdict = refuse(404, "the admin socket serves the admin API only");
    co_return admission;
  }
  const bool metrics_or_health =
      std::holds_alternative<MetricsRoute>(route) || std::holds_alternative<HealthRoute>(route);
  if (origin.listener == Listener::metrics && !metrics_or_health) {
    admission.verdict = refuse(404, "this listener serves /metrics and /healthz only");
    co_return admission;
  }
  if (std::holds_alternative<AdminRoute>(route) && !is_admin(req, origin)) {
    if (!config_.admin_key.empty()) {
      admission.verdict =
          Refusal{unauthorized(origin, admission.credentials,
                               "the admin API needs the node's admin key as a bearer token", admission.limit_headers)};
    } else {
      admission.verdict = refuse(403,
                                 "the admin API is not served over TCP on a node without admin_key: run `inferllama` "
                                 "beside the node (it uses the admin socket in the data directory) or set admin_key");
    }
    co_return admission;
  }
  // Counters tell an outsider what is cached and who is busy: on metrics_listen, or with the admin key.
  if (std::holds_alternative<MetricsRoute>(route) && origin.listener != Listener::metrics &&
      (config_.admin_key.empty() || !same_secret(bearer_of(req[bhttp::field::authorization]), config_.admin_key))) {
    admission.verdict = refuse(404, "metrics are served on metrics_listen, or here with the admin key as a bearer");
    co_return admission;
  }

  hub::Caller caller{std::string(req[bhttp::field::authorization]), std::string(req[bhttp::field::via])};
  if (auto loop = loop_refusal(caller.via)) {
    admission.verdict = std::move(*loop);
    co_return admission;
  }
  // The Hub's routes and the node's torrent routes: accounted to a user or an address, and limited.
  const auto* resolve = std::get_if<ResolveRoute>(&route);
  const auto* api = std::get_if<ApiRoute>(&route);
  const auto* passed = std::get_if<UpstreamRoute>(&route);
  if ((resolve || api || passed) && limiter_) {
    static const std::string kNoPasskey;  // a reference, not a copy per request: this is every hit's path
    const std::string& passkey = resolve ? resolve->passkey : api ? api->passkey : kNoPasskey;
    const std::string repo = resolve ? resolve->repo.key()
                             : api   ? api->repo.key()
                                     : (passed->repo ? passed->repo->key() : std::string());
    const bool download =
        req.method() == bhttp::verb::get && (resolve || (api && api->kind == ApiRoute::Kind::webseed));
    auto refusal = open_account(req, origin, admission, caller, passkey, repo);
    if (!refusal) {
      if (!decide_now(*admission.account, download)) co_await decide(*admission.account, download);
      refusal = limit_refusal(admission);
    }
    if (refusal) {
      admission.verdict = Refusal{std::move(*refusal)};
      co_return admission;
    }
  }
  admission.verdict = Admitted{std::move(route), std::move(caller)};
  co_return admission;
}

std::optional<hub::Reply> Gate::open_account(const Request& req, const Origin& origin, Admission& admission,
                                             hub::Caller& caller, const std::string& passkey, const std::string& repo) {
  std::string user;  // the node user; none: the request is the client address's
  const std::string_view bearer = bearer_of(req[bhttp::field::authorization]);
  if (!passkey.empty()) {
    // A torrent's web seed: BitTorrent clients send no credentials, so the Hub sees an anonymous caller.
    auto owner = identities_->user_of_passkey(passkey);
    if (!owner) {
      return unauthorized(origin, admission.credentials, "unknown passkey, or its user is disabled",
                          admission.limit_headers);
    }
    user = std::move(*owner);
    caller.authorization.clear();
  } else if (usage::Identities::is_node_key(bearer)) {
    auto checked = identities_->authenticate(bearer);
    if (const auto* why = std::get_if<std::string>(&checked)) {
      return unauthorized(origin, admission.credentials, *why, admission.limit_headers);
    }
    auto& who = std::get<usage::Authenticated>(checked);
    user = std::move(who.user);
    // The node key never leaves the node: upstream, the user is their own Hub token, or anonymous
    // (the node's token then opens public repos only).
    caller.authorization = who.hub_token.empty() ? std::string() : "Bearer " + who.hub_token;
  } else if (req[bhttp::field::authorization].find(usage::kKeyPrefix) != std::string_view::npos) {
    // Something like a node key in another form ("Basic", no scheme, a tab): refused, never passed on.
    return unauthorized(origin, admission.credentials, "send a node key as Authorization: Bearer il_...",
                        admission.limit_headers);
  } else if (config_.require_auth) {
    return unauthorized(origin, admission.credentials,
                        "this node needs an API key: send Authorization: Bearer il_... (set HF_TOKEN to your "
                        "node key)",
                        admission.limit_headers);
  } else if (!config_.admin_key.empty() && same_secret(bearer, config_.admin_key)) {
    caller.authorization.clear();  // the admin key opens the admin API, and is nobody's Hub token
  } else if (bearer.empty()) {
    // The Hub reads bearer tokens only: anything else (the admin key in another form, a password) stays here.
    caller.authorization.clear();
  }
  UserId who = user.empty() ? UserId::address(origin.client.is_unspecified() ? "unknown" : origin.network)
                            : UserId::user(std::move(user));
  admission.account = account_for(std::move(who), repo);
  return std::nullopt;
}

std::optional<hub::Reply> Gate::limit_refusal(Admission& admission) const {
  const Decision& decision = admission.account->decision;
  admission.limit_headers = rate_limit_headers(decision);
  if (decision.allowed) return std::nullopt;
  hub::Reply refusal;
  if (decision.refused_by) {
    refusal.status = 429;
    refusal.body = rate_limited_body(decision, admission.account->who);  // Retry-After is among the limit headers
  } else {
    // The shared limit store could not be asked and the node is told to refuse rather than guess.
    refusal.status = 503;
    refusal.headers.emplace_back("Retry-After", "1");
    refusal.body = R"({"error":"rate limits cannot be checked right now; retry shortly"})";
  }
  refusal.headers.emplace_back("X-Error-Message", nlohmann::json::parse(refusal.body).value("error", "rate limited"));
  return refusal;
}

}  // namespace inferllama::http
