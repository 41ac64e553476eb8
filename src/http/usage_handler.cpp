// GET /api/usage: a user's own usage records with their node key, everyone's for the admin.
#include "http/connection.hpp"
#include "http/credentials.hpp"
#include "http/handlers.hpp"
#include "http/server_context.hpp"
#include "usage/accounts_api.hpp"
#include "usage/identities.hpp"
#include "util/offload.hpp"

namespace inferllama::http {
namespace bhttp = boost::beast::http;

Task<Answer> handle(Exchange& x, const UsageRoute&) {
  auto& server = x.server;
  Connection& c = x.connection;
  if (!is_read(x.request)) co_return method_not_allowed("use GET");
  if (!server.deps.identities) co_return hub::error_reply(404, "this node keeps no usage records");
  const Origin origin{c.listener, c.client, c.network};
  std::optional<std::string> viewer;
  const std::string_view bearer = bearer_of(x.request[bhttp::field::authorization]);
  if (usage::Identities::is_node_key(bearer)) {
    auto checked = server.deps.identities->authenticate(bearer);
    if (const auto* why = std::get_if<std::string>(&checked)) {
      co_return server.gate.unauthorized(origin, c.credentials, *why, c.limit_headers);
    }
    viewer = std::get<usage::Authenticated>(checked).user;
  } else if (!server.gate.is_admin(x.request, origin)) {
    co_return server.gate.unauthorized(origin, c.credentials,
                                       "usage records need your node key (or the admin key) as a bearer token",
                                       c.limit_headers);
  }  // else the admin, who sees everyone
  usage::Accounts accounts{*server.deps.identities, *server.deps.usage_log, server.config.token_size};
  const std::string query(x.query);
  auto answer = co_await offload(server.deps.blocking, [&] { return usage::answer_usage(accounts, viewer, query); });
  co_return hub::Reply{answer.status, {{"Cache-Control", "no-store"}}, answer.content_type, std::move(answer.body)};
}

}  // namespace inferllama::http
