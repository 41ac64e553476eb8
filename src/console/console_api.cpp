#include "console/console_api.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "console/rights_api.hpp"
#include "usage/accounts_api.hpp"
#include "usage/usage_json.hpp"

namespace inferllama::console {
namespace {

using nlohmann::json;
using usage::Actor;
using usage::AuditEvent;

ConsoleAnswer error(unsigned status, const std::string& message) {
  return {status, "application/json", json{{"error", message}}.dump(), {}};
}

ConsoleAnswer ok(const json& body, unsigned status = 200) {
  return {status, "application/json", body.dump(), {}};
}

// Both cookies: the session's for as long as the session lasts (its JWT is good for 15 minutes of that; the
// refresh token inside renews it), the CSRF token's alike. Max-Age 0 clears them.
void set_cookies(ConsoleAnswer& answer, std::string_view jwt, std::string_view csrf, std::int64_t max_age,
                 bool secure) {
  const std::string flags =
      "; Path=/; Max-Age=" + std::to_string(max_age) + "; SameSite=Lax" + (secure ? "; Secure" : "");
  answer.headers.emplace_back("Set-Cookie",
                              std::string(kSessionCookie) + "=" + std::string(jwt) + flags + "; HttpOnly");
  answer.headers.emplace_back("Set-Cookie", std::string(kCsrfCookie) + "=" + std::string(csrf) + flags);
}

ConsoleAnswer signed_in(const ConsoleDeps& deps, const IssuedSession& issued) {
  json user = json::object();
  if (auto found = deps.identities.user(issued.user)) user = usage::user_json(*found);
  ConsoleAnswer answer = ok({{"user", user}, {"csrf", issued.csrf}});
  set_cookies(answer, issued.jwt, issued.csrf, issued.max_age_s, deps.secure_cookies);
  return answer;
}

ConsoleAnswer signed_out(const ConsoleDeps& deps, ConsoleAnswer answer) {
  set_cookies(answer, "", "", 0, deps.secure_cookies);
  return answer;
}

std::optional<std::string> string_field(const json& body, const char* name) {
  if (!body.is_object() || !body.contains(name) || !body[name].is_string()) return std::nullopt;
  return body[name].get<std::string>();
}

ConsoleAnswer sign_in(ConsoleDeps& deps, const ConsoleRequest& request) {
  const auto body = json::parse(request.body, nullptr, false);
  const auto name = string_field(body, "user");
  const auto password = string_field(body, "password");
  if (!name || !password) return error(400, "send {\"user\": NAME, \"password\": PASSWORD}");
  std::chrono::milliseconds retry_after{0};
  if (deps.guard.blocked(*name, request.network, retry_after)) {
    const auto seconds = std::chrono::ceil<std::chrono::seconds>(retry_after).count();
    ConsoleAnswer answer =
        error(429, "too many failed sign-ins for this account or network; retry in " + std::to_string(seconds) + " s");
    answer.headers.emplace_back("Retry-After", std::to_string(seconds));
    return answer;
  }
  if (!deps.identities.check_password(*name, *password)) {
    deps.guard.failed(*name, request.network);
    if (deps.identities.has_user(*name))
      usage::audit(deps.audit, *name, AuditEvent::sign_in_failed, Actor::user, request.network);
    return error(401, "wrong user name or password");
  }
  auto issued = deps.sessions.open(*name);
  if (auto* why = std::get_if<std::string>(&issued)) return error(503, *why);
  usage::audit(deps.audit, *name, AuditEvent::signed_in, Actor::user, request.network);
  return signed_in(deps, std::get<IssuedSession>(issued));
}

// The routes of a signed-in user.
ConsoleAnswer for_user(ConsoleDeps& deps, const ConsoleRequest& request, const SignedIn& who) {
  const std::string_view method = request.method, path = request.path;
  const bool get = method == "GET" || method == "HEAD";
  if (path == "me") {
    if (!get) return error(405, "use GET");
    auto user = deps.identities.user(who.user);
    if (!user) return error(401, "sign in first");
    json sessions = json::array();
    for (const auto& s : deps.sessions.of_user(who.user)) {
      sessions.push_back({{"id", s.sid},
                          {"current", s.sid == who.sid},
                          {"created", usage::iso8601_utc(s.created_ms)},
                          {"refreshed", usage::iso8601_utc(s.refreshed_ms)},
                          {"expires", usage::iso8601_utc(s.expires_ms)}});
    }
    return ok({{"user", usage::user_json(*user)}, {"sessions", sessions}});
  }
  if (path == "sign-out") {
    if (method != "POST") return error(405, "use POST");
    deps.sessions.close(request.session_cookie);
    return signed_out(deps, ok({{"signed_out", true}}));
  }
  if (path == "password") {
    if (method != "POST") return error(405, "use POST");
    const auto body = json::parse(request.body, nullptr, false);
    const auto current = string_field(body, "current");
    const auto replacement = string_field(body, "new");
    if (!current || !replacement) return error(400, "send {\"current\": PASSWORD, \"new\": PASSWORD}");
    if (!deps.identities.check_password(who.user, *current)) {
      deps.guard.failed(who.user, request.network);
      return error(403, "the current password is wrong");
    }
    if (auto why = deps.identities.set_password(who.user, *replacement)) return error(400, *why);
    usage::audit(deps.audit, who.user, AuditEvent::password_changed, Actor::user, request.network);
    deps.sessions.close_all(who.user, who.sid);
    return ok({{"changed", true}});
  }
  if (path == "keys") {
    if (get) {
      auto keys = deps.identities.keys_of(who.user);
      if (auto* why = std::get_if<std::string>(&keys)) return error(404, *why);
      json list = json::array();
      for (const auto& key : std::get<std::vector<usage::ApiKey>>(keys)) list.push_back(usage::key_json(key));
      return ok({{"keys", list}});
    }
    if (method != "POST") return error(405, "use GET or POST");
    const auto body = json::parse(request.body.empty() ? std::string_view("{}") : request.body, nullptr, false);
    if (!body.is_object()) return error(400, "send {\"label\": TEXT}");
    auto created = deps.identities.create_key(who.user, string_field(body, "label").value_or(""));
    if (auto* why = std::get_if<std::string>(&created)) return error(400, *why);
    const auto& key = std::get<usage::CreatedKey>(created);
    usage::audit(deps.audit, who.user, AuditEvent::key_created, Actor::user, request.network, key.key.id);
    return ok(usage::created_key_json(key), 201);
  }
  if (path.starts_with("keys/") && path.ends_with("/revoke")) {
    if (method != "POST") return error(405, "use POST");
    const std::string id(path.substr(5, path.size() - 5 - 7));
    auto own_key = [&]() -> std::optional<usage::ApiKey> {
      const auto keys = deps.identities.keys_of(who.user);
      if (const auto* list = std::get_if<std::vector<usage::ApiKey>>(&keys)) {
        for (const auto& key : *list) {
          if (key.id == id) return key;
        }
      }
      return std::nullopt;
    };
    if (!own_key()) return error(404, "no such key of yours");
    if (auto why = deps.identities.revoke_key(id)) return error(400, *why);
    usage::audit(deps.audit, who.user, AuditEvent::key_revoked, Actor::user, request.network, id);
    return ok(usage::key_json(*own_key()));
  }
  if (path == "usage") {
    if (!get) return error(405, "use GET");
    usage::Accounts accounts{deps.identities, deps.usage, deps.token_size};
    auto answer = usage::answer_usage(accounts, who.user, request.query);
    return {answer.status, answer.content_type, std::move(answer.body), {}};
  }
  if (path == "export") return export_own_account(deps, request, who);
  if (path == "delete-account") {
    auto deleted = delete_own_account(deps, request, who);
    return deleted.status == 200 ? signed_out(deps, std::move(deleted)) : deleted;
  }
  return error(404, "no such console route");
}

}  // namespace

std::string_view cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const auto end = header.find(';');
    std::string_view pair = header.substr(0, end);
    header = end == std::string_view::npos ? std::string_view() : header.substr(end + 1);
    while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
    if (pair.size() > name.size() && pair.starts_with(name) && pair[name.size()] == '=') {
      return pair.substr(name.size() + 1);
    }
  }
  return {};
}

