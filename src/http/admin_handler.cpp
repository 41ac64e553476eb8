// The node's administration, for the admin (admission checked who): pin, unpin, gc, backup, mirror, refresh,
// prefetch, the repo rules, the users/ and keys/ routes of accounts, and the orgs/ routes of hosted namespaces.
#include <nlohmann/json.hpp>

#include "cache/evictor.hpp"
#include "console/account_data.hpp"
#include "console/rights_api.hpp"
#include "hosting/hosting.hpp"
#include "hosting/org_admin.hpp"
#include "http/connection.hpp"
#include "http/handlers.hpp"
#include "http/server_context.hpp"
#include "scan/scan_service.hpp"
#include "torrent/mirror.hpp"
#include "usage/accounts_api.hpp"
#include "util/offload.hpp"
#include "util/url.hpp"

namespace inferllama::http {
namespace bhttp = boost::beast::http;
namespace {

hub::Reply json_reply(const nlohmann::json& result) {
  hub::Reply reply;
  reply.body = result.dump();
  return reply;
}

// HEAD is GET without the body (the session leaves it out).
std::string method_of(const Request& req) {
  return req.method() == bhttp::verb::head ? "GET" : std::string(req.method_string());
}

// Whether the index holds repos of the Hub namespace `ns` (none without an index). On the blocking pool.
std::function<bool(std::string_view)> cached_upstream(const ServerDeps& deps) {
  return [index = deps.index](std::string_view ns) { return index && hosting::namespace_cached(*index, ns); };
}

}  // namespace

std::function<std::optional<std::string>(std::string_view name, bool force)> user_name_refusal(
    const ServerContext& server) {
  if (!server.deps.hosting) return {};
  return [namespaces = &server.deps.hosting->namespaces(), cached = cached_upstream(server.deps)](std::string_view name,
                                                                                                  bool force) {
    return hosting::user_namespace_refusal(*namespaces, cached, name, force);
  };
}

namespace {

Task<Answer> answer_accounts(Exchange& x, const std::string& action) {
  auto& server = x.server;
  if (!server.deps.identities) co_return hub::error_reply(404, "this node keeps no users");
  const Request& req = x.request;
  const std::string method = method_of(req);
  usage::Accounts accounts{*server.deps.identities, *server.deps.usage_log, server.config.token_size};
  accounts.namespace_refusal = user_name_refusal(server);
  auto* account_data = server.deps.account_data;
  if (account_data) accounts.audit = &account_data->audit;
  const std::string query(x.query);
  auto answer = co_await offload(server.deps.blocking, [&] {
    if (account_data) {
      if (auto rights = console::answer_rights_admin(*account_data, method, action, req.body())) return rights;
    }
    auto answered = usage::answer_admin(accounts, method, action, query, req.body());
    // A disabled user, or one whose password an admin set, is signed out of the console everywhere.
    constexpr std::string_view kUsers = "users/";
    if (answered && answered->status == 200 && method == "POST" && action.starts_with(kUsers) &&
        (action.ends_with("/disable") || action.ends_with("/password"))) {
      const std::string_view rest = std::string_view(action).substr(kUsers.size());
      const std::string user = url::decode(rest.substr(0, rest.find('/'))).value_or("");
      try {
        end_console_sessions(server, user);
      } catch (const console::SessionsUnavailable& e) {
        return std::optional(usage::ApiAnswer{
            503, "application/json",
            nlohmann::json{{"error", "done for " + user + ", but their console sessions could not be closed: " +
                                         std::string(e.what()) + "; do it again once the sessions' store answers"}}
                .dump()});
      }
    }
    return answered;
  });
  if (!answer) co_return hub::error_reply(404, "no such route");
  // no-store: a created key's secret must not be kept anywhere.
  co_return hub::Reply{answer->status, {{"Cache-Control", "no-store"}}, answer->content_type, std::move(answer->body)};
}

Task<Answer> answer_orgs(Exchange& x, const std::string& action) {
  auto& server = x.server;
  if (!server.deps.hosting) co_return hub::error_reply(404, "this node hosts no namespaces");
  const Request& req = x.request;
  const std::string method = method_of(req);
  if ((method == "POST" || method == "PUT") && !req[bhttp::field::content_type].starts_with("application/json"))
    co_return hub::error_reply(415, "send a JSON body (application/json)");
  auto* identities = server.deps.identities;
  const hosting::OrgAdminContext context{
      [identities](std::string_view name) { return identities && identities->user(std::string(name)).has_value(); },
      cached_upstream(server.deps),
      [identities](std::string_view name) {
        return identities && identities->former_owner(std::string(name)).has_value();
      }};
  const std::string_view after_orgs = std::string_view(action).substr(std::string_view("orgs").size());
  auto& namespaces = server.deps.hosting->namespaces();
  auto reply = co_await offload(server.deps.blocking, [&] {
    return hosting::answer_org_admin(namespaces, context, method, after_orgs, req.body());
  });
  reply.headers.emplace_back("Cache-Control", "no-store");
  co_return reply;
}

// {"repo": ..., "revision": ..., "type": ...} of a pin, unpin, mirror or refresh request.
std::optional<std::pair<RepoId, std::string>> repo_of(const nlohmann::json& body, std::string& error) {
  auto type = parse_repo_type(body.value("type", "model"));
  if (!type) {
    error = "type is model, dataset or space";
    return std::nullopt;
  }
  return std::pair{RepoId{*type, body["repo"].get<std::string>()}, body.value("revision", "main")};
}

Task<Answer> answer_mirror(Exchange& x, const nlohmann::json& body) {
  auto* mirror = x.server.deps.mirror;
  if (!mirror || !body.is_object() || !body.contains("repo") || !body["repo"].is_string() || !body.contains("from") ||
      !body["from"].is_string()) {
    co_return hub::error_reply(400, "expected {\"repo\": ..., \"revision\": ..., \"type\": ..., \"from\": URL}");
  }
  std::string error;
  auto target = repo_of(body, error);
  if (!target) co_return hub::error_reply(400, error);
  const auto& [repo, rev] = *target;
  std::string from = body["from"].get<std::string>();
  while (from.ends_with('/')) from.pop_back();
  if (!from.starts_with("http://") && !from.starts_with("https://"))
    co_return hub::error_reply(400, "from is the http(s) URL of another node");
  x.connection.pause_deadline();  // a mirror waits on the source, not on the client
  auto outcome = co_await offload(x.server.deps.blocking, [&] { return mirror->mirror(repo, rev, from); });
  x.connection.touch();
  if (auto* reply = std::get_if<hub::Reply>(&outcome)) co_return std::move(*reply);
  const auto& done = std::get<torrent::MirrorOutcome>(outcome);
  co_return json_reply({{"repo", repo.key()},
                        {"commit", done.commit},
                        {"files", done.files},
                        {"fetched_files", done.fetched_files},
                        {"fetched_bytes", done.fetched_bytes},
                        {"info_hash", done.info_hash},
                        {"same_swarm", done.same_swarm}});
}

Task<Answer> answer_pin(Exchange& x, const nlohmann::json& body, bool pinned) {
  if (!body.is_object() || !body.contains("repo") || !body["repo"].is_string()) {
    co_return hub::error_reply(400, "expected {\"repo\": ..., \"revision\": ...}");
  }
  std::string error;
  auto target = repo_of(body, error);
  if (!target) co_return hub::error_reply(400, error);
  const auto& [repo, rev] = *target;
  auto& hub = x.server.deps.hub;
  auto outcome = co_await offload(x.server.deps.blocking, [&] { return hub.pin(repo, rev, pinned); });
  if (auto* reply = std::get_if<hub::Reply>(&outcome)) co_return std::move(*reply);
  const auto& done = std::get<hub::HubService::PinOutcome>(outcome);
  co_return json_reply({{"repo", repo.key()},
                        {"commit", done.commit},
                        {"pinned", pinned},
                        {"changed", done.changed},
                        {"cached_files", done.cached_files}});
}

// {"repo", "revision", "type", "resolve": true}: forgets what the branch resolved to (a force-push), and with
// "resolve" asks the Hub at once what it names now.
Task<Answer> answer_refresh(Exchange& x, const nlohmann::json& body) {
  if (!body.is_object() || !body.contains("repo") || !body["repo"].is_string() ||
      (body.contains("resolve") && !body["resolve"].is_boolean())) {
    co_return hub::error_reply(400, "expected {\"repo\": ..., \"revision\": ..., \"type\": ..., \"resolve\": true}");
  }
  std::string error;
  auto target = repo_of(body, error);
  if (!target) co_return hub::error_reply(400, error);
  const auto& [repo, rev] = *target;
  if (!is_valid_repo_name(repo.name)) co_return hub::error_reply(400, "invalid repository name");
  if (is_commit_sha(rev)) co_return hub::error_reply(400, rev + " is a commit: it names the same files forever");
  const bool resolve = body.value("resolve", true);
  auto& hub = x.server.deps.hub;
  auto outcome = co_await offload(x.server.deps.blocking, [&]() -> std::variant<nlohmann::json, hub::Reply> {
    const auto before = hub.forget_ref(repo, rev);
    nlohmann::json result{{"repo", repo.key()}, {"revision", rev}, {"before", nullptr}};
    if (before) result["before"] = *before;
    if (!resolve) return result;
    std::string stale;
    auto now = hub.commit_of(repo, rev, &stale);
    if (auto* refused = std::get_if<hub::Reply>(&now)) return std::move(*refused);
    result["now"] = std::get<std::string>(now);
    if (!stale.empty()) result["stale"] = stale;
    return result;
  });
  if (auto* reply = std::get_if<hub::Reply>(&outcome)) co_return std::move(*reply);
  co_return json_reply(std::get<nlohmann::json>(outcome));
}

// The prefetch list: answered by the node's prefetcher on the blocking pool (its writes are synced).
Task<Answer> answer_prefetch(Exchange& x, const std::string& action) {
  if (!x.server.deps.prefetch) co_return hub::error_reply(404, "no such route");
  const Request& req = x.request;
  const std::string method = method_of(req);
  if (method == "POST" && !req[bhttp::field::content_type].starts_with("application/json"))
    co_return hub::error_reply(415, "send a JSON body (application/json)");
  auto answer =
      co_await offload(x.server.deps.blocking, [&] { return x.server.deps.prefetch(method, action, req.body()); });
  co_return hub::Reply{answer.first, {{"Cache-Control", "no-store"}}, "application/json", std::move(answer.second)};
}

// The repo rules in force (GET rules), or read again (POST rules/reload: 400 with the reason when a rule does
// not load, the rules in force staying).
Task<Answer> answer_rules(Exchange& x, bool reload) {
  if (!x.server.deps.repo_rules) co_return hub::error_reply(404, "no such route");
  auto answer = co_await offload(x.server.deps.blocking, [&] { return x.server.deps.repo_rules(reload); });
  co_return hub::Reply{answer.first, {{"Cache-Control", "no-store"}}, "application/json", std::move(answer.second)};
}

// GET scan/{repo}/resolve/{rev}/{path}: the scan verdict of a cached file (its resolve URL behind the prefix).
Task<Answer> answer_scan(Exchange& x, const std::string& action) {
  if (x.request.method() != bhttp::verb::get && x.request.method() != bhttp::verb::head) {
    co_return method_not_allowed("use GET");
  }
  auto* scanning = x.server.deps.scanning;
  auto* index = x.server.deps.index;
  if (!scanning || !index) co_return hub::error_reply(404, "this node scans no files");
  const Route inner = route(action.substr(std::string_view("scan").size()));
  const auto* file = std::get_if<ResolveRoute>(&inner);
  if (!file || !file->passkey.empty()) {
    co_return hub::error_reply(400, "expected scan/{repo}/resolve/{revision}/{path}, as the file's own URL");
  }
  auto& hub = x.server.deps.hub;
  auto answer = co_await offload(x.server.deps.blocking, [&]() -> hub::Reply {
    std::string stale;
    auto commit = hub.commit_of(file->repo, file->rev, &stale);
    if (auto* refused = std::get_if<hub::Reply>(&commit)) return *refused;
    const std::string& sha = std::get<std::string>(commit);
    const auto entry = index->get_file(file->repo, sha, file->path);
    if (!entry) return hub::error_reply(404, file->path + " at " + sha + " is not cached", "EntryNotFound");
    const bool stored = index->get_blob(entry->etag).has_value();
    const auto verdict = scanning->load(entry->etag);
    nlohmann::json result{{"repo", file->repo.key()},
                          {"revision", file->rev},
                          {"commit", sha},
                          {"path", file->path},
                          {"etag", entry->etag},
                          {"size", entry->size},
                          {"stored", stored},
                          {"scan_action", std::string(scan::to_string(scanning->action_for(file->repo)))},
                          {"status", verdict ? scan_header_value(*verdict) : "unscanned"},
                          {"scan", verdict ? scan::to_json(*verdict) : nlohmann::json()}};
    return json_reply(result);
  });
  answer.headers.emplace_back("Cache-Control", "no-store");
  co_return answer;
}

// A backup takes as long as copying the index: the blocking pool makes it while the client waits.
Task<Answer> answer_backup(Exchange& x) {
  if (!x.server.deps.backup) co_return hub::error_reply(404, "no such route");
  x.connection.pause_deadline();
  auto answer = co_await offload(x.server.deps.blocking, [&] { return x.server.deps.backup(x.request.body()); });
  x.connection.touch();
  co_return hub::Reply{answer.first, {{"Cache-Control", "no-store"}}, "application/json", std::move(answer.second)};
}

}  // namespace

Task<Answer> handle(Exchange& x, const AdminRoute& route) {
  const Request& req = x.request;
  if (auto shared = co_await answer_operator(x, route.action)) co_return std::move(*shared);
  if (route.action.starts_with("users") || route.action.starts_with("keys") || route.action == "purge") {
    co_return co_await answer_accounts(x, route.action);
  }
  if (route.action == "orgs" || route.action.starts_with("orgs/")) co_return co_await answer_orgs(x, route.action);
  if (route.action == "prefetch" || route.action.starts_with("prefetch/")) {
    co_return co_await answer_prefetch(x, route.action);
  }
  if (route.action.starts_with("scan/")) co_return co_await answer_scan(x, route.action);
  if (route.action == "cluster") {
    if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::head) co_return method_not_allowed("use GET");
    if (!x.server.deps.cluster_status) co_return hub::error_reply(404, "no such route");
    // The swarms' figures are asked of libtorrent's thread: not on an I/O thread.
    hub::Reply reply;
    reply.body = co_await offload(x.server.deps.blocking, [&] { return x.server.deps.cluster_status(); });
    reply.headers.emplace_back("Cache-Control", "no-store");
    co_return reply;
  }
  if (route.action == "rules") {
    if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::head) co_return method_not_allowed("use GET");
    co_return co_await answer_rules(x, false);
  }
  if (req.method() != bhttp::verb::post) co_return method_not_allowed("use POST");
  // A JSON body cannot be sent across origins without a preflight, which the node never grants: a web
  // page in a browser on this host cannot pin, collect or mirror.
  if (!req[bhttp::field::content_type].starts_with("application/json"))
    co_return hub::error_reply(415, "send a JSON body (application/json)");
  if (route.action == "gc") {
    auto& evictor = x.server.deps.hub.evictor();
    auto report = co_await offload(x.server.deps.blocking, [&] { return evictor.collect_garbage(); });
    co_return json_reply({{"chunks_removed", report.chunks_removed}, {"bytes_freed", report.bytes_freed}});
  }
  if (route.action == "backup") co_return co_await answer_backup(x);
  if (route.action == "rules/reload") co_return co_await answer_rules(x, true);
  const auto body = nlohmann::json::parse(req.body(), nullptr, false);
  if (route.action == "mirror") co_return co_await answer_mirror(x, body);
  if (route.action == "refresh") co_return co_await answer_refresh(x, body);
  co_return co_await answer_pin(x, body, route.action == "pin");
}

}  // namespace inferllama::http
