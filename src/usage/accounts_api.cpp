#include "usage/accounts_api.hpp"

#include <algorithm>
#include <exception>
#include <initializer_list>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>
#include <variant>
#include <vector>

#include "usage/usage_json.hpp"
#include "util/url.hpp"

namespace inferllama::usage {
namespace {

using Json = nlohmann::json;

ApiAnswer json_answer(unsigned status, const Json& body) {
  // Names from a request path may hold any bytes: never let one stop the answer from being written.
  return {status, "application/json", body.dump(-1, ' ', false, Json::error_handler_t::replace)};
}

ApiAnswer error(unsigned status, const std::string& message) {
  return json_answer(status, {{"error", message}});
}

ApiAnswer wrong_method(std::string_view allowed) {
  return error(405, "use " + std::string(allowed));
}

// The query's parameters, decoded. A malformed escape or a parameter given twice is an error: a second
// `user` must not be read one way here and another way by whatever checked the first.
std::variant<std::map<std::string, std::string>, std::string> parse_query(std::string_view query) {
  std::map<std::string, std::string> params;
  auto pairs = url::parse_query_strict(query);
  if (!pairs) return "malformed percent-escape in the query";
  for (auto& [name, value] : *pairs) {
    if (!params.emplace(std::move(name), std::move(value)).second) return "the query gives a parameter twice";
  }
  return params;
}

// A JSON body's fields: strings, and flags (true or false).
struct Fields {
  std::map<std::string, std::string> strings;
  std::map<std::string, bool> flags;
};

// A JSON body of string fields, each one of `allowed`, those of `required` present, and of flags, each
// one of `flags`.
std::variant<Fields, std::string> body_fields(std::string_view body, std::initializer_list<std::string_view> allowed,
                                              std::initializer_list<std::string_view> required,
                                              std::initializer_list<std::string_view> flags = {}) {
  std::string expected = "expected a JSON object {";
  for (auto field : allowed) {
    const bool optional = std::find(required.begin(), required.end(), field) == required.end();
    expected += (expected.ends_with('{') ? "\"" : ", \"") + std::string(field) + (optional ? "\"?" : "\"");
  }
  for (auto flag : flags) expected += ", \"" + std::string(flag) + "\"?";
  expected += flags.size() == 0 ? "} of strings" : "}, the flags true or false, the rest strings";
  const auto json = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return expected;
  Fields fields;
  for (const auto& [name, value] : json.items()) {
    if (std::find(flags.begin(), flags.end(), name) != flags.end()) {
      if (!value.is_boolean()) return "\"" + name + "\" is not true or false; " + expected;
      fields.flags[name] = value.get<bool>();
      continue;
    }
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
      return "unknown field \"" + name + "\"; " + expected;
    if (!value.is_string()) return "\"" + name + "\" is not a string; " + expected;
    fields.strings[name] = value.get<std::string>();
  }
  for (auto field : required) {
    if (!fields.strings.contains(std::string(field))) return "\"" + std::string(field) + "\" is missing; " + expected;
  }
  return fields;
}

std::string no_user(const std::string& name) {
  return "no user named \"" + name + "\"";
}

// Keys are found by id through their users: revocation is rare, and users are few.
std::optional<ApiKey> find_key(const Identities& identities, const std::string& id) {
  for (const auto& user : identities.users()) {
    auto keys = identities.keys_of(user.name);
    if (auto* list = std::get_if<std::vector<ApiKey>>(&keys)) {
      for (auto& key : *list) {
        if (key.id == id) return std::move(key);
      }
    }
  }
  return std::nullopt;
}

ApiAnswer list_users(const Identities& identities) {
  auto users = identities.users();
  std::sort(users.begin(), users.end(), [](const User& a, const User& b) { return a.name < b.name; });
  Json list = Json::array();
  for (const auto& user : users) list.push_back(user_json(user));
  return json_answer(200, {{"users", list}});
}

ApiAnswer add_user(const Accounts& accounts, std::string_view body) {
  auto fields = body_fields(body, {"name", "email"}, {"name"}, {"force"});
  if (auto* why = std::get_if<std::string>(&fields)) return error(400, *why);
  auto& given = std::get<Fields>(fields);
  const std::string& name = given.strings["name"];
  Identities& identities = accounts.identities;
  // A name taken by a user, or invalid, is refused as such below; any other is a namespace to check.
  if (accounts.namespace_refusal && Identities::is_valid_user_name(name) && !identities.user(name)) {
    if (auto refused = accounts.namespace_refusal(name, given.flags["force"])) return error(409, *refused);
  }
  auto added = identities.add_user(name, given.strings["email"]);
  if (auto* user = std::get_if<User>(&added)) return json_answer(201, user_json(*user));
  return error(identities.name_taken(name) ? 409 : 400, std::get<std::string>(added));
}

// disable, enable, passkey, hub-token, password, admin: a change to one user, answered with the user as it now is.
ApiAnswer change_user(Identities& identities, AuditLog* audit_log, const std::string& name, const std::string& change,
                      std::string_view body) {
  const auto user = identities.user(name);
  if (!user) return error(404, no_user(name));
  if (user->deleted_ms) return error(409, "user " + name + " is deleted; restore it first");
  std::optional<std::string> failed;
  if (change == "disable") {
    failed = identities.disable_user(name);
  } else if (change == "enable") {
    failed = identities.enable_user(name);
  } else if (change == "passkey") {
    failed = identities.new_passkey(name);
  } else if (change == "admin") {
    auto fields = body_fields(body, {}, {}, {"admin"});
    if (auto* why = std::get_if<std::string>(&fields)) return error(400, *why);
    failed = identities.set_admin(name, std::get<Fields>(fields).flags["admin"]);
  } else if (change == "password") {
    auto fields = body_fields(body, {"password"}, {"password"});
    if (auto* why = std::get_if<std::string>(&fields)) return error(400, *why);
    failed = identities.set_password(name, std::get<Fields>(fields).strings["password"]);
    if (!failed) audit(audit_log, name, AuditEvent::password_changed, Actor::admin);
  } else {
    auto fields = body_fields(body, {"token"}, {"token"});
    if (auto* why = std::get_if<std::string>(&fields)) return error(400, *why);
    failed = identities.set_hub_token(name, std::get<Fields>(fields).strings["token"]);
  }
  if (failed) return error(400, *failed);
  return json_answer(200, user_json(*identities.user(name)));
}

ApiAnswer create_key(Identities& identities, AuditLog* audit_log, std::string_view body) {
  auto fields = body_fields(body, {"user", "label"}, {"user"});
  if (auto* why = std::get_if<std::string>(&fields)) return error(400, *why);
  auto& given = std::get<Fields>(fields).strings;
  const std::string& name = given["user"];
  auto created = identities.create_key(name, given["label"]);
  if (auto* key = std::get_if<CreatedKey>(&created)) {
    audit(audit_log, name, AuditEvent::key_created, Actor::admin, {}, key->key.id);
    return json_answer(201, created_key_json(*key));
  }
  auto user = identities.user(name);
  if (!user) return error(404, no_user(name));
  return error(user->active() ? 400 : 409, std::get<std::string>(created));
}

ApiAnswer list_keys(const Identities& identities, std::string_view query) {
  auto params = parse_query(query);
  if (auto* why = std::get_if<std::string>(&params)) return error(400, *why);
  auto& given = std::get<0>(params);
  auto name = given.find("user");
  if (name == given.end() || name->second.empty()) return error(400, "say whose keys: ?user=NAME");
  if (!identities.user(name->second)) return error(404, no_user(name->second));
  auto keys = identities.keys_of(name->second);
  if (auto* why = std::get_if<std::string>(&keys)) return error(400, *why);
  auto& list = std::get<std::vector<ApiKey>>(keys);
  std::sort(list.begin(), list.end(), [](const ApiKey& a, const ApiKey& b) {
    return std::tie(a.created_ms, a.id) < std::tie(b.created_ms, b.id);
  });
  Json out = Json::array();
  for (const auto& key : list) out.push_back(key_json(key));
  return json_answer(200, {{"keys", out}});
}

ApiAnswer revoke_key(Identities& identities, AuditLog* audit_log, const std::string& id) {
  auto key = find_key(identities, id);
  if (!key) return error(404, "no key with id \"" + id + "\"");
  if (!key->revoked_ms) {
    if (auto failed = identities.revoke_key(id)) return error(400, *failed);
    audit(audit_log, key->user, AuditEvent::key_revoked, Actor::admin, {}, id);
    key = find_key(identities, id);
    if (!key) return error(404, "no key with id \"" + id + "\"");
  }
  return json_answer(200, key_json(*key));
}

std::optional<ApiAnswer> route(Accounts& accounts, std::string_view method, std::string_view path,
                               std::string_view query, std::string_view body) {
  if (!path.starts_with("users") && !path.starts_with("keys")) return std::nullopt;
  auto segments = url::decoded_segments(path);
  if (!segments) {
    if (path.starts_with("users/") || path.starts_with("keys/"))
      return error(400, "malformed percent-escape in the path");
    return std::nullopt;
  }
  const auto& s = *segments;
  Identities& identities = accounts.identities;
  if (s.size() == 1 && s[0] == "users") {
    if (method == "GET") return list_users(identities);
    if (method == "POST") return add_user(accounts, body);
    return wrong_method("GET or POST");
  }
  if (s.size() == 3 && s[0] == "users" &&
      (s[2] == "disable" || s[2] == "enable" || s[2] == "passkey" || s[2] == "hub-token" || s[2] == "password" ||
       s[2] == "admin")) {
    if (method != "POST") return wrong_method("POST");
    return change_user(identities, accounts.audit, s[1], s[2], body);
  }
  if (s.size() == 1 && s[0] == "keys") {
    if (method == "GET") return list_keys(identities, query);
    if (method == "POST") return create_key(identities, accounts.audit, body);
    return wrong_method("GET or POST");
  }
  if (s.size() == 3 && s[0] == "keys" && s[2] == "revoke") {
    if (method != "POST") return wrong_method("POST");
    return revoke_key(identities, accounts.audit, s[1]);
  }
  if (s.size() == 2 && s[0] == "keys") {
    if (method != "DELETE") return wrong_method("DELETE");
    return revoke_key(identities, accounts.audit, s[1]);
  }
  return std::nullopt;
}

}  // namespace

std::optional<ApiAnswer> answer_admin(Accounts& accounts, std::string_view method, std::string_view path,
                                      std::string_view query, std::string_view body) {
  try {
    return route(accounts, method, path, query, body);
  } catch (const std::exception& e) {  // the records could not be read or written
    return error(500, e.what());
  }
}

ApiAnswer answer_usage(Accounts& accounts, const std::optional<std::string>& viewer, std::string_view query) {
  try {
    auto params = parse_query(query);
    if (auto* why = std::get_if<std::string>(&params)) return error(400, *why);
    auto& given = std::get<0>(params);
    std::optional<UserId> who;
    if (auto user = given.find("user"); user != given.end()) {
      const std::string& name = user->second;
      if (viewer && name != *viewer) return error(403, "you may see your own usage only");
      if (!name.starts_with("anon:")) {
        if (!Identities::is_valid_user_name(name)) return error(400, "user is a user name or anon:ADDRESS");
        if (!accounts.identities.user(name)) return error(404, no_user(name));
      }
      who = UserId::parse(name);
    } else if (viewer) {
      who = UserId::user(*viewer);
    }
    std::optional<std::string> since;
    if (auto day = given.find("since"); day != given.end()) {
      auto start = parse_day(day->second);
      if (!start) return error(400, "since is a day, YYYY-MM-DD");
      since = day_of(*start);
    }
    std::string format = "json";
    if (auto f = given.find("format"); f != given.end()) format = f->second;
    if (format != "json" && format != "csv") return error(400, "format is json or csv");

    const auto rows = accounts.usage.query(who, since);
    if (format == "csv") return {200, "text/csv", usage_csv(rows, accounts.token_size)};
    Json list = Json::array();
    for (const auto& row : rows) list.push_back(usage_row_json(row, accounts.token_size));
    return json_answer(200, {{"usage", list}, {"token_size", accounts.token_size}});
  } catch (const std::exception& e) {
    return error(500, e.what());
  }
}

std::filesystem::path secret_key_path(const Config& config) {
  return config.secret_key_file.empty() ? config.data_dir / "secret.key" : config.secret_key_file;
}

}  // namespace inferllama::usage
