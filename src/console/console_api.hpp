// The console's JSON API under /api/inferllama/console/, without HTTP: the server reads the cookies and
// the CSRF header, calls this on its blocking pool (passwords take ~100 ms of Argon2id, changes are synced
// writes), and writes the answer. Cookies authenticate these routes only, never the Hub's API; API keys
// stay what machines use. Every state-changing request needs X-CSRF-Token equal to the inferllama_csrf
// cookie and to the session's own token.
//
//   POST sign-in {user, password}      200 {user, csrf} and both cookies; 401 for a wrong user name or
//                                      password (one message for both), 429 after too many
//   POST sign-out                      200, both cookies cleared, the session closed
//   POST refresh                       200 {user, csrf} and new cookies: the JWT and refresh token rotate
//   GET  me                            {user, sessions}
//   POST password {current, new}       200; the user's other sessions close
//   GET  keys                          {keys}: the user's own (no secrets)
//   POST keys {label?}                 201 the key with its secret ("key"), shown this once
//   POST keys/{id}/revoke              the key (the user's own only)
//   GET  usage?since=&format=          the user's own usage rows, as GET /api/usage answers them
//   GET  export, POST delete-account   the data rights: console/rights_api.hpp
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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
  std::uint64_t token_size;
  bool secure_cookies = true;
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
  std::string network;  // the client's address (its /64 for IPv6), for the sign-in guard
};

struct ConsoleAnswer {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // Set-Cookie (repeated), Retry-After
};

ConsoleAnswer answer_console(ConsoleDeps& deps, const ConsoleRequest& request);

// The value of cookie `name` in a Cookie header, or "".
std::string_view cookie_value(std::string_view header, std::string_view name);

}  // namespace inferllama::console
