// The admin API of organisations, without HTTP: the server calls it once admission has checked the admin
// (on its blocking pool: it reads and writes RocksDB), and the CLI calls it directly on a data directory no
// node is running on, so both print the same answers.
//
// An organisation's name, like a user's, is a namespace the node hosts, so the two never share a name. A
// namespace the node has already cached repos of from the Hub is taken only when the admin says so
// (`force`): its repos on this node are then the hosted ones, and the cached ones are no longer served.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "hosting/namespaces.hpp"
#include "hub/reply.hpp"
#include "inferllama/index.hpp"

namespace inferllama::hosting {

struct OrgAdminContext {
  std::function<bool(std::string_view name)> user_exists;            // a node user of that name exists
  std::function<bool(std::string_view ns)> cached_upstream;          // the cache holds repos of that Hub namespace
  std::function<bool(std::string_view name)> former_user_name = {};  // a renamed user's name before
};

// Admin routes under /api/inferllama/orgs; `path_after_orgs` is what follows "orgs" ("" or "/...", each
// segment still percent-encoded), the bodies JSON:
//   GET orgs                                   {"orgs": [{"name", "members": [{"user", "role"}]}]}
//   POST orgs {name, force?}                   201 the org; 400 an invalid name; 409 when it exists, is a
//                                              user's name (now or before a rename), or names a namespace cached from
//                                              the Hub and force is not true
//   DELETE orgs/{name}                         200 {"name"}; 404; 409 while it still hosts repos
//   GET orgs/{name}/members                    {"name", "members": [...]}
//   PUT orgs/{name}/members/{user} {role}      200 the member; role read, write or admin; 404 for no such
//                                              org or user
//   DELETE orgs/{name}/members/{user}          200 {"org", "user"}; 404 when not a member
// A known route asked with another method answers 405, any other path 404. Errors are
// hub::error_reply's ({"error": "..."}).
hub::Reply answer_org_admin(Namespaces& ns, const OrgAdminContext& ctx, std::string_view method,
                            std::string_view path_after_orgs, const std::string& body);

// Why `name` may not become a node user's (and so a hosted) namespace, or nullopt when it may: it is an
// organisation's, or the cache holds repos of that Hub namespace and `force` is false. For
// usage::Accounts::namespace_refusal, which the usage module takes as a plain function.
std::optional<std::string> user_namespace_refusal(Namespaces& ns,
                                                  const std::function<bool(std::string_view)>& cached_upstream,
                                                  std::string_view name, bool force);

// Whether the index remembers a branch or tag of any repo in namespace `ns` (repo keys "model/acme/x",
// "dataset/acme/y"): the repos of that Hub namespace the node has cached. Scans every remembered ref.
bool namespace_cached(Index& index, std::string_view ns);

}  // namespace inferllama::hosting
