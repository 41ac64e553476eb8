#include "hosting/org_admin.hpp"

#include <algorithm>
#include <exception>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <variant>
#include <vector>

#include "inferllama/user_name.hpp"
#include "util/url.hpp"

namespace inferllama::hosting {
namespace {

using Json = nlohmann::json;

hub::Reply json_reply(unsigned status, const Json& body) {
  hub::Reply reply;
  reply.status = status;
  // Names from a request path may hold any bytes: never let one stop the answer from being written.
  reply.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
  return reply;
}

hub::Reply wrong_method(std::string_view allowed) {
  return hub::error_reply(405, "use " + std::string(allowed));
}

std::string in_quotes(std::string_view name) {
  return "\"" + std::string(name) + "\"";
}

Json members_json(Namespaces& ns, std::string_view org) {
  Json list = Json::array();
  for (const Member& member : ns.members(org)) {
    list.push_back({{"user", member.user}, {"role", role_name(member.role)}});
  }
  return list;
}

Json org_json(Namespaces& ns, std::string_view org) {
  return {{"name", org}, {"members", members_json(ns, org)}};
}

std::string no_org(std::string_view name) {
  return "no organisation named " + in_quotes(name);
}

// Why the Hub namespace `name` may not become one the node hosts, or nullopt: the cache holds its repos
// and the admin did not say `force`.
std::optional<std::string> cached_refusal(const std::function<bool(std::string_view)>& cached_upstream,
                                          std::string_view name, std::string_view becoming, bool force) {
  if (force || !cached_upstream || !cached_upstream(name)) return std::nullopt;
  return "the node has cached repos of the Hub's namespace " + in_quotes(name) +
         ": pass --force (\"force\": true) to make it " + std::string(becoming) +
         " anyway; the cached repos of that namespace will no longer be served";
}

// A JSON object whose fields are each one of `strings` (strings) or `flags` (booleans); `expected` says
// what was expected, for the error.
std::variant<Json, std::string> object_of(const std::string& body, std::initializer_list<std::string_view> strings,
                                          std::initializer_list<std::string_view> flags, const std::string& expected) {
  auto json = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return "expected a JSON object " + expected;
  for (const auto& [name, value] : json.items()) {
    const bool string = std::find(strings.begin(), strings.end(), name) != strings.end();
    const bool flag = std::find(flags.begin(), flags.end(), name) != flags.end();
    if (!string && !flag) return "unknown field \"" + name + "\"; expected " + expected;
    if (string && !value.is_string()) return "\"" + name + "\" is not a string; expected " + expected;
    if (flag && !value.is_boolean()) return "\"" + name + "\" is not true or false; expected " + expected;
  }
  return json;
}

hub::Reply list_orgs(Namespaces& ns) {
  Json list = Json::array();
  for (const std::string& org : ns.orgs()) list.push_back(org_json(ns, org));
  return json_reply(200, {{"orgs", list}});
}

hub::Reply add_org(Namespaces& ns, const OrgAdminContext& ctx, const std::string& body) {
  const std::string expected = "{\"name\": string, \"force\"?: true or false}";
  auto parsed = object_of(body, {"name"}, {"force"}, expected);
  if (auto* why = std::get_if<std::string>(&parsed)) return hub::error_reply(400, *why);
  const Json& given = std::get<Json>(parsed);
  if (!given.contains("name")) return hub::error_reply(400, "\"name\" is missing; expected " + expected);
  const std::string name = given["name"].get<std::string>();
  const bool force = given.value("force", false);
  if (!is_valid_user_name(name)) {
    return hub::error_reply(400, "invalid organisation name " + in_quotes(name) +
                                     ": 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit");
  }
  if (ns.is_org(name)) return hub::error_reply(409, "organisation " + name + " exists");
  if (ctx.user_exists && ctx.user_exists(name)) {
    return hub::error_reply(409, "a user is named " + in_quotes(name) + ": a user's name is their own namespace");
  }
  if (ctx.former_user_name && ctx.former_user_name(name)) {
    return hub::error_reply(409, "a renamed user was named " + in_quotes(name) + ": the name stays theirs");
  }
  if (auto refused = cached_refusal(ctx.cached_upstream, name, "an organisation", force)) {
    return hub::error_reply(409, *refused);
  }
  switch (ns.add_org(name)) {
    case Namespaces::Outcome::done:
      return json_reply(201, org_json(ns, name));
    case Namespaces::Outcome::exists:
      return hub::error_reply(409, "organisation " + name + " exists");
    default:
      return hub::error_reply(400, "invalid organisation name " + in_quotes(name));
  }
}

hub::Reply remove_org(Namespaces& ns, const std::string& name) {
  switch (ns.remove_org(name)) {
    case Namespaces::Outcome::done:
      return json_reply(200, {{"name", name}});
    case Namespaces::Outcome::missing:
      return hub::error_reply(404, no_org(name));
    default:
      return hub::error_reply(409, "organisation " + name + " still hosts repos: delete them first");
  }
}

hub::Reply set_member(Namespaces& ns, const OrgAdminContext& ctx, const std::string& org, const std::string& user,
                      const std::string& body) {
  const std::string expected = "{\"role\": \"read\", \"write\" or \"admin\"}";
  auto parsed = object_of(body, {"role"}, {}, expected);
  if (auto* why = std::get_if<std::string>(&parsed)) return hub::error_reply(400, *why);
  const Json& given = std::get<Json>(parsed);
  if (!given.contains("role")) return hub::error_reply(400, "\"role\" is missing; expected " + expected);
  const auto role = parse_role(given["role"].get<std::string>());
  if (!role) return hub::error_reply(400, "role is read, write or admin");
  if (!ns.is_org(org)) return hub::error_reply(404, no_org(org));
  if (ctx.user_exists && !ctx.user_exists(user)) return hub::error_reply(404, "no user named " + in_quotes(user));
  switch (ns.set_member(org, user, *role)) {
    case Namespaces::Outcome::done:
      return json_reply(200, {{"org", org}, {"user", user}, {"role", role_name(*role)}});
    case Namespaces::Outcome::missing:
      return hub::error_reply(404, no_org(org));
    default:
      return hub::error_reply(400, "invalid user name " + in_quotes(user));
  }
}

hub::Reply remove_member(Namespaces& ns, const std::string& org, const std::string& user) {
  if (!ns.is_org(org)) return hub::error_reply(404, no_org(org));
  if (ns.remove_member(org, user) != Namespaces::Outcome::done) {
    return hub::error_reply(404, in_quotes(user) + " is no member of " + org);
  }
  return json_reply(200, {{"org", org}, {"user", user}});
}

hub::Reply route(Namespaces& ns, const OrgAdminContext& ctx, std::string_view method, std::string_view path,
                 const std::string& body) {
  if (path.empty()) {
    if (method == "GET") return list_orgs(ns);
    if (method == "POST") return add_org(ns, ctx, body);
    return wrong_method("GET or POST");
  }
  if (!path.starts_with('/')) return hub::error_reply(404, "no such route");
  auto segments = url::decoded_segments(path.substr(1));
  if (!segments) return hub::error_reply(400, "malformed percent-escape in the path");
  const auto& s = *segments;
  if (s.size() == 1) {
    if (method != "DELETE") return wrong_method("DELETE");
    return remove_org(ns, s[0]);
  }
  if (s.size() == 2 && s[1] == "members") {
    if (method != "GET") return wrong_method("GET");
    if (!ns.is_org(s[0])) return hub::error_reply(404, no_org(s[0]));
    return json_reply(200, org_json(ns, s[0]));
  }
  if (s.size() == 3 && s[1] == "members") {
    if (method == "PUT") return set_member(ns, ctx, s[0], s[2], body);
    if (method == "DELETE") return remove_member(ns, s[0], s[2]);
    return wrong_method("PUT or DELETE");
  }
  return hub::error_reply(404, "no such route");
}

}  // namespace

hub::Reply answer_org_admin(Namespaces& ns, const OrgAdminContext& ctx, std::string_view method,
                            std::string_view path_after_orgs, const std::string& body) {
  try {
    return route(ns, ctx, method, path_after_orgs, body);
  } catch (const std::exception& e) {  // the records could not be read or written
    return hub::error_reply(500, e.what());
  }
}

std::optional<std::string> user_namespace_refusal(Namespaces& ns,
                                                  const std::function<bool(std::string_view)>& cached_upstream,
                                                  std::string_view name, bool force) {
  if (ns.is_org(name)) {
    return "an organisation is named " + in_quotes(name) + ": a user's name is their own namespace";
  }
  return cached_refusal(cached_upstream, name, "a user", force);
}

bool namespace_cached(Index& index, std::string_view ns) {
  bool found = false;
  index.list_refs([&](const std::string& repo_key, const std::string&, const RefEntry&) {
    if (found) return;
    // "{type}/{namespace}/{name}": a repo without a namespace ("model/gpt2") is in none.
    const auto first = repo_key.find('/');
    if (first == std::string::npos) return;
    const std::string_view rest = std::string_view(repo_key).substr(first + 1);
    const auto second = rest.find('/');
    found = second != std::string_view::npos && rest.substr(0, second) == ns;
  });
  return found;
}

}  // namespace inferllama::hosting
