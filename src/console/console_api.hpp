// The console's JSON API under /api/inferllama/console/, without HTTP: the server reads the cookies and
// the CSRF header, calls this on its blocking pool (passwords take ~100 ms of Argon2id, changes are synced
// writes), and writes the answer. Cookies authenticate these routes only, never the Hub's API; API keys
// stay what machines use. Every state-changing request needs X-CSRF-Token equal to the inferllama_csrf
// cookie and to the session's own token.
//
//   GET  config                        {signup, mail}: what the sign-in page offers
//   POST sign-in {user, password}      200 {user, csrf} and both cookies; 401 for a wrong user name (or
//                                      email) or password, one message for both; 429 after too many; 403
//                                      for a sign-up whose address is not confirmed yet
//   POST sign-up {user, email, password}   201; mails a link to confirm the address (signup on, mail set)
//   POST verify-email {token}          {user}: the address of the link is confirmed
//   POST forgot {user}                 {sent}: a reset link to the account's confirmed address, if any
//                                      (the same answer either way); 503 when the node sends no mail
//   POST reset {token, password}       {user}: a reset or invitation link sets the password; every
//                                      session of the user ends
//   POST rename {name, password}       {user} and new cookies: the user's name changes (rights_api.hpp)
//   POST sign-out                      200, both cookies cleared, the session closed
//   POST refresh                       200 {user, csrf} and new cookies: the JWT and refresh token rotate
//   GET  me                            {user, sessions}
//   POST password {current, new}       200; the user's other sessions close
//   POST profile {email}               {verify: "sent"} (the address changes once its link is opened), or
//                                      {user} when the node sends no mail
//   POST passkey                       {user} with a new passkey
//   POST session-key                   {key}: an API key for this session's browser (the console's model
//                                      pages use the Hub API with it); revoked when the session ends
//   GET  keys                          {keys}: the user's own (no secrets)
//   POST keys {label?}                 201 the key with its secret ("key"), shown this once
//   POST keys/{id}/revoke              the key (the user's own only)
//   GET  usage?since=&format=          the user's own usage rows, as GET /api/usage answers them
//   GET  export, POST delete-account   the data rights: console/rights_api.hpp
//   operator/...                       an admin user's: see answer_operator
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "console/mail_tokens.hpp"
#include "console/mailer.hpp"
#include "console/sessions.hpp"
#include "console/sign_in_guard.hpp"
#include "usage/audit_log.hpp"
#include "usage/identities.hpp"
#include "usage/usage_log.hpp"

namespace inferllama::console {

struct AccountData;

inline constexpr std::string_view kSessionCookie = "inferllama_session";
inline constexpr std::string_view kCsrfCookie = "inferllama_csrf";
inline constexpr std::string_view kCsrfHeader = "X-CSRF-Token";

struct ConsoleDeps {
  usage::Identities& identities;
  usage::UsageLog& usage;
  Sessions& sessions;
  SignInGuard& guard;
  MailTokens& tokens;
  Mailer& mailer;
  std::uint64_t token_size;
  bool secure_cookies = true;
  bool signup = false;
  std::string public_url;  // mailed links start with it; without it the node mails no link
  // Why `name` may not be a new user's (an organisation's, a Hub namespace the cache holds), or nullopt.
  std::function<std::optional<std::string>(std::string_view name)> name_refusal = {};
  // The operator pages' view of the node (cache, swarms, mirrors, cluster, health) as JSON.
  std::function<std::string()> operator_overview = {};
  usage::AuditLog* audit = nullptr;     // sign-ins and their failures, password and key changes
  AccountData* account_data = nullptr;  // export and deletion (rights_api.hpp)
};

struct ConsoleRequest {
  std::string_view method;
  std::string_view path;  // after /api/inferllama/console/
  std::string_view query;
  std::string_view body;
  std::string_view session_cookie;  // "" when absent
  std::string_view csrf_cookie;
  std::string_view csrf_header;
  std::string_view content_type;  // a change must be application/json
  std::string network;            // the client's address (its /64 for IPv6), for the sign-in guard
};

struct ConsoleAnswer {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // Set-Cookie (repeated), Retry-After
};

// A store of sessions that does not answer (Redis down) is a 503 with Retry-After: nobody is signed in or out.
ConsoleAnswer answer_console(ConsoleDeps& deps, const ConsoleRequest& request);

// Operator actions, for an admin user in the console (operator/...) and for the admin API (the same paths
// under /api/inferllama/):
//   GET  overview                      the node at a glance (ConsoleDeps::operator_overview) and its users
//   POST users/{name}/reset-link       {sent: true} when mailed to the user's confirmed address, else {url}
//   POST users/{name}/{disable,enable} the user (a disabled user's sessions end)
//   POST invite {name, email}          201 {user, sent: true} or {user, url}: the link sets a password
// nullopt when `path` is none of these.
std::optional<ConsoleAnswer> answer_operator(ConsoleDeps& deps, std::string_view method, std::string_view path,
                                             std::string_view body);

// Revokes the console's session keys of sessions that ended (run hourly, after Sessions::expire).
void revoke_ended_session_keys(ConsoleDeps& deps);
// Every console session of `user` ends now, with its session keys: the admin disabled them or set their
// password. Throws SessionsUnavailable when the sessions' store does not answer.
void end_sessions(ConsoleDeps& deps, const std::string& user);

// The value of cookie `name` in a Cookie header, or "".
std::string_view cookie_value(std::string_view header, std::string_view name);

}  // namespace inferllama::console
