// Everything the node keeps about a person, by where it is kept: what an export reads (data_export.hpp), a
// deletion closes and a purge removes (account_deletion.hpp). The node builds one over its own parts; the
// CLI builds one over a data directory no node runs on (without `hosting`, so it cannot purge).
#pragma once
#include <cstdint>
#include <functional>

#include "console/mail_tokens.hpp"
#include "console/sessions.hpp"
#include "hosting/hosting.hpp"
#include "hosting/namespaces.hpp"
#include "inferllama/clock.hpp"
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
  // Repos were withheld or served again (an account deleted or restored): seeding follows now.
  std::function<void()> visibility_changed = {};
};

}  // namespace inferllama::console
