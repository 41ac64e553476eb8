// The erasure of the privacy policy (GDPR Art. 17, CCPA's right to delete). A deletion takes effect at
// once and becomes final after a grace of 30 days, during which the operator can restore the account (a
// deletion by mistake, or by someone who had the password):
//
//   delete   every console session closes, every key is revoked, emailed links stop working; the account is
//            refused everywhere a disabled one is; its hosted repos are answered as missing (like a private
//            repo to a stranger); its name stays taken, by users and organisations alike.
//   restore  within the grace: the account is back as it was, its keys still revoked; its user signs in
//            again.
//   purge    once the grace is over (hourly, in the node): its hosted repos are deleted as a repo deletion
//            does (their files leave the store when nothing else holds them), then its organisation
//            memberships, usage rows, sessions, emailed links, audit events, keys and at last the account
//            itself, whose name is free again. The node's log keeps one line: "purged user NAME".
//
// Each step of a purge can be done again: a purge cut short (a crash, a full disk) is finished by the next.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "console/account_data.hpp"
#include "usage/audit_log.hpp"

namespace inferllama::console {

inline constexpr std::chrono::seconds kDeletionGrace{30 * 24 * 3600};

// When a deleted account's grace ends and the purge may take it (ms since the epoch).
std::int64_t purge_due_ms(const usage::User& deleted);

// Deletes user `name` (an existing user; deleting a deleted one changes nothing). `network`: the client's,
// when the user asked through the console. The error to show when the account could not be marked.
std::optional<std::string> delete_account(AccountData& data, const std::string& name, usage::Actor by,
                                          std::string_view network = {});
// Restores a deleted user whose grace has not ended; the error to show otherwise.
std::optional<std::string> restore_account(AccountData& data, const std::string& name);

// The hourly job: purges every account deleted `grace` or longer ago (an operator may ask for less, down to
// none, and for one account `only`). `data.hosting` must be set. The names purged; a user whose purge
// failed is logged and left for the next run.
std::vector<std::string> purge_deleted_accounts(AccountData& data, std::chrono::seconds grace = kDeletionGrace,
                                                const std::optional<std::string>& only = std::nullopt);

}  // namespace inferllama::console
