// The data rights' routes without HTTP (data_export.hpp, account_deletion.hpp), for the admin API beside
// the accounts' routes (usage/accounts_api.hpp) and for the console's signed-in user:
//
//   admin, under /api/inferllama/ (the server's admin handler and the CLI's `user` commands):
//     GET users/{name}/export          the user's export; 404 for no such user
//     DELETE users/{name}              the user as user_json shows it, deleted, with "purge_after"; deleting a
//                                      deleted user answers it as it is (the grace runs from the first time)
//     POST users/{name}/restore        the user, restored; 409 when it is not deleted or its grace is over
//     POST users/{name}/rename {name}  the user under the new name (account_rename.hpp); 400 an invalid name,
//                                      404 no such user, 409 a name taken or an account deleted
//     POST purge {older_than_days?, user?}   {"purged": [names]}: the hourly purge now, of the accounts (or
//                                      the one account `user`) deleted at least that many days ago (0..30,
//                                      default 30): an operator erasing at a user's request without the
//                                      grace, or a test. In a running node only
//   console, the signed-in user's own:
//     GET export                       the export, as a file to save
//     POST delete-account {password}   200 {"deleted": true, "purge_after"}; 403 when the password is wrong
//     POST rename {name, password}     200 {"user"} under the new name; 403 a wrong password; as the admin's
//
// A known route asked with another method answers 405.
#pragma once
#include <optional>
#include <string_view>

#include "console/account_data.hpp"
#include "console/console_api.hpp"
#include "usage/accounts_api.hpp"

namespace inferllama::console {

// nullopt when `path` is none of the admin routes above (the accounts API's, then).
std::optional<usage::ApiAnswer> answer_rights_admin(AccountData& data, std::string_view method, std::string_view path,
                                                    std::string_view body);

ConsoleAnswer export_own_account(ConsoleDeps& deps, const ConsoleRequest& request, const SignedIn& who);
// A 200 is the caller's cue to clear the session's cookies: every session of the user is closed already.
ConsoleAnswer delete_own_account(ConsoleDeps& deps, const ConsoleRequest& request, const SignedIn& who);
// A 200 is the caller's cue to open a session under the new name: every session of the old one is closed.
ConsoleAnswer rename_own_account(ConsoleDeps& deps, const ConsoleRequest& request, const SignedIn& who);

}  // namespace inferllama::console