ConsoleAnswer answer_console(ConsoleDeps& deps, const ConsoleRequest& request) {
  if (request.path == "sign-in") {
    if (request.method != "POST") return error(405, "use POST");
    return sign_in(deps, request);
  }
  const Sessions::Csrf csrf{request.csrf_header, request.csrf_cookie};
  if (request.path == "refresh") {
    if (request.method != "POST") return error(405, "use POST");
    auto issued = deps.sessions.refresh(request.session_cookie, csrf);
    if (auto* why = std::get_if<std::string>(&issued)) return signed_out(deps, error(401, *why));
    return signed_in(deps, std::get<IssuedSession>(issued));
  }
  const bool read = request.method == "GET" || request.method == "HEAD";
  auto who = deps.sessions.check(request.session_cookie, read ? std::nullopt : std::optional(csrf));
  if (!who) {
    // A fresh session with a bad CSRF header is told so; anything else needs a (re)sign-in or a refresh.
    if (!read && deps.sessions.check(request.session_cookie, std::nullopt)) {
      return error(403, "missing or wrong X-CSRF-Token: echo the inferllama_csrf cookie in it");
    }
    return error(401, "sign in first (or refresh the session)");
  }
  auto user = deps.identities.user(who->user);
  if (!user || !user->active()) {
    deps.sessions.close_all(who->user);
    return signed_out(deps, error(401, "this account is disabled"));
  }
  return for_user(deps, request, *who);
}

}  // namespace inferllama::console
