// The rectification of a user's name (GDPR Art. 16): the account, with everything the node keeps under its
// name, becomes `to`'s.
//
//   at once   (one write) the account, its keys, passkey, Hub token and password answer to the new name;
//             the old name stays the account's (a former name) until its purge: no user or organisation
//             may take it, its namespace stays the node's, so its repos' old names answer 404 and never
//             reach the upstream; the user may take it back by renaming again.
//   then      every console session of the old name closes (the one renaming gets a new one), its mailed
//             links stop working, and its audit events, usage rows, organisation memberships and hosted
//             repos (ids, history, visibility and stored bytes kept) move to the new name. Each step can be
//             done again: a rename cut short (a crash, Redis down) is finished by finish_renames.
//
// Commits keep the author line they were made with, as git history does; per-user limits in limit_users
// are configuration and name the user as the operator wrote them.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "console/account_data.hpp"
#include "usage/audit_log.hpp"

namespace inferllama::console {

struct RenameRefusal {
  unsigned status;  // 400 an invalid name, 404 no such user, 409 a name taken or an account deleted
  std::string message;
};

// Renames user `from` to `to`. `network`: the client's, when the user asked through the console.
std::optional<RenameRefusal> rename_account(AccountData& data, const std::string& from, const std::string& to,
                                            usage::Actor by, std::string_view network = {});

// Moves what renames left under their former names (hourly, and when the node starts; of one account `only`
// before its purge). The former names done; a move that fails again is logged and left for the next run.
std::vector<std::string> finish_renames(AccountData& data, const std::optional<std::string>& only = std::nullopt);

}  // namespace inferllama::console
