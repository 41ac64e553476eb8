// Everything the node keeps about a person, by where it is kept: what an export reads (data_export.hpp), a
// deletion closes and a purge removes (account_deletion.hpp), a rename moves (account_rename.hpp). The node
// builds one over its own parts; the CLI builds one over a data directory no node runs on (without `hosting`,
// so it cannot purge; with `index`, so it can move a renamed user's repos).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "console/mail_tokens.hpp"
#include "console/sessions.hpp"
#include "hosting/hosting.hpp"
#include "hosting/namespaces.hpp"
#include "inferllama/clock.hpp"
#include "inferllama/index.hpp"
#include "inferllama/records.hpp"
#include "usage/audit_log.hpp"
#include "usage/identities.hpp"
#include "usage/usage_log.hpp"

namespace inferllama::console {

struct AccountData {
  const Clock& clock;               // the one the parts below keep their times by: exports, graces, purges
  RecordStore& records;             // hosted repos' branches and files, read for an export's manifests
  usage::Identities& identities;    // the account and its keys
  usage::UsageLog& usage;           // its usage rows
  usage::AuditLog& audit;           // its security events
  Sessions& sessions;               // its console sign-ins
  MailTokens& mail_tokens;          // its emailed links
  hosting::Namespaces& namespaces;  // its hosted repos and organisation memberships
  std::uint64_t token_size;         // bytes of file content per token, to count a usage row's tokens
  // Deletes repos so that their files leave the store (Hosting::remove_repo); null where no node runs.
  hosting::Hosting* hosting = nullptr;
  // Repos were withheld, served again or renamed (an account deleted, restored or renamed): seeding follows.
  std::function<void()> visibility_changed = {};
  // Where no node runs: the index, to move a renamed user's repos (a node moves them through `hosting`).
  Index* index = nullptr;
  // Why `name` may not become a user's beyond being taken by one or an organisation (a Hub namespace the
  // cache holds), or nullopt.
  std::function<std::optional<std::string>(std::string_view name)> name_refusal = {};
};

}  // namespace inferllama::console
