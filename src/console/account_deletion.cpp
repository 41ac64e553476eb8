#include "console/account_deletion.hpp"

#include <spdlog/spdlog.h>

#include <mutex>
#include <stdexcept>

#include "console/account_rename.hpp"
#include "usage/usage_json.hpp"

namespace inferllama::console {
namespace {

std::int64_t to_ms(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// A purge, and a restore that must not fall in the middle of one.
std::mutex purging;

std::int64_t grace_ms(std::chrono::seconds grace) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(grace).count();
}

// Everything of one deleted account, in an order that keeps its name taken until the last step.
void purge_account(AccountData& data, const std::string& name) {
  // What a rename left under a former name goes with the rest.
  finish_renames(data, name);
  for (const auto& [former, now] : data.identities.unfinished_renames()) {
    if (now == name) throw std::runtime_error("its former name " + former + " still holds data that could not move");
  }
  for (const auto& hosted : data.namespaces.repos_in(name)) data.hosting->remove_repo(hosted.repo);
  for (const auto& [org, role] : data.namespaces.orgs_of(name)) data.namespaces.remove_member(org, name);
  data.usage.forget(UserId::user(name));
  data.sessions.close_all(name);
  data.mail_tokens.forget(name);
  data.audit.forget(name);
  if (auto error = data.identities.purge_user(name)) throw std::runtime_error(*error);
}

}  // namespace

std::int64_t purge_due_ms(const usage::User& deleted) {
  return deleted.deleted_ms.value_or(0) + grace_ms(kDeletionGrace);
}

std::optional<std::string> delete_account(AccountData& data, const std::string& name, usage::Actor by,
                                          std::string_view network) {
  const auto before = data.identities.user(name);
  if (!before) return "no user named \"" + name + "\"";
  if (before->deleted_ms) return std::nullopt;  // the grace runs from the first deletion
  if (auto error = data.identities.delete_user(name)) return error;
  // The account is refused from here on whatever follows: a session left open by a failed write is closed at
  // its next request, and an emailed link names a user who can no longer sign in.
  try {
    data.sessions.close_all(name);
    data.mail_tokens.forget(name);
  } catch (const std::exception& e) {
    spdlog::error("user {} is deleted, but its sessions or emailed links could not be dropped now: {}", name, e.what());
  }
  data.audit.record(name, usage::AuditEvent::deletion_requested, by, network);
  if (data.visibility_changed) data.visibility_changed();
  const auto user = data.identities.user(name);
  spdlog::info("user {} deleted by {}; purged after {} unless restored", name,
               by == usage::Actor::admin ? "the admin" : "themselves",
               user ? usage::iso8601_utc(purge_due_ms(*user)) : std::string("the grace"));
  return std::nullopt;
}

std::optional<std::string> restore_account(AccountData& data, const std::string& name) {
  std::lock_guard lock(purging);
  const auto user = data.identities.user(name);
  if (!user) return "no user named \"" + name + "\"";
  if (!user->deleted_ms) return "user " + name + " is not deleted";
  if (purge_due_ms(*user) <= to_ms(data.clock.now())) {
    return "the grace of user " + name + " ended on " + usage::iso8601_utc(purge_due_ms(*user)) +
           ": it is being purged and cannot be restored";
  }
  if (auto error = data.identities.restore_user(name)) return error;
  data.audit.record(name, usage::AuditEvent::restored, usage::Actor::admin);
  if (data.visibility_changed) data.visibility_changed();
  spdlog::info("user {} restored by the admin", name);
  return std::nullopt;
}

std::vector<std::string> purge_deleted_accounts(AccountData& data, std::chrono::seconds grace,
                                                const std::optional<std::string>& only) {
  if (!data.hosting) throw std::logic_error("purging accounts needs the node's hosted repos, to release their files");
  // The hourly job and an operator's purge one at a time, so each account is purged once.
  std::lock_guard lock(purging);
  const std::int64_t cutoff = to_ms(data.clock.now()) - grace_ms(grace);
  std::vector<std::string> purged;
  for (const auto& user : data.identities.users()) {
    if (!user.deleted_ms || *user.deleted_ms > cutoff || (only && user.name != *only)) continue;
    try {
      purge_account(data, user.name);
      purged.push_back(user.name);
      spdlog::info("purged user {}", user.name);
    } catch (const std::exception& e) {
      spdlog::error("cannot purge user {} (tried again at the next run): {}", user.name, e.what());
    }
  }
  if (!purged.empty() && data.visibility_changed) data.visibility_changed();
  return purged;
}

}  // namespace inferllama::console
