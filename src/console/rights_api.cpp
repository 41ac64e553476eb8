#include "console/rights_api.hpp"

#include <exception>
#include <nlohmann/json.hpp>

#include "console/account_deletion.hpp"
#include "console/account_rename.hpp"
#include "console/data_export.hpp"
#include "usage/usage_json.hpp"
#include "util/url.hpp"

namespace inferllama::console {
namespace {

using nlohmann::json;

constexpr int kMaxPurgeDays = 30;  // the grace itself: an operator may shorten it, never lengthen it

// Names from a request path may hold any bytes: never let one stop the answer from being written.
std::string dump(const json& body, int indent = -1) {
  return body.dump(indent, ' ', false, json::error_handler_t::replace);
}

usage::ApiAnswer answer(unsigned status, const json& body) {
  return {status, "application/json", dump(body)};
}

usage::ApiAnswer refused(unsigned status, const std::string& message) {
  return answer(status, {{"error", message}});
}

ConsoleAnswer console_error(unsigned status, const std::string& message) {
  return {status, "application/json", dump({{"error", message}}), {}};
}

std::string no_user(const std::string& name) {
  return "no user named \"" + name + "\"";
}

json deleted_user_json(const usage::User& user) {
  json body = usage::user_json(user);
  body["purge_after"] = usage::iso8601_utc(purge_due_ms(user));
  return body;
}

usage::ApiAnswer export_for_admin(AccountData& data, const std::string& name) {
  if (!data.identities.user(name)) return refused(404, no_user(name));
  data.audit.record(name, usage::AuditEvent::exported, usage::Actor::admin);
  auto exported = export_account(data, name);
  if (auto* why = std::get_if<std::string>(&exported)) return refused(404, *why);
  return {200, "application/json", dump(std::get<json>(exported), 2)};
}

usage::ApiAnswer delete_for_admin(AccountData& data, const std::string& name) {
  if (!data.identities.user(name)) return refused(404, no_user(name));
  if (auto error = delete_account(data, name, usage::Actor::admin)) return refused(500, *error);
  return answer(200, deleted_user_json(*data.identities.user(name)));
}

usage::ApiAnswer restore_for_admin(AccountData& data, const std::string& name) {
  const auto user = data.identities.user(name);
  if (!user) return refused(404, no_user(name));
  if (!user->deleted_ms) return refused(409, "user " + name + " is not deleted");
  if (auto error = restore_account(data, name)) return refused(409, *error);
  return answer(200, usage::user_json(*data.identities.user(name)));
}

usage::ApiAnswer rename_for_admin(AccountData& data, const std::string& name, std::string_view body) {
  const auto given = json::parse(body, nullptr, false);
  if (!given.is_object() || !given.contains("name") || !given["name"].is_string()) {
    return refused(400, "send {\"name\": NEW_NAME}");
  }
  const std::string to = given["name"].get<std::string>();
  if (auto refusal = rename_account(data, name, to, usage::Actor::admin))
    return refused(refusal->status, refusal->message);
  return answer(200, usage::user_json(*data.identities.user(to)));
}

usage::ApiAnswer purge_now(AccountData& data, std::string_view body) {
  if (!data.hosting) return refused(501, "accounts are purged by a running node: ask it through its admin API");
  const std::string expected =
      "expected a JSON object {\"older_than_days\"?: 0.." + std::to_string(kMaxPurgeDays) + ", \"user\"?: NAME}";
  const auto given = json::parse(body.empty() ? std::string_view("{}") : body, nullptr, false);
  if (!given.is_object()) return refused(400, expected);
  int days = kMaxPurgeDays;
  std::optional<std::string> only;
  for (const auto& [field, value] : given.items()) {
    if (field == "older_than_days" && value.is_number_integer()) {
      days = value.get<int>();
    } else if (field == "user" && value.is_string()) {
      only = value.get<std::string>();
    } else {
      return refused(400, "\"" + field + "\" is not one of the fields, or not of its type; " + expected);
    }
  }
  if (days < 0 || days > kMaxPurgeDays) {
    return refused(
        400, "older_than_days is 0.." + std::to_string(kMaxPurgeDays) + ": the grace may be shortened, not lengthened");
  }
  return answer(200, {{"purged", purge_deleted_accounts(data, std::chrono::days(days), only)}});
}

std::optional<usage::ApiAnswer> route(AccountData& data, std::string_view method, std::string_view path,
                                      std::string_view body) {
  if (path == "purge") {
    if (method != "POST") return refused(405, "use POST");
    return purge_now(data, body);
  }
  if (!path.starts_with("users/")) return std::nullopt;
  const auto segments = url::decoded_segments(path);
  if (!segments) return std::nullopt;  // the accounts API says what is malformed
  const auto& s = *segments;
  if (s.size() == 2) {
    if (method != "DELETE") return refused(405, "use DELETE");
    return delete_for_admin(data, s[1]);
  }
  if (s.size() == 3 && s[2] == "export") {
    if (method != "GET") return refused(405, "use GET");
    return export_for_admin(data, s[1]);
  }
  if (s.size() == 3 && s[2] == "restore") {
    if (method != "POST") return refused(405, "use POST");
    return restore_for_admin(data, s[1]);
  }
  if (s.size() == 3 && s[2] == "rename") {
    if (method != "POST") return refused(405, "use POST");
    return rename_for_admin(data, s[1], body);
  }
  return std::nullopt;
}

}  // namespace

std::optional<usage::ApiAnswer> answer_rights_admin(AccountData& data, std::string_view method, std::string_view path,
                                                    std::string_view body) {
  try {
    return route(data, method, path, body);
  } catch (const std::exception& e) {  // the records could not be read or written
    return refused(500, e.what());
  }
}

ConsoleAnswer export_own_account(ConsoleDeps& deps, const ConsoleRequest& request, const SignedIn& who) {
  if (request.method != "GET" && request.method != "HEAD") return console_error(405, "use GET");
  if (!deps.account_data) return console_error(404, "this node keeps no account data");
  try {
    deps.account_data->audit.record(who.user, usage::AuditEvent::exported, usage::Actor::user, request.network);
    auto exported = export_account(*deps.account_data, who.user);
    if (auto* why = std::get_if<std::string>(&exported)) return console_error(401, *why);
    // User names are [A-Za-z0-9._-]: safe in the header as they are.
    return {200,
            "application/json",
            dump(std::get<json>(exported), 2),
            {{"Content-Disposition", "attachment; filename=\"inferllama-export-" + who.user + ".json\""}}};
  } catch (const std::exception& e) {
    return console_error(500, e.what());
  }
}

ConsoleAnswer rename_own_account(ConsoleDeps& deps, const ConsoleRequest& request, const SignedIn& who) {
  if (request.method != "POST") return console_error(405, "use POST");
  if (!deps.account_data) return console_error(404, "this node keeps no account data");
  const auto body = json::parse(request.body, nullptr, false);
  if (!body.is_object() || !body.contains("name") || !body["name"].is_string() || !body.contains("password") ||
      !body["password"].is_string()) {
    return console_error(400, "send {\"name\": NEW_NAME, \"password\": PASSWORD}: renaming asks for the password");
  }
  const std::string to = body["name"].get<std::string>();
  const std::string password = body["password"].get<std::string>();
  // Every repo of the user's changes its name: a browser left open is not enough.
  std::chrono::milliseconds retry_after{0};
  if (deps.guard.blocked(who.user, request.network, retry_after)) {
    return console_error(429, "too many wrong passwords for this account or network; try again later");
  }
  if (!deps.identities.check_password(who.user, password)) {
    deps.guard.failed(who.user, request.network);
    return console_error(403, "the password is wrong");
  }
  // The password policy keeps a password from being its user's name.
  if (password == to) return console_error(400, "the new name may not be your password");
  try {
    if (auto refusal = rename_account(*deps.account_data, who.user, to, usage::Actor::user, request.network)) {
      return console_error(refusal->status, refusal->message);
    }
  } catch (const std::exception& e) {
    return console_error(500, e.what());
  }
  return {200, "application/json", dump({{"user", usage::user_json(*deps.identities.user(to))}}), {}};
}

ConsoleAnswer delete_own_account(ConsoleDeps& deps, const ConsoleRequest& request, const SignedIn& who) {
  if (request.method != "POST") return console_error(405, "use POST");
  if (!deps.account_data) return console_error(404, "this node keeps no account data");
  const auto body = json::parse(request.body, nullptr, false);
  if (!body.is_object() || !body.contains("password") || !body["password"].is_string()) {
    return console_error(400, "send {\"password\": PASSWORD}: deleting the account asks for it again");
  }
  // A session alone (a browser left open) must not be enough to erase an account.
  if (!deps.identities.check_password(who.user, body["password"].get<std::string>())) {
    deps.guard.failed(who.user, request.network);
    return console_error(403, "the password is wrong");
  }
  try {
    if (auto error = delete_account(*deps.account_data, who.user, usage::Actor::user, request.network)) {
      return console_error(500, *error);
    }
    const auto user = deps.identities.user(who.user);
    return {200,
            "application/json",
            dump({{"deleted", true}, {"purge_after", user ? usage::iso8601_utc(purge_due_ms(*user)) : std::string()}}),
            {}};
  } catch (const std::exception& e) {
    return console_error(500, e.what());
  }
}

}  // namespace inferllama::console
