// The web console: its page and files (console/assets.hpp), and its JSON API under
// /api/inferllama/console/, authenticated by its cookies (console/console_api.hpp).
#include "console/account_data.hpp"
#include "console/assets.hpp"
#include "console/console_api.hpp"
#include "http/connection.hpp"
#include "http/credentials.hpp"
#include "http/handlers.hpp"
#include "http/server_context.hpp"
#include "util/offload.hpp"

namespace inferllama::http {
namespace bhttp = boost::beast::http;

namespace {

constexpr std::string_view kStatic = "static/";

hub::Reply page(const Request& req, std::string_view name) {
  if (!is_read(req)) return method_not_allowed("use GET");
  const auto asset = console::find_asset(name);
  if (!asset) return hub::error_reply(404, "no such console file");
  hub::Reply reply{200, console::page_headers(), std::string(asset->content_type), {}};
  reply.headers.emplace_back("ETag", asset->etag);
  if (req[bhttp::field::if_none_match] == asset->etag) {
    reply.status = 304;
  } else {
    reply.body = asset->body;
  }
  return reply;
}

bool keeps_console(const ServerDeps& deps) {
  return deps.sessions && deps.identities && deps.usage_log && deps.sign_in_guard && deps.mail_tokens && deps.mailer;
}

console::ConsoleDeps console_deps(ServerContext& server) {
  auto& deps = server.deps;
  console::ConsoleDeps console{*deps.identities,  *deps.usage_log, *deps.sessions,          *deps.sign_in_guard,
                               *deps.mail_tokens, *deps.mailer,    server.config.token_size};
  console.secure_cookies = server.config.cookie_secure;
  console.signup = server.config.signup;
  console.public_url = server.config.public_url;
  if (auto refusal = user_name_refusal(server)) {
    console.name_refusal = [refusal](std::string_view name) { return refusal(name, /*force=*/false); };
  }
  console.operator_overview = deps.operator_overview;
  if (deps.account_data) {
    console.audit = &deps.account_data->audit;
    console.account_data = deps.account_data;
  }
  return console;
}

hub::Reply reply_of(console::ConsoleAnswer answer) {
  hub::Reply reply{answer.status, std::move(answer.headers), answer.content_type, std::move(answer.body)};
  reply.headers.emplace_back("Cache-Control", "no-store");
  return reply;
}

}  // namespace

Task<Answer> handle(Exchange& x, const ConsoleRoute& route) {
  if (route.action.empty()) co_return page(x.request, "index.html");
  if (route.action.starts_with(kStatic))
    co_return page(x.request, std::string_view(route.action).substr(kStatic.size()));
  auto& server = x.server;
  if (!keeps_console(server.deps)) co_return hub::error_reply(404, "this node keeps no users");
  const auto cookies = x.request[bhttp::field::cookie];
  const std::string method(x.request.method_string());
  console::ConsoleRequest request{method,
                                  route.action,
                                  x.query,
                                  x.request.body(),
                                  console::cookie_value(cookies, console::kSessionCookie),
                                  console::cookie_value(cookies, console::kCsrfCookie),
                                  x.request[console::kCsrfHeader],
                                  x.request[bhttp::field::content_type],
                                  x.connection.network};
  auto console = console_deps(server);
  // Passwords cost ~100 ms of Argon2id and changes are synced writes: off the I/O thread.
  auto answer = co_await offload(server.deps.blocking, [&] { return console::answer_console(console, request); });
  co_return reply_of(std::move(answer));
}

void end_console_sessions(ServerContext& server, const std::string& user) {
  if (!keeps_console(server.deps)) return;
  auto console = console_deps(server);
  console::end_sessions(console, user);
}

Task<std::optional<Answer>> answer_operator(Exchange& x, const std::string& action) {
  const bool shared =
      action == "invite" || action == "overview" || (action.starts_with("users/") && action.ends_with("/reset-link"));
  if (!shared) co_return std::nullopt;
  auto& server = x.server;
  if (!keeps_console(server.deps)) co_return hub::error_reply(404, "this node keeps no users");
  const std::string method = x.request.method() == bhttp::verb::head ? "GET" : std::string(x.request.method_string());
  auto console = console_deps(server);
  auto answer = co_await offload(server.deps.blocking,
                                 [&] { return console::answer_operator(console, method, action, x.request.body()); });
  if (!answer) co_return std::nullopt;
  co_return reply_of(std::move(*answer));
}

}  // namespace inferllama::http
