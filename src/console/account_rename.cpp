#include "console/account_rename.hpp"

#include <spdlog/spdlog.h>

#include <functional>
#include <mutex>
#include <stdexcept>

#include "hosting/repo_content.hpp"
#include "inferllama/user_name.hpp"

namespace inferllama::console {
namespace {

// One rename's moves at a time: a rename and the hourly job never move the same rows at once.
std::mutex moving;

// Everything of the account still under `former`, moved to `now`: each step is tried even when one before it
// failed (Redis down must not keep the repos from their new name), and the rename is marked done only when
// every step was. Throws what failed.
void move_account_data(AccountData& data, const std::string& former, const std::string& now) {
  std::string failed;
  const auto step = [&](std::string_view what, const std::function<void()>& run) {
    try {
      run();
    } catch (const std::exception& e) {
      failed += (failed.empty() ? "" : "; ") + std::string(what) + ": " + e.what();
    }
  };
  std::size_t repos = 0;
  step("hosted repos", [&] {
    if (data.hosting) {
      repos = data.hosting->move_namespace(former, now);
    } else if (data.index) {
      hosting::RepoContent content(data.records);
      repos = hosting::move_namespace(data.records, *data.index, data.namespaces, content, former, now);
    } else {
      throw std::logic_error("renaming a user needs the node's hosted repos or its index");
    }
  });
  step("organisation memberships", [&] {
    for (const auto& [org, role] : data.namespaces.orgs_of(former)) {
      data.namespaces.set_member(org, now, role);
      data.namespaces.remove_member(org, former);
    }
  });
  step("usage records", [&] { data.usage.rename(UserId::user(former), UserId::user(now)); });
  step("audit events", [&] { data.audit.rename(former, now); });
  step("mailed links", [&] { data.mail_tokens.forget(former); });
  // Sessions name their user in the JWT they signed: those of the old name end.
  step("console sessions", [&] { data.sessions.close_all(former); });
  if (repos > 0 && data.visibility_changed) data.visibility_changed();
  if (!failed.empty()) throw std::runtime_error(failed);
  if (auto error = data.identities.finish_rename(former)) throw std::runtime_error(*error);
}

}  // namespace

std::optional<RenameRefusal> rename_account(AccountData& data, const std::string& from, const std::string& to,
                                            usage::Actor by, std::string_view network) {
  if (!is_valid_user_name(to)) {
    return RenameRefusal{
        400, "invalid user name \"" + to + "\": 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or a digit"};
  }
  const auto user = data.identities.user(from);
  if (!user) return RenameRefusal{404, "no user named \"" + from + "\""};
  if (user->deleted_ms) return RenameRefusal{409, "user " + from + " is deleted: restore it first"};
  if (to == from) return RenameRefusal{400, "the user is named " + to + " already"};
  // Taken by a user, or a former name of another account; the account's own former names are its to take back.
  const auto former_owner = data.identities.former_owner(to);
  if (data.identities.has_user(to) || (former_owner && *former_owner != from)) {
    return RenameRefusal{409, "the name " + to + " is taken"};
  }
  if (data.namespaces.is_org(to)) return RenameRefusal{409, "an organisation is named " + to};
  if (data.name_refusal) {
    if (auto refused = data.name_refusal(to)) return RenameRefusal{409, *refused};
  }
  std::lock_guard lock(moving);
  if (auto error = data.identities.rename_user(from, to)) {
    return RenameRefusal{error->find("taken") != std::string::npos ? 409u : 500u, *error};
  }
  spdlog::info("user {} renamed to {} by {}", from, to, by == usage::Actor::admin ? "the admin" : "themselves");
  try {
    move_account_data(data, from, to);
  } catch (const std::exception& e) {
    // The account is `to`'s already; what is left under `from` moves at the next run of finish_renames.
    spdlog::error("user {} is renamed to {}, but not all of its data moved yet (tried again hourly): {}", from, to,
                  e.what());
  }
  data.audit.record(to, usage::AuditEvent::renamed, by, network, from);
  return std::nullopt;
}

std::vector<std::string> finish_renames(AccountData& data, const std::optional<std::string>& only) {
  std::lock_guard lock(moving);
  std::vector<std::string> done;
  for (const auto& [former, now] : data.identities.unfinished_renames()) {
    if (only && now != *only) continue;
    try {
      move_account_data(data, former, now);
      done.push_back(former);
      spdlog::info("the data of user {} (once {}) has all moved to its name", now, former);
    } catch (const std::exception& e) {
      spdlog::error("cannot move the data of user {} from its former name {} yet: {}", now, former, e.what());
    }
  }
  return done;
}

}  // namespace inferllama::console
