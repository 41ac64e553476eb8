#include "console/console_api.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "console/account_deletion.hpp"
#include "console/rights_api.hpp"
#include "usage/accounts_api.hpp"
#include "usage/password.hpp"
#include "usage/usage_json.hpp"

namespace inferllama::console {
namespace {

using nlohmann::json;
using usage::Actor;
using usage::AuditEvent;

// A user as others may see them (an operator, a link's page): without the passkey, which is theirs alone.
json shown_user(const usage::User& user) {
  json shown = usage::user_json(user);
  shown.erase("passkey");
  return shown;
}

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
  // The session cookie (with its refresh token) goes to the console's API only, not with every file request;
  // the CSRF token must be readable by the page at /.
  const std::string flags = "; Max-Age=" + std::to_string(max_age) + "; SameSite=Lax" + (secure ? "; Secure" : "");
  answer.headers.emplace_back("Set-Cookie", std::string(kSessionCookie) + "=" + std::string(jwt) +
                                                "; Path=/api/inferllama/console/" + flags + "; HttpOnly");
  answer.headers.emplace_back("Set-Cookie", std::string(kCsrfCookie) + "=" + std::string(csrf) + "; Path=/" + flags);
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

constexpr std::string_view kSessionKeyLabel = "console session ";
constexpr std::size_t kMaxAccountText = 254;  // the longest address (RFC 5321); names are at most 64
constexpr auto kVerifyLinkLife = std::chrono::hours(48);
constexpr auto kResetLinkLife = std::chrono::hours(1);
constexpr auto kInviteLinkLife = std::chrono::hours(24 * 7);

bool mails_links(const ConsoleDeps& deps) {
  return deps.mailer.configured() && !deps.public_url.empty();
}

// A link into the console: absolute under public_url, else relative (an admin hands it on).
std::string console_link(const ConsoleDeps& deps, std::string_view route, std::string_view token) {
  std::string base = deps.public_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/#/" + std::string(route) + "?token=" + std::string(token);
}

std::optional<std::string> mail_link(ConsoleDeps& deps, const std::string& to, const std::string& subject,
                                     const std::string& what, const std::string& link, std::chrono::hours life) {
  return deps.mailer.send({to, subject,
                           what + "\n\n" + link + "\n\nThe link works once, for " + std::to_string(life.count()) +
                               " hours. If you did not ask for this, ignore this mail.\n"});
}

// The account a sign-in or reset names: a user name, or a user's email address.
std::string account_of(const ConsoleDeps& deps, const std::string& given) {
  if (given.find('@') == std::string::npos) return given;
  return deps.identities.user_with_email(given).value_or(given);
}

// What revoke_keys_where did: the ids of the keys it picked (revoked now, or already), or why it stopped.
struct Revoked {
  std::vector<std::string> ids;
  std::optional<std::string> error;
};

// Revokes each key of `user` that `picked` chooses; a key revoked already keeps its time.
Revoked revoke_keys_where(ConsoleDeps& deps, const std::string& user,
                          const std::function<bool(const usage::ApiKey&)>& picked) {
  Revoked revoked;
  const auto keys = deps.identities.keys_of(user);
  const auto* list = std::get_if<std::vector<usage::ApiKey>>(&keys);
  if (!list) return revoked;
  for (const auto& key : *list) {
    if (!picked(key)) continue;
    revoked.ids.push_back(key.id);
    if (key.revoked_ms) continue;
    if (auto why = deps.identities.revoke_key(key.id)) {
      revoked.error = why;
      break;
    }
  }
  return revoked;
}

// The session a key was made for by the console, or "" for a key of the user's own.
std::string_view session_of_key(const usage::ApiKey& key) {
  return key.label.starts_with(kSessionKeyLabel) ? std::string_view(key.label).substr(kSessionKeyLabel.size())
                                                 : std::string_view();
}

// Revokes the API keys the console made for `user`'s sessions that are no longer open: called after
// sessions close, and hourly for those that ran out. While the sessions' store does not answer, none is
// taken for closed: the keys wait for the next run.
void revoke_session_keys(ConsoleDeps& deps, const std::string& user) {
  try {
    revoke_keys_where(deps, user, [&](const usage::ApiKey& key) {
      const std::string_view sid = session_of_key(key);
      return !key.revoked_ms && !sid.empty() && !deps.sessions.is_open(user, std::string(sid));
    });
  } catch (const SessionsUnavailable&) {
    // Not known to be closed: revoked at the next run.
  }
}

ConsoleAnswer too_many(std::chrono::milliseconds retry_after, const std::string& what) {
  const auto seconds = std::chrono::ceil<std::chrono::seconds>(retry_after).count();
  ConsoleAnswer answer = error(429, what + "; retry in " + std::to_string(seconds) + " s");
  answer.headers.emplace_back("Retry-After", std::to_string(seconds));
  return answer;
}

ConsoleAnswer sign_up(ConsoleDeps& deps, const ConsoleRequest& request) {
  if (!deps.signup) return error(403, "this node takes no sign-ups: ask its operator for an invitation");
  if (!mails_links(deps)) return error(503, "sign-up needs email to confirm the address, and this node sends none");
  const auto body = json::parse(request.body, nullptr, false);
  const auto name = string_field(body, "user");
  const auto email = string_field(body, "email");
  const auto password = string_field(body, "password");
  if (!name || !email || !password) {
    return error(400, "send {\"user\": NAME, \"email\": ADDRESS, \"password\": PASSWORD}");
  }
  if (!usage::Identities::is_valid_user_name(*name)) {
    return error(400, "a user name is 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or a digit");
  }
  if (email->empty() || email->size() > kMaxAccountText || email->find_first_of("<>,;\r\n \t") != std::string::npos ||
      email->find('@') == std::string::npos) {
    return error(400, "invalid email address");
  }
  if (auto problem = usage::password_problem(*password, *name)) return error(400, *problem);
  if (deps.identities.name_taken(*name)) return error(409, "the name " + *name + " is taken");
  if (deps.name_refusal) {
    if (auto refused = deps.name_refusal(*name)) return error(409, *refused);
  }
  if (!deps.guard.allow_mail(*name, request.network)) {
    return error(429, "too many sign-ups from this network; try again later");
  }
  // An address already on an account gets no second one; the answer is the same, so it tells nobody whose
  // address it is.
  const ConsoleAnswer sent = ok({{"verify", "sent"}}, 201);
  if (deps.identities.user_with_email(*email)) return sent;
  auto added = deps.identities.add_user(*name, *email, /*awaiting_verification=*/true);
  if (auto* why = std::get_if<std::string>(&added)) return error(400, *why);
  if (auto why = deps.identities.set_password(*name, *password)) return error(400, *why);
  const std::string token = deps.tokens.issue(*name, TokenPurpose::verify_email, kVerifyLinkLife, *email);
  if (auto why = mail_link(deps, *email, "Confirm your InferLlama account",
                           "Open this link to confirm your address and finish signing up as " + *name + ":",
                           console_link(deps, "verify", token), kVerifyLinkLife)) {
    return error(503, *why);
  }
  return sent;
}

ConsoleAnswer verify_email(ConsoleDeps& deps, const ConsoleRequest& request) {
  const auto body = json::parse(request.body, nullptr, false);
  const auto token = string_field(body, "token").value_or("");
  auto redeemed = deps.tokens.redeem(token, TokenPurpose::verify_email);
  if (!redeemed) return error(400, "this link is not valid (any more): ask for a new one");
  if (auto why = deps.identities.confirm_email(redeemed->user, redeemed->email)) return error(400, *why);
  return ok({{"user", shown_user(*deps.identities.user(redeemed->user))}});
}

ConsoleAnswer forgot(ConsoleDeps& deps, const ConsoleRequest& request) {
  if (!mails_links(deps)) {
    return error(503, "this node sends no email: ask its operator for a reset link (inferllama user reset-link)");
  }
  const auto body = json::parse(request.body, nullptr, false);
  const auto given = string_field(body, "user");
  if (!given || given->size() > kMaxAccountText) return error(400, "send {\"user\": NAME or EMAIL}");
  const std::string name = account_of(deps, *given);
  // The same answer whether or not the account exists, has a confirmed address, or was mailed already.
  const ConsoleAnswer sent = ok({{"sent", true}});
  const auto user = deps.identities.user(name);
  if (!user || !user->active() || !user->email_verified || user->email.empty()) return sent;
  if (!deps.guard.allow_mail(name, request.network)) return sent;
  const std::string token = deps.tokens.issue(name, TokenPurpose::reset_password, kResetLinkLife, user->email);
  mail_link(deps, user->email, "Reset your InferLlama password",
            "Someone (hopefully you) asked to reset the password of " + name + ". Open this link to choose a new one:",
            console_link(deps, "reset", token), kResetLinkLife);
  return sent;
}

ConsoleAnswer reset(ConsoleDeps& deps, const ConsoleRequest& request) {
  const auto body = json::parse(request.body, nullptr, false);
  const auto token = string_field(body, "token").value_or("");
  const auto password = string_field(body, "password");
  if (!password) return error(400, "send {\"token\": TOKEN, \"password\": PASSWORD}");
  // A reset link or an invitation; the password is checked before the link is spent.
  TokenPurpose purpose = TokenPurpose::reset_password;
  auto found = deps.tokens.find(token, purpose);
  if (!found) found = deps.tokens.find(token, purpose = TokenPurpose::invite);
  if (!found) return error(400, "this link is not valid (any more): ask for a new one");
  if (auto problem = usage::password_problem(*password, found->user)) return error(400, *problem);
  // Every session ends before the password changes: a store that cannot close them leaves the link unspent.
  end_sessions(deps, found->user);
  auto redeemed = deps.tokens.redeem(token, purpose);
  if (!redeemed) return error(400, "this link is not valid (any more): ask for a new one");
  if (auto why = deps.identities.set_password(redeemed->user, *password)) return error(400, *why);
  usage::audit(deps.audit, redeemed->user, AuditEvent::password_changed, Actor::user, request.network);
  // A link that was mailed reached that address: it is confirmed (a link an admin handed on proves nothing).
  if (const auto user = deps.identities.user(redeemed->user);
      user && !redeemed->email.empty() && redeemed->email == user->email) {
    deps.identities.confirm_email(redeemed->user, "");
  }
  return ok({{"user", shown_user(*deps.identities.user(redeemed->user))}});
}

ConsoleAnswer sign_in(ConsoleDeps& deps, const ConsoleRequest& request) {
  const auto body = json::parse(request.body, nullptr, false);
  const auto given = string_field(body, "user");
  const auto password = string_field(body, "password");
  if (!given || !password) return error(400, "send {\"user\": NAME, \"password\": PASSWORD}");
  // Names and addresses are short; a longer one is nobody's, and never becomes a key of the guard's tables.
  if (given->size() > kMaxAccountText) return error(401, "wrong user name or password");
  const auto name = std::optional(account_of(deps, *given));
  std::chrono::milliseconds retry_after{0};
  if (deps.guard.blocked(*name, request.network, retry_after)) {
    return too_many(retry_after, "too many failed sign-ins for this account or network");
  }
  if (!deps.identities.check_password(*name, *password)) {
    deps.guard.failed(*name, request.network);
    if (deps.identities.has_user(*name))
      usage::audit(deps.audit, *name, AuditEvent::sign_in_failed, Actor::user, request.network);
    return error(401, "wrong user name or password");
  }
  // Told only to whoever knows the password.
  if (deps.identities.user(*name)->awaiting_verification) {
    return error(403, "confirm your email address first: open the link we sent to it");
  }
  const IssuedSession issued = deps.sessions.open(*name);
  revoke_session_keys(deps, *name);  // of a session the new one pushed out
  usage::audit(deps.audit, *name, AuditEvent::signed_in, Actor::user, request.network);
  return signed_in(deps, issued);
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
    revoke_session_keys(deps, who.user);
    return signed_out(deps, ok({{"signed_out", true}}));
  }
  if (path == "password") {
    if (method != "POST") return error(405, "use POST");
    const auto body = json::parse(request.body, nullptr, false);
    const auto current = string_field(body, "current");
    const auto replacement = string_field(body, "new");
    if (!current || !replacement) return error(400, "send {\"current\": PASSWORD, \"new\": PASSWORD}");
    std::chrono::milliseconds retry_after{0};
    if (deps.guard.blocked(who.user, request.network, retry_after)) {
      return too_many(retry_after, "too many wrong passwords for this account or network");
    }
    if (!deps.identities.check_password(who.user, *current)) {
      deps.guard.failed(who.user, request.network);
      return error(403, "the current password is wrong");
    }
    if (auto problem = usage::password_problem(*replacement, who.user)) return error(400, *problem);
    // The other sessions end before the password changes: a store that cannot close them changes nothing.
    deps.sessions.close_all(who.user, who.sid);
    revoke_session_keys(deps, who.user);
    if (auto why = deps.identities.set_password(who.user, *replacement)) return error(400, *why);
    usage::audit(deps.audit, who.user, AuditEvent::password_changed, Actor::user, request.network);
    return ok({{"changed", true}});
  }
  if (path == "profile") {
    if (method != "POST") return error(405, "use POST");
    const auto body = json::parse(request.body, nullptr, false);
    const auto email = string_field(body, "email");
    if (!email) return error(400, "send {\"email\": ADDRESS}");
    // An address on another account gets the answer any address gets, and no mail: it tells nobody whose it is.
    const auto owner = deps.identities.user_with_email(*email);
    const bool taken = owner && *owner != who.user;
    if (!mails_links(deps)) {
      if (taken) return error(409, "another account has this address");  // the admin's node: no mail, no secret
      if (auto why = deps.identities.set_email(who.user, *email, /*verified=*/false)) return error(400, *why);
      return ok({{"user", usage::user_json(*deps.identities.user(who.user))}});
    }
    // The address changes once its owner opens the link sent to it.
    if (!deps.guard.allow_mail(who.user, request.network)) return error(429, "too many mails; try again later");
    if (taken) return ok({{"verify", "sent"}});
    const std::string token = deps.tokens.issue(who.user, TokenPurpose::verify_email, kVerifyLinkLife, *email);
    if (auto why = mail_link(deps, *email, "Confirm your new InferLlama address",
                             "Open this link to make this the address of " + who.user + ":",
                             console_link(deps, "verify", token), kVerifyLinkLife)) {
      return error(503, *why);
    }
    return ok({{"verify", "sent"}});
  }
  if (path == "passkey") {
    if (method != "POST") return error(405, "use POST");
    if (auto why = deps.identities.new_passkey(who.user)) return error(400, *why);
    return ok({{"user", usage::user_json(*deps.identities.user(who.user))}});
  }
  if (path == "session-key") {
    if (method != "POST") return error(405, "use POST");
    // One key per session: a reloaded page's new key replaces the old one.
    revoke_keys_where(deps, who.user, [&](const usage::ApiKey& key) { return session_of_key(key) == who.sid; });
    auto created = deps.identities.create_key(who.user, std::string(kSessionKeyLabel) + who.sid);
    if (auto* why = std::get_if<std::string>(&created)) return error(400, *why);
    return ok({{"key", std::get<usage::CreatedKey>(created).secret}}, 201);
  }
  if (path.starts_with("operator/")) {
    const auto user = deps.identities.user(who.user);
    if (!user || !user->admin) return error(403, "the operator pages are for the node's admins");
    auto answer = answer_operator(deps, method, path.substr(9), request.body);
    return answer ? std::move(*answer) : error(404, "no such operator route");
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
    const Revoked revoked = revoke_keys_where(deps, who.user, [&](const usage::ApiKey& key) { return key.id == id; });
    if (revoked.ids.empty()) return error(404, "no such key of yours");
    if (revoked.error) return error(400, *revoked.error);
    usage::audit(deps.audit, who.user, AuditEvent::key_revoked, Actor::user, request.network, id);
    const auto keys = deps.identities.keys_of(who.user);
    for (const auto& key : std::get<std::vector<usage::ApiKey>>(keys)) {
      if (key.id == id) return ok(usage::key_json(key));
    }
    return error(404, "no such key of yours");
  }
  if (path == "usage") {
    if (!get) return error(405, "use GET");
    usage::Accounts accounts{deps.identities, deps.usage, deps.token_size};
    auto answer = usage::answer_usage(accounts, who.user, request.query);
    return {answer.status, answer.content_type, std::move(answer.body), {}};
  }
  if (path == "export") return export_own_account(deps, request, who);
  if (path == "rename") {
    auto renamed = rename_own_account(deps, request, who);
    if (renamed.status != 200) return renamed;
    // The sessions of the old name are closed: this browser goes on under the new one.
    const auto user = json::parse(renamed.body)["user"]["name"].get<std::string>();
    ConsoleAnswer answer = signed_in(deps, deps.sessions.open(user));
    revoke_session_keys(deps, user);
    return answer;
  }
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

namespace {

ConsoleAnswer route_console(ConsoleDeps& deps, const ConsoleRequest& request) {
  if (request.path == "config") {
    if (request.method != "GET" && request.method != "HEAD") return error(405, "use GET");
    return ok({{"signup", deps.signup && mails_links(deps)}, {"mail", mails_links(deps)}});
  }
  // A form posted from another site cannot send application/json (it would need a CORS preflight the node
  // never grants): no sign-in, sign-out or refresh forged across sites.
  if (request.method != "GET" && request.method != "HEAD" && !request.content_type.starts_with("application/json")) {
    return error(415, "send the body as application/json");
  }
  using Public = ConsoleAnswer (*)(ConsoleDeps&, const ConsoleRequest&);
  static constexpr std::pair<std::string_view, Public> kPublic[] = {
      {"sign-in", sign_in}, {"sign-up", sign_up}, {"verify-email", verify_email}, {"forgot", forgot}, {"reset", reset}};
  for (const auto& [name, answer] : kPublic) {
    if (request.path != name) continue;
    if (request.method != "POST") return error(405, "use POST");
    return answer(deps, request);
  }
  const Sessions::Csrf csrf{request.csrf_header, request.csrf_cookie};
  if (request.path == "refresh") {
    if (request.method != "POST") return error(405, "use POST");
    if (request.csrf_header.empty() || request.csrf_header != request.csrf_cookie) {
      return error(403, "missing or wrong X-CSRF-Token: echo the inferllama_csrf cookie in it");
    }
    auto issued = deps.sessions.refresh(request.session_cookie, csrf);
    if (auto* why = std::get_if<std::string>(&issued)) {
      // A refresh that closed a session (a reused token) takes its session keys along at once.
      if (auto user = deps.sessions.user_of(request.session_cookie)) revoke_session_keys(deps, *user);
      return signed_out(deps, error(401, *why));
    }
    const auto& renewed = std::get<IssuedSession>(issued);
    const auto user = deps.identities.user(renewed.user);
    if (!user) return error(401, "no account named " + renewed.user + " on this node");
    if (!user->active()) {
      end_sessions(deps, renewed.user);
      return signed_out(deps, error(401, "this account is disabled"));
    }
    return signed_in(deps, renewed);
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
  // A session shared through Redis may name a user another node has and this one has not: no reason to end it.
  if (!user) return error(401, "no account named " + who->user + " on this node");
  if (!user->active()) {
    end_sessions(deps, who->user);
    return signed_out(deps, error(401, "this account is disabled"));
  }
  return for_user(deps, request, *who);
}

}  // namespace

ConsoleAnswer answer_console(ConsoleDeps& deps, const ConsoleRequest& request) {
  try {
    return route_console(deps, request);
  } catch (const SessionsUnavailable& e) {
    // Nobody is signed in or out by a store that did not answer: the page keeps its cookies and tries again.
    ConsoleAnswer answer = error(503, e.what());
    answer.headers.emplace_back("Retry-After", "5");
    return answer;
  }
}

void end_sessions(ConsoleDeps& deps, const std::string& user) {
  deps.sessions.close_all(user);
  revoke_session_keys(deps, user);
}

void revoke_ended_session_keys(ConsoleDeps& deps) {
  for (const auto& user : deps.identities.users()) revoke_session_keys(deps, user.name);
}

std::optional<ConsoleAnswer> answer_operator(ConsoleDeps& deps, std::string_view method, std::string_view path,
                                             std::string_view body) {
  if (path == "overview") {
    if (method != "GET") return error(405, "use GET");
    json overview = json::parse(deps.operator_overview ? deps.operator_overview() : "{}", nullptr, false);
    if (!overview.is_object()) overview = json::object();
    json users = json::array();
    for (const auto& user : deps.identities.users()) users.push_back(shown_user(user));
    overview["users"] = users;
    return ok(overview);
  }
  if (path == "invite") {
    if (method != "POST") return error(405, "use POST");
    const auto given = json::parse(body, nullptr, false);
    const auto name = string_field(given, "name");
    const auto email = string_field(given, "email");
    if (!name || !email || email->empty()) return error(400, "send {\"name\": NAME, \"email\": ADDRESS}");
    if (deps.identities.name_taken(*name)) return error(409, "the name " + *name + " is taken");
    if (deps.name_refusal) {
      if (auto refused = deps.name_refusal(*name)) return error(409, *refused);
    }
    auto added = deps.identities.add_user(*name, *email);
    if (auto* why = std::get_if<std::string>(&added)) return error(400, *why);
    // The address the link is mailed to, if it is: opening it confirms that address.
    const bool mailing = mails_links(deps);
    const std::string token = deps.tokens.issue(*name, TokenPurpose::invite, kInviteLinkLife, mailing ? *email : "");
    const std::string link = console_link(deps, "reset", token) + "&invite=1";
    json answer = {{"user", shown_user(std::get<usage::User>(added))}};
    if (mailing && !mail_link(deps, *email, "You are invited to InferLlama",
                              "You have an account on this InferLlama node as " + *name +
                                  ". Open this link to choose your password:",
                              link, kInviteLinkLife)) {
      answer["sent"] = true;
    } else {
      answer["url"] = link;
    }
    return ok(answer, 201);
  }
  constexpr std::string_view kUsers = "users/";
  if (!path.starts_with(kUsers)) return std::nullopt;
  const auto slash = path.find('/', kUsers.size());
  if (slash == std::string_view::npos) return std::nullopt;
  const std::string name(path.substr(kUsers.size(), slash - kUsers.size()));
  const std::string_view action = path.substr(slash + 1);
  if (action != "reset-link" && action != "disable" && action != "enable" && action != "restore") return std::nullopt;
  if (method != "POST") return error(405, "use POST");
  const auto user = deps.identities.user(name);
  if (!user) return error(404, "no user named \"" + name + "\"");
  if (action == "restore") {
    if (!deps.account_data) return error(404, "this node keeps no account data");
    if (auto why = restore_account(*deps.account_data, name)) return error(409, *why);
    return ok(shown_user(*deps.identities.user(name)));
  }
  if (action == "reset-link") {
    const bool mailing = mails_links(deps) && user->email_verified;
    const std::string token =
        deps.tokens.issue(name, TokenPurpose::reset_password, std::chrono::hours(24), mailing ? user->email : "");
    const std::string link = console_link(deps, "reset", token);
    if (mailing && !mail_link(deps, user->email, "Reset your InferLlama password",
                              "An operator of this node sent you a link to choose a new password for " + name + ":",
                              link, std::chrono::hours(24))) {
      return ok({{"sent", true}});
    }
    return ok({{"url", link}});
  }
  const bool disable = action == "disable";
  if (auto why = disable ? deps.identities.disable_user(name) : deps.identities.enable_user(name)) {
    return error(400, *why);
  }
  if (disable) end_sessions(deps, name);
  return ok(shown_user(*deps.identities.user(name)));
}

}  // namespace inferllama::console
