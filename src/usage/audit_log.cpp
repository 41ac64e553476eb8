#include "usage/audit_log.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace inferllama::usage {
namespace {

using nlohmann::json;

// audit|USER|<ms, 15 digits>|<sequence, 8 hex> -> {"at_ms", "event", "by", "network"?, "detail"?}. User
// names never hold '|', and the fixed-width time keeps one user's events in time order.
constexpr std::string_view kPrefix = "audit|";

constexpr std::array kEvents{AuditEvent::signed_in,          AuditEvent::sign_in_failed, AuditEvent::password_changed,
                             AuditEvent::key_created,        AuditEvent::key_revoked,    AuditEvent::exported,
                             AuditEvent::deletion_requested, AuditEvent::restored,       AuditEvent::renamed};

std::string user_prefix(const std::string& user) {
  return std::string(kPrefix) + user + '|';
}

// The first key past every key that starts with `prefix` (which ends in '|', so never 0xff).
std::string end_of(std::string prefix) {
  ++prefix.back();
  return prefix;
}

std::string event_key(const std::string& user, std::int64_t at_ms, std::uint64_t sequence) {
  char tail[40];
  std::snprintf(tail, sizeof tail, "%015lld|%08llx", static_cast<long long>(at_ms),
                static_cast<unsigned long long>(sequence & 0xffffffffu));
  return user_prefix(user) + tail;
}

std::optional<AuditEntry> parse(std::string_view value) {
  const auto record = json::parse(value, nullptr, false);
  if (!record.is_object()) return std::nullopt;
  AuditEntry entry;
  entry.at_ms = record.value("at_ms", std::int64_t{0});
  const std::string event = record.value("event", "");
  const auto known =
      std::find_if(kEvents.begin(), kEvents.end(), [&](AuditEvent e) { return audit_event_name(e) == event; });
  if (known == kEvents.end()) return std::nullopt;
  entry.event = *known;
  entry.by = record.value("by", "") == "admin" ? Actor::admin : Actor::user;
  entry.network = record.value("network", "");
  entry.detail = record.value("detail", "");
  return entry;
}

}  // namespace

std::string_view audit_event_name(AuditEvent event) {
  switch (event) {
    case AuditEvent::signed_in:
      return "signed_in";
    case AuditEvent::sign_in_failed:
      return "sign_in_failed";
    case AuditEvent::password_changed:
      return "password_changed";
    case AuditEvent::key_created:
      return "key_created";
    case AuditEvent::key_revoked:
      return "key_revoked";
    case AuditEvent::exported:
      return "exported";
    case AuditEvent::deletion_requested:
      return "deletion_requested";
    case AuditEvent::restored:
      return "restored";
    case AuditEvent::renamed:
      return "renamed";
  }
  return "";
}

AuditLog::AuditLog(RecordStore& records, const Clock& clock, AuditSettings settings)
    : records_(records), clock_(clock), settings_(settings) {}

std::int64_t AuditLog::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now().time_since_epoch()).count();
}

void AuditLog::record(const std::string& user, AuditEvent event, Actor by, std::string_view network,
                      std::string_view detail) {
  const std::int64_t at = now_ms();
  json value = {{"at_ms", at}, {"event", audit_event_name(event)}, {"by", by == Actor::admin ? "admin" : "user"}};
  if (!network.empty()) value["network"] = network;
  if (!detail.empty()) value["detail"] = detail;
  std::lock_guard lock(mutex_);
  try {
    std::vector<RecordStore::Write> writes{{event_key(user, at, ++sequence_), value.dump()}};
    std::vector<std::string> kept;
    records_.scan(RecordTable::identities, user_prefix(user), [&](std::string_view key, std::string_view) {
      kept.emplace_back(key);
      return true;
    });
    // Oldest first; the new event makes one more.
    for (std::size_t i = 0; i + settings_.max_per_user < kept.size() + 1; ++i)
      writes.push_back({kept[i], std::nullopt});
    records_.write(RecordTable::identities, writes, /*sync=*/false);
  } catch (const std::exception& e) {
    spdlog::error("cannot record the audit event {} of user {}: {}", audit_event_name(event), user, e.what());
  }
}

std::vector<AuditEntry> AuditLog::of_user(const std::string& user) {
  std::vector<AuditEntry> out;
  records_.scan(RecordTable::identities, user_prefix(user), [&](std::string_view key, std::string_view value) {
    auto entry = parse(value);
    if (!entry) throw std::runtime_error("cannot read the audit record " + std::string(key));
    out.push_back(std::move(*entry));
    return true;
  });
  return out;
}

std::size_t AuditLog::expire() {
  const std::int64_t cutoff =
      now_ms() - std::chrono::duration_cast<std::chrono::milliseconds>(settings_.retention).count();
  std::vector<RecordStore::Write> writes;
  std::lock_guard lock(mutex_);
  records_.scan(RecordTable::identities, kPrefix, [&](std::string_view key, std::string_view value) {
    const auto entry = parse(value);
    if (!entry || entry->at_ms < cutoff) writes.push_back({std::string(key), std::nullopt});
    return true;
  });
  if (!writes.empty()) records_.write(RecordTable::identities, writes, /*sync=*/true);
  return writes.size();
}

void AuditLog::rename(const std::string& from, const std::string& to) {
  std::lock_guard lock(mutex_);
  move_prefix(records_, RecordTable::identities, user_prefix(from), user_prefix(to));
}

void AuditLog::forget(const std::string& user) {
  std::lock_guard lock(mutex_);
  const std::string prefix = user_prefix(user);
  records_.erase_range(RecordTable::identities, prefix, end_of(prefix));
}

}  // namespace inferllama::usage
