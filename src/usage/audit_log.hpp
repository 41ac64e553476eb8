// Security events of each account (sign-ins and their failures, password and key changes, exports,
// deletions, restores and renames), for its user to see in their export and for the operator to answer "who did
// what, when". Kept in the `identities` record table under `audit|USER|...`, in time order, 90 days at
// most and at most `max_per_user` per user (the oldest dropped first), so a guesser hammering one account
// cannot grow the table; only names of existing users are recorded (the callers check), so made-up names
// add nothing.
#pragma once
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/clock.hpp"
#include "inferllama/records.hpp"

namespace inferllama::usage {

enum class AuditEvent {
  signed_in,
  sign_in_failed,
  password_changed,
  key_created,
  key_revoked,
  exported,
  deletion_requested,
  restored,
  renamed,  // detail: the name before
};
std::string_view audit_event_name(AuditEvent event);

// Who acted: the account's own user (through the console), or the node's admin (the admin API, the CLI).
enum class Actor { user, admin };

struct AuditEntry {
  std::int64_t at_ms = 0;
  AuditEvent event = AuditEvent::signed_in;
  Actor by = Actor::user;
  std::string network;  // the client's address (its /64 for IPv6) when the user acted; "" for the admin
  std::string detail;   // what the event concerns: a key's id; "" for most
};

struct AuditSettings {
  std::chrono::seconds retention{90 * 24 * 3600};
  std::size_t max_per_user = 200;
};

class AuditLog {
 public:
  AuditLog(RecordStore& records, const Clock& clock, AuditSettings settings = {});

  // Adds an event of `user` (an existing user: the caller checks) and drops the user's oldest past the
  // bound. A write that fails is logged, not raised: the action it records has happened all the same.
  // Not synced: a failed sign-in must cost the same time whether or not the name exists, and a crash may
  // lose the last events, never the accounts.
  void record(const std::string& user, AuditEvent event, Actor by, std::string_view network = {},
              std::string_view detail = {});
  // The user's events, oldest first. Throws std::runtime_error when the records cannot be read.
  std::vector<AuditEntry> of_user(const std::string& user);
  // Retention: drops every event older than `retention`; how many. Hourly.
  std::size_t expire();
  // Every event of the user (an account purged).
  void forget(const std::string& user);
  // The events of `from` become `to`'s (an account renamed). Throws std::runtime_error when the store does.
  void rename(const std::string& from, const std::string& to);

 private:
  std::int64_t now_ms() const;

  RecordStore& records_;
  const Clock& clock_;
  const AuditSettings settings_;
  std::mutex mutex_;  // record's write and trim; the sequence
  std::uint64_t sequence_ = 0;
};

// record() when there is a log: the admin and console APIs are also built without one (tools, tests).
inline void audit(AuditLog* log, const std::string& user, AuditEvent event, Actor by, std::string_view network = {},
                  std::string_view detail = {}) {
  if (log) log->record(user, event, by, network, detail);
}

}  // namespace inferllama::usage
